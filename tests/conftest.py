"""Shared fixtures: the app with CSRF on, requests-mock at the HTTP edge, and a form submitter."""

from __future__ import annotations

import gc
import os
import re
import threading
from contextlib import contextmanager
from html import unescape
from urllib.parse import urlsplit

import pytest
import requests_mock
from prometheus_client.parser import text_string_to_metric_families

from tests.components import (
    SCREENSHOTS,
    PostgresServer,
    chromium_path,
    drain,
    missing,
    read_until,
    start_server,
    stop,
    wait_until_up,
)
from webapp import create_app
from webapp.config import DEFAULT_CONSENTS
from webapp.signup.padding import PRIOR_SECONDS

# A base URL that explains itself if a test ever lets a real request out.
ENGAGE = "https://unmocked-engage.invalid"
FIND = f"{ENGAGE}/api/v3/contacts/id"
CREATE = f"{ENGAGE}/api/v3/contacts"
CONTACT_ID = "2e40b702-2767-4abe-ae99-aa510108e22b"

# The default consent with a terms URL of the deployment's own: no call for Engage's consent
# definitions on every form page (tests of Engage's texts and terms set CONSENTS themselves).
TEST_CONSENTS = [{**DEFAULT_CONSENTS[0], "url": "https://shop.example/membership-terms"}]

TEST_CONFIG = {
    "CONSENTS": TEST_CONSENTS,
    "ENGAGE_BASE_URL": ENGAGE,
    "ENGAGE_API_KEY": "test-api-key-not-secret",
    "SECRET_KEY": "test-secret-key-0123456789",
    "STORE_EXTERNAL_ID": "101",
    "STAFF_PIN": "4711",
    "ENGAGE_SETTLE_SECONDS": 0,
    "ENGAGE_RETRY_SECONDS": 0,
    "HTTPS": False,  # the test client speaks plain HTTP; tests of HTTPS set it themselves
    "PUBLIC_URL": "http://localhost",  # the address the test client's "phones" reach
    # The simulator answers in milliseconds: public screens' answers need not wait the second
    # a real tenant's first creates might take (tests of the release moment set their own).
    "ANSWER_PRIOR_SECONDS": 0.25,
}
STORES = {  # the simulator's stores (webapp/simulator/engine.py), as /setup/ binds them
    "101": ("Acme Stockholm Drottninggatan", "SE"),
    "201": ("Acme Helsinki Aleksanterinkatu", "FI"),
    "301": ("Acme Oslo Karl Johans gate", "NO"),
    "401": ("Acme København Strøget", "DK"),
}

VALID_FORM = {
    "firstName": "Anna",
    "lastName": "Andersson",
    "email": "anna@example.com",
    "countryCode": "SE",
    "consent-memberConsent": "y",
}


def created_body(**attributes):
    return {
        "id": "e8f17b1d-b777-4688-862b-cf38009a726e",
        "attributes": {"memberNumber": "999032095", **attributes},
        "meta": {"approved": True},
        "preferences": {},
        "consents": [],
    }


# A member in the simulator who holds everything VALID_FORM gives: found, `existing`.
KNOWN_MEMBER = {**{k: v for k, v in VALID_FORM.items() if "-" not in k},
                "consents": [{"id": "memberConsent", "value": True}]}  # fmt: skip


def member_body(**attributes):
    """A member who holds everything VALID_FORM gives: found, nothing new to add (`existing`)."""
    body = created_body(**{**{k: v for k, v in VALID_FORM.items() if "-" not in k}, **attributes})
    body["consents"] = [{"id": "memberConsent", "value": True}]
    return body


ENGINES = ("sqlite", "postgresql")


def pytest_generate_tests(metafunc):
    """Tests marked shared_state run once on each engine of the shared state (those that use
    it: a test about PostgreSQL alone asks for `pg_database` instead)."""
    marked = metafunc.definition.get_closest_marker("shared_state")
    if marked and "state_engine" in metafunc.fixturenames:
        metafunc.parametrize("state_engine", ENGINES, indirect=True)


@pytest.fixture
def state_engine(request) -> str:
    return getattr(request, "param", "sqlite")


@pytest.fixture
def state_config(tmp_path, state_engine, request) -> dict:
    """Where the shared state lives: a SQLite file, or a schema of its own on PostgreSQL."""
    config = {"STATE_DB": str(tmp_path / "state.sqlite3"), "DATABASE_URL": ""}
    if state_engine == "postgresql":
        config["DATABASE_URL"] = request.getfixturevalue("pg_database")
    return config


@pytest.fixture
def app_config(state_config):
    return {**TEST_CONFIG, **state_config}


@pytest.fixture
def store(state_config, tmp_path):
    """The shared state on its own, migrated."""
    from webapp.store import open_store

    store = open_store({**state_config, "WEB_THREADS": 4}, instance_path=str(tmp_path))
    yield store
    store.close()


@pytest.fixture(scope="session")
def postgres():
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture
def pg_database(postgres, request):
    """A DATABASE_URL whose tables live in a schema of this test's own."""
    from urllib.parse import quote

    from webapp.store.postgres import PostgresEngine

    schema = "t_" + re.sub(r"\W", "_", request.node.name)[-40:].lower() + f"_{id(request)}"
    postgres.execute(f'CREATE SCHEMA "{schema}"')
    yield f"{postgres.url}?options={quote(f'-c search_path={schema}')}"
    for engine in list(PostgresEngine.instances):  # pools a test left open
        engine.close()


@pytest.fixture
def app(app_config):
    app = create_app(app_config)
    yield app
    app.extensions["engage"].close()


def enrol(browser, app, mode: str = "staff", store: str = "101", domain: str = "localhost"):
    """Make `browser` a device enrolled by staff on /setup/ (the cookie /setup/ sets, made
    without Engage's store list; tests/access/test_devices.py covers /setup/ itself)."""
    import secrets

    from webapp.access import devices

    name, country = STORES[store]
    device = devices.Device(store, name, country, mode, id=secrets.token_urlsafe(12))
    with app.test_request_context():
        browser.set_cookie(devices.cookie_name(), devices.encode(device), domain=domain)
    return browser


PRODUCTION_SECRET = "production-test-secret-0123456789"


_signers: dict[str, object] = {}
_signers_lock = threading.Lock()


def _signer(secret_key: str):
    """One small Flask app per secret key, made once, under a lock: tests call device_cookie()
    from several threads (tills), and building Flask apps at once in several threads meets a
    CPython 3.11 bug in ast.parse ("AST constructor recursion depth mismatch", python/cpython
    gh-106905), which Werkzeug calls for every URL rule."""
    from flask import Flask

    with _signers_lock:
        signer = _signers.get(secret_key)
        if signer is None:
            signer = _signers[secret_key] = Flask("device-cookie")
            signer.secret_key = secret_key
        return signer


def device_cookie(secret_key: str, mode: str = "staff", store: str = "101") -> str:
    """The device cookie /setup/ would give a device of `store`, for an app with `secret_key`."""
    import secrets

    from webapp.access import devices

    name, country = STORES[store]
    with _signer(secret_key).app_context():
        return devices.encode(
            devices.Device(store, name, country, mode, id=secrets.token_urlsafe(12))
        )


def enrolled_session(mode: str = "staff", secret_key: str = PRODUCTION_SECRET):
    """A requests session that is a device enrolled on the production server (plain HTTP)."""
    import requests

    browser = requests.Session()
    browser.trust_env = False
    browser.cookies.set("device", device_cookie(secret_key, mode))
    return browser


def same_device(browser, other):
    """`other` (a client of another worker) with `browser`'s cookies: the same tablet."""
    for cookie in ("session", "device"):
        if browser.get_cookie(cookie):
            other.set_cookie(cookie, browser.get_cookie(cookie).value)
    return other


def english_visitor(app):
    """A browser that no staff member enrolled, whose person chose English."""
    browser = app.test_client()
    browser.get("/?lang=en")
    return browser


def english_browser(app, mode: str = "staff"):
    """A tablet enrolled in `mode` whose person chose English (the store speaks Swedish)."""
    browser = enrol(app.test_client(), app, mode)
    browser.get("/?lang=en")
    return browser


def submitter(browser):
    """Open the form as a browser would, then post it with the token it carried."""

    def _submit(data=None, *, follow=True, **overrides):
        page = browser.get("/")
        fields = dict(VALID_FORM if data is None else data)
        fields.update(overrides)
        fields = {k: v for k, v in fields.items() if v is not None}
        fields.update(hidden_fields(page.get_data(as_text=True)))
        return browser.post("/", data=fields, follow_redirects=follow)

    return _submit


@pytest.fixture
def client(app):
    return english_browser(app)


@pytest.fixture
def engage_api():
    """requests-mock at the HTTP edge: an unregistered URL raises NoMockAddress."""
    with requests_mock.Mocker() as mock:
        yield mock


def hidden_fields(html: str) -> dict[str, str]:
    """The form's hidden inputs (CSRF token, one-time submission token), as a browser sends them."""
    return dict(re.findall(r'<input id="[^"]*" name="([^"]+)" type="hidden" value="([^"]*)"', html))


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    assert match, "the form carries no CSRF token"
    return match.group(1)


@pytest.fixture
def submit(client):
    return submitter(client)


def wait_until(condition, what: str, seconds: float = 30):
    """Poll `condition` until it is true (returned), failing with `what` after `seconds`: a
    wait for something to happen, never a fixed sleep (a loaded machine is slow, not wrong)."""
    import time

    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, what
        time.sleep(0.02)
    return result


def outcome_of(response) -> str:
    match = re.search(r'<main id="main" data-outcome="([^"]*)"', response.get_data(as_text=True))
    assert match, "page has no <main data-outcome>"
    return match.group(1)


def text_of(response) -> str:
    """The page's visible text with white space folded, as a person reads it."""
    html = response.get_data(as_text=True)
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", html)).split())


@contextmanager
def cycle_garbage():
    """The objects made inside the block that only Python's cycle collector would free (a list,
    filled when the block ends). Such objects wait for a collection, which pauses every thread."""
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list = []
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


# --- the simulator over real sockets -----------------------------------------------------------
@pytest.fixture
def engine():
    from webapp.simulator import Engine

    return Engine(create_limit=1.0)


@pytest.fixture
def simulator(engine):
    """The Engage simulator on a free loopback port."""
    from webapp.simulator import serve

    server = serve(engine)
    yield server
    server.stop()


@pytest.fixture
def sim_app(simulator, app_config):
    """The app talking to the simulator over HTTP, with short timeouts so faults are quick."""
    app = create_app(
        {
            **app_config,
            "ENGAGE_BASE_URL": simulator.url,
            "ENGAGE_READ_TIMEOUT": 1.5,
            "ENGAGE_CREATE_TIMEOUT": 1.5,
            "ENGAGE_SETTLE_SECONDS": 0.2,
            "ENGAGE_RETRY_SECONDS": 0.05,
        }
    )
    yield app
    app.extensions["engage"].close()


@pytest.fixture
def simulated_app(simulator, app_config):
    """Apps against the simulator, with settings of the test's choosing; closed afterwards."""
    apps = []

    def make(**settings):
        app = create_app({**app_config, "ENGAGE_BASE_URL": simulator.url, **settings})
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["engage"].close()


@pytest.fixture
def sim_client(sim_app):
    return english_browser(sim_app)


@pytest.fixture
def sim_submit(sim_client):
    return submitter(sim_client)


@pytest.fixture
def production_server(simulator, tmp_path):
    """Start the README's server (gunicorn, threaded workers) against the simulator."""
    import os

    servers = []

    def _start(**settings) -> str:
        env = {
            **os.environ,
            "ENGAGE_BASE_URL": simulator.url,
            "ENGAGE_API_KEY": "production-test-key",
            "SECRET_KEY": PRODUCTION_SECRET,
            "STORE_EXTERNAL_ID": "101",
            "STAFF_PIN": "4711",
            "HTTPS": "false",
            "STATE_DB": str(tmp_path / "state.sqlite3"),
            "SUBMIT_LIMIT_PER_DEVICE": "10000",
            "SUBMIT_LIMIT_PER_ADDRESS": "100000",
            "LOG_LEVEL": "WARNING",
            "WEB_WORKERS": "2",
            "WEB_THREADS": "8",
            "ANSWER_PRIOR_SECONDS": "0.25",
            **settings,
        }
        server = start_server(env)
        servers.append(server)
        url = read_until(server, r"open (http://[^\s\"]+)").group(1)
        drain(server)
        wait_until_up(url)
        return url

    _start.servers = servers  # each server's output lines, for tests that read the log
    yield _start
    for server in servers:
        stop(server)


def pytest_terminal_summary(terminalreporter):
    """Say where the browser tests' screenshots are, or that they did not run."""

    if not chromium_path():
        terminalreporter.write_line(
            "Browser tests did not run: Chromium not found (Debian package chromium, or set "
            "CHROMIUM_PATH). CI installs it and sets REQUIRE_BROWSER=1."
        )
    elif SCREENSHOTS.is_dir() and any(SCREENSHOTS.iterdir()):
        terminalreporter.write_line(f"Screenshots at tablet size: {SCREENSHOTS}")


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of 1 MB (tmpfs) that a test can fill up: mounting needs root."""
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk) -> None:
    """Write to `disk` until it is full (ENOSPC), as a log or a backup would."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as exc:
        assert exc.errno == 28, exc  # No space left on device
    finally:
        os.close(fd)


# --- helpers that tests of several parts share ----------------------------------------------
class EngageClock:
    """A fake clock in which each call Engage received took `per_call` seconds (a create that
    made a contact twice that), and a record of every wait the kiosk's padding asked for: the
    padding's targets asserted, never the wall clock (a loaded machine slows every request,
    and the first of a process most)."""

    def __init__(self, engine, app, per_call: float = 0.2):
        self.engine, self.per_call, self.waits = engine, per_call, []
        times = app.extensions["answer_times"]
        times.clock, times.sleep = self.now, self.waits.append
        times.prior = PRIOR_SECONDS  # the production default, longer than a simulated create

    def now(self) -> float:
        calls = self.engine.requests()
        return self.per_call * (len(calls) + sum(1 for c in calls if c.status == 201))


def scrape(client, **environ) -> dict[tuple, float]:
    """The samples of one scrape: (name, sorted labels) -> value."""
    answer = client.get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1", **environ})
    assert answer.status_code == 200, answer.status_code
    return samples(answer.get_data(as_text=True))


def samples(text: str) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scraped: dict, name: str, **labels) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def start(till) -> str:
    """The cashier taps "Customer signs up on their phone": the till page's address."""
    page = till.get("/").get_data(as_text=True)
    assert "data-handoff-start" in page
    token = re.search(r'action="/handoff/"[^>]*>\s*<input type="hidden" name="csrf_token" '
                      r'value="([^"]+)"', page).group(1)  # fmt: skip
    answer = till.post("/handoff/", data={"csrf_token": token})
    assert answer.status_code == 303
    return answer.headers["Location"]


def link_of(till, till_page: str) -> str:
    html = till.get(till_page).get_data(as_text=True)
    return unescape(re.search(r"<p [^>]*data-handoff-link[^>]*>([^<]+)</p>",
                              html).group(1))  # fmt: skip


def phone_opens(app, link: str):
    phone = app.test_client()
    answer = phone.get(urlsplit(link).path)
    return phone, answer


def reveal(till, till_page: str):
    """The till after the phone's sign-up: "Signed up on the phone", nothing more, until the
    cashier turns the screen and presses "Show result" (a form POST): then the result page."""
    done = till.get(till_page)
    assert outcome_of(done) == "handoff-done"
    html = done.get_data(as_text=True)
    assert "data-reveal" in html
    token = re.search(r'/reveal"><input type="hidden" name="csrf_token" value="([^"]+)"',
                      html).group(1)  # fmt: skip
    return till.post(till_page + "/reveal", data={"csrf_token": token}, follow_redirects=True)


def phone_sends(phone, **fields):
    page = phone.get("/j/").get_data(as_text=True)
    data = {**VALID_FORM, **fields, **hidden_fields(page)}
    return phone.post("/j/", data={k: v for k, v in data.items() if v is not None},
                      follow_redirects=True)  # fmt: skip
