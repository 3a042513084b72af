"""What a till waits for (issue #28), on demand: not part of the test suite.

    .venv/bin/python tests/perf/cycle_bench.py [--latency 0.05] [--connect-latency 0.04]
        [--seconds 8] [--rounds 2] [--memory-signups 10000]

16 tills in a closed loop, each sign-up the whole cycle a cashier waits through: GET the form,
POST it, follow the redirect to the result page. Against simulators adding L per Engage call
and C per new connection to them (the handshakes to a real tenant), side by side in one run:
the app on SQLite; the app on a PostgreSQL with durable defaults; the floors that show what
its durable writes cost (the same app without its consent records, on each engine; on a
PostgreSQL that never flushes; without any shared state: tests/perf/variants.py); and the lean
floor of about forty lines doing the same two Engage calls (tests/perf/baselines.py
cycle_floor_app: one requests.Session per thread, the template compiled once, gunicorn gthread
2 x 16). Reported: each one's cycle p50 and p99 and CPU per sign-up (its whole process tree,
from /proc) as ratios to the lean floor's, and each server's resident memory per worker. With
--memory-signups N, then N more sign-ups on the app (both engines) and the floor, and each
one's resident memory per worker before and after them.

benchmark.py runs the same measure (without the memory run) and adds its rows to its table.
"""

from __future__ import annotations

import os
import re
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

# name → (engine, variant of tests/perf/variants.py or None); "floor" is the lean floor.
SERVERS = {
    "sqlite": ("sqlite", None),
    "postgresql": ("postgresql", None),
    "sqlite, no consent records": ("sqlite", "without-consent-records"),
    "postgresql, no consent records": ("postgresql", "without-consent-records"),
    "postgresql, never flushing": ("postgresql-noflush", None),
    "no shared state": ("sqlite", "without-state"),
}
TARGETS = {  # (p50, p99, CPU) as ratios to the lean floor, from the issue
    "sqlite": ("<= 1.10", "<= 1.20", "<= 1.15"),
    "postgresql": ("<= 1.20", "", "<= 1.25"),
}


def _cycles(url: str, first: int, devices: int, seconds: float, each: int, tag: str):
    """`devices` tills, each signing people up for `seconds` or `each` times (whichever is
    set): the cycle times of the sign-ups that went through."""
    times: list[float] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds if seconds else None
    slug = re.sub(r"[^a-z0-9]+", "-", tag.lower())  # a part of an email address

    def till(number: int) -> None:
        browser = benchmark._Browser(url)
        browser.cookies["device"] = benchmark.device_cookie(benchmark.SECRET_KEY)
        form_path, count = browser.path, 0
        while (time.monotonic() < deadline) if deadline else count < each:
            count += 1
            started = time.perf_counter()
            browser.path = form_path
            page = browser.request("GET")[2]
            data = {**benchmark.FORM, "email": f"{slug}-{number}-{count}@example.com"}
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


def cycles(url: str, devices: int, tag: str, *, seconds: float = 0, total: int = 0):
    """`devices` tills in two load processes (the generator's own GIL stays out of it), for
    `seconds`, or until they have made `total` sign-ups between them."""
    half = devices // 2
    shares = [half, devices - half]
    each = -(-total // devices) if total else 0
    with ProcessPoolExecutor(2) as pool:
        parts = pool.map(_cycles, [url, url], [0, half], shares, [seconds] * 2, [each] * 2,
                         [tag] * 2)  # fmt: skip
        return [t for part in parts for t in part]


def resident_mb(pid: int) -> list[float]:
    """Resident memory of each worker of the server `pid` (its children), in MB."""
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


def measure(*, latency: float, connect_latency: float, devices: int, seconds: float,
            rounds: int, memory_signups: int = 0, only: list | None = None) -> dict:  # fmt: skip
    procs = benchmark.Processes()
    work = Path(tempfile.mkdtemp(prefix="engage-cycle-bench-"))
    postgres = PostgresServer(durable=True)
    noflush = PostgresServer(durable=False)
    servers: dict[str, tuple[str, int]] = {}
    try:
        for name, (engine, variant) in SERVERS.items():
            if only and name not in only and name != "sqlite":  # sqlite's page is the floor's
                continue
            database = {
                "postgresql": {"DATABASE_URL": postgres.url},
                "postgresql-noflush": {"DATABASE_URL": noflush.url},
            }.get(engine, {})
            url, process = benchmark.app_on_simulator(
                procs, latency, work / f"{len(servers)}.sqlite3", connect_latency=connect_latency,
                variant=variant, **database)  # fmt: skip
            servers[name] = (url, process.pid)
        form_html = benchmark.requests.get(
            servers["sqlite"][0], cookies={"device": benchmark.device_cookie(
                benchmark.SECRET_KEY)}, timeout=10).text  # fmt: skip
        page = re.sub(r'(name="submission" type="hidden" value=")[^"]+', r"\1__TOKEN__",
                      form_html)  # fmt: skip
        (work / "page.html").write_text(page)
        sim_port, floor_port = benchmark.free_port(), benchmark.free_port()
        procs.start([sys.executable, "-m", "webapp.simulator", "--port", str(sim_port),
                     "--latency", str(latency), "--connect-latency", str(connect_latency),
                     "--rate-limit", "1000000"], {},
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
            cycles(url, devices, f"warm-{name}", seconds=2.0)
        runs: dict[str, dict[str, list]] = {n: {"times": [], "cpu": []} for n in servers}
        for round_ in range(rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in order:
                url, pid = servers[name]
                cpu = tree_cpu(pid)
                times = cycles(url, devices, f"{name}-{round_}", seconds=seconds)
                if not times:
                    raise SystemExit(f"cycle_bench: no sign-up went through on {name} ({url})")
                runs[name]["times"].extend(times)
                runs[name]["cpu"].append((tree_cpu(pid) - cpu) / len(times) * 1000)
        memory = {name: {"after_rounds": resident_mb(pid)} for name, (_, pid) in servers.items()}
        for name in [n for n in ("sqlite", "postgresql", "floor") if n in servers] * bool(
            memory_signups
        ):
            url, pid = servers[name]
            memory[name].update(signups=[], after=[])
            for part in range(4):  # in quarters: growth shows as a rise from one to the next
                done = cycles(url, devices, f"memory-{name}-{part}", total=memory_signups // 4)
                memory[name]["signups"].append(len(done))
                memory[name]["after"].append(resident_mb(pid))
    finally:
        procs.stop()
        postgres.stop()
        noflush.stop()
    return {"latency_s": latency, "connect_latency_s": connect_latency, "devices": devices,
            "seconds": seconds, "rounds": rounds, "runs": runs, "memory": memory}  # fmt: skip


def summary(result: dict) -> dict[str, dict[str, float]]:
    """Each server's p50, p99 (s) and CPU per sign-up (ms), and their ratios to the floor's."""
    out = {}
    for name, run in result["runs"].items():
        times = run["times"]
        out[name] = {"p50": statistics.median(times),
                     "p99": statistics.quantiles(times, n=100)[98],
                     "cpu": statistics.median(run["cpu"]), "signups": len(times)}  # fmt: skip
    floor = out["floor"]
    for figures in out.values():
        for key in ("p50", "p99", "cpu"):
            figures[f"{key}_ratio"] = figures[key] / floor[key]
    return out


def rows(result: dict) -> list[tuple[str, float | None, str]]:
    """The cycle's rows for benchmark.py's table: (measure, value, target)."""
    figures = summary(result)
    table = []
    for name, row in figures.items():
        if name == "floor":
            continue
        p50, p99, cpu = TARGETS.get(name, ("", "", ""))
        table += [(f"cycle {name}: p50 / lean floor", row["p50_ratio"], p50),
                  (f"cycle {name}: p99 / lean floor", row["p99_ratio"], p99),
                  (f"cycle {name}: CPU per sign-up / floor", row["cpu_ratio"], cpu)]  # fmt: skip
    floor = figures["floor"]
    table.append(("cycle lean floor: CPU per sign-up (ms)", floor["cpu"], ""))
    return table


def report(result: dict) -> None:
    figures = summary(result)
    floor = figures["floor"]
    L, C = result["latency_s"] * 1000, result["connect_latency_s"] * 1000
    print(f"\nthe whole till cycle (GET form, POST, GET result), L = {L:.0f} ms per call,"
          f" C = {C:.0f} ms per new connection, "
          f"{result['devices']} tills, {result['rounds']} rounds of {result['seconds']:.0f} s "
          "each")  # fmt: skip
    print(f"  {'':<32} {'p50/floor':>9} {'p99/floor':>9} {'CPU/floor':>9} {'CPU ms':>7} "
          f"{'sign-ups':>8} {'RSS/worker MB':>13}")  # fmt: skip
    for name, row in figures.items():
        rss = max(result["memory"][name]["after_rounds"] or [0])
        print(f"  {name:<32} {row['p50_ratio']:>9.2f} {row['p99_ratio']:>9.2f} "
              f"{row['cpu_ratio']:>9.2f} {row['cpu']:>7.2f} {row['signups']:>8} "
              f"{rss:>13.0f}")  # fmt: skip
    print(f"  (the lean floor: p50 {floor['p50'] * 1000:.0f} ms, p99 "
          f"{floor['p99'] * 1000:.0f} ms, CPU {floor['cpu']:.2f} ms per sign-up)")  # fmt: skip
    for name, memory in result["memory"].items():
        if "after" in memory:
            steps = [memory["after_rounds"], *memory["after"]]
            done = [0]
            for count in memory["signups"]:
                done.append(done[-1] + count)
            shown = "; ".join(f"{n}: {', '.join(f'{m:.1f}' for m in mb)}"
                              for n, mb in zip(done, steps, strict=True))  # fmt: skip
            print(f"  memory, {name}: RSS per worker (MB) after N more sign-ups, {shown}")


def main() -> int:
    parser = benchmark.ab_arguments(__doc__.split("\n\n")[0])
    parser.add_argument("--connect-latency", type=float, default=0.04,
                        help="C: seconds per new connection to Engage")  # fmt: skip
    parser.add_argument("--memory-signups", type=int, default=0,
                        help="then this many more sign-ups; memory before and after")  # fmt: skip
    parser.add_argument("--only", action="append", choices=list(SERVERS),
                        help="only these (and sqlite and the lean floor); repeatable")  # fmt: skip
    args = parser.parse_args()
    result = measure(latency=args.latency, connect_latency=args.connect_latency,
                     devices=args.devices, seconds=args.seconds, rounds=args.rounds,
                     memory_signups=args.memory_signups, only=args.only)  # fmt: skip
    report(result)
    benchmark.save("cycle", {**result, "summary": summary(result)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
