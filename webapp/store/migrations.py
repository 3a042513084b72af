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

MIGRATIONS.append(
    (
        4,
        "consent records: the texts shown (once each, by hash) and what each person chose",
        [
            """CREATE TABLE IF NOT EXISTS consent_texts (
                hash TEXT PRIMARY KEY,
                kind TEXT NOT NULL,
                item TEXT NOT NULL,
                language TEXT NOT NULL,
                source TEXT NOT NULL,
                body TEXT NOT NULL,
                first_shown DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE IF NOT EXISTS consent_records (
                id TEXT PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL,
                submission TEXT NOT NULL,
                kind TEXT NOT NULL,
                item TEXT NOT NULL,
                given INTEGER NOT NULL,
                text_hash TEXT NOT NULL,
                language TEXT NOT NULL,
                source TEXT NOT NULL,
                store TEXT NOT NULL,
                device TEXT NOT NULL,
                mode TEXT NOT NULL,
                app_version TEXT NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS consent_records_store ON consent_records (store, at)",
            "CREATE INDEX IF NOT EXISTS consent_records_submission ON consent_records (submission)",
            """CREATE TABLE IF NOT EXISTS consent_deliveries (
                submission TEXT NOT NULL,
                at DOUBLE PRECISION NOT NULL,
                state TEXT NOT NULL,
                contact_id TEXT,
                outbox_ref TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS consent_deliveries_submission "
            "ON consent_deliveries (submission, at)",
            "CREATE INDEX IF NOT EXISTS consent_deliveries_contact "
            "ON consent_deliveries (contact_id)",
            # The submission a kept sign-up came from: its consent records follow it.
            "ALTER TABLE outbox ADD COLUMN submission TEXT",
        ],
    )
)

MIGRATIONS.append(
    (
        5,
        "sign-up events for the manager's view: outcomes per store, device and hour",
        [
            """CREATE TABLE IF NOT EXISTS events (
                at DOUBLE PRECISION NOT NULL,
                hour BIGINT NOT NULL,
                store TEXT NOT NULL,
                device TEXT NOT NULL,
                mode TEXT NOT NULL,
                outcome TEXT NOT NULL,
                cause TEXT,
                replay INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX IF NOT EXISTS events_store_hour ON events (store, hour)",
        ],
    )
)

MIGRATIONS.append(
    (
        6,
        "kiosk answer times shared by every process; kiosk entries and manager sessions kept "
        "server-side",
        [
            # A smoothed duration of the creates every process has timed (webapp/signup/padding.py).
            """CREATE TABLE IF NOT EXISTS timings (
                name TEXT PRIMARY KEY,
                seconds DOUBLE PRECISION NOT NULL,
                at DOUBLE PRECISION NOT NULL
            )""",
            # What a kiosk's POST sent, for the next page only: sealed (Fernet under SECRET_KEY),
            # read once, gone after a short life. The cookie holds only the random id.
            """CREATE TABLE IF NOT EXISTS entries (
                id TEXT PRIMARY KEY,
                sealed TEXT NOT NULL,
                expires DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires)",
            # A manager's signed-in session: revocable on every machine at once (sign-out, PIN
            # change). `entry` is a keyed hash of the manager's MANAGER_PINS entry.
            """CREATE TABLE IF NOT EXISTS manager_sessions (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                store TEXT NOT NULL,
                entry TEXT NOT NULL,
                until DOUBLE PRECISION NOT NULL
            )""",
        ],
    )
)

MIGRATIONS.append(
    (
        7,
        "scan to join: handoffs from a till to a customer's phone",
        [
            # `id` is the SHA-256 of the phone's token (the token itself is never stored),
            # `till` the till page's own id, `code` the short code typed with the store's
            # address. What the till learns: the outcome, never anything the customer typed.
            """CREATE TABLE IF NOT EXISTS handoffs (
                id TEXT PRIMARY KEY,
                till TEXT NOT NULL UNIQUE,
                code TEXT NOT NULL,
                store TEXT NOT NULL,
                store_name TEXT NOT NULL,
                country TEXT NOT NULL,
                device TEXT NOT NULL,
                language TEXT NOT NULL,
                created DOUBLE PRECISION NOT NULL,
                expires DOUBLE PRECISION NOT NULL,
                state TEXT NOT NULL,
                phone TEXT,
                outcome TEXT,
                result TEXT
            )""",
            "CREATE INDEX IF NOT EXISTS handoffs_code ON handoffs (store, code)",
            "CREATE INDEX IF NOT EXISTS handoffs_expires ON handoffs (expires)",
        ],
    )
)

MIGRATIONS.append(
    (
        8,
        "enrolled devices' names (\"Kassa 2\") and their stores' names, for the manager's view",
        [
            """CREATE TABLE IF NOT EXISTS devices (
                id TEXT PRIMARY KEY,
                store TEXT NOT NULL,
                store_name TEXT NOT NULL,
                name TEXT NOT NULL,
                mode TEXT NOT NULL,
                enrolled DOUBLE PRECISION NOT NULL
            )""",
        ],
    )
)

MIGRATIONS.append(
    (
        9,
        "a handoff is claimed by one send at a time: the claim's time and its submission token",
        [
            # state 'sending' while one request of the phone's holds it (a lease from `claimed`),
            # `submission` the one-time token of the send that holds it, or closed it.
            "ALTER TABLE handoffs ADD COLUMN claimed DOUBLE PRECISION",
            "ALTER TABLE handoffs ADD COLUMN submission TEXT",
        ],
    )
)

MIGRATIONS.append(
    (
        10,
        "the cashier's look-ups, remembered per device and key for a short while (sealed)",
        [
            # id: a keyed hash of the device and the key's value (no personal data in clear);
            # sealed: what was found, encrypted under SECRET_KEY; at: when Engage was asked;
            # doubt: a create of this key from this device ended in doubt, so no remembered
            # look-up stands in for a find until the row expires.
            """CREATE TABLE IF NOT EXISTS lookups (
                id TEXT PRIMARY KEY,
                sealed TEXT,
                at DOUBLE PRECISION NOT NULL,
                doubt INTEGER NOT NULL DEFAULT 0,
                expires DOUBLE PRECISION NOT NULL
            )""",
            "CREATE INDEX IF NOT EXISTS lookups_expires ON lookups (expires)",
        ],
    )
)

MIGRATIONS.append(
    (
        11,
        "customer displays: each paired with one staff tablet of its store; a handoff to one",
        [
            # display: the display device's id; code: the pairing code it shows while unpaired
            # (until code_expires); till: the staff tablet's device id once paired.
            """CREATE TABLE IF NOT EXISTS displays (
                display TEXT PRIMARY KEY,
                store TEXT NOT NULL,
                code TEXT,
                code_expires DOUBLE PRECISION,
                till TEXT UNIQUE,
                paired DOUBLE PRECISION
            )""",
            "CREATE INDEX IF NOT EXISTS displays_code ON displays (store, code)",
            # The display a handoff was given to (scan to join leaves it empty).
            "ALTER TABLE handoffs ADD COLUMN display TEXT",
            "CREATE INDEX IF NOT EXISTS handoffs_display ON handoffs (display, created)",
        ],
    )
)

LATEST = MIGRATIONS[-1][0]
