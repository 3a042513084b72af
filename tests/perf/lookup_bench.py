"""One round trip for a new member after the cashier's look-up (issue 34), on demand: not part
of the test suite.

    .venv/bin/python tests/perf/lookup_bench.py [--latency 0.05] [--signups 60]

In one process, against one Engage simulator that answers every call after L seconds, one till
at a time (a cashier waits for one answer, not a crowd), rows taken in turn so that the
machine's noise falls on all of them alike:
- floor, one call: a lean Flask app whose POST makes one Engage call (a create) on a pooled
  requests.Session and answers a few bytes: what one round trip costs with nothing else;
- floor, two calls: the same with a find first (the lean floor of the other benchmarks);
- the app, a new member's POST within 60 s of a look-up that found nobody (only the POST timed);
- the app, a new member's POST without a look-up (find, then create);
- the app, the look-up itself (POST /lookup, nobody found).
Reported: each row's p50 and p99, the app's rows as ratios to the floors, and the target of the
issue: the POST after a look-up at most 1.15 L plus the lean floor's own overhead (its
two-call p50 less 2 L). Then the Engage calls a member's whole visit costs (the look-up, and
"Done: attach the purchase").
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from flask import Flask
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.conftest import TEST_CONFIG, VALID_FORM, device_cookie, hidden_fields  # noqa: E402
from webapp import create_app  # noqa: E402
from webapp.simulator import Engine, serve  # noqa: E402


def _serve(app) -> tuple[str, object]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


def floor_app(engage_url: str, calls: int) -> Flask:
    """About as little as a till's POST can be: `calls` Engage calls, a short answer."""
    app = Flask("floor")
    local = threading.local()

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            local.session.trust_env = False
            local.session.headers.update({"apikey": "k", "User-Agent": "floor/1",
                                          "Content-Type": "application/json"})  # fmt: skip
        return local.session

    @app.post("/")
    def signup():
        email = f"floor{time.perf_counter_ns()}@example.com"
        if calls == 2:
            session().get(f"{engage_url}/api/v3/contacts/id", params={"email": email})
        session().post(f"{engage_url}/api/v3/contacts", params={"source": "POS",
                       "storeExternalId": "101"}, json={"email": email, "contactType": "Member",
                       "countryCode": "SE"})  # fmt: skip
        return "ok"

    return app


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Till:
    def __init__(self, base: str, secret: str):
        self.base = base
        self.http = requests.Session()
        self.http.trust_env = False
        self.http.cookies.set("device", device_cookie(secret))
        self.n = 0

    def fields(self) -> dict:
        page = self.http.get(self.base + "/?lang=en").text
        return dict(hidden_fields(page))

    def look_up(self, email: str, fields: dict) -> tuple[float, str]:
        started = time.perf_counter()
        data = {"csrf_token": fields["csrf_token"], "email": email}
        answer = self.http.post(self.base + "/lookup", data=data)
        took = time.perf_counter() - started
        found = re.search(r'data-lookup-result="([^"]+)"', answer.text)
        return took, found.group(1) if found else "?"

    def sign_up(self, email: str, fields: dict) -> tuple[float, str]:
        data = {**VALID_FORM, "email": email, **fields}
        started = time.perf_counter()
        answer = self.http.post(self.base + "/", data=data, allow_redirects=False)
        took = time.perf_counter() - started
        outcome = self.http.get(self.base + answer.headers.get("Location", "/")).text
        found = re.search(r'data-outcome="([^"]+)"', outcome)
        return took, found.group(1) if found else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--signups", type=int, default=60)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    L = args.latency
    engine = Engine(latency=L, rate_limit=10_000)
    simulator = serve(engine)
    folder = tempfile.mkdtemp(prefix="lookup-bench-")
    limits = {"LOOKUP_LIMIT_PER_DEVICE": 10_000, "SUBMIT_LIMIT_PER_DEVICE": 10_000}
    settings = {"ENGAGE_BASE_URL": simulator.url, "STATE_DB": f"{folder}/state.sqlite3"}
    app = create_app({**TEST_CONFIG, **settings, "METRICS": False, **limits})
    base, _ = _serve(app)
    floor1, _ = _serve(floor_app(simulator.url, 1))
    floor2, _ = _serve(floor_app(simulator.url, 2))
    floor = requests.Session()
    floor.trust_env = False
    till = Till(base, app.secret_key)
    rows: dict[str, list[float]] = {k: [] for k in
                                    ("floor, one call", "floor, two calls", "after a look-up",
                                     "without a look-up", "the look-up")}  # fmt: skip
    outcomes: dict[str, set] = {"after a look-up": set(), "without a look-up": set()}
    for n in range(args.signups + 5):  # the first five warm everything up, not counted
        keep = n >= 5
        for name, url in (("floor, one call", floor1), ("floor, two calls", floor2)):
            started = time.perf_counter()
            floor.post(url + "/")
            if keep:
                rows[name].append(time.perf_counter() - started)
        fields = till.fields()
        email = f"after{n}@example.com"
        took, said = till.look_up(email, fields)
        assert said == "none", said
        if keep:
            rows["the look-up"].append(took)
        took, outcome = till.sign_up(email, fields)
        if keep:
            rows["after a look-up"].append(took)
            outcomes["after a look-up"].add(outcome)
        took, outcome = till.sign_up(f"plain{n}@example.com", till.fields())
        if keep:
            rows["without a look-up"].append(took)
            outcomes["without a look-up"].add(outcome)
    assert outcomes == {"after a look-up": {"created"}, "without a look-up": {"created"}}, outcomes

    # A member's whole visit: the look-up, then "Done: attach the purchase" (a GET of the form).
    engine.add_contact({"email": "visit@example.com", "firstName": "Maja", "lastName": "Lind"})
    before = len(engine.requests())
    fields = till.fields()
    _took, said = till.look_up("visit@example.com", fields)
    till.http.get(base + "/?lang=store")
    member_calls = [(r.method, r.path.rsplit("/", 1)[-1][:8]) for r in engine.requests()[before:]]
    assert said == "member", said

    p50 = {k: statistics.median(v) * 1000 for k, v in rows.items()}
    p99 = {k: percentile(v, 99) * 1000 for k, v in rows.items()}
    overhead = p50["floor, two calls"] - 2 * L * 1000
    target = 1.15 * L * 1000 + overhead
    print(f"L = {L * 1000:.0f} ms per Engage call; {args.signups} sign-ups per row, one till")
    print(f"{'row':<22} {'p50 ms':>8} {'p99 ms':>8} {'p50 / floor 1':>14} {'p50 / floor 2':>14}")
    for k in rows:
        print(f"{k:<22} {p50[k]:8.1f} {p99[k]:8.1f} {p50[k] / p50['floor, one call']:14.2f} "
              f"{p50[k] / p50['floor, two calls']:14.2f}")  # fmt: skip
    print(f"lean floor's own overhead (two-call p50 - 2 L): {overhead:.1f} ms")
    verdict = "met" if p50["after a look-up"] <= target else "NOT met"
    print(f"target: POST after a look-up p50 <= 1.15 L + that overhead = {target:.1f} ms: "
          f"{p50['after a look-up']:.1f} ms, {verdict}")  # fmt: skip
    print(f"a member's whole visit (look-up, then Done): {len(member_calls)} Engage calls "
          f"{member_calls}")  # fmt: skip
    simulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
