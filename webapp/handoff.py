"""Scan to join: the customer signs up on their own phone, and the till gets the answer.

On an enrolled staff tablet "Customer signs up on their phone" starts a *handoff*: a QR code
of a one-time link (a token of 256 bits, an HMAC of the till page's own random id under
SECRET_KEY, so nothing keeps it; only its SHA-256 is stored), and under it the
store's short address and a six-digit code for typing where the camera fails. A handoff lives
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
import json
import logging
import secrets

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

from . import codes, signed, submission, views, web
from . import signup as flow
from .devices import Device, current_device
from .i18n import LANGUAGES, current_language
from .i18n import gettext as _
from .store import StateUnavailable

log = logging.getLogger(__name__)
bp = Blueprint("handoff", __name__)

COOKIE = "handoff"
PHONE_LIMIT = (30, 60)  # requests a minute from one address to the phone pages
CODE_LIMIT = (10, 300)  # short codes tried from one address in five minutes
STORE_CODE_LIMIT = (60, 600)  # codes tried for one store in ten minutes: then code entry rests
HANDOFF_SUBMITS = (6, 600)  # sends (corrections included) through one handoff
POLL_SECONDS = 2  # the till's status polls; without JavaScript its page refreshes every 4 s
CORRECTING = (flow.REJECTED, "invalid", flow.TIMEOUT, flow.UNAVAILABLE, "throttled")


def _on() -> bool:
    return current_app.config["HANDOFF_MINUTES"] > 0


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


@bp.before_request
def _available():
    if not _on():
        abort(404)  # HANDOFF_MINUTES=0: no button, and these pages do not exist
    return None


# --- the till ------------------------------------------------------------------------------------
def _till_device() -> Device:
    device = current_device()
    if device is None or not device.bound or device.mode != "staff" or not device.id:
        abort(404)  # only an enrolled staff tablet starts or watches a handoff
    return device


@bp.post("/handoff/")
def start():
    device = _till_device()
    state = current_app.extensions["state"]
    till = secrets.token_urlsafe(16)
    token = _token(till)
    now = state.clock()
    try:
        used = state.handoff_codes_in_use(device.store_id)
        code = next(c for c in (f"{secrets.randbelow(1_000_000):06d}" for _ in range(50))
                    if c not in used)  # fmt: skip
        state.handoff_add({
            "id": _hash(token), "till": till, "code": code, "store": device.store_id,
            "store_name": device.store_name, "country": device.country, "device": device.id,
            "language": current_language(), "created": now,
            "expires": now + current_app.config["HANDOFF_MINUTES"] * 60,
        })  # fmt: skip
    except (StateUnavailable, StopIteration) as exc:
        log.error("handoff: cannot start one: %s %s", exc, web.log_context())
        g.outcome = "error"
        message = _("The customer's phone cannot be used right now. Register them here.")
        return render_template("errors/error.html", message=message, outcome="error"), 503
    log.info("handoff %s started %s", _short(_hash(token)), web.log_context())
    return redirect(url_for(".till", till=till), code=303)


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
    """waiting, correcting, done, closed: what the till shows."""
    if handoff["state"] == "cancelled":
        return "closed"
    if handoff["state"] == "closed":
        return "done"
    if handoff["expires"] <= current_app.extensions["state"].clock():
        return "closed"
    if handoff["outcome"] in CORRECTING:
        return "correcting"
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
    if now == "done":
        # The usual result page, as if the cashier had typed it: outcome, member number.
        result = json.loads(handoff["result"] or "{}")
        response = redirect(url_for("signup.done"), code=303)
        response.set_cookie(views._result_cookie(), signed.result_value(result, signed.client_id()),
                            **views._cookie_flags())  # fmt: skip
        return response
    g.outcome = "handoff-waiting" if now in ("waiting", "correcting") else "handoff-closed"
    link = url_for(".phone_open", token=_token(till), _external=True) if now != "closed" else None
    short = url_for(".code_entry", store=handoff["store"], _external=True)
    page = render_template(
        "handoff/till.html",
        outcome=g.outcome,
        status=now,
        link=link,
        qr=codes.qr_svg(link, _("Code for the customer's phone")) if link else None,
        short_address=short,
        code=f"{handoff['code'][:3]} {handoff['code'][3:]}",
        till=till,
        poll_seconds=POLL_SECONDS,
    )
    return page


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


def _closed(status: int = 410):
    """A used, cancelled, expired or someone else's handoff: the same short page for all."""
    g.outcome = "handoff-closed"
    page = render_template("handoff/closed.html", outcome="handoff-closed", device=None)
    response = make_response(page, status)
    response.delete_cookie(_cookie_name(), **views._cookie_flags())
    return response


def _take(handoff: dict | None):
    """This phone takes `handoff`, if it still can: a cookie of this phone, and off to the
    address without the token."""
    if handoff is None:
        return _closed(404)
    state = current_app.extensions["state"]
    try:
        taken = state.handoff_take(handoff["id"], _phone_id())
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
    return _take(handoff)


class CodeForm(FlaskForm):
    code = StringField(validators=[DataRequired()])


@bp.route("/join/<store>", methods=["GET", "POST"])
def code_entry(store: str):
    """The store's short address: the code shown on the till, typed by hand."""
    form = CodeForm(formdata=request.form if request.method == "POST" else None)
    g.outcome = "handoff-code"
    error = None
    if request.method == "POST":
        typed = "".join(ch for ch in (form.code.data or "") if ch.isdigit())
        if _limited(f"code-address:{request.remote_addr}", CODE_LIMIT) or _limited(
            f"code-store:{store}", STORE_CODE_LIMIT
        ):
            error = _("Too many tries. Scan the code on the till's screen instead.")
        elif form.validate_on_submit() and len(typed) == 6:
            try:
                handoff = current_app.extensions["state"].handoff_by_code(store, typed)
            except StateUnavailable:
                handoff = None
            if handoff is not None:
                return _take(handoff)
            error = _("That code is not valid. Check it on the till's screen, or ask the cashier "
                      "for a new one.")  # fmt: skip
        else:
            error = _("Type the six digits shown on the till's screen.")
    status = 400 if error else 200
    return render_template("handoff/code.html", outcome=g.outcome, form=form, error=error,
                           store=store, device=None), status  # fmt: skip


def _phone_handoff() -> dict | None:
    sealed = request.cookies.get(_cookie_name())
    opened = signed.unseal(sealed, "handoff", 3600) if sealed else None
    if not isinstance(opened, dict):
        return None
    try:
        handoff = current_app.extensions["state"].handoff(id=str(opened.get("id")))
    except StateUnavailable:
        return None
    if handoff is None or handoff["phone"] != _phone_id() or handoff["state"] != "open":
        return None
    if handoff["expires"] <= current_app.extensions["state"].clock():
        return None
    return handoff


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
    handoff = _phone_handoff()
    if handoff is None:
        return _closed()
    device = _as_device(handoff)
    request.environ[web.HIDE_TIMING] = True  # Engage's share would tell one call from two
    if request.method == "GET":
        signed.client_id()
        entry = views._take_entry()
        if entry is not None:
            page, _status = views._form_from_entry(entry)
        else:
            g.outcome = "form"
            page = views._empty_form_page(device)
        return make_response(page)
    channel = submission.Channel(handoff["store"], handoff["device"], "phone",
                                 f"handoff:{handoff['id']}")  # fmt: skip
    sends = (f"handoff-sends:{handoff['id']}", *HANDOFF_SUBMITS)
    return views.send(channel, told=lambda outcome: _tell_till(handoff, outcome),
                      extra_limits=[sends])  # fmt: skip


def _tell_till(handoff: dict, outcome: flow.Outcome) -> None:
    """What the till may learn: the outcome, and for a final one its staff result (member
    number, contact id, reference): never anything the customer typed."""
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
                                                        final=final)  # fmt: skip
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
    response = make_response(render_template("handoff/thanks.html", outcome="thanks", device=None))
    response.delete_cookie(_cookie_name(), **views._cookie_flags())
    return response
