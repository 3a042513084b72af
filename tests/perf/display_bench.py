"""What customer displays at rest cost, and how soon one shows the form (issue 35), on demand:
not part of the test suite.

    .venv/bin/python tests/perf/display_bench.py [--latency 0.05] [--seconds 8] [--rounds 2]

The README's server (gunicorn 2 x 16, SQLite) against the simulator (L per Engage call): 16
tills sign people up back to back (the benchmark's tills), in turn with no display and with 50
customer displays at rest, each paired with a till of its own and asking its status every
second as app.js does, and (the floor of any polling) with the same 50 clients asking /healthz
at the same rate. Reported: the sign-ups' p50 and p99 with the displays, and with the floor,
as ratios to without (target: within 5 %); then, one hand-over at a time, the time from the
cashier's tap on "Customer fills in on the display" to the form arriving at a display that
polls every second
(p50, p99), and the floor of that: half a poll interval plus one status answer and one form
page, each timed alone. Loopback only; everything it starts stops with it.
"""

from __future__ import annotations

import random
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

DISPLAYS = 50
POLL = 1.0  # seconds between a display's status polls (webapp/pages/display.py POLL_SECONDS)
HANDOVERS = 30


def _session(mode: str) -> requests.Session:
    browser = requests.Session()
    browser.trust_env = False
    browser.cookies.set("device", device_cookie(benchmark.SECRET_KEY, mode, "101"))
    return browser


def _csrf(html: str) -> str:
    return re.search(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"', html).group(1)


def paired_pair(url: str) -> tuple[requests.Session, requests.Session]:
    """A till and its customer display, paired as the cashier does: the code the display
    shows, typed on the till."""
    till, display = _session("staff"), _session("display")
    rest = display.get(url + "display", timeout=10).text
    code = re.search(r"data-pairing-code>([\d ]+)<", rest).group(1)
    page = till.get(url, timeout=10).text
    answer = till.post(url + "display/pair", data={"csrf_token": _csrf(page), "code": code},
                       allow_redirects=False, timeout=10)  # fmt: skip
    assert answer.status_code == 303, answer.status_code
    return till, display


def poll_while(stop: threading.Event, displays: list[requests.Session], url: str,
               path: str = "display/status") -> list[float]:  # fmt: skip
    """Each display asks its status every second, spread over the second (`path`: the floor's
    run asks the app's cheapest answer, /healthz, at the same rate instead)."""
    times: list[float] = []
    lock = threading.Lock()

    def one(n: int, display: requests.Session) -> None:
        stop.wait(POLL * n / len(displays))
        while not stop.is_set():
            started = time.perf_counter()
            display.get(url + path, timeout=10)
            with lock:
                times.append(time.perf_counter() - started)
            stop.wait(POLL)

    poll_while.threads = [threading.Thread(target=one, args=(n, d), daemon=True)
                          for n, d in enumerate(displays)]  # fmt: skip
    for thread in poll_while.threads:
        thread.start()
    return times


def hand_over(url: str, till: requests.Session, display: requests.Session) -> float:
    """The cashier taps; the display, polling every second from a random phase, notices and
    loads its form: seconds from the tap to the form's last byte."""
    page = till.get(url, timeout=10).text
    phase = random.uniform(0, POLL)
    tapped = time.perf_counter()
    started = till.post(url + "display/start", data={"csrf_token": _csrf(page)},
                        allow_redirects=False, timeout=10)  # fmt: skip
    assert started.status_code == 303
    time.sleep(max(0.0, phase - (time.perf_counter() - tapped)))
    while display.get(url + "display/status", timeout=10).json()["status"] != "form":
        time.sleep(POLL)
    form = display.get(url + "display", timeout=10)
    took = time.perf_counter() - tapped
    assert 'data-outcome="form"' in form.text
    till_page = url.rstrip("/") + started.headers["Location"]
    token = _csrf(till.get(till_page, timeout=10).text)
    till.post(till_page + "/cancel", data={"csrf_token": token}, timeout=10)
    display.get(url + "display/rest", timeout=10)
    return took


def alone(browser: requests.Session, address: str, samples: int = 40) -> float:
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        browser.get(address, timeout=10)
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> int:
    args = benchmark.ab_arguments(__doc__.split("\n\n")[0]).parse_args()
    procs = benchmark.Processes()
    work = Path(tempfile.mkdtemp(prefix="engage-display-bench-"))
    try:
        url, _ = benchmark.app_on_simulator(procs, args.latency, work / "state.sqlite3",
                                            HANDOFF_MINUTES="60")  # fmt: skip
        benchmark.signups(url, args.devices, 2.0, with_form=True, tag="warm")
        pairs = [paired_pair(url) for _ in range(DISPLAYS)]
        displays = [display for _till, display in pairs]
        runs: dict[str, list[dict]] = {"alone": [], "displays": [], "floor": []}
        polls: list[float] = []
        order = ("alone", "displays", "floor")
        for round_ in range(args.rounds):
            for name in order if round_ % 2 == 0 else order[::-1]:
                stop = threading.Event()
                if name != "alone":
                    path = "display/status" if name == "displays" else "healthz"
                    polls_now = poll_while(stop, displays, url, path)
                result = benchmark.signups(url, args.devices, args.seconds, with_form=True,
                                           tag=f"{name}-{round_}")  # fmt: skip
                stop.set()
                if name != "alone":
                    for thread in poll_while.threads:
                        thread.join()
                    if name == "displays":
                        polls.extend(polls_now)
                    result["polls"] = len(polls_now)
                runs[name].append(result)
        till, display = pairs[0]
        handovers = [hand_over(url, till, display) for _ in range(HANDOVERS)]
        status_ms = alone(display, url + "display/status")
        form_ms = alone(display, url + "display")
    finally:
        procs.stop()

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    print(f"\n{DISPLAYS} customer displays at rest (a status poll every {POLL:g} s each) vs "
          f"none, L = {args.latency * 1000:.0f} ms, {args.devices} tills signing up, "
          f"{args.rounds} rounds of {args.seconds:.0f} s, alternating")  # fmt: skip
    for key, label in (("p50_s", "sign-up p50 (s)"), ("p99_s", "sign-up p99 (s)"),
                       ("per_second", "sign-ups/s")):  # fmt: skip
        with_, without, floor_ = (median(n, key) for n in ("displays", "alone", "floor"))
        print(f"  {label:<18} displays {with_:8.4f}  none {without:8.4f}  ratio "
              f"{with_ / without:.3f};  /healthz polled alike {floor_:8.4f}  ratio "
              f"{floor_ / without:.3f}")  # fmt: skip
    print(f"  status polls answered meanwhile: {len(polls)}, p50 "
          f"{statistics.median(polls) * 1000:.2f} ms")  # fmt: skip
    ordered = sorted(handovers)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    floor = POLL / 2 * 1000 + status_ms + form_ms
    print(f"  tap to form on the display, {HANDOVERS} hand-overs: p50 "
          f"{statistics.median(handovers) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; its floor "
          f"(half a poll + a status {status_ms:.1f} ms + the form {form_ms:.1f} ms) "
          f"{floor:.0f} ms")  # fmt: skip
    benchmark.save("display", {"runs": runs, "handovers": handovers, "status_ms": status_ms,
                               "form_ms": form_ms})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
