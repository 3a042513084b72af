"""Shared state that every worker on every machine of one deployment must see: one-time
submission tokens, rate-limit counters and the Engage circuit breaker.

One interface (`Store`), two engines: SQLite, a file for one machine and the default, and
PostgreSQL (DATABASE_URL) for several machines. The operations are plain SQL that both engines
run, with the same meaning on both. No personal data is stored here: tokens are random,
payload digests are keyed hashes, outcomes are names, member numbers are Engage's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .base import UNOPENED, StateUnavailable, Store, Submission

__all__ = ["UNOPENED", "StateUnavailable", "Store", "Submission", "open_store"]


def open_store(config: dict[str, Any], *, instance_path: str) -> Store:
    """The store for this configuration, migrated to the current schema.

    Raises StateUnavailable when the database cannot be opened or written.
    """
    if config.get("DATABASE_URL"):
        from .postgres import PostgresEngine

        engine = PostgresEngine(config["DATABASE_URL"], pool_size=config["WEB_THREADS"] + 2)
    else:
        from .sqlite import SQLiteEngine

        engine = SQLiteEngine(config["STATE_DB"] or Path(instance_path) / "state.sqlite3")
    store = Store(engine)
    try:
        store.applied = store.migrate()  # the steps this start applied (none when up to date)
    except BaseException:
        engine.close()
        raise
    return store
