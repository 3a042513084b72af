"""Scan to join: the customer signs up on their own phone, and the till gets the answer.

On an enrolled staff tablet "Customer signs up on their phone" starts a *handoff*: a QR code
of a one-time link (a token of 256 bits, an HMAC of the till page's own random id under
SECRET_KEY, so nothing keeps it; only its SHA-256 is stored), and under it the
store's short address and a nine-digit code for typing where the camera fails. A handoff lives
HANDOFF_MINUTES in the shared state (any machine may serve the phone), bound to that till's
device, store and language.

The phone's first request exchanges the token for a cookie of that phone and is redirected to
an address without it (and sends no Referer with it); from then on the handoff is that phone's
alone. Its form runs the very same submission as the till's and the kiosk's (channel mode
`phone`, private: created, found, in progress, several matches and kept all read "thanks",
with the same markup, cookies and timing). One final outcome closes the handoff: a photo of
the till's screen is worth at most one sign-up, within the minutes left.

The till polls a cheap status answer (or, without JavaScript, refreshes itself) and, once the
phone's sign-up has its outcome, shows it as the till shows any sign-up: created or found with
the member number, in progress, kept with its reference, or that details are being corrected
on the phone. Never anything the customer typed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import time

from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from wtforms import StringField
from wtforms.validators import DataRequired

from ..access import signed
from ..access.devices import Device, current_device
from ..config import handoff_available
from ..i18n import LANGUAGES, current_language
from ..i18n import gettext as _
from ..ops import web
from ..signup import flow, submission
from ..store import StateUnavailable
from . import codes, views

log = logging.getLogger(__name__)
bp = Blueprint("handoff", __name__)

COOKIE = "handoff"
PHONE_LIMIT = (30, 60)  # requests a minute from one address to the phone pages
# The typed code: strangers' wrong codes must not stop a waiting customer's right one, and
# guessing any one live handoff must stay rarer than GUESS_CHANCE over its whole life.
CODE_DIGITS = 9  # one code in a billion: "123 456 789"
CODE_LIMIT = (10, 300)  # codes tried from one address (an IPv6 /64) in five minutes
CODE_WINDOW = 600.0  # the store-wide counts below are kept per ten minutes
# Wrong codes for one store in ten minutes: past them only addresses that have not typed a
# wrong code there may try, so a customer's phone still gets through while strangers flood.
STORE_WRONG = 100
GUESS_CHANCE = 1e-4
HANDOFF_SUBMITS = (6, 600)  # sends (corrections included) through one handoff
POLL_SECONDS = 2  # the till's status polls; without JavaScript its page refreshes every 4 s
# A display takes its handoff on its next status poll (every second; every 3 s without
# JavaScript): one that has not after this long is not looking, and the till says so.
DISPLAY_AWAY_SECONDS = 10
CORRECTING = (flow.REJECTED, "invalid", flow.TIMEOUT, flow.UNAVAILABLE, "throttled")


def _on() -> bool:
    return handoff_available(current_app.config)


def _public(endpoint: str, **values) -> str:
    """The address of one of our pages as a customer's phone reaches it."""
    public = current_app.config["PUBLIC_URL"]
    if public:
        return public + url_for(endpoint, **values)
    return url_for(endpoint, **values, _external=True)  # training: the till's own address


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token(till: str) -> str:
    """The phone's token of a till page's handoff: made again whenever the till needs it, from
    its random id and SECRET_KEY, so it is kept nowhere (not even in the till's cookies)."""
    key = hashlib.sha256(f"engage-signup handoff {current_app.secret_key}".encode()).digest()
    digest = hmac.new(key, till.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def _short(handoff_id: str) -> str:
    """What a log line may say of a handoff: a short hash, nothing that can be replayed."""
    return handoff_id[:8]


def _cookie_name() -> str:
    return f"__Host-{COOKIE}" if current_app.config["HTTPS"] else COOKIE


PHONE_ENDPOINTS = ("phone_open", "code_entry", "phone", "phone_language", "phone_done")


@bp.before_request
def _available():
    if not _on():
        abort(404)  # HANDOFF_MINUTES=0 (or no PUBLIC_URL): no button, and no such pages
    if request.endpoint and request.endpoint.rsplit(".", 1)[-1] in PHONE_ENDPOINTS:
        g.phone_page = True  # the customer's own phone: its language first (webapp/i18n.py)
    return None


# --- the till ------------------------------------------------------------------------------------
def _till_device() -> Device:
    device = current_device()
    if device is None or not device.bound or device.mode != "staff" or not device.id:
        abort(404)  # only an enrolled staff tablet starts or watches a handoff
    return device


@bp.post("/handoff/")
def start():
    return start_handoff(_till_device())


def start_handoff(device: Device, *, display: str | None = None):
    """A handoff of this till's: for a phone (a QR code and a typed code), or given to its
    paired customer display (`display`: no code is shown, and no phone can take it)."""
    state = current_app.extensions["state"]
    till = secrets.token_urlsafe(16)
    token = _token(till)
    now = state.clock()
    try:
        used = state.handoff_codes_in_use(device.store_id)
        code = next(c for c in (f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
                                for _ in range(50)) if c not in used)  # fmt: skip
        state.handoff_add({
            "id": _hash(token), "till": till, "code": code, "store": device.store_id,
            "store_name": device.store_name, "country": device.country, "device": device.id,
            "language": current_language(), "created": now,
            "expires": now + current_app.config["HANDOFF_MINUTES"] * 60, "display": display,
        })  # fmt: skip
    except (StateUnavailable, StopIteration) as exc:
        log.error("handoff: cannot start one: %s %s", exc, web.log_context())
        g.outcome = "error"
        message = _("The customer's phone cannot be used right now. Register them here.")
        return render_template("errors/error.html", message=message, outcome="error"), 503
    log.info("handoff %s started %s", _short(_hash(token)), web.log_context())
    return redirect(url_for("handoff.till", till=till), code=303)


def _till_handoff(till: str) -> dict:
    device = _till_device()
    try:
        handoff = current_app.extensions["state"].handoff(till=till)
    except StateUnavailable:
        abort(503)
    if handoff is None or handoff["device"] != device.id:
        abort(404)  # another till's handoff is no more visible than a missing one
    return handoff


def _status(handoff: dict) -> str:
    """waiting, correcting, done, closed: what the till shows; and unanswered, for a handoff
    given to a customer display that has not taken it after DISPLAY_AWAY_SECONDS (it is
    switched off, asleep, or on another page)."""
    if handoff["state"] == "cancelled":
        return "closed"
    if handoff["state"] == "closed":
        return "done"
    now = current_app.extensions["state"].clock()
    if handoff["expires"] <= now:
        return "closed"
    if handoff["outcome"] in CORRECTING:
        return "correcting"
    if (
        handoff.get("display")
        and handoff["state"] == "waiting"
        and now - handoff["created"] > DISPLAY_AWAY_SECONDS
    ):
        return "unanswered"
    return "waiting"


@bp.get("/handoff/<till>/status")
def status(till: str):
    """The cheap answer a waiting till polls: one row read, no page rendered."""
    response = jsonify(status=_status(_till_handoff(till)))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/handoff/<till>")
def till(till: str):
    handoff = _till_handoff(till)
    now = _status(handoff)
    display = bool(handoff.get("display"))
    if now == "done":
        # The till's screen faces the customer, and whoever scanned the code may stand there:
        # only that the customer is done, until the cashier turns the screen and asks to see.
        g.outcome = "handoff-done"
        return render_template("handoff/till.html", outcome=g.outcome, status=now, till=till,
                               poll_seconds=POLL_SECONDS, display=display)  # fmt: skip
    if display:  # given to the customer display: no code for any phone to take it by
        waiting = now in ("waiting", "correcting", "unanswered")
        g.outcome = "handoff-waiting" if waiting else "handoff-closed"
        return render_template("handoff/till.html", outcome=g.outcome, status=now, till=till,
                               poll_seconds=POLL_SECONDS, display=True)  # fmt: skip
    g.outcome = "handoff-waiting" if now in ("waiting", "correcting") else "handoff-closed"
    link = _public(".phone_open", token=_token(till)) if now != "closed" else None
    short = _public(".code_entry", store=handoff["store"])
    page = render_template(
        "handoff/till.html",
        outcome=g.outcome,
        status=now,
        link=link,
        qr=codes.qr_svg(link, _("Code for the customer's phone")) if link else None,
        short_address=short,
        code=" ".join(handoff["code"][n : n + 3] for n in range(0, len(handoff["code"]), 3)),
        till=till,
        poll_seconds=POLL_SECONDS,
    )
    return page


@bp.post("/handoff/<till>/reveal")
def reveal(till: str):
    """The cashier, with the screen turned to them, asks for the phone's result: the usual
    result page, with the member number to attach the purchase (read from Engage now for a
    member who was found), and for a found member their first name and last initial to ask
    "Are you Astrid?". Never Engage's contact id, and a wallet card only for a new member."""
    handoff = _till_handoff(till)
    if _status(handoff) != "done":
        return redirect(url_for(".till", till=till), code=303)
    result = json.loads(handoff["result"] or "{}")
    outcome = flow.Outcome(result.get("name") or flow.QUEUED,
                           contact_id=result.get("contact_id"),
                           member_number=result.get("member_number"),
                           other_type=result.get("other_type"))  # fmt: skip
    if outcome.name == flow.EXISTING:
        outcome = flow.with_member_number(current_app.extensions["engage"], outcome,
                                          current_app.config["CONTACT_TYPE"])  # fmt: skip
    shown = {**result, "member_number": outcome.member_number, "other_type": outcome.other_type,
             "masked_name": outcome.masked_name, "phone": "1"}  # fmt: skip
    g.outcome = outcome.name
    log.info("handoff %s: the cashier asked to see the result %s", _short(handoff["id"]),
             web.log_context())  # fmt: skip
    response = redirect(url_for("signup.done"), code=303)
    response.set_cookie(views._result_cookie(), signed.result_value(shown, signed.client_id()),
                        **views._cookie_flags())  # fmt: skip
    return response


@bp.post("/handoff/<till>/cancel")
def cancel(till: str):
    _till_handoff(till)
    try:
        current_app.extensions["state"].handoff_cancel(till)
    except StateUnavailable:
        abort(503)
    log.info("handoff cancelled by the till %s", web.log_context())
    return redirect(url_for("signup.form"), code=303)


# --- the customer's phone ------------------------------------------------------------------------
def _phone_id() -> str:
    """This phone's own id (its session's), hashed: what binds a handoff to one phone."""
    return hashlib.sha256(f"phone {signed.client_id()}".encode()).hexdigest()[:32]


def _limited(key: str, limit: tuple[int, int]) -> bool:
    try:
        return not current_app.extensions["state"].hits([(key, *limit)])
    except StateUnavailable:
        return True


def _closed(status: int = 410, *, kept: bool = False):
    """A used, cancelled, expired or someone else's handoff: the same short page for all (and,
    when this phone's own minutes ran out as it sent the form, that what it typed is kept)."""
    g.outcome = "handoff-closed"
    page = render_template("handoff/closed.html", outcome="handoff-closed", device=None,
                           phone_page=True, kept=kept)  # fmt: skip
    response = make_response(page, status)
    response.delete_cookie(_cookie_name(), **views._cookie_flags())
    return response


def _take(handoff: dict | None):
    """This phone takes `handoff`, if it still can: a cookie of this phone, and off to the
    address without the token."""
    if handoff is None or handoff.get("display"):
        return _closed(404)  # one given to a customer display is that display's alone
    state = current_app.extensions["state"]
    try:
        taken = state.handoff_take(handoff["id"], _phone_id(),
                                   current_app.config["HANDOFF_MINUTES"] * 60)  # fmt: skip
    except StateUnavailable:
        return _closed(503)
    if not taken:
        log.info("handoff %s refused to a phone (used, expired or another phone's) %s",
                 _short(handoff["id"]), web.log_context())  # fmt: skip
        return _closed()
    if handoff["language"] in LANGUAGES:  # the till's language, switchable on the phone
        session["lang"] = handoff["language"]
    response = redirect(url_for(".phone"), code=303)
    response.set_cookie(_cookie_name(), signed.seal({"id": handoff["id"]}, "handoff"),
                        **views._cookie_flags())  # fmt: skip
    response.headers["Referrer-Policy"] = "no-referrer"  # the token's address goes nowhere
    log.info("handoff %s taken by a phone %s", _short(handoff["id"]), web.log_context())
    return response


@bp.get("/j/<token>")
def phone_open(token: str):
    if _limited(f"phone-address:{request.remote_addr}", PHONE_LIMIT):
        return _closed(429)
    if len(token) > 64:
        return _closed(404)
    try:
        handoff = current_app.extensions["state"].handoff(id=_hash(token))
    except StateUnavailable:
        return _closed(503)
    if handoff is not None:
        g.store_country = handoff["country"]
    return _take(handoff)


class CodeForm(FlaskForm):
    code = StringField(validators=[DataRequired()])


def store_ceiling(minutes: int) -> int:
    """Codes tried for one store in ten minutes, by anyone, past which code entry rests (the
    QR code still works). A handoff of `minutes` lives through at most ceil(minutes/10) + 1 of
    these windows, and each try finds a given handoff's code with a chance of one in
    10^CODE_DIGITS, so no handoff is guessed with a chance over GUESS_CHANCE / 2. At the
    default (10 minutes) that is 25,000 tries in ten minutes: 1,250 addresses at their limit."""
    windows = math.ceil(max(minutes, 1) / 10) + 1
    return int(10**CODE_DIGITS * GUESS_CHANCE / 2 / windows)


def _address() -> str:
    """Who is trying, as the limits count them: an IPv4 address, or an IPv6 /64 (one
    subscriber's whole network: an attacker has billions of addresses in it, not one)."""
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return request.remote_addr or "-"
    if address.version == 6:
        if address.ipv4_mapped:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _code_refused(store: str) -> bool:
    """Before a typed code is looked at: is this address, or this store, past its limits? Every
    try counts against the address and the store's ceiling; the store's wrong codes shut out
    only the addresses that typed one."""
    state = current_app.extensions["state"]
    address = _address()
    ceiling = store_ceiling(current_app.config["HANDOFF_MINUTES"])
    try:
        if not state.hits([(f"code-address:{address}", *CODE_LIMIT),
                           (f"code-store:{store}", ceiling, CODE_WINDOW)]):  # fmt: skip
            return True
        if state.count(f"code-wrong:{store}", CODE_WINDOW) < STORE_WRONG:
            return False
        return state.count(f"code-wrong:{store}:{address}", CODE_WINDOW) > 0
    except StateUnavailable:
        return True


def _code_wrong(store: str) -> None:
    try:
        current_app.extensions["state"].hits([(f"code-wrong:{store}", 1 << 30, CODE_WINDOW), (
            f"code-wrong:{store}:{_address()}", 1 << 30, CODE_WINDOW)])  # fmt: skip
    except StateUnavailable:
        pass


@bp.route("/join/<store>", methods=["GET", "POST"])
def code_entry(store: str):
    """The store's short address: the code shown on the till, typed by hand."""
    try:  # before any word is translated: the store's language, where the phone's is not ours
        g.store_country = current_app.extensions["state"].store_country(store)
    except StateUnavailable:
        pass
    form = CodeForm(formdata=request.form if request.method == "POST" else None)
    g.outcome = "handoff-code"
    error = None
    if request.method == "POST":
        typed = "".join(ch for ch in (form.code.data or "") if ch.isdigit())
        if _code_refused(store):
            error = _("Too many tries. Scan the code on the till's screen instead.")
        elif form.validate_on_submit() and len(typed) == CODE_DIGITS:
            try:
                handoff = current_app.extensions["state"].handoff_by_code(store, typed)
            except StateUnavailable:
                handoff = None
            if handoff is not None:
                return _take(handoff)
            _code_wrong(store)
            error = _("That code is not valid. Check it on the till's screen, or ask the cashier "
                      "for a new one.")  # fmt: skip
        else:  # not a code at all: no guess, so not a wrong code either
            error = _("Type the nine digits shown on the till's screen.")
    status = 400 if error else 200
    return render_template("handoff/code.html", outcome=g.outcome, form=form, error=error,
                           store=store, device=None, phone_page=True), status  # fmt: skip


def _cookies_handoff() -> dict | None:
    """The handoff this phone's cookie names, in whatever state, if this phone took it."""
    sealed = request.cookies.get(_cookie_name())
    opened = signed.unseal(sealed, "handoff", 3600) if sealed else None
    if not isinstance(opened, dict):
        return None
    try:
        handoff = current_app.extensions["state"].handoff(id=str(opened.get("id")))
    except StateUnavailable:
        return None
    return handoff if handoff is not None and handoff["phone"] == _phone_id() else None


def _phone_handoff(*, sending: bool = False) -> dict | None:
    """The handoff this phone holds, while it is open (`sending`: also while one of its sends
    holds it, or after one closed it, for a double tap to be told so)."""
    handoff = _cookies_handoff()
    states = ("open", "sending", "closed") if sending else ("open",)
    if handoff is None or handoff["state"] not in states:
        return None
    expired = handoff["expires"] <= current_app.extensions["state"].clock()
    if expired and handoff["state"] != "closed":
        return None
    return handoff


# In the phone's form (cached, the same for every phone): where the seconds its code has left
# go, for the warning a minute before the end (static/app.js).
SECONDS_LEFT = b"@@handoff-seconds-left@@"
KEPT_SECONDS = 600  # what a phone typed when its minutes ran out waits this long for a new code


def _ran_out() -> bool:
    """This phone held its handoff open, and the handoff's minutes ran out."""
    handoff = _cookies_handoff()
    return (handoff is not None and handoff["state"] == "open"
            and handoff["expires"] <= current_app.extensions["state"].clock())  # fmt: skip


TOKEN = re.compile(r"[A-Za-z0-9_-]{24}")  # a one-time submission token, as the form checks it
CLAIM_POLL = 0.05  # how often a send that waits for another of the same phone looks again


def _claim(handoff: dict, token: str):
    """Hold the handoff for this send before anything else happens to it (no consent record,
    no Engage call, not even our own checks): None when it is ours, else the answer to give.

    Exactly one of any number of sends at once wins the claim, on any machine. Another send of
    the same phone waits for it: a double tap then reads the first one's answer ("thanks"),
    and a correction (the first one's details were refused) claims it in turn. A send after
    the sign-up was done, from a form loaded before it, finds the code used."""
    state = current_app.extensions["state"]
    lease = submission.longest_seconds()
    deadline = time.monotonic() + lease + 5 * CLAIM_POLL
    waited = False
    while True:
        try:
            if state.handoff_claim(handoff["id"], _phone_id(), token, lease):
                return None
            now = state.handoff(id=handoff["id"])
        except StateUnavailable:
            return _closed(503)
        if now is None or now["phone"] != _phone_id():
            return _closed()
        if now["state"] == "closed" and (waited or now["submission"] == token):
            return _double_tap(now)
        if now["state"] == "sending" and time.monotonic() < deadline:
            waited = True
            time.sleep(CLAIM_POLL)  # the first send is talking to Engage: its answer is near
            continue
        if now["state"] == "open" and now["expires"] > state.clock():
            continue  # the first send ended in a correction: this one may go now
        return _closed()


def _double_tap(handoff: dict):
    """A second send of the sign-up that closed this handoff: the first one's answer, which
    on the phone is "thanks" whatever it was; nothing is sent again or counted again."""
    _as_device(handoff)
    request.environ[web.HIDE_TIMING] = True
    form = views.new_form(formdata=request.form)
    name = handoff["outcome"] if handoff["outcome"] in submission.FINAL_OUTCOMES else flow.QUEUED
    log.info("handoff %s: a second send of the phone's, answered as the first %s",
             _short(handoff["id"]), web.log_context())  # fmt: skip
    return views._present(form, flow.Outcome(name), duplicate=True)


def _as_device(handoff: dict) -> Device:
    """The phone, for the pages and the submission: the till's store and device, mode phone."""
    store = handoff["store"]
    g.device = Device(store_id=store, store_name=handoff["store_name"],
                      country=handoff["country"], mode="phone", bound=False,
                      id=handoff["device"])  # fmt: skip
    return g.device


@bp.route("/j/", methods=["GET", "POST"])
def phone():
    if _limited(f"phone-address:{request.remote_addr}", PHONE_LIMIT):
        return _closed(429)
    handoff = _phone_handoff(sending=request.method == "POST")
    if handoff is None:
        if request.method == "POST" and _ran_out():
            # Its minutes ran out as it sent the form: what it typed waits, sealed, for the
            # form of the next code this phone takes (the cashier starts a new one).
            response = _closed(kept=True)
            return views.keep_entry(response, "form", seconds=KEPT_SECONDS)
        return _closed()
    request.environ[web.HIDE_TIMING] = True  # Engage's share would tell one call from two
    if request.method == "GET":
        device = _as_device(handoff)
        signed.client_id()
        entry = views._take_entry()
        if entry is not None:
            page, _status = views._form_from_entry(entry)
        else:
            g.outcome = "form"
            page = views._empty_form_page(device)
        left = max(0, int(handoff["expires"] - current_app.extensions["state"].clock()))
        if isinstance(page, str):
            page = page.encode()
        return make_response(page.replace(SECONDS_LEFT, str(left).encode()))
    token = request.form.get("submission", "")
    if TOKEN.fullmatch(token):  # else the form's own check refuses it, before any sign-up
        refused = _claim(handoff, token)
        if refused is not None:
            return refused
    elif handoff["state"] != "open":
        return _closed()
    _as_device(handoff)
    channel = submission.Channel(handoff["store"], handoff["device"], "phone",
                                 f"handoff:{handoff['id']}")  # fmt: skip
    sends = (f"handoff-sends:{handoff['id']}", *HANDOFF_SUBMITS)
    told: list[str] = []

    def tell(outcome: flow.Outcome) -> None:
        told.append(outcome.name)
        tell_till(handoff, outcome, token)

    try:
        return views.send(channel, told=tell, extra_limits=[sends])
    finally:
        if not told:  # the send failed before it had an outcome: the handoff is open again
            tell_till(handoff, flow.Outcome(flow.UNAVAILABLE, cause="Error"), token)


def tell_till(handoff: dict, outcome: flow.Outcome, token: str | None = None) -> None:
    """What the till may learn: the outcome, and for a final one its staff result (member
    number, contact id, reference): never anything the customer typed. It ends this send's
    claim on the handoff: a final outcome closes it, any other opens it for a correction."""
    final = outcome.name in submission.FINAL_OUTCOMES
    result = None
    if final:
        result = json.dumps({
            "name": outcome.name, "member_number": outcome.member_number,
            "contact_id": outcome.contact_id, "other_type": outcome.other_type,
            "matches": list(outcome.matches), "reference": outcome.reference,
        })  # fmt: skip
    try:
        current_app.extensions["state"].handoff_outcome(handoff["id"], outcome.name, result,
                                                        final=final, submission=token)  # fmt: skip
    except StateUnavailable as exc:
        submission.state_fault(exc)
    log.info("handoff %s: the phone's sign-up came to %s %s", _short(handoff["id"]),
             outcome.name, web.log_context())  # fmt: skip


@bp.post("/j/language")
def phone_language():
    """The language buttons on the phone's form: the page again in that language, with
    everything typed still there."""
    handoff = _phone_handoff()
    if handoff is None:
        return _closed()
    _as_device(handoff)
    chosen = request.form.get("lang")
    if chosen in LANGUAGES:
        session["lang"] = chosen
    g.outcome = "language"
    return views._keep_entry("form")


@bp.get("/j/done")
def phone_done():
    """Every final outcome reads the same on the phone: thanks, show this screen."""
    value = request.cookies.get(views._result_cookie())
    result = signed.read_result(value, session.get("client_id")) if value else None
    if result is None or result["name"] != views.THANKS:
        return _closed()
    g.outcome = "thanks"
    response = make_response(render_template("handoff/thanks.html", outcome="thanks", device=None,
                                             phone_page=True))  # fmt: skip
    response.delete_cookie(_cookie_name(), **views._cookie_flags())
    return response
