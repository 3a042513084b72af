"""How close engage-signup comes to the floor set by Engage's round trips.

    .venv/bin/python tests/perf/benchmark.py [--latency 0.05] [--devices 16] [--seconds 8]

Loopback only, about a minute and a half. Starts, as separate processes: the Engage simulator,
where every call takes L from its arrival (its own work inside L); the app under its production
server (gunicorn, threaded workers), twice: with its shared state in SQLite, and in a PostgreSQL
the benchmark starts (with PostgreSQL's durable defaults: fsync and synchronous commit on), and
once more on a PostgreSQL that never flushes to disk (fsync off: the flushes' share); a
bare Flask app serving a static page of the form's size
(gunicorn, same workers and threads); a straightforward integration (plain requests.get/post,
a new connection per call, sync workers); and the overhead floor, the least a Flask signup does
with the same two pooled Engage calls, alone and with Flask-WTF's CSRF check and the app's
WTForms form (same workers and threads, against a second simulator, so their calls and
connections are not counted as the app's). The tills are thin http.client loops in two
processes, the same for the app and the baselines. Every figure is a ratio against a baseline
measured in the same run, because these machines are shared and noisy.
With --outbox, also an app whose outbox holds 1,000 kept sign-ups: live sign-ups while it
replays them, and its replay throughput. Then, unless --no-cycle, the whole till cycle (GET
the form, POST it, GET the result; tests/perf/cycle_bench.py) against its lean floor, with new
connections to Engage charged --connect-latency: about two and a half minutes more.
Prints one table and writes it as JSON to test-artifacts/perf/benchmark.json.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlparse

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.components import PostgresServer  # noqa: E402
from tests.conftest import device_cookie  # noqa: E402  as the tests make them
from tests.processes import ending_with_tests  # noqa: E402  no server outlives a killed run
from webapp import serve  # noqa: E402  the production server's defaults

PERF = Path(__file__).resolve().parent
OUT = ROOT / "test-artifacts" / "perf"
LIGHTHOUSE_VERSION = "12.2.3"  # runs offline on Node 20 (shared/field-notes.md)
CHROME_FLAGS = (
    "--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync"
)
FORM = {"firstName": "Bench", "countryCode": "SE", "consent-memberConsent": "y"}
SECRET_KEY = "bench-secret-key-0123456789"


def save(name: str, result: dict) -> Path:
    """A benchmark's figures as JSON in test-artifacts/perf/<name>.json."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Processes:
    def __init__(self):
        self.running: list[subprocess.Popen] = []

    def start(self, command: list[str], env: dict, ready: str) -> subprocess.Popen:
        process = subprocess.Popen(
            ending_with_tests(command), env={**os.environ, **env}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        self.running.append(process)
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(ready, timeout=2)
                return process
            except requests.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"could not start: {' '.join(command)}") from None
                time.sleep(0.1)

    def stop(self):
        for process in self.running:
            process.send_signal(signal.SIGTERM)
        for process in self.running:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def ab_arguments(description: str):
    """The options the A/B benchmarks (metrics, handoff, wallet) share."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--latency", type=float, default=0.05, help="L: seconds per Engage call")
    parser.add_argument("--seconds", type=float, default=8.0, help="per load phase")
    parser.add_argument("--rounds", type=int, default=2, help="phases per side, alternating")
    parser.add_argument("--devices", type=int, default=16)
    return parser


def app_on_simulator(
    procs: Processes,
    latency: float,
    state_db: Path,
    *,
    connect_latency: float = 0.0,
    variant: str | None = None,
    **settings: str,
):
    """The README's server (its production settings) against a simulator of its own with
    `latency` per Engage call and `connect_latency` per new connection to it: (the app's base
    URL, the server's process). `variant`: the server of tests/perf/variants.py instead, the
    app with one guarantee taken out (a floor)."""
    py = sys.executable
    sim_port, app_port = free_port(), free_port()
    procs.start([py, "-m", "webapp.simulator", "--port", str(sim_port), "--latency",
                 str(latency), "--connect-latency", str(connect_latency), "--rate-limit",
                 "1000000"], {}, f"http://127.0.0.1:{sim_port}/_simulator/stats")  # fmt: skip
    env = {"ENGAGE_BASE_URL": f"http://127.0.0.1:{sim_port}", "ENGAGE_API_KEY": "bench",
           "SECRET_KEY": SECRET_KEY, "STORE_EXTERNAL_ID": "101", "STAFF_PIN": "4711",
           "HTTPS": "false", "STATE_DB": str(state_db), "SUBMIT_LIMIT_PER_DEVICE": "10000",
           "SUBMIT_LIMIT_PER_ADDRESS": "100000", "PUBLIC_URL": f"http://127.0.0.1:{app_port}",
           **settings}  # fmt: skip
    server = [str(PERF / "variants.py"), variant] if variant else ["-m", "webapp.serve"]
    process = procs.start([py, *server, "--port", str(app_port)], env,
                          f"http://127.0.0.1:{app_port}/healthz")  # fmt: skip
    return f"http://127.0.0.1:{app_port}/", process


def wake_cost(idle: float, samples: int = 40) -> dict:
    """What this machine charges for waking up: the same small piece of Python (about 0.1 ms)
    timed straight after another run of it, and after sleeping `idle` seconds.

    Not the app: a calibration for reading its overhead, which is measured right after each
    wait for Engage. On a virtual machine the difference can be several times the work itself.
    """
    data = {"numbers": list(range(40)), "text": "x" * 200}

    def work():
        for _ in range(8):
            json.loads(json.dumps(data))

    def timed(pause: float) -> float:
        times = []
        for _ in range(samples):
            work()
            if pause:
                time.sleep(pause)
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return percentile(times, 50) * 1e6

    warm, woken = timed(0), timed(idle)
    return {"warm_us": warm, "after_idle_us": woken}


def hidden_fields(page: str) -> list[tuple[str, str]]:
    """The form's hidden inputs (CSRF and submission tokens), as a browser would send them."""
    return re.findall(r'name="([^"]+)" type="hidden" value="([^"]*)"', page)


def server_timing(header: str) -> dict[str, float]:
    """Server-Timing's durations in ms: {"app": …, "engage": …}."""
    return {name: float(ms) for name, ms in re.findall(r"(\w+);dur=([\d.]+)", header)}


def in_process_signups(env: dict, count: int) -> dict:
    """App overhead (Server-Timing app;dur) of `count` signups through Flask's test client,
    in this process, against the running simulator: what the code costs when the CPU is warm
    and nothing else competes for it, without a server, sockets to the tills or other threads.
    """
    from webapp import create_app

    # Logged as the server logs (LOG_LEVEL's default, INFO: a line per request and Engage
    # call), into nothing: the lines' cost is the app's, where they go is not.
    serve.configure_logging("INFO", stream=open(os.devnull, "w"))
    app = create_app(dict(env))
    browser = app.test_client()
    browser.set_cookie("device", device_cookie(SECRET_KEY))  # a till enrolled on /setup/
    app_ms = []
    for n in range(count + 20):  # the first 20 warm up caches and the connection
        page = browser.get("/").get_data(as_text=True)
        data = {**FORM, "email": f"in-process-{n}@example.com"}
        data.update(hidden_fields(page))
        response = browser.post("/", data=data)
        timing = server_timing(response.headers.get("Server-Timing", ""))
        if response.status_code == 303 and "app" in timing and n >= 20:
            app_ms.append(timing["app"])
    app.extensions["engage"].close()
    return {
        "signups": len(app_ms),
        "app_ms_p50": percentile(app_ms, 50),
        "app_ms_p95": percentile(app_ms, 95),
    }


def signups(url: str, devices: int, seconds: float, *, with_form: bool, tag: str) -> dict:
    """`devices` tills signing people up back to back; latency is the POST's, as a person waits.

    The tills run in up to two processes, so the load generator's own GIL does not add to the
    latencies it measures.
    """
    processes = min(2, devices)
    shares = [
        devices // processes + (1 if i < devices % processes else 0) for i in range(processes)
    ]
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("fork")) as pool:
        parts = list(
            pool.map(
                _tills,
                [url] * processes,
                [sum(shares[:i]) for i in range(processes)],
                shares,
                [seconds] * processes,
                [with_form] * processes,
                [tag] * processes,
            )
        )
    latencies = [x for p in parts for x in p["latencies"]]
    app_ms = [x for p in parts for x in p["app_ms"]]
    engage_ms = [x for p in parts for x in p["engage_ms"]]
    state_ms = [x for p in parts for x in p["state_ms"]]
    wall = max(p["wall"] for p in parts)
    return {
        "signups": len(latencies),
        "errors": sum(p["errors"] for p in parts),
        "per_second": len(latencies) / wall,
        "p50_s": percentile(latencies, 50) if latencies else None,
        "p99_s": percentile(latencies, 99) if latencies else None,
        "app_ms_p50": percentile(app_ms, 50) if app_ms else None,
        "app_ms_p95": percentile(app_ms, 95) if app_ms else None,
        "engage_ms_p50": percentile(engage_ms, 50) if engage_ms else None,
        "state_ms_p50": percentile(state_ms, 50) if state_ms else None,
        "state_ms_p95": percentile(state_ms, 95) if state_ms else None,
    }


def _tills(url, first, devices, seconds, with_form, tag) -> dict:
    latencies: list[float] = []
    app_ms: list[float] = []
    engage_ms: list[float] = []
    state_ms: list[float] = []
    errors = 0
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def till(number: int):
        nonlocal errors
        browser = _Browser(url)
        if with_form:  # the app: a till that staff enrolled on /setup/
            browser.cookies["device"] = device_cookie(SECRET_KEY)
        count = 0
        while time.monotonic() < deadline:
            count += 1
            data = {**FORM, "email": f"{tag}-{number}-{count}@example.com"}
            if with_form:
                page = browser.request("GET")[2]
                data.update(hidden_fields(page))
            started = time.perf_counter()
            status, headers, _body = browser.request("POST", urlencode(data))
            elapsed = time.perf_counter() - started
            timing = server_timing(headers.get("server-timing", ""))
            with lock:
                if status != 303:
                    errors += 1
                    continue
                latencies.append(elapsed)
                if "app" in timing and "engage" in timing:
                    app_ms.append(timing["app"])
                    engage_ms.append(timing["engage"])
                if "state" in timing:
                    state_ms.append(timing["state"])

    started = time.monotonic()
    tills = [threading.Thread(target=till, args=(first + n,)) for n in range(devices)]
    for t in tills:
        t.start()
    for t in tills:
        t.join()
    return {"latencies": latencies, "app_ms": app_ms, "engage_ms": engage_ms,
            "state_ms": state_ms, "errors": errors, "wall": time.monotonic() - started}  # fmt: skip


class _Browser:
    """One till's browser: a keep-alive connection and its cookies, and nothing else.

    http.client rather than requests: the load generator shares the cores with what it
    measures, so it should cost as little as it can (requests costs about four times as much
    CPU per request, and that showed up as signup latency).
    """

    def __init__(self, url: str):
        parsed = urlparse(url)
        self.path = parsed.path or "/"
        self.connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, body: str | None = None) -> tuple[int, dict, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.connection.request(method, self.path, body=body, headers=headers)
        response = self.connection.getresponse()
        text = response.read().decode()
        for header in response.headers.get_all("Set-Cookie") or ():
            name, _, rest = header.partition("=")
            value, _, attributes = rest.partition(";")
            attributes = attributes.lower()
            if "max-age=0" in attributes or "expires=thu, 01 jan 1970" in attributes:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        return response.status, {k.lower(): v for k, v in response.headers.items()}, text


def page_rate(url: str, seconds: float, connections: int, cookie: str = "") -> float:
    """GET requests per second: wrk when installed, else a Python load from two processes."""
    if shutil.which("wrk"):
        header = ["-H", f"Cookie: {cookie}"] if cookie else []
        out = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{int(seconds)}s", *header, url],
            capture_output=True, text=True, timeout=seconds + 30,
        ).stdout  # fmt: skip
        return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    code = (
        "import http.client,sys,threading,time\n"
        "u=sys.argv[1].split(':');h,p=u[1].strip('/'),int(u[2].strip('/'));d=float(sys.argv[2])\n"
        "k={'Cookie':sys.argv[3]} if sys.argv[3] else {}\n"
        "n=[0];end=time.monotonic()+d\n"
        "def w():\n c=http.client.HTTPConnection(h,p)\n while time.monotonic()<end:\n"
        "  c.request('GET','/',headers=k);c.getresponse().read();n[0]+=1\n"
        f"t=[threading.Thread(target=w) for _ in range({connections // 2})]\n"
        "[x.start() for x in t];[x.join() for x in t];print(n[0]/d)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, url, str(seconds), cookie],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]  # fmt: skip
    return sum(float(p.communicate()[0]) for p in procs)


def page_weight(url: str) -> dict:
    """The form page and all it loads: bytes raw and gzip-compressed, third parties, fonts."""
    html = requests.get(url, cookies={"device": device_cookie(SECRET_KEY)}, timeout=10).content
    host = urlparse(url).netloc
    links = re.findall(rb'(?:href|src)="([^"]+)"', html)
    resources = {"/": html}
    third_party = []
    for link in links:
        target = urljoin(url, link.decode())
        parsed = urlparse(target)
        if parsed.scheme in ("http", "https") and parsed.netloc != host:
            third_party.append(target)
        elif parsed.path.startswith("/static/"):
            resources[parsed.path] = requests.get(target, timeout=10).content
    css = b"".join(v for k, v in resources.items() if k.endswith(".css"))
    fonts = bool(re.search(rb"@font-face|\.woff2?|\.ttf|\.otf", css + html))
    return {
        "resources": {k: len(v) for k, v in resources.items()},
        "raw_bytes": sum(len(v) for v in resources.values()),
        "gzip_bytes": sum(len(gzip.compress(v, 6)) for v in resources.values()),
        "third_party": third_party,
        "web_fonts": fonts,
    }


def lighthouse(url: str) -> dict:
    node, chromium = shutil.which("node"), shutil.which("chromium")
    if not (node and chromium and shutil.which("npm")):
        return {"skipped": "Lighthouse needs Node, npm and Chromium; one of them is missing"}
    home = PERF / ".lighthouse"
    binary = home / "node_modules" / ".bin" / "lighthouse"
    if not binary.exists():
        home.mkdir(exist_ok=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(home), "-E", f"lighthouse@{LIGHTHOUSE_VERSION}",
             "--no-fund", "--no-audit", "--loglevel=error"],
            check=True, timeout=300, capture_output=True,
        )  # fmt: skip
    with tempfile.TemporaryDirectory() as profile:
        report = Path(profile) / "report.json"
        subprocess.run(
            [str(binary), url, "--quiet", "--output=json", f"--output-path={report}",
             "--only-categories=performance,accessibility,best-practices", "--form-factor=mobile",
             f"--chrome-flags={CHROME_FLAGS} --user-data-dir={profile}/chrome"],
            env={**os.environ, "CHROME_PATH": chromium}, timeout=180, capture_output=True,
        )  # fmt: skip
        if not report.exists():
            return {"skipped": "Lighthouse ran but wrote no report"}
        data = json.loads(report.read_text())
    scores = {k: v["score"] for k, v in data["categories"].items()}
    audits = data["audits"]
    return {
        **scores,
        "first_contentful_paint_ms": audits["first-contentful-paint"]["numericValue"],
        "largest_contentful_paint_ms": audits["largest-contentful-paint"]["numericValue"],
        "total_blocking_time_ms": audits["total-blocking-time"]["numericValue"],
        "version": LIGHTHOUSE_VERSION,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.05, help="L: seconds per Engage call")
    parser.add_argument("--devices", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0, help="per signup load phase")
    parser.add_argument("--workers", type=int, default=serve.WORKERS)
    parser.add_argument("--threads", type=int, default=serve.THREADS)
    parser.add_argument("--no-lighthouse", action="store_true")
    parser.add_argument("--no-cycle", action="store_true", help="without the whole-cycle rows")
    parser.add_argument("--connect-latency", type=float, default=0.04,
                        help="the cycle's C: seconds per new connection to Engage")  # fmt: skip
    parser.add_argument(
        "--outbox",
        action="store_true",
        help="also: replay throughput, and live sign-ups while 1,000 kept ones are replayed",
    )
    args = parser.parse_args()
    L = args.latency
    py = sys.executable
    names = (
        "sim",
        "sim_pg",
        "app",
        "app_pg",
        "app_pg_noflush",
        "bare",
        "naive",
        "sim_floor",
        "floor",
        "form_floor",
    )
    ports = {name: free_port() for name in names}
    url = {name: f"http://127.0.0.1:{port}/" for name, port in ports.items()}
    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="engage-bench-"))
    result: dict = {"latency_s": L, "devices": args.devices, "workers": args.workers,
                    "threads": args.threads}  # fmt: skip
    result["wake"] = wake_cost(L)
    postgres = postgres_noflush = None
    try:
        procs.start(
            [py, "-m", "webapp.simulator", "--port", str(ports["sim"]), "--latency", str(L),
             "--rate-limit", "1000000"],
            {}, url["sim"] + "_simulator/stats",
        )  # fmt: skip
        app_env = {
            "ENGAGE_BASE_URL": url["sim"].rstrip("/"), "ENGAGE_API_KEY": "bench",
            "SECRET_KEY": SECRET_KEY, "STORE_EXTERNAL_ID": "101", "STAFF_PIN": "4711",
            "HTTPS": "false", "STATE_DB": str(work / "state.sqlite3"),
            "SUBMIT_LIMIT_PER_DEVICE": "10000", "SUBMIT_LIMIT_PER_ADDRESS": "100000",
            "PUBLIC_URL": url["app"].rstrip("/"),  # the form page as before: the phone button on
        }  # fmt: skip
        procs.start(
            [py, "-m", "webapp.serve", "--port", str(ports["app"]), "--workers",
             str(args.workers), "--threads", str(args.threads)],
            app_env, url["app"] + "healthz",
        )  # fmt: skip
        # The app on PostgreSQL, with a simulator of its own (so the SQLite app's connection
        # counts below stay its own).
        procs.start(
            [py, "-m", "webapp.simulator", "--port", str(ports["sim_pg"]), "--latency", str(L),
             "--rate-limit", "1000000"],
            {}, url["sim_pg"] + "_simulator/stats",
        )  # fmt: skip
        postgres = PostgresServer(durable=True)
        procs.start(
            [py, "-m", "webapp.serve", "--port", str(ports["app_pg"]), "--workers",
             str(args.workers), "--threads", str(args.threads)],
            {**app_env, "DATABASE_URL": postgres.url, "ENGAGE_BASE_URL": url["sim_pg"][:-1]},
            url["app_pg"] + "healthz",
        )  # fmt: skip
        # A floor for it: the same app on a PostgreSQL that never flushes to disk (fsync off),
        # so what the durable commits' flushes cost shows apart from everything else.
        postgres_noflush = PostgresServer(durable=False)
        procs.start(
            [py, "-m", "webapp.serve", "--port", str(ports["app_pg_noflush"]), "--workers",
             str(args.workers), "--threads", str(args.threads)],
            {**app_env, "DATABASE_URL": postgres_noflush.url,
             "ENGAGE_BASE_URL": url["sim_pg"][:-1]},
            url["app_pg_noflush"] + "healthz",
        )  # fmt: skip
        form_html = requests.get(
            url["app"], cookies={"device": device_cookie(SECRET_KEY)}, timeout=10
        ).content
        (work / "page.html").write_bytes(form_html)
        gunicorn = [py, "-m", "gunicorn", "--chdir", str(PERF), "--pythonpath", str(ROOT),
                    "--log-level", "warning", "--no-control-socket"]  # fmt: skip
        procs.start(
            [*gunicorn, "-k", "gthread", "-w", str(args.workers), "--threads", str(args.threads),
             "-b", f"127.0.0.1:{ports['bare']}", "baselines:bare_app"],
            {"BARE_PAGE": str(work / "page.html")}, url["bare"],
        )  # fmt: skip
        procs.start(
            [*gunicorn, "-k", "sync", "-w", str(args.workers), "-b", f"127.0.0.1:{ports['naive']}",
             "baselines:naive_app"],
            {"ENGAGE_BASE_URL": url["sim"].rstrip("/")}, url["naive"] + "thanks",
        )  # fmt: skip
        procs.start(
            [py, "-m", "webapp.simulator", "--port", str(ports["sim_floor"]), "--latency",
             str(L), "--rate-limit", "1000000"],
            {}, url["sim_floor"] + "_simulator/stats",
        )  # fmt: skip
        procs.start(
            [*gunicorn, "-k", "gthread", "-w", str(args.workers), "--threads", str(args.threads),
             "-b", f"127.0.0.1:{ports['floor']}", "baselines:floor_app"],
            {"ENGAGE_BASE_URL": url["sim_floor"].rstrip("/")}, url["floor"] + "thanks",
        )  # fmt: skip
        procs.start(
            [*gunicorn, "-k", "gthread", "-w", str(args.workers), "--threads", str(args.threads),
             "-b", f"127.0.0.1:{ports['form_floor']}", "baselines:form_floor_app"],
            {"ENGAGE_BASE_URL": url["sim_floor"].rstrip("/")}, url["form_floor"],
        )  # fmt: skip

        # 1. App overhead with one device: Server-Timing's app;dur, no queueing for the cores.
        result["one_device"] = signups(url["app"], 1, 4, with_form=True, tag="seq")
        result["pg_one_device"] = signups(url["app_pg"], 1, 4, with_form=True, tag="pg-seq")
        result["pg_noflush_one_device"] = signups(
            url["app_pg_noflush"], 1, 4, with_form=True, tag="pg-noflush-seq"
        )
        # The floor under the same load: what Flask, requests and this machine cost anyway.
        result["floor_one_device"] = signups(url["floor"], 1, 4, with_form=False, tag="floor")
        result["form_floor_one_device"] = signups(
            url["form_floor"], 1, 4, with_form=True, tag="form-floor"
        )
        # The same with Engage answering at once: the CPU stays warm between requests, which
        # separates what the code costs from what waking up after each 50 ms wait costs.
        settings = url["sim"] + "_simulator/settings"
        requests.post(settings, json={"latency": 0}, timeout=5)
        result["one_device_warm"] = signups(url["app"], 1, 3, with_form=True, tag="warm")
        # The code alone: the same signups in this process, no server and no other threads.
        opened = url["sim"] + "_simulator/stats"
        own_before = requests.get(opened, timeout=5).json()["connections_opened"]
        result["in_process"] = in_process_signups(
            {**app_env, "STATE_DB": str(work / "in-process.sqlite3")}, 300
        )
        own_after = requests.get(opened, timeout=5).json()["connections_opened"]
        in_process_connections = own_after - own_before - 1  # not the server's: left out below
        requests.post(settings, json={"latency": L}, timeout=5)
        # 2. The form page against a bare Flask page of the same size.
        # A device reloading the form carries its session cookie; a first visit does not.
        device = requests.Session()
        device.cookies.set("device", device_cookie(SECRET_KEY))
        device.get(url["app"], timeout=10)
        cookie = "; ".join(f"{k}={v}" for k, v in device.cookies.items())
        # Taken in turns, so a change in the machine's load meets both sides of the ratio.
        rates: dict[str, list[float]] = {"form": [], "first": [], "bare": []}
        for _ in range(3):
            rates["bare"].append(page_rate(url["bare"], 2, args.devices))
            rates["form"].append(page_rate(url["app"], 2, args.devices, cookie))
            first_visit = f"device={device_cookie(SECRET_KEY)}"  # enrolled, no session yet
            rates["first"].append(page_rate(url["app"], 1, args.devices, first_visit))
        result["page_rates"] = rates
        result["form_rps"] = sum(rates["form"]) / 3
        result["form_rps_first_visit"] = sum(rates["first"]) / 3
        result["bare_rps"] = sum(rates["bare"]) / 3
        # 3. Signups at N devices, against the straightforward integration.
        before = requests.get(url["sim"] + "_simulator/stats", timeout=5).json()
        result["app"] = signups(url["app"], args.devices, args.seconds, with_form=True, tag="app")
        after = requests.get(url["sim"] + "_simulator/stats", timeout=5).json()
        result["app_pg"] = signups(
            url["app_pg"], args.devices, args.seconds, with_form=True, tag="pg"
        )
        result["app_pg_noflush"] = signups(
            url["app_pg_noflush"], args.devices, args.seconds, with_form=True, tag="pg-noflush"
        )
        result["naive"] = signups(
            url["naive"], args.devices, args.seconds, with_form=False, tag="naive"
        )
        naive_after = requests.get(url["sim"] + "_simulator/stats", timeout=5).json()
        result["floor"] = signups(
            url["floor"], args.devices, args.seconds / 2, with_form=False, tag="floor-n"
        )
        # Each stats request is one connection of the benchmark's own: take those out.
        result["app_connections_opened"] = (
            after["connections_opened"] - before["connections_opened"] - 1
        )
        result["naive_connections_opened"] = (
            naive_after["connections_opened"] - after["connections_opened"] - 1
        )
        # Connections the app's server opened over the whole run (phases 1 and 3): all but the
        # benchmark's own seven (start-up check, two settings changes, two stats around the
        # in-process signups, before, after) and those of the in-process signups.
        result["app_connections_whole_run"] = (
            after["connections_opened"] - 7 - in_process_connections
        )
        if args.outbox:
            result["outbox"] = outbox_run(args, work, app_env, procs)
        result["page"] = page_weight(url["app"])
        result["lighthouse"] = (
            {"skipped": "--no-lighthouse"} if args.no_lighthouse else lighthouse(url["app"])
        )
    finally:
        procs.stop()
        for server in (postgres, postgres_noflush):
            if server is not None:
                server.stop()
        shutil.rmtree(work, ignore_errors=True)
    if not args.no_cycle:  # with servers of its own, once the others are gone (cycle_bench.py)
        import cycle_bench

        result["cycle"] = cycle_bench.measure(
            latency=L, connect_latency=args.connect_latency, devices=args.devices,
            seconds=args.seconds, rounds=2,
        )  # fmt: skip
    report(result)
    return 0


BACKLOG = 1000
REPLAYS_PER_SECOND = 50  # the outbox's cap for this run (the default, 5, would take minutes)


def outbox_run(args, work: Path, app_env: dict, procs: Processes) -> dict:
    """An app of its own, against a simulator of its own at the same L, whose outbox already
    holds BACKLOG due sign-ups when it starts: the tills sign people up while its workers
    replay, then the rest of the backlog drains. Replay throughput is taken over the drain."""
    from cryptography.fernet import Fernet

    from webapp.signup.flow import Signup, build_contact
    from webapp.signup.outbox import Outbox
    from webapp.store import open_store

    py, L = sys.executable, args.latency
    sim_port, app_port = free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    procs.start(
        [py, "-m", "webapp.simulator", "--port", str(sim_port), "--latency", str(L),
         "--rate-limit", "1000000"],
        {}, sim + "/_simulator/stats",
    )  # fmt: skip
    key = Fernet.generate_key().decode()
    state_db = work / "outbox.sqlite3"
    store = open_store({"STATE_DB": str(state_db), "WEB_THREADS": 2}, instance_path=str(work))
    outbox = Outbox(store, (key,), days=7)
    for n in range(BACKLOG):
        contact = build_contact(
            {"email": f"kept-{n}@example.com", "firstName": "Kept", "countryCode": "SE"},
            contact_type="Member", lang="sv", consents=[("memberConsent", "benchmark")],
        )  # fmt: skip
        outbox.keep(
            Signup(contact, "email", "Member", "101", form_fields=frozenset({"email"})),
            device_id="bench",
            mode="staff",
        )
    store.outbox_retry()  # all due at once
    env = {**app_env, "ENGAGE_BASE_URL": sim, "STATE_DB": str(state_db), "OUTBOX_KEYS": key,
           "OUTBOX_REPLAY_PER_SECOND": str(REPLAYS_PER_SECOND)}  # fmt: skip
    started = time.monotonic()
    procs.start(
        [py, "-m", "webapp.serve", "--port", str(app_port), "--workers", str(args.workers),
         "--threads", str(args.threads)],
        env, f"http://127.0.0.1:{app_port}/healthz",
    )  # fmt: skip
    live = signups(
        f"http://127.0.0.1:{app_port}/", args.devices, args.seconds, with_form=True, tag="ob"
    )
    left_after_live = store.outbox_count()
    while store.outbox_count() and time.monotonic() - started < 300:
        time.sleep(0.2)
    drained = time.monotonic() - started
    left = store.outbox_count()
    store.close()
    return {
        "live": live,
        "backlog": BACKLOG,
        "replayed_during_live": BACKLOG - left_after_live,
        "seconds_to_drain": drained,
        "left": left,
        "replays_per_second": (BACKLOG - left) / drained,
        "cap_per_second": REPLAYS_PER_SECOND,
    }


def report(r: dict) -> None:
    L = r["latency_s"]
    floor = 2 * L
    app, naive, one, floor_one = r["app"], r["naive"], r["one_device"], r["floor_one_device"]
    pg, pg_one = r["app_pg"], r["pg_one_device"]
    threads = r["workers"] * r["threads"]
    lh = r["lighthouse"]
    rows = [
        ("signup p50 / 2L", app["p50_s"] / floor, "<= 1.10"),
        ("signup p99 / 2L", app["p99_s"] / floor, "<= 1.50"),
        ("  of which waiting on Engage, p50 / 2L", app["engage_ms_p50"] / 1000 / floor, ""),
        ("app overhead p50, 1 device (ms)", one["app_ms_p50"], ""),
        ("app overhead p95, 1 device / L", one["app_ms_p95"] / (L * 1000), "<= 0.02"),
        ("  floor (Flask + 2 pooled calls): p95 / L", floor_one["app_ms_p95"] / (L * 1000), ""),
        ("  floor + Flask-WTF CSRF and form: p95 / L", r["form_floor_one_device"]["app_ms_p95"]
         / (L * 1000), ""),
        ("  same, Engage answering at once: p95 / L", r["one_device_warm"]["app_ms_p95"]
         / (L * 1000), ""),
        ("  the code alone, in one process: p95 / L", r["in_process"]["app_ms_p95"]
         / (L * 1000), ""),
        ("state time per signup p50 (ms), SQLite", one["state_ms_p50"], ""),
        ("PostgreSQL: signup p50 / 2L", pg["p50_s"] / floor, "<= 1.10"),
        ("PostgreSQL: signup p99 / 2L", pg["p99_s"] / floor, "<= 1.50"),
        ("PostgreSQL: overhead p95, 1 device / form floor", pg_one["app_ms_p95"]
         / r["form_floor_one_device"]["app_ms_p95"], "<= 1.50"),
        ("SQLite: overhead p95, 1 device / form floor", one["app_ms_p95"]
         / r["form_floor_one_device"]["app_ms_p95"], ""),
        ("state time per signup p50 (ms), PostgreSQL", pg_one["state_ms_p50"], ""),
        ("  p95 (ms), PostgreSQL", pg_one["state_ms_p95"], ""),
        (f"  p50 (ms), PostgreSQL, {r['devices']} devices", pg["state_ms_p50"], ""),
        ("  floor, PostgreSQL never flushing: signup p50 / 2L", r["app_pg_noflush"]["p50_s"]
         / floor, ""),
        ("  floor, never flushing: state p50 (ms), 1 device", r["pg_noflush_one_device"]
         ["state_ms_p50"], ""),
        (f"  floor, never flushing: state p50 (ms), {r['devices']} devices",
         r["app_pg_noflush"]["state_ms_p50"], ""),
        (f"  p50 (ms), SQLite, {r['devices']} devices", app["state_ms_p50"], ""),
        (f"app overhead p50, {r['devices']} devices (ms)", app["app_ms_p50"], ""),
        (f"app overhead p95, {r['devices']} devices / L", app["app_ms_p95"] / (L * 1000),
         "<= 0.02"),
        ("  floor (Flask + 2 pooled calls): p95 / L", r["floor"]["app_ms_p95"] / (L * 1000),
         ""),
        ("form page req/s / bare Flask (device)", r["form_rps"] / r["bare_rps"], ">= 0.60"),
        ("form page req/s / bare (first visit)", r["form_rps_first_visit"] / r["bare_rps"], ""),
        ("signups/s / straightforward", app["per_second"] / naive["per_second"], ">= 5.0"),
        ("signup p99 / straightforward p99", app["p99_s"] / naive["p99_s"], ""),
        ("Engage connections per 100 signups", 100 * r["app_connections_opened"] / app["signups"],
         ""),
        ("straightforward: connections per 100", 100 * r["naive_connections_opened"]
         / max(1, naive["signups"]), ""),
        ("new connections, whole run / threads", r["app_connections_whole_run"] / threads,
         "<= 1.00"),
        ("page + assets raw (KB)", r["page"]["raw_bytes"] / 1024, "<= 30"),
        ("page + assets gzip (KB)", r["page"]["gzip_bytes"] / 1024, "<= 10"),
        ("third-party requests", len(r["page"]["third_party"]), "0"),
        ("web fonts", int(r["page"]["web_fonts"]), "0"),
        *(_outbox_rows(r) if "outbox" in r else []),
        *(_cycle_rows(r) if "cycle" in r else []),
        ("Lighthouse performance", lh.get("performance"), ">= 0.95"),
        ("Lighthouse accessibility", lh.get("accessibility"), "1.00"),
        ("machine: Python after L idle / warm", r["wake"]["after_idle_us"]
         / r["wake"]["warm_us"], ""),
    ]  # fmt: skip
    r["table"] = []
    print(f"\nengage-signup benchmark: L = {L * 1000:.0f} ms per Engage call, "
          f"{r['devices']} devices, {r['workers']} workers x {r['threads']} threads")  # fmt: skip
    print(f"  app on PostgreSQL: {pg['signups']} signups, {pg['per_second']:.1f}/s, "
          f"{pg['errors']} errors")  # fmt: skip
    print(f"  app: {app['signups']} signups, {app['per_second']:.1f}/s, {app['errors']} errors; "
          f"straightforward: {naive['signups']}, {naive['per_second']:.1f}/s, "
          f"{naive['errors']} errors; form {r['form_rps']:.0f} req/s, "
          f"bare {r['bare_rps']:.0f} req/s")  # fmt: skip
    print(f"  {'measure':<58} {'value':>9}  target   met")
    for name, value, target in rows:
        met = _meets(value, target)
        shown = "skipped" if value is None else f"{value:9.3f}"
        print(f"  {name:<58} {shown:>9}  {target:<8} {met}")
        r["table"].append({"measure": name, "value": value, "target": target, "met": met})
    if "skipped" in lh:
        print(f"  Lighthouse: {lh['skipped']}")
    print(f"  machine calibration: {r['wake']['warm_us']:.0f} us of Python took "
          f"{r['wake']['after_idle_us']:.0f} us right after {L * 1000:.0f} ms idle")  # fmt: skip
    print(f"  written to {save('benchmark', r)}")


def _outbox_rows(r: dict) -> list[tuple]:
    ob, app, floor = r["outbox"], r["app"], 2 * r["latency_s"]
    return [
        ("outbox: replays/s / cap", ob["replays_per_second"] / ob["cap_per_second"], ">= 0.90"),
        (f"  backlog of {ob['backlog']}: seconds to drain", ob["seconds_to_drain"], ""),
        ("  signup p50 / 2L while replaying", ob["live"]["p50_s"] / floor, "<= 1.10"),
        ("  signup p99 / 2L while replaying", ob["live"]["p99_s"] / floor, "<= 1.50"),
        ("  signup p50 replaying / not (same run)", ob["live"]["p50_s"] / app["p50_s"], ""),
        ("  signup p99 replaying / not (same run)", ob["live"]["p99_s"] / app["p99_s"], ""),
    ]


def _cycle_rows(r: dict) -> list[tuple]:
    """The whole till cycle (GET form, POST, GET result) against the lean floor, and the floors
    of the app with its durable writes taken out (cycle_bench.py)."""
    import cycle_bench

    return cycle_bench.rows(r["cycle"])


def _meets(value, target: str) -> str:
    if value is None or not target:
        return ""
    op, number = (target.split() + [""])[:2] if " " in target else ("==", target)
    limit = float(number)
    ok = {"<=": value <= limit, ">=": value >= limit, "==": abs(value - limit) < 1e-9}[op]
    return "yes" if ok else "NO"


if __name__ == "__main__":
    sys.exit(main())
