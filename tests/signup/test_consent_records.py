"""Consent records an auditor accepts: what each person saw, when, where, and what they chose."""

from __future__ import annotations

import csv
import html
import io
import json
import re
import time

import pytest
from cryptography.fernet import Fernet

from tests.conftest import (
    TEST_CONSENTS,
    VALID_FORM,
    english_browser,
    enrol,
    hidden_fields,
    outcome_of,
    submitter,
)

LABELS = {  # the default consent's label in each language (webapp/config.py DEFAULT_CONSENTS)
    "en": "I accept the membership terms",
    "sv": "Jag godkänner medlemsvillkoren",
    "fi": "Hyväksyn jäsenehdot",
    "nb": "Jeg godtar medlemsvilkårene",
    "da": "Jeg accepterer medlemsbetingelserne",
}
EMAIL_LABEL = {
    "en": "Offers and news by email",
    "sv": "Erbjudanden och nyheter via e-post",
    "fi": "Tarjoukset ja uutiset sähköpostitse",
    "nb": "Tilbud og nyheter på e-post",
    "da": "Tilbud og nyheder på e-mail",
}


@pytest.fixture
def records_app(simulated_app):
    return simulated_app


def sign_up(app, *, mode="staff", lang="en", **fields):
    """A sign-up from a freshly enrolled device; the submission token and the page shown."""
    browser = enrol(app.test_client(), app, mode)
    browser.get(f"/?lang={lang}")
    form_page = browser.get("/").get_data(as_text=True)
    hidden = hidden_fields(form_page)
    data = {k: v for k, v in {**VALID_FORM, **fields}.items() if v is not None}
    answer = browser.post("/", data={**data, **hidden}, follow_redirects=True)
    answer.form_page = form_page  # what the person saw before sending
    return hidden["submission"], answer


def export(app, **query) -> list[dict]:
    return app.extensions["consent_records"].export(**query)


@pytest.mark.parametrize("mode", ["staff", "kiosk"])
@pytest.mark.parametrize("lang", ["sv", "fi", "nb", "da", "en"])
def test_each_signup_records_what_was_shown_in_its_language_and_mode(
    records_app, engine, lang, mode
):
    app = records_app()
    token, page = sign_up(app, mode=mode, lang=lang, email=f"{lang}.{mode}@example.com",
                          acceptsEmail="y")  # fmt: skip
    assert outcome_of(page) == ("thanks" if mode == "kiosk" else "created")
    contact = engine.contacts()[0]
    rows = export(app, contact_id=contact["id"])
    by_item = {row["item"]: row for row in rows}
    assert set(by_item) == {"memberConsent", "acceptsEmail", "acceptsSms", "acceptsPostal"}
    consent = by_item["memberConsent"]
    assert consent["given"] is True and consent["text_label"] == LABELS[lang]
    assert consent["text_terms_url"] == TEST_CONSENTS[0]["url"]
    assert consent["text_source"] == "config" and consent["language"] == lang
    assert by_item["acceptsEmail"]["given"] is True
    assert by_item["acceptsEmail"]["text_label"] == EMAIL_LABEL[lang]
    assert by_item["acceptsSms"]["given"] is False, "a box left unticked is a decision too"
    # The words above the preferences are recorded as the form showed them, in its mode.
    shown = re.search(r'<legend>([^<]+)</legend>\s*<p class="hint">([^<]+)</p>', page.form_page)
    assert shown, "the preferences have a heading and a hint"
    words = "\n".join(html.unescape(part) for part in shown.groups())  # heading, then hint
    assert {by_item[p]["text_context"] for p in ("acceptsEmail", "acceptsSms")} == {words}
    # Every word beside the box, the link to the terms ("Läs villkoren") among them.
    link = re.search(r'<a class="terms" href="[^"]+"[^>]*>([^<]+)</a>', page.form_page)
    assert consent["text_terms_link"] == html.unescape(link.group(1)) != ""
    for row in rows:
        assert (row["store"], row["mode"], row["submission"]) == ("101", mode, token)
        assert row["delivery"] == "sent" and row["contact_id"] == contact["id"]
        assert row["app_version"] and row["device"] != "-"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row["at_utc"])


def test_engages_consent_comment_leads_back_to_the_exact_words(records_app, engine):
    app = records_app()
    sign_up(app, email="comment@example.com", lang="sv")
    consent = engine.contacts()[0]["consents"][0]
    short = re.search(r"text ([0-9a-f]{12});", consent["comment"]).group(1)
    assert (
        "engage-signup" in consent["comment"] and "staff device in store 101" in consent["comment"]
    )
    rows = [r for r in export(app, store="101") if r["text_hash"].startswith(short)]
    assert [r["text_label"] for r in rows] == [LABELS["sv"]]


def test_the_same_text_shown_twice_is_stored_once(records_app):
    app = records_app()
    sign_up(app, email="one@example.com")
    state = app.extensions["state"]
    texts = state.engine.run("SELECT count(*) FROM consent_texts").rows[0][0]
    sign_up(app, email="two@example.com")
    assert state.engine.run("SELECT count(*) FROM consent_texts").rows[0][0] == texts
    assert state.engine.run("SELECT count(*) FROM consent_records").rows[0][0] == 8


def test_a_changed_text_gets_a_new_hash_and_old_records_keep_the_old_words(
    records_app, engine, app_config, simulator
):
    first = records_app()
    sign_up(first, email="before@example.com", lang="sv")
    label = {**TEST_CONSENTS[0]["label"], "sv": "Jag godkänner de nya villkoren"}
    changed = [{**TEST_CONSENTS[0], "label": label}]
    second = records_app(CONSENTS=changed)
    sign_up(second, email="after@example.com", lang="sv")
    before, after = engine.contacts()
    old = [r for r in export(second, contact_id=before["id"]) if r["item"] == "memberConsent"]
    new = [r for r in export(second, contact_id=after["id"]) if r["item"] == "memberConsent"]
    assert old[0]["text_label"] == "Jag godkänner medlemsvillkoren"
    assert new[0]["text_label"] == "Jag godkänner de nya villkoren"
    assert old[0]["text_hash"] != new[0]["text_hash"]


def test_a_text_changed_in_engages_definitions_gets_a_new_hash(records_app, engine):
    from webapp.config import DEFAULT_CONSENTS

    app = records_app(CONSENT_TEXTS="engage", CONSENTS=DEFAULT_CONSENTS)
    sign_up(app, email="engage.before@example.com", lang="sv")
    engine.consents[0]["metaData"]["linkText"]["sv-SE"] = "nya medlemsvillkoren"
    engine.consents[0]["metaData"]["conditionText"]["sv-SE"] = "<p>Nya villkor.</p>"
    app.extensions["consent_cache"].clear()  # the five-minute cache ran out
    sign_up(app, email="engage.after@example.com", lang="sv")
    before, after = engine.contacts()
    old = export(app, contact_id=before["id"])[0]
    new = export(app, contact_id=after["id"])[0]
    assert old["text_source"] == "engage" and old["text_label"] == "Jag godkänner medlemsvillkoren"
    assert new["text_label"] == "Jag godkänner nya medlemsvillkoren"
    assert new["text_terms"] == "<p>Nya villkor.</p>"
    assert old["text_hash"] != new["text_hash"]


def test_engages_terms_are_cleaned_once_per_language_until_its_definitions_change(
    records_app, engine, monkeypatch
):
    """Every page and every consent record shows the same cleaned terms: they are cleaned once
    per language from each set of Engage's definitions, and again only when those are read
    anew, and what is read anew is what the next person sees and what is recorded."""
    from webapp.config import DEFAULT_CONSENTS
    from webapp.signup import consents

    cleaned = []
    clean = consents.nh3.clean
    monkeypatch.setattr(consents.nh3, "clean", lambda html, **kw: cleaned.append(html) or
                        clean(html, **kw))  # fmt: skip
    app = records_app(CONSENT_TEXTS="engage", CONSENTS=DEFAULT_CONSENTS)
    for n in range(3):
        sign_up(app, email=f"once.{n}@example.com", lang="sv")
    assert len(cleaned) == 1
    sign_up(app, email="once.fi@example.com", lang="fi")
    assert len(cleaned) == 2
    engine.consents[0]["metaData"]["conditionText"]["sv-SE"] = "<p>Ändrade villkor.</p>"
    app.extensions["consent_cache"].clear()  # the five-minute cache ran out
    _, page = sign_up(app, email="once.after@example.com", lang="sv")
    assert cleaned[-1] == "<p>Ändrade villkor.</p>" and len(cleaned) == 3
    assert "Ändrade villkor." in page.form_page
    assert export(app, contact_id=engine.contacts()[-1]["id"])[0]["text_terms"] == (
        "<p>Ändrade villkor.</p>"
    )


@pytest.mark.shared_state
def test_records_survive_a_restart_and_are_shared_between_instances(records_app, engine):
    first = records_app()
    sign_up(first, email="shared@example.com")
    first.extensions["state"].close()
    other = records_app()  # another instance, or the same after a restart
    rows = export(other, contact_id=engine.contacts()[0]["id"])
    assert len(rows) == 4 and all(r["delivery"] == "sent" for r in rows)


def test_a_kept_signup_points_to_the_outbox_until_engage_has_it(records_app, engine):
    key = Fernet.generate_key().decode()
    app = records_app(OUTBOX_KEYS=key, ENGAGE_RETRY_SECONDS=0)
    engine.inject("status", on="any", status=503, times=None)
    token, page = sign_up(app, email="kept@example.com")
    assert outcome_of(page) == "queued"
    rows = export(app, store="101")
    assert {r["delivery"] for r in rows} == {"kept"} and rows[0]["contact_id"] == ""
    ref = rows[0]["outbox_ref"]
    assert re.fullmatch(r"[A-Z2-7]{5}-[A-Z2-7]{5}", ref)
    engine.clear_faults()
    app.extensions["state"].outbox_retry()
    assert app.extensions["outbox"].replay_one(app, sleep=lambda s: None) == "created"
    contact = engine.contacts()[0]
    rows = export(app, contact_id=contact["id"])
    assert {(r["delivery"], r["contact_id"], r["outbox_ref"]) for r in rows} == {
        ("sent", contact["id"], ref)
    }
    assert {r["submission"] for r in rows} == {token}


def test_the_export_round_trips_as_csv_and_json(records_app, engine):
    app = records_app()
    sign_up(app, email="a@example.com")
    sign_up(app, email="b@example.com", acceptsSms="y")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    cli = app.test_cli_runner()
    as_json = cli.invoke(args=["consents", "export", "--store", "101", "--from", today,
                               "--to", today, "--format", "json"])  # fmt: skip
    as_csv = cli.invoke(args=["consents", "export", "--store", "101", "--from", today,
                              "--to", today])  # fmt: skip
    assert as_json.exit_code == 0 and as_csv.exit_code == 0
    rows = export(app, store="101")
    assert json.loads(as_json.output) == rows
    # A token or a device id may begin with "-": the CSV writes such a cell with a ' in front
    # (no spreadsheet formula), and it reads back as the value after it.
    read = [{k: v.removeprefix("'") for k, v in r.items()}
            for r in csv.DictReader(io.StringIO(as_csv.output))]  # fmt: skip
    flat = [{k: ("yes" if v is True else "no" if v is False else str(v)) for k, v in r.items()}
            for r in rows]  # fmt: skip
    assert read == flat
    assert len(rows) == 8
    by_contact = cli.invoke(args=["consents", "export", "--contact", engine.contacts()[1]["id"],
                                  "--format", "json"])  # fmt: skip
    assert {r["submission"] for r in json.loads(by_contact.output)} == {rows[-1]["submission"]}
    outside = cli.invoke(args=["consents", "export", "--store", "101", "--from", "2020-01-01",
                               "--to", "2020-01-31", "--format", "json"])  # fmt: skip
    assert json.loads(outside.output) == []


def test_no_personal_data_in_the_consent_tables(records_app, app_config):
    from pathlib import Path

    app = records_app()
    sign_up(app, email="zlatanina.private@example.com", firstName="Zlatanina",
            lastName="Privatsson", mobilePhone="0709876543", birthDay="1987-06-05")  # fmt: skip
    state = app.extensions["state"]
    dump = " ".join(
        str(row)
        for table in ("consent_texts", "consent_records", "consent_deliveries")
        for row in state.engine.run(f"SELECT * FROM {table}").rows
    )
    for secret in ("zlatanina", "Privatsson", "0709876543", "709876543", "1987-06-05"):
        assert secret.lower() not in dump.lower(), secret
    state.close()
    raw = Path(app_config["STATE_DB"]).read_bytes()
    wal = Path(app_config["STATE_DB"] + "-wal")
    raw += wal.read_bytes() if wal.exists() else b""
    assert b"zlatanina" not in raw.lower()


def test_records_older_than_consent_record_days_are_deleted(records_app):
    app = records_app(CONSENT_RECORD_DAYS=365)
    sign_up(app, email="old@example.com")
    state, records = app.extensions["state"], app.extensions["consent_records"]
    state.clock = lambda: time.time() + 364 * 86400
    assert records.expire() == 0
    state.clock = lambda: time.time() + 366 * 86400
    assert records.expire() == 4
    for table in ("consent_texts", "consent_records", "consent_deliveries"):
        assert state.engine.run(f"SELECT count(*) FROM {table}").rows[0][0] == 0, table


def test_an_invalid_form_records_nothing(records_app):
    app = records_app()
    browser = english_browser(app)
    assert outcome_of(submitter(browser)(email="not an address")) == "invalid"
    assert (
        app.extensions["state"].engine.run("SELECT count(*) FROM consent_records").rows[0][0] == 0
    )


# --- what the records must hold to (issue #27) ---------------------------------------------
def _records_of(app, submission: str) -> list[dict]:
    return app.extensions["state"].consent_records(submissions=[submission])


def test_a_double_tap_a_resubmit_or_a_used_token_records_each_decision_once(records_app):
    """One token, one record per decision: the same form sent twice (a double tap, the
    browser's resubmit) adds nothing, and other details under a used token record nothing."""
    app = records_app()
    browser = enrol(app.test_client(), app)
    browser.get("/?lang=en")
    hidden = hidden_fields(browser.get("/").get_data(as_text=True))
    first = {**VALID_FORM, "email": "once@example.com", **hidden}
    for _ in range(2):
        assert browser.post("/", data=first).status_code == 303
    other = {**first, "email": "someone.else@example.com", "firstName": "Other"}
    assert outcome_of(browser.post("/", data=other)) == "invalid", "a used token, other details"
    records = _records_of(app, hidden["submission"])
    assert sorted(r["item"] for r in records) == sorted(
        ["memberConsent", "acceptsEmail", "acceptsSms", "acceptsPostal"]
    ), "each decision once"
    total = app.extensions["state"].engine.run("SELECT count(*) FROM consent_records").rows[0][0]
    assert total == 4, "nothing recorded under the used token for the other details"


@pytest.mark.parametrize("change", ["url", "conditionText"])
def test_a_change_of_the_terms_alone_gives_a_new_hash(records_app, engine, change):
    """The same label, other terms (a new terms url, or new terms in Engage): a new text hash,
    and the older records keep the terms they were given under."""
    if change == "url":
        before = [{**TEST_CONSENTS[0], "url": "https://acme.example/terms-2025"}]
        after = [{**TEST_CONSENTS[0], "url": "https://acme.example/terms-2026"}]
        old_app, new_app = records_app(CONSENTS=before), records_app(CONSENTS=after)
    else:
        consent = [{"id": "memberConsent", "required": True, "label": TEST_CONSENTS[0]["label"]}]
        old_app = new_app = records_app(CONSENTS=consent)
    old_token, _ = sign_up(old_app, email="terms.before@example.com")
    if change == "conditionText":
        engine.consents[0]["metaData"]["conditionText"]["en-GB"] = "<p>New terms.</p>"
        new_app.extensions["consent_cache"].clear()
    new_token, _ = sign_up(new_app, email="terms.after@example.com")
    old = next(r for r in export(new_app, store="101") if r["submission"] == old_token)
    new = next(r for r in export(new_app, store="101") if r["submission"] == new_token)
    assert old["item"] == new["item"] == "memberConsent"
    assert old["text_label"] == new["text_label"]
    assert old["text_hash"] != new["text_hash"]
    if change == "url":
        assert (old["text_terms_url"], new["text_terms_url"]) == (
            "https://acme.example/terms-2025",
            "https://acme.example/terms-2026",
        )
    else:
        assert "New terms." not in old["text_terms"] and new["text_terms"] == "<p>New terms.</p>"
