"""Double submits, Engage outages and abuse: nothing lost, no duplicates, no hammering."""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests
from wtforms import Field, Form

from tests.conftest import (
    VALID_FORM,
    cycle_garbage,
    english_browser,
    hidden_fields,
    outcome_of,
    same_device,
    submitter,
    wait_until,
)
from webapp import create_app
from webapp.signup.flow import Breaker, Outcome

CREATE_PATH = "/api/v3/contacts"


def filled_form(browser, **overrides):
    """What a browser would send from the form page it has on screen."""
    page = browser.get("/").get_data(as_text=True)
    return {**VALID_FORM, **overrides, **hidden_fields(page)}


@pytest.mark.shared_state
def test_a_double_tap_sends_one_create_and_both_taps_see_the_result(sim_client, engine):
    engine.latency = 0.2
    fields = filled_form(sim_client)
    pages = []
    taps = [
        threading.Thread(target=lambda: pages.append(sim_client.post("/", data=fields)))
        for _ in range(2)
    ]
    taps[0].start()
    wait_until(lambda: engine.requests(), "the first tap never reached Engage")
    taps[1].start()  # while the first tap's find is on its way (0.2 s at Engage)
    for tap in taps:
        tap.join()
    assert len(engine.requests(CREATE_PATH, "POST")) == 1
    assert [p.status_code for p in pages] == [303, 303]
    assert outcome_of(sim_client.get("/done")) == "created"


@pytest.mark.shared_state
def test_reloading_the_result_of_a_post_shows_the_first_outcome_again(sim_client, engine):
    fields = filled_form(sim_client)
    first = sim_client.post("/", data=fields, follow_redirects=True)
    again = sim_client.post("/", data=fields, follow_redirects=True)  # browser "resubmit"
    assert outcome_of(first) == outcome_of(again) == "created"
    assert len(engine.requests(CREATE_PATH, "POST")) == 1
    assert len(engine.contacts()) == 1


@pytest.mark.shared_state
def test_the_token_holds_across_worker_processes(simulator, engine, app_config):
    """Two app instances on one state file stand for two gunicorn workers."""
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url}
    worker_a, worker_b = create_app(config), create_app(config)
    browser_a = english_browser(worker_a)
    fields = filled_form(browser_a)
    assert outcome_of(browser_a.post("/", data=fields, follow_redirects=True)) == "created"
    # The same POST (same session cookie) lands on the other worker.
    browser_b = same_device(browser_a, worker_b.test_client())
    assert outcome_of(browser_b.post("/", data=fields, follow_redirects=True)) == "created"
    assert len(engine.requests(CREATE_PATH, "POST")) == 1


def test_after_a_timeout_the_form_carries_a_new_token_so_trying_again_really_tries(
    sim_client, engine
):
    engine.inject("latency", seconds=1.2)
    fields = filled_form(sim_client)
    page = sim_client.post("/", data=fields)
    assert outcome_of(page) == "timeout"
    retry = {**fields, **hidden_fields(page.get_data(as_text=True))}
    assert retry["submission"] != fields["submission"]
    assert outcome_of(sim_client.post("/", data=retry, follow_redirects=True)) == "created"


def test_a_made_up_submission_token_is_refused_without_calling_engage(sim_client, engine):
    fields = {**filled_form(sim_client), "submission": "<script>"}
    page = sim_client.post("/", data=fields)
    assert page.status_code == 400
    assert outcome_of(page) == "invalid"
    assert engine.requests() == []


@pytest.mark.shared_state
def test_after_repeated_failures_engage_is_left_alone_then_probed_once(sim_app, engine):
    clock = [1000.0]
    sim_app.extensions["state"].clock = lambda: clock[0]
    engine.inject("status", on="find", status=500, times=None)
    submit = submitter(english_browser(sim_app))
    for n in range(3):
        assert outcome_of(submit(email=f"p{n}@example.com")) == "unavailable"
    calls = len(engine.requests())
    assert outcome_of(submit(email="fast@example.com")) == "unavailable"
    assert len(engine.requests()) == calls, "the breaker is open: answered without Engage"

    engine.clear_faults()
    clock[0] += 31  # the cool-down is over: one probe may go
    assert outcome_of(submit(email="probe@example.com")) == "created"
    assert outcome_of(submit(email="after@example.com")) == "created", "closed again"


@pytest.mark.shared_state
def test_only_one_request_probes_when_the_cool_down_ends(sim_app):
    state = sim_app.extensions["state"]
    breaker = sim_app.extensions["breaker"]
    for _ in range(3):
        state.breaker_record("engage", ok=False, threshold=3, cooldown=30)
    state.clock = lambda: time.time() + 31
    assert [breaker.allows() for _ in range(3)] == [True, False, False]


@pytest.mark.shared_state
def test_a_429_backs_off_at_once(sim_app, engine):
    engine.inject("status", on="find", status=429)
    submit = submitter(english_browser(sim_app))
    assert outcome_of(submit(email="one@example.com")) == "unavailable"
    assert outcome_of(submit(email="two@example.com")) == "unavailable"
    assert len(engine.requests()) == 1, "after a 429, the next signup does not call Engage"


@pytest.mark.shared_state
def test_submissions_per_device_are_limited_across_workers(simulator, engine, app_config):
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url, "SUBMIT_LIMIT_PER_DEVICE": 2}
    worker_a, worker_b = create_app(config), create_app(config)
    browser = english_browser(worker_a)
    outcomes = []
    for n, worker in enumerate((worker_a, worker_b, worker_a)):
        fields = filled_form(browser, email=f"p{n}@example.com")
        other = same_device(browser, worker.test_client())
        page = other.post("/", data=fields, follow_redirects=True)
        browser.set_cookie("session", other.get_cookie("session").value)
        outcomes.append((page.status_code, outcome_of(page)))
    assert outcomes[:2] == [(200, "created"), (200, "created")]
    assert outcomes[2] == (429, "throttled")
    assert len(engine.contacts()) == 2


@pytest.mark.shared_state
@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/healthz", {"status": "ok"}),
        ("/readyz", {"status": "ok", "engage": "ok", "state": "ok", "breaker": "closed"}),
    ],
)
def test_health_endpoints_are_cheap_and_carry_no_personal_data(sim_client, path, expected, engine):
    """...and name the version they run, and the commit where it is known (a checkout's HEAD,
    or APP_COMMIT)."""
    import subprocess

    from webapp import __version__

    response = sim_client.get(path)
    assert response.status_code == 200
    assert response.is_json
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    assert response.get_json() == {**expected, "version": __version__, "commit": head.strip()}


def test_readyz_says_not_ready_when_engage_cannot_be_reached(sim_client, engine):
    engine.inject("status", on="read", status=503, times=None)
    response = sim_client.get("/readyz")
    assert response.status_code == 503
    assert response.get_json()["engage"] == "unreachable"


@pytest.mark.shared_state
def test_server_timing_separates_engage_time_from_the_apps_own(sim_client, engine):
    """What monitoring reads: a find and a create of 50 ms each show as Engage's, not the app's."""
    engine.latency = 0.05
    page = submitter(sim_client)(follow=False)
    assert page.status_code == 303
    timing = dict(re.findall(r"(\w+);dur=([\d.]+)", page.headers["Server-Timing"]))
    assert float(timing["engage"]) >= 100  # two calls of at least 50 ms each
    assert float(timing["app"]) < 100  # the app's own part is not charged with Engage's waits
    # The shared state (limits, token claim and finish, breaker) is a part of the app's time.
    assert 0 < float(timing["state"]) < float(timing["app"])


def test_a_signup_leaves_no_form_for_the_cycle_collector(sim_client):
    """A worker's threads all stop while Python's cycle collector runs, so signups (valid or
    not) leave their forms to reference counting: freed when the request ends."""
    submit = submitter(sim_client)
    submit(follow=False)
    with cycle_garbage() as left:
        assert submit(follow=False).status_code == 303
        assert submit(email="not an address").status_code == 400
    assert [type(o).__name__ for o in left if isinstance(o, Form | Field)] == []


@pytest.mark.shared_state
def test_repeated_timeouts_open_the_breaker_like_any_other_failure(store):
    state = store
    breaker = Breaker(state, threshold=3, cooldown=30)
    for _ in range(3):
        assert breaker.allows()
        breaker.record(Outcome("timeout", cause="EngageTimeout"))
    assert state.breaker_is_open("engage") and not breaker.allows()


@pytest.mark.shared_state
def test_a_hanging_engage_opens_the_breaker_so_tills_stop_waiting_it_out(
    simulator, engine, app_config
):
    """Finds that never answer end as `timeout`; after the threshold the next signup is told
    `unavailable` at once instead of waiting out the read timeouts again."""
    app = create_app({**app_config, "ENGAGE_BASE_URL": simulator.url, "ENGAGE_READ_TIMEOUT": 0.3})
    engine.inject("hang", on="find", times=None, seconds=5)
    submit = submitter(english_browser(app))
    assert [outcome_of(submit(email=f"h{n}@example.com")) for n in range(3)] == ["timeout"] * 3
    calls = len(engine.requests())
    assert outcome_of(submit(email="next@example.com")) == "unavailable"
    assert len(engine.requests()) == calls, "the breaker is open: no call to Engage"
    app.extensions["engage"].close()


def _signup_for(email: str):
    from webapp.signup.flow import Signup

    return Signup(
        contact={"email": email, "contactType": "Member"},
        key="email",
        contact_type="Member",
        store_external_id="101",
    )


@pytest.mark.parametrize(
    ("create_answer", "settles"),
    [
        ({"exc": requests.exceptions.ConnectionError("reset")}, True),  # dropped after sending
        ({"status_code": 502, "text": "<html>Bad Gateway</html>"}, True),
        ({"status_code": 503, "text": ""}, True),
        ({"exc": requests.exceptions.ReadTimeout}, False),  # Engage's own limit already passed
    ],
)
def test_engage_is_given_time_to_settle_before_the_second_look_up(
    engage_api, create_answer, settles
):
    """Voyado's retry policy: after a create ended in doubt, wait, then look up. The wait must
    come between the create and the second find; after our own read timeout it is not needed."""
    from tests.conftest import CREATE, ENGAGE, FIND
    from webapp.engage import EngageClient
    from webapp.signup.flow import register

    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, **create_answer)
    slept = []  # (seconds, Engage calls made when the wait began)
    client = EngageClient(ENGAGE, "key", user_agent="test/1")
    outcome = register(
        client,
        _signup_for("settle@example.com"),
        settle_seconds=0.7,
        sleep=lambda seconds: slept.append((seconds, len(engage_api.request_history))),
    )
    assert [r.method for r in engage_api.request_history] == ["GET", "POST", "GET"]
    assert slept == ([(0.7, 2)] if settles else [])
    assert outcome.name == ("unavailable" if settles else "timeout")
