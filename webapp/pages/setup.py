"""/setup: staff bind a device to a store and a mode, behind the staff PIN."""

from __future__ import annotations

import logging
import time

from flask import Blueprint, current_app, g, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from wtforms import PasswordField, RadioField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp

from ..access import devices, pins, signed
from ..engage import EngageError
from ..i18n import gettext as _
from ..i18n import lazy_gettext as _l
from ..ops import web
from ..store import StateUnavailable

log = logging.getLogger(__name__)

bp = Blueprint("setup", __name__, url_prefix="/setup")

STAFF_SESSION_SECONDS = 10 * 60  # a PIN opens setup for ten minutes on this device


class PinForm(FlaskForm):
    pin = PasswordField(_l("Staff PIN"), validators=[DataRequired(_l("Enter the staff PIN"))])


class DeviceForm(FlaskForm):
    store = SelectField(_l("Store"), choices=[], validators=[DataRequired(_l("Choose the store"))])
    # What the manager's view and the log call it: a till's or a place's name, never a person's.
    name = StringField(
        _l("Name of this device"),
        filters=[lambda v: " ".join(v.split()) if isinstance(v, str) else v],
        validators=[
            Optional(),
            Length(max=30, message=_l("Enter at most 30 characters")),
            Regexp(r"^[\w .,:#()/+-]*$", message=_l("Use letters, digits and spaces")),
        ],
    )
    mode = RadioField(
        _l("How is this device used?"),
        choices=[
            SelectChoice("staff", _l("Staff tablet: a cashier registers the customer")),
            SelectChoice("kiosk", _l("Kiosk: customers register on their own")),
            SelectChoice(
                "display",
                _l("Customer display: faces the customer at a till, which hands it the form"),
            ),
        ],
        default="staff",
        validators=[DataRequired(_l("Choose how the device is used"))],
    )


def _staff_signed_in() -> bool:
    return session.get("staff_until", 0) > time.time()


@bp.get("/")
def start():
    if not current_app.config["STAFF_PIN"]:
        return _page("setup/disabled.html", "setup-disabled")
    signed.client_id()  # this browser's id exists before its first PIN: limits count it
    if not _staff_signed_in():
        return _page("setup/pin.html", "setup-pin", form=PinForm())
    return _device_page(DeviceForm(data={"mode": _current_mode()}))


@bp.post("/pin")
def pin():
    config = current_app.config
    if not config["STAFF_PIN"]:
        return redirect(url_for(".start"), code=303)
    form = PinForm(formdata=request.form)  # a field sent as a file is no field at all
    match, status = pins.check(form, "staff", [config["STAFF_PIN"]], empty=_("Enter the staff PIN"))
    if match is None:
        return _page("setup/pin.html", "setup-pin", status, form=form)
    session["staff_until"] = time.time() + STAFF_SESSION_SECONDS
    return redirect(url_for(".start"), code=303)


@bp.post("/")
def save():
    if not _staff_signed_in():
        return redirect(url_for(".start"), code=303)
    form = DeviceForm(formdata=request.form)
    try:
        stores = devices.active_stores()
    except EngageError:
        return _device_page(form, unavailable=True)
    form.store.choices = _store_choices(stores)
    if not form.validate_on_submit():
        return _device_page(form, status=400, stores=stores)
    store = next(s for s in stores if str(s["externalId"]) == form.store.data)
    start = "display.page" if form.mode.data == "display" else "signup.form"
    response = redirect(url_for(start), code=303)
    device = devices.bind(response, store, form.mode.data, form.name.data or "")
    try:
        current_app.extensions["state"].device_enrolled(
            device.id, device.store_id, device.store_name, device.name, device.mode
        )
    except StateUnavailable as exc:  # the device works; the manager sees its id, not its name
        log.error("state database unavailable: %s %s", exc, web.log_context())
    session.pop("staff_until", None)  # setup done: the PIN is needed again next time
    session.pop("lang", None)  # the new store's language becomes the default
    return response


@bp.post("/forget")
def forget():
    if not _staff_signed_in():
        return redirect(url_for(".start"), code=303)
    response = redirect(url_for(".start"), code=303)
    devices.unbind(response)
    return response


def _device_page(form, status=200, unavailable=False, stores=None):
    if stores is None and not unavailable:
        try:
            stores = devices.active_stores()
        except EngageError:
            unavailable = True
    if stores is not None:
        form.store.choices = _store_choices(stores)
        device = devices.current_device()
        if not form.store.data:
            bound = device.store_id if device and device.bound else None
            form.store.data = bound or current_app.config["STORE_EXTERNAL_ID"] or None
    return _page("setup/device.html", "setup-device", status, form=form, unavailable=unavailable)


def _store_choices(stores: list[dict]) -> list[SelectChoice]:
    return [
        SelectChoice(
            str(s["externalId"]), f"{s.get('name') or s['externalId']} ({s['externalId']})"
        )
        for s in sorted(stores, key=lambda s: str(s.get("name") or ""))
    ]


def _current_mode() -> str:
    device = devices.current_device()
    return device.mode if device else current_app.config["DEVICE_MODE"]


def _page(template: str, outcome: str, status: int = 200, **context):
    g.outcome = outcome
    return render_template(template, outcome=outcome, **context), status
