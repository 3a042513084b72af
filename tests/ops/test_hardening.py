"""What an outside review attacked: malformed requests, state-database faults, replayed tokens
and cookies, PIN guessing. Each finding of issue #12 that the test client or real sockets can
show; the kiosk's browser behaviour is in tests/pages/test_browser.py."""

from __future__ import annotations

import io
import logging
import os
import secrets
import subprocess
import sys
import threading

import pytest
import requests

from tests.components import ROOT
from tests.conftest import (
    CREATE,
    ENGAGE,
    FIND,
    VALID_FORM,
    created_body,
    english_browser,
    english_visitor,
    enrol,
    fill,
    hidden_fields,
    outcome_of,
    submitter,
    text_of,
)
from tests.processes import ending_with_tests
from webapp import create_app

FORM_FIELDS = (
    *("firstName", "lastName", "email", "countryCode", "mobilePhone", "birthDay", "zipCode"),
    *("acceptsEmail", "acceptsSms", "acceptsPostal", "consent-memberConsent", "submission"),
    "csrf_token",
)


def no_tracebacks(caplog) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= 50] == []
    assert "Traceback" not in caplog.text


# --- 5. malformed requests: a 4xx, the form kept, one log line ------------------------------------
@pytest.mark.parametrize("name", FORM_FIELDS)
def test_a_field_sent_as_a_file_is_refused_and_the_rest_is_kept(client, engage_api, caplog, name):
    caplog.set_level(logging.INFO)
    page = client.get("/").get_data(as_text=True)
    data = {**VALID_FORM, "lastName": "Bergström", "mobilePhone": "0701234567"}
    data.update(hidden_fields(page))
    data[name] = (io.BytesIO(b"not a field"), "upload.txt")
    response = client.post("/", data=data, content_type="multipart/form-data")
    html = response.get_data(as_text=True)
    assert response.status_code == 400
    assert outcome_of(response) == "invalid"
    assert engage_api.call_count == 0
    for kept in ("lastName", "mobilePhone", "email"):
        if kept != name:
            assert f'value="{data[kept]}"' in html, kept
    no_tracebacks(caplog)


def test_the_staff_pin_sent_as_a_file_is_refused(app, caplog):
    browser = english_visitor(app)
    page = browser.get("/setup/").get_data(as_text=True)
    data = {**hidden_fields(page), "pin": (io.BytesIO(b"4711"), "pin.txt")}
    response = browser.post("/setup/pin", data=data, content_type="multipart/form-data")
    assert response.status_code == 400
    assert outcome_of(response) == "setup-pin"
    assert outcome_of(browser.get("/setup/")) == "setup-pin", "the PIN did not open setup"
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    "host",
    ["a" * 64, "a..b", "exa mple.se", "-bad.example", "x" * 300, "shop.example:99999999", "[::1"],
)
def test_a_malformed_host_is_a_400_with_one_log_line(client, caplog, host):
    caplog.set_level(logging.INFO)
    response = client.get("/", headers={"Host": host})
    assert response.status_code == 400
    assert [r for r in caplog.records if "status=400" in r.getMessage()] != []
    assert len(caplog.records) == 1
    no_tracebacks(caplog)


def test_only_the_allowed_hosts_are_served(app_config):
    app = create_app({**app_config, "ALLOWED_HOSTS": "signup.acme.se, .stores.acme.se"})
    browser = app.test_client()
    for host, status in [
        ("signup.acme.se", 200),
        ("SIGNUP.acme.se:443", 200),
        ("kiosk7.stores.acme.se", 200),
        ("stores.acme.se", 200),
        ("evil.example", 400),
        ("signup.acme.se.evil.example", 400),
        ("evilstores.acme.se", 400),  # the suffix without its dot is another domain
        ("xsignup.acme.se", 400),
    ]:
        assert browser.get("/healthz", headers={"Host": host}).status_code == status, host


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"email=%ZZ&firstName=%E0%A4%A"),
        ("application/x-www-form-urlencoded", b"\x00email=a\x00@example.com&\xff\xfe=\xc3\x28"),
        ("application/x-www-form-urlencoded", b"email=a@example.com&email=b@example.com"),
        ("application/json", b'{"email": "a@example.com"}'),
        ("multipart/form-data; boundary=xyz", b"--xyz\r\nbroken"),
        ("multipart/form-data", b"no boundary at all"),
        ("text/plain", b"email=a@example.com"),
    ],
)
def test_malformed_bodies_are_client_errors_never_a_500(
    client, engage_api, caplog, content_type, body
):
    caplog.set_level(logging.INFO)
    response = client.post("/", data=body, content_type=content_type)
    assert 400 <= response.status_code < 500
    assert engage_api.call_count == 0
    no_tracebacks(caplog)


def test_a_post_from_another_site_is_refused_even_with_a_valid_token(client, engage_api):
    page = client.get("/").get_data(as_text=True)
    data = {**VALID_FORM, **hidden_fields(page)}
    for origin in ("https://evil.example", "null", "http://localhost.evil.example"):
        response = client.post("/", data=data, headers={"Origin": origin})
        assert response.status_code == 400, origin
    assert engage_api.call_count == 0
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body())
    same = client.post("/", data=data, headers={"Origin": "http://localhost"})
    assert same.status_code == 303, "the tablet's own origin is fine"


def test_every_page_denies_powerful_features_and_cross_origin_openers(client):
    for path in ("/", "/healthz", "/nope", "/static/app.css"):
        response = client.get(path)
        headers = response.headers
        response.close()
        assert "camera=()" in headers["Permissions-Policy"]
        assert "geolocation=()" in headers["Permissions-Policy"]
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"


# --- 6. the state database failing ----------------------------------------------------------------
@pytest.fixture
def disk_app(small_disk, app_config):
    app = create_app({**app_config, "STATE_DB": str(small_disk / "state.sqlite3")})
    yield app
    app.extensions["state"].close()


def test_a_full_disk_keeps_the_details_calls_no_engage_and_readyz_says_so(
    disk_app, small_disk, engage_api, caplog
):
    engage_api.get(FIND, status_code=404)  # what /readyz asks Engage
    engage_api.get(ENGAGE + "/api/v3/consents", json=[{"id": "memberConsent"}])
    browser = english_browser(disk_app)
    submit = submitter(browser)
    fill(small_disk)
    caplog.set_level(logging.INFO)
    for n in range(3):
        page = submit(email=f"full{n}@example.com", lastName="Lindqvist")
        assert page.status_code == 200
        assert outcome_of(page) == "unavailable"
        html = page.get_data(as_text=True)
        assert f'value="full{n}@example.com"' in html and 'value="Lindqvist"' in html
    assert engage_api.call_count == 0, "no call to Engage without the guard"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 3 and all("state database unavailable" in e for e in errors)
    ready = browser.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["state"] == "unavailable"
    no_tracebacks(caplog)

    os.remove(small_disk / "filler")  # space again: signups and readiness come back
    engage_api.post(CREATE, status_code=201, json=created_body())
    assert outcome_of(submit(email="after@example.com")) == "created"
    assert browser.get("/readyz").status_code == 200


def test_a_disk_that_fills_while_engage_creates_still_tells_the_person(
    disk_app, small_disk, engage_api, caplog
):
    """Engage created the contact; recording the outcome then failed. The person is told what
    Engage did, with the member number, and the fault is one ERROR line."""

    def create(request, context):
        fill(small_disk)
        context.status_code = 201
        return created_body(memberNumber="70042")

    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, json=create)
    caplog.set_level(logging.INFO)
    page = submitter(english_browser(disk_app))()
    assert outcome_of(page) == "created"
    assert "70042" in text_of(page)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "state database unavailable" in errors[0]
    no_tracebacks(caplog)


class Worker(threading.Thread):
    """A long-lived thread, like one of a gunicorn worker's: it keeps its database connection
    from one request to the next."""

    def __init__(self):
        import queue

        super().__init__(daemon=True)
        self.jobs: queue.Queue = queue.Queue()
        self.start()

    def run(self):
        while True:
            job, done = self.jobs.get()
            done.append(job())

    def call(self, job):
        done: list = []
        self.jobs.put((job, done))
        return done

    def __call__(self, job):
        done = self.call(job)
        while not done:
            threading.Event().wait(0.01)
        return done[0]


def test_a_state_file_deleted_while_running_is_made_again_and_tokens_stay_one_time(
    sim_app, engine, caplog, app_config
):
    """Thread A had its connection before the file was deleted, thread B opens one after. Both
    must use the same new file: else a token claimed by one is unknown to the other, and new
    connections find no tables."""
    caplog.set_level(logging.INFO)
    path = app_config["STATE_DB"]
    a, b = Worker(), Worker()

    def signup(email):
        return lambda: outcome_of(submitter(english_browser(sim_app))(email=email))

    assert a(signup("before@example.com")) == "created"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    assert b(signup("after.b@example.com")) == "created"  # B's first connection
    assert a(signup("after.a@example.com")) == "created"
    assert os.path.exists(path), "a new state file was made"

    # The same form sent twice at once, once through each thread: still one create.
    browser = english_browser(sim_app)
    fields = {**VALID_FORM, "email": "twice@example.com"}
    fields.update(hidden_fields(browser.get("/").get_data(as_text=True)))
    engine.latency = 0.2
    taps = [w.call(lambda: browser.post("/", data=fields).status_code) for w in (a, b)]
    while not all(taps):
        threading.Event().wait(0.01)
    assert [t[0] for t in taps] == [303, 303]
    creates = engine.requests("/api/v3/contacts", "POST")
    assert [r.body["email"] for r in creates].count("twice@example.com") == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "was deleted or replaced" in errors[0]
    no_tracebacks(caplog)


@pytest.mark.parametrize("where", ["read-only disk", "a file as the folder"])
def test_an_unusable_state_db_at_start_up_is_one_line(small_disk, where):
    if where == "read-only disk":
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
        state_db = small_disk / "state.sqlite3"
    else:
        state_db = small_disk / "not-a-folder" / "state.sqlite3"
        state_db.parent.write_text("a file")
    env = {
        **os.environ,
        "ENGAGE_BASE_URL": "https://acme.staging.voyado.com",
        "ENGAGE_API_KEY": "key",
        "SECRET_KEY": secrets.token_urlsafe(24),
        "STAFF_PIN": "4711",
        "STATE_DB": str(state_db),
    }
    result = subprocess.run(
        [sys.executable, "-m", "webapp.serve"], env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "engage-signup: configuration error: STATE_DB: the shared state database cannot be used"
    )


# --- 7. a used submission token with other details ------------------------------------------------
@pytest.mark.shared_state
def test_other_details_under_a_used_token_never_see_the_first_persons_outcome(sim_client, engine):
    page = sim_client.get("/").get_data(as_text=True)
    token = hidden_fields(page)
    first = sim_client.post("/", data={**VALID_FORM, "email": "a@example.com", **token})
    assert first.status_code == 303
    member = text_of(sim_client.get("/done"))
    other = sim_client.post("/", data={**VALID_FORM, "email": "b@example.com", **token})
    assert other.status_code == 400 and outcome_of(other) == "invalid"
    assert "already been used for another sign-up" in text_of(other)
    assert "999000" not in text_of(other) and member not in text_of(other)
    assert 'value="b@example.com"' in other.get_data(as_text=True), "B's details are kept"
    again = {**VALID_FORM, "email": "b@example.com", **hidden_fields(other.get_data(as_text=True))}
    assert outcome_of(sim_client.post("/", data=again, follow_redirects=True)) == "created"
    emails = [c["attributes"]["email"] for c in engine.contacts()]
    assert sorted(emails) == ["a@example.com", "b@example.com"]


@pytest.mark.parametrize("changed", [{"firstName": "Bertil"}, {"mobilePhone": "070-174 06 99"}])
def test_the_same_key_with_other_details_under_a_used_token_is_given_back(
    sim_client, engine, changed
):
    """The key is the same, but not the rest (another name or phone: the next person at a
    till whose browser resent the form, or a retrying client): token-used, never the first
    outcome, and nothing sent to Engage."""
    token = hidden_fields(sim_client.get("/").get_data(as_text=True))
    first = sim_client.post("/", data={**VALID_FORM, "email": "same@example.com", **token})
    assert first.status_code == 303
    calls = len(engine.requests())
    other = sim_client.post(
        "/", data={**VALID_FORM, "email": "same@example.com", **changed, **token}
    )
    assert other.status_code == 400 and outcome_of(other) == "invalid"
    assert "already been used for another sign-up" in text_of(other)
    assert len(engine.requests()) == calls


def test_engage_is_never_asked_before_the_consent_record_is_written(sim_app, engine):
    """What the person was shown and chose is on record before Engage hears of them: when the
    record cannot be written, nothing is sent, and the person keeps their details."""
    from webapp.store import StateUnavailable

    state = sim_app.extensions["state"]

    def refuse(*args, **kwargs):
        raise StateUnavailable("disk full")

    state.consent_record = refuse
    page = submitter(english_browser(sim_app))(email="recorded.first@example.com")
    assert outcome_of(page) == "unavailable"
    assert 'value="recorded.first@example.com"' in page.get_data(as_text=True)
    assert engine.requests() == [], "no find, no create"


# --- 8. limits that cannot be got around ----------------------------------------------------------
@pytest.mark.shared_state
def test_replaying_the_first_session_cookie_does_not_reset_a_devices_limit(app_config, engage_api):
    """The browser's id is in its session from the first page on: replaying that cookie before
    every POST is still the same browser (an unenrolled kiosk here, so no device id)."""
    app = create_app({**app_config, "DEVICE_MODE": "kiosk", "SUBMIT_LIMIT_PER_DEVICE": 12})
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body())
    browser = app.test_client()
    page = browser.get("/").get_data(as_text=True)
    first_cookie = browser.get_cookie("session").value
    hidden = hidden_fields(page)
    outcomes = []
    for n in range(20):
        browser.set_cookie("session", first_cookie)
        fields = {**VALID_FORM, **hidden, "email": f"p{n}@example.com",
                  "submission": secrets.token_urlsafe(18)}  # fmt: skip
        response = browser.post("/", data=fields, follow_redirects=True)
        outcomes.append(outcome_of(response))
    assert outcomes.count("thanks") == 12 and outcomes.count("throttled") == 8
    assert len([r for r in engage_api.request_history if r.method == "POST"]) == 12


@pytest.mark.shared_state
def test_wrong_pins_are_capped_for_the_whole_deployment(app_config, caplog):
    """Many addresses guessing at once: after PIN_FAILURES_PER_HOUR wrong PINs no stranger's
    PIN is checked any more, the right one included, and one ERROR line says so; a device
    that staff enrolled before is not locked out by the strangers."""
    app = create_app({**app_config, "PIN_FAILURES_PER_HOUR": 30})
    caplog.set_level(logging.INFO)
    statuses = []
    for address in range(10):
        browser = app.test_client()
        environ = {"REMOTE_ADDR": f"10.0.0.{address + 1}"}
        for guess in range(20):
            page = browser.get("/setup/", environ_base=environ).get_data(as_text=True)
            pin = {"pin": f"{address:02d}{guess:02d}", **hidden_fields(page)}
            statuses.append(browser.post("/setup/pin", data=pin, environ_base=environ).status_code)
    assert statuses.count(400) == 30, "exactly the cap was checked"
    locked = [
        r.getMessage()
        for r in caplog.records
        if "locked for the whole deployment" in r.getMessage()
    ]
    assert len(locked) == 1 and caplog.records[-1].levelno <= logging.ERROR
    browser = english_visitor(app)
    page = browser.get("/setup/").get_data(as_text=True)
    right = browser.post("/setup/pin", data={"pin": "4711", **hidden_fields(page)})
    assert right.status_code == 429 and "locked" in text_of(right)
    tablet = enrol(english_visitor(app), app)  # enrolled before: re-enrolling it still works
    page = tablet.get("/setup/").get_data(as_text=True)
    assert tablet.post("/setup/pin", data={"pin": "4711", **hidden_fields(page)}).status_code == 303
    kiosk = enrol(english_visitor(app), app, "kiosk")  # enrolled, but it stands in public
    page = kiosk.get("/setup/").get_data(as_text=True)
    assert kiosk.post("/setup/pin", data={"pin": "4711", **hidden_fields(page)}).status_code == 429


# --- 9. cookies, origin, stopping -----------------------------------------------------------------
def test_a_device_enrolled_before_the_cookie_prefix_keeps_its_enrolment(app_config):
    """Over HTTPS the device cookie is __Host-device now; a tablet enrolled under the old name
    keeps working, and gets the new cookie and an id of its own."""
    from itsdangerous import URLSafeSerializer

    app = create_app({**app_config, "HTTPS": True, "PUBLIC_URL": "https://localhost"})
    site = "https://tablet.store.example"
    browser = app.test_client()
    # The cookie as /setup/ made it before devices had ids and the cookie had its prefix.
    old = URLSafeSerializer(app.secret_key, salt="engage-signup-device").dumps(
        {"store_id": "101", "store_name": "Acme", "country": "SE", "mode": "staff"}
    )
    browser.set_cookie("device", old, domain="tablet.store.example")
    page = browser.get("/", base_url=site)
    assert outcome_of(page) == "form"
    set_cookies = page.headers.getlist("Set-Cookie")
    assert any(c.startswith("__Host-device=") and "Secure" in c for c in set_cookies)
    assert any(c.startswith("device=;") for c in set_cookies), "the old cookie is removed"
    new = browser.get_cookie("__Host-device", domain="tablet.store.example").value
    browser.delete_cookie("device", domain="tablet.store.example")
    assert outcome_of(browser.get("/", base_url=site)) == "form"
    assert new != old
    assert URLSafeSerializer(app.secret_key, salt="engage-signup-device").loads(new)["id"]


def test_dev_py_run_stops_everything_it_started_on_sigterm(tmp_path):
    """A container runtime or supervisor stops the app with SIGTERM: the server and the training
    simulator both stop, and the command ends."""
    import re
    import signal
    import time

    from tests.components import free_port, read_until

    root = str(ROOT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENGAGE_", "SECRET_KEY"))}
    env.update(STATE_DB=str(tmp_path / "state.sqlite3"), PYTHONUNBUFFERED="1")
    port = free_port()
    process = subprocess.Popen(
        ending_with_tests([sys.executable, "dev.py", "run", "--port", str(port), "--workers", "1"]),
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    simulator = read_until(process, r"built-in simulator at (http://\S+)").group(1)
    app_url = read_until(process, r"open (http://[^\s\"]+)").group(1)
    for _ in range(100):
        try:
            requests.get(app_url + "healthz", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    process.stdout.close()
    for url in (app_url + "healthz", simulator + "/_simulator/stats"):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=2)
    assert re.match(r"http://localhost:\d+/", app_url)
