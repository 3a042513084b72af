"""What waiting tills cost (scan to join, issue #24), on demand: not part of the test suite.

    .venv/bin/python tests/perf/handoff_bench.py [--latency 0.05] [--seconds 8] [--rounds 2]

The README's server (gunicorn 2 x 16, SQLite) against the simulator (L per Engage call): 16
tills sign people up back to back (the benchmark's tills), in turn with no other till and with
50 more tills each waiting on a handoff and polling its status every 2 s as the till's page
does. Reported: the sign-ups' p50 and p99 with the waiting tills as a ratio to without, and one
status poll's time beside the form page's (each timed alone, one after another, same server).
Loopback only; everything it starts stops with it.
"""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

PERF = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF))
sys.path.insert(0, str(PERF.parent.parent))

import benchmark  # noqa: E402 - the benchmark's tills, servers and helpers

from tests.conftest import device_cookie  # noqa: E402

WAITING = 50


def waiting_till(url: str, n: int) -> tuple[requests.Session, str]:
    """An enrolled till that started a handoff: its session and its page's status address."""
    till = requests.Session()
    till.trust_env = False
    till.cookies.set("device", device_cookie(benchmark.SECRET_KEY, store="101"))
    page = till.get(url, timeout=10).text
    token = re.search(r'action="/handoff/"[^>]*>\s*<input type="hidden" name="csrf_token" '
                      r'value="([^"]+)"', page).group(1)  # fmt: skip
    started = till.post(url + "handoff/", data={"csrf_token": token}, allow_redirects=False,
                        timeout=10)  # fmt: skip
    return till, url.rstrip("/") + started.headers["Location"] + "/status"


def poll_while(stop: threading.Event, tills: list[tuple[requests.Session, str]]) -> list[float]:
    """Each waiting till asks for its status every 2 s (as app.js does), spread over the 2 s."""
    times: list[float] = []
    lock = threading.Lock()

    def one(n: int, till: requests.Session, status_url: str) -> None:
        stop.wait(2.0 * n / len(tills))
        while not stop.is_set():
            started = time.perf_counter()
            till.get(status_url, timeout=10)
            with lock:
                times.append(time.perf_counter() - started)
            stop.wait(2.0)

    threads = [threading.Thread(target=one, args=(n, *t)) for n, t in enumerate(tills)]
    for thread in threads:
        thread.start()
    poll_while.threads = threads  # joined by the caller
    return times


def alone(session: requests.Session, url: str, count: int = 200) -> float:
    """Median time of `count` requests to `url`, one after another (ms)."""
    session.get(url, timeout=10)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        session.get(url, timeout=10)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> int:
    args = benchmark.ab_arguments(__doc__.split("\n\n")[0]).parse_args()
    procs = benchmark.Processes()
    work = Path(tempfile.mkdtemp(prefix="engage-handoff-bench-"))
    try:
        url, _ = benchmark.app_on_simulator(procs, args.latency, work / "state.sqlite3",
                                            HANDOFF_MINUTES="60")  # fmt: skip
        benchmark.signups(url, args.devices, 2.0, with_form=True, tag="warm")
        tills = [waiting_till(url, n) for n in range(WAITING)]
        runs: dict[str, list[dict]] = {"alone": [], "waiting": []}
        polls: list[float] = []
        for round_ in range(args.rounds):
            for name in ("alone", "waiting") if round_ % 2 == 0 else ("waiting", "alone"):
                stop = threading.Event()
                if name == "waiting":
                    polls_now = poll_while(stop, tills)
                result = benchmark.signups(url, args.devices, args.seconds, with_form=True,
                                           tag=f"{name}-{round_}")  # fmt: skip
                stop.set()
                if name == "waiting":
                    for thread in poll_while.threads:
                        thread.join()
                    polls.extend(polls_now)
                    result["polls"] = len(polls_now)
                runs[name].append(result)
        till, status_url = tills[0]
        poll_ms = alone(till, status_url)
        form_ms = alone(till, url)
    finally:
        procs.stop()

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    print(f"\n{WAITING} tills waiting on handoffs (a status poll every 2 s each) vs none, "
          f"L = {args.latency * 1000:.0f} ms, {args.devices} tills signing up, {args.rounds} "
          f"rounds of {args.seconds:.0f} s, alternating")  # fmt: skip
    for key, label in (("p50_s", "sign-up p50 (s)"), ("p99_s", "sign-up p99 (s)"),
                       ("per_second", "sign-ups/s")):  # fmt: skip
        with_, without = median("waiting", key), median("alone", key)
        print(f"  {label:<18} waiting {with_:8.4f}  none {without:8.4f}  ratio "
              f"{with_ / without:.3f}")  # fmt: skip
    print(f"  status polls answered while they waited: {sum(r['polls'] for r in runs['waiting'])}"
          f", p50 {statistics.median(polls) * 1000:.2f} ms")  # fmt: skip
    print(f"  one status poll alone: {poll_ms:.2f} ms; the form page alone: {form_ms:.2f} ms "
          f"(poll / form = {poll_ms / form_ms:.2f})")  # fmt: skip
    benchmark.save("handoff", {"runs": runs, "poll_ms": poll_ms, "form_ms": form_ms})
    return 0


if __name__ == "__main__":
    sys.exit(main())
