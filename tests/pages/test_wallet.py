"""The membership card in the customer's phone (issue #25): Engage's wallet link as a QR code
on a staff tablet after created and existing, never on a kiosk, never in the way."""

from __future__ import annotations

import logging
import re

import pytest
import requests
from cryptography.fernet import Fernet

from tests.conftest import (
    CONTACT_ID,
    ENGAGE,
    KNOWN_MEMBER,
    english_browser,
    outcome_of,
    submitter,
    text_of,
)
from webapp.engage import EngageClient, EngageError
from webapp.engage.client import WALLET_TIMEOUT
from webapp.simulator.engine import DEMO_WALLET_CARD

PASS_URLS = ENGAGE + "/api/v3/wallet/pass/urls"
LINK = "https://wallet.example/p/AbCdEf0123456789"
OTHER_CARD = "11111111-2222-4333-8444-555555555555"


# --- the exact contract, at the HTTP edge ---------------------------------------------------------
@pytest.fixture
def engage():
    client = EngageClient(ENGAGE, "secret-key-123", user_agent="engage-signup/1.2.3")
    yield client
    client.close()


def test_a_pass_link_is_asked_for_with_the_card_and_the_contact(engage, engage_api):
    engage_api.post(PASS_URLS, json={CONTACT_ID: LINK})
    assert engage.pass_url(DEMO_WALLET_CARD, CONTACT_ID) == LINK
    request = engage_api.last_request
    assert (request.method, request.path) == ("POST", "/api/v3/wallet/pass/urls")
    assert request.json() == {"cardId": DEMO_WALLET_CARD, "contactIds": [CONTACT_ID]}
    assert request.headers["apikey"] == "secret-key-123"
    assert request.headers["Content-Type"] == "application/json"
    assert request.timeout == (engage.connect_timeout, WALLET_TIMEOUT)


@pytest.mark.parametrize(
    "answer",
    [{}, {"someone-else": LINK}, {CONTACT_ID: "javascript:alert(1)"}, {CONTACT_ID: 7}, []],
)
def test_an_answer_without_this_contacts_https_link_is_no_link(engage, engage_api, answer):
    engage_api.post(PASS_URLS, json=answer)
    assert engage.pass_url(DEMO_WALLET_CARD, CONTACT_ID) is None


@pytest.mark.parametrize("status", [400, 404, 429, 500, 503])
def test_a_refused_pass_link_is_an_engage_error_and_never_sent_twice(engage, engage_api, status):
    engage_api.post(PASS_URLS, status_code=status, json={"errorCode": "Whatever"})
    with pytest.raises(EngageError) as caught:
        engage.pass_url(DEMO_WALLET_CARD, CONTACT_ID)
    assert caught.value.status_code == status
    assert len(engage_api.request_history) == 1


def _refused() -> requests.exceptions.ConnectionError:
    """What requests raises when nothing listens: nothing left, so a lookup would be resent."""
    from urllib3.exceptions import MaxRetryError, NewConnectionError

    reason = NewConnectionError(None, "Failed to establish a new connection: [Errno 111]")
    return requests.exceptions.ConnectionError(MaxRetryError(None, PASS_URLS, reason=reason))


def _reset() -> requests.exceptions.ConnectionError:
    from urllib3.exceptions import ProtocolError

    cause = ConnectionResetError(104, "Connection reset by peer")
    return requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", cause))


@pytest.mark.parametrize("failure", [_refused, _reset], ids=["refused", "reset"])
def test_a_pass_link_is_asked_for_once_even_when_the_connection_fails(engage, engage_api, failure):
    """A refused connection is what a lookup is sent again after (nothing left); a pass link
    never is: nobody waits for a second try, and the page goes on without the card."""
    engage_api.post(PASS_URLS, exc=failure())
    with pytest.raises(EngageError) as caught:
        engage.pass_url(DEMO_WALLET_CARD, CONTACT_ID)
    assert caught.value.status_code is None
    assert len(engage_api.request_history) == 1


def test_the_link_never_reaches_a_log_line(engage, engage_api, caplog):
    caplog.set_level(logging.DEBUG)
    engage_api.post(PASS_URLS, json={CONTACT_ID: LINK})
    engage.pass_url(DEMO_WALLET_CARD, CONTACT_ID)
    assert "engage call method=POST path=/api/v3/wallet/pass/urls status=200" in caplog.text
    assert LINK not in caplog.text and "AbCdEf" not in caplog.text


# --- the simulator's endpoint, over real sockets ------------------------------------------------
def test_the_simulator_gives_one_link_per_contact_and_refuses_the_unknown(simulator, engine):
    contact = engine.add_contact({**KNOWN_MEMBER, "email": "card@example.com"})
    session = requests.Session()
    session.trust_env = False
    headers = {"apikey": "k", "Content-Type": "application/json", "User-Agent": "t/1"}

    def ask(body):
        return session.post(simulator.url + "/api/v3/wallet/pass/urls", json=body,
                            headers=headers, timeout=5)  # fmt: skip

    first = ask({"cardId": DEMO_WALLET_CARD, "contactIds": [contact["id"]]})
    assert first.status_code == 200
    link = first.json()[contact["id"]]
    assert ask({"cardId": DEMO_WALLET_CARD, "contactIds": [contact["id"]]}).json() == first.json()
    assert ask({"cardId": OTHER_CARD, "contactIds": [contact["id"]]}).status_code == 404
    assert ask({"cardId": DEMO_WALLET_CARD, "contactIds": ["nobody"]}).status_code == 404
    assert ask({"cardId": DEMO_WALLET_CARD}).status_code == 400
    card = session.get(link, timeout=5)
    assert card.status_code == 200 and "data-pretend-card" in card.text
    assert contact["attributes"]["memberNumber"] in card.text
    engine.inject("status", on="wallet", status=503)
    assert ask({"cardId": DEMO_WALLET_CARD, "contactIds": [contact["id"]]}).status_code == 503


# --- on the till, and nowhere else ---------------------------------------------------------------
@pytest.fixture
def wallet_app(simulated_app, engine):
    """The app with a wallet card (WALLET_CARD_ID), against the simulator."""

    def make(**settings):
        return simulated_app(**{"WALLET_CARD_ID": DEMO_WALLET_CARD, **settings})

    return make


def wallet_of(page) -> str | None:
    found = re.search(r"<figure class=\"wallet\" data-wallet>(.*?)</figure>", page, re.S)
    return found.group(1) if found else None


def test_a_staff_tablet_shows_the_card_after_created_and_after_existing(wallet_app, engine):
    app = wallet_app()
    engine.add_contact({**KNOWN_MEMBER, "email": "known@example.com"})
    till = submitter(english_browser(app))
    for email, outcome in (("new.card@example.com", "created"), ("known@example.com", "existing")):
        page = till(email=email)
        assert outcome_of(page) == outcome
        html = page.get_data(as_text=True)
        card = wallet_of(html)
        assert card and card.lstrip().startswith('<svg role="img"'), outcome
        assert "Scan to add your membership card to your phone's wallet" in text_of(page)
        assert "Member number" in text_of(page), "beside the member number"
        assert "/_simulator/wallet/" not in html, "the link is only in the QR code"
        assert page.headers["Cache-Control"] == "no-store"
    assert len(engine.requests("/api/v3/wallet/pass/urls", "POST")) == 2


def test_a_kiosk_never_offers_a_card_whatever_the_outcome(wallet_app, engine):
    app = wallet_app(DEVICE_MODE="kiosk")
    engine.add_contact({**KNOWN_MEMBER, "email": "known@example.com"})
    kiosk = app.test_client()
    kiosk.get("/?lang=en")
    for email in ("new.kiosk@example.com", "known@example.com"):
        page = submitter(kiosk)(email=email)
        assert outcome_of(page) == "thanks"
        assert "data-wallet" not in page.get_data(as_text=True)
    enrolled_kiosk = english_browser(app, mode="kiosk")
    assert "data-wallet" not in submitter(enrolled_kiosk)(email="k2@example.com").get_data(True)
    assert engine.requests("/api/v3/wallet/pass/urls") == [], "not even asked for"


@pytest.mark.parametrize(
    ("fault", "settings", "said"),
    [
        (
            {"kind": "latency", "seconds": WALLET_TIMEOUT + 1},
            {},
            "WalletNoAnswerInTime, no answer within 2 s",
        ),
        ({"kind": "status", "status": 500}, {}, "WalletError500, HTTP 500"),
        (
            None,
            {"WALLET_CARD_ID": OTHER_CARD},
            "WalletCardUnknown, HTTP 404 (check WALLET_CARD_ID)",
        ),
    ],
    ids=["slow", "failing", "unknown-card"],
)
def test_a_slow_or_failing_wallet_call_leaves_the_signup_as_it_was(
    wallet_app, engine, caplog, fault, settings, said
):
    """The page shows the member number without the card, one WARNING line says why, and the
    sign-up's outcome, its log line, its consent records and the breaker are untouched."""
    app = wallet_app(**settings)
    if fault:
        engine.inject(on="wallet", **fault)
    caplog.set_level(logging.INFO)
    page = submitter(english_browser(app))(email="card.trouble@example.com")
    assert outcome_of(page) == "created" and "Member number" in text_of(page)
    assert wallet_of(page.get_data(as_text=True)) is None
    warnings = [r.getMessage() for r in caplog.records if r.name == "webapp.pages.views"
                and r.levelno == logging.WARNING]  # fmt: skip
    assert len(warnings) == 1 and said in warnings[0] and warnings[0].startswith("wallet card:")
    calls = [r.getMessage() for r in caplog.records
             if "path=/api/v3/wallet/pass/urls" in r.getMessage()]  # fmt: skip
    assert calls and f"outcome={said.split(',')[0]} " in calls[0], "in the wallet's own words"
    assert not any(w in caplog.text for w in ("OutcomeUnknown", "EngageMisconfigured"))
    posted = [r.getMessage() for r in caplog.records if r.getMessage().startswith(
        "request method=POST path=/ ")]  # fmt: skip
    assert len(posted) == 1 and "outcome=created engage=-" in posted[0]
    state = app.extensions["state"]
    assert not state.breaker_is_open("engage")
    failures = state.engine.run("SELECT failures FROM breaker WHERE name = 'engage'").rows
    assert failures in ([], [(0,)]), "the breaker counted nothing"
    rows = app.extensions["consent_records"].export(store="101")
    assert {r["delivery"] for r in rows} == {"sent"}


def test_the_outbox_replay_asks_for_no_pass_link(wallet_app, engine):
    app = wallet_app(OUTBOX_KEYS=Fernet.generate_key().decode(), ENGAGE_RETRY_SECONDS=0)
    engine.inject("status", on="any", status=503, times=2)
    assert outcome_of(submitter(english_browser(app))(email="later.card@example.com")) == "queued"
    app.extensions["state"].outbox_retry()
    assert app.extensions["outbox"].replay_one(app, sleep=lambda s: None) == "created"
    assert engine.requests("/api/v3/wallet/pass/urls") == [], "nobody is there to scan it"


def test_wallet_card_id_is_checked_at_start_up(app_config):
    from webapp import ConfigError, create_app

    with pytest.raises(ConfigError) as refused:
        create_app({**app_config, "WALLET_CARD_ID": "my-card"})
    assert refused.value.key == "WALLET_CARD_ID"


def test_after_a_scan_to_join_sign_up_the_till_offers_the_card_and_the_phone_never(
    wallet_app, engine
):
    from tests.conftest import link_of, phone_opens, phone_sends, reveal, start

    app = wallet_app()
    till = english_browser(app)
    till_page = start(till)
    phone, _ = phone_opens(app, link_of(till, till_page))
    thanks = phone_sends(phone, email="card.from.phone@example.com")
    assert outcome_of(thanks) == "thanks" and "data-wallet" not in thanks.get_data(as_text=True)
    result = reveal(till, till_page)
    assert outcome_of(result) == "created"
    assert wallet_of(result.get_data(as_text=True)), "the till shows the card, as after its own"
    assert len(engine.requests("/api/v3/wallet/pass/urls", "POST")) == 1
