"""The signup pages: the form (GET/POST /) and the result page (GET /done).

On a staff tablet the answer to a POST is the result page (after a redirect) or the form back,
filled in, with what went wrong. On a kiosk every answer to a POST is a redirect: the browser's
history never holds a POST that Back, Forward or Reload could send again, and what the person
typed comes back only once, sealed in a short-lived cookie, to the next page. A kiosk's result
page reads and looks the same whatever Engage said (`thanks`), so nobody learns whether someone
else is a member; the log line keeps the real outcome.
"""

from __future__ import annotations

import logging
import re
import secrets

from flask import (
    Blueprint,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf.csrf import CSRFError
from markupsafe import Markup, escape
from werkzeug.datastructures import MultiDict

from ..access import devices, signed
from ..access.devices import current_device
from ..config import handoff_available
from ..engage import EngageError
from ..engage.client import WALLET_TIMEOUT, wallet_words
from ..i18n import LANGUAGES, countries, current_language, outcome_message
from ..i18n import gettext as _
from ..i18n import lazy_gettext as _l
from ..ops import metrics, web
from ..signup import flow, submission
from ..signup.consents import consent_texts
from ..signup.forms import POSTCODE_DIGITS
from ..store import StateUnavailable
from . import codes

log = logging.getLogger(__name__)

bp = Blueprint("signup", __name__)

# Outcomes that end the person's part: shown on a result page after a redirect.
FINAL_OUTCOMES = submission.FINAL_OUTCOMES
# What a kiosk shows for every final outcome.
THANKS = "thanks"
# A person found on a staff tablet and made a member, or completed.
KNOWN = (flow.PROMOTED, flow.UPDATED)
STORE_LANGUAGE = "store"  # ?lang=store: the store's own language again
# Pages that show an entry that was sent: a kiosk clears them sooner than a half-filled form.
ENTRY_OUTCOMES = ("invalid", flow.REJECTED, flow.TIMEOUT, flow.UNAVAILABLE, "throttled")
PREFERENCE_WORDS = submission.PREFERENCE_WORDS  # the page shows them; the records keep them
ENTRY_SECONDS = 120  # a kiosk's sealed entry is shown on the very next page, or never
# What a phone typed when its code ran out, for the form of its next code (the state database
# holds it no longer: its own expiry), as the longest any entry is opened after sealing.
LONGEST_ENTRY_SECONDS = 600
# Form-level notes that an answer can carry (a sealed kiosk entry holds only the key).
NOTES = {
    "resend": _l(
        "This page was open for a long time, so for your safety it needs to be sent again. "
        "Check your details and press the button once more."
    ),
    "token-used": _l(
        "These details were not sent: this page had already been used for another sign-up. "
        "Check them and press the button again."
    ),
    "malformed": _l(
        "Something in what was sent was not right, so nothing was sent on. "
        "Check your details and press the button once more."
    ),
}

bp.after_app_request(devices.keep_cookie_current)


@bp.before_app_request
def _switch_language():
    """`?lang=sv` chooses a language; `?lang=store` goes back to the store's own, as each new
    person starts (a kiosk's idle wipe and thank-you return, a till's "New customer")."""
    if request.method != "GET" or not request.query_string:
        return None  # the query string is parsed only when there is one
    chosen = request.args.get("lang")
    if chosen == STORE_LANGUAGE:
        session.pop("lang", None)
        return redirect(request.path, code=303)
    if chosen in LANGUAGES:
        session["lang"] = chosen
        return redirect(request.path, code=303)
    return None


@bp.post("/language")
def language():
    """The language buttons on the form send the form here: the page comes back in the chosen
    language with everything typed still there, nothing checked and nothing sent to Engage."""
    chosen = request.form.get("lang")
    if chosen in LANGUAGES:
        session["lang"] = chosen
    if current_device() is None:
        return redirect(url_for(".form"), code=303)
    g.outcome = "language"
    return _keep_entry("form")


# What training mode suggests typing, per CONTACT_KEY: the simulator's demo contacts
# (webapp/simulator/engine.py DEMO_CONTACTS): one member, one key that two contacts share, a
# newsletter subscriber (another contact type) and a member whose details are incomplete.
TRAINING_EXAMPLES = {
    "email": ("member@example.com", "twins@example.com", "newsletter@example.com",
              "incomplete@example.com"),
    "mobilePhone": ("070-174 06 05", "070-174 06 06", "070-174 06 07", "070-174 06 08"),
    "socialSecurityNumber": ("19121212-1212", "19811218-9876", "19900101-1239", "19850505-4562"),
    "externalId": ("M-1001", "M-2002", "C-4004", "M-3003"),
}  # fmt: skip


@bp.app_context_processor
def _page_context():
    config = current_app.config
    return {
        "training_examples": TRAINING_EXAMPLES[config["CONTACT_KEY"]],
        "language": current_language(),
        "languages": LANGUAGES,
        "device": current_device(),
        "kiosk_timing": {
            "idle": config["KIOSK_IDLE_SECONDS"],
            "error_idle": config["KIOSK_ERROR_IDLE_SECONDS"],
            "countdown": config["KIOSK_COUNTDOWN_SECONDS"],
            "thanks": config["KIOSK_THANKS_SECONDS"],
        },
        "entry_outcomes": ENTRY_OUTCOMES,
        "postcode_digits": POSTCODE_DIGITS,
        "preference_words": PREFERENCE_WORDS,
        "handoff_on": handoff_available(config),
        "paired_display": _paired(current_device()),
        # Where a public screen starts again (the next person, in the store's language).
        "start_url": url_for("display.rest")
        if current_device() is not None and current_device().mode == "display"
        else url_for("signup.form", lang="store"),
    }


def _paired(device) -> bool:
    """This staff tablet has a customer display paired with it (read once per request)."""
    if device is None or device.mode != "staff" or not device.bound or not device.id:
        return False
    if "paired_display" not in g:
        try:
            g.paired_display = bool(current_app.extensions["state"].display_of_till(device.id))
        except StateUnavailable:
            g.paired_display = False
    return g.paired_display


@bp.get("/")
def form():
    if "outcome" in session:  # sessions from before results had their own cookie
        session.pop("outcome")
    device = current_device()
    if device is not None and device.mode == "display":
        return redirect(url_for("display.page"), code=303)  # a display has its own page
    if device is None:
        g.outcome = "setup-needed"
        return render_template(
            "signup/setup_needed.html",
            outcome="setup-needed",
            refused=g.get("device_refused", False),
        )
    signed.client_id()  # this browser's id exists before its first POST: limits count it
    entry = _take_entry()
    if entry is not None:
        page, _status = _form_from_entry(entry)
    else:
        g.outcome = "form"
        page = _empty_form_page(device)
    response = make_response(page)
    for cookie in (_result_cookie(), _entry_cookie()):
        if cookie in request.cookies:
            # A new person: the previous result or entry is gone, Back and reload included.
            response.delete_cookie(cookie, **_cookie_flags())
    return response


@bp.post("/")
def submit():
    device = current_device()
    if device is None or device.mode == "display":
        return redirect(url_for(".form"), code=303)  # a display signs up only what it is handed
    return send(submission.channel_of(device))


def send(channel: submission.Channel, *, extra_limits=(), told=lambda outcome: None):
    """The posted sign-up form through the one submission, answered as this device answers
    (the till's, the kiosk's and the phone's alike); `told` hears each outcome first."""
    if channel.private:
        request.environ[web.HIDE_TIMING] = True  # Engage's share would tell one call from two
    form = new_form(formdata=request.form)  # the fields sent as text, never files
    if request.files:  # no browser sends this form's fields as files: malformed, not a signup
        outcome = submission.count(flow.Outcome("invalid", cause="FileField"), channel)
        told(outcome)
        return _present(form, outcome, note="malformed")
    if not form.validate_on_submit():
        outcome = submission.count(flow.Outcome("invalid"), channel)
        told(outcome)
        return _present(form, outcome)
    sent = submission.submit(channel, form, extra_limits=extra_limits)
    told(sent.outcome)
    return _present(form, sent.outcome, duplicate=sent.duplicate, note=sent.note)


def _present(form, outcome: flow.Outcome, duplicate: bool = False, note: str | None = None):
    """The answer to a POST: the result page (after a redirect) or the form back, filled in.
    The outcome is counted already (webapp/signup/submission.py)."""
    device = current_device()
    g.outcome = outcome.name  # the log line keeps the real outcome, on a kiosk too
    metrics.signup_time(web.request_seconds(), device.mode)
    if outcome.name in FINAL_OUTCOMES:
        # Post/Redirect/Get. Only the outcome and Engage's member number and contact id go in
        # the result cookie, never anything the person typed; on a kiosk, only "thanks".
        result = (
            {"name": THANKS}
            if device.private
            else {
                "name": outcome.name,
                "member_number": outcome.member_number,
                "contact_id": outcome.contact_id,
                "other_type": outcome.other_type,
                "matches": list(outcome.matches),
                "reference": outcome.reference,
                # Someone found and read on a staff tablet: who, and what was sent or kept.
                "masked_name": outcome.masked_name
                if outcome.changed or outcome.kept or outcome.name in KNOWN
                else None,
                "changed": list(outcome.changed),
                "kept": list(outcome.kept),
            }
        )
        response = redirect(_done_url(device), code=303)
        response.set_cookie(
            _result_cookie(), signed.result_value(result, signed.client_id()), **_cookie_flags()
        )
        return response
    fields = outcome.fields if outcome.name == flow.REJECTED and not duplicate else ()
    if device.private:
        return _keep_entry(outcome.name, fields, note)
    _mark(form, fields, note)
    form.submission.data = new_submission_token()  # trying again is a new submission
    return render_form(form, outcome.name, unmarked=outcome.name == flow.REJECTED and not fields)


def _keep_entry(outcome: str, fields=(), note: str | None = None):
    """Redirect to the form, which shows what this POST sent once more: no POST stays in the
    browser's history for Back, Forward or Reload to send again. The entry is sealed (Fernet
    under SECRET_KEY) and kept in the shared state for ENTRY_SECONDS, read once; the cookie holds
    only its random id, so however much was typed, no header grows past what a proxy takes."""
    return keep_entry(redirect(_form_url(current_device()), code=303), outcome, fields, note)


def keep_entry(response, outcome: str, fields=(), note: str | None = None, *,
               seconds: float = ENTRY_SECONDS):  # fmt: skip
    """`response`, with the cookie of what this POST sent, kept sealed for `seconds` for the
    next form page of this browser (read once)."""
    entry = {
        "outcome": outcome,
        "fields": list(fields),
        "note": note,
        "data": [(k, v) for k, v in request.form.items(multi=True) if k not in _TOKENS],
        "for": signed.client_id(),
    }
    sealed, value = signed.seal(entry, "entry"), secrets.token_urlsafe(18)
    try:
        current_app.extensions["state"].entry_put(value, sealed, seconds)
    except StateUnavailable as exc:
        submission.state_fault(exc)
        # The state database is down: the entry travels in the cookie itself where it fits
        # well inside a proxy's header buffer (nginx's default: 4 KB), else it is not kept.
        value = SEALED_PREFIX + sealed if len(sealed) <= SEALED_COOKIE_MAX else ""
    if value:
        response.set_cookie(_entry_cookie(), value, **_cookie_flags())
    return response


def _form_url(device) -> str:
    """Where this device's form is: the phone's own address under scan to join, the customer
    display's own."""
    if device is not None and device.mode == "phone":
        return url_for("handoff.phone")
    if device is not None and device.mode == "display":
        return url_for("display.page")
    return url_for(".form")


def _done_url(device) -> str:
    if device.mode == "phone":
        return url_for("handoff.phone_done")
    if device.mode == "display":
        return url_for("display.done")
    return url_for(".done")


SEALED_PREFIX = "s:"
SEALED_COOKIE_MAX = 2048


_TOKENS = ("csrf_token", "submission", "lang")


# What the error summary (and the field) says of a value Engage refused: the field named, as
# GOV.UK's pattern does, in each language's own words for it.
REFUSED = {
    "firstName": _l("The first name wasn't accepted – please check it"),
    "lastName": _l("The last name wasn't accepted – please check it"),
    "email": _l("The email address wasn't accepted – please check it"),
    "mobilePhone": _l("The mobile number wasn't accepted – please check it"),
    "countryCode": _l("The country wasn't accepted – please check it"),
    "birthDay": _l("The date of birth wasn't accepted – please check it"),
    "zipCode": _l("The postcode wasn't accepted – please check it"),
    "socialSecurityNumber": _l("The personal identity number wasn't accepted – please check it"),
    "externalId": _l("The customer number wasn't accepted – please check it"),
}


def _mark(form, fields, note: str | None) -> None:
    for name in fields:
        if name in form:
            said = REFUSED.get(name) or _("This wasn't accepted – please check it")
            form[name].errors = [*form[name].errors, str(said)]
    if note:
        form.form_errors.append(str(NOTES[note]))


def _take_entry() -> dict | None:
    """The entry a kiosk's last POST kept for this page, if it is this browser's and fresh."""
    value = request.cookies.get(_entry_cookie()) or ""
    if value.startswith(SEALED_PREFIX):  # kept in the cookie while the state database was down
        sealed = value.removeprefix(SEALED_PREFIX)
    elif not value or len(value) > 64:
        return None
    else:
        try:
            sealed = current_app.extensions["state"].entry_take(value)
        except StateUnavailable as exc:
            submission.state_fault(exc)
            return None
    # The state database holds each entry only its own seconds; one that travelled in the
    # cookie (the database was down) is good for a page's turn at most.
    limit = ENTRY_SECONDS if value.startswith(SEALED_PREFIX) else LONGEST_ENTRY_SECONDS
    entry = signed.unseal(sealed, "entry", limit) if sealed else None
    if not isinstance(entry, dict) or entry.get("for") != session.get("client_id"):
        return None
    return entry


def _form_from_entry(entry: dict):
    data = MultiDict([tuple(pair) for pair in entry["data"]])
    data["csrf_token"] = signed.csrf_token()
    data["submission"] = new_submission_token()
    form = new_form(formdata=data)
    outcome = entry["outcome"]
    if outcome != "form":  # a half-filled form that changed language is not checked yet
        form.validate()  # the same messages the person would have read on a staff tablet
    fields = entry.get("fields") or ()
    _mark(form, fields, entry.get("note"))
    return render_form(form, outcome, unmarked=outcome == flow.REJECTED and not fields)


def _result_cookie() -> str:
    # __Host-: only ever sent over HTTPS, to this host, for every path (like the session's).
    return "__Host-result" if current_app.config["HTTPS"] else "result"


def _entry_cookie() -> str:
    return "__Host-entry" if current_app.config["HTTPS"] else "entry"


def _cookie_flags() -> dict:
    return {"httponly": True, "samesite": "Lax", "secure": current_app.config["HTTPS"], "path": "/"}


def new_submission_token() -> str:
    return secrets.token_urlsafe(18)


@bp.app_errorhandler(CSRFError)
def _csrf_failed(exc: CSRFError):
    """A missing or stale token: no Engage call, but give the form back with what was typed."""
    if request.endpoint not in ("signup.submit", "signup.language"):
        return web.http_error(exc)
    device = current_device()
    if device is None:
        return redirect(url_for(".form"), code=303)
    form = new_form(formdata=request.form)  # not validated: it carries the data back
    return _present(form, flow.Outcome("invalid", cause="CSRF"), note="resend")


@bp.get("/done")
def done():
    value = request.cookies.get(_result_cookie())
    result = signed.read_result(value, session.get("client_id")) if value else None
    if result is None or result["name"] not in (*FINAL_OUTCOMES, THANKS):
        return redirect(url_for(".form"), code=303)
    g.outcome = name = result["name"]
    device = current_device()
    kiosk = name == THANKS or (device is not None and device.private)
    if kiosk:
        name = THANKS  # a device turned into a kiosk shows no staff result either
    unapproved = device is not None and submission.unapproved(device.mode)
    kept_for_manager = name == flow.AMBIGUOUS and result.get("reference")
    heading, text = outcome_message(
        "ambiguous-kept" if kept_for_manager else name, kiosk=kiosk, unapproved=unapproved
    )
    # Staff see the member number to attach the purchase; a kiosk never shows one.
    show_number = name in (flow.CREATED, flow.EXISTING, *KNOWN)
    # After a sign-up on the customer's phone: never Engage's contact id, and the wallet card
    # only for a new member (a found member has theirs; whoever typed their address has not).
    phone = bool(result.get("phone"))
    wallet = None
    if show_number and device is not None and device.bound and not device.private:
        if not phone or name == flow.CREATED or name == flow.PROMOTED:
            wallet = wallet_card(result.get("contact_id"))
    number = result.get("member_number") if show_number else None
    page = {
        "outcome": name,
        "heading": heading,
        "text": text,
        # Without a member number (Engage did not say), the contact id still finds them.
        "contact_id": result.get("contact_id")
        if show_number and not number and not phone
        else None,
        "masked_name": result.get("masked_name")
        if (name == flow.EXISTING and phone) or (name in (flow.EXISTING, *KNOWN) and not kiosk)
        else None,
        "changed": _labels(result.get("changed")) if name in KNOWN and not kiosk else None,
        "kept": _labels(result.get("kept"))
        if name in (flow.EXISTING, *KNOWN) and not kiosk
        else None,
        "other_type": result.get("other_type") if show_number else None,
        "matches": _matches(result.get("matches"), device) if name == flow.AMBIGUOUS else None,
        "reference": result.get("reference") if name in (flow.QUEUED, flow.AMBIGUOUS) else None,
        "wallet": wallet,
    }
    # The member number as a Code 128 barcode, for a till's scanner to read into the POS.
    barcode = (
        codes.code128_svg(number, _("Member number as a barcode")) if number and not kiosk else None
    )
    if device is not None and not any(
        page[k]
        for k in ("other_type", "matches", "reference", "wallet", "masked_name", "changed", "kept")
    ):
        return _result_page(device, page, number, barcode)
    return render_template("signup/done.html", member_number=number, barcode=barcode, **page)


# Stand-ins for what differs between two result pages of the same kind: rendered into the
# cached page, then replaced on every request by the real values.
_NUMBER, _BARCODE, _CONTACT = (f"@@{part}-{secrets.token_hex(8)}@@" for part in "nbc")


def _result_page(device, page: dict, number: str | None, barcode) -> bytes:
    """The result page, rendered once per kind (outcome, language, device, which parts it has)
    and then only filled in: the member number, its barcode and the contact id are what differ
    between two new members' pages at one till. Rendering it took most of the result page's
    time (Jinja, the layout, a dozen strings), and the till waits for it after every sign-up.
    Pages with the rarer parts (wallet card, matches, reference, another contact type) are
    rendered whole. What invalidates it: nothing that can change while the app runs (the
    configuration, the translations and the templates are read once); the key holds the rest."""
    key = (page["outcome"], page["heading"], page["text"], current_language(),
           (device.store_id, device.store_name, device.country, device.mode),
           bool(number), bool(barcode), bool(page["contact_id"]))  # fmt: skip
    cache = current_app.extensions.setdefault("result_page_cache", {})
    parts = cache.get(key)
    if parts is None:
        html = render_template(
            "signup/done.html", **{**page, "contact_id": _CONTACT if page["contact_id"] else None},
            member_number=_NUMBER if number else None,
            barcode=Markup(_BARCODE) if barcode else None,  # noqa: S704 - our own stand-in
        )  # fmt: skip
        wanted = {
            _NUMBER: bool(number),
            _BARCODE: bool(barcode),
            _CONTACT: bool(page["contact_id"]),
        }
        if any(html.count(s) != int(w) for s, w in wanted.items()):  # pragma: no cover
            # The template no longer shows each once: render it whole, as it is.
            return render_template("signup/done.html", member_number=number, barcode=barcode,
                                   **page)  # fmt: skip
        parts = re.split(f"({_NUMBER}|{_BARCODE}|{_CONTACT})", html)
        if len(cache) > 256:  # outcomes x languages x devices: a few dozen in practice
            cache.clear()
        cache[key] = parts
    values = {_NUMBER: escape(number or ""), _BARCODE: barcode or "",
              _CONTACT: escape(page["contact_id"] or "")}  # fmt: skip
    return "".join(values.get(part, part) for part in parts).encode()


def _labels(names) -> list[str] | None:
    """What was sent to, or kept in, a found person's record, in the form's own words."""
    if not names:
        return None
    form = new_form()
    consents = consent_texts(current_language())
    said = []
    for name in names:
        if name.startswith("consent:"):
            field_name = "consent-" + name.removeprefix("consent:")
            text = consents.get(field_name, {}).get("label")
            said.append(str(text) if text else _("A consent"))
        elif name in form:
            said.append(str(form[name].label.text))
    return said or None


def _matches(contact_ids, device) -> list[dict] | None:
    """The members that matched, for a staff tablet: masked names and member numbers."""
    if not contact_ids or device is None or not device.bound or device.private:
        return None
    return flow.described_matches(current_app.extensions["engage"], contact_ids)


def wallet_card(contact_id: str | None):
    """The QR code of this member's wallet link (WALLET_CARD_ID), for a staff tablet's page
    after created or existing: asked for now, when the sign-up has its outcome, only for the
    page that shows it, and never kept (no log, no URL of ours, no store). Any failure leaves
    the page without the card, and one WARNING line; the sign-up is as it was, and the
    breaker does not count it."""
    card = current_app.config["WALLET_CARD_ID"]
    if not card:
        return None
    if not contact_id:
        log.warning("wallet card: Engage gave no contact id for this member %s", web.log_context())
        return None
    try:
        link = current_app.extensions["engage"].pass_url(card, contact_id)
    except EngageError as exc:
        check = " (check WALLET_CARD_ID)" if exc.status_code in (400, 404) else ""
        said = (f"no answer within {WALLET_TIMEOUT:g} s" if exc.status_code is None
                and getattr(exc, "timed_out", False) else
                f"HTTP {exc.status_code}" if exc.status_code else "no connection")  # fmt: skip
        log.warning("wallet card: no link from Engage: %s, %s%s %s", wallet_words(exc), said,
                    check, web.log_context())  # fmt: skip
        return None
    if link is None:
        log.warning("wallet card: Engage's answer named no link for this member (check "
                    "WALLET_CARD_ID) %s", web.log_context())  # fmt: skip
        return None
    return codes.qr_svg(link, _("Membership card for the phone's wallet"))


def new_form(**kwargs):
    # Flask-WTF signs a CSRF token for every form it builds, a POST's included; this session's
    # signed token is usually remembered already (signed.csrf_token), and Flask-WTF takes it.
    signed.csrf_token()
    form = current_app.extensions["signup_form"](**kwargs)
    form.countryCode.choices = countries(current_language())
    if not form.submission.data:
        form.submission.data = new_submission_token()
    g.setdefault("forms", []).append(form)  # released when the request ends
    return form


@bp.teardown_app_request
def _release_forms(exc):
    """Take the fields out of this request's forms, so they are freed when the request ends.

    Each WTForms field points back at its form, so every form is a reference cycle (about 110
    objects) that only Python's cycle collector frees, and each collection pauses every thread
    of the worker. A signup holds its form across both Engage calls, long enough to reach the
    older generations. Measured in one worker with 16 threads and 16 tills for 15 s (throwaway
    gc callback): collections 395-398 -> 162-177, their total time 216-241 -> 103-121 ms, the
    longest 9-11 -> 2-3 ms.
    """
    for form in g.pop("forms", ()):
        for field in list(form):
            del form[field.short_name]


def _empty_form_page(device):
    """The empty form, rendered once per language, device and consent texts.

    Rendering it (Jinja, WTForms, ~250 country options) cost far more than serving it. Only the
    two tokens differ between requests, so they are put into a cached copy: the CSRF token of
    this session and a fresh one-time submission token.
    """
    language = current_language()
    consents = consent_texts(language)
    key = (
        language,
        (device.store_id, device.store_name, device.country, device.mode),
        tuple((k, v["label"], v["url"], v["terms"]) for k, v in consents.items()),
        _paired(device),
    )
    cache = current_app.extensions.setdefault("page_cache", {})
    page = cache.get(key)
    if page is None:
        form = new_form(data={"countryCode": device.country})
        html, _status = render_form(form, "form")
        csrf, submission = form.csrf_token.current_token, form.submission.data
        if html.count(submission) != 1 or csrf in submission or submission in csrf:
            return html  # pragma: no cover - cannot template it safely: serve it as it is
        # The CSRF token may stand in several forms of the page (the till's phone button has
        # its own form): every place it stands is filled in per request.
        before, after = html.split(submission)
        page = (
            [part.encode() for part in before.split(csrf)],
            [part.encode() for part in after.split(csrf)],
        )  # UTF-8 once, not per request
        if len(cache) > 64:  # languages x device kinds: a handful in practice
            cache.clear()
        cache[key] = page
    before, after = page
    csrf = signed.csrf_token().encode()
    return b"".join((csrf.join(before), new_submission_token().encode(), csrf.join(after)))


STATUS = {"invalid": 400, "throttled": 429}


def render_form(form, outcome: str, unmarked: bool = False, lookup: dict | None = None):
    """The form page; `lookup`: what the cashier's look-up found, shown beside the key field."""
    g.outcome = outcome
    device = current_device()
    heading, text = outcome_message(
        "rejected-unmarked" if unmarked else outcome, kiosk=device is not None and device.private
    )
    return (
        render_template(
            "signup/form.html",
            form=form,
            outcome=outcome,
            heading=heading,
            text=text,
            consents=consent_texts(current_language()),
            language=current_language(),
            lookup=lookup,
        ),
        STATUS.get(outcome, 200) if request.method == "POST" else 200,
    )
