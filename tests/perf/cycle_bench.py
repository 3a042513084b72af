"""What a till waits for (issue #28), on demand: not part of the test suite.

    .venv/bin/python tests/perf/cycle_bench.py [--latency 0.05] [--seconds 8] [--rounds 2]

16 tills in a closed loop, each sign-up the whole cycle a cashier waits through: GET the form,
POST it, follow the redirect to the result page. Against a simulator adding L per Engage call,
side by side in one run: the app on SQLite, the app on a PostgreSQL with durable defaults, and
a lean floor of about forty lines doing the same two Engage calls (tests/perf/baselines.py
cycle_floor_app: one requests.Session per thread, the template compiled once, gunicorn gthread
2 x 16). Reported: each one's cycle p50 and p99 and CPU per sign-up (its whole process tree,
from /proc) as ratios to the floor's, and each server's resident memory per worker process.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

PERF = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF))
sys.path.insert(0, str(PERF.parent.parent))

import benchmark  # noqa: E402 - the benchmark's tills, servers and helpers
from metrics_bench import tree_cpu  # noqa: E402

from tests.conftest import PostgresServer  # noqa: E402


def _cycles(url: str, first: int, devices: int, seconds: float, tag: str) -> list[float]:
    times: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def till(number: int) -> None:
        browser = benchmark._Browser(url)
        browser.cookies["device"] = benchmark.device_cookie(benchmark.SECRET_KEY)
        form_path, count = browser.path, 0
        while time.monotonic() < deadline:
            count += 1
            started = time.perf_counter()
            browser.path = form_path
            page = browser.request("GET")[2]
            data = {**benchmark.FORM, "email": f"{tag}-{number}-{count}@example.com"}
            data.update(benchmark.hidden_fields(page))
            status, headers, _ = browser.request("POST", urlencode(data))
            if status != 303:
                continue
            browser.path = headers["location"]
            if browser.request("GET")[0] == 200:
                with lock:
                    times.append(time.perf_counter() - started)

    threads = [threading.Thread(target=till, args=(first + n,)) for n in range(devices)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def cycles(url: str, devices: int, seconds: float, tag: str) -> list[float]:
    """`devices` tills in two load processes (the generator's own GIL stays out of it)."""
    half = devices // 2
    with ProcessPoolExecutor(2) as pool:
        parts = pool.map(_cycles, [url, url], [0, half], [half, devices - half],
                         [seconds, seconds], [tag, tag])  # fmt: skip
        return [t for part in parts for t in part]


def resident_mb(pid: int) -> list[float]:
    """Resident memory of each worker of the server `pid` (its children), in MB."""
    import os

    sizes = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(pid):
            sizes.append(int(fields["VmRSS"].split()[0]) / 1024)
    return sizes


def main() -> int:
    args = benchmark.ab_arguments(__doc__.split("\n\n")[0]).parse_args()
    procs = benchmark.Processes()
    work = Path(tempfile.mkdtemp(prefix="engage-cycle-bench-"))
    postgres = PostgresServer(durable=True)
    servers: dict[str, tuple[str, int]] = {}
    try:
        url, process = benchmark.app_on_simulator(procs, args.latency, work / "state.sqlite3")
        servers["sqlite"] = (url, process.pid)
        url, process = benchmark.app_on_simulator(procs, args.latency, work / "unused.sqlite3",
                                                  DATABASE_URL=postgres.url)  # fmt: skip
        servers["postgresql"] = (url, process.pid)
        form_html = benchmark.requests.get(
            servers["sqlite"][0], cookies={"device": benchmark.device_cookie(
                benchmark.SECRET_KEY)}, timeout=10).text  # fmt: skip
        import re

        page = re.sub(r'(name="submission" type="hidden" value=")[^"]+', r"\1__TOKEN__",
                      form_html)  # fmt: skip
        (work / "page.html").write_text(page)
        sim_port, floor_port = benchmark.free_port(), benchmark.free_port()
        procs.start([sys.executable, "-m", "webapp.simulator", "--port", str(sim_port),
                     "--latency", str(args.latency), "--rate-limit", "1000000"], {},
                    f"http://127.0.0.1:{sim_port}/_simulator/stats")  # fmt: skip
        floor = procs.start(
            [sys.executable, "-m", "gunicorn", "--chdir", str(PERF), "--pythonpath",
             str(benchmark.ROOT), "--log-level", "warning", "--no-control-socket", "-k",
             "gthread", "-w", "2", "--threads", "16", "-b", f"127.0.0.1:{floor_port}",
             "baselines:cycle_floor_app"],
            {"ENGAGE_BASE_URL": f"http://127.0.0.1:{sim_port}", "BARE_PAGE":
             str(work / "page.html")}, f"http://127.0.0.1:{floor_port}/done")  # fmt: skip
        servers["floor"] = (f"http://127.0.0.1:{floor_port}/", floor.pid)
        for name, (url, _) in servers.items():
            cycles(url, args.devices, 2.0, f"warm-{name}")
        runs: dict[str, dict[str, list]] = {n: {"times": [], "cpu": []} for n in servers}
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in order:
                url, pid = servers[name]
                cpu = tree_cpu(pid)
                times = cycles(url, args.devices, args.seconds, f"{name}-{round_}")
                runs[name]["times"].extend(times)
                runs[name]["cpu"].append((tree_cpu(pid) - cpu) / len(times) * 1000)
        memory = {name: resident_mb(pid) for name, (_, pid) in servers.items()}
    finally:
        procs.stop()
        postgres.stop()
    floor_p50 = statistics.median(runs["floor"]["times"])
    floor_p99 = statistics.quantiles(runs["floor"]["times"], n=100)[98]
    floor_cpu = statistics.median(runs["floor"]["cpu"])
    print(f"\nthe whole till cycle (GET form, POST, GET result), L = {args.latency * 1000:.0f} ms, "
          f"{args.devices} tills, {args.rounds} rounds of {args.seconds:.0f} s each")  # fmt: skip
    print(f"  {'':<12} {'p50 vs floor':>13} {'p99 vs floor':>13} {'CPU vs floor':>13} "
          f"{'RSS/worker MB':>14}")  # fmt: skip
    for name in servers:
        times = runs[name]["times"]
        p50, p99 = statistics.median(times), statistics.quantiles(times, n=100)[98]
        cpu = statistics.median(runs[name]["cpu"])
        print(f"  {name:<12} {p50 / floor_p50:>13.2f} {p99 / floor_p99:>13.2f} "
              f"{cpu / floor_cpu:>13.2f} {max(memory[name] or [0]):>14.0f}")  # fmt: skip
    print(f"  (the floor: p50 {floor_p50 * 1000:.0f} ms, p99 {floor_p99 * 1000:.0f} ms, CPU "
          f"{floor_cpu:.2f} ms per sign-up)")  # fmt: skip
    out = benchmark.ROOT / "test-artifacts" / "perf"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cycle.json").write_text(json.dumps({"runs": runs, "memory": memory}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
