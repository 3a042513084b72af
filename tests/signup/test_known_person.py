"""The person at the till who is known already (issue 34): found while the cashier types, made a
member when of another contact type, completed when a member lacks what they give now. Staff
tablets only: kiosks and phones never look anyone up, promote or change anyone.

requests-mock for each exact contract with Engage; the simulator over real sockets for the
flows and faults.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import (
    CONTACT_ID,
    CREATE,
    FIND,
    KNOWN_MEMBER,
    csrf_token,
    english_browser,
    hidden_fields,
    link_of,
    member_body,
    outcome_of,
    phone_opens,
    phone_sends,
    scrape,
    start,
    submitter,
    text_of,
    value,
)
from tests.signup.test_outbox import kept, replay_all  # noqa: F401, F811 - a fixture
from webapp.engage import EngageClient

READ = f"{CREATE}/{CONTACT_ID}"
PROMOTE = f"{READ}/updateContactType"


def patches(engage_api) -> list[dict]:
    return [r.json() for r in engage_api.request_history if r.method == "PATCH"]


def no_empty_value(body) -> bool:
    if isinstance(body, dict):
        return all(v not in (None, "", [], {}) and no_empty_value(v) for v in body.values())
    if isinstance(body, list):
        return all(no_empty_value(v) for v in body)
    return True


def look_up(browser, value: str, key: str = "email", **extra):
    """What app.js does as the cashier leaves the key field: POST /lookup with the CSRF token."""
    page = browser.get("/").get_data(as_text=True)
    return browser.post("/lookup", data={"csrf_token": csrf_token(page), key: value, **extra})


def result_of(answer) -> str | None:
    match = re.search(r'data-lookup-result="([^"]+)"', answer.get_data(as_text=True))
    return match.group(1) if match else None


# --- the exact contracts (requests-mock) ----------------------------------------------------------
def test_a_member_lacking_a_mobile_number_gets_one_patch_with_only_what_is_new(submit, engage_api):
    engage_api.get(FIND, text=json.dumps(CONTACT_ID))
    engage_api.get(READ, json=member_body())
    engage_api.patch(READ, json=member_body(mobilePhone="+46701234567"))
    page = submit(mobilePhone="070-123 45 67", acceptsSms="y")
    assert outcome_of(page) == "updated"
    assert patches(engage_api) == [
        {"mobilePhone": "+46701234567", "preferences": {"acceptsSms": True}}
    ], "only the new values: never the key, never what Engage holds, never an empty one"
    assert "Mobile phone number" in text_of(page) and "999032095" in text_of(page)
    assert [r.method for r in engage_api.request_history] == ["GET", "GET", "PATCH"]


def test_a_member_for_whom_nothing_is_new_stays_existing_without_a_patch(submit, engage_api):
    engage_api.get(FIND, text=json.dumps(CONTACT_ID))
    engage_api.get(READ, json=member_body())
    assert outcome_of(submit()) == "existing"
    assert [r.method for r in engage_api.request_history] == ["GET", "GET"]


def test_a_value_engage_holds_is_replaced_only_where_the_cashier_confirmed_it(submit, engage_api):
    engage_api.get(FIND, text=json.dumps(CONTACT_ID))
    engage_api.get(READ, json=member_body(mobilePhone="+46700000001", zipCode="11122"))
    engage_api.patch(READ, json=member_body())
    page = submit(mobilePhone="0701234567", zipCode="22233")
    assert outcome_of(page) == "existing", "two values differ, neither confirmed: nothing sent"
    assert patches(engage_api) == []
    assert "Kept as the membership system holds it" in text_of(page)
    page = submit(mobilePhone="0701234567", zipCode="22233", replace="mobilePhone")
    assert outcome_of(page) == "updated"
    assert patches(engage_api) == [{"mobilePhone": "+46701234567"}]


def test_a_newsletter_contact_is_made_a_member_then_given_what_they_chose(submit, engage_api):
    subscriber = member_body(firstName="Nora", lastName=None, countryCode=None)
    subscriber["attributes"] = {k: v for k, v in subscriber["attributes"].items() if v}
    subscriber["meta"]["contactType"] = "Contact"
    subscriber["consents"] = []
    subscriber["preferences"] = {"acceptsEmail": True}
    engage_api.get(FIND, text=json.dumps(CONTACT_ID))
    engage_api.get(READ, json=subscriber)
    engage_api.post(PROMOTE, json=subscriber)
    engage_api.patch(READ, json=member_body())
    page = submit(acceptsPostal="y")
    assert outcome_of(page) == "promoted"
    history = engage_api.request_history
    assert [(r.method, r.path) for r in history][2:] == [
        ("POST", f"/api/v3/contacts/{CONTACT_ID}/updatecontacttype"),
        ("PATCH", f"/api/v3/contacts/{CONTACT_ID}"),
    ]
    assert history[2].qs == {"contacttypeid": ["member"]}
    (patch,) = patches(engage_api)
    assert set(patch) == {"lastName", "countryCode", "preferences", "consents"}
    assert "firstName" not in patch, "Engage holds a first name: it is kept"
    assert patch["preferences"] == {"acceptsPostal": True}, "acceptsEmail is held already"
    assert [c["id"] for c in patch["consents"]] == ["memberConsent"]
    assert all(c["value"] is True and c["source"] == "POS" for c in patch["consents"])
    assert no_empty_value(patch)


def test_no_patch_can_carry_an_empty_value():
    client = EngageClient("https://engage.invalid", "key", user_agent="engage-signup-test/1")
    for changes in ({}, {"mobilePhone": ""}, {"zipCode": None}, {"preferences": {}}):
        with pytest.raises(ValueError):
            client.update_contact(CONTACT_ID, changes)


def test_a_withdrawal_needs_the_lookup_to_have_shown_it_given(app, engage_api):
    """An unticked box says nothing, unless the cashier's look-up showed it ticked: then it
    is the customer withdrawing it."""
    given = member_body()
    given["preferences"] = {"acceptsEmail": True}
    engage_api.get(FIND, text=json.dumps(CONTACT_ID))
    engage_api.get(READ, json=given)
    engage_api.patch(READ, json=given)
    till = english_browser(app)
    assert outcome_of(submitter(till)()) == "existing", "not shown: nothing withdrawn"
    assert patches(engage_api) == []
    answer = look_up(till, "anna@example.com")
    assert result_of(answer) == "member"
    assert 'data-given="acceptsEmail memberConsent"' in answer.get_data(as_text=True)
    assert outcome_of(submitter(till)()) == "updated"
    assert patches(engage_api) == [{"preferences": {"acceptsEmail": False}}]


# --- the look-up: staff tablets only --------------------------------------------------------------
def test_a_lookup_shows_a_member_masked_and_is_remembered(sim_app, engine):
    engine.add_contact({**KNOWN_MEMBER, "mobilePhone": "+46701740699", "zipCode": "11122"})
    till = english_browser(sim_app)
    answer = look_up(till, "Anna@Example.com ")
    html = answer.get_data(as_text=True)
    assert result_of(answer) == "member"
    assert "Anna A. is a member." in text_of(answer)
    assert "Andersson" not in html and "+46701740699" not in html and "11122" not in html
    assert "\u2022\u2022\u2022 \u2022\u2022\u2022 99" in html, "the phone's last two digits"
    assert "data-lookup-done" in html and 'name="replace" value="mobilePhone"' in html
    number = engine.contacts()[0]["attributes"]["memberNumber"]
    assert number in html and "<svg" in html, "the member number and its barcode"
    asked = len(engine.requests())
    assert result_of(look_up(till, "anna@example.com")) == "member"
    assert len(engine.requests()) == asked, "remembered: Engage is not asked again"
    state = sim_app.extensions["state"].engine.run("SELECT sealed, id FROM lookups").rows
    assert state and all("anna" not in str(row).lower() for row in state), "sealed, hashed"


def test_a_members_wallet_card_is_asked_for_only_when_the_cashier_presses_for_it(
    simulated_app, engine
):
    from webapp.simulator.engine import DEMO_WALLET_CARD

    engine.add_contact({**KNOWN_MEMBER})
    till = english_browser(simulated_app(WALLET_CARD_ID=DEMO_WALLET_CARD))
    answer = look_up(till, "anna@example.com")
    html = answer.get_data(as_text=True)
    assert "data-lookup-wallet" in html and "data-wallet>" not in html
    assert engine.requests("/api/v3/wallet/pass/urls") == [], "the look-up is two calls"
    asked = len(engine.requests("/api/v3/contacts/id"))
    shown = look_up(till, "anna@example.com", lookup="wallet")  # app.js, on the button
    assert re.search(r'<figure class="wallet" data-wallet>\s*<svg', shown.get_data(as_text=True))
    assert "data-lookup-wallet" not in shown.get_data(as_text=True)
    assert len(engine.requests("/api/v3/wallet/pass/urls", "POST")) == 1
    assert len(engine.requests("/api/v3/contacts/id")) == asked, "the look-up was remembered"
    # Without JavaScript the button sends the form back, as "Look up" does, with the card.
    page = till.get("/").get_data(as_text=True)
    data = {"email": "anna@example.com", "zipCode": "11122", "lookup": "wallet",
            **hidden_fields(page)}  # fmt: skip
    answer = till.post("/", data=data)
    assert outcome_of(answer) == "form" and 'value="11122"' in answer.get_data(as_text=True)
    assert "data-wallet>" in answer.get_data(as_text=True)
    assert engine.requests("/api/v3/contacts", "POST") == []
    # No card configured, or someone who is not a member: no button.
    plain = english_browser(simulated_app())
    assert "data-lookup-wallet" not in look_up(plain, "anna@example.com").get_data(as_text=True)


@pytest.mark.parametrize(
    ("arrange", "result"),
    [
        (lambda e: None, "none"),
        (
            lambda e: e.add_contact(
                {
                    "contactType": "Contact",
                    "email": "anna@example.com",
                    "mobilePhone": "+46701740611",
                }
            ),
            "other-type",
        ),  # fmt: skip
        (lambda e: [e.add_contact({"email": "anna@example.com"}) for _ in range(2)], "several"),
        (lambda e: e.inject("status", on="find", status=503, times=None), "unavailable"),
    ],
)
def test_each_lookup_result_is_named(sim_app, engine, arrange, result):
    arrange(engine)
    assert result_of(look_up(english_browser(sim_app), "anna@example.com")) == result


def test_an_invalid_key_is_never_sent_and_others_than_staff_get_nothing(sim_app, engine):
    till = english_browser(sim_app)
    assert look_up(till, "anna@").status_code == 204
    assert look_up(till, "").status_code == 204
    kiosk = english_browser(sim_app, "kiosk")
    assert look_up(kiosk, "anna@example.com").status_code == 404
    assert engine.requests() == []


def test_lookups_count_against_the_devices_limit(simulated_app, engine):
    app = simulated_app(LOOKUP_LIMIT_PER_DEVICE=2)
    till = english_browser(app)
    said = [result_of(look_up(till, f"n{n}@example.com")) for n in range(3)]
    assert said == ["none", "none", "unavailable"]
    assert len(engine.requests("/api/v3/contacts/id")) == 2


def test_without_javascript_look_up_brings_the_form_back_filled_in(sim_app, engine):
    engine.add_contact({**KNOWN_MEMBER, "preferences": {"acceptsSms": True}})
    till = english_browser(sim_app)
    page = till.get("/").get_data(as_text=True)
    data = {"email": "anna@example.com", "zipCode": "11122", "lookup": "1", **hidden_fields(page)}
    answer = till.post("/", data=data)
    html = answer.get_data(as_text=True)
    assert answer.status_code == 200 and outcome_of(answer) == "form"
    assert result_of(answer) == "member"
    assert 'value="11122"' in html, "what was typed is kept"
    assert re.search(r'<input[^>]*checked[^>]*name="acceptsSms"|<input[^>]*name="acceptsSms"'
                     r'[^>]*checked', html), "what they have given is ticked"  # fmt: skip
    assert engine.requests("/api/v3/contacts", "POST") == []
    assert not [r for r in engine.requests() if r.method == "PATCH"], "a look-up changes nothing"


def test_a_form_sent_soon_after_a_lookup_that_found_a_member_reads_them_without_a_find(
    sim_app, engine
):
    engine.add_contact({**KNOWN_MEMBER})
    till = english_browser(sim_app)
    assert result_of(look_up(till, "anna@example.com")) == "member"
    before = len(engine.requests())
    assert outcome_of(submitter(till)(zipCode="11122")) == "updated"
    sent = [(r.method, r.path.rsplit("/", 1)[-1][:2]) for r in engine.requests()[before:]]
    assert [m for m, _ in sent] == ["GET", "PATCH"], "read again (not found again), then sent"
    assert sent[0][1] != "id"


# --- one round trip for a new member --------------------------------------------------------------
def test_a_form_sent_soon_after_a_lookup_that_found_nobody_is_created_at_once(sim_app, engine):
    till = english_browser(sim_app)
    assert result_of(look_up(till, "anna@example.com")) == "none"
    before = len(engine.requests())
    assert outcome_of(submitter(till)()) == "created"
    made = [(r.method, r.path) for r in engine.requests()[before:]]
    assert made == [("POST", "/api/v3/contacts")], "the look-up was the find"
    # A second form for the same key is never created on that look-up again.
    before = len(engine.requests())
    assert outcome_of(submitter(till)()) == "existing"
    assert engine.requests()[before].path == "/api/v3/contacts/id"


def test_another_device_or_an_old_lookup_does_not_stand_in_for_the_find(sim_app, engine):
    till, other = english_browser(sim_app), english_browser(sim_app)
    look_up(till, "anna@example.com")
    before = len(engine.requests())
    assert outcome_of(submitter(other)()) == "created"
    assert engine.requests()[before].path == "/api/v3/contacts/id"


def test_someone_created_between_the_lookup_and_the_form_is_found_not_doubled(sim_app, engine):
    till = english_browser(sim_app)
    assert result_of(look_up(till, "anna@example.com")) == "none"
    engine.add_contact(KNOWN_MEMBER)  # the web shop, meanwhile
    page = submitter(till)()
    assert outcome_of(page) == "existing", "409 on create: found, and nothing new to add"
    assert len(engine.contacts()) == 1
    assert [r.status for r in engine.requests("/api/v3/contacts", "POST")] == [409]


def test_after_a_create_in_doubt_the_next_attempt_starts_with_a_find(sim_app, engine):
    till = english_browser(sim_app)
    assert result_of(look_up(till, "anna@example.com")) == "none"
    engine.inject("drop", on="create", after_commit=True, times=1)
    first = submitter(till)()
    assert outcome_of(first) in ("created", "queued", "timeout", "unavailable")
    assert result_of(look_up(till, "anna@example.com")) in ("member", "none")
    before = len(engine.requests())
    submitter(till)()
    assert engine.requests()[before].path == "/api/v3/contacts/id", "a find first, always"
    assert len(engine.contacts()) == 1, "never a duplicate"


# --- flows over real sockets ----------------------------------------------------------------------
def test_the_training_newsletter_subscriber_becomes_a_member_once(sim_app, engine):
    subscriber = engine.add_contact({"contactType": "Contact", "firstName": "Nora",
                                     "email": "anna@example.com", "mobilePhone": "+46701740607",
                                     "preferences": {"acceptsEmail": True}})  # fmt: skip
    till = english_browser(sim_app)
    answer = look_up(till, "anna@example.com")
    assert result_of(answer) == "other-type"
    assert 'data-given="acceptsEmail"' in answer.get_data(as_text=True)
    # The look-up ticked what they have given (app.js); the customer adds text messages.
    page = submitter(till)(acceptsEmail="y", acceptsSms="y")
    assert outcome_of(page) == "promoted"
    (contact,) = engine.contacts()
    assert contact["id"] == subscriber["id"] and contact["meta"]["contactType"] == "Member"
    assert contact["attributes"]["firstName"] == "Nora", "what Engage held is kept"
    assert contact["attributes"]["lastName"] == "Andersson", "what it lacked is added"
    assert contact["preferences"]["acceptsEmail"] is True
    assert contact["preferences"]["acceptsSms"] is True
    assert [c["id"] for c in contact["consents"]] == ["memberConsent"]
    assert not any(r.warnings for r in engine.requests()), "no empty value ever overwrote"
    records = sim_app.extensions["state"].consent_deliveries(
        [r for (r,) in sim_app.extensions["state"].engine.run(
            "SELECT DISTINCT submission FROM consent_records").rows]
    )  # fmt: skip
    assert [d["state"] for d in records] == ["sent"]
    assert [d["contact_id"] for d in records] == [subscriber["id"]]


def test_engage_down_keeps_a_promotion_and_its_replay_does_only_what_is_left(kept, engine):  # noqa: F811
    app = kept()
    subscriber = engine.add_contact({"contactType": "Contact", "email": "anna@example.com",
                                     "mobilePhone": "+46701740607"})  # fmt: skip
    engine.inject("status", on="update", status=503, times=1)
    page = submitter(english_browser(app))()
    assert outcome_of(page) == "queued"
    assert len(engine.requests(method="POST")) == 1, "the type was changed, the PATCH failed"
    assert replay_all(app) == ["updated"]
    promotes = [r for r in engine.requests() if r.path.endswith("/updateContactType")]
    assert len(promotes) == 1, "never twice"
    patched = [r for r in engine.requests() if r.method == "PATCH"]
    assert [r.status for r in patched] == [503, 200]
    (contact,) = engine.contacts()
    assert contact["id"] == subscriber["id"] and contact["meta"]["contactType"] == "Member"
    assert contact["attributes"]["lastName"] == "Andersson"


def test_a_contact_changed_between_the_lookup_and_the_patch_keeps_its_new_value(sim_app, engine):
    member = engine.add_contact({**KNOWN_MEMBER})
    till = english_browser(sim_app)
    answer = look_up(till, "anna@example.com")
    assert 'value="mobilePhone"' not in answer.get_data(as_text=True), "no mobile number held"
    engine.update(member["id"], {"mobilePhone": "+46709999999"})  # the member app, meanwhile
    page = submitter(till)(mobilePhone="0701234567", zipCode="11122")
    assert outcome_of(page) == "updated"
    (contact,) = engine.contacts()
    assert contact["attributes"]["mobilePhone"] == "+46709999999", "never replaced unconfirmed"
    assert contact["attributes"]["zipCode"] == "111 22"
    (patch,) = [r.body for r in engine.requests() if r.method == "PATCH"]
    assert patch == {"zipCode": "111 22"}


def test_a_patch_that_engage_refuses_brings_the_form_back_marked(sim_app, engine):
    engine.add_contact(KNOWN_MEMBER)
    engine.inject("status", on="update", status=422, times=1)
    page = submitter(english_browser(sim_app))(zipCode="11122")
    assert outcome_of(page) == "rejected"


# --- public screens: never ------------------------------------------------------------------------
def test_kiosks_and_phones_never_look_up_promote_or_change_anyone(simulated_app, engine):
    app = simulated_app(ANSWER_PRIOR_SECONDS=0.25)
    engine.add_contact({"contactType": "Contact", "email": "newsletter@example.com",
                        "mobilePhone": "+46701740607"})  # fmt: skip
    engine.add_contact({"email": "incomplete@example.com", "firstName": "Ines"})
    kiosk = english_browser(app, "kiosk")
    for email in ("newsletter@example.com", "incomplete@example.com"):
        page = submitter(kiosk)(email=email, mobilePhone="0701234567", lookup="1",
                                replace="firstName")  # fmt: skip
        assert outcome_of(page) == "thanks"
    till = english_browser(app)
    till_page = start(till)
    phone, _ = phone_opens(app, link_of(till, till_page))
    assert outcome_of(phone_sends(phone, email="incomplete@example.com",
                                  mobilePhone="0701234567")) == "thanks"  # fmt: skip
    assert look_up(kiosk, "incomplete@example.com").status_code == 404
    sent = [(r.method, r.path) for r in engine.requests()]
    assert not [s for s in sent if s[0] == "PATCH" or s[1].endswith("/updateContactType")]
    assert not [s for s in sent if re.fullmatch(r"/api/v3/contacts/[0-9a-f-]{36}", s[1])]
    assert {c["meta"]["contactType"] for c in engine.contacts()} == {"Contact", "Member"}


# --- counted everywhere ---------------------------------------------------------------------------
def test_promoted_and_updated_are_counted_in_metrics_and_the_managers_figures(
    simulated_app, engine
):
    app = simulated_app(METRICS=True)
    engine.add_contact({"contactType": "Contact", "email": "n@example.com",
                        "mobilePhone": "+46701740607"})  # fmt: skip
    engine.add_contact({"email": "i@example.com"})
    till = english_browser(app)
    before = scrape(till)
    assert outcome_of(submitter(till)(email="n@example.com")) == "promoted"
    assert outcome_of(submitter(till)(email="i@example.com")) == "updated"
    look_up(till, "x@example.com")
    after = scrape(till)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    for name in ("promoted", "updated"):
        assert grew("engage_signup_signups_total", outcome=name, store="101", mode="staff") == 1
    assert grew("engage_signup_lookups_total", result="none", store="101", source="engage") == 1
    assert grew("engage_signup_engage_calls_total", endpoint="promote", status="200",
                token="-") == 1  # fmt: skip
    assert grew("engage_signup_engage_calls_total", endpoint="update", status="200",
                token="-") == 2  # fmt: skip
    counts = app.extensions["state"].event_counts(None, 0)
    assert {r["outcome"] for r in counts} >= {"promoted", "updated"}
