"""The outbox: nothing lost when Engage is down, nobody created twice when it is back.

In-process against the simulator over real sockets for the flows, and with gunicorn processes
for the runs that need them (16 tills while Engage is down, a worker killed mid-create, two
instances on one PostgreSQL replaying together)."""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from cryptography.fernet import Fernet

from tests.components import ROOT
from tests.conftest import (
    KNOWN_MEMBER,
    VALID_FORM,
    english_browser,
    enrol,
    outcome_of,
    submitter,
    text_of,
    wait_until,
)
from webapp import ConfigError, create_app
from webapp.signup.flow import Outcome
from webapp.signup.outbox import BACKOFF, LEASE_SECONDS, Worker

KEY = Fernet.generate_key().decode()


@pytest.fixture
def kept(simulated_app):
    """An app with the outbox on (short timeouts, no waits), against the simulator."""

    def make(**settings):
        return simulated_app(
            **{"OUTBOX_KEYS": KEY, "ENGAGE_READ_TIMEOUT": 1.0, "ENGAGE_CREATE_TIMEOUT": 1.0,
               "ENGAGE_SETTLE_SECONDS": 0.05, "ENGAGE_RETRY_SECONDS": 0.05, **settings}
        )  # fmt: skip

    return make


def engage_down(engine):
    engine.inject("status", on="any", status=503, times=None)


def replay_all(app, *, rounds: int = 50) -> list[str]:
    """Send every due item now, as the worker would; what each replay ended in."""
    state, outbox = app.extensions["state"], app.extensions["outbox"]
    said = []
    for _ in range(rounds):
        state.outbox_retry()
        result = outbox.replay_one(app, sleep=lambda s: None)
        if result is None:
            break
        said.append(result)
    return said


def emails_in(engine) -> collections.Counter:
    return collections.Counter(c["attributes"]["email"] for c in engine.contacts())


# --- what is kept, and what the person reads ------------------------------------------------------
def test_engage_down_the_cashier_reads_saved_with_a_reference_and_nothing_is_lost(kept, engine):
    app = kept()
    engage_down(engine)
    page = submitter(english_browser(app))(email="later@example.com", firstName="Lova")
    assert outcome_of(page) == "queued"
    text = text_of(page)
    assert "Saved: it will be registered shortly" in text
    assert "Finish the purchase without a member number" in text
    ref = re.search(r"Reference ([A-Z2-7]{5}-[A-Z2-7]{5})", text).group(1)
    items = app.extensions["state"].outbox_items()
    assert [(i["store"], i["mode"], i["state"]) for i in items] == [("101", "staff", "waiting")]
    assert items[0]["id"] == ref.replace("-", "")

    engine.clear_faults()  # Engage is back
    assert replay_all(app) == ["created"]
    stored = engine.contacts()
    assert [c["attributes"]["email"] for c in stored] == ["later@example.com"]
    assert stored[0]["attributes"]["firstName"] == "Lova"
    create = engine.requests("/api/v3/contacts", "POST")[-1]
    assert create.query["source"] == ["POS"] and create.query["storeExternalId"] == ["101"]
    assert app.extensions["state"].outbox_items() == [], "done: deleted at once"


def test_on_a_kiosk_kept_reads_exactly_like_any_other_success(kept, engine):
    app = kept(DEVICE_MODE="kiosk")
    kiosk = app.test_client()
    kiosk.get("/?lang=en")
    new = submitter(kiosk)(email="new@example.com", follow=False)
    cookie_new = kiosk.get_cookie("result").value
    page_new = kiosk.get("/done").get_data(as_text=True)
    engage_down(engine)
    queued = submitter(kiosk)(email="queued@example.com", follow=False)
    page_queued = kiosk.get("/done").get_data(as_text=True)
    assert (new.status_code, queued.status_code) == (303, 303)
    assert page_new == page_queued and 'data-outcome="thanks"' in page_queued
    assert len(kiosk.get_cookie("result").value) == len(cookie_new)
    assert len(app.extensions["state"].outbox_items()) == 1


@pytest.mark.parametrize(
    ("arrange", "kept_one"),
    [
        (lambda e: e.inject("status", status=504), True),  # Engage's own 504: nothing created
        (lambda e: e.inject("hang", on="create", seconds=3), True),  # ours, nobody found after
        (lambda e: e.inject("status", on="find", status=500, times=None), True),
        (lambda e: e.inject("status", on="find", status=429), True),
        (lambda e: setattr(e, "api_key", "another"), True),  # misconfigured: kept till fixed
        (lambda e: e.inject("status", status=422), False),  # the person's to correct
        (
            lambda e: e.add_contact({**KNOWN_MEMBER, "email": "p@example.com"}),
            False,
        ),  # already a member
    ],
)
def test_only_signups_that_engage_did_not_answer_clearly_are_kept(kept, engine, arrange, kept_one):
    app = kept()
    arrange(engine)
    page = submitter(english_browser(app))(email="p@example.com")
    assert (outcome_of(page) == "queued") == kept_one
    assert len(app.extensions["state"].outbox_items()) == int(kept_one)


def test_details_on_several_members_go_to_the_manager_with_the_contacts_to_merge(kept, engine):
    """Not a dead end for the cashier: finish the purchase; the case waits for the store
    manager under "needs attention", with Engage's contacts to merge (sealed with the rest)."""
    app = kept()
    twins = [engine.add_contact({"email": "p@example.com"})["id"] for _ in range(2)]
    page = submitter(english_browser(app))(email="p@example.com")
    assert outcome_of(page) == "ambiguous"
    assert "the store manager sees the case" in text_of(page)
    (item,) = app.extensions["state"].outbox_items(payload=True)
    assert (item["state"], item["last_error"]) == ("attention", "MultipleMatches")
    assert sorted(app.extensions["outbox"].matches(item["payload"])) == sorted(twins)
    assert twins[0] not in str({k: v for k, v in item.items() if k != "payload"})
    steps = app.extensions["state"].consent_deliveries([item["submission"]])
    assert [s["state"] for s in steps] == ["needs-attention"]
    engine.reset()  # merged in Engage: one of them remains
    engine.add_contact({**KNOWN_MEMBER, "email": "p@example.com"})
    app.extensions["state"].outbox_retry(item["id"])  # the manager's "send again"
    assert replay_all(app) == ["existing"]
    assert app.extensions["state"].outbox_items() == []


def test_an_open_breaker_keeps_signups_without_calling_engage(kept, engine):
    app = kept(BREAKER_THRESHOLD=1)
    engage_down(engine)
    submit = submitter(english_browser(app))
    assert outcome_of(submit(email="a@example.com")) == "queued"  # opens the breaker
    calls = len(engine.requests())
    assert outcome_of(submit(email="b@example.com")) == "queued"
    assert len(engine.requests()) == calls, "the breaker spared Engage"


def test_invalid_and_throttled_signups_are_never_kept(kept, engine):
    app = kept(SUBMIT_LIMIT_PER_DEVICE=1)
    engage_down(engine)
    submit = submitter(english_browser(app))
    assert outcome_of(submit(email="not an address")) == "invalid"
    assert outcome_of(submit(email="one@example.com")) == "queued"
    assert outcome_of(submit(email="two@example.com")) == "throttled"
    assert len(app.extensions["state"].outbox_items()) == 1


def test_without_the_outbox_engage_down_is_unavailable_and_says_nothing_is_kept(sim_client, engine):
    engage_down(engine)
    page = submitter(sim_client)()
    assert outcome_of(page) == "unavailable"
    assert "Nothing was saved" in text_of(page)


# --- replaying ------------------------------------------------------------------------------------
def test_a_replay_that_fails_again_waits_longer_each_time(kept, engine):
    app = kept()
    state = app.extensions["state"]
    clock = [1_000_000.0]
    state.clock = lambda: clock[0]
    engage_down(engine)
    submitter(english_browser(app))()
    item = state.outbox_items()[0]
    assert item["next_attempt"] == clock[0] + BACKOFF[0], "the first try comes later"
    waits = []
    for _ in range(4):
        clock[0] = state.outbox_items()[0]["next_attempt"]
        assert app.extensions["outbox"].replay_one(app, sleep=lambda s: None) == "unavailable"
        waits.append(state.outbox_items()[0]["next_attempt"] - clock[0])
    assert waits == list(BACKOFF[1:5])
    assert state.outbox_items()[0]["last_error"] == "CircuitOpen" or state.outbox_items()[0][
        "last_error"
    ].startswith("Engage")


@pytest.mark.parametrize(
    ("then", "left"),
    [
        (lambda e: e.inject("status", status=422), "ValidationError"),
        (
            lambda e: [e.add_contact({"email": "p@example.com"}) for _ in range(2)],
            "MultipleMatches",
        ),
        (lambda e: setattr(e, "api_key", "another"), "Misconfigured"),
    ],
)
def test_a_replay_engage_refuses_clearly_waits_for_a_person(kept, engine, then, left):
    app = kept()
    engage_down(engine)
    submitter(english_browser(app))(email="p@example.com")
    engine.clear_faults()
    then(engine)
    replay_all(app, rounds=1)
    item = app.extensions["state"].outbox_items()[0]
    assert item["state"] == "attention"
    said = item["last_error"].split(":", 1)[0]  # then the fields Engage named, if any
    assert left in item["last_error"] or said == "EngageRejected"
    app.extensions["state"].outbox_retry()  # nothing is retried by itself once it needs a person
    assert app.extensions["state"].outbox_items()[0]["state"] == "waiting"


# --- the same person again ------------------------------------------------------------------------
def test_kept_then_signed_up_again_before_the_replay_is_created_once(kept, engine):
    app = kept()
    engage_down(engine)
    till = submitter(english_browser(app))
    assert outcome_of(till(email="again@example.com")) == "queued"
    engine.clear_faults()
    assert outcome_of(till(email="again@example.com")) == "created"  # the live path, first
    assert replay_all(app) == ["existing"], "the replay finds them and is done"
    assert emails_in(engine)["again@example.com"] == 1


def test_kept_at_two_stores_is_created_once(kept, engine):
    app = kept()
    engage_down(engine)
    for store in ("101", "201"):
        browser = enrol(app.test_client(), app, "staff", store)
        browser.get("/?lang=en")
        assert outcome_of(submitter(browser)(email="two.stores@example.com")) == "queued"
    engine.clear_faults()
    assert sorted(replay_all(app)) == ["created", "existing"]
    assert emails_in(engine)["two.stores@example.com"] == 1


def test_replayed_first_then_signed_up_again_is_found(kept, engine):
    app = kept()
    engage_down(engine)
    till = submitter(english_browser(app))
    till(email="first@example.com")
    engine.clear_faults()
    assert replay_all(app) == ["created"]
    assert outcome_of(till(email="first@example.com")) == "existing"
    assert emails_in(engine)["first@example.com"] == 1


def test_a_replay_and_a_live_signup_of_the_same_person_at_once_make_one_contact(kept, engine):
    """Both find nobody; Engage's own lock lets one create through and answers the other 409
    ContactWithKeyIsBeingCreated: the live one reads in-progress, or the replay tries later."""
    app = kept(ENGAGE_CREATE_TIMEOUT=3.0)
    engage_down(engine)
    till = submitter(english_browser(app))
    till(email="race@example.com")
    engine.clear_faults()
    engine.latency = 0.4
    said = {}
    replay = threading.Thread(target=lambda: said.update(replay=replay_all(app, rounds=1)))
    finds = len(engine.requests("/api/v3/contacts/id"))
    replay.start()
    wait_until(lambda: len(engine.requests("/api/v3/contacts/id")) > finds, "no replay began")
    said["live"] = outcome_of(till(email="race@example.com"))  # while the replay is under way
    replay.join()
    engine.latency = 0
    replay_all(app)
    assert emails_in(engine)["race@example.com"] == 1
    assert said["live"] in ("created", "existing", "in-progress")
    assert app.extensions["state"].outbox_items() == []


# --- keys, expiry, operators ----------------------------------------------------------------------
def test_rekeying_puts_every_item_under_the_newest_key(kept, engine, app_config, simulator):
    app = kept()
    engage_down(engine)
    submitter(english_browser(app))(email="rekey@example.com")
    newer = Fernet.generate_key().decode()
    rotated = kept(OUTBOX_KEYS=f"{newer},{KEY}")
    result = rotated.test_cli_runner().invoke(args=["outbox", "rekey"])
    assert result.exit_code == 0 and "1 item(s)" in result.output
    only_new = kept(OUTBOX_KEYS=newer)  # the old key dropped
    engine.clear_faults()
    assert replay_all(only_new) == ["created"]
    assert emails_in(engine)["rekey@example.com"] == 1


def test_start_up_refuses_keys_that_open_none_of_the_kept_sign_ups(kept, engine):
    """A machine whose OUTBOX_KEYS drifted from the others' would give up every item it
    replays and seal new ones nobody else can open: it does not start, in one line."""
    app = kept()
    engage_down(engine)
    submitter(english_browser(app))(email="drifted@example.com")
    with pytest.raises(ConfigError) as refused:
        kept(OUTBOX_KEYS=Fernet.generate_key().decode())
    assert refused.value.key == "OUTBOX_KEYS"
    assert "opens none of the 1 newest kept sign-up" in str(refused.value)
    assert "\n" not in str(refused.value)
    kept(OUTBOX_KEYS=f"{Fernet.generate_key().decode()},{KEY}")  # a newer key in front: fine


def test_a_machine_never_gives_up_an_item_its_own_keys_cannot_open(kept, engine, caplog):
    """Items kept under two keys, and a machine that holds only one of them: it leaves the
    other's item waiting (no try counted, due again for any machine), says so in the log and
    in /readyz, and the machine whose key opens it sends it."""
    other_key = Fernet.generate_key().decode()
    ours, theirs = kept(), kept(OUTBOX_KEYS=other_key)
    engage_down(engine)
    submitter(english_browser(theirs))(email="theirs@example.com")
    submitter(english_browser(ours))(email="ours@example.com")
    engine.clear_faults()
    ready = ours.test_client().get("/readyz")
    assert ready.status_code == 200, "its keys open what it kept: a working machine"
    assert ready.get_json()["outbox"] == (
        "1 of the 2 newest kept sign-ups cannot be opened with these keys"
    )
    state = ours.extensions["state"]
    state.outbox_retry()
    caplog.set_level(logging.WARNING)
    said = [ours.extensions["outbox"].replay_one(ours) for _ in range(2)]
    assert sorted(said) == ["created", "unopened"]
    (left,) = state.outbox_items()
    assert (left["state"], left["last_error"], left["attempts"]) == (
        "waiting",
        "KeyNotInOutboxKeys",
        0,
    ), "never given up, and no try counted"
    assert left["next_attempt"] > state.clock() + 30, "due again soon, for whichever machine"
    assert any("cannot be opened with this machine's OUTBOX_KEYS" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert emails_in(engine) == {"ours@example.com": 1}
    assert replay_all(theirs) == ["created"], "the machine whose key opens it sends it"
    assert emails_in(engine)["theirs@example.com"] == 1
    assert state.outbox_items() == []


def test_readyz_takes_a_machine_whose_keys_open_nothing_out_of_the_load_balancer(kept, engine):
    drifted = kept(OUTBOX_KEYS=Fernet.generate_key().decode())  # started while nothing was kept
    engage_down(engine)
    submitter(english_browser(kept()))(email="kept@example.com")
    engine.clear_faults()
    answer = drifted.test_client().get("/readyz")
    assert answer.status_code == 503
    assert answer.get_json()["check"] == "OUTBOX_KEYS"
    assert answer.get_json()["outbox"] == "these keys open none of the 1 newest kept sign-ups"


def test_items_older_than_outbox_days_are_deleted_counted_and_logged(kept, engine, caplog):
    app = kept(OUTBOX_DAYS=7)
    engage_down(engine)
    submitter(english_browser(app))(email="old@example.com")
    state = app.extensions["state"]
    caplog.set_level(logging.WARNING)
    state.clock = lambda: time.time() + 6 * 86400
    assert app.extensions["outbox"].expire() == 0
    state.clock = lambda: time.time() + 7 * 86400 + 60
    assert app.extensions["outbox"].expire() == 1
    assert state.outbox_items() == []
    lines = [r.getMessage() for r in caplog.records]
    assert any("1 sign-ups of store 101 expired after 7 days" in line for line in lines)
    assert "old@example.com" not in caplog.text


def test_the_operators_commands_show_no_personal_data_unless_asked(kept, engine, caplog):
    app = kept()
    engage_down(engine)
    submitter(english_browser(app))(email="cli@example.com", firstName="Clio")
    cli = app.test_cli_runner()
    listed = cli.invoke(args=["outbox", "list"])
    assert listed.exit_code == 0 and "1 item(s)" in listed.output
    assert "cli@example.com" not in listed.output and "Clio" not in listed.output
    ref = re.search(r"([A-Z2-7]{5}-[A-Z2-7]{5})", listed.output).group(1)
    caplog.set_level(logging.WARNING)
    shown = cli.invoke(args=["outbox", "show", ref])
    assert "cli@example.com" in shown.output and "Clio" in shown.output
    assert f"outbox item {ref} shown" in caplog.text and "cli@example.com" not in caplog.text
    assert cli.invoke(args=["outbox", "retry", ref]).output.startswith("1 item(s)")
    assert cli.invoke(args=["outbox", "discard", ref]).exit_code == 0
    assert app.extensions["state"].outbox_items() == []


def test_start_up_refuses_kept_signups_without_their_keys(kept, engine, app_config, simulator):
    app = kept()
    engage_down(engine)
    submitter(english_browser(app))()
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url}
    with pytest.raises(ConfigError, match="OUTBOX_KEYS: not set, but the outbox holds 1 sign-up"):
        create_app(config)
    with pytest.raises(ConfigError, match="OUTBOX_KEYS: key 1 is not a Fernet key"):
        create_app({**config, "OUTBOX_KEYS": "not-a-key"})


def test_a_stolen_state_file_gives_away_no_personal_data(kept, engine, app_config):
    app = kept()
    engage_down(engine)
    people = [("Zlatanina", "Privatsson", "zlatanina.private@example.com", "0709876543")]
    people.append(("Örjan", "Hemligsson", "orjan.h@example.com", "0701740612"))
    for first, last, email, phone in people:
        page = submitter(english_browser(app))(
            firstName=first, lastName=last, email=email, mobilePhone=phone
        )
        assert outcome_of(page) == "queued"
    app.extensions["state"].close()
    from pathlib import Path

    raw = b"".join(
        Path(app_config["STATE_DB"] + suffix).read_bytes()
        for suffix in ("", "-wal")
        if os.path.exists(app_config["STATE_DB"] + suffix)
    )
    assert len(raw) > 0
    for first, last, email, phone in people:
        for secret in (first, last, email, phone, "709876543", email.split("@")[0]):
            assert secret.encode() not in raw, secret


# --- real processes -------------------------------------------------------------------------------
def _retry_all_now(env: dict) -> None:
    """What an operator runs when Engage is back: flask --app webapp outbox retry --all."""
    subprocess.run(
        [sys.executable, "-m", "flask", "--app", "webapp", "outbox", "retry", "--all"],
        env=env, check=True, capture_output=True, timeout=60,
    )  # fmt: skip


def _queue_while_down(
    url: str, tills: int, seconds: float, prefix: str = "t"
) -> list[tuple[str, str]]:
    from tests.conftest import enrolled_session, hidden_fields

    results: list[tuple[str, str]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def till(n: int) -> None:
        browser = enrolled_session()
        count = 0
        while time.monotonic() < deadline:
            count += 1
            email = f"{prefix}{n}-{count}@example.com"
            hidden = hidden_fields(browser.get(url, timeout=30).text)
            answer = browser.post(url, data={**VALID_FORM, "email": email, **hidden}, timeout=30)
            with lock:
                results.append((email, re.search(r'data-outcome="([^"]+)"', answer.text)[1]))

    threads = [threading.Thread(target=till, args=(n,)) for n in range(tills)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _wait_until_empty(store, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while store.outbox_count():
        assert time.monotonic() < deadline, f"{store.outbox_count()} item(s) never sent"
        time.sleep(0.25)


OUTBOX_SERVER = {"OUTBOX_KEYS": KEY, "OUTBOX_REPLAY_PER_SECOND": "50", "BREAKER_COOLDOWN": "1",
                 "ENGAGE_RETRY_SECONDS": "0.05", "ENGAGE_SETTLE_SECONDS": "0.05"}  # fmt: skip


def test_engage_down_for_a_while_with_16_tills_then_back_nobody_lost_nobody_twice(
    production_server, engine, tmp_path, store, capsys
):
    url = production_server(**OUTBOX_SERVER)
    engage_down(engine)
    results = _queue_while_down(url, tills=16, seconds=1.5)
    outcomes = collections.Counter(outcome for _, outcome in results)
    assert set(outcomes) == {"queued"}, outcomes
    engine.clear_faults()
    env = {**os.environ, "ENGAGE_BASE_URL": "http://unused.invalid", "ENGAGE_API_KEY": "k",
           "SECRET_KEY": "production-test-secret-0123456789", "STAFF_PIN": "4711",
           "STATE_DB": str(tmp_path / "state.sqlite3"), "OUTBOX_KEYS": KEY}  # fmt: skip
    _retry_all_now(env)
    _wait_until_empty(store)
    stored = emails_in(engine)
    with capsys.disabled():
        print(
            f"\noutbox: {len(results)} sign-ups kept while Engage was down, "
            f"{len(stored)} contacts after it came back"
        )
    assert {email for email, _ in results} == set(stored), "nobody lost"
    assert max(stored.values()) == 1, "nobody twice"


@pytest.fixture
def store(tmp_path):
    """The production server's SQLite state, read by the test as the server writes it."""
    from webapp.store import open_store

    state = open_store(
        {"STATE_DB": str(tmp_path / "state.sqlite3"), "DATABASE_URL": "", "WEB_THREADS": 2},
        instance_path=str(tmp_path),
    )
    yield state
    state.close()


def test_a_worker_killed_in_the_middle_of_a_replayed_create_still_creates_once(
    kept, engine, app_config, simulator
):
    """SIGKILL while the create is on its way: Engage commits it, the worker never learns.
    When the lease has run out another worker takes the item, finds the contact, and is done."""
    app = kept()
    engage_down(engine)
    submitter(english_browser(app))(email="killed@example.com")
    engine.clear_faults()
    app.extensions["state"].outbox_retry()
    engine.create_limit = 5.0  # a slow create that Engage still completes
    engine.inject("latency", on="create", seconds=1.5)
    script = (
        "import json, sys\n"
        "from webapp import create_app\n"
        "app = create_app(json.loads(sys.argv[1]))\n"
        "print('replaying', flush=True)\n"
        "app.extensions['outbox'].replay_one(app)\n"
    )
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url, "OUTBOX_KEYS": KEY,
              "ENGAGE_CREATE_TIMEOUT": 5.0}  # fmt: skip
    import json

    worker = subprocess.Popen(
        [sys.executable, "-c", script, json.dumps(config)], stdout=subprocess.PIPE, text=True
    )
    assert worker.stdout.readline().strip() == "replaying"
    deadline = time.monotonic() + 10
    while not engine.requests("/api/v3/contacts", "POST"):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    worker.send_signal(signal.SIGKILL)  # the create is in flight
    worker.wait(timeout=10)
    worker.stdout.close()
    # Engage finishes the create it had begun
    wait_until(lambda: emails_in(engine)["killed@example.com"] == 1, "the create never finished")
    state, outbox = app.extensions["state"], app.extensions["outbox"]
    assert state.outbox_items()[0]["state"] == "waiting", "still kept: nobody saw the answer"
    state.outbox_retry()  # an operator's "retry --all" meanwhile
    assert outbox.replay_one(app) is None, "leased: nobody else takes it yet"
    state.clock = lambda: time.time() + LEASE_SECONDS + 1
    assert outbox.replay_one(app) == "existing"
    assert emails_in(engine)["killed@example.com"] == 1
    assert state.outbox_items() == []


def test_two_instances_on_one_postgresql_replay_each_signup_once(
    production_server, engine, pg_database
):
    settings = {**OUTBOX_SERVER, "DATABASE_URL": pg_database}
    machine_a, machine_b = production_server(**settings), production_server(**settings)
    engage_down(engine)
    # Different people on each machine: each item must be replayed by one machine only.
    results = _queue_while_down(machine_a, tills=4, seconds=1.0, prefix="a")
    results += _queue_while_down(machine_b, tills=4, seconds=1.0, prefix="b")
    assert len({email for email, _ in results}) == len(results)
    assert {outcome for _, outcome in results} == {"queued"}
    engine.clear_faults()
    engine.latency = 0.02  # replays overlap in time on both machines
    from webapp.store import open_store

    state = open_store({"DATABASE_URL": pg_database, "WEB_THREADS": 2}, instance_path="/tmp")
    state.outbox_retry()
    _wait_until_empty(state)
    state.close()
    stored = emails_in(engine)
    assert {email for email, _ in results} == set(stored)
    assert max(stored.values()) == 1
    creates = [r.body["email"] for r in engine.requests("/api/v3/contacts", "POST")]
    assert len(creates) == len(set(creates)), "no create sent twice for anyone"


# --- what the replay workers must hold to (issue #27) ---------------------------------------------
def _steps(app, submission: str) -> list[str]:
    """The consent records' delivery steps of one sign-up, oldest first."""
    return [d["state"] for d in app.extensions["state"].consent_deliveries([submission])]


def _kept_one(app, engine, email: str) -> tuple[dict, str]:
    """One sign-up kept while Engage is down; the outbox item and its submission token."""
    engage_down(engine)
    submitter(english_browser(app))(email=email)
    engine.clear_faults()
    (item,) = app.extensions["state"].outbox_items()
    return item, item["submission"]


def test_a_replay_that_meets_a_create_in_progress_waits_and_is_done_once_found(kept, engine):
    """409 ContactWithKeyIsBeingCreated: someone else's create of this person is running. The
    item waits (its consent delivery still `kept`), and the next replay finds the contact."""
    app = kept()
    item, submission = _kept_one(app, engine, "busy@example.com")
    engine.inject("status", on="create", status=409, token="ContactWithKeyIsBeingCreated")
    assert replay_all(app, rounds=1) == ["in-progress"]
    (waiting,) = app.extensions["state"].outbox_items()
    assert (waiting["id"], waiting["state"]) == (item["id"], "waiting")
    assert _steps(app, submission) == ["kept"]
    engine.add_contact({**KNOWN_MEMBER, "email": "busy@example.com"})  # the other create finished
    assert replay_all(app) == ["existing"]
    assert app.extensions["state"].outbox_items() == []
    assert _steps(app, submission) == ["kept", "already-member"]
    assert emails_in(engine)["busy@example.com"] == 1


def close_breaker(app) -> None:
    """Engage is back, and a live sign-up said so: the breaker the outage opened closes."""
    state, name = app.extensions["state"], app.extensions["breaker"].NAME
    state.breaker_record(name, ok=True, threshold=3, cooldown=30)
    assert not state.breaker_is_open(name)


def _open_breaker(app) -> None:
    breaker = app.extensions["breaker"]
    for _ in range(breaker.threshold):
        breaker.record(Outcome("unavailable", cause="EngageServerError"))
    assert app.extensions["state"].breaker_is_open(breaker.NAME)


def test_while_the_breaker_is_open_the_replay_workers_claim_and_send_nothing(kept, engine):
    app = kept()
    item, _ = _kept_one(app, engine, "patient@example.com")
    state = app.extensions["state"]
    state.outbox_retry()
    _open_breaker(app)
    calls = len(engine.requests())
    worker = Worker(app)
    assert [worker.step() for _ in range(5)] == [1.0] * 5, "each round: the breaker, then wait"
    (still,) = state.outbox_items()
    assert still["attempts"] == item["attempts"] == 0, "nothing was claimed"
    assert len(engine.requests()) == calls, "no Engage request"
    clock = state.clock
    state.clock = lambda: clock() + app.config["BREAKER_COOLDOWN"] + 1  # the breaker closes
    assert worker.step() == 0.0
    assert state.outbox_items() == [] and emails_in(engine)["patient@example.com"] == 1


def test_replays_respect_the_breaker_and_their_failures_open_it(kept, engine):
    app = kept(BREAKER_THRESHOLD=3)
    state, breaker = app.extensions["state"], app.extensions["breaker"]
    engage_down(engine)
    for n in range(3):
        submitter(english_browser(app))(email=f"down{n}@example.com")
    close_breaker(app)
    assert replay_all(app, rounds=3) == ["unavailable"] * 3, "Engage still down"
    assert state.breaker_is_open(breaker.NAME), "three failed replays opened it"
    calls = len(engine.requests())
    state.outbox_retry()
    assert app.extensions["outbox"].replay_one(app, sleep=lambda s: None) == "unavailable"
    assert len(engine.requests()) == calls, "answered by the open breaker, Engage not asked"
    assert {i["last_error"] for i in state.outbox_items()} >= {"CircuitOpen"}


@pytest.mark.shared_state
def test_the_replay_cap_holds_across_threads_and_instances(kept, engine):
    """OUTBOX_REPLAY_PER_SECOND=2 with many due items: three workers in each of two app
    instances, round after round within one second (a frozen clock), send two in all."""
    one, two = kept(OUTBOX_REPLAY_PER_SECOND=2), kept(OUTBOX_REPLAY_PER_SECOND=2)
    engage_down(engine)
    for n in range(8):
        submitter(english_browser(one))(email=f"many{n}@example.com")
    engine.clear_faults()
    close_breaker(one)
    now = time.time()
    for app in (one, two):
        app.extensions["state"].clock = lambda: now
    one.extensions["state"].outbox_retry()
    workers = [Worker(app) for app in (one, two) for _ in range(3)]
    for _ in range(4):
        for worker in workers:
            worker.step()
    assert len(engine.requests("/api/v3/contacts", "POST")) == 2
    assert len(one.extensions["state"].outbox_items()) == 6


def test_expiry_counts_from_when_the_signup_was_kept_not_from_its_last_try(kept, engine):
    app = kept(OUTBOX_DAYS=7)
    item, submission = _kept_one(app, engine, "old@example.com")
    state, outbox = app.extensions["state"], app.extensions["outbox"]
    engage_down(engine)
    start = time.time()
    for day in range(1, 7):  # tried again every day, failing every time
        state.clock = lambda day=day: start + day * 86400
        state.outbox_retry()
        assert outbox.replay_one(app, sleep=lambda s: None) == "unavailable"
        assert outbox.expire() == 0
    state.clock = lambda: start + 7 * 86400 + 60
    assert outbox.expire() == 1, "seven days after it was kept, however often it was tried"
    assert state.outbox_items() == []
    assert _steps(app, submission) == ["kept", "expired"]


def test_deliveries_are_appended_step_by_step(kept, engine):
    """Nothing is updated: kept then sent, kept then discarded, each step read in order."""
    app = kept()
    _, sent = _kept_one(app, engine, "sent@example.com")
    assert _steps(app, sent) == ["kept"]
    assert replay_all(app) == ["created"]
    assert _steps(app, sent) == ["kept", "sent"]
    item, dropped = _kept_one(app, engine, "dropped@example.com")
    app.extensions["outbox"].discard(item)
    assert _steps(app, dropped) == ["kept", "discarded"]
    contact = app.extensions["state"].consent_deliveries([sent])[-1]["contact_id"]
    assert contact == engine.contacts()[0]["id"]


REPLAY_PROCESS = """
import json, sys, threading
from webapp import create_app
from webapp.signup.outbox import Worker
config, now = json.loads(sys.argv[1]), float(sys.argv[2])
app = create_app(config)
app.extensions["state"].clock = lambda: now
workers = [Worker(app) for _ in range(3)]
ready = threading.Barrier(3)
def run(worker):
    ready.wait()
    for _ in range(4):
        worker.step()
threads = [threading.Thread(target=run, args=(w,)) for w in workers]
[t.start() for t in threads]
[t.join() for t in threads]
app.extensions["engage"].close()
"""


@pytest.mark.shared_state
def test_the_replay_cap_holds_across_the_threads_of_a_process_and_across_processes(
    kept, engine, app_config, simulator
):
    """OUTBOX_REPLAY_PER_SECOND=3 with twelve due items and a frozen clock (one second that
    never ends): four replay threads of one process send three in all, not three each; then,
    in the next second, two processes of three threads each send three more in all. A cap
    counted per thread, per worker or per process sends more."""
    settings = {"OUTBOX_KEYS": KEY, "OUTBOX_REPLAY_PER_SECOND": 3, "ENGAGE_READ_TIMEOUT": 1.0,
                "ENGAGE_CREATE_TIMEOUT": 1.0, "ENGAGE_SETTLE_SECONDS": 0.05,
                "ENGAGE_RETRY_SECONDS": 0.05}  # fmt: skip
    app = kept(**settings)
    engage_down(engine)
    for n in range(12):
        submitter(english_browser(app))(email=f"capped{n}@example.com")
    engine.clear_faults()
    close_breaker(app)
    state = app.extensions["state"]
    state.outbox_retry()
    now = time.time()
    state.clock = lambda: now
    workers = [Worker(app) for _ in range(4)]
    ready = threading.Barrier(4)

    def run(worker):
        ready.wait()
        for _ in range(5):
            worker.step()

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(engine.requests("/api/v3/contacts", "POST")) == 3, "one process's threads"
    config = {**app_config, "ENGAGE_BASE_URL": simulator.url, **settings}
    root = str(ROOT)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", REPLAY_PROCESS, json.dumps(config), str(now + 10)], cwd=root
        )  # fmt: skip
        for _ in range(2)
    ]
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    assert len(engine.requests("/api/v3/contacts", "POST")) == 6, "two processes, one cap"
    assert len(state.outbox_items()) == 6
