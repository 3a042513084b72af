"""The real components the tests start and share: PostgreSQL, nginx, Prometheus, the app's own
server (the README's run command), and where Chromium is. Each starts on loopback, through
`setpriv --pdeathsig` (tests/processes.py), so a killed run leaves nothing behind; a component
missing from the machine skips its tests, or fails them where CI sets REQUIRE_REAL_COMPONENTS."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.processes import ending_with_tests


# --- a real PostgreSQL, started by the test run -------------------------------------------------
def _postgres_bin(name: str) -> str | None:
    import glob
    import shutil

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class PostgresServer:
    """initdb into a temporary folder and `postgres` on a free loopback port; as root, run as
    the `postgres` user (PostgreSQL refuses root). Starts in about two seconds."""

    def __init__(self, durable: bool = False):
        """`durable`: PostgreSQL's own defaults (fsync, synchronous commit), as in production;
        otherwise the faster settings that tests can afford."""
        import shutil
        import subprocess
        import tempfile

        from tests.processes import ending_with_tests

        initdb, postgres = _postgres_bin("initdb"), _postgres_bin("postgres")
        if not initdb or not postgres:
            missing("PostgreSQL not found (Debian package postgresql)")
        self.folder = tempfile.mkdtemp(prefix="engage-signup-pg-")
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user:
            shutil.chown(self.folder, self.user)
        data = os.path.join(self.folder, "data")
        subprocess.run(
            [initdb, "--no-sync", "-A", "trust", "-U", "postgres", "-E", "UTF8", "-D", data],
            check=True, capture_output=True, user=self.user,
        )  # fmt: skip
        self.port = free_port()
        self.log = open(os.path.join(self.folder, "log"), "wb")  # noqa: SIM115 - closed in stop()
        fast = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        self.command = ending_with_tests(
            [postgres, "-D", data, "-h", "127.0.0.1", "-p", str(self.port), "-k", self.folder,
             *([] if durable else fast), "-c", "max_connections=400"],
            "INT",  # PostgreSQL's fast shutdown
        )  # fmt: skip
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start_server()

    def start_server(self) -> None:
        """Start it (again, after stop_server: the same data, the same port)."""
        import subprocess

        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=self.log,
                                        user=self.user)  # fmt: skip
        self._wait_until_ready()

    def _wait_until_ready(self) -> None:
        import time

        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(open(os.path.join(self.folder, "log")).read()) from None
                time.sleep(0.05)

    def execute(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)

    def stop_server(self) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, not waited for."""
        import signal

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=20)

    def stop(self) -> None:
        import shutil

        self.stop_server()
        self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)


# --- real components that a test needs and CI must have -----------------------------------------
def missing(what: str) -> None:
    """A real component is not on this machine: skip here, fail where CI demands everything."""
    if os.environ.get("REQUIRE_REAL_COMPONENTS") == "1":
        pytest.fail(f"{what} (REQUIRE_REAL_COMPONENTS=1: CI must not skip this)")
    pytest.skip(what)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _reader(process):
    """One thread per server reads its output into `process.lines` (so a full pipe never blocks
    its log writes); read_until() waits on it with a deadline, never inside a readline() that a
    server which prints nothing more would hold for ever."""
    if getattr(process, "drainer", None) is None:
        process.lines, process.ended, process.looked_at = [], False, 0
        process.arrived = threading.Condition()

        def pump():
            for line in process.stdout:
                with process.arrived:
                    process.lines.append(line)
                    process.arrived.notify_all()
            with process.arrived:
                process.ended = True
                process.arrived.notify_all()

        process.drainer = threading.Thread(target=pump, daemon=True)
        process.drainer.start()
    return process


def read_until(process, pattern: str, seconds: float = 30) -> re.Match:
    """The first line from here on that matches `pattern`; fails after `seconds`, or when the
    output has ended without one."""
    _reader(process)
    deadline = time.monotonic() + seconds
    with process.arrived:
        while True:
            while process.looked_at < len(process.lines):
                line = process.lines[process.looked_at]
                process.looked_at += 1
                if match := re.search(pattern, line):
                    return match
            remaining = deadline - time.monotonic()
            if process.ended or remaining <= 0:
                break
            process.arrived.wait(remaining)
    raise AssertionError(f"never printed {pattern!r}; printed: {''.join(process.lines)}")


def start_server(env: dict) -> subprocess.Popen:
    """The README's run command (python -m webapp.serve) with `env`, output on a pipe."""
    env = {**env, "PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        ending_with_tests([sys.executable, "-m", "webapp.serve"]),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def drain(process) -> None:
    """Keep reading the server's output so a full pipe never blocks its log writes; every line
    read is kept in `process.lines`."""
    _reader(process)


def stop(process) -> None:
    """SIGTERM, wait, then close the output once nothing reads it any more."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    if getattr(process, "drainer", None):
        process.drainer.join(timeout=5)
    process.stdout.close()


def wait_until_up(url: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            requests.get(url, timeout=2)
            return
        except requests.ConnectionError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.1)


ROOT = Path(__file__).resolve().parent.parent


DEPLOY = ROOT / "deploy"


# --- nginx in front -------------------------------------------------------------------------------
def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for signup.test and 127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signup.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("signup.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def render(template: str, values: dict[str, str]) -> str:
    """What `envsubst '${A} ${B}'` does: only the named variables, nginx's own left alone."""
    for name, value in values.items():
        template = template.replace("${" + name + "}", value)
    assert not re.search(r"\$\{[A-Z_]+\}", template), "every placeholder is filled"
    return template


class Nginx:
    """Debian's nginx on loopback with deploy/nginx/engage-signup.conf, in a folder of its own."""

    def __init__(self, folder: Path, app_address: str, more_apps: tuple[str, ...] = ()):
        """`more_apps`: further app addresses in the site's upstream (machines behind one nginx)."""
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not os.path.exists(binary):
            missing("nginx not found (Debian package nginx-light or nginx)")
        folder.mkdir(parents=True, exist_ok=True)
        cert, key = make_certificate(folder)
        self.https_port, self.http_port = free_port(), free_port()
        site = render(
            (DEPLOY / "nginx" / "engage-signup.conf").read_text(),
            {"SERVER_NAME": "signup.test", "HTTPS_PORT": f"127.0.0.1:{self.https_port}",
             "HTTP_PORT": f"127.0.0.1:{self.http_port}", "TLS_CERT": str(cert),
             "TLS_KEY": str(key), "APP_ADDRESS": app_address,
             "ACCESS_LOG": str(folder / "access.log"), "ERROR_LOG": str(folder / "error.log")},
        )  # fmt: skip
        upstream = f"    server {app_address};"
        assert site.count(upstream) == 1
        more = [f"    server {address};" for address in more_apps]
        site = site.replace(upstream, "\n".join([upstream, *more]))
        (folder / "site.conf").write_text(site)
        temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
        user = "user root;" if os.geteuid() == 0 else ""
        (folder / "nginx.conf").write_text(
            f"""{user}
worker_processes 2;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {folder}/default.access.log;  # Debian's nginx.conf: the combined format
    client_body_temp_path {temp["body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};
    include {folder}/site.conf;
}}
"""
        )
        self.folder = folder
        self.process = subprocess.Popen(
            ending_with_tests([binary, "-e", str(folder / "error.log"),
                               "-c", str(folder / "nginx.conf"), "-g", "daemon off;"]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.url = f"https://127.0.0.1:{self.https_port}/"
        self.cert = str(cert)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "error.log").read_text()) from None
                time.sleep(0.05)

    def client(self, source: str = "127.0.0.2") -> requests.Session:
        """A browser on another address than nginx's own connections to the app (127.0.0.1)."""
        from requests.adapters import HTTPAdapter

        class FromAddress(HTTPAdapter):
            def init_poolmanager(self, *args, **kwargs):
                kwargs["source_address"] = (source, 0)
                super().init_poolmanager(*args, **kwargs)

        browser = requests.Session()
        browser.trust_env = False  # REQUESTS_CA_BUNDLE would override `verify`
        browser.verify = self.cert
        browser.mount("https://", FromAddress())
        browser.headers["Referer"] = self.url  # Flask-WTF's CSRF check over HTTPS needs it
        return browser

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()


# --- a real Prometheus scraping the README's server -----------------------------------------------
class Prometheus:
    """Debian's prometheus on a loopback port, scraping `target` every second."""

    def __init__(self, folder: Path, target: str | None = None, config_text: str | None = None):

        binary = shutil.which("prometheus")
        if not binary:
            missing("prometheus not found (Debian package prometheus)")
        self.port = free_port()
        config = folder / "prometheus.yml"
        config.write_text(
            config_text
            or "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: engage-signup\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log = open(folder / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ending_with_tests([binary, f"--config.file={config}",
                               f"--storage.tsdb.path={folder / 'data'}",
                               f"--web.listen-address=127.0.0.1:{self.port}"]),
            stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def query(self, expression: str) -> list:
        try:
            answer = requests.get(self.url + "/api/v1/query", params={"query": expression},
                                  timeout=5).json()  # fmt: skip
        except (requests.ConnectionError, ValueError):
            return []
        return answer.get("data", {}).get("result", [])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        self.log.close()


SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"


# Flags seen to work on these machines (shared/field-notes.md): no sandbox as root, and no
# background networking, which the closed network would refuse.
ARGS = [
    *("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"),
    *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
]


def chromium_path() -> str | None:
    return (
        os.environ.get("CHROMIUM_PATH")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
