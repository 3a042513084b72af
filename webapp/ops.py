"""Health endpoints for load balancers and monitoring: cheap, and without personal data."""

from __future__ import annotations

import logging
import threading
import time

from flask import Blueprint, current_app, jsonify

from .engage import EngageError
from .store import StateUnavailable

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)

READY_CACHE_SECONDS = 10  # one Engage call per worker per 10 s at most, however often probed
_ready_lock = threading.Lock()


@bp.get("/healthz")
def healthz():
    """The process is alive and answering."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """The configuration is valid (or the app would not have started), the shared state
    database takes a write, and Engage answers."""
    state = current_app.extensions["state"]
    try:
        state.probe()
        breaker_open = state.breaker_is_open("engage")
        state_ok = True
    except StateUnavailable as exc:
        log.error("readiness: state database unavailable: %s", exc)
        state_ok, breaker_open = False, None
    engage_ok = _engage_reachable()
    ready = engage_ok and state_ok
    body = {
        "status": "ok" if ready else "not ready",
        "engage": "ok" if engage_ok else "unreachable",
        "state": "ok" if state_ok else "unavailable",
        "breaker": "unknown" if breaker_open is None else "open" if breaker_open else "closed",
    }
    return jsonify(body), 200 if ready else 503


def _engage_reachable() -> bool:
    cache = current_app.extensions.setdefault("ready_cache", {})
    with _ready_lock:
        if time.monotonic() - cache.get("at", -1e9) < READY_CACHE_SECONDS:
            return cache["ok"]
    try:
        current_app.extensions["engage"].get_stores()
        ok = True
    except EngageError:
        ok = False
    with _ready_lock:
        cache.update(at=time.monotonic(), ok=ok)
    return ok
