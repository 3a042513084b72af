"""Scan to join (issue #24): the till starts a handoff, the customer signs up on their own
phone through the same submission as the till's, and the till gets the answer."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet

from .conftest import (
    VALID_FORM,
    english_browser,
    english_visitor,
    hidden_fields,
    outcome_of,
    text_of,
)


@pytest.fixture
def app(simulated_app):
    return simulated_app(OUTBOX_KEYS=Fernet.generate_key().decode(), ENGAGE_RETRY_SECONDS=0)


def start(till) -> str:
    """The cashier taps "Customer signs up on their phone": the till page's address."""
    page = till.get("/").get_data(as_text=True)
    assert "data-handoff-start" in page
    token = re.search(r'action="/handoff/"[^>]*>\s*<input type="hidden" name="csrf_token" '
                      r'value="([^"]+)"', page).group(1)  # fmt: skip
    answer = till.post("/handoff/", data={"csrf_token": token})
    assert answer.status_code == 303
    return answer.headers["Location"]


def link_of(till, till_page: str) -> str:
    html = till.get(till_page).get_data(as_text=True)
    return unescape(re.search(r"<p class=\"visually-hidden\" data-handoff-link>([^<]+)</p>",
                              html).group(1))  # fmt: skip


def phone_opens(app, link: str):
    phone = app.test_client()
    answer = phone.get(urlsplit(link).path)
    return phone, answer


def phone_sends(phone, **fields):
    page = phone.get("/j/").get_data(as_text=True)
    data = {**VALID_FORM, **fields, **hidden_fields(page)}
    return phone.post("/j/", data={k: v for k, v in data.items() if v is not None},
                      follow_redirects=True)  # fmt: skip


def test_the_till_starts_a_handoff_and_the_phone_trades_the_token_for_a_cookie(app):
    till = english_browser(app)
    till_page = start(till)
    page = till.get(till_page)
    assert outcome_of(page) == "handoff-waiting"
    html = page.get_data(as_text=True)
    assert '<svg role="img"' in html, "the QR code, drawn on the server"
    link = link_of(till, till_page)
    token = urlsplit(link).path.removeprefix("/j/")
    assert len(token) >= 43, "at least 128 bits, unguessable"
    assert token not in till_page, "the till's own address never holds the phone's token"
    assert re.search(r"\d{3} \d{3}", text_of(page)), "a short code to type by hand"
    phone, answer = phone_opens(app, link)
    assert answer.status_code == 303 and answer.headers["Location"] == "/j/"
    assert answer.headers["Referrer-Policy"] == "no-referrer"
    form = phone.get("/j/")
    assert outcome_of(form) == "form"
    html = form.get_data(as_text=True)
    assert 'type="email"' in html and 'inputmode="email"' in html and 'type="tel"' in html
    assert token not in html
    assert 'class="phone"' in html, "laid out for a phone"


def test_a_new_person_signs_up_on_the_phone_and_the_till_shows_the_member_number(app, engine):
    till = english_browser(app)
    till_page = start(till)
    phone, _ = phone_opens(app, link_of(till, till_page))
    stale = hidden_fields(phone.get("/j/").get_data(as_text=True))
    done = phone_sends(phone, email="on.my.phone@example.com")
    assert outcome_of(done) == "thanks"
    assert "Show this screen to the cashier." in text_of(done)
    assert till.get(till_page.replace("/handoff/", "/handoff/", 1) + "/status").get_json() == {
        "status": "done"
    }
    result = till.get(till_page, follow_redirects=True)
    assert outcome_of(result) == "created"
    number = engine.contacts()[0]["attributes"]["memberNumber"]
    assert number in text_of(result)
    assert "on.my.phone" not in result.get_data(as_text=True), "nothing the customer typed"
    created = engine.requests("/api/v3/contacts", "POST")
    assert len(created) == 1 and created[0].query["source"] == ["POS"]
    assert created[0].query["storeExternalId"] == ["101"], "the till's store"
    rows = app.extensions["consent_records"].export(store="101")
    assert {r["mode"] for r in rows} == {"phone"}
    assert outcome_of(phone.get("/j/")) == "handoff-closed"
    again = phone.post("/j/", data={**VALID_FORM, "email": "second@example.com", **stale})
    assert outcome_of(again) == "handoff-closed", "one sign-up per handoff"
    assert len(engine.requests("/api/v3/contacts", "POST")) == 1


def test_a_member_reads_exactly_as_a_new_person_on_the_phone(app, engine):
    """Created and found: the same page, markup and cookies on the phone; the till knows."""
    engine.add_contact({"email": "known@example.com"})
    pages, cookies = [], []
    for email in ("brand.new@example.com", "known@example.com"):
        till = english_browser(app)
        till_page = start(till)
        phone, _ = phone_opens(app, link_of(till, till_page))
        done = phone_sends(phone, email=email)
        pages.append(done.get_data(as_text=True))
        cookies.append(sorted(c.key for c in phone._cookies.values()))
        outcome = outcome_of(till.get(till_page, follow_redirects=True))
        assert outcome == ("created" if email.startswith("brand") else "existing")
    assert pages[0] == pages[1] and cookies[0] == cookies[1]


def test_details_to_correct_come_back_to_the_phone_and_the_till_says_so(app, engine):
    till = english_browser(app)
    till_page = start(till)
    phone, _ = phone_opens(app, link_of(till, till_page))
    engine.inject("status", status=422, body="engage")
    refused = phone_sends(phone, email="typo@example.com")
    assert outcome_of(refused) in ("rejected", "invalid")
    assert till.get(till_page + "/status").get_json() == {"status": "correcting"}
    assert outcome_of(till.get(till_page)) == "handoff-waiting"
    fixed = phone_sends(phone, email="fixed@example.com")
    assert outcome_of(fixed) == "thanks"
    assert outcome_of(till.get(till_page, follow_redirects=True)) == "created"
    assert [c["attributes"]["email"] for c in engine.contacts()] == ["fixed@example.com"]


def test_engage_down_the_sign_up_is_kept_and_the_till_shows_its_reference(app, engine):
    till = english_browser(app)
    till_page = start(till)
    phone, _ = phone_opens(app, link_of(till, till_page))
    engine.inject("status", on="any", status=503, times=None)
    assert outcome_of(phone_sends(phone, email="later@example.com")) == "thanks"
    result = till.get(till_page, follow_redirects=True)
    assert outcome_of(result) == "queued"
    assert re.search(r"[A-Z2-7]{5}-[A-Z2-7]{5}", text_of(result))


def test_a_second_phone_a_cancelled_and_an_expired_handoff_are_refused_alike(app):
    till = english_browser(app)
    till_page = start(till)
    link = link_of(till, till_page)
    first, _ = phone_opens(app, link)
    assert outcome_of(first.get("/j/")) == "form"
    _, second = phone_opens(app, link)
    assert second.status_code == 410 and outcome_of(second) == "handoff-closed"
    words = text_of(second)
    other_till_page = start(till)
    other = link_of(till, other_till_page)
    cancel = till.get(other_till_page).get_data(as_text=True)
    token = re.search(r'/cancel"><input type="hidden" name="csrf_token" value="([^"]+)"',
                      cancel).group(1)  # fmt: skip
    assert till.post(other_till_page + "/cancel", data={"csrf_token": token}).status_code == 303
    _, cancelled = phone_opens(app, other)
    assert outcome_of(cancelled) == "handoff-closed" and text_of(cancelled) == words
    late_till = start(till)
    late = link_of(till, late_till)
    state = app.extensions["state"]
    clock = state.clock
    state.clock = lambda: clock() + app.config["HANDOFF_MINUTES"] * 60 + 1
    _, expired = phone_opens(app, late)
    assert outcome_of(expired) == "handoff-closed" and text_of(expired) == words
    assert first.get("/j/").status_code == 410, "the open one ran out too"
    state.clock = clock


def test_only_an_enrolled_staff_tablet_starts_or_watches_a_handoff(app):
    till = english_browser(app)
    till_page = start(till)
    kiosk = english_browser(app, mode="kiosk")
    assert "data-handoff-start" not in kiosk.get("/").get_data(as_text=True)
    assert kiosk.post("/handoff/", data={"csrf_token": "x"}).status_code in (400, 404)
    stranger = english_visitor(app)
    assert stranger.get(till_page).status_code == 404
    other_till = english_browser(app)
    assert other_till.get(till_page).status_code == 404, "another till's handoff"


def test_the_typed_code_opens_the_handoff_with_the_stores_address(app):
    till = english_browser(app)
    till_page = start(till)
    html = till.get(till_page).get_data(as_text=True)
    code = re.search(r'class="handoff__digits">(\d{3}) (\d{3})<', html).groups()
    address = re.search(r'class="handoff__address">([^<]+)<', html).group(1)
    phone = app.test_client()
    entry = phone.get(urlsplit(address).path).get_data(as_text=True)
    form = {"code": "".join(code), "csrf_token": hidden_fields(entry)["csrf_token"]}
    wrong = phone.post(urlsplit(address).path, data={**form, "code": "000000"})
    assert wrong.status_code == 400
    taken = phone.post(urlsplit(address).path, data=form)
    assert taken.status_code == 303 and taken.headers["Location"] == "/j/"
    assert outcome_of(phone.get("/j/")) == "form"


def test_handoff_minutes_0_turns_it_off(simulated_app):
    app = simulated_app(HANDOFF_MINUTES=0)
    till = english_browser(app)
    page = till.get("/").get_data(as_text=True)
    assert "data-handoff-start" not in page
    token = hidden_fields(page)["csrf_token"]
    assert till.post("/handoff/", data={"csrf_token": token}).status_code == 404
    assert app.test_client().get("/j/anything").status_code == 404
    assert app.test_client().get("/join/101").status_code == 404


def test_the_log_holds_no_handoff_token(app, caplog):
    import logging

    caplog.set_level(logging.INFO)
    till = english_browser(app)
    till_page = start(till)
    link = link_of(till, till_page)
    phone, _ = phone_opens(app, link)
    phone_sends(phone, email="quiet@example.com")
    token = urlsplit(link).path.removeprefix("/j/")
    assert token not in caplog.text
    assert "handoff" in caplog.text and "taken by a phone" in caplog.text
    assert "path=/j/ " in caplog.text or "path=/j/done" in caplog.text


@pytest.mark.shared_state
def test_the_phone_may_reach_another_machine_than_the_till(simulated_app, engine):
    """Handoffs live in the shared state: the till on one machine, the phone on another."""
    settings = {"OUTBOX_KEYS": Fernet.generate_key().decode()}
    one, two = simulated_app(**settings), simulated_app(**settings)
    till = english_browser(one)
    till_page = start(till)
    phone, answer = phone_opens(two, link_of(till, till_page))
    assert answer.status_code == 303
    assert outcome_of(phone_sends(phone, email="two.machines@example.com")) == "thanks"
    assert outcome_of(till.get(till_page, follow_redirects=True)) == "created"
    assert len(engine.requests("/api/v3/contacts", "POST")) == 1


def test_a_status_poll_is_one_cheap_read(app):
    """Waiting tills poll: the status answer reads one row and renders no page."""
    till = english_browser(app)
    till_page = start(till)
    state = app.extensions["state"]
    reads = []
    handoff = state.handoff
    state.handoff = lambda **kw: reads.append(kw) or handoff(**kw)
    answer = till.get(till_page + "/status")
    assert answer.get_json() == {"status": "waiting"} and answer.is_json
    assert reads == [{"till": till_page.rsplit("/", 1)[1]}]
    assert answer.headers["Cache-Control"] == "no-store"


def test_a_found_member_is_answered_on_the_phone_no_sooner_than_a_new_person(app, engine):
    """The phone is as private as a kiosk, in timing too: with a fake clock in which each
    Engage call takes 0.2 s (a create twice that), a member found with one call is held to a
    create's duration before the phone hears "thanks"."""
    from .test_devices import EngageClock

    clock = EngageClock(engine, app)
    for email, waits in (("new.on.phone@example.com", []), ("known@example.com", [0.4])):
        if email.startswith("known"):
            engine.add_contact({"email": email})
        till = english_browser(app)
        phone, _ = phone_opens(app, link_of(till, start(till)))
        assert outcome_of(phone_sends(phone, email=email)) == "thanks"
        assert clock.waits == [pytest.approx(w) for w in waits], email
