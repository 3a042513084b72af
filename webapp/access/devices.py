"""Which store and mode this tablet or kiosk serves.

Staff enrol a device once, on /setup with the staff PIN, to a store picked from Engage's own
store list (so a typo can never become a customer's permanent recruited-in store) and to a mode.
The enrolment lives in a signed, long-lived, HttpOnly cookie on the device, with a random device
id that rate limits count against.

Staff powers (whether someone was found, member numbers, contact ids) exist only on a device
enrolled in staff mode. A device that is not enrolled, or whose cookie no longer verifies (a new
SECRET_KEY, a tampered value), is never a staff tablet: with DEVICE_MODE=kiosk and a
STORE_EXTERNAL_ID it is a kiosk of that store, which reveals nothing about anyone; otherwise it
shows the setup page.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass, replace

from flask import Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeSerializer

from ..i18n import country_codes
from .signed import remembered

COOKIE = "device"  # over plain HTTP (tests, training)
SECURE_COOKIE = "__Host-device"  # over HTTPS: only sent over HTTPS, to this host, for every path
COOKIE_DAYS = 400  # the longest lifetime browsers accept
# Where the customer is alone with a public screen: a kiosk, their own phone (scan to join), or
# the customer display facing them at a till.
PRIVATE_MODES = ("kiosk", "phone", "display")


@dataclass(frozen=True)
class Device:
    store_id: str
    store_name: str
    country: str  # the store's country: the form's default country and language
    mode: str  # "staff" (a cashier at the till), "kiosk" (a customer alone) or "display"
    bound: bool = True  # False: an unenrolled device served as a kiosk (DEVICE_MODE=kiosk)
    id: str = ""  # random, made at enrolment; "" for unenrolled devices
    name: str = ""  # what staff called it at enrolment ("Kassa 2"), never a person's name

    @property
    def kiosk(self) -> bool:
        return self.mode == "kiosk"

    @property
    def private(self) -> bool:
        """The customer alone with a public screen (a kiosk, or their own phone through scan to
        join): nothing may tell one person's outcome from another's."""
        return self.mode in PRIVATE_MODES


def cookie_name() -> str:
    return SECURE_COOKIE if current_app.config["HTTPS"] else COOKIE


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt="engage-signup-device")


def _device_from(cookie: str) -> Device | None:
    try:
        values = _serializer().loads(cookie)
        device = Device(**{**values, "bound": True})
    except (BadSignature, TypeError):
        return None
    if device.mode not in ("staff", "kiosk", "display"):
        return None
    return device


def current_device() -> Device | None:
    """The device making this request, or None when it must be set up first."""
    if "device" in g:
        return g.device
    name = cookie_name()
    cookie = request.cookies.get(name)
    if cookie is None and name != COOKIE:
        cookie = request.cookies.get(COOKIE)  # enrolled before the cookie had its prefix
        if cookie is not None:
            g.device_reissue = True
    device = remembered("device", cookie, lambda: _device_from(cookie)) if cookie else None
    g.device_refused = cookie is not None and device is None
    if device is not None and not device.id:
        # Enrolled before devices had ids: give it one now, kept from this request on.
        device = replace(device, id=secrets.token_urlsafe(12))
        g.device_reissue = True
    if device is None:
        device = _unenrolled_device(current_app._get_current_object())
    g.device = device
    return device


def _unenrolled_device(app) -> Device | None:
    """A kiosk of STORE_EXTERNAL_ID when DEVICE_MODE=kiosk; otherwise None (set up first)."""
    if "unenrolled_device" not in app.extensions:
        config = app.config
        store_id = config["STORE_EXTERNAL_ID"]
        app.extensions["unenrolled_device"] = (
            Device(
                store_id=store_id,
                store_name=config["STORE_NAME"] or "",
                country=config["DEFAULT_COUNTRY"],
                mode="kiosk",
                bound=False,
            )
            if store_id and config["DEVICE_MODE"] == "kiosk"
            else None
        )
    return app.extensions["unenrolled_device"]


def keep_cookie_current(response: Response) -> Response:
    """After a request that found an old-style cookie: set it as it is made today."""
    if g.get("device_reissue") and g.get("device") is not None and g.device.bound:
        _set_cookie(response, g.device)
        if cookie_name() != COOKIE:
            response.delete_cookie(COOKIE, httponly=True, samesite="Lax", secure=True)
    return response


def bind(response: Response, store: dict, mode: str, name: str = "") -> Device:
    """Enrol this device to `store` (one of Engage's) in `mode`; sets the device cookie."""
    country = str(store.get("countryCode") or "").upper()
    device = Device(
        store_id=str(store["externalId"]),
        store_name=str(store.get("name") or store["externalId"]),
        country=country if country in country_codes() else current_app.config["DEFAULT_COUNTRY"],
        mode=mode,
        id=secrets.token_urlsafe(12),
        name=name,
    )
    _set_cookie(response, device)
    return device


def encode(device: Device) -> str:
    """The device cookie's value for `device`: signed, not encrypted (nothing personal)."""
    return _serializer().dumps({k: v for k, v in asdict(device).items() if k != "bound"})


def _set_cookie(response: Response, device: Device) -> None:
    response.set_cookie(
        cookie_name(),
        encode(device),
        max_age=COOKIE_DAYS * 86400,
        httponly=True,
        samesite="Lax",
        secure=current_app.config["HTTPS"],
    )


def unbind(response: Response) -> None:
    secure = current_app.config["HTTPS"]
    response.delete_cookie(cookie_name(), httponly=True, samesite="Lax", secure=secure)
    if cookie_name() != COOKIE and COOKIE in request.cookies:
        response.delete_cookie(COOKIE, httponly=True, samesite="Lax", secure=secure)


def active_stores() -> list[dict]:
    """Engage's active stores, asked afresh; raises EngageError when Engage cannot answer."""
    return [
        s
        for s in current_app.extensions["engage"].get_stores()
        if s.get("externalId") and s.get("active", True) is not False
    ]
