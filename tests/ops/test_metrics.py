"""What a chain's IT watches: /metrics scraped by a real Prometheus, the alert rules through
promtool, JSON log lines, and versions."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading

import pytest
from cryptography.fernet import Fernet

from tests.components import (
    DEPLOY,
    ROOT,
    Nginx,
    Prometheus,
    drain,
    missing,
    start_server,
    stop,
)
from tests.conftest import (
    KNOWN_MEMBER,
    VALID_FORM,
    english_browser,
    enrol,
    enrolled_session,
    hidden_fields,
    outcome_of,
    samples,
    scrape,
    submitter,
    value,
    wait_until,
)
from webapp.ops import metrics

RULES = ROOT / "deploy" / "prometheus"
TOKEN = "metrics-token-0123456789abcdef"


# --- who may read it ----------------------------------------------------------------------------
def test_metrics_are_open_only_to_the_allowed_addresses_and_the_token(simulated_app):
    app = simulated_app(METRICS_TOKEN=TOKEN, METRICS_ALLOW="127.0.0.1,10.9.0.0/16")
    client = app.test_client()
    outside = {"REMOTE_ADDR": "192.0.2.7"}
    assert client.get("/metrics", environ_base=outside).status_code == 403
    wrong = {"Authorization": "Bearer not-the-token-at-all"}
    assert client.get("/metrics", environ_base=outside, headers=wrong).status_code == 403
    right = client.get(
        "/metrics", environ_base=outside, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert right.status_code == 200 and right.headers["Cache-Control"] == "no-store"
    assert right.mimetype == "text/plain" and "engage_signup_build_info" in right.get_data(True)
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.9.3.4"}).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    off = simulated_app(METRICS="false").test_client()
    assert off.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 404


@pytest.mark.parametrize(
    "authorization",
    ["Bearer ", "Bearer", "Bearer  ", "Bearer None", "Bearer null", "bearer x", "Basic Og=="],
)
def test_without_a_metrics_token_no_bearer_token_opens_metrics(simulated_app, authorization):
    """No METRICS_TOKEN: from outside METRICS_ALLOW, every Authorization header is refused, an
    empty bearer token included (an empty configured token must never equal an empty sent one)."""
    app = simulated_app(METRICS_ALLOW="10.9.0.0/16")
    assert not app.config["METRICS_TOKEN"]
    client = app.test_client()
    answer = client.get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.8"},
                        headers={"Authorization": authorization})  # fmt: skip
    assert answer.status_code == 403


def test_metrics_allow_judges_the_address_the_trusted_proxies_pass_on(simulated_app):
    """A forged X-Forwarded-For opens nothing: with no trusted proxy it is not read at all; with
    one, only its right-most entry (what the proxy itself added) is the client."""
    direct = simulated_app(METRICS_ALLOW="127.0.0.1", TRUSTED_PROXIES=0).test_client()
    forged = {"X-Forwarded-For": "127.0.0.1"}
    outside = {"REMOTE_ADDR": "192.0.2.9"}
    assert direct.get("/metrics", environ_base=outside, headers=forged).status_code == 403
    proxied = simulated_app(METRICS_ALLOW="127.0.0.1", TRUSTED_PROXIES=1).test_client()
    via_proxy = {"REMOTE_ADDR": "127.0.0.1"}  # nginx on this machine
    chain = {"X-Forwarded-For": "127.0.0.1, 192.0.2.9"}  # the client forged the left part
    assert proxied.get("/metrics", environ_base=via_proxy, headers=chain).status_code == 403
    own = {"X-Forwarded-For": "127.0.0.1"}  # a client on the proxy's own machine
    assert proxied.get("/metrics", environ_base=via_proxy, headers=own).status_code == 200


# --- what it counts ------------------------------------------------------------------------------
def test_signups_and_engage_calls_are_counted_by_outcome_store_and_mode(simulated_app, engine):
    """Counted as the sign-ups happened (a kiosk's `thanks` is counted as what it really was),
    with nothing in any label or value that anyone typed, and no device id."""
    app = simulated_app(DEVICE_MODE="kiosk")
    client = app.test_client()
    before = scrape(client)
    engine.add_contact({**KNOWN_MEMBER, "email": "known@example.com"})
    till = enrol(app.test_client(), app, "staff", "201")
    till.get("/?lang=en")
    assert outcome_of(submitter(till)(email="metrics.new@example.com")) == "created"
    assert outcome_of(submitter(till)(email="known@example.com")) == "existing"
    kiosk = english_browser(app, mode="kiosk")
    assert outcome_of(submitter(kiosk)(email="metrics.kiosk@example.com")) == "thanks"
    engine.inject("status", status=422)
    assert outcome_of(submitter(till)(email="metrics.refused@example.com")) == "rejected"
    text = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_data(True)
    after = samples(text)

    def grew(name: str, **labels) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    total = "engage_signup_signups_total"
    assert grew(total, outcome="created", store="201", mode="staff") == 1
    assert grew(total, outcome="existing", store="201", mode="staff") == 1
    assert grew(total, outcome="rejected", store="201", mode="staff") == 1
    assert grew(total, outcome="created", store="101", mode="kiosk") == 1, "thanks, truly created"
    calls = "engage_signup_engage_calls_total"
    assert grew(calls, endpoint="find", status="404", token="-") == 3
    assert grew(calls, endpoint="create", status="201", token="-") == 2
    assert grew(calls, endpoint="create", status="422", token="ValidationError") == 1
    assert grew(calls, endpoint="read", status="200", token="-") == 1, "the member number"
    assert grew("engage_signup_signup_seconds_count", mode="staff") == 3
    assert grew("engage_signup_signup_seconds_count", mode="kiosk") == 1
    assert grew("engage_signup_consent_records_total") == 16, "four sign-ups of four decisions"
    for typed in ("metrics.new", "known@", "metrics.kiosk", "Anna", "Andersson", "+467"):
        assert typed not in text, typed
    assert all(key != "device" for (_, labels) in after for key, _ in labels), "no device ids"


def test_the_store_label_is_bounded_and_takes_no_stranger_values():
    labels = {metrics._store(f"s{n}") for n in range(metrics.MAX_STORES + 50)}
    assert len(labels) <= metrics.MAX_STORES + 1 and metrics.OTHER in labels
    assert metrics._store("<script>") == metrics.OTHER
    assert metrics._store("an@email.example") == metrics.OTHER
    assert metrics._store(None) == metrics.OTHER


def test_the_shared_states_figures_are_read_at_most_every_few_seconds(simulated_app, engine):
    """The outbox and the breaker come from the shared state: however often Prometheus (or
    several) scrapes, the state is read once per STATE_SECONDS."""
    app = simulated_app(OUTBOX_KEYS=Fernet.generate_key().decode(), ENGAGE_RETRY_SECONDS=0)
    engine.inject("status", on="any", status=503, times=None)
    for n in range(2):
        submitter(english_browser(app))(email=f"kept{n}@example.com")
    state = app.extensions["state"]
    reads = []
    summary = state.outbox_summary
    state.outbox_summary = lambda: reads.append(1) or summary()
    client = app.test_client()
    first = scrape(client)
    assert value(first, "engage_signup_outbox_items", state="waiting") == 2
    assert value(first, "engage_signup_breaker_open") == 0
    assert 0 <= value(first, "engage_signup_outbox_oldest_seconds") < 600
    for _ in range(5):
        scrape(client)
    assert len(reads) == 1, "one read for six scrapes"


# --- the rules, through promtool ---------------------------------------------------------------
def _promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        missing("promtool not found (Debian package prometheus)")
    return found


def test_the_alert_rules_load_and_each_fires_on_its_series(tmp_path):
    promtool = _promtool()
    checked = subprocess.run([promtool, "check", "rules", str(RULES / "alerts.yml")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout
    tested = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=RULES,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = set(re.findall(r"alert: (\w+)", (RULES / "alerts.yml").read_text()))
    tests = set(re.findall(r"alertname: (\w+)", (RULES / "alerts_test.yml").read_text()))
    assert rules == tests, "every rule has its test"
    # The scrape example as a chain would install it: its token file and rules beside it.
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    shutil.copy(RULES / "alerts.yml", tmp_path / "alerts.yml")
    example = (RULES / "prometheus.yml").read_text()
    assert "/etc/prometheus/engage-signup-metrics-token" in example
    installed = tmp_path / "prometheus.yml"
    installed.write_text(example.replace("/etc/prometheus/engage-signup-metrics-token",
                                         str(token_file)))  # fmt: skip
    config = subprocess.run([promtool, "check", "config", str(installed)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert config.returncode == 0, config.stdout + config.stderr


def test_prometheus_scraping_two_workers_counts_every_created_signup(
    production_server, engine, tmp_path
):
    """gunicorn with two worker processes, each answering some sign-ups and some scrapes:
    Prometheus's query API answers the number of created sign-ups exactly."""
    url = production_server(WEB_WORKERS="2", LOG_LEVEL="WARNING")
    prometheus = Prometheus(tmp_path, url.removeprefix("http://").rstrip("/"))
    try:
        created = []

        def till(n: int) -> None:
            browser = enrolled_session()
            for m in range(3):
                page = browser.get(url, timeout=30).text
                hidden = hidden_fields(page)
                email = f"scraped.{n}.{m}@example.com"
                answer = browser.post(url, data={**VALID_FORM, "email": email, **hidden},
                                      timeout=30)  # fmt: skip
                if 'data-outcome="created"' in answer.text:
                    created.append(email)

        tills = [threading.Thread(target=till, args=(n,)) for n in range(4)]
        for t in tills:
            t.start()
        for t in tills:
            t.join()
        assert len(created) == 12

        def counted() -> float | None:
            result = prometheus.query(
                'sum(engage_signup_signups_total{outcome="created",mode="staff"})'
            )
            return float(result[0]["value"][1]) if result else None

        wait_until(lambda: counted() == 12, f"Prometheus counted {counted()}", seconds=60)
        pids = prometheus.query("count(engage_signup_build_info)")
        assert pids and float(pids[0]["value"][1]) == 1, "one series, whatever the workers"
        state = prometheus.query("engage_signup_state_up")
        assert state and state[0]["value"][1] == "1"
    finally:
        prometheus.stop()


# --- JSON log lines ---------------------------------------------------------------------------
def test_json_log_lines_parse_one_by_one_under_load_with_no_personal_data(
    production_server, engine
):
    url = production_server(LOG_FORMAT="json", LOG_LEVEL="INFO", WEB_WORKERS="2")
    typed = []

    def till(n: int) -> None:
        browser = enrolled_session()
        for m in range(4):
            page = browser.get(url, timeout=30).text
            hidden = hidden_fields(page)
            fields = {**VALID_FORM, "email": f"json.{n}.{m}@example.com",
                      "firstName": f"Jsonette{n}{m}",
                      "mobilePhone": f"070-174 06 {n}{m}"}  # fmt: skip
            typed.extend([fields["email"], fields["firstName"], fields["mobilePhone"]])
            browser.post(url, data={**fields, **hidden}, timeout=30)

    tills = [threading.Thread(target=till, args=(n,)) for n in range(4)]
    for t in tills:
        t.start()
    for t in tills:
        t.join()
    server = production_server.servers[-1]

    def posts() -> int:
        return sum('"path": "/"' in line and '"method": "POST"' in line for line in server.lines)

    wait_until(lambda: posts() >= 16, "the sign-ups' log lines never came")
    lines = [line for line in server.lines if line.strip()]
    records = [json.loads(line) for line in lines]  # each line parses, the start-up line too
    (running,) = [r for r in records if r["message"].startswith("engage-signup is running")]
    assert running["url"] == url and running["level"] == "INFO"
    requests_ = [
        r for r in records if r.get("logger") == "webapp.request" and r["method"] == "POST"
    ]
    assert len(requests_) == 16
    for record in requests_:
        assert {
            "time",
            "level",
            "message",
            "status",
            "ms",
            "outcome",
            "store",
            "request_id",
        } <= set(record)
        assert record["store"] == 101 or record["store"] == "101"
    assert any(r.get("logger") == "gunicorn.error" for r in records), "gunicorn's lines too"
    everything = "\n".join(lines)
    for value_ in typed:
        assert value_ not in everything, value_
    assert "production-test-key" not in everything


def test_each_process_logs_its_version_and_its_settings_names_at_start(simulator, tmp_path):
    from tests.conftest import PRODUCTION_SECRET

    env = {**os.environ, "ENGAGE_BASE_URL": simulator.url, "ENGAGE_API_KEY": "key",
           "SECRET_KEY": PRODUCTION_SECRET, "STAFF_PIN": "4711", "METRICS_TOKEN": TOKEN,
           "STATE_DB": str(tmp_path / "state.sqlite3"), "WEB_WORKERS": "2",
           "LOG_LEVEL": "INFO"}  # fmt: skip
    server = start_server(env)
    drain(server)
    try:
        wait_until(lambda: sum("worker starting" in line for line in server.lines) == 2,
                   "the workers never said they started")  # fmt: skip
    finally:
        stop(server)
    starts = [line for line in server.lines if " starting pid=" in line]
    assert len(starts) == 3, "the server and each of its two workers"
    for line in starts:
        assert re.search(r"engage-signup \d+\.\d+\.\d+ \(commit [0-9a-f]{40}\)", line)
        assert "METRICS_TOKEN" in line and TOKEN not in line, "names, never values"
        assert "production-test-secret" not in line


def test_version_commit_comes_from_app_commit_when_set(monkeypatch):
    from webapp.ops import version

    version.commit.cache_clear()
    monkeypatch.setenv("APP_COMMIT", "abc123def")
    try:
        assert version.commit() == "abc123def"
    finally:
        version.commit.cache_clear()


def test_the_shipped_environment_nginx_and_prometheus_files_work_together(
    simulator, postgres, tmp_path
):
    """deploy/engage-signup.env.example (its "replace-with" values filled in, as an operator
    does), the deploy/ nginx site in front, and deploy/prometheus/prometheus.yml with its token
    file: Prometheus scrapes /metrics through nginx with the bearer token, while a client
    without it is refused. (Before, the environment example had no METRICS_TOKEN, and the
    shipped scrape could only be refused.) METRICS_ALLOW names an address no scrape comes from,
    so the token alone opens it, as for a Prometheus elsewhere in the chain."""
    import secrets

    from tests.components import (
        drain,
        free_port,
        read_until,
        start_server,
        stop,
        wait_until_up,
    )

    settings = {}
    for line in (DEPLOY / "engage-signup.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings[key] = value
    assert settings.get("METRICS_TOKEN", "").startswith("replace-with"), "the operator sets it"
    filled = {key: secrets.token_urlsafe(24) for key, value in settings.items()
              if value.startswith("replace-with")}  # fmt: skip
    filled["STAFF_PIN"] = "47114711"
    postgres.execute("CREATE SCHEMA shipped_files")
    port = free_port()
    env = {**os.environ, **settings, **filled, "ENGAGE_BASE_URL": simulator.url,
           "DATABASE_URL": postgres.url + "?options=-c%20search_path%3Dshipped_files",
           "ALLOWED_HOSTS": "127.0.0.1", "PORT": str(port), "METRICS_ALLOW": "192.0.2.1",
           "LOG_LEVEL": "WARNING"}  # fmt: skip
    app = start_server(env)
    url = read_until(app, r"open (http://[^\s\"]+)").group(1)
    drain(app)
    nginx = prometheus = None
    try:
        wait_until_up(url.replace("localhost", "127.0.0.1"))
        nginx = Nginx(tmp_path / "nginx", f"127.0.0.1:{app_port(url)}")
        token_file = tmp_path / "token"
        token_file.write_text(filled["METRICS_TOKEN"] + "\n")
        shutil.copy(RULES / "alerts.yml", tmp_path / "alerts.yml")
        shipped = (RULES / "prometheus.yml").read_text()
        config = (
            shipped.replace("/etc/prometheus/engage-signup-metrics-token", str(token_file))
            .replace('["app1.signup.acme.se:443", "app2.signup.acme.se:443"]',
                     f'["127.0.0.1:{nginx.https_port}"]')
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("    static_configs:", f"    tls_config: {{ca_file: {nginx.cert}}}\n"
                     "    static_configs:")
        )  # fmt: skip
        assert config.count("127.0.0.1:") == 1 and str(token_file) in config
        stranger = nginx.client("127.0.0.10").get(nginx.url + "metrics", timeout=10)
        assert stranger.status_code == 403, "no token, not an allowed address"
        prometheus = Prometheus(tmp_path, config_text=config)

        def up() -> str | None:
            result = prometheus.query('up{job="engage-signup"}')
            return result[0]["value"][1] if result else None

        wait_until(lambda: up() == "1", f"Prometheus could not scrape through nginx: up={up()}",
                   seconds=60)  # fmt: skip
        built = prometheus.query("engage_signup_build_info")
        assert built, "the app's own series, read through nginx"
    finally:
        for part in (prometheus, nginx):
            if part is not None:
                part.stop()
        stop(app)


def app_port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])
