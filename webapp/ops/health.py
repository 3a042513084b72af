"""Health endpoints for load balancers and monitoring: cheap, and without personal data."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, current_app, jsonify

from ..engage import EngageError, EngageMisconfigured, EngageRejected, MultipleMatches
from ..store import StateUnavailable
from . import metrics

log = logging.getLogger(__name__)

bp = Blueprint("ops", __name__)


@dataclass(frozen=True)
class Readiness:
    """What readiness needs from the sign-up (above ops), handed in by the app factory: the
    setting to check for a refusal of Engage's, and the configured consents' problems in the
    tenant (ids it does not have; required ones with no terms to read)."""

    setting_to_check: Callable[[EngageError], str]
    consent_problems: Callable[[], tuple[list[str] | None, list[str] | None]]


READY_CACHE_SECONDS = 10  # one Engage call per worker per 10 s at most, however often probed
_ready_lock = threading.Lock()

# What /readyz looks up: a value of the key's kind that no customer has (example.com; a number
# from the range Sweden keeps for fiction; a test personal number; a made-up customer number).
# Only that Engage answers it as a lookup (found or not) matters.
PROBE_VALUES = {
    "email": "readiness.probe@example.com",
    "mobilePhone": "+46701740699",
    "socialSecurityNumber": "191212121212",
    "externalId": "engage-signup-readiness-probe",
}


@bp.get("/healthz")
def healthz():
    """The process is alive and answering, and which version (and commit) it runs."""
    return jsonify(status="ok", **_version())


def _version() -> dict:
    from . import version

    return {"version": version.__version__, "commit": version.commit() or "unknown"}


@bp.get("/readyz")
def readyz():
    """The configuration is valid (or the app would not have started), the shared state
    database takes a write, Engage answers a lookup with the configured contact type and key,
    and every configured consent exists in the tenant."""
    state = current_app.extensions["state"]
    try:
        state.probe()
        breaker_open = state.breaker_is_open("engage")
        state_ok = True
    except StateUnavailable as exc:
        log.error("readiness: state database unavailable: %s", exc)
        state_ok, breaker_open = False, None
    engage = _engage_check()
    outbox = _outbox_check() if state_ok else {}
    body = {
        "status": "ok" if state_ok and engage["engage"] == "ok" and not engage.get("consents")
        and outbox.get("check") is None else "not ready",
        **engage,
        "state": "ok" if state_ok else "unavailable",
        "breaker": "unknown" if breaker_open is None else "open" if breaker_open else "closed",
        **outbox,
        **_version(),
    }  # fmt: skip
    metrics.ready(body["status"] == "ok")
    if engage.get("check") and outbox.get("check"):
        body["check"] = f"{engage['check']}, {outbox['check']}"
    return jsonify(body), 200 if body["status"] == "ok" else 503


def _outbox_check() -> dict:
    """Whether this machine's OUTBOX_KEYS open the kept sign-ups. Keys that open none of them
    differ from the other machines': such a machine would seal sign-ups nobody else can open,
    so it is not ready (the load balancer takes it out; its replays leave every item for the
    others). Keys that open some: ready, and the body says how many they cannot open."""
    outbox = current_app.extensions.get("outbox")
    if outbox is None:
        return {}
    try:
        tried, opened = outbox.key_check()
    except StateUnavailable:
        return {}  # the probe's write just worked: a passing fault, said by the next probe
    if tried and not opened:
        result = {"outbox": f"these keys open none of the {tried} newest kept sign-ups",
                  "check": "OUTBOX_KEYS"}  # fmt: skip
    elif opened < tried:
        result = {"outbox": f"{tried - opened} of the {tried} newest kept sign-ups cannot be "
                            "opened with these keys"}  # fmt: skip
    else:
        result = {}
    cache = current_app.extensions.setdefault("ready_cache", {})
    with _ready_lock:
        changed = cache.get("outbox") != result
        cache["outbox"] = result
    if changed and result:  # once when it starts, not at every probe
        log.error("readiness: outbox: %s: check OUTBOX_KEYS", result["outbox"])
    return result


def _engage_check() -> dict:
    """Engage's part of readiness, at most every READY_CACHE_SECONDS per worker."""
    cache = current_app.extensions.setdefault("ready_cache", {})
    with _ready_lock:
        if time.monotonic() - cache.get("at", -1e9) < READY_CACHE_SECONDS:
            return cache["result"]
    result = _ask_engage()
    with _ready_lock:
        changed = cache.get("result") != result
        cache.update(at=time.monotonic(), result=result)
    if changed and result.get("check"):  # once when it starts, not at every probe
        log.error("readiness: engage %s: check %s", result["engage"], result["check"])
    return result


def _ask_engage() -> dict:
    config = current_app.config
    key = config["CONTACT_KEY"]
    try:
        current_app.extensions["engage"].find_contact_id(
            key=key, value=PROBE_VALUES[key], contact_type=config["CONTACT_TYPE"]
        )
    except EngageMisconfigured as exc:
        check = current_app.extensions["readiness"].setting_to_check(exc)
        return {"engage": "misconfigured", "check": check}
    except (MultipleMatches, EngageRejected):
        pass  # Engage answered a lookup; what it thought of the probe value does not matter
    except EngageError:
        return {"engage": "unreachable"}
    result: dict = {"engage": "ok"}
    unknown, untold = current_app.extensions["readiness"].consent_problems()
    if unknown:
        result["consents"] = "not in the tenant: " + ", ".join(unknown)
        result["check"] = "CONSENTS"
    elif untold:
        result["consents"] = "required, with no url and no terms in Engage: " + ", ".join(untold)
        result["check"] = "CONSENTS"
    return result
