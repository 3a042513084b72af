"""Running a chain: several app instances on one PostgreSQL, Debian's nginx in front booted from
deploy/, and the deploy/ files themselves. Real components only: gunicorn processes, a
PostgreSQL started by the test run, nginx with a certificate made here."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import threading
import time

import pytest
import requests

from tests.components import (
    DEPLOY,
    ROOT,
    Nginx,
    PostgresServer,
    drain,
    free_port,
    missing,
    read_until,
    start_server,
    stop,
    wait_until_up,
)
from tests.conftest import (
    PRODUCTION_SECRET,
    VALID_FORM,
    device_cookie,
    enrolled_session,
    wait_until,
)
from webapp.config import SCHEMA
from webapp.store import open_store
from webapp.store.migrations import LATEST


def hidden(page: str) -> dict[str, str]:
    return dict(re.findall(r'name="([^"]+)" type="hidden" value="([^"]*)"', page))


def outcome(page: str) -> str:
    return re.search(r'data-outcome="([^"]+)"', page).group(1)


# --- several machines, one PostgreSQL -------------------------------------------------------------
def test_two_app_instances_on_one_postgresql_act_as_one(production_server, pg_database, engine):
    """Two separate gunicorn instances (two machines) on one PostgreSQL: the same form sent to
    both at once is created once, a device's limit is counted once, and a breaker opened by one
    is open on the other."""
    settings = {"DATABASE_URL": pg_database, "SUBMIT_LIMIT_PER_DEVICE": "2",
                "BREAKER_THRESHOLD": "3", "BREAKER_COOLDOWN": "60"}  # fmt: skip
    machine_a, machine_b = production_server(**settings), production_server(**settings)

    # 1. The same form, sent to both machines at once (a double tap split by the balancer).
    engine.latency = 0.3
    till = enrolled_session()
    fields = {**VALID_FORM, "email": "split@example.com", **hidden(till.get(machine_a).text)}
    answers = []

    def send(url: str) -> None:
        tap = requests.Session()
        tap.trust_env = False
        tap.cookies.update(till.cookies)
        answers.append(tap.post(url, data=fields, allow_redirects=False, timeout=30))

    taps = [threading.Thread(target=send, args=(url,)) for url in (machine_a, machine_b)]
    for tap in taps:
        tap.start()
    for tap in taps:
        tap.join()
    assert [a.status_code for a in answers] == [303, 303]
    creates = engine.requests("/api/v3/contacts", "POST")
    assert [c.body["email"] for c in creates] == ["split@example.com"], "created once"
    engine.latency = 0

    # 2. One device's limit (2 a minute), counted once over both machines.
    till = enrolled_session()
    seen = [sign_up(url, f"limit{n}@example.com", till)
            for n, url in enumerate((machine_a, machine_b, machine_a))]  # fmt: skip
    assert seen == ["created", "created", "throttled"]

    # 3. A breaker opened on machine A is open on machine B.
    engine.inject("status", on="find", status=500, times=None)
    for n in range(3):
        assert sign_up(machine_a, f"down{n}@example.com") == "unavailable"

    def contact_calls() -> int:  # not consents: a worker fetches their texts once, any time
        return sum(r.path.startswith("/api/v3/contacts") for r in engine.requests())

    calls = contact_calls()
    assert sign_up(machine_b, "b@example.com") == "unavailable"
    assert contact_calls() == calls, "machine B did not ask Engage about the customer"


def sign_up(url: str, email: str, till: requests.Session | None = None) -> str:
    """One sign-up from a till (a new enrolled tablet unless given); the outcome shown."""
    till = till or enrolled_session()
    fields = {**VALID_FORM, "email": email, **hidden(till.get(url, timeout=10).text)}
    return outcome(till.post(url, data=fields, timeout=30).text)


@pytest.fixture
def own_postgres():
    """A PostgreSQL of this test's own, which the test may stop."""

    server = PostgresServer()
    yield server
    server.stop()


def test_a_postgresql_outage_keeps_the_details_and_calls_no_engage(
    own_postgres, simulator, engine, tmp_path, caplog
):
    import logging

    from tests.conftest import TEST_CONFIG, english_browser, outcome_of, submitter
    from webapp import create_app

    app = create_app({**TEST_CONFIG, "ENGAGE_BASE_URL": simulator.url,
                      "DATABASE_URL": own_postgres.url})  # fmt: skip
    submit = submitter(english_browser(app))
    assert outcome_of(submit(email="before@example.com")) == "created"
    own_postgres.stop_server()  # a fast shutdown: every connection is cut
    caplog.set_level(logging.INFO)
    finds = len(engine.requests("/api/v3/contacts/id"))
    page = submit(email="during@example.com", lastName="Nyström")
    assert page.status_code == 200 and outcome_of(page) == "unavailable"
    html = page.get_data(as_text=True)
    assert 'value="during@example.com"' in html and 'value="Nyström"' in html
    assert len(engine.requests("/api/v3/contacts/id")) == finds, "no Engage call"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("state database unavailable: PostgreSQL")
    assert "Traceback" not in caplog.text
    # One wait for the pool in that sign-up, not one per use of the state (three of 5 s each,
    # before): after it, the state is refused at once for a moment, then one probe waits.
    assert app.extensions["state"].engine.pool.get_stats().get("requests_errors") == 1
    ready = english_browser(app).get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["state"] == "unavailable"
    own_postgres.start_server()  # back: a probe finds it, and sign-ups go on
    wait_until(lambda: english_browser(app).get("/readyz").status_code == 200, "no recovery")
    assert outcome_of(submit(email="after@example.com")) == "created"
    app.extensions["state"].close()


@pytest.fixture(scope="module")
def behind_nginx(tmp_path_factory, postgres):
    """One app (gunicorn, TRUSTED_PROXIES=1, HTTPS=true) on PostgreSQL, with nginx in front."""
    from webapp.simulator import Engine, serve

    folder = tmp_path_factory.mktemp("nginx")
    simulator = serve(Engine(create_limit=1.0))
    postgres.execute("CREATE SCHEMA behind_nginx")
    env = {
        **os.environ,
        "ENGAGE_BASE_URL": simulator.url, "ENGAGE_API_KEY": "key", "SECRET_KEY": PRODUCTION_SECRET,
        "STAFF_PIN": "4711", "HTTPS": "true", "TRUSTED_PROXIES": "1",
        "DATABASE_URL": postgres.url + "?options=-c%20search_path%3Dbehind_nginx",
        "SUBMIT_LIMIT_PER_ADDRESS": "1", "LOG_LEVEL": "WARNING",
        "PUBLIC_URL": "https://signup.test",
        "WEB_WORKERS": "2", "WEB_THREADS": "8",
    }  # fmt: skip
    app = start_server(env)
    app_url = read_until(app, r"open (http://[^\s\"]+)").group(1)
    drain(app)
    wait_until_up(app_url)
    nginx = Nginx(folder, app_url.removeprefix("http://").replace("localhost", "127.0.0.1")[:-1])
    yield nginx
    nginx.stop()
    stop(app)
    simulator.stop()


def test_the_app_behind_nginx_sees_each_clients_own_address(behind_nginx):
    """SUBMIT_LIMIT_PER_ADDRESS=1: two tills on two addresses each get their one sign-up a
    minute; what a client writes into X-Forwarded-For does not make it another address."""

    def sign_up(source: str, email: str, **headers) -> str:
        browser = behind_nginx.client(source)
        browser.cookies.set("__Host-device", device_cookie(PRODUCTION_SECRET), domain="127.0.0.1")
        page = browser.get(behind_nginx.url, timeout=10)
        assert page.status_code == 200 and outcome(page.text) == "form"
        fields = {**VALID_FORM, "email": email, **hidden(page.text)}
        return outcome(
            browser.post(behind_nginx.url, data=fields, headers=headers, timeout=30).text
        )

    assert sign_up("127.0.0.2", "two@example.com") == "created"
    assert sign_up("127.0.0.3", "three@example.com") == "created", "another address"
    spoofed = sign_up("127.0.0.2", "again@example.com", **{"X-Forwarded-For": "10.9.9.9"})
    assert spoofed == "throttled", "a forged X-Forwarded-For is not believed"


def _largest_entry(page: str) -> dict[str, str]:
    """Every text field of the form at its maxlength, in letters of three bytes each (UTF-8),
    with the email left invalid so that the entry comes back to be corrected."""
    inputs = re.findall(r"<input[^>]*>", page)
    lengths = {
        re.search(r'name="([^"]+)"', tag).group(1): re.search(r'maxlength="(\d+)"', tag).group(1)
        for tag in inputs
        if "maxlength=" in tag
    }
    assert {"firstName", "lastName", "email"} <= set(lengths), "the form's own limits"
    entry = {name: "ẞ" * int(length) for name, length in lengths.items()}
    entry["email"] = ("ẞ" * (int(lengths["email"]) - 12)) + "@example.com"
    return {**VALID_FORM, **entry}


@pytest.mark.parametrize("where", ["/", "/language"])
def test_a_kiosk_gets_the_largest_entry_back_through_nginx(behind_nginx, where):
    """After an error (or a change of language) a kiosk's entry comes back on the next page.
    It used to travel in a cookie that, with every field full of non-ASCII letters, outgrew
    nginx's header buffer: a bare 502. The cookie now holds only an id."""
    kiosk = behind_nginx.client("127.0.0.5")
    kiosk.cookies.set("__Host-device", device_cookie(PRODUCTION_SECRET, "kiosk"),
                      domain="127.0.0.1")  # fmt: skip
    page = kiosk.get(behind_nginx.url + "?lang=en", timeout=10).text
    fields = {**_largest_entry(page), **hidden(page), "lang": "fi"}
    sent = kiosk.post(behind_nginx.url.rstrip("/") + where, data=fields, timeout=30,
                      allow_redirects=False)  # fmt: skip
    assert sent.status_code == 303, sent.status_code
    assert len(kiosk.cookies.get("__Host-entry")) < 40, "the cookie holds an id, not the entry"
    back = kiosk.get(behind_nginx.url, timeout=10)
    assert back.status_code == 200
    assert outcome(back.text) == ("invalid" if where == "/" else "form")
    assert 'value="' + "ẞ" * 50 + '"' in back.text, "what was typed is there again"
    again = kiosk.get(behind_nginx.url, timeout=10)
    assert "ẞ" not in again.text, "shown once, then gone"


def test_what_the_readme_says_of_slow_bodies_is_what_the_nginx_site_does():
    """client_body_timeout bounds the silence between two reads, not a body's whole time (a
    body trickled a byte every 4 s stayed open past 100 s): the README must not promise more."""
    site = (ROOT / "deploy" / "nginx" / "engage-signup.conf").read_text()
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert re.search(r"^\s*client_body_timeout 10s;", site, re.M)
    assert re.search(r"^\s*proxy_request_buffering on;", site, re.M), "no app thread waits"
    assert re.search(r"^\s*limit_conn engage_signup_per_address 64;", site, re.M)
    assert "headers or body take over 10 s" not in readme
    assert "whose body falls silent for 10 s between two reads" in readme
    assert "at most 64 of them per address" in readme


def test_the_access_log_never_holds_a_scan_to_join_token(behind_nginx):
    """A handoff's token is a key to it for minutes: nginx's log names the address instead."""
    token = "tok" + "A1b2C3d4" * 5
    browser = behind_nginx.client("127.0.0.6")
    browser.get(behind_nginx.url + f"j/{token}", timeout=10)
    browser.get(behind_nginx.url + "handoff/tillid0123456789/status", timeout=10)
    browser.get(behind_nginx.url + "j/done", timeout=10)

    # nginx writes a line after it has answered, and the log is the session's (other tests'
    # lines too): wait for this test's three, by the address it comes from.
    def mine() -> list[str]:
        lines = (behind_nginx.folder / "access.log").read_text().splitlines()
        return [line for line in lines if line.startswith("127.0.0.6 ")]

    log = "\n".join(wait_until(lambda: len(mine()) >= 3 and mine(), "nginx logged fewer"))
    assert token not in log and "tillid0123456789" not in log
    assert '"GET /j/<token> HTTP/1.1" 410' in log or '"GET /j/<token> HTTP/1.1" 404' in log
    assert '"GET /handoff/<id>/status HTTP/1.1"' in log
    assert '"GET /j/done HTTP/1.1"' in log, "the pages without a token are logged as they are"


def test_no_nginx_log_holds_a_token_when_the_app_is_down(tmp_path):
    """An app restarting (nothing listening): nginx answers 502 and writes an error line that
    quotes the request. For a scan-to-join token or a till page's id it must not: the attack
    took a handoff from another address with a token read from the error log. Nor may the
    plain-HTTP server log whole addresses in nginx's default format; and the token's redirect
    carries one Referrer-Policy, no-referrer (browsers obey the last of two)."""
    nginx = Nginx(tmp_path / "nginx", f"127.0.0.1:{free_port()}")  # an app that is stopped
    try:
        token = "tokDOWN" + "Z9y8X7w6" * 5
        browser = nginx.client("127.0.0.7")
        assert browser.get(nginx.url + f"j/{token}", timeout=10).status_code == 502
        browser.get(nginx.url + "handoff/tillidDOWN0123456789", timeout=10)
        assert browser.get(nginx.url + "?down=visible", timeout=10).status_code == 502
        plain = requests.get(f"http://127.0.0.1:{nginx.http_port}/j/{token}",
                             allow_redirects=False, timeout=5)  # fmt: skip
        assert plain.status_code == 308
        logs = wait_until(
            lambda: (
                "down=visible" in (nginx.folder / "error.log").read_text()
                and "down=visible" in (nginx.folder / "access.log").read_text()
                and [p.read_text() for p in nginx.folder.glob("*.log")]
            ),
            "nginx logged no upstream failure for the page without a token",
        )
        for log in logs:
            assert token not in log and "tillidDOWN0123456789" not in log
    finally:
        nginx.stop()


def test_the_tokens_redirect_sends_one_referrer_policy(behind_nginx):
    """no-referrer on the token's redirect, and not the site's same-origin after it."""
    browser = behind_nginx.client("127.0.0.8")
    browser.cookies.set("__Host-device", device_cookie(PRODUCTION_SECRET), domain="127.0.0.1")
    page = browser.get(behind_nginx.url + "?lang=en", timeout=10).text
    token = re.search(r'action="/handoff/"[^>]*>\s*<input type="hidden" name="csrf_token" '
                      r'value="([^"]+)"', page).group(1)  # fmt: skip
    till = browser.post(behind_nginx.url + "handoff/", data={"csrf_token": token}, timeout=10)
    link = re.search(r"data-handoff-link[^>]*>([^<]+)<", till.text).group(1)
    phone = behind_nginx.client("127.0.0.9")
    opened = phone.get(behind_nginx.url + link.split("/", 3)[3], allow_redirects=False,
                       timeout=10)  # fmt: skip
    assert opened.status_code == 303
    assert opened.raw.headers.getlist("Referrer-Policy") == ["no-referrer"]


def test_plain_http_is_sent_to_https(behind_nginx):
    answer = requests.get(
        f"http://127.0.0.1:{behind_nginx.http_port}/", allow_redirects=False, timeout=5
    )
    assert answer.status_code == 308
    assert answer.headers["Location"].startswith("https://")


def test_slow_clients_meet_nginx_and_the_tills_keep_being_answered(behind_nginx, capsys):
    """200 sockets that send a header line every 5 s, and 200 that connect and say nothing,
    while a till loads the form: every request of the till is answered. (Straight onto
    gunicorn, 40 such sockets stopped the app.)"""
    context = ssl.create_default_context(cafile=behind_nginx.cert)
    stop = threading.Event()
    opened: list[socket.socket] = []

    def slow_client(n: int) -> None:
        try:
            raw = socket.create_connection(("127.0.0.1", behind_nginx.https_port), timeout=10)
            if n % 2:
                opened.append(raw)  # a bare connect: not even a TLS handshake
                return
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            opened.append(tls)
            while not stop.wait(5):
                tls.sendall(b"X-Slow: a\r\n")
        except OSError:
            pass  # nginx closed it: that is the point

    attackers = [threading.Thread(target=slow_client, args=(n,), daemon=True) for n in range(400)]
    for attacker in attackers:
        attacker.start()
    wait_until(lambda: len(opened) >= 300, "the slow sockets never opened")
    till = behind_nginx.client("127.0.0.4")
    till.cookies.set("__Host-device", device_cookie(PRODUCTION_SECRET), domain="127.0.0.1")
    times, statuses = [], []
    for _ in range(60):  # while the slow sockets are held open (nginx drops them after 10 s idle)
        started = time.perf_counter()
        statuses.append(till.get(behind_nginx.url, timeout=10).status_code)
        times.append((time.perf_counter() - started) * 1000)
    stop.set()
    for s in opened:
        s.close()
    p50 = statistics.median(times)
    p99 = statistics.quantiles(times, n=100)[98]
    with capsys.disabled():
        print(
            f"\nbehind nginx, {len(attackers)} slow or idle sockets open: {len(times)} form "
            f"loads, p50 {p50:.1f} ms, p99 {p99:.1f} ms, statuses {sorted(set(statuses))}"
        )
    assert len(opened) >= 300, "the slow sockets were open during the run"
    assert statuses == [200] * 60


# --- the deploy/ files ----------------------------------------------------------------------------
def test_the_environment_example_names_only_real_settings_and_starts_the_app(
    pg_database, simulator
):
    from webapp import create_app

    example = (DEPLOY / "engage-signup.env.example").read_text()
    settings = dict(
        line.split("=", 1) for line in example.splitlines() if line and not line.startswith("#")
    )
    server_settings = {"HOST", "PORT", "WEB_WORKERS"}
    assert set(settings) - set(SCHEMA) <= server_settings, "no unknown names"
    assert {"SECRET_KEY", "DATABASE_URL", "TRUSTED_PROXIES", "STAFF_PIN"} <= set(settings)
    settings.update(ENGAGE_BASE_URL=simulator.url, DATABASE_URL=pg_database,
                    SECRET_KEY="a-real-secret-0123456789", STAFF_PIN="471147")  # fmt: skip
    app = create_app({k: v for k, v in settings.items() if k not in server_settings})
    assert app.config["TRUSTED_PROXIES"] == 1 and app.config["HTTPS"] is True
    assert app.extensions["state"].kind == "postgresql"
    app.extensions["state"].close()


def test_the_systemd_unit_is_valid(tmp_path):
    """systemd's own checker, with the unit's paths pointed at this checkout."""
    import sys

    analyze = shutil.which("systemd-analyze")
    if not analyze:
        missing("systemd-analyze not found (Debian package systemd)")
    unit = (DEPLOY / "systemd" / "engage-signup.service").read_text()
    assert "ExecStart=/opt/engage-signup/.venv/bin/python -m webapp.serve" in unit
    assert "EnvironmentFile=/etc/engage-signup/engage-signup.env" in unit
    unit = unit.replace("/opt/engage-signup/.venv/bin/python", sys.executable)
    unit = unit.replace("EnvironmentFile=/etc/engage-signup/", f"EnvironmentFile=-{tmp_path}/")
    (tmp_path / "engage-signup.service").write_text(unit)
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "engage-signup.service")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    problems = [
        line for line in (result.stdout + result.stderr).splitlines()
        if "engage-signup.service" in line and "user" not in line.lower()
    ]  # fmt: skip
    assert problems == [], result.stdout + result.stderr


# --- PostgreSQL: what the engine must hold to (issue #27) -----------------------------------------
def test_migrations_wait_for_the_advisory_lock_another_machine_holds(pg_database, tmp_path):
    """Another machine is migrating (it holds the lock): this one waits for it, touching
    nothing, and goes on once the lock is released. The overlap is forced, not left to
    start-up timing."""
    import threading

    import psycopg

    from webapp.store.postgres import MIGRATION_LOCK

    holder = psycopg.connect(pg_database)  # a transaction, as a migrating machine holds it
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
    opened: dict = {}
    config = {"DATABASE_URL": pg_database, "WEB_THREADS": 2}
    opening = threading.Thread(
        target=lambda: opened.update(store=open_store(config, instance_path=str(tmp_path)))
    )
    opening.start()
    with psycopg.connect(pg_database, autocommit=True) as watcher:

        def waiting() -> bool:
            return (
                watcher.execute(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                ).fetchone()[0]
                == 1
            )

        wait_until(waiting, "the migration never asked for the lock")
        tables = watcher.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchone()[0]
    assert opening.is_alive() and tables == 0, "it waits, and has made nothing meanwhile"
    holder.commit()  # the other machine is done
    holder.close()
    opening.join(timeout=60)
    assert opened["store"].schema_version() == LATEST
    opened["store"].close()


def test_durable_transactions_commit_with_synchronous_commit_on(tmp_path):
    """The consent record and a kept sign-up must outlive a crash of PostgreSQL: inside a
    durable transaction synchronous_commit is on, whatever the session's own (off) is. Seen
    on a PostgreSQL started with production defaults, from inside the transaction."""

    server = PostgresServer(durable=True)
    try:
        store = open_store({"DATABASE_URL": server.url, "WEB_THREADS": 2},
                           instance_path=str(tmp_path))  # fmt: skip
        with store.engine.durable() as tx:
            tx.run("INSERT INTO health (name, at) VALUES "
                   "('durable:' || current_setting('synchronous_commit'), 0)")  # fmt: skip
        store.engine.run("INSERT INTO health (name, at) VALUES "
                         "('plain:' || current_setting('synchronous_commit'), 0)")  # fmt: skip
        seen = {row[0] for row in store.engine.run("SELECT name FROM health").rows}
        store.close()
    finally:
        server.stop()
    assert seen == {"durable:on", "plain:off"}
