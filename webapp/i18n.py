"""Languages, locale choice and country names (CLDR data via Babel)."""

from __future__ import annotations

from functools import lru_cache

from babel import Locale, support
from flask import current_app, g, has_app_context, request, session
from flask_babel import get_domain
from flask_babel.speaklater import LazyString
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


_NO_TRANSLATIONS = support.NullTranslations()


def catalogue() -> support.NullTranslations:
    """This request's translations, looked up once per request. Flask-Babel's own gettext finds
    its domain, the locale and the catalogue again for each string (five context look-ups), and
    a result page has dozens of strings. The cache lives as long as the request, as Flask-Babel's
    own choice of locale does; nothing here changes the locale within a request (no
    flask_babel.refresh() or force_locale), which would have to drop it."""
    if not has_app_context():
        return _NO_TRANSLATIONS
    found = g.get("_catalogue")
    if found is None:
        found = g._catalogue = get_domain().get_translations()
    return found


def gettext(string: str, **variables) -> str:
    """Flask-Babel's gettext, through this request's catalogue()."""
    translated = catalogue().ugettext(string)
    return translated % variables if variables else translated


def ngettext(singular: str, plural: str, num: int, **variables) -> str:
    variables.setdefault("num", num)
    return catalogue().ungettext(singular, plural, num) % variables


def lazy_gettext(string: str, **variables) -> LazyString:
    """Translated when it is read, in the language of the request reading it."""
    return LazyString(gettext, string, **variables)


def install_jinja(app) -> None:
    """The templates' _(), gettext() and ngettext() through catalogue() (in place of the ones
    Flask-Babel installs, which look the catalogue up again for every string)."""
    app.jinja_env.install_gettext_callables(
        gettext=lambda s: catalogue().ugettext(s),
        ngettext=lambda s, p, n: catalogue().ungettext(s, p, n),
        pgettext=lambda c, s: catalogue().upgettext(c, s),
        npgettext=lambda c, s, p, n: catalogue().unpgettext(c, s, p, n),
        newstyle=True,
    )


def select_locale() -> Locale:
    """The person's explicit choice, then the store country's language, then the browser."""
    return _LOCALES[_language_code()]


def current_language() -> str:
    """The language this request's pages are in (a code of LANGUAGES, or "en")."""
    from flask_babel import get_locale

    locale = get_locale()
    return locale.language if locale else "en"


def _language_code() -> str:
    chosen = session.get("lang")
    if chosen in LANGUAGES:
        return chosen
    device = current_app.extensions["current_device"]()  # handed in by the app factory
    if device is None and g.get("phone_page"):
        # The customer's own phone before it holds a handoff (the store's short address, a
        # used code): the phone's own language when it is one of ours, else the store's.
        best = request.accept_languages.best_match(list(LANGUAGES))
        if best:
            return best
        country = g.get("store_country") or current_app.config["DEFAULT_COUNTRY"]
    else:
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


_l = lazy_gettext  # the keyword pybabel extracts (babel.cfg)

# outcome name → (heading, text): every sentence a person reads about Engage's answer, made
# once and translated when read (only the one a page shows).
#
# A kiosk (or the customer's phone) speaks to the customer, and shows `thanks` for every final
# outcome: nobody there may learn whether someone else is a member.
_CUSTOMER_MESSAGES = {
    "thanks": (
        _l("Thank you!"),
        _l("Your membership is taken care of. Member offers apply from today."),
    ),
    "thanks-unapproved": (
        _l("Thank you!"),
        _l(
            "If you are new to us, confirm your membership with the link in the email "
            "we send you. Member offers apply once it is confirmed."
        ),
    ),
    "rejected": (
        _l("Please check your details"),
        _l("Some details were not accepted. Correct the marked fields and send again."),
    ),
    "rejected-unmarked": (
        _l("Please check your details"),
        _l("Your details were not accepted. Check them and send again."),
    ),
    "timeout": (
        _l("That took too long"),
        _l("Nothing was saved, and your details are still here: you can safely send them again."),
    ),
    "unavailable": (
        _l("The membership service is not available right now"),
        _l("Nothing was saved. You can shop as usual and sign up another time."),
    ),
    "invalid": (
        _l("Please check your details"),
        _l("Some details need correcting before we can register you."),
    ),
    "throttled": (
        _l("Please wait a minute"),
        _l("Too many sign-ups were sent from here in a short time. Wait a minute and try again."),
    ),
}
# A staff tablet speaks to the cashier: what happened and what to do now, with the purchase too.
_CASHIER_MESSAGES = {
    "created": (
        _l("New member registered"),
        _l("Attach the purchase to the member number below."),
    ),
    "created-unapproved": (
        _l("New member registered"),
        _l(
            "The membership is registered, but must be confirmed: the customer opens the "
            "link in the email we send. Member offers apply once it is confirmed."
        ),
    ),
    "existing": (
        _l("Already a member"),
        _l("Nothing more to register: attach the purchase to the member number below."),
    ),
    "promoted": (
        _l("Now a member"),
        _l(
            "The customer was in the membership system already, not as a member: now they "
            "are, with what they chose today. Attach the purchase to the member number below."
        ),
    ),
    "updated": (
        _l("Already a member: details added"),
        _l(
            "What the customer gave that the membership system lacked is added. Attach the "
            "purchase to the member number below."
        ),
    ),
    "in-progress": (
        _l("Already being registered"),
        _l(
            "Another till or the web shop is registering these details right now. Finish "
            "the purchase without a member; the membership is ready within a minute."
        ),
    ),
    "queued": (
        _l("Saved: it will be registered shortly"),
        _l(
            "The membership system cannot take it right now, so the sign-up is saved and "
            "will be sent within minutes. Finish the purchase without a member number; the "
            "customer needs to do nothing more."
        ),
    ),
    "ambiguous": (
        _l("Several memberships match"),
        _l(
            "These details belong to more than one member, so none was chosen. Finish the "
            "purchase without a member, and ask whoever looks after the membership system "
            "to merge the members below."
        ),
    ),
    # Kept for the store manager (the outbox is on): nothing more for the cashier to do.
    "ambiguous-kept": (
        _l("Several memberships match"),
        _l(
            "These details belong to more than one member, so none was chosen. Finish the "
            "purchase without a member number: the store manager sees the case under "
            '"Needs a person", has the members merged, and the sign-up is sent then.'
        ),
    ),
    "rejected": (
        _l("The membership system did not accept these details"),
        _l("Check the marked fields with the customer and send again."),
    ),
    "rejected-unmarked": (
        _l("The membership system did not accept these details"),
        _l("It did not say which detail. Check them with the customer and send again."),
    ),
    "timeout": (
        _l("The membership system took too long"),
        _l(
            "Nothing was saved. Send again; if it happens again, finish the purchase "
            "without a member."
        ),
    ),
    "unavailable": (
        _l("The membership system cannot be reached"),
        _l(
            "Nothing was saved. Finish the purchase without a member; the customer can "
            "sign up another time."
        ),
    ),
    "invalid": (
        _l("Please check the details"),
        _l("Correct the marked fields before sending."),
    ),
    "throttled": (
        _l("Too many sign-ups from this till"),
        _l("Wait a minute, then send again."),
    ),
}


def outcome_message(
    name: str, *, kiosk: bool, unapproved: bool = False
) -> tuple[str, str] | tuple[None, None]:
    """The heading and text a person reads about the outcome `name` (None, None: no message).
    `unapproved`: new contacts are created unapproved (double opt-in), so their offers apply
    once the person has confirmed by email."""
    messages = _CUSTOMER_MESSAGES if kiosk else _CASHIER_MESSAGES
    if unapproved and f"{name}-unapproved" in messages:
        name = f"{name}-unapproved"
    heading, text = messages.get(name, (None, None))
    return (str(heading), str(text)) if heading is not None else (None, None)
