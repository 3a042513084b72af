"""The store manager's view: figures that sign-ups produced, what needs a person, the queue, the
consent export; access by a PIN of the manager's own, scoped to a store."""

from __future__ import annotations

import csv
import io
import logging
import re

import pytest
from cryptography.fernet import Fernet

from tests.conftest import (
    KNOWN_MEMBER,
    VALID_FORM,
    english_visitor,
    enrol,
    hidden_fields,
    outcome_of,
    submitter,
    text_of,
)
from webapp import ConfigError, create_app

KEY = Fernet.generate_key().decode()
MANAGERS = "Anna@101:48291573,Bo@201:73920461,CRM@*:91827364"


@pytest.fixture
def chain(simulated_app):
    return simulated_app(MANAGER_PINS=MANAGERS, OUTBOX_KEYS=KEY, ENGAGE_RETRY_SECONDS=0,
                         ENGAGE_SETTLE_SECONDS=0)  # fmt: skip


def till(app, store="101", mode="staff"):
    browser = enrol(app.test_client(), app, mode, store)
    browser.get("/?lang=en")
    return submitter(browser)


def manager(app, pin):
    browser = english_visitor(app)
    page = browser.get("/manager/").get_data(as_text=True)
    answer = browser.post("/manager/login", data={"pin": pin, **hidden_fields(page)})
    return browser, answer


def token(browser) -> str:
    html = browser.get("/manager/").get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def test_a_manager_signs_in_with_their_own_pin_never_the_staff_pin(chain):
    browser, answer = manager(chain, "4711")  # the staff PIN
    assert answer.status_code == 400 and "That PIN is not right" in text_of(answer)
    browser, answer = manager(chain, "48291573")
    assert answer.status_code == 303
    page = browser.get("/manager/")
    assert outcome_of(page) == "manager" and "Signed in as Anna." in text_of(page)
    assert page.headers["Cache-Control"] == "no-store"
    browser.post("/manager/logout", data={"csrf_token": token(browser)})
    assert outcome_of(browser.get("/manager/")) == "manager-login"


def test_the_figures_are_what_the_signups_produced(chain, engine):
    engine.add_contact({**KNOWN_MEMBER, "email": "known@example.com"})
    signup = till(chain)
    for n in range(3):
        assert outcome_of(signup(email=f"new{n}@example.com")) == "created"
    assert outcome_of(signup(email="known@example.com")) == "existing"
    engine.inject("status", status=422)
    assert outcome_of(signup(email="refused@example.com")) == "rejected"
    engine.inject("status", on="any", status=503, times=2)
    assert outcome_of(signup(email="kept@example.com")) == "queued"
    till(chain, "201")(email="elsewhere@example.com")  # another store's
    browser, _ = manager(chain, "48291573")
    page = browser.get("/manager/")
    html = page.get_data(as_text=True)
    rows = dict(re.findall(r'<tr><th scope="row">([^<]+)</th><td>(\d+)</td>', html))
    assert rows == {"New members": "3", "Already members": "1", "Kept for later": "1",
                    "Refused by the membership system": "1"}  # fmt: skip
    assert '<svg class="chart"' in html and "6 sign-ups today" in html
    assert "EngageRejected" in html, "what Engage said, by count (the raw token in a tooltip)"
    assert "Engage" not in text_of(page), "one word for it, as every other page: the system"
    assert "Connection to the membership system" in text_of(page)
    assert "Staff tablet" in text_of(page)
    assert "kept@example.com" not in html and "refused@example.com" not in html


def test_a_manager_of_another_store_sees_none_of_it(chain, engine):
    till(chain)(email="anna.store@example.com")
    engine.inject("status", on="any", status=503, times=2)
    till(chain)(email="kept.101@example.com")
    bo, _ = manager(chain, "73920461")
    html = bo.get("/manager/").get_data(as_text=True)
    assert "No sign-ups yet." in html and "0 sign-ups waiting" in html
    assert (
        bo.get("/manager/consents.csv?store=101&from=2020-01-01&to=2099-01-01").status_code == 404
    )
    ref = chain.extensions["state"].outbox_items()[0]["id"]
    shown = bo.post(f"/manager/items/{ref[:5]}-{ref[5:]}/show", data={"csrf_token": token(bo)})
    assert shown.status_code == 404
    crm, _ = manager(chain, "91827364")  # the chain-wide role sees every store
    assert "1 sign-up waiting" in text_of(crm.get("/manager/"))


def test_an_item_refused_by_engage_is_corrected_and_created_once(chain, engine, caplog):
    signup = till(chain)
    engine.inject("status", on="any", status=503, times=2)
    assert outcome_of(signup(email="typo@exampel.com", firstName="Siv")) == "queued"
    engine.inject("status", status=422)  # the replay is refused: kept for a person
    state, outbox = chain.extensions["state"], chain.extensions["outbox"]
    state.outbox_retry()
    assert outbox.replay_one(chain, sleep=lambda s: None) == "rejected"
    browser, _ = manager(chain, "48291573")
    overview = browser.get("/manager/").get_data(as_text=True)
    ref = re.search(r'action="/manager/items/([A-Z2-7-]+)/show"', overview).group(1)
    assert "typo@exampel.com" not in overview, "details only after an explicit show"
    caplog.set_level(logging.INFO)
    shown = browser.post(f"/manager/items/{ref}/show", data={"csrf_token": token(browser)})
    assert 'value="typo@exampel.com"' in shown.get_data(as_text=True)
    assert f"outbox item {ref} shown to Anna" in caplog.text
    assert "typo@exampel.com" not in caplog.text
    bad = browser.post(f"/manager/items/{ref}/correct",
                       data={"csrf_token": token(browser), "email": "still wrong"})  # fmt: skip
    assert bad.status_code == 400 and "Enter an email address like" in text_of(bad)
    fixed = browser.post(f"/manager/items/{ref}/correct",
                         data={"csrf_token": token(browser), "email": "siv@example.com",
                               "firstName": "Siv", "countryCode": "SE"})  # fmt: skip
    assert fixed.status_code == 303
    assert outbox.replay_one(chain, sleep=lambda s: None) == "created"
    emails = [c["attributes"]["email"] for c in engine.contacts()]
    assert emails.count("siv@example.com") == 1 and "typo@exampel.com" not in emails
    assert state.outbox_items() == []
    assert outbox.replay_one(chain, sleep=lambda s: None) is None, "sent once"


def test_an_item_is_discarded_and_its_consent_records_say_so(chain, engine):
    engine.inject("status", on="any", status=503, times=2)
    till(chain)(email="gone@example.com")
    engine.inject("status", status=422)
    chain.extensions["state"].outbox_retry()
    chain.extensions["outbox"].replay_one(chain, sleep=lambda s: None)
    browser, _ = manager(chain, "48291573")
    ref = re.search(r"items/([A-Z2-7-]+)/show", browser.get("/manager/").get_data(as_text=True))[1]
    asked = browser.post(f"/manager/items/{ref}/discard", data={"csrf_token": token(browser)})
    assert asked.status_code == 200 and outcome_of(asked) == "manager-discard", "one tap asks"
    assert len(chain.extensions["state"].outbox_items()) == 1, "nothing removed yet"
    assert 'name="confirm" value="yes"' in asked.get_data(as_text=True), "works without JS"
    confirmed = {"csrf_token": token(browser), "confirm": "yes"}
    assert browser.post(f"/manager/items/{ref}/discard", data=confirmed).status_code == 303
    assert chain.extensions["state"].outbox_items() == []
    rows = chain.extensions["consent_records"].export(store="101")
    assert {r["delivery"] for r in rows} == {"discarded"} and rows[0]["outbox_ref"] == ref


def test_an_item_no_key_opens_is_shown_for_what_it_is_and_can_be_discarded(simulated_app, engine):
    """A sign-up kept under a key that was dropped before a rekey: "Show details" and
    "Correct" say what it is and what to do (no 500), and the manager can discard it; the
    command line says the same in one line and discards it too."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings = {"MANAGER_PINS": MANAGERS, "ENGAGE_RETRY_SECONDS": 0}
    before = simulated_app(OUTBOX_KEYS=old, **settings)
    engine.inject("status", on="any", status=503, times=None)
    till(before)(email="old.key@example.com")
    till(simulated_app(OUTBOX_KEYS=f"{new},{old}", **settings))(email="new.key@example.com")
    after = simulated_app(OUTBOX_KEYS=new, **settings)  # the old key dropped, no rekey
    engine.clear_faults()
    state = after.extensions["state"]
    state.outbox_retry()
    said = sorted(after.extensions["outbox"].replay_one(after) for _ in range(2))
    assert said == ["created", "unopened"]
    browser, _ = manager(after, "48291573")
    overview = browser.get("/manager/").get_data(as_text=True)
    ref = re.search(r'action="/manager/items/([A-Z2-7-]+)/show"', overview).group(1)
    for action in ("show", "correct"):
        data = {"csrf_token": token(browser), "email": "x@example.com"}
        page = browser.post(f"/manager/items/{ref}/{action}", data=data)
        assert page.status_code == 200 and outcome_of(page) == "manager-item"
        assert "cannot be opened with this deployment's keys" in text_of(page)
        assert 'name="email"' not in page.get_data(as_text=True), "nothing to correct"
    cli = after.test_cli_runner()
    shown = cli.invoke(args=["outbox", "show", ref])
    assert shown.exit_code == 1 and "Traceback" not in shown.output
    assert f"{ref} cannot be opened with this deployment's OUTBOX_KEYS" in shown.output
    assert "(cannot be opened with these OUTBOX_KEYS)" in cli.invoke(args=["outbox", "list"]).output
    confirmed = {"csrf_token": token(browser), "confirm": "yes"}
    assert browser.post(f"/manager/items/{ref}/discard", data=confirmed).status_code == 303
    assert state.outbox_items() == []
    assert [c["attributes"]["email"] for c in engine.contacts()] == ["new.key@example.com"]


def test_the_queue_shows_depth_and_sends_now(chain, engine):
    engine.inject("status", on="any", status=503, times=4)
    signup = till(chain)
    signup(email="q1@example.com")
    signup(email="q2@example.com")
    browser, _ = manager(chain, "48291573")
    assert "2 sign-ups waiting for the membership system" in text_of(browser.get("/manager/"))
    state = chain.extensions["state"]
    before = [i["next_attempt"] for i in state.outbox_items()]
    browser.post("/manager/queue/retry", data={"csrf_token": token(browser)})
    after = [i["next_attempt"] for i in state.outbox_items()]
    assert all(a < b for a, b in zip(after, before, strict=True)), "due now"


def test_the_consent_export_downloads_as_csv(chain, engine):
    till(chain)(email="export@example.com")
    browser, _ = manager(chain, "48291573")
    answer = browser.get("/manager/consents.csv?store=101&from=2020-01-01&to=2099-12-31")
    assert answer.status_code == 200 and answer.mimetype == "text/csv"
    assert answer.headers["Cache-Control"] == "no-store"
    assert "attachment" in answer.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True))))
    assert len(rows) == 4 and rows[0]["contact_id"] == engine.contacts()[0]["id"]
    assert "export@example.com" not in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    ("start", "end"), [("2026-01-01", "9999-12-31"), ("2026-02-01", "2026-01-01"), ("x", "y")]
)
def test_the_consent_export_answers_400_with_the_form_back_for_dates_it_cannot_use(
    chain, start, end
):
    """`to=9999-12-31` made the day after it overflow (a 500): now the form comes back, with
    what was chosen and what to change; the command line refuses in one line."""
    browser, _ = manager(chain, "48291573")
    answer = browser.get(f"/manager/consents.csv?store=101&from={start}&to={end}")
    assert answer.status_code == 400 and outcome_of(answer) == "manager"
    html = answer.get_data(as_text=True)
    assert "the first no later than the last" in text_of(answer)
    assert f'name="to" type="date" value="{end}"' in html
    if start != "x":
        result = chain.test_cli_runner().invoke(
            args=["consents", "export", "--store", "101", "--from", start, "--to", end]
        )
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert "Invalid value for '--from' / '--to'" in result.output


def test_no_exported_cell_can_run_as_a_spreadsheet_formula(chain, engine):
    """OWASP's CSV-injection rule: a cell that begins with =, +, -, @, a tab or a CR is written
    with a ' in front. The submission token is the client's to send, so it is checked against
    the format the app issues, and refused otherwise."""
    from webapp.signup.consent_records import as_csv

    cells = ["=HYPERLINK(1)", "+1", "-2+3", "@SUM(A1)", "\tx", "\rx", "plain", "a=b"]
    out = as_csv([{"text_label": cell} for cell in cells])
    written = [row["text_label"] for row in csv.DictReader(io.StringIO(out, newline=""))]
    assert written[:6] == ["'=HYPERLINK(1)", "'+1", "'-2+3", "'@SUM(A1)", "'\tx", "'\rx"]
    assert written[6:] == ["plain", "a=b"]
    browser = enrol(chain.test_client(), chain)
    browser.get("/?lang=en")

    def send(email: str, token: str) -> str:
        hidden = hidden_fields(browser.get("/").get_data(as_text=True))
        fields = {**VALID_FORM, "email": email, **hidden, "submission": token}
        return outcome_of(browser.post("/", data=fields, follow_redirects=True))

    assert send("a@example.com", "-" * 10 + "=cmd|x" * 3) == "invalid", "not a token we issue"
    assert send("b@example.com", "-" + "A" * 23) == "created", "one we could have issued"
    browser, _ = manager(chain, "48291573")
    exported = browser.get("/manager/consents.csv?store=101&from=2020-01-01&to=2099-12-31")
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert {row["submission"] for row in rows} == {"'-" + "A" * 23}


def test_manager_pins_are_limited_like_the_staff_pin(chain, caplog):
    statuses = []
    for address in range(8):
        browser = english_visitor(chain)
        environ = {"REMOTE_ADDR": f"10.1.0.{address + 1}"}
        for guess in range(6):
            page = browser.get("/manager/", environ_base=environ).get_data(as_text=True)
            form = {"pin": f"1000{address:02d}{guess:02d}", **hidden_fields(page)}
            statuses.append(browser.post("/manager/login", data=form,
                                         environ_base=environ).status_code)  # fmt: skip
    assert statuses.count(400) == 30 and 429 in statuses
    assert "manager PIN entry locked for the whole deployment" in caplog.text
    browser, answer = manager(chain, "48291573")
    assert answer.status_code == 429, "a browser nobody signed in on is refused for the hour"


def test_strangers_spending_the_cap_lock_out_no_manager_who_signed_in_before(chain):
    """Thirty wrong PINs from anywhere must not take the one screen for queued and refused
    sign-ups from the managers: a browser where a manager signed in before, and a tablet
    staff enrolled, may still sign in (within their own limits)."""
    regular, _ = manager(chain, "48291573")
    regular.post("/manager/logout", data={"csrf_token": token(regular)})
    tablet = enrol(english_visitor(chain), chain)
    for n in range(30):
        stranger = english_visitor(chain)
        environ = {"REMOTE_ADDR": f"10.2.{n // 200}.{n % 200 + 1}"}
        page = stranger.get("/manager/", environ_base=environ).get_data(as_text=True)
        stranger.post("/manager/login", data={"pin": f"1{n:07d}", **hidden_fields(page)},
                      environ_base=environ)  # fmt: skip
    _, refused = manager(chain, "48291573")
    assert refused.status_code == 429
    for browser in (regular, tablet):
        page = browser.get("/manager/").get_data(as_text=True)
        answer = browser.post("/manager/login", data={"pin": "91827364", **hidden_fields(page)})
        assert answer.status_code == 303
        assert outcome_of(browser.get("/manager/")) == "manager"


@pytest.mark.shared_state
def test_signing_out_ends_the_session_on_every_machine(simulated_app, engine):
    """A copy of the session cookie taken before sign-out opens nothing afterwards, on this
    machine or another of the deployment."""
    settings = {"MANAGER_PINS": MANAGERS, "OUTBOX_KEYS": KEY}
    one, two = simulated_app(**settings), simulated_app(**settings)
    browser, _ = manager(one, "48291573")
    copied = browser.get_cookie("session").value
    elsewhere = english_visitor(two)
    elsewhere.set_cookie("session", copied)
    assert outcome_of(elsewhere.get("/manager/")) == "manager", "one session, every machine"
    browser.post("/manager/logout", data={"csrf_token": token(browser)})
    for app in (one, two):
        thief = english_visitor(app)
        thief.set_cookie("session", copied)
        assert outcome_of(thief.get("/manager/")) == "manager-login"
        shown = thief.post("/manager/items/AAAAA-AAAAA/show", data={"csrf_token": "x"})
        assert shown.status_code in (303, 400)


@pytest.mark.shared_state
def test_a_changed_pin_ends_that_managers_sessions_everywhere(simulated_app, engine):
    before = simulated_app(MANAGER_PINS=MANAGERS, OUTBOX_KEYS=KEY)
    anna, _ = manager(before, "48291573")
    bo, _ = manager(before, "73920461")
    changed = MANAGERS.replace("Anna@101:48291573", "Anna@101:55512345")
    simulated_app(MANAGER_PINS=changed, OUTBOX_KEYS=KEY)  # a machine restarted with the new PIN
    assert outcome_of(anna.get("/manager/")) == "manager-login", "ended on the old machine too"
    assert outcome_of(bo.get("/manager/")) == "manager", "nobody else's session ends"


def test_every_manager_page_needs_a_manager(chain):
    visitor = english_visitor(chain)
    paths = [
        ("GET", "/manager/consents.csv?store=101&from=2020-01-01&to=2020-01-02"),
        ("POST", "/manager/queue/retry"),
        ("POST", "/manager/items/AAAAA-AAAAA/show"),
    ]
    for method, path in paths:
        answer = visitor.open(path, method=method, data={"csrf_token": "x"})
        assert answer.status_code in (303, 400), path


def test_manager_pins_are_checked_at_start_up(app_config):
    for value, message in [("Anna@101:1234", "at least 8 digits"),
                           ("Anna@101:12345678,Bo@201:12345678", "a PIN of their own"),
                           ("no-store-here", "name@store:pin")]:  # fmt: skip
        with pytest.raises(ConfigError, match=message):
            create_app({**app_config, "MANAGER_PINS": value})
    with pytest.raises(ConfigError, match="must not be the staff PIN"):
        create_app({**app_config, "STAFF_PIN": "47114711", "MANAGER_PINS": "A@101:47114711"})


# --- what the manager's view must hold to (issue #27) ---------------------------------------
def test_a_one_store_manager_asking_for_another_store_sees_none_of_its_figures(chain, engine):
    signup = till(chain, "101")
    for n in range(3):
        signup(email=f"store101.{n}@example.com")
    till(chain, "201")(email="store201@example.com")
    bo, _ = manager(chain, "73920461")  # Bo@201
    page = bo.get("/manager/?store=101")
    html = page.get_data(as_text=True)
    rows = dict(re.findall(r'<tr><th scope="row">([^<]+)</th><td>(\d+)</td>', html))
    assert rows == {"New members": "1"}, "store 201's one sign-up, never store 101's three"
    assert 'value="101"' not in html, "store 101 is not even offered"


def test_the_consent_csv_of_one_store_holds_only_that_stores_rows(chain, engine):
    till(chain, "101")(email="only.here@example.com")
    till(chain, "201")(email="elsewhere@example.com")
    till(chain, "301")(email="further@example.com")
    crm, _ = manager(chain, "91827364")
    answer = crm.get("/manager/consents.csv?store=201&from=2020-01-01&to=2099-12-31")
    rows = list(csv.DictReader(io.StringIO(answer.get_data(as_text=True), newline="")))
    assert len(rows) == 4 and {row["store"] for row in rows} == {"201"}
    assert {row["contact_id"] for row in rows} == {
        c["id"] for c in engine.contacts() if c["attributes"]["email"] == "elsewhere@example.com"
    }


def test_a_managers_session_ends_after_session_seconds(chain):
    from webapp.pages.manager import SESSION_SECONDS

    browser, _ = manager(chain, "48291573")
    assert outcome_of(browser.get("/manager/")) == "manager"
    state = chain.extensions["state"]
    clock = state.clock
    state.clock = lambda: clock() + SESSION_SECONDS - 5
    assert outcome_of(browser.get("/manager/")) == "manager", "still within its minutes"
    state.clock = lambda: clock() + SESSION_SECONDS + 1
    assert outcome_of(browser.get("/manager/")) == "manager-login", "the PIN is asked again"


def test_a_managers_correction_is_looked_up_before_anything_is_created(chain, engine):
    """The corrected details belong to someone already in Engage (the customer's real
    address): the replay finds them and creates nobody."""
    signup = till(chain)
    engine.inject("status", on="any", status=503, times=2)
    assert outcome_of(signup(email="typo@exampel.com")) == "queued"
    engine.inject("status", status=422)
    state, outbox = chain.extensions["state"], chain.extensions["outbox"]
    state.outbox_retry()
    assert outbox.replay_one(chain, sleep=lambda s: None) == "rejected"
    engine.add_contact({**KNOWN_MEMBER, "email": "real@example.com"})
    browser, _ = manager(chain, "48291573")
    ref = re.search(r"items/([A-Z2-7-]+)/show", browser.get("/manager/").get_data(as_text=True))[1]
    corrected = {"csrf_token": token(browser), "email": "real@example.com", "countryCode": "SE"}
    fixed = browser.post(f"/manager/items/{ref}/correct", data=corrected)
    assert fixed.status_code == 303
    creates = len(engine.requests("/api/v3/contacts", "POST"))
    assert outbox.replay_one(chain, sleep=lambda s: None) == "existing"
    assert len(engine.requests("/api/v3/contacts", "POST")) == creates, "found, not created"
    assert [c["attributes"]["email"] for c in engine.contacts()] == ["real@example.com"]


# --- what a store manager stumbled on (issue #23) -------------------------------------------
def test_the_connection_line_says_what_engage_did_lately_not_only_the_breaker(chain, engine):
    """Engage answered 503 and sign-ups were kept, while the breaker stayed closed: the line
    says how many of the last minutes' sign-ups went unanswered."""
    signup = till(chain)
    for n in range(2):
        assert outcome_of(signup(email=f"fine{n}@example.com")) == "created"
    engine.inject("status", on="any", status=503, times=2)
    assert outcome_of(signup(email="kept.a@example.com")) == "queued"
    browser, _ = manager(chain, "48291573")
    text = text_of(browser.get("/manager/"))
    assert "1 of the last 3 sign-ups (10 minutes) went unanswered by the membership system." in text
    assert "Sending is not paused." in text
    assert "Key to the chart" in browser.get("/manager/").get_data(as_text=True)
    assert "Today by hour" in text


def test_the_consent_csv_opens_in_nordic_excel(chain, engine):
    """UTF-8 with a byte order mark (Excel reads å, ä, ö right), semicolons on request (what
    Excel in a Nordic language splits on), and the manager's own time beside UTC."""
    till(chain)(email="excel@example.com", firstName="Åsa")
    crm, _ = manager(chain, "91827364")
    answer = crm.get("/manager/consents.csv?store=101&from=2020-01-01&to=2099-12-31&sep=semicolon")
    body = answer.get_data()
    assert body.startswith("\ufeff".encode())
    text = body.decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text, newline=""), delimiter=";"))
    assert len(rows) == 4 and rows[0]["store"] == "101"
    assert rows[0]["at_local"] and rows[0]["at_local"] != rows[0]["at_utc"][:19].replace("T", " ")
    commas = crm.get("/manager/consents.csv?store=101&from=2020-01-01&to=2099-12-31")
    assert len(list(csv.DictReader(io.StringIO(commas.get_data().decode("utf-8-sig"),
                                               newline="")))) == 4  # fmt: skip


def test_a_refused_kept_item_marks_the_field_engage_named_and_no_raw_token_shows(chain, engine):
    signup = till(chain)
    engine.inject("status", on="any", status=503, times=2)
    assert outcome_of(signup(email="typo@exampel.com")) == "queued"
    engine.inject("status", status=422, body="engage")  # the simulator names the field
    state, outbox = chain.extensions["state"], chain.extensions["outbox"]
    state.outbox_retry()
    assert outbox.replay_one(chain, sleep=lambda s: None) == "rejected"
    item = state.outbox_items()[0]
    browser, _ = manager(chain, "48291573")
    overview = browser.get("/manager/")
    visible = text_of(overview)
    assert "The membership system refused a detail" in visible
    for raw in ("EngageRejected", "EngageServerError", "ValidationError"):
        assert raw not in visible, raw
    ref = re.search(r"items/([A-Z2-7-]+)/show", overview.get_data(as_text=True))[1]
    shown = browser.post(f"/manager/items/{ref}/show", data={"csrf_token": token(browser)})
    marked = item["last_error"].split(":", 1)[1].split(",")
    assert marked, "the replay kept which fields Engage named"
    html = shown.get_data(as_text=True)
    for name in marked:
        assert f'id="{name}-error"' in html
    assert "EngageRejected" not in text_of(shown)
