"""The cashier's look-up while typing (enrolled staff tablets only).

Once the key field (CONTACT_KEY) holds a valid value and the cashier leaves it, app.js posts it
here (`POST /lookup`, the CSRF token with it) and puts the answer beside the field: an element
with `data-lookup`, whose `data-lookup-result` says what was found (none, member, other-type,
several, unavailable). Without JavaScript the button named `lookup` ("Look up") posts the whole
form to `/`, which comes back filled in, with the same answer beside the field.

Kiosks, customers' phones and customer displays never get here (404), and their sign-ups never
look anyone up, make anyone a member or change anyone: anyone can type anyone's address there.
The key's value travels in the POST body only, never in a URL; what was found is remembered
sealed (webapp/signup/lookups.py) and never logged.
"""

from __future__ import annotations

import logging

from flask import Blueprint, abort, current_app, g, render_template, request
from werkzeug.datastructures import MultiDict

from ..access.devices import current_device
from ..i18n import gettext as _
from ..ops import metrics, web
from ..signup import flow, lookups
from ..store import StateUnavailable
from . import codes, views

log = logging.getLogger(__name__)

bp = Blueprint("lookup", __name__)


def staff_device():
    """The enrolled staff tablet making this request, or None."""
    device = current_device()
    if device is None or not device.bound or device.mode != "staff" or not device.id:
        return None
    return device


@bp.before_app_request
def _look_up_without_script():
    """The "Look up" button (name `lookup`) sends the signup form to `/` like the submit
    button: on a staff tablet that is a look-up, never a sign-up (the CSRF check has run)."""
    if request.endpoint == "signup.submit" and "lookup" in request.form:
        device = staff_device()
        if device is not None:
            return form_with_lookup(device)
    return None


@bp.post("/lookup")
def lookup():
    """The answer beside the key field, as HTML for app.js to put in place."""
    device = staff_device()
    if device is None:
        abort(404)
    g.outcome = "lookup"
    form = views.new_form(formdata=request.form)
    shown = look_up(device, form, wallet=request.form.get("lookup") == "wallet")
    if shown is None:  # not a valid key: nothing was asked, nothing to show
        return "", 204
    return render_template("signup/lookup.html", form=form, lookup=shown)


def look_up(device, form, *, wallet: bool = False) -> dict | None:
    """What the key in `form` finds, for the cashier (see lookups.view); None for a key that is
    not valid (Engage is never asked about one). Remembered per device and key; counted
    against the device's limits. A member's wallet card only when the cashier asked for it
    (`wallet`): the look-up itself costs the visit no third call to Engage."""
    config = current_app.config
    key = config["CONTACT_KEY"]
    field = form[key]
    if not field.data or not field.validate(form):
        field.errors = []  # the cashier has not sent the form: no error shown for it yet
        return None
    value = form.normalized(key)
    state = current_app.extensions["state"]
    try:
        recalled = lookups.recall(device.id, value)
        if (
            recalled is not None
            and recalled.view is not None
            and recalled.age <= lookups.REUSE_SECONDS
            and not recalled.doubt
        ):
            metrics.lookup(recalled.view["result"], device.store_id, "remembered")
            return _presented(recalled.view, wallet)
        if not state.hits(
            [
                (f"lookup:device:{device.id}", config["LOOKUP_LIMIT_PER_DEVICE"], 60),
                (f"address:{request.remote_addr}", config["SUBMIT_LIMIT_PER_ADDRESS"], 60),
            ]
        ):
            metrics.lookup(flow.LOOKUP_UNAVAILABLE, device.store_id, "throttled")
            return {"result": flow.LOOKUP_UNAVAILABLE, "throttled": True}
    except StateUnavailable as exc:
        log.error("state database unavailable: %s %s", exc, web.log_context())
        return {"result": flow.LOOKUP_UNAVAILABLE}
    found = flow.look_up(
        current_app.extensions["engage"],
        key=key,
        value=value,
        contact_type=config["CONTACT_TYPE"],
        find_contact_type=config["CONTACT_TYPE"] if config["FIND_CONTACT_TYPE"] == "same" else None,
        breaker=current_app.extensions["breaker"],
    )
    g.engage_cause = found.cause
    log.info("lookup: %s %s", found.result, web.log_context())
    metrics.lookup(found.result, device.store_id, "engage")
    try:
        shown = lookups.remember(device.id, value, found)
    except StateUnavailable as exc:
        log.error("state database unavailable: %s %s", exc, web.log_context())
        shown = lookups.view(found)
    return _presented(shown, wallet)


def _presented(shown: dict, wallet: bool = False) -> dict:
    """The view, with what the page draws from it now: the member number's barcode, the
    wallet card (asked of Engage only when the cashier pressed for it; else whether it can be
    offered), and the fields Engage holds beside the form's own labels."""
    shown = dict(shown)
    number = shown.get("number")
    if shown["result"] == flow.LOOKUP_MEMBER:
        shown["barcode"] = (
            codes.code128_svg(number, _("Member number as a barcode")) if number else None
        )
        offered = bool(current_app.config["WALLET_CARD_ID"] and shown.get("contact_id"))
        shown["wallet"] = views.wallet_card(shown.get("contact_id")) if wallet else None
        shown["wallet_offered"] = offered and not wallet
    return shown


def form_with_lookup(device):
    """No JavaScript: the "Look up" button posted the whole form. It comes back as it was sent,
    not checked, with the answer beside the key field and, for someone found, the preferences
    and consents they have given ticked (so that unticking one withdraws it)."""
    data = MultiDict(request.form)
    wallet = data.pop("lookup", None) == "wallet"
    form = views.new_form(formdata=data)
    shown = look_up(device, form, wallet=wallet)
    if shown is not None and shown.get("given"):
        given = set(shown["given"])
        for name in flow.PREFERENCES:
            if name in given and name in form:
                form[name].data = True
        for consent_field in form.consent_fields():
            if consent_field.name.removeprefix("consent-") in given:
                consent_field.data = True
    g.outcome = "form"
    page, _status = views.render_form(form, "form", lookup=shown)
    return page
