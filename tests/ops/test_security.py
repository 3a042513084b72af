"""Headers, cookies, error pages and logs as a browser, an attacker and an auditor see them."""

from __future__ import annotations

import logging
import re
import time

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from tests.conftest import (
    CREATE,
    FIND,
    VALID_FORM,
    created_body,
    english_browser,
    enrol,
    hidden_fields,
    outcome_of,
    submitter,
)
from webapp import create_app
from webapp.access import signed

PAGES = [
    ("GET", "/", 200),
    ("GET", "/done", 303),
    ("GET", "/nope", 404),
    ("DELETE", "/", 405),
    ("POST", "/", 400),  # no CSRF token
    ("GET", "/healthz", 200),
    ("GET", "/static/app.css", 200),
]


@pytest.mark.parametrize(("method", "path", "status"), PAGES)
def test_every_response_carries_the_security_headers(client, method, path, status):
    response = client.open(path, method=method)
    assert response.status_code == status
    headers = response.headers
    csp = headers["Content-Security-Policy"]
    for directive in (
        "default-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ):
        assert directive in csp
    assert "unsafe-inline" not in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "same-origin"  # not no-referrer: CSRF over HTTPS needs it
    assert "Server-Timing" in headers
    if response.mimetype == "text/html":
        assert headers["Cache-Control"] == "no-store"
    response.close()


def test_pages_load_no_inline_script(client):
    html = client.get("/").get_data(as_text=True)
    assert "<script>" not in html and "onclick" not in html and "style=" not in html


def test_over_https_cookies_are_secure_host_only_and_hsts_is_sent(app_config):
    app = create_app({**app_config, "HTTPS": True, "PUBLIC_URL": "https://localhost"})
    browser = enrol(app.test_client(), app, domain="tablet.store.example")
    response = browser.get("/", base_url="https://tablet.store.example")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-session=")
    for flag in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert flag in cookie
    assert "Domain" not in cookie
    assert response.headers["Strict-Transport-Security"].startswith("max-age=")


def test_over_https_every_cookie_the_app_sets_is_secure_host_only_and_same_site(
    simulator, app_config
):
    """A browser drops a __Host- cookie (or its deletion) that lacks Secure, Path=/ or has a
    Domain: the device would stay unbound, and each result page would bounce to the form."""
    from werkzeug.http import parse_cookie

    app = create_app(
        {
            **app_config,
            "ENGAGE_BASE_URL": simulator.url,
            "HTTPS": True,
            "STAFF_PIN": "4711",
            "PUBLIC_URL": "https://localhost",
        }
    )
    site = "https://tablet.store.example"
    browser = app.test_client()
    headers = {"Referer": site + "/"}  # Flask-WTF's CSRF check over HTTPS needs it
    responses = []

    def visit(method, path, data=None):
        page = browser.open(path, method=method, data=data, base_url=site, headers=headers)
        responses.append(page)
        return page

    def hidden(path):
        return hidden_fields(visit("GET", path).get_data(as_text=True))

    assert visit("POST", "/setup/pin", {"pin": "4711", **hidden("/setup/")}).status_code == 303
    form = {"store": "201", "mode": "staff", **hidden("/setup/")}
    assert visit("POST", "/setup/", form).status_code == 303
    visit("GET", "/?lang=en")
    assert visit("POST", "/", {**VALID_FORM, **hidden("/")}).status_code == 303
    assert outcome_of(visit("GET", "/done")) == "created"
    visit("GET", "/")  # the next person: the result cookie is deleted
    assert visit("POST", "/setup/pin", {"pin": "4711", **hidden("/setup/")}).status_code == 303
    assert visit("POST", "/setup/forget", hidden("/setup/")).status_code == 303  # deleted

    set_cookies = [v for r in responses for v in r.headers.getlist("Set-Cookie")]
    names = {c.split("=", 1)[0] for c in set_cookies}
    assert {"__Host-session", "__Host-result", "__Host-device"} <= names
    for cookie in set_cookies:
        attributes = {k.lower() for k in parse_cookie(cookie.split(";", 1)[1].replace(" ", ""))}
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"secure", "httponly"} <= flags, cookie
        assert "samesite=lax" in flags and "path=/" in flags, cookie
        assert "domain" not in attributes, cookie


def test_the_session_cookie_is_http_only_and_same_site_over_http(app):
    cookie = enrol(app.test_client(), app).get("/").headers["Set-Cookie"]  # a first visit
    assert cookie.startswith("session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_https_is_the_default_outside_training_mode(app_config):
    config = {k: v for k, v in app_config.items() if k != "HTTPS"} | {
        "PUBLIC_URL": "https://localhost"
    }
    assert create_app(config).config["HTTPS"] is True
    assert create_app({**config, "TRAINING_MODE": True}).config["HTTPS"] is False


def test_a_request_over_the_size_limit_gets_a_friendly_413(client):
    response = client.post("/", data={"firstName": "x" * 200_000})
    assert response.status_code == 413
    assert "more data than a sign-up can hold" in response.get_data(as_text=True)


def test_an_unexpected_error_shows_a_friendly_page_and_no_trace(app, caplog):
    from flask import request

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail " + request.args["who"])

    response = app.test_client().get("/boom?who=anna@example.com")
    html = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "Traceback" not in html and "secret detail" not in html
    assert 'data-outcome="error"' in html
    assert "anna@example.com" not in caplog.text, "the exception's message is not logged"
    assert "type=RuntimeError" in caplog.text


PERSON = {
    "firstName": "Zlatanina",
    "lastName": "Privatsson",
    "email": "zlatanina.private@example.com",
    "mobilePhone": "0709876543",
    "birthDay": "1987-06-05",
    "zipCode": "11122",
}
PERSONAL = [
    "Zlatanina",
    "Privatsson",
    "zlatanina",
    "0709876543",
    "709876543",
    "1987-06-05",
    "11122",
]


@pytest.mark.parametrize(
    ("fault", "expected"),
    [(None, "created"), (("status", 422), "rejected"), (("status", 504), "timeout"),
     (("status", 500), "unavailable"), (("drop", None), "unavailable"),
     (("hang", None), "timeout"), (("status", 429), "unavailable"), ("existing", "existing"),
     ("updated", "updated"), ("promoted", "promoted"), ("ambiguous", "ambiguous"),
     ("in-progress", "in-progress")],
)  # fmt: skip
def test_no_log_line_ever_holds_personal_data_or_the_api_key(
    sim_app, engine, caplog, fault, expected
):
    caplog.set_level(logging.DEBUG)
    if fault == "existing":  # a member who holds all of it already
        engine.add_contact({**PERSON, "mobilePhone": "+46709876543", "zipCode": "111 22",
                            "countryCode": "SE", "consents": [{"id": "memberConsent",
                                                               "value": True}]})  # fmt: skip
    elif fault == "updated":  # a member who lacks all but the address: a PATCH with the rest
        engine.add_contact({"email": PERSON["email"]})
    elif fault == "promoted":
        engine.add_contact({"contactType": "Contact", "email": PERSON["email"],
                            "mobilePhone": "+46709876543"})  # fmt: skip
    elif fault == "ambiguous":
        for _ in range(2):
            engine.add_contact({"email": PERSON["email"]})
    elif fault == "in-progress":
        engine.begin_create("Member", PERSON["email"])  # a create of this person is running
    elif fault:
        kind, status = fault
        engine.inject(kind, status=status, seconds=3) if status else engine.inject(kind, seconds=3)
    browser = english_browser(sim_app)
    page = submitter(browser)({**VALID_FORM, **PERSON})
    assert outcome_of(page) == expected, "each case reaches the outcome it stands for"
    invalid = submitter(browser)({**VALID_FORM, **PERSON, "email": "broken"})
    assert outcome_of(invalid) == "invalid"
    everything = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records
    ).lower()
    assert "engage call" in everything and "request method=post" in everything
    for secret in [*PERSONAL, sim_app.config["ENGAGE_API_KEY"]]:
        assert secret.lower() not in everything, secret


def test_the_request_id_in_the_response_is_the_one_in_its_log_lines(sim_app, caplog):
    caplog.set_level(logging.INFO)
    browser = english_browser(sim_app)
    given = browser.get("/", headers={"X-Request-Id": "till-7.request-0001"})
    assert given.headers["X-Request-Id"] == "till-7.request-0001"  # a caller's id is kept
    made = submitter(browser)(follow=False)
    request_id = made.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", request_id)
    lines = [r.getMessage() for r in caplog.records if f"request_id={request_id}" in r.getMessage()]
    assert any(line.startswith("request method=POST") for line in lines)
    assert sum(line.startswith("engage call") for line in lines) == 2  # the find and the create
    hostile = browser.get("/", headers={"X-Request-Id": "<script>alert(1)</script>"})
    assert re.fullmatch(r"[0-9a-f]{16}", hostile.headers["X-Request-Id"])  # replaced, not echoed


def test_log_lines_carry_the_devices_own_store_and_the_client_address(
    simulated_app, engine, caplog
):
    """In a chain every device serves its own store: STORE_EXTERNAL_ID is only the default.
    Each line names the store of the device that asked, and the client's address as nginx
    passes it (TRUSTED_PROXIES=1), the manager's sign-in and "shown to" lines included."""
    from cryptography.fernet import Fernet

    app = simulated_app(TRUSTED_PROXIES=1, MANAGER_PINS="m201@201:48291573",
                        OUTBOX_KEYS=Fernet.generate_key().decode())  # fmt: skip
    caplog.set_level(logging.INFO)
    proxied = {"REMOTE_ADDR": "127.0.0.1"}
    headers = {"X-Forwarded-For": "192.0.2.17"}
    till = enrol(app.test_client(), app, "staff", "201")
    till.get("/?lang=en", environ_base=proxied, headers=headers)
    page = till.get("/", environ_base=proxied, headers=headers).get_data(as_text=True)
    till.post("/", data={**VALID_FORM, **hidden_fields(page)}, environ_base=proxied,
              headers=headers)  # fmt: skip
    lines = [r.getMessage() for r in caplog.records]
    posted = [line for line in lines if line.startswith("request method=POST path=/ ")]
    assert posted and all("store=201 device=- client=192.0.2.17 " in line for line in posted)
    calls = [line for line in lines if line.startswith("engage call")]
    assert calls and all("store=201 device=- client=192.0.2.17 " in line for line in calls)
    caplog.clear()
    manager = till  # the same tablet opens the manager's view
    login = manager.get("/manager/", environ_base=proxied, headers=headers).get_data(as_text=True)
    manager.post("/manager/login", data={"pin": "48291573", **hidden_fields(login)},
                 environ_base=proxied, headers=headers)  # fmt: skip
    signed_in = [r.getMessage() for r in caplog.records if "signed in" in r.getMessage()]
    assert signed_in == [signed_in[0]] and "client=192.0.2.17 " in signed_in[0]


# --- hostile input --------------------------------------------------------------------------
FIELDS = ("firstName", "lastName", "email", "mobilePhone", "countryCode", "birthDay", "zipCode",
          "acceptsEmail", "acceptsSms", "acceptsPostal", "consent-memberConsent")  # fmt: skip
hostile = st.one_of(
    st.text(max_size=300),
    st.sampled_from(
        [
            "<script>alert(1)</script>",
            '"><img src=x onerror=alert(1)>',
            "' OR 1=1 --",
            "\x00\x1b[31m",
            "a@b.c" * 60,
            "+46" + "9" * 40,
            "9999-99-99",
            "SE\r\nX: y",
            "{{7*7}}",
            "${jndi:ldap://x}",
            "\u202e\u0000",
            "😀" * 80,
        ]
    ),  # fmt: skip
)


@pytest.fixture
def hostile_app(app_config):
    """One app for all the test's examples (each a device of its own): hypothesis runs them
    within one call of the test, so a fixture is made once; an app per example was most of
    the test's 33 s."""
    app = create_app({**app_config, "SUBMIT_LIMIT_PER_DEVICE": 10_000,
                      "SUBMIT_LIMIT_PER_ADDRESS": 100_000})  # fmt: skip
    yield app
    app.extensions["engage"].close()


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=st.dictionaries(st.sampled_from(FIELDS), hostile, max_size=len(FIELDS)))
@example(values={"firstName": "<script>alert(1)</script>", "lastName": "' OR 1=1 --"})  # sent
@example(values={"email": "a@b.c" * 60, "birthDay": "9999-99-99"})  # refused
def test_hostile_values_never_cause_a_5xx_unescaped_markup_or_a_call_with_invalid_data(
    hostile_app, values
):
    import requests_mock

    browser = english_browser(hostile_app)
    with requests_mock.Mocker() as engage:
        engage.get(FIND, status_code=404)
        engage.post(CREATE, status_code=201, json=created_body())
        page = browser.get("/").get_data(as_text=True)
        response = browser.post("/", data={**VALID_FORM, **values, **hidden_fields(page)})
        html = response.get_data(as_text=True)
        assert response.status_code < 500
        # What the person typed comes back only inside value="…" attributes: escaped there,
        # no < or " can open a tag or close the attribute.
        for attribute in re.findall(r' value="([^"]*)"', html):
            assert "<" not in attribute and ">" not in attribute
        assert "<script>alert" not in html and "<img src=x" not in html
        calls = [call.method for call in engage.request_history]
        # Either our own validation refused it (no call at all), or it was sent: one find, one
        # create, and the create body holds only clean, normalised values.
        assert (response.status_code, calls) in ((400, []), (303, ["GET", "POST"]))
        if calls:
            body = engage.request_history[1].json()
            assert "@" in body["email"] and "\x00" not in str(body)
            assert body.get("mobilePhone", "+1").startswith("+")
            assert len(body.get("birthDay", "2000-01-01")) == 10
            assert body["countryCode"].isalpha() and len(body["countryCode"]) == 2


# --- signatures remembered between requests (webapp/signed.py) --------------------------------
def test_a_changed_session_cookie_is_refused_even_after_the_real_one_was_seen(client, engage_api):
    page = client.get("/").get_data(as_text=True)  # the real cookie is now checked and remembered
    value = client.get_cookie("session").value
    payload, rest = value.split(".", 1)
    forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + rest
    client.set_cookie("session", forged)
    response = client.post("/", data={**VALID_FORM, **hidden_fields(page)})
    assert response.status_code == 400  # the CSRF token no longer matches any session
    assert not engage_api.request_history


def test_the_form_hands_out_one_csrf_token_a_while_and_each_one_works(
    client, engage_api, monkeypatch
):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body())
    first = hidden_fields(client.get("/").get_data(as_text=True))
    # The next page comes a few seconds later: a new signature would carry a new timestamp.
    later = int(time.time()) + 5
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: later)
    second = hidden_fields(client.get("/").get_data(as_text=True))
    assert first["csrf_token"] == second["csrf_token"]
    assert first["submission"] != second["submission"]  # one-time tokens stay one-time
    assert client.post("/", data={**VALID_FORM, **first}).status_code == 303
    second_person = {**VALID_FORM, "email": "bertil@example.com"}
    assert client.post("/", data={**second_person, **second}).status_code == 303
    assert len(engage_api.request_history) == 4  # two finds, two creates


def test_what_one_request_changes_in_its_session_never_reaches_the_next(app):
    browser = app.test_client()
    with browser.session_transaction() as session:
        session["outcome"] = {"name": "created", "member_number": "1"}
    cookie = browser.get_cookie("session").value
    interface = app.session_interface
    with app.test_request_context("/", headers={"Cookie": f"session={cookie}"}) as ctx:
        first = interface.open_session(app, ctx.request)
        first["outcome"]["member_number"] = "changed"
        first.pop("outcome")
        second = interface.open_session(app, ctx.request)
    assert second["outcome"] == {"name": "created", "member_number": "1"}


def test_a_remembered_check_is_made_again_after_its_time():
    from webapp.access.signed import Memo

    now = [0.0]
    memo = Memo(ttl=120, clock=lambda: now[0])
    made = []
    make = lambda: made.append(1) or len(made)  # noqa: E731
    assert memo.get("cookie", make) == 1
    now[0] = 119
    assert memo.get("cookie", make) == 1
    now[0] = 121
    assert memo.get("cookie", make) == 2


def _signed_up(client, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body(memberNumber="70001"))
    assert submitter(client)(follow=False).status_code == 303
    return client.get_cookie("result")


def test_the_result_page_shows_only_a_result_made_for_this_browser(app, engage_api):
    client = english_browser(app)
    result = _signed_up(client, engage_api)
    assert "70001" in client.get("/done").get_data(as_text=True)
    serializer = app.session_interface.get_signing_serializer(app)
    session = serializer.loads(client.get_cookie("session").value)
    assert "70001" not in str(session)  # the result is not kept in the session

    other = english_browser(app)  # another tablet, with a signup of its own, handed this result
    _signed_up(other, engage_api)
    other.set_cookie("result", result.value)
    assert other.get("/done").status_code == 303

    tampered = ("A" if result.value[0] != "A" else "B") + result.value[1:]
    another_key = URLSafeTimedSerializer("another-secret-0123456789", salt="engage-signup-result")
    foreign = another_key.dumps(["existing", "1", "x", "any-client"])
    for value in (tampered, foreign, "ä.ö", "", "."):
        client.set_cookie("result", value)
        assert client.get("/done").status_code == 303, value


def test_a_result_can_be_reloaded_for_an_hour_and_is_gone_once_the_form_opens(
    client, engage_api, monkeypatch
):
    _signed_up(client, engage_api)
    assert client.get("/done").status_code == 200
    assert client.get("/done").status_code == 200  # a reload shows it again
    later = time.time() + signed.RESULT_SECONDS + 1
    monkeypatch.setattr(signed.time, "time", lambda: later)
    assert client.get("/done").status_code == 303
    monkeypatch.undo()

    _signed_up(client, engage_api)
    form = client.get("/")
    assert "result=;" in form.headers["Set-Cookie"]  # the next person's form deletes it
    assert client.get_cookie("result") is None
    assert client.get("/done").status_code == 303
