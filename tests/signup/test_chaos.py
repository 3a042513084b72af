"""A bounded chaos run: many devices, one production server, a misbehaving Engage.

Loopback only, about ten seconds. Devices submit new and repeated people through gunicorn while
the simulator adds latency and answers with 504s, 5xx, dropped connections and slow replies.
"""

from __future__ import annotations

import collections
import random
import re
import threading
import time

from cryptography.fernet import Fernet

from tests.conftest import VALID_FORM, enrolled_session, hidden_fields, wait_until
from webapp.store import open_store

DEVICES = 12
SECONDS = 8
RECOGNISED = {
    "queued",
    "created",
    "existing",
    "in-progress",
    "ambiguous",
    "rejected",
    "timeout",
    "unavailable",
}


def test_chaos_no_5xx_no_duplicates_nobody_lost(engine, production_server, capsys, tmp_path):
    engine.create_limit = 0.8
    engine.rate_limit = 5000
    engine.inject("latency", on="any", times=None, share=0.3, seconds=0.15)
    engine.inject("status", on="create", times=None, share=0.06, status=504)
    engine.inject("status", on="any", times=None, share=0.04, status=503)
    engine.inject("status", on="create", times=None, share=0.04, status=502, after_commit=True)
    engine.inject("drop", on="create", times=None, share=0.04)
    engine.inject("drop", on="create", times=None, share=0.04, after_commit=True)
    engine.inject("hang", on="any", times=None, share=0.02, seconds=2)

    key = Fernet.generate_key().decode()
    settings = dict(
        ENGAGE_READ_TIMEOUT="1.0",
        ENGAGE_CREATE_TIMEOUT="1.0",
        ENGAGE_SETTLE_SECONDS="0.1",
        ENGAGE_RETRY_SECONDS="0.1",
        BREAKER_THRESHOLD="6",
        BREAKER_COOLDOWN="1",
        OUTBOX_KEYS=key,
        OUTBOX_REPLAY_PER_SECOND="50",
        LOG_LEVEL="INFO",
    )
    url = production_server(**settings)
    results = _run_devices(url)

    # Engage recovers: the operator sends what was kept, and the workers replay it.
    engine.clear_faults()
    state = open_store({"STATE_DB": str(tmp_path / "state.sqlite3"), "WEB_THREADS": 2},
                       instance_path=str(tmp_path))  # fmt: skip
    state.outbox_retry()
    wait_until(lambda: state.outbox_count() == 0, "the outbox never emptied", seconds=60)
    state.close()
    server = production_server.servers[-1]
    queued_count = sum(1 for _, outcome, _ in results if outcome == "queued")

    def replayed_lines() -> collections.Counter:
        lines = "".join(server.lines)
        return collections.Counter(re.findall(r"outbox item \S+ sent: (created|existing)", lines))

    (replayed,) = wait_until(  # the last log lines
        lambda: [r] if sum((r := replayed_lines()).values()) >= queued_count else None,
        "the replays' log lines never came",
    )

    stored = collections.Counter(c["attributes"]["email"] for c in engine.contacts())
    counts = collections.Counter(outcome for _, outcome, _ in results)
    with capsys.disabled():
        print(f"\nchaos: {len(results)} submissions from {DEVICES} devices in {SECONDS} s")
        for outcome, n in counts.most_common():
            print(f"  {outcome:<12} {n:>5}")
        print(f"  queued -> created {replayed['created']}, -> existing {replayed['existing']}")
        print(f"  contacts stored: {len(stored)}, Engage requests: {len(engine.requests())}")

    assert len(results) > DEVICES * 5, "the run was too small to say anything"
    assert [r for r in results if r[2] >= 500] == [], "no 5xx page"
    assert all(outcome in RECOGNISED for _, outcome, _ in results)
    assert [email for email, n in stored.items() if n > 1] == [], "nobody was created twice"
    created = {email for email, outcome, _ in results if outcome in ("created", "existing")}
    assert created - set(stored) == set(), "everyone reported as a member exists"
    # "Nothing was saved, safe to send again" must be true: a person submitted once and told
    # `timeout` is not in Engage. (Regulars are submitted again, so a later try may create them.)
    once = collections.Counter(email for email, _, _ in results)
    told_nothing_saved = {e for e, outcome, _ in results if outcome == "timeout" and once[e] == 1}
    assert told_nothing_saved & set(stored) == set(), "a `timeout` page never hides a create"
    queued = {email for email, outcome, _ in results if outcome == "queued"}
    assert queued - set(stored) == set(), "every kept sign-up reached Engage"
    assert sum(replayed.values()) == len([1 for _, outcome, _ in results if outcome == "queued"])
    assert counts["created"] > 0


def _run_devices(url: str) -> list[tuple[str, str, int]]:
    results: list[tuple[str, str, int]] = []
    lock = threading.Lock()
    regulars = [f"regular{n}@example.com" for n in range(8)]
    deadline = time.monotonic() + SECONDS

    def device(number: int) -> None:
        rng = random.Random(number)
        browser = enrolled_session()
        count = 0
        while time.monotonic() < deadline:
            count += 1
            email = rng.choice(regulars) if rng.random() < 0.3 else f"d{number}n{count}@example.com"
            page = browser.get(url, timeout=30).text
            hidden = hidden_fields(page)
            response = browser.post(url, data={**VALID_FORM, "email": email, **hidden}, timeout=30)
            match = re.search(r'data-outcome="([^"]+)"', response.text)
            with lock:
                results.append((email, match.group(1) if match else "none", response.status_code))

    devices = [threading.Thread(target=device, args=(n,)) for n in range(DEVICES)]
    for d in devices:
        d.start()
    for d in devices:
        d.join()
    return results


def test_one_slow_engage_call_does_not_hold_up_other_devices(engine, production_server):
    """One till's create hangs (until the test lets it go): five other tills sign up meanwhile,
    one after another. The hang is the slow till's (the create Engage is holding is its own),
    and it is still hanging when they are done: no wall clock is raced."""
    url = production_server(ENGAGE_CREATE_TIMEOUT="60")
    hang = engine.inject("hang", on="create", seconds=120)
    slow = threading.Thread(target=_signup, args=(url, "slow@example.com"))
    slow.start()
    wait_until(lambda: engine.requests("/api/v3/contacts", "POST"),
               "the slow till's create never reached Engage", seconds=60)  # fmt: skip
    held = engine.requests("/api/v3/contacts", "POST")
    assert [r.body["email"] for r in held] == ["slow@example.com"]
    outcomes = [_signup(url, f"quick{n}@example.com") for n in range(5)]
    assert slow.is_alive(), "the slow till was still waiting for its create"
    hang.release()
    slow.join(timeout=60)
    assert outcomes == ["created"] * 5


def _signup(url: str, email: str) -> str:
    browser = enrolled_session()
    page = browser.get(url, timeout=30).text
    hidden = hidden_fields(page)
    response = browser.post(url, data={**VALID_FORM, "email": email, **hidden}, timeout=30)
    return re.search(r'data-outcome="([^"]+)"', response.text).group(1)
