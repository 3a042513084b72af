"""Scan to join (issue #24): the till starts a handoff, the customer signs up on their own
phone through the same submission as the till's, and the till gets the answer."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet

from tests.conftest import (
    VALID_FORM,
    EngageClock,
    english_browser,
    english_visitor,
    hidden_fields,
    link_of,
    outcome_of,
    phone_opens,
    phone_sends,
    reveal,
    samples,
    start,
    text_of,
    value,
)


@pytest.fixture
def app(simulated_app):
    return simulated_app(OUTBOX_KEYS=Fernet.generate_key().decode(), ENGAGE_RETRY_SECONDS=0)


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
    assert re.search(r"\d{3} \d{3} \d{3}", text_of(page)), "a short code to type by hand"
    phone, answer = phone_opens(app, link)
    assert answer.status_code == 303 and answer.headers["Location"] == "/j/"
    assert answer.headers.getlist("Referrer-Policy") == ["no-referrer"], "one, not two"
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
    result = reveal(till, till_page)
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
        outcome = outcome_of(reveal(till, till_page))
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
    assert outcome_of(reveal(till, till_page)) == "created"
    assert [c["attributes"]["email"] for c in engine.contacts()] == ["fixed@example.com"]


def test_engage_down_the_sign_up_is_kept_and_the_till_shows_its_reference(app, engine):
    till = english_browser(app)
    till_page = start(till)
    phone, _ = phone_opens(app, link_of(till, till_page))
    engine.inject("status", on="any", status=503, times=None)
    assert outcome_of(phone_sends(phone, email="later@example.com")) == "thanks"
    result = reveal(till, till_page)
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
    code = re.search(r'class="handoff__digits">(\d{3}) (\d{3}) (\d{3})<', html).groups()
    address = re.search(r'class="handoff__address">([^<]+)<', html).group(1)
    phone = app.test_client()
    entry = phone.get(urlsplit(address).path).get_data(as_text=True)
    form = {"code": "".join(code), "csrf_token": hidden_fields(entry)["csrf_token"]}
    wrong = phone.post(urlsplit(address).path, data={**form, "code": "000 000 000"})
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
    assert outcome_of(reveal(till, till_page)) == "created"
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


def test_the_tills_screen_shows_nothing_of_the_phones_sign_up_until_the_cashier_asks(
    simulated_app, engine
):
    """The till faces the customer while they scan, and whoever typed an address on the phone
    may stand there. After the phone's sign-up the till says only that the customer is done;
    its markup holds no outcome, number, name or card. "Show result" (a POST, as without
    JavaScript): for a found member the member number read from Engage now (never Engage's
    contact id), with its barcode, and "Astrid L." to ask; no wallet card for a found member."""
    app = simulated_app(OUTBOX_KEYS=Fernet.generate_key().decode(),
                        WALLET_CARD_ID="3fa85f64-5717-4562-b3fc-2c963f66afa6")  # fmt: skip
    engine.wallet_cards.add("3fa85f64-5717-4562-b3fc-2c963f66afa6")
    member = engine.add_contact({"email": "astrid@example.com", "firstName": "Astrid",
                                 "lastName": "Lindgren"})  # fmt: skip
    number = member["attributes"]["memberNumber"]
    till = english_browser(app)
    till_page = start(till)
    phone, _ = phone_opens(app, link_of(till, till_page))
    assert outcome_of(phone_sends(phone, email="astrid@example.com")) == "thanks"
    waiting = till.get(till_page)
    html = waiting.get_data(as_text=True)
    assert outcome_of(waiting) == "handoff-done"
    assert "Signed up on the phone" in text_of(waiting)
    for secret in (number, member["id"], "Astrid", "data-wallet", "<svg", "existing"):
        assert secret not in html, secret
    assert not [c for c in till._cookies.values() if c.key == "result"], "no result cookie yet"
    shown = reveal(till, till_page)
    assert outcome_of(shown) == "existing"
    html = shown.get_data(as_text=True)
    assert number in text_of(shown) and 'aria-label="Member number as a barcode"' in html
    assert "Astrid L." in text_of(shown) and "Lindgren" not in html
    assert member["id"] not in html, "never Engage's contact id"
    assert "data-wallet" not in html, "a found member has their card already"
    assert not engine.requests("/api/v3/wallet/pass/urls", "POST")
    new_till = english_browser(app)
    new_page = start(new_till)
    phone, _ = phone_opens(app, link_of(new_till, new_page))
    phone_sends(phone, email="brand.new.card@example.com")
    created = reveal(new_till, new_page)
    assert outcome_of(created) == "created" and "data-wallet" in created.get_data(as_text=True)


def test_a_member_and_a_new_person_are_released_at_one_moment_on_the_phone(app, engine):
    """The phone is as private as a kiosk, in timing too: with a fake clock in which each
    Engage call takes 0.2 s (a create twice that), the new person (0.6 s) and the member found
    with one call (0.2 s) are both released at the target fixed before Engage was asked."""
    from webapp.signup.padding import PRIOR_SECONDS

    clock = EngageClock(engine, app)
    for email, took in (("new.on.phone@example.com", 0.6), ("known@example.com", 0.2)):
        if email.startswith("known"):
            engine.add_contact({"email": email})
        till = english_browser(app)
        phone, _ = phone_opens(app, link_of(till, start(till)))
        assert outcome_of(phone_sends(phone, email=email)) == "thanks"
        assert took + clock.waits[-1] == pytest.approx(PRIOR_SECONDS), email
    assert len(clock.waits) == 2, "the create waited too"


def _phone_twin(app, phone):
    """Another browser tab (or another machine's client) with `phone`'s cookies."""
    twin = app.test_client()
    twin.environ_base.update(phone.environ_base)
    for cookie in phone._cookies.values():
        twin.set_cookie(cookie.key, cookie.value, domain=cookie.domain, path=cookie.path)
    return twin


@pytest.mark.shared_state
def test_one_code_makes_one_sign_up_however_many_sends_race_on_two_machines(simulated_app, engine):
    """The attack: a phone loads its form eight times and sends them all at once, half to each
    machine. The handoff is claimed in the shared state before anything else happens to it:
    exactly one create per handoff, twenty rounds; the others read the first one's "thanks"
    (a double tap) or that the code is used."""
    import threading

    settings = {"OUTBOX_KEYS": Fernet.generate_key().decode(), "SUBMIT_LIMIT_PER_ADDRESS": 10000}
    machines = [simulated_app(**settings), simulated_app(**settings)]
    for machine in machines:  # the padding's waits are another test's: here only the race
        machine.extensions["answer_times"].sleep = lambda seconds: None
    engine.latency = 0.02  # every request is in flight while the others arrive
    for round_ in range(20):
        till = english_browser(machines[0])
        link = link_of(till, start(till))
        phone = machines[1].test_client()
        phone.environ_base["REMOTE_ADDR"] = f"127.0.{round_}.1"  # a phone's own limit a round
        phone.get(urlsplit(link).path)
        tabs = [_phone_twin(machines[n % 2], phone) for n in range(8)]
        forms = [hidden_fields(tab.get("/j/").get_data(as_text=True)) for tab in tabs]
        ready, answers = threading.Barrier(8), [None] * 8

        def send(n, tab, form, email, ready=ready, answers=answers):
            data = {**VALID_FORM, "email": email, **form}
            ready.wait()
            answers[n] = tab.post("/j/", data=data, follow_redirects=True)

        email = f"race{round_}@example.com"
        threads = [threading.Thread(target=send, args=(n, tabs[n], forms[n], email))
                   for n in range(8)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        creates = [r for r in engine.requests("/api/v3/contacts", "POST")
                   if f"race{round_}@" in str(r.body)]  # fmt: skip
        assert len(creates) == 1, f"round {round_}: {len(creates)} creates from one handoff"
        outcomes = sorted(outcome_of(answer) for answer in answers)
        assert set(outcomes) <= {"thanks", "handoff-closed"}, outcomes
        assert outcomes.count("thanks") >= 1


def test_a_phone_that_keeps_its_cookie_cannot_sign_up_twice_but_a_double_tap_reads_thanks(
    app, engine
):
    """After its sign-up the phone still holds its handoff cookie (the thank-you page was never
    opened): the same form sent again (a double tap, a reload) reads the first answer, thanks;
    a form loaded again, or one loaded before, finds the code used; no second create."""
    till = english_browser(app)
    phone, _ = phone_opens(app, link_of(till, start(till)))
    earlier = hidden_fields(phone.get("/j/").get_data(as_text=True))
    sent = {**VALID_FORM, "email": "kept.cookie@example.com",
            **hidden_fields(phone.get("/j/").get_data(as_text=True))}  # fmt: skip
    first = phone.post("/j/", data=sent)
    assert first.status_code == 303 and first.headers["Location"] == "/j/done"
    again = phone.post("/j/", data=sent)
    assert again.status_code == 303 and outcome_of(phone.get("/j/done")) == "thanks"
    assert outcome_of(phone.get("/j/")) == "handoff-closed"
    other = phone.post("/j/", data={**sent, "email": "someone.else@example.com", **earlier})
    assert outcome_of(other) == "handoff-closed"
    assert len(engine.requests("/api/v3/contacts", "POST")) == 1


def _typed_code(till, till_page: str) -> tuple[str, str]:
    html = till.get(till_page).get_data(as_text=True)
    code = "".join(re.search(r'class="handoff__digits">([\d ]+)<', html).group(1).split())
    address = urlsplit(re.search(r'class="handoff__address">([^<]+)<', html).group(1)).path
    return code, address


def _type(app, address: str, code: str, source: str):
    phone = app.test_client()
    phone.environ_base["REMOTE_ADDR"] = source
    entry = phone.get(address + "?lang=en", follow_redirects=True).get_data(as_text=True)
    return phone.post(address, data={"code": code, **hidden_fields(entry)})


def test_strangers_wrong_codes_do_not_stop_a_waiting_customers_right_code(app):
    """The attack: a few tries a minute from a few addresses shut typed codes for the whole
    store for ten minutes. Now the store's wrong codes shut out only the addresses that typed
    them: a customer's phone, which has typed none, still opens its handoff."""
    from webapp.pages.handoff import CODE_LIMIT, STORE_WRONG

    till = english_browser(app)
    code, address = _typed_code(till, start(till))
    wrong = f"{(int(code) + 1) % 10**9:09d}"
    strangers = [f"198.51.100.{n}" for n in range(STORE_WRONG // CODE_LIMIT[0] + 1)]
    for source in strangers:
        for _ in range(CODE_LIMIT[0]):
            assert _type(app, address, wrong, source).status_code == 400
    refused = _type(app, "/join/101", wrong, "203.0.113.9")
    assert refused.status_code == 400 and "That code is not valid" in text_of(refused), (
        "an address that has typed no wrong code is still heard"
    )
    again = _type(app, "/join/101", wrong, "203.0.113.9")
    assert "Too many tries" in text_of(again), "past the store's wrong codes, one wrong is out"
    customer = _type(app, address, code, "192.0.2.44")
    assert customer.status_code == 303 and customer.headers["Location"] == "/j/"


def test_a_typed_code_opens_only_a_handoff_of_the_store_in_the_address(app):
    """The right code of a handoff made at store 101, typed at another store's address."""
    till = english_browser(app)
    code, address = _typed_code(till, start(till))
    assert address == "/join/101"
    elsewhere = _type(app, "/join/201", code, "192.0.2.45")
    assert elsewhere.status_code == 400 and "That code is not valid" in text_of(elsewhere)
    assert _type(app, address, code, "192.0.2.45").status_code == 303


def test_past_the_stores_ceiling_code_entry_rests_for_everyone(app, monkeypatch):
    """What bounds guessing however many addresses an attacker has: the store's tries in ten
    minutes. With the ceiling made tiny here, the next try is refused even from a new address,
    and even with the right code (the QR code still works)."""
    import webapp.pages.handoff as handoff

    monkeypatch.setattr(handoff, "store_ceiling", lambda minutes: 3)
    till = english_browser(app)
    code, address = _typed_code(till, start(till))
    for n in range(3):
        assert _type(app, address, "111222333", f"198.51.100.{n}").status_code == 400
    resting = _type(app, address, code, "192.0.2.46")
    assert "Too many tries" in text_of(resting)


def test_the_typed_codes_figures_keep_a_guess_under_one_in_ten_thousand():
    """The README's figures: the chance that any try finds a given live handoff, times the
    tries a handoff's whole life can meet, for every HANDOFF_MINUTES the settings allow."""
    import math

    from webapp.pages.handoff import CODE_DIGITS, GUESS_CHANCE, store_ceiling

    assert store_ceiling(10) == 25_000
    for minutes in range(1, 61):
        windows = math.ceil(minutes / 10) + 1
        assert windows * store_ceiling(minutes) / 10**CODE_DIGITS <= GUESS_CHANCE / 2


def test_the_code_entry_limits_count_an_ipv6_subscriber_as_one(app):
    """An IPv6 subscriber has a whole /64: each of its addresses is the same one to the limits."""
    from webapp.pages.handoff import CODE_LIMIT

    for n in range(CODE_LIMIT[0]):
        assert _type(app, "/join/101", "111222333", f"2001:db8:1:2::{n + 1:x}").status_code == 400
    last = _type(app, "/join/101", "111222333", "2001:db8:1:2::ffff")
    assert "Too many tries" in text_of(last)
    other = _type(app, "/join/101", "111222333", "2001:db8:1:3::1")
    assert "That code is not valid" in text_of(other), "another subscriber"


def test_the_phones_sign_up_counts_for_the_tills_store_not_the_default_one(app, engine):
    """STORE_EXTERNAL_ID is 101; the till is enrolled at 201 (Helsinki): the create, the
    consent record and the metrics say 201 for the phone's sign-up."""
    from tests.conftest import enrol

    assert app.config["STORE_EXTERNAL_ID"] == "101"

    def scraped() -> dict:
        text = app.test_client().get("/metrics", environ_base={"REMOTE_ADDR": "127.0.0.1"})
        return samples(text.get_data(as_text=True))

    before = scraped()
    till = enrol(app.test_client(), app, "staff", "201")
    till.get("/?lang=en")
    phone, _ = phone_opens(app, link_of(till, start(till)))
    assert outcome_of(phone_sends(phone, email="helsinki.phone@example.com")) == "thanks"
    (create,) = engine.requests("/api/v3/contacts", "POST")
    assert create.query["storeExternalId"] == ["201"]
    assert {r["store"] for r in app.extensions["consent_records"].export(store="201")} == {"201"}
    assert app.extensions["consent_records"].export(store="101") == []
    after, total = scraped(), "engage_signup_signups_total"

    def grew(store: str) -> float:
        labels = {"outcome": "created", "store": store, "mode": "phone"}
        return value(after, total, **labels) - value(before, total, **labels)

    assert grew("201") == 1 and grew("101") == 0


def test_the_customers_own_phone_may_fill_in_what_it_knows_the_shared_screens_never(app):
    """The phone is the customer's: the standard autofill tokens, so it can offer their saved
    e-mail, name, mobile, country, birthday and postcode. The till and the kiosk are shared:
    every field stays out of the browser's autofill store."""
    till = english_browser(app)
    phone, _ = phone_opens(app, link_of(till, start(till)))
    html = phone.get("/j/").get_data(as_text=True)
    found = {name: token for token, name in re.findall(
        r'<(?:input|select)\b[^>]*\bautocomplete="([^"]+)"[^>]*\bid="(\w+)"', html)}  # fmt: skip
    assert found == {"email": "email", "firstName": "given-name", "lastName": "family-name",
                     "countryCode": "country", "mobilePhone": "tel", "birthDay": "bday",
                     "zipCode": "postal-code"}  # fmt: skip
    assert re.search(r'<form id="signup"[^>]*autocomplete="on"', html)
    for shared in (english_browser(app), english_browser(app, mode="kiosk")):
        page = shared.get("/").get_data(as_text=True)
        assert re.search(r'<form id="signup"[^>]*autocomplete="off"', page)
        assert set(re.findall(r'<(?:input|select)\b[^>]*\bautocomplete="([^"]+)"', page)) == {"off"}


def test_the_stores_short_address_speaks_the_phones_language_else_the_stores(app):
    """/join/201 (Helsinki) opened in Swedish for everyone. Now: the phone's own language when
    it is one of the five, else the store's (known from its handoffs); a used or unknown code's
    page likewise; a phone that chose a language keeps it."""
    from tests.conftest import enrol

    for store in ("201", "301"):
        till = enrol(app.test_client(), app, "staff", store)
        start(till)
    german = {"Accept-Language": "de-DE,de;q=0.9"}
    helsinki = app.test_client().get("/join/201", headers=german)
    assert '<html lang="fi"' in helsinki.get_data(as_text=True), "the store's language"
    oslo = app.test_client().get("/join/301", headers=german)
    assert '<html lang="nb"' in oslo.get_data(as_text=True)
    danish = app.test_client().get("/join/201", headers={"Accept-Language": "da-DK,da"})
    assert '<html lang="da"' in danish.get_data(as_text=True), "the phone's own, one of ours"
    unknown = app.test_client().get("/j/" + "x" * 43, headers={"Accept-Language": "fi-FI"})
    assert outcome_of(unknown) == "handoff-closed" and '<html lang="fi"' in unknown.get_data(True)
    chose = app.test_client()
    chose.get("/join/201?lang=en", headers=german, follow_redirects=True)
    assert '<html lang="en"' in chose.get("/join/201", headers=german).get_data(as_text=True)


def test_a_phone_has_its_own_minutes_from_taking_the_code_and_loses_nothing_when_they_end(app):
    """Once a phone has taken the code (a photo of the screen is then worth nothing), its
    HANDOFF_MINUTES run from that moment; its form says how long it has (for the warning a
    minute before the end); and if they run out as it sends the form, what it typed comes back
    in the form of the next code the cashier starts."""
    state = app.extensions["state"]
    clock = state.clock
    minutes = app.config["HANDOFF_MINUTES"]
    try:
        now = clock()
        state.clock = lambda: now
        till = english_browser(app)
        link = link_of(till, start(till))
        now += minutes * 60 - 30  # the code sat on the till for most of its minutes
        phone, taken = phone_opens(app, link)
        assert taken.status_code == 303
        form = phone.get("/j/").get_data(as_text=True)
        assert f'data-seconds-left="{minutes * 60}"' in form, "the phone's own minutes"
        assert "data-expiry-warning" in form and "@@" not in form
        now += minutes * 60 - 60
        assert 'data-seconds-left="60"' in phone.get("/j/").get_data(as_text=True)
        now += 61  # its minutes ran out while the customer typed
        typed = {**VALID_FORM, "email": "slow.typist@example.com", "firstName": "Sakari",
                 **hidden_fields(form)}  # fmt: skip
        late = phone.post("/j/", data=typed)
        assert late.status_code == 410 and outcome_of(late) == "handoff-closed"
        assert "data-kept" in late.get_data(as_text=True)
        new_till_page = start(till)
        phone.get(urlsplit(link_of(till, new_till_page)).path)
        again = phone.get("/j/").get_data(as_text=True)
        assert 'value="slow.typist@example.com"' in again and 'value="Sakari"' in again
    finally:
        state.clock = clock


def test_the_phones_address_is_the_public_one_not_the_one_the_till_used(simulated_app):
    """Tills often reach the app by an internal name a customer's phone cannot reach: the QR
    code and the store's short address are built on PUBLIC_URL."""
    from tests.conftest import enrol

    app = simulated_app(PUBLIC_URL="https://join.acme.example")
    internal = "http://till-7.store.lan"
    till = enrol(app.test_client(), app, domain="till-7.store.lan")
    form = till.get("/", base_url=internal).get_data(as_text=True)
    token = re.search(r'action="/handoff/"[^>]*>\s*<input type="hidden" name="csrf_token" '
                      r'value="([^"]+)"', form).group(1)  # fmt: skip
    page = till.post("/handoff/", data={"csrf_token": token}, base_url=internal)
    html = till.get(page.headers["Location"], base_url=internal).get_data(as_text=True)
    link = unescape(re.search(r"data-handoff-link[^>]*>([^<]+)<", html).group(1))
    assert link.startswith("https://join.acme.example/j/")
    assert re.search(r'class="handoff__address">https://join\.acme\.example/join/101<', html)
    assert "till-7.store.lan" not in html


def test_without_a_public_address_scan_to_join_is_off_and_says_why(simulated_app, caplog):
    """Outside training, with no PUBLIC_URL there is no address to give a phone: no button, no
    phone pages, and one WARNING at start naming the setting. In training the till's own
    address serves (a phone on the same network)."""
    import logging

    caplog.set_level(logging.WARNING)
    app = simulated_app(PUBLIC_URL="")
    assert "scan to join is off: set PUBLIC_URL" in caplog.text
    assert "data-handoff-start" not in english_browser(app).get("/").get_data(as_text=True)
    assert app.test_client().get("/join/101").status_code == 404
    assert app.test_client().get("/j/" + "x" * 43).status_code == 404
    training = simulated_app(PUBLIC_URL="", TRAINING_MODE=True, HTTPS=False)
    till = english_browser(training)
    link = link_of(till, start(till))
    assert link.startswith("http://localhost/j/"), "in training, the address the till used"


def test_a_public_address_must_be_https_outside_training(app_config):
    from webapp import ConfigError, create_app

    for wrong in ("http://join.acme.example", "https://join.acme.example/phone"):
        with pytest.raises(ConfigError) as refused:
            create_app({**app_config, "HTTPS": True, "PUBLIC_URL": wrong})
        assert refused.value.key == "PUBLIC_URL"
