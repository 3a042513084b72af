"""What each app process does in the background: replay the outbox, and keep house (consent
records past CONSENT_RECORD_DAYS deleted). Started by the production server in each worker;
the app factory starts nothing by itself."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from flask import Flask

from ..store import StateUnavailable

log = logging.getLogger(__name__)

HOUSEKEEPING_SECONDS = 3600  # consent records are kept for years: once an hour is plenty


class Housekeeping(threading.Thread):
    def __init__(self, app: Flask):
        super().__init__(name="engage-signup-housekeeping", daemon=True)
        self.app = app
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.app.extensions["consent_records"].expire()
            except StateUnavailable as exc:
                log.error("housekeeping: state database unavailable: %s", exc)
            self.stopping.wait(HOUSEKEEPING_SECONDS)

    def stop(self) -> None:
        self.stopping.set()


def start(
    app: Flask, *workers: Callable[[Flask], list[threading.Thread]]
) -> list[threading.Thread]:
    """This process's background threads: housekeeping, and what each of `workers` starts
    (the server hands in the outbox's replays: they belong to the sign-up, above ops)."""
    threads: list[threading.Thread] = [t for begin in workers for t in begin(app)]
    housekeeping = Housekeeping(app)
    housekeeping.start()
    threads.append(housekeeping)
    app.extensions["background"] = threads
    return threads
