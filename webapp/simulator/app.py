"""The simulator's WSGI app: Engage's v3 endpoints as engage-api.md describes them, plus an
admin API under /_simulator/ for faults, recorded requests and state (simulator only)."""

from __future__ import annotations

import datetime as dt
import html
import json
import time
from html import escape
from typing import Any

from werkzeug.wrappers import Request, Response

from .engine import (
    E164,
    EMAIL,
    DropConnection,
    Engine,
    Fault,
    Recorded,
    country_codes,
    valid_ssn,
)

FIND_PARAMS = ("email", "mobilePhone", "socialSecurityNumber", "customKey")


ASSUMED = "X-Simulator-Assumption"  # marks an answer whose shape no Voyado source shows


def error(
    status: int, token: str | None, message: str, details: Any = None, shape: str = "engage"
) -> Response:
    """An error answer. The body is undocumented (engage-api.md §2.4): by default this
    simulator's own shape, with the documented token in `errorCode` and any detail in
    `messageDetails`; a fault can ask for another shape. Every one is marked as assumed."""
    if shape == "empty":
        response = Response(b"", status=status)
    elif shape == "text":
        text = f"{token}: {message}" if token else message
        response = Response(text, status=status, content_type="text/plain; charset=utf-8")
    elif shape == "message":  # ASP.NET Web API's default
        body = {"Message": f"{token}: {message}" if token else message}
        response = Response(json.dumps(body), status=status, content_type="application/json")
    elif shape == "problem":  # RFC 7807, as ASP.NET Core writes it
        body = {"type": "https://tools.ietf.org/html/rfc9110", "title": token or message,
                "status": status, "detail": message, "traceId": "00-simulated-00"}  # fmt: skip
        if isinstance(details, dict):
            body["errors"] = {k: [v] for k, v in details.items()}
        response = Response(
            json.dumps(body), status=status, content_type="application/problem+json"
        )
    else:
        body = {"statusCode": status, "errorCode": token, "message": message,
                "messageDetails": details}  # fmt: skip
        response = Response(json.dumps(body), status=status, content_type="application/json")
    response.headers[ASSUMED] = f"error body shape: {shape} (engage-api.md 2.4)"
    return response


def ok(body: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False), status=status, content_type="application/json"
    )


class SimulatorApp:
    """WSGI callable. `engine` holds the state; the server only moves bytes."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._countries = country_codes()

    def __call__(self, environ, start_response):
        request = Request(environ, populate_request=False)  # no request <-> environ cycle
        if request.path.startswith("/_simulator"):
            response = self.admin(request)
        else:
            response = self.api(request)
        return response(environ, start_response)

    # --- the Engage API ------------------------------------------------------------------------
    def api(self, request: Request) -> Response:
        body_text = request.get_data(as_text=True)
        entry = Recorded(
            method=request.method,
            path=request.path,
            query=request.args.to_dict(flat=False),
            headers=dict(request.headers),
            body=_json_or_text(body_text),
        )
        self.engine.record(entry)
        scope = _scope(request)
        faults = self.engine.take_faults(scope)
        entry.faults = [f.kind + (f" {f.status}" if f.status else "") for f in faults]
        delay = self.engine.call_latency(scope) + sum(
            f.seconds for f in faults if f.kind == "latency"
        )
        before = [f for f in faults if f.kind != "latency" and not f.after_commit]
        after = [f for f in faults if f.kind != "latency" and f.after_commit]
        if before:
            response = self._fault(request, before[0], delay)
        else:
            response = self._handle(request, entry, scope, delay)
            if after and response.status_code < 300:
                response = self._fault(request, after[0], 0)
        entry.status = response.status_code
        return response

    def _fault(self, request: Request, fault: Fault, delay: float) -> Response:
        self._answer_after(request, delay)
        if fault.kind == "hang":
            # A reply that never comes: until the server stops, or a test releases the fault.
            deadline = time.monotonic() + (fault.seconds or 300)
            while not self.engine.stopping.is_set() and time.monotonic() < deadline:
                if fault.released.wait(0.05):
                    break
            raise DropConnection()
        if fault.kind == "drop":
            raise DropConnection()
        shape = fault.body
        if fault.status == 504:
            return error(
                504, fault.token or "RequestTimeOut", "The request timed out.", None, shape
            )
        if fault.status in (502, 503) and not fault.token:  # a gateway's page, not Engage's
            return Response(f"<html><body><h1>{fault.status} Gateway error</h1></body></html>",
                            status=fault.status, content_type="text/html")  # fmt: skip
        if fault.status == 422:
            details = {"firstName": "Rejected"}
            return error(
                422, fault.token or "ValidationError", "Validation failed.", details, shape
            )
        return error(fault.status, fault.token, "An error has occurred.", None, shape)

    def _handle(self, request: Request, entry: Recorded, scope: str, delay: float) -> Response:
        api_key = request.headers.get("apikey", "")
        if request.headers.get("x-api-key"):
            entry.warnings.append("x-api-key header sent; Engage's header is apikey")
        if not api_key or (self.engine.api_key is not None and api_key != self.engine.api_key):
            # ASSUMPTION (engage-api.md §12.4): the status for a bad key is not documented.
            return error(401, "Unauthorized", "Missing or invalid apikey.")
        allowed = self.engine.allowed_addresses
        if allowed is not None and request.remote_addr not in allowed:
            # ASSUMPTION (§6, §12.4): a key may be limited to listed addresses; the status for
            # an address not on the list is not documented.
            return error(403, "Forbidden", "This address may not use this API key.")
        user_agent = request.headers.get("User-Agent", "")
        if not user_agent:
            # Required (§6), but what Engage answers without one is not documented: recorded.
            entry.warnings.append("no User-Agent; Engage asks for <System>/<version>")
        elif user_agent.startswith("python-requests"):
            entry.warnings.append("default User-Agent; Engage asks for <System>/<version>")
        if request.mimetype != "application/json":
            return Response("An error has occurred.", status=500)  # as documented (§6)
        if self.engine.over_rate(api_key):
            return error(429, "TooManyRequests", "Rate limit exceeded.")

        if scope == "create":
            return self._create(request, entry, delay)
        self._answer_after(request, delay)
        if scope == "find":
            return self._find(request)
        if scope == "wallet":
            return self._pass_urls(request)
        if scope == "update":
            return self._update(request, entry)
        if scope == "promote":
            return self._change_type(request)
        if request.method != "GET":
            return error(405, "MethodNotAllowed", "Method not allowed.")
        if request.path == "/api/v3/stores":
            show_all = request.args.get("includeInactive", "").lower() == "true"
            return ok([s for s in self.engine.stores if show_all or s.get("active", True)])
        if request.path == "/api/v2/consents" or (
            request.path == "/api/v3/consents" and self.engine.consents_v3
        ):  # v2 is documented (engage-api.md §4); ASSUMPTION: v3 mirrors it
            return ok(self.engine.consents)
        if request.path.startswith("/api/v3/contacts/"):
            contact = self.engine.get(request.path.rsplit("/", 1)[1])
            return ok(contact) if contact else error(404, "ContactNotFound", "Contact not found.")
        return error(404, "NotFound", "No such endpoint.")

    def _find(self, request: Request) -> Response:
        contact_type = request.args.get("contactType") or None
        if contact_type and contact_type not in self.engine.contact_types:
            return error(400, "InvalidContactType", "Invalid contact type.")
        searches = [(p, request.args[p]) for p in FIND_PARAMS if request.args.get(p)]
        if request.args.get("any"):
            searches.append(self._any(request.args["any"]))
        if not searches:
            return error(
                400,
                "InvalidSearchQuery",
                "Give email, mobilePhone, socialSecurityNumber, customKey or any.",
            )
        for param, value in searches:
            if param == "email" and not EMAIL.fullmatch(value):
                return error(400, "InvalidEmailAddress", "Invalid email address.")
            if param == "mobilePhone" and not E164.fullmatch(value):
                return error(400, "InvalidPhoneNumber", "Invalid phone number.")
            if param == "socialSecurityNumber" and not valid_ssn(value):
                return error(400, "InvalidSocialSecurityNumber", "Invalid social security number.")
        # ASSUMPTION (§1.1): with several parameters, a contact matching any of them counts.
        found = sorted({cid for p, v in searches for cid in self.engine.find(p, v, contact_type)})
        if not found:
            return error(404, "ContactNotFound", "Contact not found.")
        if len(found) > 1:
            return error(409, "MultipleMatches", "More than one contact matched.",
                         {"multipleMatchesFound": found})  # fmt: skip
        return ok(found[0])  # a JSON string literal, quotes included (§1.2)

    def _update(self, request: Request, entry: Recorded) -> Response:
        """PATCH /api/v3/contacts/{id} (engage-api.md §15): sets what the body names. A null or
        empty value is taken, as Engage takes it: it empties what the contact held (recorded
        as a warning, so that a test catches one). The same checks as a create's, on what
        was sent; unknown names are ignored."""
        body = entry.body
        contact_id = request.path.rsplit("/", 1)[1]
        if not isinstance(body, dict) or not body:
            return error(400, "NoData", "No data.")
        for name, value in body.items():
            if value is None or value == "" or value == [] or value == {}:
                entry.warnings.append(f"{name} is null or empty: it overwrote a stored value")
        for name in ("contactType", "id", "memberNumber"):
            if name in body:
                entry.warnings.append(f"{name} sent in a PATCH: Engage does not change it so")
        current = self.engine.get(contact_id)
        if current is None:
            return error(404, "ContactNotFound", "Contact not found.")
        sent = {k: v for k, v in body.items() if v not in (None, "")}
        details = {
            name: problem
            for name, problem in self._validate(
                {**sent, "contactType": current["meta"]["contactType"]},
                current["meta"]["contactType"], mandatory=False,
            ).items()
        }  # fmt: skip
        if details:
            return error(422, "ValidationError", "Validation failed.", details)
        changed = self.engine.update(
            contact_id, {k: v for k, v in body.items() if k not in ("contactType", "id")}
        )
        if changed is None:
            return error(404, "ContactNotFound", "Contact not found.")
        return ok(changed)

    def _change_type(self, request: Request) -> Response:
        """POST /api/v3/contacts/{id}/updateContactType?contactTypeId=… (engage-api.md §15).
        ASSUMPTION: the statuses for an unknown type (400 InvalidContactType), a contact that
        lacks the new type's key (422) and a key another contact of that type holds (409) are
        not documented."""
        wanted = request.args.get("contactTypeId") or ""
        if wanted not in self.engine.contact_types:
            return error(400, "InvalidContactType", "Invalid contact type.")
        contact_id = request.path.rsplit("/", 2)[1]
        changed = self.engine.change_type(contact_id, wanted)
        if changed is None:
            return error(404, "ContactNotFound", "Contact not found.")
        if changed == "MissingKey":
            key = self.engine.contact_types[wanted]["key"]
            return error(422, "ValidationError", "Validation failed.", {key: "Mandatory"})
        if isinstance(changed, str):
            return error(409, changed, "Conflict.")
        return ok(changed)

    def _pass_urls(self, request: Request) -> Response:
        """POST /api/v3/wallet/pass/urls (engage-api.md §13): each known contact's one link.
        ASSUMPTION: the error statuses are not documented; 400 for a body that is not
        {"cardId": ..., "contactIds": [...]}, 404 for a card or contacts the tenant lacks."""
        body = request.get_json(silent=True)
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("cardId"), str)
            or not (
                isinstance(body.get("contactIds"), list)
                and all(isinstance(c, str) for c in body["contactIds"])
                and body["contactIds"]
            )
        ):
            return error(400, "InvalidRequest", "Give a cardId and a list of contactIds.")
        if body["cardId"] not in self.engine.wallet_cards:
            return error(404, "CardNotFound", "No wallet card with that id.")
        base = request.host_url.rstrip("/")
        if self.engine.public_host:  # a phone opens these: the machine's address, our port
            base = f"{request.scheme}://{self.engine.public_host}:{request.host.rsplit(':', 1)[-1]}"
        links = {}
        for contact_id in body["contactIds"]:
            token = self.engine.pass_url_token(contact_id)
            if token:
                links[contact_id] = f"{base}/_simulator/wallet/{token}"
        if not links:
            return error(404, "ContactNotFound", "None of those contacts exist.")
        return ok(links)

    def wallet_page(self, token: str) -> Response:
        """What a pass link opens: here a pretend card (Engage's own redirects to Apple or
        Google Wallet), so that training shows the whole journey."""
        contact = self.engine.pass_owner(token)
        if contact is None:
            return Response("No such pass.", status=404, content_type="text/plain")
        number = html.escape(str(contact["attributes"].get("memberNumber", "")))
        page = (
            "<!doctype html><html lang=en><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width, initial-scale=1'>"
            "<title>Membership card</title><body style='font-family:sans-serif;margin:2rem'>"
            "<div data-pretend-card style='max-width:22rem;padding:1.5rem;border-radius:1rem;"
            "background:#1f5f4a;color:#fff'><p style='margin:0;font-size:.9rem'>Acme "
            "membership card (training: a pretend card; Engage's link adds the real one to "
            "Apple Wallet or Google Wallet)</p>"
            f"<p style='font-size:1.6rem;margin:.8rem 0 0'>Member <strong>{number}</strong></p>"
            "</div></body></html>"
        )
        return Response(page, content_type="text/html; charset=utf-8")

    @staticmethod
    def _any(value: str) -> tuple[str, str]:
        """`any` stops at the first attribute the value validates as (§1.1)."""
        if EMAIL.fullmatch(value):
            return ("email", value)
        if valid_ssn(value):
            return ("socialSecurityNumber", value)
        if E164.fullmatch(value):
            return ("mobilePhone", value)
        return ("customKey", value)

    def _create(self, request: Request, entry: Recorded, delay: float) -> Response:
        for header in ("source", "storeExternalId", "createAsUnapproved"):
            if header in request.headers:
                entry.warnings.append(f"{header} sent as a header: v3 ignores it (§2.1)")
        body = entry.body
        if not isinstance(body, dict) or not body:
            self._answer_after(request, delay)
            return error(400, "NoData", "No data.")
        contact_type = body.get("contactType") or "Member"  # defaults to Member (§2.2)
        for name, value in body.items():
            if value is None or value == "" or value == [] or value == {}:
                entry.warnings.append(f"{name} is null or empty: it would overwrite a stored value")
        if "country" in body:
            entry.warnings.append("country sent: Engage fills it from countryCode")
        details = self._validate(body, contact_type)
        unapproved = request.args.get("createAsUnapproved", "false").lower()
        if unapproved not in ("true", "false"):
            details["createAsUnapproved"] = "Must be true or false"
        if details:
            self._answer_after(request, delay)
            # ASSUMPTION (§2.4): per-field detail travels in messageDetails.
            return error(422, "ValidationError", "Validation failed.", details)
        store_id = request.args.get("storeExternalId")
        if not store_id or not self.engine.store(store_id):
            entry.warnings.append("storeExternalId missing or unknown: no recruited-by store")
        key_value = str(body[self.engine.contact_types[contact_type]["key"]])
        token = self.engine.begin_create(contact_type, key_value)
        if token:
            self._answer_after(request, delay)
            return error(409, token, "Conflict.")
        try:
            if delay > self.engine.create_limit:
                # Engage's own limit: abort, roll back, nothing created (§7).
                self._answer_after(request, self.engine.create_limit)
                return error(504, "RequestTimeOut", "The request timed out.")
            self._answer_after(request, delay)
            contact = self.engine.commit(body, contact_type, store_id, unapproved != "true")
        finally:
            self.engine.end_create(contact_type, key_value)
        return ok(contact, 201)

    def _validate(self, body: dict, contact_type: str, mandatory: bool = True) -> dict[str, str]:
        details: dict[str, str] = {}
        if contact_type not in self.engine.contact_types:
            # ASSUMPTION (§2.2): "an error" for an unknown type; status not documented.
            return {"contactType": "Unknown contact type"}
        settings = self.engine.contact_types[contact_type]
        for name in {settings["key"], *settings.get("mandatory", [])} if mandatory else ():
            if body.get(name) in (None, ""):
                details[name] = "Mandatory"
        checks = {
            "email": lambda v: isinstance(v, str) and EMAIL.fullmatch(v),
            "mobilePhone": lambda v: isinstance(v, str) and E164.fullmatch(v),
            "socialSecurityNumber": lambda v: isinstance(v, str) and valid_ssn(v),
            "birthDay": _past_date,
            "countryCode": lambda v: v in self._countries,
        }
        for name, check in checks.items():
            if body.get(name) not in (None, "") and not check(body[name]):
                details[name] = "Invalid"
        preferences = body.get("preferences", {})
        if not isinstance(preferences, dict) or not all(
            isinstance(v, bool) for v in preferences.values()
        ):
            details["preferences"] = "Invalid"
        consents = body.get("consents", [])
        known = {c["id"] for c in self.engine.consents}
        if not isinstance(consents, list) or not all(
            isinstance(c, dict) and c.get("id") in known and isinstance(c.get("value"), bool)
            for c in consents
        ):
            details["consents"] = "Invalid"  # id and value are mandatory; ids must exist (§4)
        return details

    def _answer_after(self, request: Request, seconds: float) -> None:
        """Wait until `seconds` after the request arrived: a call takes `latency` as if it were
        all Engage's, with the simulator's own work inside it, not added to it (benchmarks
        count exactly L per call as Engage's share)."""
        arrived = request.environ.get("simulator.received")
        if arrived is not None:
            seconds -= time.perf_counter() - arrived
        self._wait(seconds)

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.engine.stopping.wait(seconds)

    # --- admin (simulator only) ----------------------------------------------------------------
    def admin(self, request: Request) -> Response:
        path, method = request.path.rstrip("/"), request.method
        if path.startswith("/_simulator/wallet/") and method == "GET":
            return self.wallet_page(path.rsplit("/", 1)[1])
        if path == "/_simulator/faults" and method == "POST":
            try:
                fault = self.engine.inject(**(request.get_json(silent=True) or {}))
            except (TypeError, ValueError) as exc:
                return error(400, "BadFault", str(exc))
            return ok(fault.as_dict(), 201)
        if path == "/_simulator/faults" and method == "DELETE":
            self.engine.clear_faults()
            return Response(status=204)
        if path == "/_simulator/settings" and method == "POST":
            settings = request.get_json(silent=True) or {}
            for name in ("latency", "connect_latency", "create_limit", "rate_limit"):
                if isinstance(settings.get(name), int | float) and settings[name] >= 0:
                    setattr(self.engine, name, float(settings[name]))
            if isinstance(settings.get("unapproved_blocks_create"), bool):
                self.engine.unapproved_blocks_create = settings["unapproved_blocks_create"]
            if "allowed_addresses" in settings:
                addresses = settings["allowed_addresses"]
                self.engine.allowed_addresses = list(addresses) if addresses else None
            names = ("latency", "connect_latency", "create_limit", "rate_limit",
                     "unapproved_blocks_create", "allowed_addresses")  # fmt: skip
            return ok({n: getattr(self.engine, n) for n in names})
        if path == "/_simulator/reset" and method == "POST":
            self.engine.reset()
            return Response(status=204)
        if path == "/_simulator/requests" and method == "GET":
            return ok([r.as_dict() for r in self.engine.requests()])
        if path == "/_simulator/contacts" and method == "GET":
            return ok(self.engine.contacts())
        if path == "/_simulator/stats" and method == "GET":
            server = request.environ.get("simulator.server")
            return ok(
                {
                    "requests": len(self.engine.requests()),
                    "contacts": len(self.engine.contacts()),
                    "connections_opened": getattr(server, "connections_opened", None),
                }
            )
        if path == "/_simulator" and method == "GET":
            return self._overview()
        if path == "/_simulator/ui" and method == "POST":  # the overview page's buttons
            chosen = request.form.get("fault", "")
            self.engine.clear_faults()
            if chosen in UI_FAULTS:
                self.engine.inject(**UI_FAULTS[chosen][1])
            return Response(status=303, headers={"Location": "/_simulator"})
        return error(404, "NotFound", "No such simulator endpoint.")

    def _overview(self) -> Response:
        """A plain page for a look in training mode: what the form sent, and what is stored."""
        rows = "".join(
            f"<tr><td>{escape(dt.datetime.fromtimestamp(r.at).strftime('%H:%M:%S'))}</td>"
            f"<td>{escape(r.method)}</td><td>{escape(r.path)}</td><td>{r.status}</td>"
            f"<td>{escape(', '.join(r.faults + r.warnings))}</td></tr>"
            for r in reversed(self.engine.requests()[-50:])
        )
        people = "".join(
            f"<tr><td>{escape(str(c['attributes'].get('memberNumber')))}</td>"
            f"<td>{escape(str(c['attributes'].get('firstName') or ''))}</td>"
            f"<td>{escape(str(c['attributes'].get('email') or ''))}</td>"
            f"<td>{escape(_store_name(c))}</td></tr>"
            for c in self.engine.contacts()
        )
        faults = (
            ", ".join(
                f"{f.kind} {f.status or ''} on {f.on}".replace("  ", " ")
                for f in self.engine.faults()
            )
            or "none: Engage answers as it should"
        )
        buttons = "".join(
            f'<button name="fault" value="{name}">{escape(label)}</button> '
            for name, (label, _) in UI_FAULTS.items()
        )
        html = (
            "<!doctype html><meta charset=utf-8><title>Engage simulator</title>"
            "<h1>Engage simulator</h1>"
            f"<p>Faults now: {escape(faults)}</p>"
            '<form method=post action="/_simulator/ui"><p>Make Engage: '
            f'{buttons}<button name="fault" value="">answer normally again</button></p></form>'
            "<h2>Recent requests</h2><table border=1 cellpadding=4>"
            "<tr><th>Time<th>Method<th>Path<th>Status<th>Faults and warnings</tr>"
            f"{rows}</table><h2>Contacts</h2><table border=1 cellpadding=4>"
            f"<tr><th>Member number<th>First name<th>Email<th>Store</tr>{people}</table>"
        )
        return Response(html, content_type="text/html")


# The overview page's buttons: what training can make Engage do, to see what the till says.
UI_FAULTS = {
    "down": (
        "be down (503 to every call)",
        {"kind": "status", "status": 503, "on": "any", "times": None},
    ),
    "slow": (
        "be slow (6 s a call)",
        {"kind": "latency", "seconds": 6.0, "on": "any", "times": None},
    ),
    "refuse": (
        "refuse the next sign-up's details (422)",
        {"kind": "status", "status": 422, "on": "create", "times": 1},
    ),
    "busy": (
        "say the next person is being registered (409)",
        {
            "kind": "status",
            "status": 409,
            "on": "create",
            "times": 1,
            "token": "ContactWithKeyIsBeingCreated",
        },
    ),
}


def _store_name(contact: dict) -> str:
    return str((contact["attributes"].get("currentStore") or {}).get("name", ""))


def _scope(request: Request) -> str:
    if request.method == "POST" and request.path == "/api/v3/contacts":
        return "create"
    if request.method == "POST" and request.path == "/api/v3/wallet/pass/urls":
        return "wallet"
    if request.method == "GET" and request.path == "/api/v3/contacts/id":
        return "find"
    if request.method == "PATCH" and request.path.startswith("/api/v3/contacts/"):
        return "update"
    if request.method == "POST" and request.path.endswith("/updateContactType"):
        return "promote"
    return "read"


def _json_or_text(text: str) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _past_date(value: Any) -> bool:
    try:
        if not isinstance(value, str) or len(value) != 10:
            return False
        return dt.date.fromisoformat(value) < dt.date.today()
    except ValueError:
        return False
