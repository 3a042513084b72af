"""What /metrics costs (issue #26), on demand: not part of the test suite.

    .venv/bin/python tests/perf/metrics_bench.py [--latency 0.05] [--seconds 8] [--rounds 2]

1. Sign-ups with metrics on and off: two copies of the README's server (gunicorn 2 x 16,
   SQLite), each against a simulator of its own with L seconds per Engage call, loaded in
   turn (on, off, on, off, ...) by the benchmark's 16 tills. Reported: the sign-up p50 and the
   CPU per sign-up of each server's whole process tree (from /proc), on as a ratio to off.
2. A scrape's time with 50 stores x 10 outcomes x 2 modes counted (1,000 series, and the
   histograms), in multiprocess mode with two processes' files, beside the form page's time in
   the same process.
Loopback only; everything it starts stops with it.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PERF = Path(__file__).resolve().parent
sys.path.insert(0, str(PERF))
sys.path.insert(0, str(PERF.parent.parent))

import benchmark  # noqa: E402 - the benchmark's tills, servers and helpers

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of `pid` and every process under it, children that ended
    included (cutime, cstime)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(x) for x in fields[11:15]) / CLOCK_TICKS
        todo.extend(children.get(current, []))
    return total


def scrape_cost(samples: int = 200) -> dict:
    """In a process of its own (prometheus-client reads PROMETHEUS_MULTIPROC_DIR at import)."""
    script = r"""
import json, os, sys, time, tempfile
folder = tempfile.mkdtemp(prefix="metrics-bench-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
sys.path.insert(0, sys.argv[1])
from webapp import create_app
from webapp.ops import metrics
config = json.loads(sys.argv[2])
app = create_app(config)
outcomes = ["created", "existing", "in-progress", "ambiguous", "queued", "rejected",
            "timeout", "unavailable", "invalid", "throttled"]
def count():
    for store in range(50):
        for outcome in outcomes:
            for mode in ("staff", "kiosk"):
                metrics.signup(outcome, f"{1000 + store}", mode)
                metrics.signup_time(0.2, mode)
        metrics.engage_call("GET", "/api/v3/contacts/id", 404, None, 0.05)
pid = os.fork()  # a second worker's files, as gunicorn's two workers leave them
if pid == 0:
    count(); os._exit(0)
os.waitpid(pid, 0)
count()
client = app.test_client()
def timed(path, **kw):
    client.get(path, **kw)
    start = time.perf_counter()
    for _ in range(int(sys.argv[3])):
        answer = client.get(path, **kw)
    return (time.perf_counter() - start) / int(sys.argv[3]) * 1000, answer
scrape_ms, answer = timed("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
series = sum(1 for line in answer.get_data(as_text=True).splitlines() if line and line[0] != "#")
from tests.conftest import device_cookie
client.set_cookie("device", device_cookie(config["SECRET_KEY"]))
form_ms, _ = timed("/")
print(json.dumps({"scrape_ms": scrape_ms, "form_ms": form_ms, "series": series}))
"""
    sim = subprocess.Popen([sys.executable, "-m", "webapp.simulator", "--port", "0"],
                           stdout=subprocess.PIPE, text=True, cwd=benchmark.ROOT)  # fmt: skip
    url = sim.stdout.readline().rsplit(" ", 1)[1].strip()
    config = {"ENGAGE_BASE_URL": url, "ENGAGE_API_KEY": "bench",
              "SECRET_KEY": benchmark.SECRET_KEY, "STORE_EXTERNAL_ID": "101",
              "STAFF_PIN": "4711", "HTTPS": False,
              "STATE_DB": str(Path(tempfile.mkdtemp()) / "state.sqlite3")}  # fmt: skip
    try:
        out = subprocess.run(
            [sys.executable, "-c", script, str(benchmark.ROOT), json.dumps(config), str(samples)],
            capture_output=True, text=True, cwd=benchmark.ROOT, timeout=300, check=True,
        ).stdout  # fmt: skip
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    args = benchmark.ab_arguments(__doc__.split("\n\n")[0]).parse_args()
    procs = benchmark.Processes()
    work = Path(tempfile.mkdtemp(prefix="engage-metrics-bench-"))
    servers: dict[str, tuple[str, int]] = {}
    try:
        for name, on in (("on", "true"), ("off", "false")):
            state_db = work / f"{name}.sqlite3"
            url, process = benchmark.app_on_simulator(procs, args.latency, state_db, METRICS=on)
            servers[name] = (url, process.pid)
        for name, (url, _) in servers.items():  # warm up both
            benchmark.signups(url, args.devices, 2.0, with_form=True, tag=f"warm-{name}")
        runs: dict[str, list[dict]] = {"on": [], "off": []}
        for round_ in range(args.rounds):
            for name in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                url, pid = servers[name]
                cpu = tree_cpu(pid)
                result = benchmark.signups(url, args.devices, args.seconds, with_form=True,
                                           tag=f"{name}-{round_}")  # fmt: skip
                result["cpu_per_signup_ms"] = (tree_cpu(pid) - cpu) / result["signups"] * 1000
                runs[name].append(result)
        scrape = scrape_cost()
    finally:
        procs.stop()

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    print(f"\nmetrics on vs off, L = {args.latency * 1000:.0f} ms, {args.devices} tills, "
          f"{args.rounds} rounds of {args.seconds:.0f} s each, alternating")  # fmt: skip
    for key, label in (("p50_s", "sign-up p50 (s)"), ("p99_s", "sign-up p99 (s)"),
                       ("cpu_per_signup_ms", "CPU per sign-up (ms)"),
                       ("per_second", "sign-ups/s")):  # fmt: skip
        on, off = median("on", key), median("off", key)
        print(f"  {label:<22} on {on:8.4f}  off {off:8.4f}  on/off {on / off:.3f}")
    print(f"  a scrape, {scrape['series']} samples: {scrape['scrape_ms']:.2f} ms "
          f"({scrape['scrape_ms'] / scrape['form_ms']:.1f} x the form page's "
          f"{scrape['form_ms']:.2f} ms, same process)")  # fmt: skip
    benchmark.save("metrics", {"runs": runs, "scrape": scrape})
    return 0


if __name__ == "__main__":
    sys.exit(main())
