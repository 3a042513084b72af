"""The signup flow end to end against the Engage simulator, over real HTTP."""

from __future__ import annotations

import threading

import pytest

from tests.conftest import (
    KNOWN_MEMBER,
    VALID_FORM,
    english_browser,
    outcome_of,
    submitter,
    text_of,
)

CREATE_PATH = "/api/v3/contacts"
FIND_PATH = "/api/v3/contacts/id"


def calls(engine):
    return [(r.method, r.path) for r in engine.requests()]


def people_with(engine, email):
    return [c for c in engine.contacts() if (c["attributes"]["email"] or "").lower() == email]


def test_created_the_contact_is_stored_as_the_person_gave_it(sim_submit, engine):
    page = sim_submit(
        {**VALID_FORM, "mobilePhone": "0701234567", "birthDay": "1990-01-31", "acceptsEmail": "y"}
    )
    assert outcome_of(page) == "created"
    (contact,) = engine.contacts()
    assert f"Member number {contact['attributes']['memberNumber']}" in text_of(page)
    assert contact["attributes"]["mobilePhone"] == "+46701234567"
    assert contact["attributes"]["country"] == "Sweden"
    assert contact["attributes"]["currentStore"]["externalId"] == "101"
    assert contact["meta"]["approved"] is True
    assert contact["preferences"] == {
        "acceptsEmail": True,
        "acceptsSms": False,
        "acceptsPostal": False,
    }
    assert [c["id"] for c in contact["consents"]] == ["memberConsent"]
    assert calls(engine) == [("GET", FIND_PATH), ("POST", CREATE_PATH)]
    create = engine.requests(CREATE_PATH)[0]
    assert create.warnings == [], "the client sent nothing Engage would frown upon"
    assert create.query == {"source": ["POS"], "storeExternalId": ["101"]}
    assert create.headers["User-Agent"].startswith("engage-signup/")


def test_existing_someone_already_there_is_not_created_again(sim_submit, engine):
    contact = engine.add_contact(KNOWN_MEMBER)
    page = sim_submit()
    assert outcome_of(page) == "existing"
    assert f"Member number {contact['attributes']['memberNumber']}" in text_of(page)
    assert len(engine.contacts()) == 1
    assert calls(engine) == [("GET", FIND_PATH), ("GET", f"{CREATE_PATH}/{contact['id']}")]


def test_ambiguous_several_matches_send_the_person_to_staff(sim_submit, engine):
    engine.add_contact({"email": "anna@example.com"})
    engine.add_contact({"email": "anna@example.com"})
    page = sim_submit()
    assert outcome_of(page) == "ambiguous"
    assert len(engine.contacts()) == 2


def test_rejected_engage_refuses_a_field_and_the_form_comes_back(sim_submit, engine):
    engine.inject("status", status=422)
    page = sim_submit()
    assert outcome_of(page) == "rejected"
    assert 'value="anna@example.com"' in page.get_data(as_text=True)
    assert '<a href="#firstName">' in page.get_data(as_text=True)
    assert engine.contacts() == []


def test_timeout_engage_gives_up_after_its_own_limit_and_nothing_is_saved(sim_submit, engine):
    engine.inject("latency", seconds=1.2)  # over the simulator's 1.0 s create limit
    page = sim_submit()
    assert outcome_of(page) == "timeout"
    assert "Nothing was saved. Send again" in text_of(page)
    assert engine.contacts() == []
    assert [r.status for r in engine.requests()] == [404, 504]


def test_unavailable_engage_failing_leaves_the_form_filled_in(sim_submit, engine):
    engine.inject("status", on="find", status=500, times=3)
    page = sim_submit()
    assert outcome_of(page) == "unavailable"
    assert "Finish the purchase without a member" in text_of(page)
    assert 'value="Anna"' in page.get_data(as_text=True)
    assert engine.requests(CREATE_PATH) == []


def test_unavailable_when_engage_refuses_the_api_key(sim_app, simulator, engine):
    engine.api_key = "the-right-key"
    page = _submit_once(sim_app)
    assert outcome_of(page) == "unavailable"
    assert [r.status for r in engine.requests()] == [401]


def test_unavailable_when_engage_rate_limits(sim_submit, engine):
    engine.rate_limit = 0.001
    engine.over_rate("test-api-key-not-secret")  # spend the only token
    page = sim_submit()
    assert outcome_of(page) == "unavailable"
    assert [r.status for r in engine.requests()] == [429]


def test_in_progress_while_another_create_for_the_same_person_runs(sim_app, engine):
    engine.inject("latency", on="create", seconds=0.6)
    first = threading.Thread(target=_submit_once, args=(sim_app,))
    first.start()
    _wait_for(lambda: engine.requests(CREATE_PATH))
    page = _submit_once(sim_app)
    first.join()
    assert outcome_of(page) == "in-progress", [r.status for r in engine.requests()]
    assert len(people_with(engine, "anna@example.com")) == 1


def test_two_concurrent_submissions_of_the_same_person_make_exactly_one_contact(sim_app, engine):
    engine.latency = 0.05
    outcomes = []
    barrier = threading.Barrier(2)

    def person_at_a_till():
        barrier.wait()
        outcomes.append(outcome_of(_submit_once(sim_app)))

    tills = [threading.Thread(target=person_at_a_till) for _ in range(2)]
    for till in tills:
        till.start()
    for till in tills:
        till.join()
    assert len(people_with(engine, "anna@example.com")) == 1
    assert "created" in outcomes
    assert set(outcomes) <= {"created", "in-progress", "existing"}


@pytest.mark.parametrize(
    ("fault", "after_commit", "outcome", "stored"),
    [
        ("drop", True, "created", 1),  # the contact was made, then the answer was lost
        ("drop", False, "unavailable", 0),  # lost before Engage did anything
        ("hang", True, "created", 1),  # made, but the answer never came
        ("hang", False, "timeout", 0),  # nothing happened and nothing came back
    ],
)
def test_a_lost_answer_on_create_is_resolved_by_looking_up_never_by_posting_again(
    sim_submit, engine, fault, after_commit, outcome, stored
):
    engine.inject(fault, on="create", after_commit=after_commit, seconds=5)
    page = sim_submit()
    assert outcome_of(page) == outcome
    assert len(engine.contacts()) == stored
    assert calls(engine) == [("GET", FIND_PATH), ("POST", CREATE_PATH), ("GET", FIND_PATH)]


def test_a_gateway_error_after_commit_still_ends_as_created(sim_submit, engine):
    engine.inject("status", status=502, after_commit=True)
    page = sim_submit()
    assert outcome_of(page) == "created"
    assert len(engine.contacts()) == 1


def test_trying_again_after_a_timeout_creates_the_person_once(sim_submit, engine):
    engine.inject("latency", seconds=1.2)
    assert outcome_of(sim_submit()) == "timeout"
    assert outcome_of(sim_submit()) == "created"
    assert len(people_with(engine, "anna@example.com")) == 1


def test_connections_to_engage_are_reused_across_signups(sim_submit, engine, simulator):
    for n in range(5):
        sim_submit(email=f"person{n}@example.com")
    assert len(engine.contacts()) == 5
    assert len(engine.requests()) == 10
    assert simulator.connections_opened == 1


def test_the_simulators_handshake_delay_is_paid_once_per_connection(engine, simulator):
    """--connect-latency: each new connection waits once before its first request is read
    (the handshakes to a real tenant); the requests that follow on it do not."""
    import requests

    waits = []
    wait = engine.stopping.wait
    engine.stopping.wait = lambda seconds=None: waits.append(seconds) or wait(0)
    engine.connect_latency = 0.04
    pooled = requests.Session()
    for _ in range(3):
        assert pooled.get(f"{simulator.url}/_simulator/stats", timeout=5).status_code == 200
    for _ in range(2):  # a client that does not pool: a new connection for each call
        assert requests.get(f"{simulator.url}/_simulator/stats", timeout=5,
                            headers={"Connection": "close"}).status_code == 200  # fmt: skip
    pooled.close()
    assert simulator.connections_opened == 3
    assert waits == [0.04, 0.04, 0.04]


def _submit_once(app):
    return submitter(english_browser(app))()


def _wait_for(condition, seconds=30.0):
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_a_cashier_sees_a_first_name_and_a_last_initial_never_a_blank_one():
    from webapp.signup.flow import masked_name

    assert masked_name("Astrid", "lindgren") == "Astrid L."
    assert masked_name(" Astrid ", None) == "Astrid"
    assert masked_name("   ", "Lindgren") is None, "no name to ask by"
    assert masked_name(None, "Lindgren") is None
