"""The shared state, on SQLite and on a real PostgreSQL: the same semantics on both.

A token is claimed exactly once, a limit counted once and the breaker probed by one caller at a
time, however many threads (standing for workers on several machines) ask at once.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading

import pytest

from tests.conftest import wait_until
from webapp.signup.flow import Breaker, Outcome
from webapp.store import StateUnavailable, open_store
from webapp.store.migrations import LATEST

pytestmark = pytest.mark.shared_state

# The schema on main before versions were kept (webapp/state.py), as a deployment has it.
SCHEMA_BEFORE_VERSIONS = [
    "CREATE TABLE submissions (token TEXT PRIMARY KEY, started REAL NOT NULL, outcome TEXT, "
    "member_number TEXT)",
    "CREATE TABLE hits (key TEXT PRIMARY KEY, window_start REAL NOT NULL, count INTEGER NOT NULL)",
    "CREATE TABLE breaker (name TEXT PRIMARY KEY, failures INTEGER NOT NULL, "
    "open_until REAL NOT NULL)",
]


def at_once(count: int, job) -> list:
    """Run `job(n)` in `count` threads released together; their results in thread order."""
    start = threading.Barrier(count)
    results: list = [None] * count

    def run(n: int) -> None:
        start.wait()
        results[n] = job(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def other_store(state_config, tmp_path):
    """A second store on the same database: another worker, or another machine."""
    return open_store({**state_config, "WEB_THREADS": 4}, instance_path=str(tmp_path))


def test_a_token_is_claimed_exactly_once_however_many_ask_at_once(store, state_config, tmp_path):
    stores = [store, other_store(state_config, tmp_path)]
    claims = at_once(16, lambda n: stores[n % 2].claim_submission("token-" + "x" * 20, "digest"))
    assert claims.count(None) == 1, "one claimed it; the others see the first one's"
    assert all(c is None or c.outcome is None for c in claims)
    store.finish_submission("token-" + "x" * 20, "created", "999000001")
    again = stores[1].claim_submission("token-" + "x" * 20, "digest")
    assert (again.outcome, again.member_number, again.digest) == ("created", "999000001", "digest")
    stores[1].close()


def test_a_limit_is_counted_once_across_workers(store, state_config, tmp_path):
    stores = [store, other_store(state_config, tmp_path)]
    allowed = at_once(40, lambda n: stores[n % 2].hits([("device:a", 25, 60)]))
    assert allowed.count(True) == 25
    assert store.count("device:a", 60) == 40
    stores[1].close()


def test_rate_limit_windows_start_again_after_their_time(store):
    clock = [1000.0]
    store.clock = lambda: clock[0]
    device_a = [("device:a", 2, 60), ("address:shop", 3, 60)]
    device_b = [("device:b", 2, 60), ("address:shop", 3, 60)]
    assert [store.hits(device_a) for _ in range(3)] == [True, True, False]  # device a's third
    assert store.hits(device_b) is False  # device b's first, but the address's fourth
    clock[0] += 59
    assert store.hits([("pin:a", 1, 300), ("address:shop", 9, 60)]) is True  # own window
    clock[0] += 1  # a minute after the first hit: both 60-second windows start again
    assert store.hits(device_a) is True
    assert store.hits([("pin:a", 1, 300)]) is False  # its five minutes are not over
    assert store.hit("pin-failures", 3600) == 1 and store.hit("pin-failures", 3600) == 2


def test_one_probe_at_a_time_across_workers_when_the_cool_down_ends(store, state_config, tmp_path):
    stores = [store, other_store(state_config, tmp_path)]
    clock = [1000.0]
    for s in stores:
        s.clock = lambda: clock[0]
    for _ in range(3):
        store.breaker_record("engage", ok=False, threshold=3, cooldown=30)
    assert not stores[1].breaker_allows("engage", probe_seconds=30), "open on the other too"
    clock[0] += 31
    probes = at_once(12, lambda n: stores[n % 2].breaker_allows("engage", probe_seconds=30))
    assert probes.count(True) == 1
    stores[1].close()


def test_the_breaker_counts_failures_in_a_row_within_its_window(store):
    clock = [1000.0]
    store.clock = lambda: clock[0]
    breaker = Breaker(store, threshold=3, cooldown=30, window=60)
    failed, created = Outcome("unavailable"), Outcome("created")
    for outcome in (failed, failed, created, failed, failed):
        assert breaker.allows()
        breaker.record(outcome)
    assert not store.breaker_is_open("engage"), "a success started the count again"
    clock[0] += 90  # a quiet spell: the two failures before it are forgotten
    breaker.allows()
    breaker.record(Outcome("timeout"))
    assert not store.breaker_is_open("engage"), "one timeout after a quiet spell stops no till"
    for _ in range(2):
        breaker.allows()
        breaker.record(Outcome("timeout"))
    assert store.breaker_is_open("engage") and not breaker.allows()


def test_a_429_opens_the_breaker_at_once(store):
    breaker = Breaker(store, threshold=3, cooldown=30)
    breaker.allows()
    breaker.record(Outcome("unavailable", cause="RateLimited"))
    assert store.breaker_is_open("engage")


def test_migrations_bring_todays_schema_up_once(state_engine, state_config, tmp_path):
    """A deployment's database made by the code before versions were kept moves to the latest
    schema, keeps its rows, and a second start changes nothing."""
    if state_engine == "sqlite":
        with sqlite3.connect(state_config["STATE_DB"]) as db:
            for statement in SCHEMA_BEFORE_VERSIONS:
                db.execute(statement)
            db.execute("INSERT INTO submissions VALUES ('kept-token', 1.0, 'created', '7')")
    else:
        import psycopg

        with psycopg.connect(state_config["DATABASE_URL"], autocommit=True) as conn:
            for statement in SCHEMA_BEFORE_VERSIONS:
                conn.execute(statement.replace("REAL", "DOUBLE PRECISION"))
            conn.execute("INSERT INTO submissions VALUES ('kept-token', 1.0, 'created', '7')")
    store = other_store(state_config, tmp_path)
    assert store.schema_version() == LATEST
    kept = store.submission("kept-token")
    assert (kept.outcome, kept.member_number, kept.digest) == ("created", "7", None)
    assert store.migrate() == [], "nothing is applied twice"
    store.close()


def test_machines_starting_together_apply_each_migration_once(state_config, tmp_path):
    """Six processes open the same empty database at once (PostgreSQL: under an advisory
    lock; SQLite: under its write lock): one applies the steps, the others find them done.

    What this test is for: that starting many machines together ends with one schema, each
    step applied once, and every process reporting the latest version. It is NOT the guard of
    the lock itself: whether the processes' start-ups overlap is left to timing, so a lock that
    never waits is caught here only some of the time. The guard is
    tests/ops/test_deploy.py::test_migrations_wait_for_the_advisory_lock_another_machine_holds,
    which forces the overlap and catches such a lock every time."""
    script = (
        "import json, sys\n"
        "from webapp.store import open_store\n"
        "config = json.loads(sys.argv[1])\n"
        "store = open_store(config, instance_path=sys.argv[2])\n"
        "print(json.dumps([store.schema_version(), store.applied]))\n"
    )
    import json

    config = json.dumps({**state_config, "WEB_THREADS": 2})
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script, config, str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    results = [run.communicate(timeout=60) for run in runs]
    assert [r.returncode for r in runs] == [0] * 6, [e for _, e in results]
    reports = [json.loads(out) for out, _ in results]
    assert [version for version, _ in reports] == [LATEST] * 6
    applied = [steps for _, steps in reports if steps]
    assert applied == [list(range(1, LATEST + 1))], "one process applied every step"
    store = other_store(state_config, tmp_path)
    assert store.engine.run("SELECT count(*) FROM schema_version").rows[0][0] == 1
    store.close()


def test_the_state_holds_no_personal_data(store):
    """What a signup writes: a random token, a keyed digest, an outcome, Engage's member number,
    counters keyed by device id and address."""
    store.claim_submission("tok-" + "a" * 20, "0123456789abcdef0123456789abcdef")
    store.finish_submission("tok-" + "a" * 20, "created", "999000001")
    store.hits([("device:abc", 5, 60)])
    store.breaker_record("engage", ok=False, threshold=3, cooldown=30)
    tables = ["submissions", "hits", "breaker", "health", "schema_version"]
    text = " ".join(
        str(row) for table in tables for row in store.engine.run(f"SELECT * FROM {table}").rows
    )
    assert "@" not in text and "+46" not in text


def test_an_unreachable_database_is_state_unavailable(state_engine, tmp_path):
    from tests.components import free_port

    if state_engine == "sqlite":
        config = {"STATE_DB": str(tmp_path / "file-not-folder"), "DATABASE_URL": ""}
        (tmp_path / "file-not-folder").mkdir()  # a folder where the file should be
    else:
        config = {"DATABASE_URL": f"postgresql://nobody@127.0.0.1:{free_port()}/none"}
    with pytest.raises(StateUnavailable):
        open_store({**config, "WEB_THREADS": 2}, instance_path=str(tmp_path))


def test_the_end_of_a_sign_up_is_written_all_or_nothing(store):
    """Outcome, consent delivery and the manager's count go in one durable transaction (on
    PostgreSQL its statements travel together, as one query with their values bound by
    psycopg): if any part is refused, none is kept, the fault is StateUnavailable, and the next
    sign-up is written in full, a value full of quotes and semicolons exactly as it was."""
    import time

    token = "tok-" + "e" * 20
    assert store.claim_submission(token, "digest") is None
    delivery = {"submission": token, "at": time.time(), "state": "sent", "contact_id": "c-1"}
    event = {"store": "101", "device": "d-1", "mode": "staff", "outcome": "created", "cause": None}
    with pytest.raises(StateUnavailable):  # the last statement fails: a count with no store
        store.finish_signup(token, "created", "999000001", delivery=delivery,
                            event={**event, "store": None})  # fmt: skip
    assert store.submission(token).outcome is None, "no outcome without its delivery"
    assert store.consent_deliveries([token]) == []
    assert store.event_counts(None, 0) == []

    nasty = "c-1'); DROP TABLE events; -- \\ %(at)s $$ ;"
    store.finish_signup(token, "created", "999000001", delivery={**delivery, "contact_id": nasty},
                        event=event)  # fmt: skip
    assert store.submission(token).outcome == "created"
    assert [d["contact_id"] for d in store.consent_deliveries([token])] == [nasty]
    assert [e["count"] for e in store.event_counts(None, 0)] == [1]


def test_a_durable_transaction_refuses_a_statement_that_reads(store):
    """PostgreSQL sends a durable transaction's statements without waiting for answers: a read
    there would quietly see nothing, so it is refused on SQLite just the same."""
    for sql in ("SELECT token FROM submissions", "  show synchronous_commit",
                "INSERT INTO health (name, at) VALUES ('x', 1) RETURNING name"):  # fmt: skip
        with pytest.raises(ValueError, match="writes only"), store.engine.durable() as tx:
            tx.run(sql)
    assert store.engine.run("SELECT name FROM health WHERE name = 'x'").rows == []


def test_a_pairing_code_pairs_one_till_however_many_type_it_at_once(store, state_config, tmp_path):
    stores = [store, other_store(state_config, tmp_path)]
    store.display_code("display-1", "101", "482913", 120)
    store.display_code("display-mine", "101", "111111", 120)
    assert store.display_pair("101", "111111", "till-0") == "display-mine"
    tills = at_once(16, lambda n: stores[n % 2].display_pair("101", "482913", f"till-{n}"))
    winners = [n for n, got in enumerate(tills) if got is not None]
    assert len(winners) == 1, "one till has the display; every other was told the code is gone"
    assert store.display_of_till(f"till-{winners[0]}") == "display-1"
    mine = "display-1" if winners[0] == 0 else "display-mine"
    assert store.display_of_till("till-0") == mine, "a till that lost keeps the pair it had"
    stores[1].close()


def test_a_till_that_types_a_code_taken_meanwhile_is_told_it_is_gone(pg_database, tmp_path):
    """The mechanism behind the test above, without relying on threads meeting: another
    till's pairing holds the display's row, uncommitted, while this one types the same code.
    PostgreSQL only: SQLite lets one writer in at a time (BEGIN IMMEDIATE), so cannot
    interleave them."""
    state_config = {"DATABASE_URL": pg_database}
    store = other_store(state_config, tmp_path)
    store.display_code("display-1", "101", "482913", 120)
    other, watcher = other_store(state_config, tmp_path), other_store(state_config, tmp_path)
    answer: list = []
    with other.engine.transaction() as tx:  # the other till's pairing, not yet committed
        taken = tx.run(
            "UPDATE displays SET till = 'till-a', code = NULL, code_expires = NULL "
            "WHERE display = 'display-1' RETURNING display"
        ).rows
        assert taken == [("display-1",)]
        mine = threading.Thread(target=lambda: answer.append(
            store.display_pair("101", "482913", "till-b")))  # fmt: skip
        mine.start()
        # This till's pairing waits on the row the other holds (asked of PostgreSQL, not timed).
        wait_until(
            lambda: (
                watcher.engine.run(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'transactionid'"
                ).rows[0][0]
                == 1
            ),  # fmt: skip
            "the second pairing to wait for the first",
        )
    mine.join()
    assert answer == [None]
    assert store.display_of_till("till-a") == "display-1"
    assert store.display_of_till("till-b") is None
    for each in (store, other, watcher):
        each.close()


def test_in_an_outage_one_caller_at_a_time_waits_for_postgresql():
    """webapp/store/postgres.py Outage, on a fake clock: after a wait that found no connection,
    callers are refused at once for OUTAGE_SECONDS; then one probe waits while the others are
    still refused; a connection (anyone's) ends it; a probe that never reports stops counting."""
    from webapp.store.postgres import CONNECT_SECONDS, OUTAGE_SECONDS, Outage

    now = [100.0]
    outage = Outage(clock=lambda: now[0])
    assert all(outage.admit() for _ in range(3)), "no outage known: everyone may wait"
    outage.no_connection()
    assert not outage.admit()
    now[0] += OUTAGE_SECONDS - 0.01
    assert not outage.admit()
    now[0] += 0.01
    assert outage.admit(), "the probe"
    assert not outage.admit() and not outage.admit(), "the others, while it waits"
    now[0] += CONNECT_SECONDS
    outage.no_connection()  # the probe found nothing either
    assert not outage.admit()
    now[0] += OUTAGE_SECONDS
    assert outage.admit()
    outage.connected()  # it is back
    assert all(outage.admit() for _ in range(3))
    outage.no_connection()
    now[0] += OUTAGE_SECONDS
    assert outage.admit(), "a probe that will never report"
    now[0] += 2 * CONNECT_SECONDS - 0.01
    assert not outage.admit()
    now[0] += 0.01
    assert outage.admit(), "after the longest a probe can wait, another may"
