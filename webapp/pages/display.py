"""The customer display: a store's own screen on the counter, facing the customer, paired with
one staff tablet (issue 35).

Pairing: a device enrolled as `display` on /setup/ (behind the staff PIN) shows, while it is
unpaired, a six-digit pairing code; the cashier types it on their till ("Pair a customer
display"). The pair is kept in the shared state (it survives restarts and any machine serves
either side), shown in the manager's view, and undone from either side. A display never becomes
a till or a kiosk without the staff PIN again: /setup/ is the only way to another mode.

At rest the display shows "Join our club" with the store's name, in the store's language, and
nothing about anyone. When the cashier presses "Customer fills in on the display" (a handoff, as
scan to join has, given to that display and to no phone), the display, polling a cheap status
answer (or refreshing itself without JavaScript), takes it and shows the private form: the
phone's, with the store's language, the consents and their words, the same checks. The sign-up
is the one way through (`submission`, channel mode `display`, private: `thanks` for every final
outcome, the public screens' timing); the till learns the outcome as for scan to join
(`handoff-done`, then the cashier's `data-reveal`). After the thank-you, on the till's cancel and
after the kiosk's idle time, the display goes back to rest.
"""

from __future__ import annotations

import hashlib
import logging
import re
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

from ..access import pins, signed
from ..access.devices import Device, current_device
from ..i18n import gettext as _
from ..ops import web
from ..signup import flow, submission
from ..store import StateUnavailable
from . import handoff as handoffs
from . import views
from .setup import PinForm

log = logging.getLogger(__name__)
bp = Blueprint("display", __name__)

CODE_DIGITS = 6
CODE_SECONDS = 600  # a pairing code shown at rest is good for ten minutes, then a new one
POLL_SECONDS = 1  # the display's status polls at rest (a cheap JSON answer)
REFRESH_SECONDS = 3  # without JavaScript, the display at rest reloads itself this often
CODE = re.compile(r"\d{6}")


def _display():
    device = current_device()
    if device is None or not device.bound or device.mode != "display" or not device.id:
        abort(404)  # only a device enrolled as a customer display
    return device


def _till():
    device = current_device()
    if device is None or not device.bound or device.mode != "staff" or not device.id:
        abort(404)
    return device


def _taker(display_id: str) -> str:
    """What binds a handoff to the display that took it (as a phone's id binds it to a phone)."""
    return hashlib.sha256(f"display {display_id}".encode()).hexdigest()[:32]


def paired_display(till_id: str) -> str | None:
    """The display paired with this till, if any (None when the state cannot tell)."""
    try:
        return current_app.extensions["state"].display_of_till(till_id)
    except StateUnavailable:
        return None


# --- the display ----------------------------------------------------------------------------------
def _status(display_id: str, paired: bool, handoff_state: str | None, taker: str | None) -> str:
    """What a display shows, from its pair and its live handoff (the one rule, for the page
    and for the status it polls): pairing, the form (a handoff waiting for it, or the one it
    took) or idle."""
    if not paired:
        return "pairing"
    if handoff_state == "waiting" or (handoff_state is not None and taker == _taker(display_id)):
        return "form"
    return "idle"


def _now(device) -> tuple[str, dict | None, dict | None]:
    """(status, its pairing row, its live handoff)."""
    state = current_app.extensions["state"]
    row = state.display(device.id)
    paired = row is not None and bool(row["till"])
    handoff = state.display_handoff(device.id) if paired else None
    now = _status(device.id, paired, handoff and handoff["state"], handoff and handoff["phone"])
    return now, row, handoff if now == "form" else None


@bp.get("/display/status")
def status():
    """The cheap answer a display at rest polls: one small read, no page."""
    device = _display()
    try:
        found = current_app.extensions["state"].display_status(device.id)
    except StateUnavailable:
        found = (True, None, None)  # idle: the page itself says what it can
    response = jsonify(status=_status(device.id, *(found or (False, None, None))))
    response.headers["Cache-Control"] = "no-store"
    return response


# Framed by the display's own form only: the page's own headers, in place of the app's DENY.
WATCH_HEADERS = {
    "Content-Security-Policy": web.CSP.replace("frame-ancestors 'none'", "frame-ancestors 'self'"),
    "X-Frame-Options": "SAMEORIGIN",
    "Cache-Control": "no-store",
}


@bp.get("/display/watch")
def watch():
    """Without JavaScript the form cannot poll: this page, framed in it, reloads itself and
    tells the customer when the till has closed the form, with a way back to rest (a refresh of
    the form itself would lose what they typed). Nothing about anyone: open or closed."""
    device = _display()
    try:
        found = current_app.extensions["state"].display_status(device.id)
    except StateUnavailable:
        found = (True, "open", _taker(device.id))  # cannot tell: keep the form as it is
    is_open = _status(device.id, *(found or (False, None, None))) == "form"
    body = render_template("display/watch.html", open=is_open, refresh_seconds=REFRESH_SECONDS)
    return make_response(body, WATCH_HEADERS)


@bp.get("/display")
def page():
    device = _display()
    state = current_app.extensions["state"]
    try:
        now, row, handoff = _now(device)
        if now == "pairing":
            code = (
                row["code"] if row and row["code"] and row["code_expires"] > state.clock() else None
            )
            if code is None:
                used = state.display_codes_in_use(device.store_id)
                code = next(c for c in (f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
                                        for _ in range(50)) if c not in used)  # fmt: skip
                state.display_code(device.id, device.store_id, code, CODE_SECONDS)
            return _rest("display-pairing", code=f"{code[:3]} {code[3:]}")
        if now == "form":
            return _form(device, handoff)
        session.pop("lang", None)  # at rest in the store's language, whatever the last chose
    except (StateUnavailable, StopIteration) as exc:
        log.error("display: state unavailable: %s %s", exc, web.log_context())
    return _rest("display-idle")


def _rest(outcome: str, **values):
    g.outcome = outcome
    response = make_response(render_template(
        "display/rest.html", outcome=outcome, poll_seconds=POLL_SECONDS,
        refresh_seconds=REFRESH_SECONDS, **values,
    ))  # fmt: skip
    response.headers["Cache-Control"] = "no-store"
    return response


def _form(device, handoff: dict):
    """The display takes the handoff it was given, and shows the private form."""
    state = current_app.extensions["state"]
    if handoff["state"] == "waiting":
        if not state.handoff_take(handoff["id"], _taker(device.id),
                                  current_app.config["HANDOFF_MINUTES"] * 60):  # fmt: skip
            return _rest("display-idle")
        log.info("handoff %s taken by the display %s", handoff["id"][:8], web.log_context())
    _as_display(device, handoff)
    signed.client_id()
    request.environ[web.HIDE_TIMING] = True
    entry = views._take_entry()
    if entry is not None:
        body, _status = views._form_from_entry(entry)
    else:
        g.outcome = "form"
        body = views._empty_form_page(g.device)
    return make_response(body)


def _as_display(device, handoff: dict):
    """The display, for the pages and the submission: the till's store and device, mode display."""
    g.device = Device(
        store_id=handoff["store"], store_name=handoff["store_name"], country=handoff["country"],
        mode="display", bound=True, id=device.id, name=device.name,
    )  # fmt: skip
    return g.device


@bp.post("/display")
def send():
    """The customer's sign-up on the display: the one way through, channel mode `display`."""
    device = _display()
    state = current_app.extensions["state"]
    try:
        handoff = state.display_handoff(device.id)
        if handoff is None:  # cancelled, expired or done meanwhile: what was typed is not kept
            closed = state.display_closed_handoff(device.id)
            if closed is not None and closed["submission"] == request.form.get("submission"):
                return _double_tap(device, closed)
            return redirect(url_for(".page"), code=303)
    except StateUnavailable:
        return redirect(url_for(".page"), code=303)
    token = request.form.get("submission", "")
    if handoffs.TOKEN.fullmatch(token):
        try:
            if not state.handoff_claim(handoff["id"], _taker(device.id), token,
                                       submission.longest_seconds()):  # fmt: skip
                return redirect(url_for(".page"), code=303)
        except StateUnavailable:
            return redirect(url_for(".page"), code=303)
    request.environ[web.HIDE_TIMING] = True
    _as_display(device, handoff)
    channel = submission.Channel(handoff["store"], device.id, "display",
                                 f"device:{device.id}")  # fmt: skip
    told: list[str] = []

    def tell(outcome: flow.Outcome) -> None:
        told.append(outcome.name)
        handoffs.tell_till(handoff, outcome, token)

    try:
        return views.send(channel, told=tell)
    finally:
        if not told:
            handoffs.tell_till(handoff, flow.Outcome(flow.UNAVAILABLE, cause="Error"), token)


def _double_tap(device, handoff: dict):
    _as_display(device, handoff)
    request.environ[web.HIDE_TIMING] = True
    form = views.new_form(formdata=request.form)
    return views._present(form, flow.Outcome(flow.QUEUED), duplicate=True)


@bp.get("/display/done")
def done():
    """Every final outcome reads the same on the display: thanks; then back to rest."""
    _display()
    value = request.cookies.get(views._result_cookie())
    result = signed.read_result(value, session.get("client_id")) if value else None
    if result is None or result["name"] != views.THANKS:
        return redirect(url_for(".page"), code=303)
    g.outcome = "thanks"
    response = make_response(render_template("display/thanks.html", outcome="thanks"))
    response.delete_cookie(views._result_cookie(), **views._cookie_flags())
    return response


@bp.get("/display/rest")
def rest():
    """Back to rest (the kiosk's idle time ran out, or "Start over"): this display gives up the
    handoff it holds, so the till sees it closed, and shows nothing of the last customer."""
    device = _display()
    state = current_app.extensions["state"]
    try:
        handoff = state.display_handoff(device.id)
        if handoff is not None:
            state.handoff_cancel(handoff["till"])
            log.info("handoff %s given up by the display %s", handoff["id"][:8],
                     web.log_context())  # fmt: skip
    except StateUnavailable:
        pass
    session.pop("lang", None)
    return redirect(url_for(".page"), code=303)


@bp.get("/display/unpair")
def unpair_page(form=None, status: int = 200):
    """On the display, unpairing asks for the staff PIN: the screen faces the customers, and
    one of them must not be able to take the store's display away from its till."""
    _display()
    if not current_app.config["STAFF_PIN"]:
        abort(404)
    g.outcome = "display-unpair"
    form = form or PinForm()
    return render_template("display/unpair.html", outcome=g.outcome, form=form), status


@bp.post("/display/unpair")
def unpair():
    """Undo the pair: from the till (an enrolled staff tablet), or from the display with the
    staff PIN."""
    device = current_device()
    if device is None or not device.bound or device.mode not in ("display", "staff"):
        abort(404)
    config = current_app.config
    if device.mode == "display":
        if not config["STAFF_PIN"]:
            abort(404)
        form = PinForm(formdata=request.form)
        match, status = pins.check(form, "staff", [config["STAFF_PIN"]],
                                   empty=_("Enter the staff PIN"))  # fmt: skip
        if match is None:
            return unpair_page(form, status)
    try:
        if device.mode == "display":
            current_app.extensions["state"].display_unpair(display=device.id)
        else:
            current_app.extensions["state"].display_unpair(till=device.id)
    except StateUnavailable:
        abort(503)
    log.info("display unpaired from the %s %s", device.mode, web.log_context())
    return redirect(url_for(".page" if device.mode == "display" else "signup.form"), code=303)


# --- the till -------------------------------------------------------------------------------------
@bp.get("/display/pair")
def pairing(error: str | None = None, status: int = 200):
    """The till's page for its customer display: type the code it shows, or undo the pair."""
    device = _till()
    g.outcome = "display-pair"
    return render_template("display/pair.html", outcome=g.outcome, error=error,
                           paired=paired_display(device.id) is not None), status  # fmt: skip


@bp.post("/display/pair")
def pair():
    """The cashier types the code the display shows."""
    device = _till()
    typed = "".join(ch for ch in request.form.get("code", "") if ch.isdigit())
    state = current_app.extensions["state"]
    error = None
    if not CODE.fullmatch(typed):
        error = _("Type the six digits the customer display shows.")
    else:
        try:
            if not state.hits([(f"display-pair:{device.id}", 10, 300)]):
                error = _("Too many tries. Wait a few minutes.")
            elif state.display_pair(device.store_id, typed, device.id) is None:
                error = _("No customer display of this store shows that code.")
        except StateUnavailable:
            error = _("The customer display cannot be paired right now.")
    if error:
        return pairing(error, 400)
    log.info("display paired with a till %s", web.log_context())
    return redirect(url_for("signup.form"), code=303)


@bp.post("/display/start")
def start():
    """ "Customer fills in on the display": a handoff given to the paired display."""
    device = _till()
    display = paired_display(device.id)
    if display is None:
        return redirect(url_for("signup.form"), code=303)
    return handoffs.start_handoff(device, display=display)
