"""What the wallet card costs a till (issue #25), on demand: not part of the test suite.

    .venv/bin/python tests/perf/wallet_bench.py [--latency 0.05] [--seconds 8] [--rounds 2]

Two copies of the README's server (gunicorn 2 x 16, SQLite), one with WALLET_CARD_ID set and
one without, each against a simulator of its own with L seconds per Engage call (the wallet
call included). In turn: 16 tills sign people up back to back (the sign-up's own answer, the
POST, as the benchmark's tills time it), then one till does the whole cycle a cashier waits
through (POST, then the result page) N times. Reported: each as a ratio, card on to card off.
The wallet link is asked for on the result page, after the sign-up has its outcome, so the
sign-up's POST should not move, and the result page should grow by about one wallet call.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

PERF = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF))
sys.path.insert(0, str(PERF.parent.parent))

import benchmark  # noqa: E402 - the benchmark's tills, servers and helpers

from webapp.simulator.engine import DEMO_WALLET_CARD  # noqa: E402


def result_pages(url: str, count: int, card: bool) -> list[float]:
    """One till: POST a sign-up, then GET the result page it is sent to; that GET's seconds."""
    browser = benchmark._Browser(url)
    browser.cookies["device"] = benchmark.device_cookie(benchmark.SECRET_KEY)
    form_path, times = browser.path, []
    for n in range(count):
        browser.path = form_path
        page = browser.request("GET")[2]
        data = {**benchmark.FORM, "email": f"page-{time.time_ns()}-{n}@example.com"}
        data.update(benchmark.hidden_fields(page))
        status, headers, _ = browser.request("POST", urlencode(data))
        assert status == 303, status
        browser.path = headers["location"]
        started = time.perf_counter()
        status, _, body = browser.request("GET")
        times.append(time.perf_counter() - started)
        assert status == 200 and ("data-wallet" in body) == card, "the card as configured"
    return times


def main() -> int:
    parser = benchmark.ab_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=100)
    args = parser.parse_args()
    procs = benchmark.Processes()
    work = Path(tempfile.mkdtemp(prefix="engage-wallet-bench-"))
    servers: dict[str, str] = {}
    try:
        for name, card in (("on", DEMO_WALLET_CARD), ("off", "")):
            servers[name], _ = benchmark.app_on_simulator(
                procs, args.latency, work / f"{name}.sqlite3", WALLET_CARD_ID=card
            )
        for name, url in servers.items():
            benchmark.signups(url, args.devices, 2.0, with_form=True, tag=f"warm-{name}")
        runs: dict[str, list[dict]] = {"on": [], "off": []}
        pages: dict[str, list[float]] = {"on": [], "off": []}
        for round_ in range(args.rounds):
            for name in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                tag = f"{name}-{round_}"
                load = benchmark.signups(servers[name], args.devices, args.seconds,
                                         with_form=True, tag=tag)  # fmt: skip
                runs[name].append(load)
                pages[name].extend(result_pages(servers[name], args.pages // args.rounds,
                                                card=name == "on"))  # fmt: skip
    finally:
        procs.stop()

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    print(f"\nwallet card on vs off, L = {args.latency * 1000:.0f} ms (the wallet call too), "
          f"{args.devices} tills, {args.rounds} rounds of {args.seconds:.0f} s, "
          "alternating")  # fmt: skip
    for key, label in (("p50_s", "sign-up p50 (s)"), ("p99_s", "sign-up p99 (s)")):
        on, off = median("on", key), median("off", key)
        print(f"  {label:<24} on {on:8.4f}  off {off:8.4f}  on/off {on / off:.3f}")
    on, off = statistics.median(pages["on"]), statistics.median(pages["off"])
    print(f"  {'result page p50 (s)':<24} on {on:8.4f}  off {off:8.4f}  on/off {on / off:.3f}"
          f"  (+{(on - off) * 1000:.0f} ms: the wallet call, after the outcome)")  # fmt: skip
    benchmark.save("wallet", {"runs": runs, "pages": pages})
    return 0


if __name__ == "__main__":
    sys.exit(main())
