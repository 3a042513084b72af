"""Configuration: environment variables of the same names, overridden by the dict, checked."""

from __future__ import annotations

import pytest

from tests.conftest import TEST_CONFIG, enrol
from webapp import ConfigError, create_app
from webapp.config import load_config


def test_each_key_is_read_from_the_environment_of_the_same_name(monkeypatch):
    monkeypatch.setenv("STORE_EXTERNAL_ID", "store03-stockholm")
    monkeypatch.setenv("CREATE_AS_UNAPPROVED", "true")
    monkeypatch.setenv("CONTACT_KEY", "mobilePhone")
    config = load_config({k: v for k, v in TEST_CONFIG.items() if k != "STORE_EXTERNAL_ID"})
    assert config["STORE_EXTERNAL_ID"] == "store03-stockholm"
    assert config["CREATE_AS_UNAPPROVED"] is True
    assert config["CONTACT_KEY"] == "mobilePhone"


def test_the_dict_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("STORE_EXTERNAL_ID", "from-env")
    assert load_config(TEST_CONFIG)["STORE_EXTERNAL_ID"] == "101"


def test_defaults_match_the_documented_ones():
    config = load_config(TEST_CONFIG, environ={})
    assert config["CONTACT_TYPE"] == "Member"
    assert config["CONTACT_KEY"] == "email"
    assert config["DEFAULT_COUNTRY"] == "SE"
    assert config["CREATE_AS_UNAPPROVED"] is False
    assert [c["id"] for c in config["CONSENTS"]] == ["memberConsent"]
    assert config["CONSENTS"][0]["required"] is True


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("CONTACT_KEY", "cardNumber", "must be one of email, mobilePhone"),
        ("DEFAULT_COUNTRY", "Sweden", "two-letter ISO 3166"),
        ("ENGAGE_BASE_URL", "https://acme.voyado.com/api/v3", "scheme and host only"),
        ("CREATE_AS_UNAPPROVED", "perhaps", "expected true or false"),
        ("CONSENTS", "[{", "CONSENTS:"),
        ("CONSENTS", '[{"id": "x"}]', "needs a label"),
        ("ENGAGE_CREATE_TIMEOUT", "-1", "between"),
        ("SECRET_KEY", "short", "too short"),
        ("REQUIRED_FIELDS", "shoeSize", "unknown field"),
    ],
)
def test_a_wrong_value_stops_start_up_with_one_line_naming_the_key(key, value, words):
    with pytest.raises(ConfigError) as caught:
        create_app({**TEST_CONFIG, key: value})
    message = str(caught.value)
    assert message.startswith(f"{key}: ")
    assert words in message
    assert "\n" not in message


def test_without_a_base_url_it_says_how_to_use_the_simulator():
    config = {k: v for k, v in TEST_CONFIG.items() if k != "ENGAGE_BASE_URL"}
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    assert "ENGAGE_BASE_URL" in str(caught.value)
    assert "python3 dev.py run" in str(caught.value)


def test_consents_come_from_json_with_labels_per_language(client, app_config):
    consents = (
        '[{"id": "memberTerms", "required": true, "url": "https://example.com/terms",'
        ' "label": {"en": "I accept the member terms", "sv": "Jag godkänner"}},'
        ' {"id": "photoConsent", "label": {"en": "You may use my photo"}}]'
    )
    app = create_app({**app_config, "CONSENTS": consents})
    browser = enrol(app.test_client(), app)
    browser.get("/?lang=en")
    html = browser.get("/").get_data(as_text=True)
    assert 'name="consent-memberTerms"' in html and 'name="consent-photoConsent"' in html
    assert 'href="https://example.com/terms"' in html
    assert "You may use my photo" in html


def test_the_api_key_is_never_rendered(client):
    assert TEST_CONFIG["ENGAGE_API_KEY"] not in client.get("/").get_data(as_text=True)


def test_the_public_screens_prior_is_a_setting_never_below_the_floor(app_config):
    """Before any create is timed, a kiosk's or phone's answer is released after
    ANSWER_PRIOR_SECONDS (a slow tenant may want more); never under the release floor."""
    from webapp import ConfigError, create_app
    from webapp.signup.padding import FLOOR_SECONDS

    app = create_app({**app_config, "ANSWER_PRIOR_SECONDS": "2.5"})
    assert app.extensions["answer_times"].prior == 2.5
    assert app.extensions["answer_times"].target() == 2.5
    with pytest.raises(ConfigError) as refused:
        create_app({**app_config, "ANSWER_PRIOR_SECONDS": str(FLOOR_SECONDS / 2)})
    assert refused.value.key == "ANSWER_PRIOR_SECONDS"
