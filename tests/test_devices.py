"""Devices bound to a store and a mode by staff; kiosk and staff behaviour."""

from __future__ import annotations

import re

import pytest

from webapp import create_app

from .conftest import VALID_FORM, english_browser, hidden_fields, outcome_of, submitter, text_of

PIN = "4711"


@pytest.fixture
def chain_app(simulator, app_config):
    """A chain deployment: no default store, devices are bound on /setup."""
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url, "STAFF_PIN": PIN}
    config.pop("STORE_EXTERNAL_ID")
    return create_app(config)


def sign_in(browser, pin=PIN):
    page = browser.get("/setup/").get_data(as_text=True)
    return browser.post("/setup/pin", data={"pin": pin, **hidden_fields(page)})


def bind(browser, store="201", mode="kiosk"):
    assert sign_in(browser).status_code == 303
    page = browser.get("/setup/").get_data(as_text=True)
    return browser.post("/setup/", data={"store": store, "mode": mode, **hidden_fields(page)})


def test_a_device_with_no_store_shows_staff_how_to_set_it_up_never_the_form(chain_app):
    browser = english_browser(chain_app)
    page = browser.get("/")
    assert outcome_of(page) == "setup-needed"
    assert 'name="email"' not in page.get_data(as_text=True)
    assert 'href="/setup/"' in page.get_data(as_text=True)
    assert browser.post("/", data=VALID_FORM).status_code == 303


def test_setup_needs_the_staff_pin(chain_app, engine):
    browser = english_browser(chain_app)
    assert outcome_of(browser.get("/setup/")) == "setup-pin"
    wrong = sign_in(browser, "0000")
    assert wrong.status_code == 400
    assert "That PIN is not right." in text_of(wrong)
    assert engine.requests() == [], "no store list before the PIN"


def test_pin_attempts_are_limited_across_workers(chain_app, simulator, app_config):
    browser = english_browser(chain_app)
    statuses = [sign_in(browser, "0000").status_code for _ in range(5)]
    assert statuses == [400] * 5
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url, "STAFF_PIN": PIN}
    other_worker = create_app(config).test_client()
    other_worker.set_cookie("session", browser.get_cookie("session").value)
    blocked = sign_in(other_worker, PIN)  # even the right PIN, once over the limit
    assert blocked.status_code == 429
    assert "Too many attempts" in text_of(blocked)


def test_staff_pick_the_store_from_engages_list_and_the_device_remembers(chain_app, engine):
    browser = english_browser(chain_app)
    sign_in(browser)
    page = browser.get("/setup/").get_data(as_text=True)
    assert "Acme Helsinki Aleksanterinkatu (201)" in page
    assert "Acme Closed Outlet" not in page, "inactive stores are not offered"
    response = bind(browser, store="201", mode="staff")
    assert response.status_code == 303
    cookie = response.headers.getlist("Set-Cookie")
    device_cookie = next(c for c in cookie if c.startswith("device="))
    assert "HttpOnly" in device_cookie and "Max-Age=" in device_cookie
    browser.set_cookie("session", browser.get_cookie("session").value)  # same device
    page = english_browser_keep(browser)
    html = page.get_data(as_text=True)
    assert outcome_of(page) == "form"
    assert "Acme Helsinki Aleksanterinkatu" in html
    assert '<option selected value="FI">' in html, "the store's country is the default"


def english_browser_keep(browser):
    browser.get("/?lang=en")
    return browser.get("/")


def test_a_typed_store_id_that_engage_does_not_list_is_refused(chain_app):
    browser = english_browser(chain_app)
    response = bind(browser, store="99999")
    assert response.status_code == 400
    assert outcome_of(browser.get("/")) == "setup-needed"


def test_a_tampered_device_cookie_is_ignored(chain_app):
    browser = english_browser(chain_app)
    bind(browser)
    value = browser.get_cookie("device").value
    browser.set_cookie("device", value[:-3] + "abc")
    assert outcome_of(browser.get("/")) == "setup-needed"


def test_the_store_language_is_the_default_then_the_persons_choice(chain_app):
    browser = chain_app.test_client()
    bind(browser, store="201")
    assert '<html lang="fi">' in browser.get("/").get_data(as_text=True)
    browser.get("/?lang=sv")
    assert '<html lang="sv">' in browser.get("/").get_data(as_text=True)


def test_signups_from_a_bound_device_are_recruited_in_its_store(chain_app, engine):
    browser = english_browser(chain_app)
    bind(browser, store="301", mode="staff")
    page = submitter(browser)(countryCode="NO")
    assert outcome_of(page) == "created"
    create = engine.requests("/api/v3/contacts", "POST")[0]
    assert create.query["storeExternalId"] == ["301"]
    assert "staff device in store 301" in create.body["consents"][0]["comment"]


@pytest.fixture
def kiosk(chain_app):
    browser = english_browser(chain_app)
    bind(browser, store="101", mode="kiosk")
    browser.get("/?lang=en")
    return browser


def test_a_kiosk_never_reveals_whether_someone_is_already_a_member(kiosk, engine):
    engine.add_contact({"email": "known@example.com"})
    known = submitter(kiosk)(email="known@example.com")
    new = submitter(kiosk)(email="new@example.com")
    assert (outcome_of(known), outcome_of(new)) == ("existing", "created")
    assert text_of(known) == text_of(new)
    assert "Member number" not in text_of(new)
    assert "already" not in text_of(known)


def test_the_kiosk_thank_you_screen_says_when_to_return_to_an_empty_form(kiosk):
    html = submitter(kiosk)().get_data(as_text=True)
    assert 'data-return-after="10"' in html
    assert 'data-start="/"' in html
    assert 'http-equiv="refresh"' not in html  # a timed refresh cannot be extended (WCAG 2.2.1)


def test_a_kiosk_form_turns_autofill_off_for_personal_fields(kiosk):
    html = kiosk.get("/").get_data(as_text=True)
    for name in ("firstName", "lastName", "email", "mobilePhone", "birthDay", "zipCode"):
        tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html).group(0)
        assert 'autocomplete="off"' in tag, name
    assert 'class="kiosk" data-idle="60" data-countdown="15"' in html
    assert 'id="idle-warning"' in html


def test_a_staff_tablet_keeps_autofill_hints_and_offers_new_customer(client):
    html = client.get("/").get_data(as_text=True)
    assert 'autocomplete="email"' in html and 'autocomplete="given-name"' in html
    assert "New customer" in text_of(client.get("/"))
    assert 'class="kiosk"' not in html


def test_kiosk_signups_can_be_created_unapproved_for_double_opt_in(simulator, app_config, engine):
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url, "STAFF_PIN": PIN,
              "KIOSK_CREATE_AS_UNAPPROVED": True}  # fmt: skip
    app = create_app(config)
    staff = english_browser(app)  # STORE_EXTERNAL_ID default device: a staff tablet
    submitter(staff)(email="staff@example.com")
    kiosk = english_browser(app)
    bind(kiosk, store="101", mode="kiosk")
    submitter(kiosk)(email="kiosk@example.com")
    queries = [r.query for r in engine.requests("/api/v3/contacts", "POST")]
    assert "createAsUnapproved" not in queries[0]
    assert queries[1]["createAsUnapproved"] == ["true"]


def test_without_a_staff_pin_setup_is_switched_off(client):
    assert outcome_of(client.get("/setup/")) == "setup-disabled"


def test_a_chain_needs_a_store_or_a_pin(app_config):
    from webapp import ConfigError

    config = {k: v for k, v in app_config.items() if k != "STORE_EXTERNAL_ID"}
    with pytest.raises(ConfigError, match="STORE_EXTERNAL_ID: not set; set it, or set STAFF_PIN"):
        create_app(config)


def test_consent_texts_can_come_from_engage_in_the_persons_language(simulator, app_config, engine):
    app = create_app({**app_config, "ENGAGE_BASE_URL": simulator.url, "CONSENT_TEXTS": "engage"})
    browser = app.test_client()
    browser.get("/?lang=da")
    assert "Jeg accepterer medlemsbetingelserne" in text_of(browser.get("/"))
    browser.get("/?lang=en")
    browser.get("/")
    assert len(engine.requests("/api/v3/consents")) == 1, "asked once, then cached"


def test_consent_texts_fall_back_to_configuration_when_engage_is_down(
    simulator, app_config, engine
):
    engine.inject("status", on="read", status=500, times=None)
    app = create_app({**app_config, "ENGAGE_BASE_URL": simulator.url, "CONSENT_TEXTS": "engage"})
    browser = app.test_client()
    browser.get("/?lang=fi")
    page = browser.get("/")
    assert page.status_code == 200
    assert "Hyväksyn jäsenehdot" in text_of(page)


def test_saving_setup_without_picking_a_store_binds_nothing(chain_app):
    browser = english_browser(chain_app)
    response = bind(browser, store="")
    assert response.status_code == 400
    assert "Choose the store" in text_of(response)
    assert outcome_of(browser.get("/")) == "setup-needed"
