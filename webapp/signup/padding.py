"""When a public screen's final answer is released: at one moment for everyone, whatever Engage
said and however long it took.

A found member costs one call to Engage, a new person two (find, then create). On a kiosk or a
customer's phone, whose answers must tell nobody whether someone is a member, every final answer
(`created` included) is released when a target time has passed since its sign-up began. The
target is fixed before the sign-up is sent, so it depends neither on the outcome nor on how long
this sign-up took: a high percentile (QUANTILE, with MARGIN) of the creates timed recently, by
this process once it has timed LOCAL_ENOUGH of its own, and never below what every process of the
deployment shares in the state database (their percentiles, smoothed, each shared once it rests
on LOCAL_ENOUGH creates), nor below FLOOR_SECONDS. Until then it is PRIOR_SECONDS (or the
slowest create seen, with a wider margin, should that be later). So members and new people
answer with one distribution; only a sign-up slower than the target stands out, which by
construction is rarer than one in twenty (tests/perf/timing_bench.py measures it).

The shared estimate is written at most every SHARE_SECONDS by each process and read at most as
often, so the padding costs the state database nearly nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from ..store import StateUnavailable

log = logging.getLogger(__name__)

NAME = "create-p95"  # the shared estimate's row: the creates' high percentile, smoothed
# Before any create has been timed anywhere: a find and a create at a second's worth of
# Engage's answer times, longer than both take on a healthy tenant (typically 0.2-0.5 s), so
# that a fresh deployment errs on the side of a slower answer, never a telling one.
PRIOR_SECONDS = 1.0
FLOOR_SECONDS = 0.25  # never sooner: a burst of quick creates cannot pull the target down to 0
CEILING_SECONDS = 10.0  # never later: a tenant this slow is failing, and says so elsewhere
QUANTILE = 0.95
MARGIN = 1.15  # above the percentile, so that fewer than one create in twenty runs past it
FEW_MARGIN = 1.5  # above the slowest of the few creates timed before there are enough
LOCAL_ENOUGH = 20  # creates this process must have timed before its own percentile counts
SHARE_SECONDS = 10.0
SAMPLES = 200


def quantile(values, q: float) -> float:
    """The q-quantile of `values` (nearest rank above): never below a share q of them."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


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
        self._shared: float | None = None
        self._shared_read = self._shared_written = float("-inf")
        self._lock = threading.Lock()

    def created(self, seconds: float) -> None:
        """A sign-up ended in a create after `seconds`: a sample for every later target. Once
        this process has LOCAL_ENOUGH of them it shares their percentile (a few creates say
        little about the slow ones)."""
        with self._lock:
            self._local.append(seconds)
            if len(self._local) < LOCAL_ENOUGH:
                return
            if self.clock() - self._shared_written < SHARE_SECONDS:
                return
            mine = quantile(self._local, QUANTILE)
            self._shared_written = self.clock()
        try:
            self.store.timing_sample(NAME, mine)
        except StateUnavailable as exc:
            log.warning("public screens' answer times: the shared estimate was not updated: %s",
                        exc)  # fmt: skip

    def target(self) -> float:
        """Seconds after its start at which a public screen's final answer is released: fixed
        before the sign-up is sent, the same for whatever it comes to. Until this process or
        the deployment has timed enough creates, the prior (or, should a create have taken
        longer, the slowest one seen with a wide margin)."""
        with self._lock:
            count = len(self._local)
            local = quantile(self._local, QUANTILE) if count >= LOCAL_ENOUGH else None
            slowest = max(self._local) if count else 0.0
            stale = self.clock() - self._shared_read >= SHARE_SECONDS
            if stale:
                self._shared_read = self.clock()
        if stale:
            try:
                shared = self.store.timing(NAME)
            except StateUnavailable as exc:
                log.warning("public screens' answer times: the shared estimate was not read: %s",
                            exc)  # fmt: skip
                shared = None
            with self._lock:
                self._shared = shared if shared is not None else self._shared
        with self._lock:
            known = [x for x in (local, self._shared) if x is not None]
        if known:
            estimate = max(known) * MARGIN
        else:
            estimate = max(self.prior, slowest * FEW_MARGIN)
        return min(CEILING_SECONDS, max(FLOOR_SECONDS, estimate))

    def hold(self, started: float, target: float) -> float:
        """Wait until `target` seconds have passed since `started` (this clock); the wait."""
        wait = max(0.0, target - (self.clock() - started))
        if wait:
            self.sleep(wait)
        return wait
