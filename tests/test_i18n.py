"""Every sentence exists in Swedish, Finnish, Norwegian, Danish and English, and is used."""

from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.frontend import CommandLineInterface
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from tests.conftest import CREATE, FIND, created_body, enrol, outcome_of, text_of

ROOT = Path(__file__).resolve().parent.parent
TRANSLATIONS = ROOT / "webapp" / "translations"
LANGUAGES = ("sv", "fi", "nb", "da")


def catalogue(lang: str, kind: str = "po"):
    path = TRANSLATIONS / lang / "LC_MESSAGES" / f"messages.{kind}"
    with open(path, "rb") as handle:
        return read_po(handle, locale=lang) if kind == "po" else read_mo(handle)


def _key(message_id):
    """A message's id: a string, or (singular, plural) for an entry with plural forms."""
    return tuple(message_id) if isinstance(message_id, list | tuple) else message_id


def _text(string):
    return tuple(string) if isinstance(string, list | tuple) else string


def ids(catalog) -> set:
    return {_key(m.id) for m in catalog if m.id}


def test_the_message_template_holds_every_string_in_the_code(tmp_path):
    fresh = tmp_path / "messages.pot"
    CommandLineInterface().run(
        ["pybabel", "-q", "extract", "-F", str(TRANSLATIONS / "babel.cfg"), "-k", "_l",
         "--no-location", "--omit-header", "-o", str(fresh), str(ROOT)]
    )  # fmt: skip
    with open(fresh, "rb") as handle:
        in_code = ids(read_po(handle))
    with open(TRANSLATIONS / "messages.pot", "rb") as handle:
        template = ids(read_po(handle))
    assert in_code == template, "run the extract command in webapp/translations/babel.cfg"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_catalogue_translates_every_string_and_is_compiled(lang):
    with open(TRANSLATIONS / "messages.pot", "rb") as handle:
        template = ids(read_po(handle))
    po = catalogue(lang)
    untranslated = sorted(
        str(m.id) for m in po if m.id and not all(_text(m.string) if m.pluralizable else [m.string])
    )
    assert not untranslated
    assert ids(po) == template
    assert [str(m.id) for m in po if "fuzzy" in m.flags] == [], "no guessed (fuzzy) entries"
    compiled = {_key(m.id): _text(m.string) for m in catalogue(lang, "mo") if m.id}
    assert compiled == {_key(m.id): _text(m.string) for m in po if m.id}, "compile them"


def test_every_sentence_with_a_count_in_it_has_plural_forms():
    """ "1 seconds" reads wrong in every language: a count goes into an entry with plural
    forms (ngettext), never into a plain one."""
    with open(TRANSLATIONS / "messages.pot", "rb") as handle:
        template = read_po(handle)
    counting = ("%(num)", "%(count)", "%(seconds)", "%(minutes)", "%(days)", "%d")
    singular_only = [
        m.id for m in template if isinstance(m.id, str) and any(c in m.id for c in counting)
    ]
    assert singular_only == []
    assert any(m.pluralizable for m in template), "the countdown has its plural forms"


@pytest.mark.parametrize(
    ("lang", "heading", "sweden", "first_country"),
    [
        ("sv", "Ny medlem", "Sverige", "Sverige"),
        ("fi", "Uusi jäsen", "Ruotsi", "Ruotsi"),
        ("nb", "Nytt medlem", "Sverige", "Sverige"),
        ("da", "Nyt medlem", "Sverige", "Sverige"),
        ("en", "New member", "Sweden", "Sweden"),
    ],
)
def test_the_form_speaks_the_chosen_language(client, lang, heading, sweden, first_country):
    client.get(f"/?lang={lang}")
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert f'<html lang="{lang}">' in html
    assert f"<h1>{heading}</h1>" in html
    assert f'<option selected value="SE">{first_country}</option>' in html


def test_nordic_countries_come_first_then_the_rest_in_alphabetical_order(client):
    client.get("/?lang=sv")
    html = client.get("/").get_data(as_text=True)
    order = [html.index(f'value="{code}"') for code in ("SE", "NO", "DK", "FI", "IS")]
    assert order == sorted(order)
    # Swedish order: Zimbabwe, then Åland is Nordic (first), Österrike after Zimbabwe.
    assert html.index(">Zimbabwe<") < html.index(">Österrike<")
    assert html.index(">Afghanistan<") < html.index(">Zimbabwe<")


def test_the_language_switcher_names_each_language_in_its_own_words(client):
    text = text_of(client.get("/"))
    for name in ("Svenska", "Suomi", "Norsk bokmål", "Dansk", "English"):
        assert name in text


def test_the_chosen_language_is_sent_to_engage_as_lang(client, submit, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body())
    client.get("/?lang=fi")
    page = submit()
    assert outcome_of(page) == "created"
    assert engage_api.request_history[1].json()["lang"] == "fi"
    assert "Uusi jäsen rekisteröity" in text_of(page)


def test_validation_messages_are_translated_too(client, submit):
    client.get("/?lang=da")
    page = submit(email="nope")
    assert "Indtast en e-mailadresse som navn@eksempel.dk" in text_of(page)


def test_consent_labels_follow_the_language(client):
    client.get("/?lang=nb")
    assert "Jeg godtar medlemsvilkårene" in text_of(client.get("/"))


def test_the_store_countrys_language_is_the_default(app):
    page = enrol(app.test_client(), app).get("/")
    assert '<html lang="sv">' in page.get_data(as_text=True)


def test_a_store_outside_the_nordics_follows_the_browser(app_config):
    from webapp import create_app

    # An unenrolled kiosk of STORE_EXTERNAL_ID, in DEFAULT_COUNTRY.
    app = create_app({**app_config, "DEFAULT_COUNTRY": "DE", "DEVICE_MODE": "kiosk"})
    accept = {"Accept-Language": "da-DK,da;q=0.9,en;q=0.5"}
    page = app.test_client().get("/", headers=accept)
    assert '<html lang="da">' in page.get_data(as_text=True)


# What native readers changed (issue 36): the word they read, never the one they stumbled on.
NATIVE_WORDS = {
    "sv": [
        ("Make the membership system slow or down", "otillgängligt", "nere"),
        ("Customer signs up on their phone", "Kunden blir medlem i mobilen", "anmäler"),
        (
            "That code is not valid. Check it on the till's screen, or ask the cashier for a new "
            "one.",
            "Koden stämmer inte.",
            "gäller inte",
        ),
        (
            "Scan to add your membership card to your phone's wallet",
            "lägga till medlemskortet i mobilens Plånbok",
            "plånbok",
        ),
    ],
    "fi": [
        ("Register here instead", "Rekisteröi asiakas tässä", "täällä"),
        (
            "Make the membership system slow or down",
            "Hidasta jäsenjärjestelmää tai katkaise se",
            "poissa käytöstä",
        ),
    ],
    "nb": [
        ("Make the membership system slow or down", "utilgjengelig", "nede"),
        ("No camera? Open this address:", "Ingen kamera?", "Ikke kamera"),
    ],
    "da": [
        ("Customer signs up on their phone", "Kunden bliver medlem på sin mobil", "tilmelder"),
        ("Make the membership system slow or down", "utilgængeligt", "nede"),
        (
            "Scan to add your membership card to your phone's wallet",
            "mobilens Wallet",
            "telefonens wallet",
        ),
    ],
}


@pytest.mark.parametrize("language", sorted(NATIVE_WORDS))
def test_the_words_native_readers_chose(language):
    from babel.support import Translations

    catalogue = Translations.load(str(ROOT / "webapp" / "translations"), [language])
    for english, wanted, stumbled in NATIVE_WORDS[language]:
        said = catalogue.gettext(english)
        assert wanted in said and stumbled not in said, (english, said)


@pytest.mark.parametrize("language", ["en", "sv", "fi", "nb", "da"])
def test_the_cashier_is_sent_to_the_managers_section_by_the_name_it_has_there(language):
    """Several matches, kept for the manager: the cashier's words name the manager's section
    exactly as its heading reads (it said "needs attention" of a section called "Needs a
    person")."""
    from babel.support import Translations

    from webapp.i18n import _CASHIER_MESSAGES

    catalogue = Translations.load(str(ROOT / "webapp" / "translations"), [language])
    section = catalogue.gettext("Needs a person")
    _heading, text = _CASHIER_MESSAGES["ambiguous-kept"]
    told = catalogue.gettext(text._args[0])
    assert section in told, (section, told)
