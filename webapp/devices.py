"""Which store and mode this tablet or kiosk serves.

Staff bind a device once, on /setup, to a store picked from Engage's own store list (so a typo
can never become a customer's permanent recruited-in store) and to a mode. The binding lives
in a signed, long-lived, HttpOnly cookie on the device. Devices not bound yet use
STORE_EXTERNAL_ID and DEVICE_MODE, when set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from flask import Response, current_app, g, request
from itsdangerous import BadSignature, URLSafeSerializer

from .i18n import country_codes
from .signed import remembered

COOKIE = "device"
COOKIE_DAYS = 400  # the longest lifetime browsers accept


@dataclass(frozen=True)
class Device:
    store_id: str
    store_name: str
    country: str  # the store's country: the form's default country and language
    mode: str  # "staff" (a cashier at the till) or "kiosk" (a customer alone)
    bound: bool = True  # False: the deployment's defaults, not a binding made on /setup

    @property
    def kiosk(self) -> bool:
        return self.mode == "kiosk"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt="engage-signup-device")


def _device_from(cookie: str) -> Device | None:
    try:
        return Device(**{**_serializer().loads(cookie), "bound": True})
    except (BadSignature, TypeError):
        return None


def current_device() -> Device | None:
    """The device making this request, or None when nobody has set it up."""
    if "device" in g:
        return g.device
    device = None
    cookie = request.cookies.get(COOKIE)
    if cookie:
        device = remembered("device", cookie, lambda: _device_from(cookie))
    if device is None:
        device = _default_device(current_app._get_current_object())
    g.device = device
    return device


def _default_device(app) -> Device | None:
    """The deployment's own device (STORE_EXTERNAL_ID, DEVICE_MODE), or None without a store."""
    if "default_device" not in app.extensions:
        config = app.config
        store_id = config["STORE_EXTERNAL_ID"]
        app.extensions["default_device"] = (
            Device(
                store_id=store_id,
                store_name=config["STORE_NAME"] or store_id,
                country=config["DEFAULT_COUNTRY"],
                mode=config["DEVICE_MODE"],
                bound=False,
            )
            if store_id
            else None
        )
    return app.extensions["default_device"]


def bind(response: Response, store: dict, mode: str) -> Device:
    """Bind this device to `store` (one of Engage's) in `mode`; sets the device cookie."""
    country = str(store.get("countryCode") or "").upper()
    device = Device(
        store_id=str(store["externalId"]),
        store_name=str(store.get("name") or store["externalId"]),
        country=country if country in country_codes() else current_app.config["DEFAULT_COUNTRY"],
        mode=mode,
    )
    value = {k: v for k, v in asdict(device).items() if k != "bound"}
    response.set_cookie(
        COOKIE,
        _serializer().dumps(value),
        max_age=COOKIE_DAYS * 86400,
        httponly=True,
        samesite="Lax",
        secure=current_app.config["HTTPS"],
    )
    return device


def unbind(response: Response) -> None:
    response.delete_cookie(
        COOKIE, httponly=True, samesite="Lax", secure=current_app.config["HTTPS"]
    )


def active_stores() -> list[dict]:
    """Engage's active stores, asked afresh; raises EngageError when Engage cannot answer."""
    return [
        s
        for s in current_app.extensions["engage"].get_stores()
        if s.get("externalId") and s.get("active", True) is not False
    ]
