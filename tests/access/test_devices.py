"""Devices bound to a store and a mode by staff; kiosk and staff behaviour."""

from __future__ import annotations

import json
import re

import pytest
from cryptography.fernet import Fernet

from tests.conftest import (
    VALID_FORM,
    EngageClock,
    english_browser,
    english_visitor,
    enrol,
    hidden_fields,
    outcome_of,
    submitter,
    text_of,
)
from webapp import create_app

PIN = "4711"


@pytest.fixture
def chain_app(simulator, app_config):
    """A chain deployment: no default store, devices are bound on /setup."""
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url, "STAFF_PIN": PIN}
    config.pop("STORE_EXTERNAL_ID")
    return create_app(config)


def sign_in(browser, pin=PIN):
    page = browser.get("/setup/").get_data(as_text=True)
    return browser.post("/setup/pin", data={"pin": pin, **hidden_fields(page)})


def bind(browser, store="201", mode="kiosk"):
    assert sign_in(browser).status_code == 303
    page = browser.get("/setup/").get_data(as_text=True)
    return browser.post("/setup/", data={"store": store, "mode": mode, **hidden_fields(page)})


def test_a_device_with_no_store_shows_staff_how_to_set_it_up_never_the_form(chain_app):
    browser = english_visitor(chain_app)
    page = browser.get("/")
    assert outcome_of(page) == "setup-needed"
    assert 'name="email"' not in page.get_data(as_text=True)
    assert 'href="/setup/"' in page.get_data(as_text=True)
    assert browser.post("/", data=VALID_FORM).status_code == 303


def test_setup_needs_the_staff_pin(chain_app, engine):
    browser = english_visitor(chain_app)
    assert outcome_of(browser.get("/setup/")) == "setup-pin"
    wrong = sign_in(browser, "0000")
    assert wrong.status_code == 400
    assert "That PIN is not right." in text_of(wrong)
    assert engine.requests() == [], "no store list before the PIN"


@pytest.mark.shared_state
def test_pin_attempts_are_limited_across_workers(chain_app, simulator, app_config):
    browser = english_visitor(chain_app)
    statuses = [sign_in(browser, "0000").status_code for _ in range(5)]
    assert statuses == [400] * 5
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url, "STAFF_PIN": PIN}
    other_worker = create_app(config).test_client()
    other_worker.set_cookie("session", browser.get_cookie("session").value)
    blocked = sign_in(other_worker, PIN)  # even the right PIN, once over the limit
    assert blocked.status_code == 429
    assert "Too many attempts" in text_of(blocked)


def test_staff_pick_the_store_from_engages_list_and_the_device_remembers(chain_app, engine):
    browser = english_visitor(chain_app)
    sign_in(browser)
    page = browser.get("/setup/").get_data(as_text=True)
    assert "Acme Helsinki Aleksanterinkatu (201)" in page
    assert "Acme Closed Outlet" not in page, "inactive stores are not offered"
    response = bind(browser, store="201", mode="staff")
    assert response.status_code == 303
    cookie = response.headers.getlist("Set-Cookie")
    device_cookie = next(c for c in cookie if c.startswith("device="))
    assert "HttpOnly" in device_cookie and "Max-Age=" in device_cookie
    browser.set_cookie("session", browser.get_cookie("session").value)  # same device
    page = english_browser_keep(browser)
    html = page.get_data(as_text=True)
    assert outcome_of(page) == "form"
    assert "Acme Helsinki Aleksanterinkatu" in html
    assert '<option selected value="FI">' in html, "the store's country is the default"


def english_browser_keep(browser):
    browser.get("/?lang=en")
    return browser.get("/")


def test_a_typed_store_id_that_engage_does_not_list_is_refused(chain_app):
    browser = english_visitor(chain_app)
    response = bind(browser, store="99999")
    assert response.status_code == 400
    assert outcome_of(browser.get("/")) == "setup-needed"


def test_a_tampered_device_cookie_is_ignored(chain_app):
    browser = english_visitor(chain_app)
    bind(browser)
    value = browser.get_cookie("device").value
    browser.set_cookie("device", value[:-3] + "abc")
    assert outcome_of(browser.get("/")) == "setup-needed"


def test_the_store_language_is_the_default_then_the_persons_choice(chain_app):
    browser = chain_app.test_client()
    bind(browser, store="201")
    assert '<html lang="fi">' in browser.get("/").get_data(as_text=True)
    browser.get("/?lang=sv")
    assert '<html lang="sv">' in browser.get("/").get_data(as_text=True)


def test_signups_from_a_bound_device_are_recruited_in_its_store(chain_app, engine):
    browser = english_visitor(chain_app)
    bind(browser, store="301", mode="staff")
    page = submitter(browser)(countryCode="NO")
    assert outcome_of(page) == "created"
    create = engine.requests("/api/v3/contacts", "POST")[0]
    assert create.query["storeExternalId"] == ["301"]
    assert "staff device in store 301" in create.body["consents"][0]["comment"]


@pytest.fixture
def kiosk(chain_app):
    browser = english_visitor(chain_app)
    bind(browser, store="101", mode="kiosk")
    browser.get("/?lang=en")
    return browser


def test_a_kiosk_never_reveals_whether_someone_is_already_a_member(kiosk, engine, caplog):
    """Created, existing, in-progress and ambiguous: the same page, markup and cookie; only the
    server's log line knows which it was."""
    import logging

    from itsdangerous import URLSafeTimedSerializer

    caplog.set_level(logging.INFO, logger="webapp.request")
    engine.add_contact({"email": "known@example.com"})
    for _ in range(2):
        engine.add_contact({"email": "twice@example.com"})
    engine.begin_create("Member", "busy@example.com")  # another till is creating this one
    people = ["new@example.com", "known@example.com", "busy@example.com", "twice@example.com"]
    pages, cookies = [], []
    for email in people:
        response = submitter(kiosk)(email=email, follow=False)
        assert response.status_code == 303 and response.headers["Location"] == "/done"
        assert "Server-Timing" not in response.headers, "Engage's share would tell them apart"
        cookies.append(kiosk.get_cookie("result").value)
        pages.append(kiosk.get("/done").get_data(as_text=True))
    assert all(page == pages[0] for page in pages), "every byte of the page is the same"
    assert 'data-outcome="thanks"' in pages[0] and 'class="result result--thanks"' in pages[0]
    assert "Member number" not in pages[0] and "already" not in pages[0]
    reader = URLSafeTimedSerializer(kiosk.application.secret_key, salt="engage-signup-result")
    assert len({json.dumps(reader.loads(c)) for c in cookies}) == 1, "the same cookie content"
    assert len({len(c) for c in cookies}) == 1
    logged = [r.getMessage() for r in caplog.records if "method=POST path=/ " in r.getMessage()]
    expected = ["created", "existing", "in-progress", "ambiguous"]
    for line, outcome in zip(logged, expected, strict=True):
        assert f"outcome={outcome} " in line


def test_the_kiosk_thank_you_screen_says_when_to_return_to_an_empty_form(kiosk):
    html = submitter(kiosk)().get_data(as_text=True)
    assert 'data-outcome="thanks"' in html
    assert 'data-return-after="10"' in html
    assert 'data-start="/?lang=store"' in html  # the next person starts in the store's language
    # A timed refresh cannot be put off (WCAG 2.2.1): it is only for a browser without
    # JavaScript, where nothing else would clear the screen (inside <noscript>).
    assert html.count('http-equiv="refresh"') == 1
    assert '<noscript><meta http-equiv="refresh" content="10;url=/?lang=store"></noscript>' in html


def test_a_kiosk_form_turns_autofill_off_for_personal_fields(kiosk):
    html = kiosk.get("/").get_data(as_text=True)
    for name in ("firstName", "lastName", "email", "mobilePhone", "birthDay", "zipCode"):
        tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html).group(0)
        assert 'autocomplete="off"' in tag, name
    assert 'class="kiosk" data-idle="60" data-countdown="15"' in html
    assert 'id="idle-warning"' in html


def test_a_staff_tablet_keeps_nothing_in_autofill_and_offers_new_customer(client):
    html = client.get("/").get_data(as_text=True)
    assert 'novalidate class="signup signup--staff" autocomplete="off">' in html
    for name in ("firstName", "lastName", "email", "mobilePhone", "birthDay", "zipCode"):
        tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', html).group(0)
        assert 'autocomplete="off"' in tag, name
    assert "Next customer" in text_of(client.get("/"))
    assert 'class="kiosk"' not in html


def test_kiosk_signups_can_be_created_unapproved_for_double_opt_in(simulator, app_config, engine):
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url, "STAFF_PIN": PIN,
              "KIOSK_CREATE_AS_UNAPPROVED": True}  # fmt: skip
    app = create_app(config)
    staff = english_browser(app)  # enrolled as a staff tablet
    submitter(staff)(email="staff@example.com")
    kiosk = english_visitor(app)
    bind(kiosk, store="101", mode="kiosk")
    submitter(kiosk)(email="kiosk@example.com")
    queries = [r.query for r in engine.requests("/api/v3/contacts", "POST")]
    assert "createAsUnapproved" not in queries[0]
    assert queries[1]["createAsUnapproved"] == ["true"]


def test_without_a_staff_pin_setup_is_switched_off(app_config):
    app = create_app({**app_config, "STAFF_PIN": "", "DEVICE_MODE": "kiosk"})
    assert outcome_of(app.test_client().get("/setup/")) == "setup-disabled"


def test_without_a_staff_pin_every_device_must_be_a_kiosk(app_config):
    from webapp import ConfigError

    with pytest.raises(ConfigError, match="STAFF_PIN: not set; devices become staff tablets"):
        create_app({**app_config, "STAFF_PIN": ""})  # DEVICE_MODE=staff: nobody could enrol
    config = {k: v for k, v in app_config.items() if k != "STORE_EXTERNAL_ID"}
    with pytest.raises(ConfigError, match="STAFF_PIN: not set"):
        create_app({**config, "STAFF_PIN": "", "DEVICE_MODE": "kiosk"})  # a kiosk of no store


@pytest.mark.parametrize("mode", ["staff", "kiosk"])
def test_an_unenrolled_device_is_never_a_staff_tablet(simulator, app_config, engine, mode):
    """Whoever reaches the app without enrolment cannot ask whether someone is a member."""
    app = create_app({**app_config, "ENGAGE_BASE_URL": simulator.url, "DEVICE_MODE": mode})
    engine.add_contact({"email": "member@example.com"})
    stranger = english_visitor(app)
    page = stranger.get("/")
    if mode == "staff":
        assert outcome_of(page) == "setup-needed"
        assert outcome_of(submitter(stranger)(email="member@example.com")) == "setup-needed"
        assert engine.requests("/api/v3/contacts/id") == []
    else:
        assert outcome_of(page) == "form" and 'class="kiosk"' in page.get_data(as_text=True)
        answer = submitter(stranger)(email="member@example.com")
        assert outcome_of(answer) == "thanks"
        assert "999" not in text_of(answer) and "Member number" not in text_of(answer)


def test_a_device_whose_cookie_stops_verifying_is_no_staff_tablet(simulator, app_config):
    """A new SECRET_KEY (or a tampered value): the device must be enrolled again."""
    app = create_app({**app_config, "ENGAGE_BASE_URL": simulator.url})
    browser = english_browser(app)
    assert outcome_of(browser.get("/")) == "form"
    rotated = create_app(
        {**app_config, "ENGAGE_BASE_URL": simulator.url, "SECRET_KEY": "a-new-secret-key-98765"}
    )
    other = english_visitor(rotated)
    other.set_cookie("device", browser.get_cookie("device").value)
    page = other.get("/")
    assert outcome_of(page) == "setup-needed"
    assert "can no longer be read" in text_of(page)


def test_consent_texts_can_come_from_engage_in_the_persons_language(simulator, app_config, engine):
    app = create_app({**app_config, "ENGAGE_BASE_URL": simulator.url, "CONSENT_TEXTS": "engage"})
    browser = enrol(app.test_client(), app)
    browser.get("/?lang=da")
    assert "Jeg accepterer medlemsbetingelserne" in text_of(browser.get("/"))
    browser.get("/?lang=en")
    browser.get("/")
    assert len(engine.requests("/api/v3/consents")) == 1, "asked once, then cached"


def test_consent_texts_fall_back_to_configuration_when_engage_is_down(
    simulator, app_config, engine
):
    engine.inject("status", on="read", status=500, times=None)
    app = create_app({**app_config, "ENGAGE_BASE_URL": simulator.url, "CONSENT_TEXTS": "engage"})
    browser = enrol(app.test_client(), app)
    browser.get("/?lang=fi")
    page = browser.get("/")
    assert page.status_code == 200
    assert "Hyväksyn jäsenehdot" in text_of(page)


def test_saving_setup_without_picking_a_store_binds_nothing(chain_app):
    browser = english_visitor(chain_app)
    response = bind(browser, store="")
    assert response.status_code == 400
    assert "Choose the store" in text_of(response)
    assert outcome_of(browser.get("/")) == "setup-needed"


def test_a_kiosk_releases_a_member_and_a_new_person_at_one_moment(kiosk, chain_app, engine):
    """A find alone is one call to Engage, a find and a create two: on a kiosk both answers are
    released at a moment fixed before Engage is asked, the same for both (here the prior of a
    deployment that has timed no create yet), so timing tells nothing."""
    from webapp.signup.padding import PRIOR_SECONDS

    clock = EngageClock(engine, chain_app)
    submitter(kiosk)(email="new@example.com", follow=False)
    engine.add_contact({"email": "known@example.com"})
    submitter(kiosk)(email="known@example.com", follow=False)
    took = [0.6, 0.2]  # find and create; find
    assert clock.waits == [pytest.approx(PRIOR_SECONDS - t) for t in took]
    assert [t + w for t, w in zip(took, clock.waits, strict=True)] == [
        pytest.approx(PRIOR_SECONDS)
    ] * 2, "one release moment for both"


@pytest.mark.parametrize("outcome", ["existing", "in-progress", "ambiguous", "queued"])
def test_every_final_kiosk_answer_is_released_at_the_target(outcome, simulated_app, engine):
    """Not only a found member: Engage's 409 (being created), several matches and a sign-up
    kept for later each end sooner than a create, and each is released at the same target as
    the create before it."""
    from webapp.signup.padding import PRIOR_SECONDS

    app = simulated_app(DEVICE_MODE="kiosk", OUTBOX_KEYS=Fernet.generate_key().decode(),
                        ENGAGE_RETRY_SECONDS=0)  # fmt: skip
    clock = EngageClock(engine, app)
    kiosk = english_visitor(app)
    kiosk.get("/?lang=en")
    submitter(kiosk)(email="first@example.com", follow=False)  # find and create: 0.6 s
    if outcome == "existing":
        engine.add_contact({"email": "person@example.com"})
    elif outcome == "in-progress":
        engine.inject("status", on="create", status=409, token="ContactWithKeyIsBeingCreated")
    elif outcome == "ambiguous":
        engine.add_contact({"email": "person@example.com"})
        engine.add_contact({"email": "person@example.com"})
    else:
        engine.inject("status", on="find", status=503, times=2)  # the find and its one resend
    before = clock.now()
    response = submitter(kiosk)(email="person@example.com", follow=False)
    took = clock.now() - before
    assert response.status_code == 303
    assert outcome_of(kiosk.get(response.headers["Location"])) == "thanks"
    assert took < 0.6, "this answer was quicker than a create"
    assert clock.waits == [pytest.approx(PRIOR_SECONDS - 0.6), pytest.approx(PRIOR_SECONDS - took)]


def test_a_fresh_deployment_holds_kiosk_answers_to_a_prior_until_a_create_is_timed(
    kiosk, chain_app, engine
):
    """Right after the first start nobody has timed a create: a found member's answer waits
    for the prior (longer than a create on a healthy tenant), not for nothing."""
    from webapp.signup.padding import PRIOR_SECONDS

    clock = EngageClock(engine, chain_app)
    engine.add_contact({"email": "known@example.com"})
    submitter(kiosk)(email="known@example.com", follow=False)
    assert clock.waits == [pytest.approx(PRIOR_SECONDS - 0.2)]


def test_kiosk_answer_times_are_shared_by_every_worker(simulated_app, engine):
    """A worker that has timed no create of its own releases its answers at the target the
    others measured (their creates' percentile, with its margin), read from the shared state;
    a worker shares its percentile once it rests on enough creates."""
    from webapp.signup.padding import LOCAL_ENOUGH, MARGIN

    settings = {"DEVICE_MODE": "kiosk"}
    first, second = simulated_app(**settings), simulated_app(**settings)
    EngageClock(engine, first, per_call=0.3)
    clock = EngageClock(engine, second, per_call=0.3)
    for n in range(LOCAL_ENOUGH):
        new = english_visitor(first)
        new.get("/?lang=en")
        submitter(new)(email=f"new{n}@example.com", follow=False)  # 0.9 s each, first worker
    engine.add_contact({"email": "known@example.com"})
    known = english_visitor(second)
    known.get("/?lang=en")
    submitter(known)(email="known@example.com", follow=False)
    assert clock.waits == [pytest.approx(0.9 * MARGIN - 0.3)], "the first worker's 0.9 s"


def test_staff_name_a_device_at_enrolment_and_the_manager_and_the_log_use_it(
    simulated_app, engine, caplog
):
    """ "Kassa 2" and the store's own name in the manager's view, instead of a random id and a
    number; the log line says which till it was."""
    import logging

    app = simulated_app(STAFF_PIN=PIN, MANAGER_PINS="crm@*:91827364")
    browser = english_visitor(app)
    assert sign_in(browser).status_code == 303
    page = browser.get("/setup/").get_data(as_text=True)
    assert 'name="name"' in page
    saved = browser.post("/setup/", data={"store": "201", "mode": "staff", "name": "Kassa 2",
                                          **hidden_fields(page)})  # fmt: skip
    assert saved.status_code == 303
    caplog.set_level(logging.INFO)
    browser.get("/?lang=en")
    submitter(browser)(email="named.till@example.com")
    assert any("store=201 device=Kassa_2 " in r.getMessage() for r in caplog.records)
    manager = english_visitor(app)
    login = manager.get("/manager/").get_data(as_text=True)
    manager.post("/manager/login", data={"pin": "91827364", **hidden_fields(login)})
    overview = text_of(manager.get("/manager/"))
    assert "Kassa 2" in overview
    assert "Acme Helsinki Aleksanterinkatu" in overview, "the store by Engage's name"
    refused = browser.post("/setup/pin", data={"pin": PIN, **hidden_fields(
        browser.get("/setup/").get_data(as_text=True))})  # fmt: skip
    assert refused.status_code == 303
    page = browser.get("/setup/").get_data(as_text=True)
    bad = browser.post("/setup/", data={"store": "201", "mode": "staff", "name": "<script>",
                                        **hidden_fields(page)})  # fmt: skip
    assert bad.status_code == 400 and "Use letters, digits and spaces" in text_of(bad)


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_release_target_is_a_high_percentile_of_recent_creates_never_below_the_floor(store):
    """The mechanism, on a fake clock: the prior until enough creates are timed (or the slowest
    few with a wide margin, should one be slower); then this process's own 95th percentile with
    its margin (so that fewer than one create in twenty runs past it), never below what the
    deployment shares; never below the floor."""
    from webapp.signup import padding

    clock, waits = _Clock(), []
    times = padding.AnswerTimes(store, clock=clock, sleep=waits.append)
    assert times.target() == padding.PRIOR_SECONDS
    times.created(0.5)
    assert times.target() == padding.PRIOR_SECONDS, "one create says little"
    times.created(0.9)
    assert times.target() == pytest.approx(0.9 * padding.FEW_MARGIN), "but never below it"
    assert store.timing(padding.NAME) is None, "nothing shared from a few creates"
    creates = [0.2 + 0.01 * n for n in range(40)]  # 0.20 ... 0.59 s
    for seconds in creates:
        times.created(seconds)
    every = [0.5, 0.9, *creates]
    shared = store.timing(padding.NAME)
    assert shared == padding.quantile(every[: padding.LOCAL_ENOUGH], padding.QUANTILE)
    own = padding.quantile(every, padding.QUANTILE)
    assert sum(s > own for s in every) / len(every) <= 0.05
    clock.now += padding.SHARE_SECONDS
    assert times.target() == pytest.approx(max(own, shared) * padding.MARGIN)
    quick = padding.AnswerTimes(store, clock=clock)
    quick.store = type("Quiet", (), {"timing": lambda self, name: None,
                                     "timing_sample": lambda self, name, s: None})()  # fmt: skip
    for _ in range(padding.LOCAL_ENOUGH):
        quick.created(0.01)
    assert quick.target() == padding.FLOOR_SECONDS, "never sooner than the floor"
    started = clock.now
    clock.now += 0.1
    assert times.hold(started, 0.4) == pytest.approx(0.3) and waits == [pytest.approx(0.3)]
    clock.now += 1.0
    assert times.hold(started, 0.4) == 0.0, "only a sign-up slower than the target stands out"


def test_a_restarted_process_releases_its_first_answers_at_the_shared_target(store):
    """Right after a start a process has timed nothing: its first answers are released at what
    the deployment measured before (shared), not at the prior nor at once."""
    from webapp.signup import padding

    clock = _Clock()
    before = padding.AnswerTimes(store, clock=clock)
    for _ in range(padding.LOCAL_ENOUGH):
        before.created(0.6)
    restarted = padding.AnswerTimes(store, clock=clock)
    assert restarted.target() == pytest.approx(0.6 * padding.MARGIN)


def test_two_devices_of_one_name_are_told_apart_in_the_managers_view(simulated_app, engine):
    """Two tills both named "Kassa 2" looked identical in the manager's figures: each now shows
    the start of its own id beside the name."""
    app = simulated_app(STAFF_PIN=PIN, MANAGER_PINS="crm@*:91827364")
    for n in range(2):
        browser = english_visitor(app)
        assert sign_in(browser).status_code == 303
        page = browser.get("/setup/").get_data(as_text=True)
        saved = browser.post("/setup/", data={"store": "201", "mode": "staff", "name": "Kassa 2",
                                              **hidden_fields(page)})  # fmt: skip
        assert saved.status_code == 303
        browser.get("/?lang=en")
        submitter(browser)(email=f"twin.till.{n}@example.com")
    manager = english_visitor(app)
    login = manager.get("/manager/").get_data(as_text=True)
    manager.post("/manager/login", data={"pin": "91827364", **hidden_fields(login)})
    overview = text_of(manager.get("/manager/"))
    shown = set(re.findall(r"Kassa 2 · (\S{6})", overview))
    assert len(shown) == 2, overview
