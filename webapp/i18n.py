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


def current_language() -> str:
    """The language this request's pages are in (a code of LANGUAGES, or "en")."""
    from flask_babel import get_locale

    locale = get_locale()
    return locale.language if locale else "en"


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


def outcome_messages(*, kiosk: bool, unapproved: bool = False) -> dict[str, tuple[str, str]]:
    """outcome name → (heading, text): every sentence a person reads about Engage's answer.

    A staff tablet speaks to the cashier: what happened and what to do now, with the purchase
    too. A kiosk speaks to the customer, and shows `thanks` for every final outcome: nobody there
    may learn whether someone else is a member. `unapproved`: new contacts are created
    unapproved (double opt-in), so their offers apply once the person has confirmed by email.
    """
    from flask_babel import gettext as _

    if kiosk:
        messages = {
            "thanks": (
                _("Thank you!"),
                _(
                    "If you are new to us, confirm your membership with the link in the email "
                    "we send you. Member offers apply once it is confirmed."
                )
                if unapproved
                else _("Your membership is taken care of. Member offers apply from today."),
            ),
            "rejected": (
                _("Please check your details"),
                _("Some details were not accepted. Correct the marked fields and send again."),
            ),
            "rejected-unmarked": (
                _("Please check your details"),
                _("Your details were not accepted. Check them and send again."),
            ),
            "timeout": (
                _("That took too long"),
                _(
                    "Nothing was saved, and your details are still here: you can safely send "
                    "them again."
                ),
            ),
            "unavailable": (
                _("The membership service is not available right now"),
                _("Nothing was saved. You can shop as usual and sign up another time."),
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
        return messages
    return {
        "created": (
            _("New member registered"),
            _(
                "The membership is registered, but must be confirmed: the customer opens the "
                "link in the email we send. Member offers apply once it is confirmed."
            )
            if unapproved
            else _("Attach the purchase to the member number below."),
        ),
        "existing": (
            _("Already a member"),
            _("Nothing more to register: attach the purchase to the member number below."),
        ),
        "in-progress": (
            _("Already being registered"),
            _(
                "Another till or the web shop is registering these details right now. Finish "
                "the purchase without a member; the membership is ready within a minute."
            ),
        ),
        "queued": (
            _("Saved: it will be registered shortly"),
            _(
                "The membership system cannot take it right now, so the sign-up is saved and "
                "will be sent within minutes. Finish the purchase without a member number; the "
                "customer needs to do nothing more."
            ),
        ),
        "ambiguous": (
            _("Several memberships match"),
            _(
                "These details belong to more than one member, so none was chosen. Finish the "
                "purchase without a member, and ask whoever looks after the membership system "
                "to merge the members below."
            ),
        ),
        # Kept for the store manager (the outbox is on): nothing more for the cashier to do.
        "ambiguous-kept": (
            _("Several memberships match"),
            _(
                "These details belong to more than one member, so none was chosen. Finish the "
                "purchase without a member number: the store manager sees the case under "
                '"needs attention", has the members merged, and the sign-up is sent then.'
            ),
        ),
        "rejected": (
            _("The membership system did not accept these details"),
            _("Check the marked fields with the customer and send again."),
        ),
        "rejected-unmarked": (
            _("The membership system did not accept these details"),
            _("It did not say which detail. Check them with the customer and send again."),
        ),
        "timeout": (
            _("The membership system took too long"),
            _(
                "Nothing was saved. Send again; if it happens again, finish the purchase "
                "without a member."
            ),
        ),
        "unavailable": (
            _("The membership system cannot be reached"),
            _(
                "Nothing was saved. Finish the purchase without a member; the customer can "
                "sign up another time."
            ),
        ),
        "invalid": (
            _("Please check the details"),
            _("Correct the marked fields before sending."),
        ),
        "throttled": (
            _("Too many sign-ups from this till"),
            _("Wait a minute, then send again."),
        ),
    }
