"""A kiosk's answers take as long as a create, whatever Engage said.

A found member costs one call to Engage, a new person two (find, then create). On a kiosk,
whose answers must tell nobody whether someone is a member, every final answer that was not a
create waits until a create's duration has passed: a recent one of this process, picked at
random (so the waits follow the creates' own spread), or, until this process has timed enough
creates of its own, the estimate that every process of the deployment shares in the state
database (a smoothed duration of their creates), or, on a deployment that has never timed a
create, PRIOR_SECONDS.

The shared estimate is written at most every SHARE_SECONDS by each process and read at most as
often, so the padding costs the state database nearly nothing.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable

from .store import StateUnavailable

log = logging.getLogger(__name__)

NAME = "create"  # the shared estimate's row
# Before any create has been timed anywhere: a find and a create at a second's worth of
# Engage's answer times, longer than both take on a healthy tenant (typically 0.2-0.5 s), so
# that a fresh deployment errs on the side of a slower answer, never a telling one.
PRIOR_SECONDS = 1.0
LOCAL_ENOUGH = 8  # creates this process must have timed before it trusts its own sample
SHARE_SECONDS = 10.0
SAMPLES = 64


class AnswerTimes:
    def __init__(
        self,
        store,
        *,
        prior: float = PRIOR_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ):
        self.store = store
        self.prior = prior
        self.clock = clock  # monotonic seconds: what a request's duration is measured with
        self.sleep = sleep
        self._local: deque[float] = deque(maxlen=SAMPLES)
        self._unshared: list[float] = []
        self._shared: float | None = None
        self._shared_read = self._shared_written = float("-inf")
        self._lock = threading.Lock()

    def created(self, seconds: float) -> None:
        """A sign-up ended in a create after `seconds`: a sample for every later answer."""
        with self._lock:
            self._local.append(seconds)
            self._unshared.append(seconds)
            if self.clock() - self._shared_written < SHARE_SECONDS:
                return
            mean = sum(self._unshared) / len(self._unshared)
            self._unshared.clear()
            self._shared_written = self.clock()
        try:
            self.store.timing_sample(NAME, mean)
        except StateUnavailable as exc:
            log.warning("kiosk answer times: the shared estimate was not updated: %s", exc)

    def target(self) -> float:
        """How long a kiosk's final answer takes from the start of its sign-up, in seconds."""
        with self._lock:
            if len(self._local) >= LOCAL_ENOUGH:
                return random.choice(self._local)
            stale = self.clock() - self._shared_read >= SHARE_SECONDS
            if stale:
                self._shared_read = self.clock()
        if stale:
            try:
                shared = self.store.timing(NAME)
            except StateUnavailable as exc:
                log.warning("kiosk answer times: the shared estimate was not read: %s", exc)
                shared = None
            with self._lock:
                self._shared = shared if shared is not None else self._shared
        with self._lock:
            if self._local and self._shared is None:
                return random.choice(self._local)
            return self._shared if self._shared is not None else self.prior

    def hold(self, started: float) -> float:
        """Wait until the target has passed since `started` (this clock); returns the wait."""
        wait = max(0.0, self.target() - (self.clock() - started))
        if wait:
            self.sleep(wait)
        return wait
