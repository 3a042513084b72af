"""The signup form. Input names are Engage's attribute names.

Every message here is the final text a person reads, in one voice, translatable.
No validator calls Engage: Engage's verdict is handled in the view after validation.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from markupsafe import Markup, escape
from wtforms import BooleanField, HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp, ValidationError
from wtforms.widgets import Select, html_params

from .i18n import country_codes

MAX_AGE_YEARS = 120


def _strip(value):
    return value.strip() if isinstance(value, str) else value


def _collapse(value):
    """Trim and fold runs of white space, as a name should be stored."""
    return " ".join(value.split()) if isinstance(value, str) else value


class PrintableText:
    """No control characters (they break Engage exports and receipts)."""

    def __init__(self, message):
        self.message = message

    def __call__(self, form, field):
        if field.data and any(unicodedata.category(ch).startswith("C") for ch in field.data):
            raise ValidationError(self.message)


class EmailAddress:
    """A syntactically valid address; stores the normalised form in `field.normalized`."""

    def __init__(self, message):
        self.message = message

    def __call__(self, form, field):
        if not field.data:
            return
        try:
            result = validate_email(field.data, check_deliverability=False)
        except EmailNotValidError as exc:
            raise ValidationError(self.message) from exc
        field.normalized = result.normalized


class MobilePhone:
    """A mobile number valid for the chosen country; stores E.164 in `field.normalized`."""

    def __init__(self, message):
        self.message = message

    def __call__(self, form, field):
        if not field.data:
            return
        region = form.countryCode.data or None
        try:
            number = phonenumbers.parse(field.data, region)
        except phonenumbers.NumberParseException as exc:
            raise ValidationError(self.message) from exc
        if not phonenumbers.is_valid_number(number) or phonenumbers.number_type(number) not in (
            phonenumbers.PhoneNumberType.MOBILE,
            phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
        ):
            raise ValidationError(self.message)
        field.normalized = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


class BirthDate:
    """A real date in the past, within a human lifetime; `field.normalized` is YYYY-MM-DD.

    Accepts what people type at a Nordic till: 1990-01-31 or 19900131 (Sweden), and
    31.1.1990 or 31011990 (Finland, Norway, Denmark).
    """

    def __init__(self, message, future_message):
        self.message = message
        self.future_message = future_message

    def __call__(self, form, field):
        if not field.data:
            return
        born = parse_birth_date(field.data)
        if born is None:
            raise ValidationError(self.message)
        today = dt.date.today()
        if born >= today:
            raise ValidationError(self.future_message)
        if born.year < today.year - MAX_AGE_YEARS:
            raise ValidationError(self.message)
        field.normalized = born.isoformat()


def parse_birth_date(text: str) -> dt.date | None:
    text = text.strip()
    patterns = (
        (r"(\d{4})[-./ ]?(\d{1,2})[-./ ]?(\d{1,2})", "ymd"),
        (r"(\d{1,2})[-./ ](\d{1,2})[-./ ](\d{4})", "dmy"),
        (r"(\d{2})(\d{2})(\d{4})", "dmy"),
    )
    for pattern, order in patterns:
        match = re.fullmatch(pattern, text)
        if not match:
            continue
        parts = dict(zip(order, map(int, match.groups()), strict=True))
        if order == "ymd" and not 1800 <= parts["y"] <= 2999:
            continue  # 31011990 is day-month-year, not year 3101
        try:
            return dt.date(parts["y"], parts["m"], parts["d"])
        except ValueError:
            return None
    return None


class SocialSecurityNumber:
    """A Swedish personnummer/samordningsnummer or a Finnish henkilötunnus, with check digit."""

    def __init__(self, message):
        self.message = message

    def __call__(self, form, field):
        if field.data and not (_valid_se_ssn(field.data) or _valid_fi_ssn(field.data)):
            raise ValidationError(self.message)


def _valid_se_ssn(text: str) -> bool:
    match = re.fullmatch(r"(\d{2})?(\d{6})[-+]?(\d{4})", text.replace(" ", ""))
    if not match:
        return False
    digits = match.group(2) + match.group(3)
    total = 0
    for i, ch in enumerate(digits):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return total % 10 == 0


def _valid_fi_ssn(text: str) -> bool:
    match = re.fullmatch(r"(\d{6})[-+A-FU-Y](\d{3})([0-9A-Y])", text.strip().upper())
    if not match:
        return False
    return "0123456789ABCDEFHJKLMNPRSTUVWXY"[
        int(match.group(1) + match.group(2)) % 31
    ] == match.group(3)


class CachedOptionsSelect(Select):
    """A <select> whose options are rendered once per choices object and then reused.

    The country picker's ~250 options were most of the cost of rendering the form page
    (WTForms escapes and formats each option on every request).
    """

    _cache: dict[int, tuple[object, str]] = {}

    def __call__(self, field, **kwargs):
        kwargs.setdefault("id", field.id)
        choices = field.choices
        cached = self._cache.get(id(choices))
        if cached is None or cached[0] is not choices:
            options = "".join(
                f'<option value="{escape(c.value)}">{escape(c.label)}</option>' for c in choices
            )
            cached = self._cache[id(choices)] = (choices, options)
        options = cached[1]
        if field.data:
            value = escape(field.data)
            options = options.replace(
                f'<option value="{value}">', f'<option selected value="{value}">', 1
            )
        return Markup(f"<select {html_params(name=field.name, **kwargs)}>{options}</select>")


class CountryField(SelectField):
    """The country picker: checks the choice against the ISO set, not a scan of ~250 options."""

    widget = CachedOptionsSelect()

    def pre_validate(self, form):
        if self.data not in country_codes():
            raise ValidationError(_l("Choose a country from the list"))


class SignupForm(FlaskForm):
    """Base fields; `form_class_for()` adds the key field rules and the consents."""

    firstName = StringField(
        _l("First name"),
        filters=[_collapse],
        validators=[
            Optional(),
            Length(max=50, message=_l("Enter at most 50 characters")),
            PrintableText(_l("Enter a name without special control characters")),
        ],
    )
    lastName = StringField(
        _l("Last name"),
        filters=[_collapse],
        validators=[
            Optional(),
            Length(max=50, message=_l("Enter at most 50 characters")),
            PrintableText(_l("Enter a name without special control characters")),
        ],
    )
    email = StringField(
        _l("Email address"),
        filters=[_strip],
        validators=[
            Length(max=254, message=_l("Enter an email address like name@example.com")),
            EmailAddress(_l("Enter an email address like name@example.com")),
        ],
    )
    countryCode = CountryField(_l("Country"), choices=[])
    mobilePhone = StringField(
        _l("Mobile phone number"),
        filters=[_strip],
        validators=[
            Length(max=30, message=_l("Enter a mobile number for the country you chose")),
            MobilePhone(_l("Enter a mobile number for the country you chose")),
        ],
    )
    birthDay = StringField(
        _l("Date of birth"),
        filters=[_strip],
        validators=[
            Length(max=12, message=_l("Enter your date of birth like 1990-01-31")),
            BirthDate(
                _l("Enter your date of birth like 1990-01-31"),
                _l("Your date of birth must be in the past"),
            ),
        ],
    )
    zipCode = StringField(
        _l("Postcode"),
        filters=[_collapse],
        validators=[Optional(), Length(max=12, message=_l("Enter a postcode like 123 45"))],
    )
    # One-time token: a second POST carrying it shows the first one's outcome, never a create.
    submission = HiddenField(
        validators=[
            Regexp(
                r"^[A-Za-z0-9_-]{16,64}$",
                message=_l("This page is out of date. Check your details and send again."),
            )
        ]
    )
    acceptsEmail = BooleanField(_l("Offers and news by email"))
    acceptsSms = BooleanField(_l("Offers and news by text message"))
    acceptsPostal = BooleanField(_l("Offers and news by post"))

    def validate_zipCode(self, field):
        if field.data and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 -]{1,11}", field.data):
            raise ValidationError(_l("Enter a postcode like 123 45"))

    # --- helpers for the view -------------------------------------------------------------------
    def consent_fields(self):
        return [f for f in self if f.name.startswith("consent-")]

    def normalized(self, name: str) -> str:
        field = self[name]
        return getattr(field, "normalized", None) or field.data


REQUIRED_MESSAGES = {
    "email": _l("Enter your email address"),
    "mobilePhone": _l("Enter your mobile phone number"),
    "firstName": _l("Enter your first name"),
    "lastName": _l("Enter your last name"),
    "birthDay": _l("Enter your date of birth"),
    "zipCode": _l("Enter your postcode"),
    "socialSecurityNumber": _l("Enter your personal identity number"),
    "externalId": _l("Enter your customer number"),
}


def form_class_for(contact_key: str, required_fields, consents) -> type[SignupForm]:
    """The form class for one deployment: key field required, one checkbox per consent."""
    attrs: dict = {}
    if contact_key == "socialSecurityNumber":
        attrs["socialSecurityNumber"] = StringField(
            _l("Personal identity number"),
            filters=[_strip],
            validators=[
                Length(max=20, message=_l("Enter a personal identity number like 19900131-1234")),
                SocialSecurityNumber(_l("Enter a personal identity number like 19900131-1234")),
            ],
        )
    elif contact_key == "externalId":
        attrs["externalId"] = StringField(
            _l("Customer number"),
            filters=[_strip],
            validators=[
                Length(max=64, message=_l("Enter your customer number")),
                PrintableText(_l("Enter your customer number")),
            ],
        )
    for extra in attrs.values():  # the key field comes first, before the names
        extra.creation_counter = SignupForm.firstName.creation_counter - 0.5
    for consent in consents:
        validators = (
            [DataRequired(_l("Accept this to become a member"))] if consent["required"] else []
        )
        attrs[f"consent-{consent['id']}"] = BooleanField(
            consent["label"]["en"], validators=validators
        )
    for name in {contact_key, *required_fields}:
        unbound = attrs.get(name) or getattr(SignupForm, name)
        required = unbound.field_class(
            *unbound.args,
            **{
                **unbound.kwargs,
                "validators": [
                    DataRequired(REQUIRED_MESSAGES[name]),
                    *unbound.kwargs["validators"],
                ],
            },
        )
        required.creation_counter = unbound.creation_counter  # keep the field order
        attrs[name] = required
    return type("DeploymentSignupForm", (SignupForm,), attrs)
