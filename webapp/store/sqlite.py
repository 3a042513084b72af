"""SQLite: the shared state in one file (WAL mode) that every worker on one machine opens.

Each thread keeps its own connection. Before each use it checks that the file it has open is
still the file at STATE_DB: a file deleted or replaced while the app runs would otherwise leave
some threads writing to the old, unlinked file and others to a new, empty one, and one-time
tokens would no longer be one-time across them.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .base import Result, StateUnavailable, Writes

log = logging.getLogger(__name__)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return (stat.st_dev, stat.st_ino)


class _Connection:
    """One thread's connection, as a Runner."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def run(self, sql: str, params: dict[str, Any] | None = None) -> Result:
        try:
            cursor = self.db.execute(sql, _sqlite_params(params))
            rows = cursor.fetchall() if cursor.description else []
            return Result(rows, cursor.rowcount)
        except sqlite3.Error as exc:
            raise StateUnavailable(f"SQLite: {exc}") from exc


def _sqlite_params(params: dict[str, Any] | None) -> dict[str, Any]:
    if not params:
        return {}
    return {k: int(v) if isinstance(v, bool) else v for k, v in params.items()}


class SQLiteEngine:
    name = "sqlite"
    parameters_kept = None  # sqlite3 keeps a parsed statement whatever its parameters

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateUnavailable(
                f"cannot make the folder for {self.path}: {exc.strerror}"
            ) from exc
        self._local = threading.local()
        self._file: tuple[int, int] | None = None  # the file this process settled on
        self._lock = threading.Lock()
        # Set by the Store: builds the schema in a file made anew after the old one went away.
        self.on_new_database: Callable[[], Any] | None = None

    def _connection(self) -> _Connection:
        current = _identity(self.path)
        conn = getattr(self._local, "conn", None)
        if conn is not None and current is not None and self._local.file == current:
            return conn
        if conn is not None:
            conn.db.close()
            self._local.conn = None
        try:
            db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            _wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StateUnavailable(f"SQLite cannot open {self.path}: {exc}") from exc
        conn = _Connection(db)
        self._local.conn, self._local.file = conn, _identity(self.path)
        with self._lock:
            replaced = self._file is not None and self._file != self._local.file
            self._file = self._local.file
        if replaced:
            log.error(
                "state database %s was deleted or replaced while running: continuing with a new "
                "one (tokens, limits and the breaker start afresh)",
                self.path,
            )
            if self.on_new_database is not None:
                self.on_new_database()
        return conn

    def run(self, sql: str, params: dict[str, Any] | None = None) -> Result:
        return self._connection().run(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[_Connection]:
        conn = self._connection()
        conn.run("BEGIN IMMEDIATE")  # the write lock now: no upgrade deadlock later
        try:
            yield conn
            conn.run("COMMIT")  # on a full disk this is what fails
        except BaseException:
            if conn.db.in_transaction:
                try:
                    conn.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # the original error is the one worth raising
            raise

    exclusive = transaction  # BEGIN IMMEDIATE already lets one process at a time in

    @contextmanager
    def durable(self) -> Iterator[Writes]:
        # WAL with synchronous=NORMAL: a commit survives the app crashing, and a power cut loses
        # at most the last moments; there is no cheaper or dearer kind of commit to choose here.
        with self.transaction() as conn:
            yield Writes(conn)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.db.close()
            self._local.conn = None


def _wal(db: sqlite3.Connection, seconds: float = 10.0) -> None:
    """WAL mode, for every worker at once on a new file. Changing the journal mode needs the
    file to itself and answers "database is locked" at once, without waiting, while another
    process does the same: several workers starting together on a new file met that. It is
    tried again until `seconds` have passed (once one has set it, the file stays in WAL)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
