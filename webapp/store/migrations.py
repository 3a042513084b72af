"""The shared state's schema, as numbered steps applied once, in order, at start-up.

Each step is a list of statements that both engines run. Types: DOUBLE PRECISION for times
(seconds since the epoch; PostgreSQL's REAL would lose the seconds), BIGINT/INTEGER for counts,
TEXT for the rest. A step is never edited once released: add the next one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "tokens, rate limits and the breaker (the schema before versions were kept)",
        [
            """CREATE TABLE IF NOT EXISTS submissions (
                token TEXT PRIMARY KEY,
                started DOUBLE PRECISION NOT NULL,
                outcome TEXT,
                member_number TEXT
            )""",
            """CREATE TABLE IF NOT EXISTS hits (
                key TEXT PRIMARY KEY,
                window_start DOUBLE PRECISION NOT NULL,
                count INTEGER NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS breaker (
                name TEXT PRIMARY KEY,
                failures INTEGER NOT NULL,
                open_until DOUBLE PRECISION NOT NULL
            )""",
        ],
    ),
    (
        2,
        "a submission's payload digest; the breaker's failure window; a health probe row",
        [
            "ALTER TABLE submissions ADD COLUMN digest TEXT",
            "CREATE INDEX IF NOT EXISTS submissions_started ON submissions (started)",
            "ALTER TABLE breaker ADD COLUMN window_start DOUBLE PRECISION NOT NULL DEFAULT 0",
            """CREATE TABLE IF NOT EXISTS health (
                name TEXT PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL
            )""",
        ],
    ),
]

MIGRATIONS.append(
    (
        3,
        "the outbox: sign-ups kept while Engage is down, the person's details only as ciphertext",
        [
            """CREATE TABLE IF NOT EXISTS outbox (
                id TEXT PRIMARY KEY,
                store TEXT NOT NULL,
                device TEXT NOT NULL,
                mode TEXT NOT NULL,
                created DOUBLE PRECISION NOT NULL,
                next_attempt DOUBLE PRECISION NOT NULL,
                attempts INTEGER NOT NULL DEFAULT 0,
                state TEXT NOT NULL,
                lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
                last_error TEXT,
                payload TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt)",
        ],
    )
)

LATEST = MIGRATIONS[-1][0]
