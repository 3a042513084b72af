"""Languages, locale choice and country names (CLDR data via Babel)."""

from __future__ import annotations

from functools import lru_cache

from babel import Locale
from flask import current_app, request, session
from wtforms import SelectChoice

# Code sent to Engage as `lang` → the language's own name, for the switcher.
LANGUAGES = {
    "sv": "Svenska",
    "fi": "Suomi",
    "nb": "Norsk bokmål",
    "da": "Dansk",
    "en": "English",
}
# Parsed once: Flask-Babel takes a Locale as it is, where parsing a code looks on disk each time.
_LOCALES = {code: Locale.parse(code) for code in LANGUAGES}
COUNTRY_LANGUAGE = {"SE": "sv", "FI": "fi", "NO": "nb", "DK": "da", "AX": "sv"}
NORDIC_COUNTRIES = ("SE", "NO", "DK", "FI", "IS", "AX", "FO", "GL")

# CLDR territory codes that are not assigned ISO 3166-1 alpha-2 country codes (groupings,
# exceptionally reserved codes, private use).
_NOT_COUNTRIES = set("AC CP CQ DG EA EU EZ IC QO TA UN XA XB XK ZZ".split())

# Letters that come after z in the Nordic alphabets, in order; without ICU, this is enough to
# sort country names the way a Nordic reader expects (Österrike after Zimbabwe).
_AFTER_Z = {
    "sv": "åäöæø",
    "fi": "åäöæø",
    "da": "æøå",
    "nb": "æøå",
}


def select_locale() -> Locale:
    """The person's explicit choice, then the store country's language, then the browser."""
    return _LOCALES[_language_code()]


def _language_code() -> str:
    from .devices import current_device

    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return chosen
    device = current_device()
    country = device.country if device else current_app.config["DEFAULT_COUNTRY"]
    by_country = COUNTRY_LANGUAGE.get(country)
    if by_country:
        return by_country
    return request.accept_languages.best_match(list(LANGUAGES)) or "en"


def _sort_key(language: str):
    after = _AFTER_Z.get(language, "")

    def key(name: str) -> tuple:
        return tuple(
            (1, after.index(ch)) if ch in after else (0, ord(_fold(ch))) for ch in name.lower()
        )

    return key


def _fold(ch: str) -> str:
    import unicodedata

    decomposed = unicodedata.normalize("NFD", ch)
    return decomposed[0] if decomposed else ch


@lru_cache(maxsize=16)
def countries(language: str) -> tuple[SelectChoice, ...]:
    """Every ISO 3166 country (value: code, label: name in `language`), Nordic countries first."""
    names = Locale.parse(language).territories
    codes = [c for c in names if len(c) == 2 and c.isalpha() and c not in _NOT_COUNTRIES]
    nordic = [(c, names[c]) for c in NORDIC_COUNTRIES if c in names]
    rest = sorted(
        ((c, names[c]) for c in codes if c not in NORDIC_COUNTRIES),
        key=lambda item: _sort_key(language)(item[1]),
    )
    return tuple(SelectChoice(code, name) for code, name in nordic + rest)


@lru_cache(maxsize=1)
def country_codes() -> frozenset[str]:
    return frozenset(choice.value for choice in countries("en"))


def outcome_messages(unapproved: bool = False) -> dict[str, tuple[str, str]]:
    """outcome name → (heading, text): every sentence a person reads about Engage's answer.

    `thanks` is what a kiosk shows for every final outcome: nobody there may learn whether
    someone else is a member. `unapproved`: new contacts are created unapproved (double
    opt-in), so their offers apply only once the person has confirmed by email.
    """
    from flask_babel import gettext as _

    messages = {
        "created": (
            _("Welcome, you are now a member!"),
            _("Your membership is registered. Your member offers apply from today."),
        ),
        "existing": (
            _("You are already a member"),
            _(
                "These details already belong to a membership, so there is nothing more to do. "
                "Your member offers apply as usual."
            ),
        ),
        "in-progress": (
            _("Your membership is being registered"),
            _(
                "We are already registering a membership with these details. "
                "Wait a minute before trying again; nothing more is needed now."
            ),
        ),
        "ambiguous": (
            _("We need a member of staff to help"),
            _(
                "These details match more than one membership. "
                "Ask a member of staff to sort it out; your purchase can go on meanwhile."
            ),
        ),
        "rejected": (
            _("Please check your details"),
            _("Some details could not be accepted. Correct the marked fields and send again."),
        ),
        "timeout": (
            _("That took too long"),
            _(
                "The membership service did not answer in time and nothing was saved. "
                "Your details are still here: it is safe to send them again."
            ),
        ),
        "unavailable": (
            _("The membership service is not available right now"),
            _(
                "Your purchase can go on as usual, and staff can register the membership later. "
                "Your details are still here if you want to try again."
            ),
        ),
        "invalid": (
            _("Please check your details"),
            _("Some details need correcting before we can register you."),
        ),
        "throttled": (
            _("Please wait a minute"),
            _(
                "Too many sign-ups were sent from here in a short time. "
                "Wait a minute and try again."
            ),
        ),
    }
    messages["thanks"] = (
        _("Thank you!"),
        _("Your membership is taken care of. Member offers apply from today."),
    )
    if unapproved:
        messages["created"] = (
            messages["created"][0],
            _(
                "The membership is registered, but must be confirmed: the customer opens the "
                "link in the email we send. Member offers apply once it is confirmed."
            ),
        )
        messages["thanks"] = (
            _("Thank you!"),
            _(
                "If you are new to us, confirm your membership with the link in the email we "
                "send you. Member offers apply once it is confirmed."
            ),
        )
    return messages
