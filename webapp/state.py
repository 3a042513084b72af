"""State that every worker process of one deployment must share: one-time submission tokens,
rate-limit counters and the Engage circuit breaker.

A small SQLite file (WAL mode) in the instance folder: every gunicorn worker on the machine sees
the same rows, each operation is one short transaction, and nothing else needs installing.
No personal data is stored here: tokens are random, outcomes are names, member numbers are
Engage's.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    token TEXT PRIMARY KEY,
    started REAL NOT NULL,
    outcome TEXT,
    member_number TEXT
);
CREATE TABLE IF NOT EXISTS hits (
    key TEXT PRIMARY KEY,
    window_start REAL NOT NULL,
    count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS breaker (
    name TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    open_until REAL NOT NULL
);
"""

# One failed signup: count it, and open the breaker (until :until) at the threshold or at once.
BREAKER_FAILURE = """
INSERT INTO breaker (name, failures, open_until)
VALUES (:name, 1, CASE WHEN :at_once OR 1 >= :threshold THEN :until ELSE 0 END)
ON CONFLICT (name) DO UPDATE SET
    failures = failures + 1,
    open_until = CASE WHEN :at_once OR failures + 1 >= :threshold THEN :until ELSE 0 END
"""

SUBMISSION_DAYS = 1  # how long a used token is remembered


@dataclass(frozen=True)
class Submission:
    outcome: str | None  # None while the first request is still talking to Engage
    member_number: str | None


class SharedState:
    def __init__(self, path: str | Path, *, clock=time.time):
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._local = threading.local()
        with self._db() as db:
            db.executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    # --- one-time submission tokens ------------------------------------------------------------
    def claim_submission(self, token: str) -> Submission | None:
        """Claim `token` for this request. None: it is ours. Otherwise what the first one got."""
        db = self._db()
        now = self.clock()
        try:
            db.execute("INSERT INTO submissions (token, started) VALUES (?, ?)", (token, now))
        except sqlite3.IntegrityError:
            row = db.execute(
                "SELECT outcome, member_number FROM submissions WHERE token = ?", (token,)
            ).fetchone()
            return Submission(*row) if row else Submission(None, None)
        if int(now) % 97 == 0:  # now and then, forget old tokens
            db.execute(
                "DELETE FROM submissions WHERE started < ?", (now - SUBMISSION_DAYS * 86400,)
            )
        return None

    def finish_submission(self, token: str, outcome: str, member_number: str | None) -> None:
        self._db().execute(
            "UPDATE submissions SET outcome = ?, member_number = ? WHERE token = ?",
            (outcome, member_number, token),
        )

    def submission(self, token: str) -> Submission | None:
        row = (
            self._db()
            .execute("SELECT outcome, member_number FROM submissions WHERE token = ?", (token,))
            .fetchone()
        )
        return Submission(*row) if row else None

    # --- rate limits ---------------------------------------------------------------------------
    def hits(self, limits: list[tuple[str, int, float]]) -> bool:
        """Count one hit for each (key, limit, window) in one transaction; False if any is over."""
        db = self._db()
        now = self.clock()
        allowed = True
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, limit, window in limits:
                row = db.execute(
                    "SELECT window_start, count FROM hits WHERE key = ?", (key,)
                ).fetchone()
                if row is None or now - row[0] >= window:
                    db.execute(
                        "REPLACE INTO hits (key, window_start, count) VALUES (?, ?, 1)", (key, now)
                    )
                    count = 1
                else:
                    count = row[1] + 1
                    db.execute("UPDATE hits SET count = ? WHERE key = ?", (count, key))
                allowed = allowed and count <= limit
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return allowed

    # --- circuit breaker -----------------------------------------------------------------------
    def breaker_allows(self, name: str, probe_seconds: float) -> bool:
        """True when calls may go ahead: closed, or this caller won the one probe after cooldown."""
        db = self._db()
        now = self.clock()
        row = db.execute(
            "SELECT failures, open_until FROM breaker WHERE name = ?", (name,)
        ).fetchone()
        failures, open_until = row if row is not None else (0, 0)
        # Remember, for this thread's breaker_record() after the call, that there was nothing
        # to close: a success then needs no second look at the table.
        self._local.breaker_clean = name if (failures, open_until) == (0, 0) else None
        if open_until == 0:
            return True
        if now < open_until:
            return False
        # Cool-down over: exactly one caller may probe; the others keep failing fast.
        claimed = db.execute(
            "UPDATE breaker SET open_until = ? WHERE name = ? AND open_until = ?",
            (now + probe_seconds, name, open_until),
        ).rowcount
        return claimed == 1

    def breaker_is_open(self, name: str) -> bool:
        row = (
            self._db().execute("SELECT open_until FROM breaker WHERE name = ?", (name,)).fetchone()
        )
        return bool(row and self.clock() < row[0])

    def breaker_record(
        self, name: str, *, ok: bool, threshold: int, cooldown: float, at_once: bool = False
    ) -> None:
        """Count a success (closes) or a failure (opens after `threshold`, or `at_once`).

        A success right after this thread's breaker_allows() found nothing to close writes
        nothing and reads nothing: a failure that another request recorded meanwhile stays
        counted, as the success's call began before it.
        """
        clean, self._local.breaker_clean = getattr(self._local, "breaker_clean", None), None
        if ok and clean == name:
            return
        db = self._db()
        now = self.clock()
        if ok:
            row = db.execute(
                "SELECT failures, open_until FROM breaker WHERE name = ?", (name,)
            ).fetchone()
            if row is not None and tuple(row) != (0, 0):  # write only when something to close
                db.execute(
                    "REPLACE INTO breaker (name, failures, open_until) VALUES (?, 0, 0)", (name,)
                )
            return
        db.execute(
            BREAKER_FAILURE,
            {"name": name, "at_once": at_once, "threshold": threshold, "until": now + cooldown},
        )
