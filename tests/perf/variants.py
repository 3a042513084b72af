"""The app with one guarantee taken out: floors for the cycle benchmark (issue #28), never
shipped and never run by the test suite.

    python tests/perf/variants.py VARIANT [webapp.serve's options]

VARIANT:
  without-consent-records  no consent record before Engage is asked (its texts and one record
                           per checkbox, one durable transaction) and no delivery row at the
                           end; the end's outcome and count are still written, durably
  without-state            no shared state at all: no rate limits, no one-time submission
                           token, no consent records, no shared breaker, no end written

The patches are made in the server's process before gunicorn forks its workers, so every
worker runs them; everything else is the README's server as it is.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from webapp import serve  # noqa: E402
from webapp.store import base  # noqa: E402

VARIANTS = ("without-consent-records", "without-state")


def _finish_without_delivery(self, token, outcome, member_number, *, delivery, event):
    values = self._event_values(**event)
    with self.engine.durable() as tx:
        tx.run(base.FINISH, {"outcome": outcome, "number": member_number, "token": token})
        self._add_event(tx, values)


def apply(variant: str) -> None:
    store = base.Store
    if variant == "without-consent-records":
        store.consent_record = lambda self, texts, records: None
        store.finish_signup = _finish_without_delivery
    elif variant == "without-state":
        store.hits = lambda self, limits: True
        store.claim_submission = lambda self, token, digest=None: None
        store.consent_record = lambda self, texts, records: None
        store.breaker_allows = lambda self, name, probe_seconds: True
        store.breaker_record = lambda self, name, **kwargs: None
        store.finish_signup = lambda self, *args, **kwargs: None
        store.event = lambda self, *args, **kwargs: None
    else:
        raise SystemExit(f"variants.py: VARIANT is one of {', '.join(VARIANTS)}")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    apply(sys.argv[1])
    sys.exit(serve.main(sys.argv[2:]))
