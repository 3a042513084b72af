"""What operations watch in Prometheus: /metrics, in the Prometheus text format.

Other modules call the small functions here (`signup`, `engage_call`, ...) and never touch
prometheus-client. Under gunicorn each worker is a process of its own: the server sets
PROMETHEUS_MULTIPROC_DIR (a folder made empty at each start, webapp/serve.py) before the app is
built, every process writes its values there, a dead worker's live gauges are dropped by the
server's child-exit hook, and a scrape (answered by any worker) adds them all up. On one
process without gunicorn the values live in that process. prometheus-client is imported only
when the first app is built, after the server has set that variable: it chooses where values
live at its import.

What the shared state knows (the breaker, the outbox) is read from it at most every
STATE_SECONDS by the worker that answers a scrape, so that scraping never loads the database.

No label holds personal data, a device id or a token: outcomes, modes, Engage's endpoints and
statuses are fixed sets; the store label takes only a device's store (picked by staff from
Engage's store list at enrolment, and signed with SECRET_KEY, so nobody else can choose it) or
STORE_EXTERNAL_ID, at most MAX_STORES of them; Engage's error tokens are letters only, at most
MAX_TOKENS of them; anything else is "other".
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import threading
import time
from typing import Any

from flask import Blueprint, Response, abort, current_app, has_app_context, request

PREFIX = "engage_signup"
STATE_SECONDS = 5.0
MAX_STORES = 500
MAX_TOKENS = 50
OTHER = "other"
# Seconds: a sign-up answers in about two Engage round trips; Toast asks for 0.5 s on average
# and 5 s at most, and the alert fires on a p95 over 2 s.
SIGNUP_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0)
ENGAGE_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0)

bp = Blueprint("metrics", __name__)
_lock = threading.Lock()
_metrics: dict[str, Any] = {}
_labels: dict[str, set[str]] = {"store": set(), "token": set()}


def init_app(app) -> None:
    """Make this process's metrics (once), and the /metrics page."""
    if app.config["METRICS"]:
        _make()
        from . import version

        _metrics["info"].labels(version=version.__version__,
                                commit=version.commit() or "unknown").set(1)  # fmt: skip
    app.register_blueprint(bp)


def _make() -> None:
    with _lock:
        if _metrics:
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # Ours alone (not the client library's default registry with its process and platform
        # collectors): what a scrape of one process shows, as the multiprocess files hold.
        own = CollectorRegistry(auto_describe=True)
        _metrics["registry"] = own
        _metrics.update(
            signups=Counter(f"{PREFIX}_signups", "Sign-ups by outcome, store and mode.",
                            ["outcome", "store", "mode"], registry=own),
            signup_seconds=Histogram(
                f"{PREFIX}_signup_seconds", "How long a sign-up's answer took, by mode.",
                ["mode"], buckets=SIGNUP_BUCKETS, registry=own),
            engage_calls=Counter(f"{PREFIX}_engage_calls", "Engage calls by endpoint, HTTP "
                                 "status and Engage's error token.",
                                 ["endpoint", "status", "token"], registry=own),
            engage_seconds=Histogram(f"{PREFIX}_engage_call_seconds", "Engage call time.",
                                     ["endpoint"], buckets=ENGAGE_BUCKETS, registry=own),
            lookups=Counter(f"{PREFIX}_lookups", "Cashiers' look-ups while typing, by what "
                            "they found (none, member, other-type, several, unavailable) and "
                            "whether Engage was asked or it was remembered.",
                            ["result", "store", "source"], registry=own),
            replays=Counter(f"{PREFIX}_replays", "Outbox replays by what Engage said.",
                            ["outcome"], registry=own),
            consent_records=Counter(f"{PREFIX}_consent_records", "Consent records written.",
                                    registry=own),
            pin_lockouts=Counter(f"{PREFIX}_pin_lockouts", "Times wrong PINs reached the "
                                 "deployment's cap, by kind (staff, manager).", ["kind"],
                                 registry=own),
            ready=Gauge(f"{PREFIX}_ready", "1 when this machine's last /readyz was ready.",
                        multiprocess_mode="mostrecent", registry=own),
            info=Gauge(f"{PREFIX}_build_info", "The app's version and commit.",
                       ["version", "commit"], multiprocess_mode="max", registry=own),
        )  # fmt: skip


def _on() -> bool:
    """Counting: metrics were made in this process, and (inside a request or an app context)
    this app has them on. Background threads (the outbox's replays) count with the process."""
    if not _metrics:
        return False
    return current_app.config["METRICS"] if has_app_context() else True


def _bounded(kind: str, value: str, limit: int) -> str:
    seen = _labels[kind]
    if value in seen:
        return value
    with _lock:
        if len(seen) >= limit:
            return OTHER
        seen.add(value)
    return value


def _store(store: str | None) -> str:
    if not store or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", store):
        return OTHER
    return _bounded("store", store, MAX_STORES)


# --- what the app calls -----------------------------------------------------------------------
def signup(outcome: str, store: str | None, mode: str) -> None:
    if _on():
        _metrics["signups"].labels(outcome=outcome, store=_store(store), mode=mode).inc()


def lookup(result: str, store: str | None, source: str) -> None:
    if _on():
        _metrics["lookups"].labels(result=result, store=_store(store), source=source).inc()


def signup_time(seconds: float, mode: str) -> None:
    if _on():
        _metrics["signup_seconds"].labels(mode=mode).observe(seconds)


def engage_call(method: str, path: str, status: int | None, token: str | None, seconds: float):
    if not _on():
        return
    endpoint = _endpoint(method, path)
    token_label = "-"
    if token:
        token_label = (
            _bounded("token", token, MAX_TOKENS)
            if re.fullmatch(r"[A-Za-z]{1,40}", token)
            else OTHER
        )
    _metrics["engage_calls"].labels(
        endpoint=endpoint, status=str(status) if status else "none", token=token_label
    ).inc()
    _metrics["engage_seconds"].labels(endpoint=endpoint).observe(seconds)


def _endpoint(method: str, path: str) -> str:
    if path == "/api/v3/contacts/id":
        return "find"
    if path == "/api/v3/contacts":
        return "create" if method == "POST" else OTHER
    if path.startswith("/api/v3/contacts/") and path.endswith("/updateContactType"):
        return "promote"
    if path.startswith("/api/v3/contacts/"):
        return "update" if method == "PATCH" else "read"
    if path.endswith("/consents"):
        return "consents"
    if path == "/api/v3/stores":
        return "stores"
    if path == "/api/v3/wallet/pass/urls":
        return "wallet"
    return OTHER


def replay(outcome: str) -> None:
    if _on():
        _metrics["replays"].labels(outcome=outcome).inc()


def consent_records(count: int) -> None:
    if _on() and count:
        _metrics["consent_records"].inc(count)


def pin_lockout(kind: str) -> None:
    if _on():
        _metrics["pin_lockouts"].labels(kind=kind).inc()


def ready(is_ready: bool) -> None:
    if _on():
        _metrics["ready"].set(1 if is_ready else 0)


# --- what the shared state knows, read at most every STATE_SECONDS -------------------------------
class StateCollector:
    """The breaker and the outbox, as the shared state has them (the same on every machine)."""

    def __init__(self, app):
        self.app = app
        self._cached: tuple[float, dict] | None = None
        self._lock = threading.Lock()

    def _read(self) -> dict | None:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < STATE_SECONDS:
                return self._cached[1]
        from ..store import UNOPENED, StateUnavailable

        state, breaker = self.app.extensions["state"], self.app.extensions["breaker"]
        try:
            figures = {"breaker": state.breaker_is_open(breaker.NAME), **state.outbox_summary()}
        except StateUnavailable:
            figures = None
        else:
            figures["unopened"] = figures.pop("by_error", {}).get(UNOPENED, 0)
        with self._lock:
            self._cached = (time.monotonic(), figures)
        return figures

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        figures = self._read()
        up = GaugeMetricFamily(f"{PREFIX}_state_up", "1 when the shared state could be read.")
        up.add_metric([], 1 if figures is not None else 0)
        yield up
        if figures is None:
            return
        breaker = GaugeMetricFamily(f"{PREFIX}_breaker_open",
                                    "1 while the circuit breaker keeps Engage alone.")  # fmt: skip
        breaker.add_metric([], 1 if figures["breaker"] else 0)
        yield breaker
        items = GaugeMetricFamily(f"{PREFIX}_outbox_items", "Kept sign-ups by state: waiting, "
                                  "attention (needs a person), unopened (no machine's keys have "
                                  "opened it).", labels=["state"])  # fmt: skip
        for name in ("waiting", "attention"):
            items.add_metric([name], figures["states"].get(name, 0))
        items.add_metric(["unopened"], figures["unopened"])
        yield items
        oldest = GaugeMetricFamily(f"{PREFIX}_outbox_oldest_seconds",
                                   "Age of the oldest kept sign-up (0 when none).")  # fmt: skip
        oldest.add_metric([], max(0.0, time.time() - figures["oldest"]) if figures["oldest"] else 0)
        yield oldest


# --- the page ------------------------------------------------------------------------------------
@bp.get("/metrics")
def page():
    config = current_app.config
    if not config["METRICS"]:
        abort(404)
    if not _allowed():
        abort(403)
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    registry = current_app.extensions.get("metrics_registry")
    if registry is None:
        import os

        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = CollectorRegistry()
            registry.register(_metrics["registry"])  # this process's own values
        registry.register(StateCollector(current_app._get_current_object()))
        current_app.extensions["metrics_registry"] = registry
    response = Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
    response.headers["Cache-Control"] = "no-store"
    return response


def _allowed() -> bool:
    """METRICS_TOKEN as a bearer token, or a client address within METRICS_ALLOW."""
    config = current_app.config
    given = request.headers.get("Authorization", "")
    if config["METRICS_TOKEN"] and given.startswith("Bearer "):
        if hmac.compare_digest(given[7:].strip().encode(), config["METRICS_TOKEN"].encode()):
            return True
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    return any(address in network for network in config["METRICS_ALLOW"])
