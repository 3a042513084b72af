"""Signed cookies and tokens without redoing the same HMAC work on every request.

A tablet at the till sends the same session cookie and device cookie on every request, and
the form page hands out the same CSRF token again and again. Checking or making each
signature is pure work on the same input, so its result is remembered for a short while.
A value is remembered with the verdict of its own check (a forged cookie stays refused), and
entries live for TTL_SECONDS, far inside every lifetime involved (the session's
31 days, the device cookie's 400 days, the CSRF token's 8 hours), so nothing is accepted
that a fresh check would refuse, except within that margin of the longest lifetimes.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app, g, session
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import generate_csrf
from itsdangerous import BadData, BadSignature, URLSafeTimedSerializer

TTL_SECONDS = 120.0
MAX_ENTRIES = 4096  # a store has tens of devices; this only bounds memory under abuse


class Memo:
    """A small time-limited map, safe to share between threads (dict operations are atomic)."""

    def __init__(self, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES, *, clock=None):
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock or time.monotonic
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        """The remembered value for `key`, or `make()` (remembered unless it raises)."""
        now = self.clock()
        hit = self._entries.get(key)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        value = make()
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (now, value)
        return value


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions; the serializer is built once and a cookie that was
    checked recently is not checked again. Each request gets its own copy of the data."""

    def __init__(self):
        self._checked = Memo()

    def get_signing_serializer(self, app):
        serializer = app.extensions.get("session_serializer")
        if serializer is None:
            serializer = app.extensions["session_serializer"] = super().get_signing_serializer(app)
        return serializer

    def open_session(self, app, request):
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        data = self._checked.get(value, lambda: self._load(app, value))
        return self.session_class(copy.deepcopy(data) if _nested(data) else data)

    def _load(self, app, value: str) -> dict:
        """What SecureCookieSessionInterface.open_session does with the cookie: {} if forged."""
        max_age = int(app.permanent_session_lifetime.total_seconds())
        try:
            return self.get_signing_serializer(app).loads(value, max_age=max_age)
        except BadSignature:
            return {}


def _nested(data: dict) -> bool:
    return any(isinstance(v, dict | list) for v in data.values())


def remembered(kind: str, key: Any, make: Callable[[], Any]) -> Any:
    """`make()`, remembered per app for `kind` and `key` (see Memo)."""
    memos = current_app.extensions.setdefault("signed_memos", {})
    memo = memos.get(kind)
    if memo is None:
        memo = memos[kind] = Memo()
    return memo.get(key, make)


def csrf_token() -> str:
    """The signed CSRF token for this session, as Flask-WTF's generate_csrf() makes it.

    The same signed token is handed out for up to TTL_SECONDS, so it can be up to that much
    older than the page that carries it (the limit is WTF_CSRF_TIME_LIMIT, 8 hours).
    """
    raw = session.get("csrf_token")
    if isinstance(raw, str) and "csrf_token" not in g:
        token = g.csrf_token = remembered("csrf", raw, generate_csrf)
        return token
    # A first visit (generate_csrf() makes the raw token and puts it in the session), or a
    # page that already made its token while rendering. That token is remembered too, so the
    # next page carries the same one even when the clock has moved on to the next second.
    token = generate_csrf()
    raw = session.get("csrf_token")
    return remembered("csrf", raw, lambda: token) if isinstance(raw, str) else token


def client_id() -> str:
    """This browser's random id, kept in its signed session: rate limits and results are bound
    to it."""
    return session.setdefault("client_id", secrets.token_urlsafe(12))


# --- the result page's cookie -------------------------------------------------------------------
RESULT_SECONDS = 3600  # how long the result page can be reloaded after a signup
# What a result page shows: never anything the person typed.
RESULT_FIELDS = ("name", "member_number", "contact_id", "other_type", "matches", "reference",
                 "masked_name", "phone", "changed", "kept")  # fmt: skip


def result_value(outcome: dict[str, str | None], client_id: str) -> str:
    """The outcome for the result page, signed and bound to this browser's session.

    It travels in its own small cookie rather than in the session, so the session cookie stays
    the same from one signup to the next: its check is remembered and it is never re-signed.
    Re-signing the session with the outcome and checking the new one took about 0.5 ms of each
    signup, measured in one process with Engage answering after 50 ms (about 0.05 ms when run
    back to back: most of it is waking up cold).
    """
    fields = [outcome.get(name) for name in RESULT_FIELDS]
    return _result_serializer().dumps([*fields, client_id])


def read_result(value: str, client_id: str | None) -> dict[str, str | None] | None:
    """The outcome in a result cookie made for this session, or None (forged, old, not ours)."""
    try:
        *fields, made_for = _result_serializer().loads(value, max_age=RESULT_SECONDS)
    except (BadData, ValueError, TypeError):
        return None
    if not client_id or made_for != client_id or len(fields) != len(RESULT_FIELDS):
        return None
    return dict(zip(RESULT_FIELDS, fields, strict=True))


def _result_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="engage-signup-result")


# --- sealed values: encrypted as well as signed --------------------------------------------------
def _fernet(purpose: str):
    """A Fernet key for `purpose`, derived from SECRET_KEY (HKDF-SHA256), made once per app."""
    keys = current_app.extensions.setdefault("sealing_keys", {})
    fernet = keys.get(purpose)
    if fernet is None:
        raw = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=None,
            info=f"engage-signup {purpose}".encode(),
        ).derive(current_app.secret_key.encode())
        fernet = keys[purpose] = Fernet(base64.urlsafe_b64encode(raw))
    return fernet


def seal(value: Any, purpose: str) -> str:
    """`value` (JSON) encrypted and authenticated: a cookie that can carry what a person typed
    without anyone who reads the cookie jar learning it."""
    return _fernet(purpose).encrypt(json.dumps(value).encode()).decode()


def unseal(token: str, purpose: str, max_age: int) -> Any | None:
    """What `seal()` sealed for `purpose` within `max_age` seconds, or None."""
    try:
        return json.loads(_fernet(purpose).decrypt(token.encode(), ttl=max_age))
    except (InvalidToken, ValueError, UnicodeError):
        return None


def digest(values: dict[str, Any], purpose: str) -> str:
    """A keyed hash of `values`: equal values give equal digests, and without SECRET_KEY the
    digest says nothing about them (no personal data in clear in the shared state)."""
    key = hashlib.sha256(f"engage-signup {purpose} {current_app.secret_key}".encode()).digest()
    message = json.dumps(values, sort_keys=True, ensure_ascii=False).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:32]
