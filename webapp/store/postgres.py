"""PostgreSQL: the shared state of a deployment that runs on several machines (DATABASE_URL).

psycopg 3 with its connection pool, sized to the worker's threads (each thread holds at most
one connection at a time, and only for the length of one statement or transaction). The store's
SQL is written with :name parameters, which SQLite takes as they are; here they become psycopg's
%(name)s. Migrations run under a transaction-level advisory lock, so machines that start
together apply each step once.
"""

from __future__ import annotations

import re
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from .base import Result, StateUnavailable, Writes

MIGRATION_LOCK = 0x656E_6761_6765_0001  # pg_advisory_xact_lock key: "engage" + 1
CONNECT_SECONDS = 5  # a new connection, and the wait for a free one in the pool
STATEMENT_MS = 10_000  # no statement of the store takes near this; a stuck one is cut off
OUTAGE_SECONDS = 2  # after no connection within CONNECT_SECONDS: fail at once this long


@lru_cache(maxsize=256)
def _psycopg_sql(sql: str) -> str:
    return re.sub(r"(?<!:):([A-Za-z_]\w*)", r"%(\1)s", sql)


def _fault(exc: BaseException) -> StateUnavailable:
    """A driver error as StateUnavailable: its kind and first line, never the statement's values."""
    if isinstance(exc, PoolTimeout):
        return StateUnavailable(f"PostgreSQL: no connection within {CONNECT_SECONDS} s")
    first = (str(exc).strip().splitlines() or [""])[0]
    first = first.split(" DETAIL:")[0][:200]
    return StateUnavailable(f"PostgreSQL: {type(exc).__name__}: {first}")


class _Connection:
    def __init__(self, conn: psycopg.Connection):
        self.conn = conn

    def run(self, sql: str, params: dict[str, Any] | None = None) -> Result:
        try:
            cursor = self.conn.execute(_psycopg_sql(sql), params or {})
            rows = cursor.fetchall() if cursor.description else []
            return Result(rows, cursor.rowcount)
        except psycopg.Error as exc:
            raise _fault(exc) from exc


class _Script:
    """A durable transaction's statements, each with its values bound by psycopg itself
    (ClientCursor.mogrify: quoted and escaped for this connection, as the server would), sent
    together as one simple query."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.cursor = psycopg.ClientCursor(conn)
        self.statements: list[str] = []

    def run(self, sql: str, params: dict[str, Any] | None = None) -> None:
        try:
            self.statements.append(self.cursor.mogrify(_psycopg_sql(sql), params or {}))
        except psycopg.Error as exc:
            raise _fault(exc) from exc

    def send(self) -> None:
        body = "; ".join(self.statements)
        try:
            self.conn.execute(f"BEGIN; SET LOCAL synchronous_commit = on; {body}; COMMIT")
        except psycopg.Error as exc:
            if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                try:
                    self.conn.rollback()  # the failed BEGIN block: nothing of it stays
                except psycopg.Error:
                    pass  # the pool discards a connection it cannot reset
            raise _fault(exc) from exc


def _configure(conn: psycopg.Connection) -> None:
    conn.execute(f"SET statement_timeout = {STATEMENT_MS}")
    # Tokens, counters and the breaker need not outlive a crash of PostgreSQL itself: what a
    # lost claim could let through, Engage's find-before-create still stops. So their commits
    # do not wait for the disk (PostgreSQL stays consistent; at most the last fraction of a
    # second of such writes is lost in a crash). Data that must be kept (the outbox, consent
    # records) commits durably, in `durable()`.
    conn.execute("SET synchronous_commit = off")


class Outage:
    """What this process knows of PostgreSQL being out of reach, so that only one thread at a
    time waits CONNECT_SECONDS to find out.

    Without it, in an outage every store operation waited its CONNECT_SECONDS for the pool:
    a sign-up that touches the state three times took 15 s to say "unavailable", with one of
    the worker's threads held all along. After a wait that ends with no connection, callers
    are refused at once for OUTAGE_SECONDS; then one of them (the probe) waits again while
    the others are still refused, until a connection comes (any caller's: all is well) or
    the probe times out too (refused again)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.until: float | None = None  # None: no outage known; else refused until then
        # While a probe waits, the others are refused; a probe that never reports (its thread
        # ended otherwise) stops counting after the longest it can wait.
        self.probe_until = float("-inf")

    def admit(self) -> bool:
        """May this caller wait for a connection? (No outage known, or it is the probe.)"""
        if self.until is None:  # the common case: no lock taken
            return True
        with self.lock:
            now = self.clock()
            if self.until is None:
                return True
            if now < self.until or now < self.probe_until:
                return False
            self.probe_until = now + 2 * CONNECT_SECONDS
            return True

    def no_connection(self) -> None:
        with self.lock:
            self.until = self.clock() + OUTAGE_SECONDS
            self.probe_until = float("-inf")

    def connected(self) -> None:
        if self.until is not None:
            with self.lock:
                self.until, self.probe_until = None, float("-inf")


class PostgresEngine:
    name = "postgresql"
    # psycopg keeps a parsed statement only when it has at most 50 parameters
    # (psycopg/_queries.py MAX_CACHED_STATEMENT_PARAMS); a larger one is parsed again, in
    # Python, every time: many rows go in statements of at most this many (store/base.py).
    parameters_kept = 50
    instances: weakref.WeakSet = weakref.WeakSet()  # the tests close what a test left open

    def __init__(self, url: str, *, pool_size: int):
        try:  # one connection first: a wrong address or password is said at once, and why
            psycopg.connect(url, connect_timeout=CONNECT_SECONDS).close()
        except psycopg.Error as exc:
            raise StateUnavailable(f"{_fault(exc)} (DATABASE_URL)") from exc
        self.pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(2, pool_size),
            timeout=CONNECT_SECONDS,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_SECONDS},
            configure=_configure,
            name="engage-signup-state",
            open=False,
        )
        try:
            self.pool.open(wait=True, timeout=CONNECT_SECONDS * 2)
        except (PoolTimeout, psycopg.Error) as exc:
            self.pool.close()
            raise StateUnavailable(
                "PostgreSQL cannot be reached at DATABASE_URL (no connection within "
                f"{CONNECT_SECONDS * 2} s)"
            ) from exc
        self.outage = Outage()
        PostgresEngine.instances.add(self)

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if not self.outage.admit():
            raise StateUnavailable(
                f"PostgreSQL: no connection within {CONNECT_SECONDS} s (moments ago; not asked)"
            )
        try:
            with self.pool.connection() as conn:
                self.outage.connected()
                yield conn
        except PoolTimeout as exc:
            self.outage.no_connection()
            raise _fault(exc) from exc
        except psycopg.Error as exc:
            raise _fault(exc) from exc

    def run(self, sql: str, params: dict[str, Any] | None = None) -> Result:
        with self._connection() as conn:
            return _Connection(conn).run(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[_Connection]:
        with self._connection() as conn:
            with conn.transaction():
                yield _Connection(conn)

    @contextmanager
    def durable(self) -> Iterator[Writes]:
        """A transaction whose commit waits for the disk: for what must outlive a crash of
        PostgreSQL itself (kept sign-ups, consent records).

        Writes only: its statements are written down, and sent when the block ends as one
        query, BEGIN; SET LOCAL synchronous_commit = on; …; COMMIT: one round trip, and none
        of the client's work per statement that pipeline mode did (three inserts, measured:
        72 us of CPU against 263 us, and a shorter wait too). An error in any of them is
        raised then, and nothing of it is committed; an error in the block sends nothing."""
        with self._connection() as conn:
            script = _Script(conn)
            yield Writes(script)
            if script.statements:
                script.send()

    @contextmanager
    def exclusive(self) -> Iterator[_Connection]:
        with self.transaction() as tx:
            tx.run("SELECT pg_advisory_xact_lock(:key)", {"key": MIGRATION_LOCK})
            yield tx

    def close(self) -> None:
        self.pool.close()
