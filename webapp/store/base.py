"""The operations on the shared state, in SQL that SQLite and PostgreSQL both run."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from .migrations import MIGRATIONS

SUBMISSION_DAYS = 1  # how long a used token is remembered
# A kept sign-up's last_error while no machine that tried could open it (its OUTBOX_KEYS).
UNOPENED = "KeyNotInOutboxKeys"


class _NotPaired(Exception):
    """No display took the code: the pairing's transaction is rolled back."""


class StateUnavailable(RuntimeError):
    """The shared state database cannot be used now (disk full, file gone, server down...).

    The message names the kind of fault, never a value: no token, key or personal data."""


@dataclass(frozen=True)
class Submission:
    outcome: str | None  # None while the first request is still talking to Engage
    member_number: str | None
    digest: str | None = None  # keyed hash of what was submitted under the token


@dataclass(frozen=True)
class Result:
    rows: list[tuple]
    rowcount: int


class Runner(Protocol):
    def run(self, sql: str, params: dict[str, Any] | None = None) -> Result: ...


class Writes:
    """The runner of a durable transaction: statements that write, whose results nobody reads
    (PostgreSQL sends them together, before any answer is back). A statement that reads is
    refused on every engine, so code that works on SQLite cannot go wrong on PostgreSQL."""

    READS = re.compile(r"\s*(SELECT|SHOW|WITH|VALUES)\b|.*\bRETURNING\b", re.I | re.S)

    def __init__(self, runner: Runner):
        self._runner = runner

    def run(self, sql: str, params: dict[str, Any] | None = None) -> None:
        if self.READS.match(sql):
            raise ValueError("a durable transaction takes writes only")
        self._runner.run(sql, params)


class Engine(Runner, Protocol):
    """What a database engine gives the store. Every driver error becomes StateUnavailable."""

    name: str
    # The most parameters a statement may have for the driver to keep its parse (None: no
    # limit): inserts of many rows are split to stay within it.
    parameters_kept: int | None

    def transaction(self) -> AbstractContextManager[Runner]: ...

    def exclusive(self) -> AbstractContextManager[Runner]:
        """A transaction that one process at a time holds, across every machine: migrations."""

    def durable(self) -> AbstractContextManager[Writes]:
        """A transaction of writes whose commit is on disk before it returns."""

    def close(self) -> None: ...


# One failed signup: count it within the window, and open the breaker (until :until) when the
# count reaches the threshold, or at once (429). An open breaker stays open.
BREAKER_FAILURE = """
INSERT INTO breaker (name, failures, open_until, window_start)
VALUES (:name, 1, CASE WHEN :at_once OR 1 >= :threshold THEN :until ELSE 0 END, :now)
ON CONFLICT (name) DO UPDATE SET
    failures = CASE WHEN breaker.window_start <= :since THEN 1 ELSE breaker.failures + 1 END,
    window_start = CASE WHEN breaker.window_start <= :since THEN :now
                        ELSE breaker.window_start END,
    open_until = CASE
        WHEN :at_once OR (CASE WHEN breaker.window_start <= :since THEN 1
                               ELSE breaker.failures + 1 END) >= :threshold THEN :until
        ELSE breaker.open_until END
"""

FINISH = "UPDATE submissions SET outcome = :outcome, member_number = :number WHERE token = :token"
DELIVERY = (
    "INSERT INTO consent_deliveries (submission, at, state, contact_id, outbox_ref) "
    "VALUES (:submission, :at, :state, :contact_id, :outbox_ref)"
)
EVENT = (
    "INSERT INTO events (at, hour, store, device, mode, outcome, cause, replay) VALUES "
    "(:at, :hour, :store, :device, :mode, :outcome, :cause, :replay)"
)


def _rows(sql: str, columns: tuple[str, ...], rows: list[dict]) -> tuple[str, dict[str, Any]]:
    """One INSERT of many rows: `sql` with {rows} made into (:col_0, ...), (:col_1, ...)."""
    values = ", ".join(
        "(" + ", ".join(f":{column}_{n}" for column in columns) + ")" for n in range(len(rows))
    )
    params = {f"{column}_{n}": row[column] for n, row in enumerate(rows) for column in columns}
    return sql.format(rows=values), params


def _inserts(sql: str, columns: tuple[str, ...], rows: list[dict], most: int | None):
    """_rows() in statements of at most `most` parameters each (None: all in one): the engine's
    `parameters_kept`, above which its driver parses a statement again every time."""
    per = max(1, most // len(columns)) if most else len(rows) or 1
    for start in range(0, len(rows), per):
        yield _rows(sql, columns, rows[start : start + per])


# One hit on each of a few fixed-window counters of the same window, in one statement; a window
# that has ended starts again at this hit.
HITS = """
INSERT INTO hits (key, window_start, count) VALUES {rows}
ON CONFLICT (key) DO UPDATE SET
    count = CASE WHEN hits.window_start <= :since THEN 1 ELSE hits.count + 1 END,
    window_start = CASE WHEN hits.window_start <= :since THEN :now ELSE hits.window_start END
RETURNING key, count
"""


def _hits_sql(count: int) -> str:
    return HITS.format(rows=", ".join(f"(:key{n}, :now, 1)" for n in range(count)))


def _timed(method):
    """Report the time the operation took to the store's observer (Server-Timing's state)."""

    @functools.wraps(method)
    def timed(self, *args, **kwargs):
        if self.observer is None:
            return method(self, *args, **kwargs)
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            self.observer(time.perf_counter() - started)

    return timed


class Store:
    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time):
        self.engine = engine
        self.clock = clock
        self.observer: Callable[[float], None] | None = None  # seconds of each operation
        self._local = threading.local()
        if hasattr(engine, "on_new_database"):
            engine.on_new_database = self.migrate  # SQLite: a deleted file is made again

    @property
    def kind(self) -> str:
        return self.engine.name

    def close(self) -> None:
        self.engine.close()

    # --- schema -----------------------------------------------------------------------------------
    def migrate(self) -> list[int]:
        """Apply the steps this database has not had yet; returns their numbers. Safe when
        several processes on several machines start together: one applies, the others wait."""
        applied = []
        with self.engine.exclusive() as tx:
            tx.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            rows = tx.run("SELECT version FROM schema_version").rows
            if not rows:
                tx.run("INSERT INTO schema_version (version) VALUES (0)")
            current = rows[0][0] if rows else 0
            for number, _about, statements in MIGRATIONS:
                if number <= current:
                    continue
                for statement in statements:
                    tx.run(statement)
                tx.run("UPDATE schema_version SET version = :v", {"v": number})
                applied.append(number)
        return applied

    def schema_version(self) -> int:
        return self.engine.run("SELECT version FROM schema_version").rows[0][0]

    @_timed
    def probe(self) -> None:
        """Write one small row: raises StateUnavailable when the database cannot take writes."""
        self.engine.run(
            "INSERT INTO health (name, at) VALUES ('probe', :now) "
            "ON CONFLICT (name) DO UPDATE SET at = excluded.at",
            {"now": self.clock()},
        )

    # --- one-time submission tokens ---------------------------------------------------------------
    @_timed
    def claim_submission(self, token: str, digest: str | None = None) -> Submission | None:
        """Claim `token` for this request. None: it is ours. Otherwise what the first one got."""
        now = self.clock()
        claimed = self.engine.run(
            "INSERT INTO submissions (token, started, digest) VALUES (:token, :now, :digest) "
            "ON CONFLICT (token) DO NOTHING RETURNING token",
            {"token": token, "now": now, "digest": digest},
        ).rows
        if claimed:
            if int(now) % 97 == 0:  # now and then, forget old tokens
                self.engine.run(
                    "DELETE FROM submissions WHERE started < :before",
                    {"before": now - SUBMISSION_DAYS * 86400},
                )
            return None
        return self._submission(token) or Submission(None, None, None)

    @_timed
    def finish_submission(self, token: str, outcome: str, member_number: str | None) -> None:
        self.engine.run(FINISH, {"outcome": outcome, "number": member_number, "token": token})

    @_timed
    def submission(self, token: str) -> Submission | None:
        return self._submission(token)

    def _submission(self, token: str) -> Submission | None:
        rows = self.engine.run(
            "SELECT outcome, member_number, digest FROM submissions WHERE token = :token",
            {"token": token},
        ).rows
        return Submission(*rows[0]) if rows else None

    # --- rate limits ------------------------------------------------------------------------------
    @_timed
    def hit(self, key: str, window: float) -> int:
        """Count one hit on `key`; returns the hits in its current window, this one included."""
        return self._count_hits([key], window)[key]

    @_timed
    def hits(self, limits: list[tuple[str, int, float]]) -> bool:
        """Count one hit for each (key, limit, window seconds); False if any is over its limit.
        Every key is counted, whatever the others say: one statement per distinct window."""
        windows: dict[float, list[str]] = {}
        for key, _limit, window in limits:
            windows.setdefault(window, []).append(key)
        counts: dict[str, int] = {}
        for window, keys in windows.items():
            counts.update(self._count_hits(keys, window))
        return all(counts[key] <= limit for key, limit, _window in limits)

    def _count_hits(self, keys: list[str], window: float) -> dict[str, int]:
        now = self.clock()
        params = {f"key{n}": key for n, key in enumerate(keys)}
        params.update(now=now, since=now - window)
        return dict(self.engine.run(_hits_sql(len(keys)), params).rows)

    @_timed
    def count(self, key: str, window: float) -> int:
        """Hits counted for `key` in its current window (0 when it has ended)."""
        rows = self.engine.run(
            "SELECT count FROM hits WHERE key = :key AND window_start > :since",
            {"key": key, "since": self.clock() - window},
        ).rows
        return rows[0][0] if rows else 0

    # --- the outbox -------------------------------------------------------------------------------
    # Only the payload holds personal data, and only as ciphertext (webapp/signup/outbox.py);
    # every other column is about the item: where it came from, when, how often tried, what
    # Engage said.
    OUTBOX_COLUMNS = (
        "id, store, device, mode, created, next_attempt, attempts, state, last_error, submission"
    )

    @_timed
    def outbox_add(self, item: dict[str, Any]) -> None:
        """Keep an item, durably: the person was told it will be sent."""
        with self.engine.durable() as tx:
            tx.run(
                "INSERT INTO outbox (id, store, device, mode, created, next_attempt, attempts, "
                "state, payload, submission, last_error) VALUES (:id, :store, :device, :mode, "
                ":created, :next_attempt, 0, :state, :payload, :submission, :last_error)",
                {"submission": None, "state": "waiting", "last_error": None, **item},
            )

    def outbox_claim(self, lease_seconds: float, limit: int = 1) -> list[dict[str, Any]]:
        """Claim up to `limit` waiting items that are due, for `lease_seconds`: no other worker,
        on any machine, gets them meanwhile. A worker that dies leaves its lease to run out.
        PostgreSQL skips rows another transaction is claiming (FOR UPDATE SKIP LOCKED); SQLite
        lets one writer at a time in, which has the same effect."""
        now = self.clock()
        lock = " FOR UPDATE SKIP LOCKED" if self.engine.name == "postgresql" else ""
        with self.engine.transaction() as tx:
            rows = tx.run(
                "UPDATE outbox SET lease_until = :until, attempts = attempts + 1 WHERE id IN ("
                "SELECT id FROM outbox WHERE state = 'waiting' AND next_attempt <= :now "
                f"AND lease_until <= :now ORDER BY next_attempt LIMIT :limit{lock}) "
                f"RETURNING {self.OUTBOX_COLUMNS}, payload",
                {"until": now + lease_seconds, "now": now, "limit": limit},
            ).rows
        return [self._outbox_row(row) for row in rows]

    def outbox_done(self, item_id: str) -> None:
        """The contact is in Engage: the item, personal data and all, is gone at once."""
        self.engine.run("DELETE FROM outbox WHERE id = :id", {"id": item_id})

    def outbox_later(self, item_id: str, at: float, error: str | None) -> None:
        self.engine.run(
            "UPDATE outbox SET next_attempt = :at, lease_until = 0, last_error = :error "
            "WHERE id = :id",
            {"id": item_id, "at": at, "error": error},
        )

    def outbox_attention(self, item_id: str, error: str | None) -> None:
        """Engage answered clearly and no retry will change it: kept for a person."""
        self.engine.run(
            "UPDATE outbox SET state = 'attention', lease_until = 0, last_error = :error "
            "WHERE id = :id",
            {"id": item_id, "error": error},
        )

    def outbox_unopened(self, item_id: str, at: float, error: str) -> None:
        """This machine could not open the item: not a try (its attempts stay as they were),
        waiting for a machine that can, due again at `at`."""
        self.engine.run(
            "UPDATE outbox SET next_attempt = :at, lease_until = 0, last_error = :error, "
            "attempts = attempts - 1 WHERE id = :id",
            {"id": item_id, "at": at, "error": error},
        )

    def outbox_payloads(self, limit: int) -> list[str]:
        """The ciphertexts of the newest `limit` items (to see whether keys open them)."""
        return [
            row[0]
            for row in self.engine.run(
                "SELECT payload FROM outbox ORDER BY created DESC LIMIT :limit", {"limit": limit}
            ).rows
        ]

    def outbox_retry(self, item_id: str | None = None) -> int:
        """Make one item (or every item) due now, waiting again; returns how many. An item a
        worker holds keeps its lease: nobody else takes it while that worker is sending it."""
        where = "WHERE id = :id" if item_id else ""
        return self.engine.run(
            f"UPDATE outbox SET state = 'waiting', next_attempt = :now {where}",
            {"id": item_id, "now": self.clock()},
        ).rowcount

    def outbox_discard(self, item_id: str) -> int:
        return self.engine.run("DELETE FROM outbox WHERE id = :id", {"id": item_id}).rowcount

    def outbox_expire(self, before: float) -> list[dict[str, Any]]:
        """Delete the items created before `before`; returns what they were (no payload)."""
        with self.engine.transaction() as tx:
            rows = tx.run(
                f"DELETE FROM outbox WHERE created < :before RETURNING {self.OUTBOX_COLUMNS}",
                {"before": before},
            ).rows
        return [self._outbox_row(row) for row in rows]

    def outbox_items(self, item_id: str | None = None, *, payload: bool = False) -> list[dict]:
        where = "WHERE id = :id" if item_id else ""
        columns = self.OUTBOX_COLUMNS + (", payload" if payload else "")
        rows = self.engine.run(
            f"SELECT {columns} FROM outbox {where} ORDER BY created", {"id": item_id}
        ).rows
        return [self._outbox_row(row) for row in rows]

    def outbox_set_payload(self, item_id: str, payload: str) -> None:
        self.engine.run(
            "UPDATE outbox SET payload = :payload WHERE id = :id",
            {"id": item_id, "payload": payload},
        )

    def outbox_summary(self) -> dict[str, Any]:
        """Items per state and per last error, and when the oldest waiting one was kept: one
        statement, for the metrics."""
        rows = self.engine.run(
            "SELECT state, last_error, count(*), min(created) FROM outbox "
            "GROUP BY state, last_error"
        ).rows
        states: dict[str, int] = {}
        by_error: dict[str, int] = {}
        oldest = None
        for state, error, count, first in rows:
            states[state] = states.get(state, 0) + count
            if error:
                by_error[error] = by_error.get(error, 0) + count
            if state == "waiting" and (oldest is None or first < oldest):
                oldest = first
        return {"states": states, "by_error": by_error, "oldest": oldest}

    def outbox_count(self) -> int:
        return self.engine.run("SELECT count(*) FROM outbox").rows[0][0]

    def _outbox_row(self, row) -> dict[str, Any]:
        names = [n.strip() for n in self.OUTBOX_COLUMNS.split(",")]
        item = dict(zip(names, row, strict=False))
        if len(row) > len(names):
            item["payload"] = row[len(names)]
        return item

    # --- consent records --------------------------------------------------------------------------
    # Append-only: a text is written once (its hash is its key), a record once per decision, a
    # delivery once per step of its way to Engage. Nothing here is updated.
    @_timed
    def consent_record(self, texts: list[dict], records: list[dict]) -> None:
        """A few statements (_inserts), however many checkboxes, in one durable transaction: on
        PostgreSQL all in one round trip."""
        most = self.engine.parameters_kept
        with self.engine.durable() as tx:
            for statement in _inserts(
                "INSERT INTO consent_texts (hash, kind, item, language, source, body, "
                "first_shown) VALUES {rows} ON CONFLICT (hash) DO NOTHING",
                ("hash", "kind", "item", "language", "source", "body", "at"), texts, most,
            ):  # fmt: skip
                tx.run(*statement)
            for statement in _inserts(
                "INSERT INTO consent_records (id, at, submission, kind, item, given, "
                "text_hash, language, source, store, device, mode, app_version) VALUES {rows}",
                ("id", "at", "submission", "kind", "item", "given", "text_hash", "language",
                 "source", "store", "device", "mode", "app_version"), records, most,
            ):  # fmt: skip
                tx.run(*statement)

    @_timed
    def consent_delivery(self, delivery: dict) -> None:
        with self.engine.durable() as tx:
            tx.run(DELIVERY, {"contact_id": None, "outbox_ref": None, **delivery})

    @_timed
    def finish_signup(
        self, token: str, outcome: str, member_number: str | None, *, delivery: dict, event: dict
    ) -> None:
        """The end of a sign-up, in one durable transaction: its outcome for a repeat of the
        same form (finish_submission), its way to Engage beside its consent records
        (consent_delivery), and its count for the manager's view (event)."""
        values = self._event_values(**event)
        with self.engine.durable() as tx:
            tx.run(FINISH, {"outcome": outcome, "number": member_number, "token": token})
            tx.run(DELIVERY, {"contact_id": None, "outbox_ref": None, **delivery})
            self._add_event(tx, values)

    RECORD_COLUMNS = (
        "r.id, r.at, r.submission, r.kind, r.item, r.given, r.text_hash, r.language, r.source, "
        "r.store, r.device, r.mode, r.app_version, t.body"
    )

    def consent_records(
        self,
        *,
        submissions: list[str] | None = None,
        store: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        """Records with the full text each points to, oldest first."""
        where, params = ["1 = 1"], {}
        if submissions is not None:
            names = [f":s{n}" for n in range(len(submissions))] or ["NULL"]
            where.append(f"r.submission IN ({', '.join(names)})")
            params.update({f"s{n}": value for n, value in enumerate(submissions)})
        if store is not None:
            where.append("r.store = :store")
            params["store"] = store
        if since is not None:
            where.append("r.at >= :since")
            params["since"] = since
        if until is not None:
            where.append("r.at < :until")
            params["until"] = until
        rows = self.engine.run(
            f"SELECT {self.RECORD_COLUMNS} FROM consent_records r "
            "JOIN consent_texts t ON t.hash = r.text_hash "
            f"WHERE {' AND '.join(where)} ORDER BY r.at, r.kind, r.item",
            params,
        ).rows
        names = [c.strip().split(".")[1] for c in self.RECORD_COLUMNS.split(",")]
        return [dict(zip(names, row, strict=True)) for row in rows]

    def consent_deliveries(self, submissions: list[str]) -> list[dict[str, Any]]:
        if not submissions:
            return []
        names = [f":s{n}" for n in range(len(submissions))]
        rows = self.engine.run(
            "SELECT submission, at, state, contact_id, outbox_ref FROM consent_deliveries "
            f"WHERE submission IN ({', '.join(names)}) ORDER BY at",
            {f"s{n}": value for n, value in enumerate(submissions)},
        ).rows
        keys = ("submission", "at", "state", "contact_id", "outbox_ref")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def consent_submissions_of(self, contact_id: str) -> list[str]:
        rows = self.engine.run(
            "SELECT DISTINCT submission FROM consent_deliveries WHERE contact_id = :id",
            {"id": contact_id},
        ).rows
        return [row[0] for row in rows]

    def consent_expire(self, before: float) -> int:
        """Delete records older than `before`, their deliveries, and texts no record uses."""
        with self.engine.transaction() as tx:
            old = [
                row[0]
                for row in tx.run(
                    "SELECT DISTINCT submission FROM consent_records WHERE at < :before",
                    {"before": before},
                ).rows
            ]
            count = tx.run(
                "DELETE FROM consent_records WHERE at < :before", {"before": before}
            ).rowcount
            for submission in old:
                tx.run(
                    "DELETE FROM consent_deliveries WHERE submission = :s AND NOT EXISTS "
                    "(SELECT 1 FROM consent_records WHERE submission = :s)",
                    {"s": submission},
                )
            tx.run(
                "DELETE FROM consent_texts WHERE NOT EXISTS "
                "(SELECT 1 FROM consent_records r WHERE r.text_hash = consent_texts.hash)"
            )
        return count

    # --- sign-up events (the manager's figures) ---------------------------------------------------
    EVENT_DAYS = 31  # the manager's view looks 30 days back

    def event(
        self, *, store: str, device: str, mode: str, outcome: str, cause: str | None, replay=False
    ) -> None:
        values = self._event_values(
            store=store, device=device, mode=mode, outcome=outcome, cause=cause, replay=replay
        )
        self._add_event(self.engine, values)  # two statements at most, each on its own

    def _event_values(
        self, *, store: str, device: str, mode: str, outcome: str, cause: str | None, replay=False
    ) -> dict[str, Any]:
        now = self.clock()
        return {
            "at": now, "hour": int(now // 3600), "store": store, "device": device or "-",
            "mode": mode, "outcome": outcome, "cause": cause, "replay": int(replay),
        }  # fmt: skip

    def _add_event(self, runner: Runner | Writes, values: dict[str, Any]) -> None:
        runner.run(EVENT, values)
        if int(values["at"]) % 97 == 0:  # now and then, forget what the view no longer shows
            runner.run("DELETE FROM events WHERE at < :before",
                   {"before": values["at"] - self.EVENT_DAYS * 86400})  # fmt: skip

    def event_counts(self, stores: list[str] | None, since: float) -> list[dict[str, Any]]:
        """Events since `since`, counted per hour, store, device, mode, outcome, cause."""
        where, params = ["at >= :since"], {"since": since}
        if stores is not None:
            names = [f":s{n}" for n in range(len(stores))] or ["NULL"]
            where.append(f"store IN ({', '.join(names)})")
            params.update({f"s{n}": store for n, store in enumerate(stores)})
        rows = self.engine.run(
            "SELECT hour, store, device, mode, outcome, cause, replay, count(*) FROM events "
            f"WHERE {' AND '.join(where)} "
            "GROUP BY hour, store, device, mode, outcome, cause, replay ORDER BY hour",
            params,
        ).rows
        keys = ("hour", "store", "device", "mode", "outcome", "cause", "replay", "count")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    # --- public screens' answer times (webapp/signup/padding.py) ----------------------------------
    def timing_sample(self, name: str, seconds: float) -> None:
        """Fold one duration into the shared estimate `name` (a moving average)."""
        self.engine.run(
            "INSERT INTO timings (name, seconds, at) VALUES (:name, :s, :now) "
            "ON CONFLICT (name) DO UPDATE SET seconds = timings.seconds * 0.8 + :s * 0.2, "
            "at = :now",
            {"name": name, "s": seconds, "now": self.clock()},
        )

    def timing(self, name: str) -> float | None:
        rows = self.engine.run("SELECT seconds FROM timings WHERE name = :name", {"name": name})
        return rows.rows[0][0] if rows.rows else None

    # --- kiosk entries: what a POST sent, for the very next page ----------------------------------
    @_timed
    def entry_put(self, entry_id: str, sealed: str, seconds: float) -> None:
        now = self.clock()
        self.engine.run(
            "INSERT INTO entries (id, sealed, expires) VALUES (:id, :sealed, :expires)",
            {"id": entry_id, "sealed": sealed, "expires": now + seconds},
        )
        if int(now) % 17 == 0:  # now and then, forget entries nobody came back for
            self.engine.run("DELETE FROM entries WHERE expires < :now", {"now": now})

    @_timed
    def entry_take(self, entry_id: str) -> str | None:
        """The sealed entry, once: it is deleted as it is read."""
        rows = self.engine.run(
            "DELETE FROM entries WHERE id = :id AND expires >= :now RETURNING sealed",
            {"id": entry_id, "now": self.clock()},
        ).rows
        return rows[0][0] if rows else None

    # --- the cashier's look-ups ------------------------------------------------------------------
    @_timed
    def lookup_put(self, lookup_id: str, sealed: str, seconds: float) -> None:
        """Remember a look-up for `seconds`; a doubt already noted for it stays."""
        now = self.clock()
        with self.engine.transaction() as tx:
            if int(now) % 13 == 0:  # now and then, forget what has run out
                tx.run("DELETE FROM lookups WHERE expires < :now", {"now": now})
            tx.run(
                "INSERT INTO lookups (id, sealed, at, doubt, expires) "
                "VALUES (:id, :sealed, :now, 0, :expires) ON CONFLICT (id) DO UPDATE SET "
                "sealed = excluded.sealed, at = excluded.at, "
                "expires = CASE WHEN lookups.expires > excluded.expires "
                "THEN lookups.expires ELSE excluded.expires END",
                {"id": lookup_id, "sealed": sealed, "now": now, "expires": now + seconds},
            )

    @_timed
    def lookup(self, lookup_id: str) -> dict[str, Any] | None:
        """{sealed, age (seconds since Engage was asked), doubt}, or None."""
        now = self.clock()
        rows = self.engine.run(
            "SELECT sealed, at, doubt FROM lookups WHERE id = :id AND expires >= :now",
            {"id": lookup_id, "now": now},
        ).rows
        if not rows:
            return None
        sealed, at, doubt = rows[0]
        return {"sealed": sealed, "age": now - at, "doubt": bool(doubt)}

    @_timed
    def lookup_doubt(self, lookup_id: str, seconds: float) -> None:
        """A create of this key ended in doubt: what was looked up before stands in for no find."""
        now = self.clock()
        self.engine.run(
            "INSERT INTO lookups (id, sealed, at, doubt, expires) "
            "VALUES (:id, NULL, 0, 1, :expires) ON CONFLICT (id) DO UPDATE SET doubt = 1, "
            "expires = CASE WHEN lookups.expires > excluded.expires "
            "THEN lookups.expires ELSE excluded.expires END",
            {"id": lookup_id, "expires": now + seconds},
        )

    # --- customer displays ------------------------------------------------------------------------
    @_timed
    def display(self, display: str) -> dict[str, Any] | None:
        rows = self.engine.run(
            "SELECT display, store, code, code_expires, till, paired FROM displays "
            "WHERE display = :display",
            {"display": display},
        ).rows
        names = ("display", "store", "code", "code_expires", "till", "paired")
        return dict(zip(names, rows[0], strict=True)) if rows else None

    @_timed
    def display_code(self, display: str, store: str, code: str, seconds: float) -> None:
        """An unpaired display shows `code` for `seconds`, for a till of `store` to pair with."""
        now = self.clock()
        self.engine.run(
            "INSERT INTO displays (display, store, code, code_expires) "
            "VALUES (:display, :store, :code, :expires) ON CONFLICT (display) DO UPDATE SET "
            "store = excluded.store, code = excluded.code, code_expires = excluded.code_expires "
            "WHERE displays.till IS NULL",
            {"display": display, "store": store, "code": code, "expires": now + seconds},
        )

    @_timed
    def display_codes_in_use(self, store: str) -> set[str]:
        rows = self.engine.run(
            "SELECT code FROM displays WHERE store = :store AND code_expires > :now",
            {"store": store, "now": self.clock()},
        ).rows
        return {row[0] for row in rows}

    @_timed
    def display_pair(self, store: str, code: str, till: str) -> str | None:
        """Pair the unpaired display of `store` showing `code` with the staff tablet `till`
        (a till pairs with one display: another of its pairs ends); its id, or None.

        The check and the pairing are one UPDATE: two tills typing the same code at once
        cannot both pass a check made before either wrote (read committed on PostgreSQL
        would let them); the second finds the code gone, and its own pair, ended first
        (`till` is unique), comes back with the rollback."""
        now = self.clock()
        try:
            with self.engine.transaction() as tx:
                tx.run("UPDATE displays SET till = NULL, paired = NULL WHERE till = :till",
                       {"till": till})  # fmt: skip
                rows = tx.run(
                    "UPDATE displays SET till = :till, paired = :now, code = NULL, "
                    "code_expires = NULL WHERE store = :store AND code = :code "
                    "AND code_expires > :now AND till IS NULL RETURNING display",
                    {"till": till, "now": now, "store": store, "code": code},
                ).rows
                if not rows:
                    raise _NotPaired
                return rows[0][0]
        except _NotPaired:
            return None

    @_timed
    def display_of_till(self, till: str) -> str | None:
        rows = self.engine.run(
            "SELECT display FROM displays WHERE till = :till", {"till": till}
        ).rows
        return rows[0][0] if rows else None

    @_timed
    def display_unpair(self, *, display: str | None = None, till: str | None = None) -> int:
        column, value = ("display", display) if display is not None else ("till", till)
        return self.engine.run(
            f"UPDATE displays SET till = NULL, paired = NULL WHERE {column} = :value",
            {"value": value},
        ).rowcount

    @_timed
    def displays(self) -> list[dict[str, Any]]:
        """Every paired display: its id, store, till and when it was paired."""
        rows = self.engine.run(
            "SELECT display, store, till, paired FROM displays WHERE till IS NOT NULL "
            "ORDER BY store, paired"
        ).rows
        return [dict(zip(("display", "store", "till", "paired"), r, strict=True)) for r in rows]

    @_timed
    def display_status(self, display: str) -> tuple[bool, str | None, str | None] | None:
        """What a display at rest polls, in one read: (paired, the state of its live handoff,
        who took it), or None for a display with no row yet."""
        rows = self.engine.run(
            "SELECT d.till IS NOT NULL, h.state, h.phone FROM displays d LEFT JOIN handoffs h "
            "ON h.display = d.display AND h.state IN ('waiting', 'open', 'sending') "
            "AND h.expires > :now WHERE d.display = :display ORDER BY h.created DESC LIMIT 1",
            {"display": display, "now": self.clock()},
        ).rows
        return (bool(rows[0][0]), rows[0][1], rows[0][2]) if rows else None

    @_timed
    def display_handoff(self, display: str) -> dict[str, Any] | None:
        """The live handoff given to `display`, newest first."""
        return self._handoff_row(self.engine.run(
            f"SELECT {self.HANDOFF_COLUMNS} FROM handoffs WHERE display = :display "
            "AND state IN ('waiting', 'open', 'sending') AND expires > :now "
            "ORDER BY created DESC LIMIT 1",
            {"display": display, "now": self.clock()},
        ).rows)  # fmt: skip

    @_timed
    def display_closed_handoff(self, display: str) -> dict[str, Any] | None:
        """The newest handoff `display` finished (for a double tap to read its answer)."""
        return self._handoff_row(self.engine.run(
            f"SELECT {self.HANDOFF_COLUMNS} FROM handoffs WHERE display = :display "
            "AND state = 'closed' ORDER BY created DESC LIMIT 1",
            {"display": display},
        ).rows)  # fmt: skip

    # --- manager sessions -------------------------------------------------------------------------
    def manager_session_add(self, session_id: str, name: str, store: str, entry: str,
                            until: float) -> None:  # fmt: skip
        now = self.clock()
        with self.engine.transaction() as tx:
            tx.run("DELETE FROM manager_sessions WHERE until < :now", {"now": now})
            tx.run(
                "INSERT INTO manager_sessions (id, name, store, entry, until) "
                "VALUES (:id, :name, :store, :entry, :until)",
                {"id": session_id, "name": name, "store": store, "entry": entry, "until": until},
            )

    def manager_session(self, session_id: str) -> dict[str, Any] | None:
        rows = self.engine.run(
            "SELECT name, store, entry, until FROM manager_sessions "
            "WHERE id = :id AND until > :now",
            {"id": session_id, "now": self.clock()},
        ).rows
        return (
            dict(zip(("name", "store", "entry", "until"), rows[0], strict=True)) if rows else None
        )

    def manager_session_end(self, session_id: str) -> None:
        self.engine.run("DELETE FROM manager_sessions WHERE id = :id", {"id": session_id})

    def manager_sessions_keep(self, entries: list[str]) -> int:
        """End every session whose manager entry is not among `entries` (a PIN changed or a
        manager left): returns how many ended."""
        names = [f":e{n}" for n in range(len(entries))] or ["NULL"]
        return self.engine.run(
            f"DELETE FROM manager_sessions WHERE entry NOT IN ({', '.join(names)})",
            {f"e{n}": e for n, e in enumerate(entries)},
        ).rowcount

    # --- scan to join: handoffs ----------------------------------------------------------------
    HANDOFF_COLUMNS = (
        "id, till, code, store, store_name, country, device, language, created, expires, state, "
        "phone, outcome, result, claimed, submission, display"
    )

    def _handoff_row(self, rows) -> dict[str, Any] | None:
        names = [n.strip() for n in self.HANDOFF_COLUMNS.split(",")]
        return dict(zip(names, rows[0], strict=True)) if rows else None

    @_timed
    def handoff_add(self, handoff: dict[str, Any]) -> None:
        now = self.clock()
        with self.engine.transaction() as tx:
            tx.run("DELETE FROM handoffs WHERE expires < :old", {"old": now - 86400})
            tx.run(
                "INSERT INTO handoffs (id, till, code, store, store_name, country, device, "
                "language, created, expires, state, display) VALUES (:id, :till, :code, :store, "
                ":store_name, :country, :device, :language, :created, :expires, 'waiting', "
                ":display)",
                {"display": None, **handoff},
            )

    @_timed
    def handoff(self, *, id: str | None = None, till: str | None = None) -> dict | None:
        column, value = ("id", id) if id is not None else ("till", till)
        return self._handoff_row(self.engine.run(
            f"SELECT {self.HANDOFF_COLUMNS} FROM handoffs WHERE {column} = :value",
            {"value": value},
        ).rows)  # fmt: skip

    @_timed
    def handoff_by_code(self, store: str, code: str) -> dict | None:
        """The waiting handoff of `store` with `code`, not expired."""
        return self._handoff_row(self.engine.run(
            f"SELECT {self.HANDOFF_COLUMNS} FROM handoffs WHERE store = :store AND code = :code "
            "AND state = 'waiting' AND expires > :now",
            {"store": store, "code": code, "now": self.clock()},
        ).rows)  # fmt: skip

    @_timed
    def store_country(self, store: str) -> str | None:
        """The country of `store` as its newest handoff has it (None: it has had none)."""
        rows = self.engine.run(
            "SELECT country FROM handoffs WHERE store = :store ORDER BY created DESC LIMIT 1",
            {"store": store},
        ).rows
        return rows[0][0] if rows else None

    @_timed
    def handoff_codes_in_use(self, store: str) -> set[str]:
        rows = self.engine.run(
            "SELECT code FROM handoffs WHERE store = :store AND expires > :now "
            "AND state IN ('waiting', 'open', 'sending')",
            {"store": store, "now": self.clock()},
        ).rows
        return {row[0] for row in rows}

    @_timed
    def handoff_take(self, handoff_id: str, phone: str, seconds: float) -> bool:
        """This phone takes the handoff: True when it is now (or already was) this phone's. The
        first take gives the phone `seconds` of its own from now (the code on the till's
        screen is worth nothing from then on, so nothing is lost by it)."""
        now = self.clock()
        return (
            self.engine.run(
                "UPDATE handoffs SET state = 'open', phone = :phone, "
                "expires = CASE WHEN state = 'waiting' THEN :until ELSE expires END "
                "WHERE id = :id AND expires > :now AND ((state = 'waiting' AND phone IS NULL) "
                "OR (state = 'open' AND phone = :phone))",
                {"id": handoff_id, "phone": phone, "now": now, "until": now + seconds},
            ).rowcount
            == 1
        )

    @_timed
    def handoff_claim(self, handoff_id: str, phone: str, submission: str, lease: float) -> bool:
        """One send of this phone's holds the handoff: True for exactly one of any number of
        requests at once, on every machine (one conditional write: SQLite takes writes one at a
        time, PostgreSQL checks the condition again on the row another transaction changed).
        A claim older than `lease` seconds was left by a request that died: it may be taken."""
        now = self.clock()
        return (
            self.engine.run(
                "UPDATE handoffs SET state = 'sending', claimed = :now, submission = :submission "
                "WHERE id = :id AND phone = :phone AND expires > :now AND (state = 'open' OR "
                "(state = 'sending' AND claimed < :stale))",
                {"id": handoff_id, "phone": phone, "submission": submission, "now": now,
                 "stale": now - lease},
            ).rowcount
            == 1
        )  # fmt: skip

    @_timed
    def handoff_outcome(self, handoff_id: str, outcome: str, result: str | None, *,
                        final: bool, submission: str | None = None) -> None:  # fmt: skip
        """What the phone's sign-up came to: final closes the handoff (one sign-up at most), any
        other answer opens it again for a correction. Only the send that holds the handoff
        (`submission`) ends its claim; a form refused before any claim only tells the till."""
        self.engine.run(
            "UPDATE handoffs SET outcome = :outcome, result = :result, "
            "state = CASE WHEN :final THEN 'closed' ELSE 'open' END "
            "WHERE id = :id AND (state = 'open' OR (state = 'sending' AND submission = :sub))",
            {"id": handoff_id, "outcome": outcome, "result": result, "final": final,
             "sub": submission},
        )  # fmt: skip

    @_timed
    def handoff_cancel(self, till: str) -> int:
        return self.engine.run(
            "UPDATE handoffs SET state = 'cancelled' WHERE till = :till "
            "AND state IN ('waiting', 'open', 'sending')",
            {"till": till},
        ).rowcount

    def recent_outcomes(self, stores: list[str] | None, since: float) -> dict[str, int]:
        """Live sign-ups since `since` (not replays), counted by outcome."""
        where, params = ["at >= :since", "replay = 0"], {"since": since}
        if stores is not None:
            names = [f":s{n}" for n in range(len(stores))] or ["NULL"]
            where.append(f"store IN ({', '.join(names)})")
            params.update({f"s{n}": store for n, store in enumerate(stores)})
        rows = self.engine.run(
            f"SELECT outcome, count(*) FROM events WHERE {' AND '.join(where)} GROUP BY outcome",
            params,
        ).rows
        return dict(rows)

    # --- enrolled devices' names ------------------------------------------------------------------
    @_timed
    def device_enrolled(self, device_id: str, store: str, store_name: str, name: str,
                        mode: str) -> None:  # fmt: skip
        self.engine.run(
            "INSERT INTO devices (id, store, store_name, name, mode, enrolled) VALUES "
            "(:id, :store, :store_name, :name, :mode, :now) ON CONFLICT (id) DO UPDATE SET "
            "store = excluded.store, store_name = excluded.store_name, name = excluded.name, "
            "mode = excluded.mode, enrolled = excluded.enrolled",
            {"id": device_id, "store": store, "store_name": store_name, "name": name,
             "mode": mode, "now": self.clock()},
        )  # fmt: skip

    def device_names(self) -> tuple[dict[str, str], dict[str, str]]:
        """(device id -> its name, store id -> Engage's name of it), as staff enrolled them."""
        rows = self.engine.run("SELECT id, store, store_name, name FROM devices").rows
        return ({r[0]: r[3] for r in rows if r[3]}, {r[1]: r[2] for r in rows if r[2]})

    # --- circuit breaker --------------------------------------------------------------------------
    @_timed
    def breaker_allows(self, name: str, probe_seconds: float) -> bool:
        """True when calls may go ahead: closed, or this caller won the one probe after cooldown."""
        now = self.clock()
        rows = self.engine.run(
            "SELECT failures, open_until FROM breaker WHERE name = :name", {"name": name}
        ).rows
        failures, open_until = rows[0] if rows else (0, 0)
        # Remember, for this thread's breaker_record() after the call, that there was nothing
        # to close: a success then needs no second look at the table.
        self._local.breaker_clean = name if (failures, open_until) == (0, 0) else None
        if open_until == 0:
            return True
        if now < open_until:
            return False
        # Cool-down over: exactly one caller, on any machine, may probe; the others fail fast.
        claimed = self.engine.run(
            "UPDATE breaker SET open_until = :until WHERE name = :name AND open_until = :seen",
            {"until": now + probe_seconds, "name": name, "seen": open_until},
        ).rowcount
        return claimed == 1

    @_timed
    def breaker_is_open(self, name: str) -> bool:
        rows = self.engine.run(
            "SELECT open_until FROM breaker WHERE name = :name", {"name": name}
        ).rows
        return bool(rows and self.clock() < rows[0][0])

    @_timed
    def breaker_record(
        self,
        name: str,
        *,
        ok: bool,
        threshold: int,
        cooldown: float,
        window: float = 60.0,
        at_once: bool = False,
    ) -> None:
        """Count a success (closes) or a failure (opens once `threshold` failures fell within
        `window` seconds without a success between them, or `at_once`).

        A success right after this thread's breaker_allows() found nothing to close writes
        nothing and reads nothing: a failure that another request recorded meanwhile stays
        counted, as the success's call began before it.
        """
        clean, self._local.breaker_clean = getattr(self._local, "breaker_clean", None), None
        if ok and clean == name:
            return
        now = self.clock()
        if ok:
            self.engine.run(
                "UPDATE breaker SET failures = 0, open_until = 0, window_start = 0 "
                "WHERE name = :name AND (failures <> 0 OR open_until <> 0)",
                {"name": name},
            )
            return
        self.engine.run(
            BREAKER_FAILURE,
            {
                "name": name,
                "at_once": at_once,
                "threshold": threshold,
                "until": now + cooldown,
                "now": now,
                "since": now - window,
            },
        )
