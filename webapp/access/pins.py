"""PIN entry, for staff on /setup/ and managers on /manager/: the same limits for both.

Each PIN form allows PIN_ATTEMPTS tries per device (its enrolment, else its browser) and
PIN_ATTEMPTS_PER_ADDRESS per client address within PIN_WINDOW, and PIN_FAILURES_PER_HOUR wrong
PINs for the whole deployment. The wrong PIN that reaches that cap says so in one ERROR line,
which operations alert on, and for the rest of the hour only browsers that proved themselves
before may try (still within their own limits): a staff tablet enrolled with the staff PIN
(never a kiosk, which stands in public), and, for
the manager's view, a browser where a manager signed in before. Everyone else is refused. So
guessing from many addresses stops at the cap, and a stranger who spends it locks out nobody
who was already working: the managers and the tablets in the stores go on. What waits for the
hour to pass is enrolling a brand-new device. Staff and manager PINs are counted apart.
"""

from __future__ import annotations

import hmac
import logging
import time

from flask import current_app, request

from ..i18n import gettext as _
from ..ops import metrics, web
from ..store import StateUnavailable
from . import devices, signed

log = logging.getLogger(__name__)

PIN_ATTEMPTS = 5  # per device and per five minutes
PIN_ATTEMPTS_PER_ADDRESS = 20
PIN_WINDOW = 300  # seconds
DEPLOYMENT_WINDOW = 3600  # seconds: wrong PINs are counted per hour against the cap


def check(form, kind: str, candidates: list[str], *, empty: str) -> tuple[int | None, int]:
    """The PIN sent in `form` (a FlaskForm with a `pin` field), within this form's limits:
    (the index of the candidate it matches, 200), or (None, the page's status) with what to
    tell the person in form.pin.errors (`empty`: the words for a PIN left out). A wrong PIN is
    counted against the deployment's cap."""
    refused = refusal(kind)
    if refused:
        status, message = refused
        form.pin.errors = [message]
        return None, status
    if request.files:  # a field sent as a file (the form holds text only): malformed
        form.pin.errors = [empty]
        return None, 400
    if form.validate_on_submit():
        given = form.pin.data.strip().encode()
        for n, candidate in enumerate(candidates):
            if hmac.compare_digest(given, candidate.encode()):
                return n, 200
        form.pin.errors = [_("That PIN is not right.")]
        count_wrong(kind)
    return None, 400


def refusal(kind: str) -> tuple[int, str] | None:
    """Counts this attempt; None when its PIN may be checked, else (status, message)."""
    state = current_app.extensions["state"]
    device = devices.current_device()
    who = f"device:{device.id}" if device and device.id else f"browser:{signed.client_id()}"
    try:
        allowed = state.hits(
            [
                (f"{kind}-pin:{who}", PIN_ATTEMPTS, PIN_WINDOW),
                (f"{kind}-pin-address:{request.remote_addr}", PIN_ATTEMPTS_PER_ADDRESS, PIN_WINDOW),
            ]
        )
        failures = state.count(_deployment_key(kind), DEPLOYMENT_WINDOW)
    except StateUnavailable as exc:
        log.error("state database unavailable: %s", exc)
        return 503, _("Setup cannot be opened right now. Try again in a moment.")
    if failures >= current_app.config["PIN_FAILURES_PER_HOUR"] and not known(kind, device):
        return 429, _(
            "PIN entry is locked for now after too many wrong PINs. Try again in an hour."
        )
    if not allowed:
        return 429, _("Too many attempts. Wait five minutes and try again.")
    return None


KNOWN_COOKIE = "manager-known"  # set where a manager signed in: that browser may try later
KNOWN_DAYS = 400


def known(kind: str, device) -> bool:
    """A browser that proved itself before: a staff tablet enrolled with the staff PIN (not a
    kiosk, which stands in public), or (for the manager's view) one where a manager signed in."""
    if device is not None and device.bound and device.id and device.mode == "staff":
        return True
    if kind != "manager":
        return False
    cookie = request.cookies.get(known_cookie_name())
    return bool(cookie) and signed.unseal(cookie, KNOWN_COOKIE, KNOWN_DAYS * 86400) is not None


def known_cookie_name() -> str:
    return f"__Host-{KNOWN_COOKIE}" if current_app.config["HTTPS"] else KNOWN_COOKIE


def remember_known(response) -> None:
    """A manager signed in here: this browser may still try while strangers are refused."""
    response.set_cookie(
        known_cookie_name(), signed.seal({"at": int(time.time())}, KNOWN_COOKIE),
        max_age=KNOWN_DAYS * 86400, secure=current_app.config["HTTPS"], httponly=True,
        samesite="Lax", path="/",
    )  # fmt: skip


def count_wrong(kind: str) -> None:
    """Count a wrong PIN for the whole deployment; the one that reaches the cap is logged."""
    cap = current_app.config["PIN_FAILURES_PER_HOUR"]
    try:
        failures = current_app.extensions["state"].hit(_deployment_key(kind), DEPLOYMENT_WINDOW)
    except StateUnavailable as exc:
        log.error("state database unavailable: %s", exc)
        return
    if failures == cap:
        metrics.pin_lockout(kind)
        log.error(
            "%s PIN entry locked for the whole deployment but for enrolled staff tablets and "
            "browsers where a manager signed in before: %d wrong PINs within an hour "
            "(PIN_FAILURES_PER_HOUR) %s",
            kind, failures, web.log_context(),
        )  # fmt: skip


def _deployment_key(kind: str) -> str:
    return f"{kind}-pin-failures:deployment"
