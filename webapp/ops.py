"""Health endpoints for load balancers and monitoring: cheap, and without personal data."""

from __future__ import annotations

import threading
import time

from flask import Blueprint, current_app, jsonify

from .engage import EngageError

bp = Blueprint("ops", __name__)

READY_CACHE_SECONDS = 10  # one Engage call per worker per 10 s at most, however often probed
_ready_lock = threading.Lock()


@bp.get("/healthz")
def healthz():
    """The process is alive and answering."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """The configuration is valid (or the app would not have started) and Engage answers."""
    engage_ok = _engage_reachable()
    breaker_open = current_app.extensions["state"].breaker_is_open("engage")
    body = {
        "status": "ok" if engage_ok else "not ready",
        "engage": "ok" if engage_ok else "unreachable",
        "breaker": "open" if breaker_open else "closed",
    }
    return jsonify(body), 200 if engage_ok else 503


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
