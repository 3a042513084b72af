"""Engage as documented (issue #14), end to end over the simulator and at the HTTP edge:
a misconfigured tenant is no customer's typo, keys and numbers travel as Engage takes them,
consents are checked against the tenant, and the simulator serves the configuration it is
given. The exact HTTP contract of each point is in tests/engage/test_client.py."""

from __future__ import annotations

import logging
import re

import pytest

from tests.conftest import (
    CREATE,
    FIND,
    KNOWN_MEMBER,
    VALID_FORM,
    created_body,
    english_browser,
    outcome_of,
    submitter,
    text_of,
)
from webapp import ConfigError, create_app
from webapp.signup.forms import personal_number


@pytest.fixture
def tenant(simulated_app):
    """Apps against the simulator with short timeouts, and settings of the test's choosing."""

    def make(**settings):
        return simulated_app(
            **{"ENGAGE_READ_TIMEOUT": 1.5, "ENGAGE_CREATE_TIMEOUT": 1.5,
               "ENGAGE_RETRY_SECONDS": 0.05, **settings}
        )  # fmt: skip

    return make


def errors_in(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --- 1. a misconfigured tenant is not a customer's typo -------------------------------------------
@pytest.mark.parametrize("find", ["any", "same"])
def test_a_contact_type_the_tenant_lacks_is_unavailable_an_error_and_not_ready(
    tenant, engine, caplog, find
):
    """Found at the create (FIND_CONTACT_TYPE=any: 422 on contactType) or at the find (same:
    400 InvalidContactType), it is the same for the person and for operations."""
    app = tenant(CONTACT_TYPE="Kund", FIND_CONTACT_TYPE=find)
    submit = submitter(english_browser(app))
    outcomes = [outcome_of(submit(email=f"k{n}@example.com")) for n in range(4)]
    assert outcomes == ["unavailable"] * 4, "never 'check your details'"
    errors = errors_in(caplog)
    assert len(errors) == 3, "the breaker opened after three: the fourth did not call"
    assert all("check CONTACT_TYPE" in e for e in errors)
    ready = english_browser(app).get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["engage"] == "misconfigured"
    assert ready.get_json()["check"] == "CONTACT_TYPE"


def test_a_mandatory_field_the_form_does_not_show_is_a_configuration_error(tenant, engine, caplog):
    engine.contact_types["Member"]["mandatory"] = ["email", "gender"]
    page = submitter(english_browser(tenant()))()
    assert outcome_of(page) == "unavailable"
    assert "marked" not in text_of(page) and "Check this" not in text_of(page)
    assert any("gender" in e and "REQUIRED_FIELDS" in e for e in errors_in(caplog))


def test_a_mandatory_field_the_form_shows_is_marked_for_the_person(tenant, engine, caplog):
    """Engage requires lastName, the form left it optional: the person can fill it in (and
    operations are told to add it to REQUIRED_FIELDS)."""
    engine.contact_types["Member"]["mandatory"] = ["email", "lastName"]
    caplog.set_level(logging.WARNING)
    page = submitter(english_browser(tenant()))(lastName=None)
    assert outcome_of(page) == "rejected"
    assert '<a href="#lastName">' in page.get_data(as_text=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("lastName" in w and "REQUIRED_FIELDS" in w for w in warnings)


def test_no_data_never_asks_the_person_to_correct_marked_fields(submit, engage_api, caplog):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=400, json={"errorCode": "NoData"})
    page = submit()
    assert outcome_of(page) == "unavailable"
    assert "marked" not in text_of(page)
    assert any("NoData" in e for e in errors_in(caplog))


@pytest.mark.parametrize("refusal", ["wrong key", "address not allowed"])
def test_a_refused_key_or_address_is_unavailable_and_names_the_api_key(
    tenant, engine, caplog, refusal
):
    if refusal == "wrong key":
        engine.api_key = "the-real-key"
    else:
        engine.allowed_addresses = ["10.20.30.40"]
    app = tenant()
    assert outcome_of(submitter(english_browser(app))()) == "unavailable"
    assert any("check ENGAGE_API_KEY" in e for e in errors_in(caplog))
    ready = english_browser(app).get("/readyz").get_json()
    assert ready["engage"] == "misconfigured" and ready["check"].startswith("ENGAGE_API_KEY")


def test_a_typo_is_still_the_persons_to_correct(submit, engage_api):
    engage_api.get(FIND, status_code=400, json={"errorCode": "InvalidEmailAddress"})
    page = submit()
    assert outcome_of(page) == "rejected"
    assert '<a href="#email">' in page.get_data(as_text=True)


# --- 2. what customKey means ----------------------------------------------------------------------
def test_an_external_id_key_needs_a_tenant_whose_custom_key_is_external_id(app_config):
    for custom in ("", "memberNumber"):
        with pytest.raises(ConfigError, match="ENGAGE_CUSTOM_KEY: must be externalId"):
            create_app({**app_config, "CONTACT_KEY": "externalId", "ENGAGE_CUSTOM_KEY": custom})


def test_why_memberNumber_as_custom_key_cannot_serve_an_external_id(http_simulator, engine):
    """On a tenant whose custom key is the member number, looking up a typed customer number
    through customKey finds whoever has that member number: another person."""
    engine.custom_key = "memberNumber"
    someone = engine.add_contact({"email": "someone@example.com", "externalId": "C-1"})
    number = someone["attributes"]["memberNumber"]
    found = http_simulator("GET", f"/api/v3/contacts/id?customKey={number}")
    assert found.status_code == 200 and found.json() == someone["id"]


def test_an_external_id_is_found_through_custom_key(tenant, engine):
    engine.contact_types["Member"] = {"key": "externalId", "mandatory": ["externalId"]}
    engine.add_contact({**KNOWN_MEMBER, "email": None, "externalId": "C-42"})
    app = tenant(CONTACT_KEY="externalId", ENGAGE_CUSTOM_KEY="externalId")
    page = submitter(english_browser(app))(externalId="C-42", email=None)
    assert outcome_of(page) == "existing"
    assert engine.requests("/api/v3/contacts/id")[0].query["customKey"] == ["C-42"]


# --- 3. which contact types a find searches -------------------------------------------------------
@pytest.mark.parametrize(("setting", "creates"), [("any", 0), ("same", 1)])
def test_someone_stored_as_another_contact_type(tenant, engine, setting, creates):
    """Someone in Engage as a Contact (a newsletter subscriber) signs up as a Member at a till.
    With FIND_CONTACT_TYPE=any (the default, Engage's own for find) they are found, never
    created a second time, and made a member (updateContactType, then what they chose); with
    "same" they are looked for as Members only, and the simulator's tenant then makes a second
    contact for them."""
    subscriber = engine.add_contact({"contactType": "Contact", "mobilePhone": "+46701740611",
                                     "email": "subscriber@example.com"})  # fmt: skip
    app = tenant(FIND_CONTACT_TYPE=setting)
    page = submitter(english_browser(app))(email="subscriber@example.com")
    finds = engine.requests("/api/v3/contacts/id")
    assert ("contactType" in finds[0].query) == (setting == "same")
    assert len(engine.requests("/api/v3/contacts", "POST")) == creates
    if setting == "any":
        assert outcome_of(page) == "promoted"
        assert "Now a member" in text_of(page)
        now = next(c for c in engine.contacts() if c["id"] == subscriber["id"])
        assert now["meta"]["contactType"] == "Member"
        assert now["attributes"]["firstName"] == "Anna", "what the customer gave is added"
    else:
        assert outcome_of(page) == "created"
        emails = [c["attributes"]["email"] for c in engine.contacts()]
        assert emails.count("subscriber@example.com") == 2


# --- 4. personal identity numbers as Engage takes them --------------------------------------------
@pytest.mark.parametrize(
    ("typed", "country", "sent"),
    [
        ("19900131-1233", "SE", "199001311233"),
        ("900131-1233", "SE", "199001311233"),
        (" 9001311233 ", "SE", "199001311233"),
        ("121212+1212", "SE", "191212121212"),  # + : a hundred years or more
        ("010594y9021", "FI", "010594Y9021"),  # the newer century signs, in lower case
        ("311290-123v", "FI", "311290-123V"),
    ],
)
def test_a_personal_number_is_sent_in_the_form_engage_documents(
    tenant, engine, typed, country, sent
):
    engine.contact_types["Member"] = {"key": "socialSecurityNumber",
                                      "mandatory": ["socialSecurityNumber"]}  # fmt: skip
    app = tenant(CONTACT_KEY="socialSecurityNumber")
    page = submitter(english_browser(app))(socialSecurityNumber=typed, countryCode=country)
    assert outcome_of(page) == "created"
    assert engine.requests("/api/v3/contacts/id")[0].query["socialSecurityNumber"] == [sent]
    assert engine.requests("/api/v3/contacts", "POST")[0].body["socialSecurityNumber"] == sent


def test_a_personal_number_with_a_wrong_check_digit_never_reaches_engage(tenant, engine):
    app = tenant(CONTACT_KEY="socialSecurityNumber")
    page = submitter(english_browser(app))(socialSecurityNumber="19900131-1234")
    assert outcome_of(page) == "invalid"
    assert engine.requests() == []


def test_the_examples_the_form_gives_pass_its_own_check(client):
    from webapp.signup.forms import form_class_for

    form = form_class_for("socialSecurityNumber", (), ())
    message = str(form.socialSecurityNumber.kwargs["validators"][-1].message)
    examples = re.findall(r"\d[\d-]+\d[0-9A-Z]", message)
    assert len(examples) == 2
    assert all(personal_number(example) for example in examples)


# --- 5. timeouts and one later resend of a lookup -------------------------------------------------
def test_a_lookup_after_a_gateway_error_is_resent_once_and_the_signup_goes_on(tenant, engine):
    engine.inject("status", on="find", status=503, times=1)
    page = submitter(english_browser(tenant()))()
    assert outcome_of(page) == "created"
    assert len(engine.requests("/api/v3/contacts/id")) == 2
    assert len(engine.requests("/api/v3/contacts", "POST")) == 1


def test_the_create_waits_longer_than_engages_own_limit_by_default(app_config):
    config = {k: v for k, v in app_config.items() if not k.startswith("ENGAGE_CREATE")}
    assert create_app(config).extensions["engage"].create_timeout == 15.0


# --- 6. consents ----------------------------------------------------------------------------------
def test_consents_are_read_from_v2_when_the_tenant_has_no_v3(tenant, engine):
    engine.consents_v3 = False
    app = tenant(CONSENT_TEXTS="engage")
    browser = english_browser(app)
    browser.get("/?lang=da")
    assert "Jeg accepterer medlemsbetingelserne" in text_of(browser.get("/"))
    assert [r.path for r in engine.requests() if "consents" in r.path] == [
        "/api/v3/consents", "/api/v2/consents"
    ]  # fmt: skip


def test_a_consent_the_tenant_does_not_have_makes_readyz_say_so(tenant, caplog):
    consents = [{"id": "memberConsent", "required": True, "label": {"en": "Terms"}},
                {"id": "noSuchConsent", "label": {"en": "Other"}}]  # fmt: skip
    app = tenant(CONSENTS=consents)
    ready = english_browser(app).get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["consents"] == "not in the tenant: noSuchConsent"
    assert ready.get_json()["check"] == "CONSENTS"
    assert any("CONSENTS" in e for e in errors_in(caplog))


def test_a_required_consent_with_no_terms_anywhere_makes_readyz_say_so(tenant, engine):
    """A consent that start-up could not check (Engage did not answer then) is checked by
    /readyz: required, no url, and no terms in Engage means nothing to read."""
    engine.consents[0]["metaData"]["conditionText"] = {}
    consents = [{"id": "memberConsent", "required": True, "label": {"en": "Terms"}}]
    ready = english_browser(tenant(CONSENTS=consents)).get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["consents"] == (
        "required, with no url and no terms in Engage: memberConsent"
    )
    assert ready.get_json()["check"] == "CONSENTS"


def test_terms_in_another_language_are_shown_rather_than_none(tenant, engine):
    """Engage keeps the terms in English only: a Finnish customer reads those, not nothing."""
    engine.consents[0]["metaData"]["conditionText"] = {"en-GB": "<p>English terms only.</p>"}
    consents = [{"id": "memberConsent", "required": True, "label": {"en": "Terms"}}]
    browser = english_browser(tenant(CONSENTS=consents))
    browser.get("/?lang=fi")
    assert "English terms only." in text_of(browser.get("/"))


def test_without_a_terms_url_engages_terms_are_shown_cleaned(tenant, engine):
    from webapp.config import DEFAULT_CONSENTS

    engine.consents[0]["metaData"]["conditionText"]["en-GB"] = (
        '<p>Acme terms.</p><script>alert(1)</script><a href="javascript:x()">x</a>'
        '<img src=x onerror="alert(2)"><a href="https://acme.example/full">Full terms</a>'
    )
    browser = english_browser(tenant(CONSENTS=DEFAULT_CONSENTS))
    html = browser.get("/").get_data(as_text=True)
    terms = html[html.index('<details class="terms-text">') : html.index("</details>")]
    assert "<summary>Read the terms</summary>" in terms
    assert "<p>Acme terms.</p>" in terms
    assert '<a href="https://acme.example/full" rel="noopener noreferrer">Full terms</a>' in terms
    for hostile in ("<script", "javascript:", "onerror", "<img"):
        assert hostile not in terms


# --- 7. unapproved contacts; a find that names nobody ---------------------------------------------
def test_a_kiosk_that_creates_unapproved_says_what_the_person_must_do(tenant):
    from tests.conftest import enrol

    app = tenant(KIOSK_CREATE_AS_UNAPPROVED=True)
    kiosk = enrol(app.test_client(), app, "kiosk")
    kiosk.get("/?lang=en")
    page = submitter(kiosk)()
    assert outcome_of(page) == "thanks"
    assert "confirm your membership with the link in the email" in text_of(page)
    assert "apply from today" not in text_of(page)


def test_a_find_answered_with_an_empty_200_never_leads_to_a_create(submit, engage_api):
    engage_api.get(FIND, status_code=200, text="")
    engage_api.post(CREATE, status_code=201, json=created_body())
    page = submit()
    assert outcome_of(page) == "unavailable"
    assert [r.method for r in engage_api.request_history] == ["GET"]


# --- 8. the simulator serves the configuration it is given ----------------------------------------
@pytest.fixture
def http_simulator(simulator):
    import requests

    session = requests.Session()
    session.trust_env = False
    headers = {"apikey": "k", "User-Agent": "t/1", "Content-Type": "application/json"}

    def call(method, path, **kwargs):
        return session.request(method, simulator.url + path, headers=headers, timeout=5, **kwargs)

    yield call
    session.close()


@pytest.mark.parametrize("shape", ["engage", "empty", "text", "message", "problem"])
def test_every_error_body_shape_is_understood(tenant, engine, shape):
    """The simulator answers 409 ContactWithKeyIsBeingCreated in each body shape it knows; the
    app reads the token in every shape that carries it (the empty one carries none: then a
    409 on create means the key is taken)."""
    engine.inject("status", status=409, token="ContactWithKeyIsBeingCreated", body=shape)
    page = submitter(english_browser(tenant()))()
    assert outcome_of(page) == ("existing" if shape == "empty" else "in-progress")
    answer = engine.requests("/api/v3/contacts", "POST")[0]
    assert answer.status == 409


def test_invented_answers_are_marked(http_simulator, engine):
    engine.inject("status", on="find", status=503, token="Unavailable", body="problem")
    answer = http_simulator("GET", "/api/v3/contacts/id?email=a%40example.com")
    assert answer.headers["X-Simulator-Assumption"].startswith("error body shape: problem")
    assert answer.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize(("blocks", "status", "stored"), [(True, 409, 1), (False, 201, 2)])
def test_an_unapproved_contact_blocks_a_create_or_not(
    http_simulator, engine, blocks, status, stored
):
    """Engage documents that an approved contact with the key blocks a create; for one still
    waiting for its email link it says nothing, so the simulator plays either tenant."""
    engine.unapproved_blocks_create = blocks
    engine.add_contact({"email": "pending@example.com"}, approved=False)
    answer = http_simulator("POST", "/api/v3/contacts?source=POS&storeExternalId=101",
                            json={"email": "pending@example.com"})  # fmt: skip
    assert answer.status_code == status
    emails = [c["attributes"]["email"] for c in engine.contacts()]
    assert emails.count("pending@example.com") == stored


def test_training_mode_serves_the_contact_key_it_is_configured_with():
    """With CONTACT_KEY=socialSecurityNumber the training simulator's tenant is keyed on it,
    and needs no email (it used to answer every signup 422 "email Mandatory")."""
    import json

    from webapp.serve import _simulated_tenant

    args = _simulated_tenant(
        {"CONTACT_KEY": "socialSecurityNumber", "CONTACT_TYPE": "Medlem",
         "REQUIRED_FIELDS": "firstName", "ENGAGE_CUSTOM_KEY": ""}
    )  # fmt: skip
    types = json.loads(args[args.index("--contact-types") + 1])
    assert types["Medlem"] == {"key": "socialSecurityNumber",
                               "mandatory": ["firstName", "socialSecurityNumber"]}  # fmt: skip
    assert args[args.index("--custom-key") + 1] == "externalId"


def test_training_mode_signs_up_by_personal_number(tmp_path):
    """The README's run command with CONTACT_KEY=socialSecurityNumber, end to end."""
    import os

    import requests

    from tests.components import drain, read_until, start_server, stop, wait_until_up
    from tests.conftest import csrf_token, device_cookie

    env = {k: v for k, v in os.environ.items() if not k.startswith(("ENGAGE_", "SECRET_KEY"))}
    env.update(CONTACT_KEY="socialSecurityNumber", SECRET_KEY="training-secret-0123456789")
    env.update(STATE_DB=str(tmp_path / "state.sqlite3"), WEB_WORKERS="1", WEB_THREADS="2")
    server = start_server(env)
    try:
        url = read_until(server, r"open (http://[^\s\"]+)").group(1)
        drain(server)
        wait_until_up(url)
        browser = requests.Session()
        browser.trust_env = False
        browser.cookies.set("device", device_cookie("training-secret-0123456789"))
        page = browser.get(url + "?lang=en", timeout=10)
        assert "Try 19121212-1212 for someone who is already a member" in page.text
        fields = {**VALID_FORM, "email": "", "socialSecurityNumber": "19900131-1233",
                  "csrf_token": csrf_token(page.text)}  # fmt: skip
        assert 'data-outcome="created"' in browser.post(url, data=fields, timeout=10).text
        page = browser.get(url, timeout=10)
        fields.update(socialSecurityNumber="19121212-1212", csrf_token=csrf_token(page.text))
        # The training member lacks the last name the form gives: it is added.
        assert 'data-outcome="updated"' in browser.post(url, data=fields, timeout=10).text
    finally:
        stop(server)
