"""What the form accepts and what it says, before anything is sent to Engage."""

from __future__ import annotations

import datetime as dt

import pytest
from wtforms import SelectChoice

from tests.conftest import VALID_FORM, enrol
from webapp.signup.forms import parse_birth_date


@pytest.fixture
def validate(app):
    def _validate(**overrides):
        data = {**VALID_FORM, "submission": "a-fresh-one-time-token-1", **overrides}
        data = {k: v for k, v in data.items() if v is not None}
        with app.test_request_context("/", method="POST", data=data):
            form = app.extensions["signup_form"](meta={"csrf": False})
            form.countryCode.choices = [SelectChoice(c) for c in ("SE", "FI", "NO")]
            form.validate()
            return form

    return _validate


@pytest.mark.parametrize(
    ("typed", "country", "e164"),
    [
        ("070-123 45 67", "SE", "+46701234567"),
        ("+46 70 123 45 67", "SE", "+46701234567"),
        ("040 1234567", "FI", "+358401234567"),
        ("412 34 567", "NO", "+4741234567"),
        ("+4741234567", "SE", "+4741234567"),  # a foreign number typed with its code
    ],
)
def test_a_mobile_number_is_read_for_the_chosen_country_and_sent_as_e164(
    validate, typed, country, e164
):
    form = validate(mobilePhone=typed, countryCode=country)
    assert not form.errors
    assert form.normalized("mobilePhone") == e164


@pytest.mark.parametrize("typed", ["12", "08-123 456 78", "0701234567890", "phone"])
def test_a_number_that_is_no_mobile_for_the_country_is_refused(validate, typed):
    form = validate(mobilePhone=typed)
    assert form.errors["mobilePhone"] == ["Enter a mobile number for the country you chose"]


@pytest.mark.parametrize(
    ("typed", "iso"),
    [
        ("1990-01-31", "1990-01-31"),
        ("19900131", "1990-01-31"),
        ("31.1.1990", "1990-01-31"),
        ("31011990", "1990-01-31"),
        ("1990 1 31", "1990-01-31"),
    ],
)
def test_a_birth_date_is_read_as_people_write_it_and_sent_as_iso(validate, typed, iso):
    form = validate(birthDay=typed)
    assert not form.errors
    assert form.normalized("birthDay") == iso


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("1990-02-30", "Enter your date of birth like 1990-01-31"),
        ("31/31/1990", "Enter your date of birth like 1990-01-31"),
        ("1800-01-01", "Enter your date of birth like 1990-01-31"),
        (
            (dt.date.today() + dt.timedelta(days=1)).isoformat(),
            "The date of birth cannot be in the future",
        ),
        ("yesterday", "Enter your date of birth like 1990-01-31"),
    ],
)
def test_a_date_that_is_no_real_past_birth_date_is_refused(validate, typed, message):
    assert validate(birthDay=typed).errors["birthDay"] == [message]


def test_parse_birth_date_does_not_guess_between_orders():
    assert parse_birth_date("01021990") == dt.date(1990, 2, 1)  # day-month-year
    assert parse_birth_date("19900201") == dt.date(1990, 2, 1)  # year-month-day


@pytest.mark.parametrize(
    ("field", "typed"),
    [
        ("email", "anna@@example.com"),
        ("email", "anna@example"),
        ("zipCode", "<b>"),
        ("firstName", "Anna\x00"),
        ("firstName", "A" * 51),
        ("countryCode", "ZZ"),
    ],
)
def test_malformed_values_are_refused(validate, field, typed):
    assert field in validate(**{field: typed}).errors


def test_names_are_trimmed_and_inner_spaces_folded(validate):
    form = validate(firstName="  Anna   Maria ", lastName=" von  Sydow")
    assert form.firstName.data == "Anna Maria"
    assert form.lastName.data == "von Sydow"


def test_an_unticked_required_consent_is_refused_and_preferences_are_free(validate):
    form = validate(**{"consent-memberConsent": None})
    assert form.errors == {"consent-memberConsent": ["Accept this to become a member"]}


@pytest.mark.parametrize(
    ("key", "field", "valid", "invalid"),
    [
        ("mobilePhone", "mobilePhone", "0701234567", "12"),
        ("socialSecurityNumber", "socialSecurityNumber", "19811218-9876", "19811218-9877"),
        ("socialSecurityNumber", "socialSecurityNumber", "131052-308T", "131052-308U"),
    ],
)
def test_the_configured_key_field_is_required_and_checked(app_config, key, field, valid, invalid):
    from webapp import create_app

    app = create_app({**app_config, "CONTACT_KEY": key})
    with app.test_request_context("/", method="POST", data={**VALID_FORM, "email": ""}):
        form_class = app.extensions["signup_form"]
        for value, ok in (("", False), (valid, True), (invalid, False)):
            data = {**VALID_FORM, "submission": "a-fresh-one-time-token-1", field: value}
            form = form_class(meta={"csrf": False}, formdata=None, data=data)
            form.countryCode.choices = [SelectChoice("SE")]
            form.consent_fields()[0].data = True
            assert form.validate() is ok, (value, form.errors)


def test_required_fields_from_configuration_are_required(app_config):
    from webapp import create_app

    app = create_app({**app_config, "REQUIRED_FIELDS": "firstName,birthDay"})
    browser = enrol(app.test_client(), app)
    browser.get("/?lang=en")
    html = browser.get("/").get_data(as_text=True)
    assert 'for="firstName">First name</label>' in html  # no "(optional)"
    assert 'for="lastName">Last name <span class="optional">' in html


@pytest.mark.parametrize(
    ("typed", "country", "engage_gets"),
    [
        ("19900131-1233", None, "199001311233"),  # 12 digits, as Engage's examples
        ("900131-1233", None, "199001311233"),  # 10 digits: under a hundred years old
        ("121212+1212", None, "191212121212"),  # "+": a hundred or more
        ("121212-1212", None, "201212121212"),  # a child born in 2012
        ("261231-1233", None, None),  # would be born after "today", and a century back is
        ("199001911230", None, "199001911230"),  # samordningsnummer: the day plus 60
        ("19900231-1230", None, None),  # no 31 February
        ("010594Y9021", None, "010594Y9021"),  # Finnish, the 2023 century signs
        ("010594y9021", None, "010594Y9021"),
        ("311290-123V", "FI", "311290-123V"),
        ("311290-123A", None, None),  # the old hint's example: a wrong check character
        ("19900131-1234", None, None),  # the old hint's example: a wrong check digit
        ("150285+456X", "FI", "150285+456X"),  # "+": born in the 1800s
    ],
)
def test_personal_numbers_are_checked_and_written_as_engage_takes_them(typed, country, engage_gets):
    import datetime as dt

    from webapp.signup.forms import personal_number

    assert personal_number(typed, country, today=dt.date(2026, 12, 2)) == engage_gets


# --- postcodes and short dates (issue #23) -------------------------------------------------------
@pytest.mark.parametrize(
    ("country", "typed", "sent"),
    [("SE", "123 45", "123 45"), ("SE", "12345", "123 45"), ("FI", "00100", "00100"),
     ("NO", "0150", "0150"), ("DK", "1050", "1050"), ("DE", "10115 Berlin", "10115 Berlin"),
     ("GB", "SW1A 1AA", "SW1A 1AA")],
)  # fmt: skip
def test_a_postcode_is_checked_against_the_country_and_sent_as_engage_takes_it(
    validate, country, typed, sent
):
    form = validate(countryCode=country, zipCode=typed)
    assert not form.errors
    assert form.normalized("zipCode") == sent


@pytest.mark.parametrize(
    ("country", "typed"),
    [("SE", "ABCDEFGHIJK"), ("SE", "1234"), ("SE", "123456"), ("FI", "0010"), ("NO", "01500"),
     ("DK", "10 5")],
)  # fmt: skip
def test_a_nordic_postcode_of_the_wrong_shape_is_refused_before_engage_sees_it(
    validate, country, typed
):
    form = validate(countryCode=country, zipCode=typed)
    assert "zipCode" in form.errors
    assert "postcode of" in str(form.errors["zipCode"][0])


@pytest.mark.parametrize(
    ("typed", "language", "born"),
    [("900131", "sv", dt.date(1990, 1, 31)), ("310190", "fi", dt.date(1990, 1, 31)),
     ("310190", "nb", dt.date(1990, 1, 31)), ("310190", "da", dt.date(1990, 1, 31)),
     ("010120", "da", dt.date(2020, 1, 1)), ("311390", "fi", None), ("901331", "sv", None)],
)  # fmt: skip
def test_six_digits_are_a_date_as_the_language_writes_a_short_one(typed, language, born):
    """YYMMDD in Swedish (as a personnummer begins), DDMMYY in Finnish, Norwegian and Danish;
    the century that puts the date in the past."""
    assert parse_birth_date(typed, language) == born


def test_the_postcode_opens_the_keypad_for_a_nordic_country_only(app):
    browser = enrol(app.test_client(), app)
    browser.get("/?lang=en")
    html = browser.get("/").get_data(as_text=True)
    assert (
        'inputmode="numeric"'
        in html.split('id="zipCode"')[0].rsplit("<input", 1)[1]
        + (html.split('id="zipCode"')[1].split(">", 1)[0])
    ), "the store is in Sweden"
    assert "E.g. 1990-01-31 or just digits" in html
