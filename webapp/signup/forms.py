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
from flask_wtf import FlaskForm
from markupsafe import Markup, escape
from wtforms import BooleanField, HiddenField, SelectField, StringField
from wtforms.validators import DataRequired, Length, Optional, Regexp, ValidationError
from wtforms.widgets import Select, html_params

from ..i18n import country_codes
from ..i18n import lazy_gettext as _l

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
        from ..i18n import current_language

        born = parse_birth_date(field.data, current_language())
        if born is None:
            raise ValidationError(self.message)
        today = dt.date.today()
        if born >= today:
            raise ValidationError(self.future_message)
        if born.year < today.year - MAX_AGE_YEARS:
            raise ValidationError(self.message)
        field.normalized = born.isoformat()


def parse_birth_date(text: str, language: str = "en") -> dt.date | None:
    """The date typed, in any of the forms above, or six digits as the page's language writes
    a short date: YYMMDD in Swedish (as a personnummer begins), DDMMYY in Finnish, Norwegian and
    Danish (and English). The century is the one that puts the date in the past."""
    text = text.strip()
    if re.fullmatch(r"\d{6}", text):
        return _six_digits(text, language)
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


def _six_digits(text: str, language: str) -> dt.date | None:
    first, middle, last = int(text[:2]), int(text[2:4]), int(text[4:])
    year, month, day = (first, middle, last) if language == "sv" else (last, middle, first)
    today = dt.date.today()
    for century in (2000, 1900):
        try:
            born = dt.date(century + year, month, day)
        except ValueError:
            return None
        if born < today:
            return born
    return None


# The Nordic postcodes: all digits, so the page opens a number keypad for them. Sweden's five
# are written "123 45" or "12345" and sent as Engage's own example writes them ("123 45",
# engage-api.md §3); Finland's five, Norway's and Denmark's four are sent as typed. Elsewhere a
# postcode is free text.
POSTCODE_DIGITS = {"SE": 5, "FI": 5, "NO": 4, "DK": 4}
POSTCODE_MESSAGES = {
    "SE": _l("Enter a Swedish postcode of five digits, like 123 45"),
    "FI": _l("Enter a Finnish postcode of five digits, like 00100"),
    "NO": _l("Enter a Norwegian postcode of four digits, like 0150"),
    "DK": _l("Enter a Danish postcode of four digits, like 1050"),
}


class Postcode:
    """The postcode checked against the country chosen; `field.normalized` as Engage takes it."""

    def __call__(self, form, field):
        country = form.countryCode.data if "countryCode" in form else None
        digits = POSTCODE_DIGITS.get(country)
        if not field.data or digits is None:
            return
        compact = field.data.replace(" ", "")
        if not re.fullmatch(rf"\d{{{digits}}}", compact):
            raise ValidationError(POSTCODE_MESSAGES[country])
        field.normalized = f"{compact[:3]} {compact[3:]}" if country == "SE" else compact


class SocialSecurityNumber:
    """A Swedish personnummer or samordningsnummer, or a Finnish henkilötunnus, with a valid
    check digit and date; `field.normalized` is the form Engage documents (engage-api.md §8):
    12 digits for Sweden (YYYYMMDDNNNN), the 11 characters with the century sign for Finland."""

    def __init__(self, message):
        self.message = message

    def __call__(self, form, field):
        if not field.data:
            return
        number = personal_number(field.data, form.countryCode.data)
        if number is None:
            raise ValidationError(self.message)
        field.normalized = number


# The Finnish century sign: + 1800s; - and Y, X, W, V, U 1900s; A to F 2000s (since 2023).
FI_CENTURY = {"+": 1800, **dict.fromkeys("-YXWVU", 1900), **dict.fromkeys("ABCDEF", 2000)}
FI_CHECK = "0123456789ABCDEFHJKLMNPRSTUVWXY"


def personal_number(text: str, country: str | None = None, today: dt.date | None = None):
    """The number as Engage takes it, or None when it is no valid Swedish or Finnish one.
    `country` FI reads an ambiguous number (DDMMYY-NNNC) as Finnish first."""
    compact = re.sub(r"\s", "", text).upper()
    today = today or dt.date.today()
    readers = (_finnish, _swedish) if country == "FI" else (_swedish, _finnish)
    for read in readers:
        number = read(compact, today)
        if number:
            return number
    return None


def _swedish(text: str, today: dt.date) -> str | None:
    match = re.fullmatch(r"(\d{2})?(\d{2})(\d{2})(\d{2})([-+]?)(\d{3})(\d)", text)
    if not match:
        return None
    century, yy, mm, dd, sign, serial, check = match.groups()
    total = 0
    for i, ch in enumerate(yy + mm + dd + serial + check):
        n = int(ch) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    if total % 10:
        return None
    day = int(dd) - 60 if int(dd) > 60 else int(dd)  # a samordningsnummer adds 60 to the day
    if century:
        years = [int(century + yy)]
    else:  # ten digits: under 100 years old, or 100 and over with "+" (engage-api.md §8)
        latest = today.year - (today.year - int(yy)) % 100
        years = [latest - 100] if sign == "+" else [latest, latest - 100]
    for year in years:
        try:
            born = dt.date(year, int(mm), day)
        except ValueError:
            return None
        if born <= today:
            return f"{year:04d}{mm}{dd}{serial}{check}"
    return None


def _finnish(text: str, today: dt.date) -> str | None:
    match = re.fullmatch(r"(\d{2})(\d{2})(\d{2})([-+A-FU-Y])(\d{3})([0-9A-Y])", text)
    if not match:
        return None
    dd, mm, yy, sign, serial, check = match.groups()
    if FI_CHECK[int(dd + mm + yy + serial) % 31] != check:
        return None
    try:
        born = dt.date(FI_CENTURY[sign] + int(yy), int(mm), int(dd))
    except ValueError:
        return None
    return text if born <= today else None


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
            PrintableText(_l("This name contains characters that cannot be saved")),
        ],
    )
    lastName = StringField(
        _l("Last name"),
        filters=[_collapse],
        validators=[
            Optional(),
            Length(max=50, message=_l("Enter at most 50 characters")),
            PrintableText(_l("This name contains characters that cannot be saved")),
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
                _l("The date of birth cannot be in the future"),
            ),
        ],
    )
    zipCode = StringField(
        _l("Postcode"),
        filters=[_collapse],
        validators=[
            Optional(),
            Length(max=12, message=_l("Enter a postcode like 123 45")),
            Postcode(),
        ],
    )
    # One-time token: a second POST carrying it shows the first one's outcome, never a create.
    submission = HiddenField(
        validators=[
            Regexp(
                r"^[A-Za-z0-9_-]{24}\Z",  # what views.new_submission_token() issues, no more
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
        wrong = _l(
            "Enter a Swedish or Finnish personal identity number, like 19900131-1233 or 311290-123V"
        )
        attrs["socialSecurityNumber"] = StringField(
            _l("Swedish or Finnish personal identity number"),
            filters=[_strip],
            validators=[Length(max=20, message=wrong), SocialSecurityNumber(wrong)],
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
