"""The customer display paired with a till (issue 35): two app instances on one shared state,
the till on one and the display on the other, against the simulator over real sockets."""

from __future__ import annotations

import re

import pytest
from cryptography.fernet import Fernet

from tests.conftest import (
    KNOWN_MEMBER,
    VALID_FORM,
    create_app,
    csrf_token,
    enrol,
    hidden_fields,
    outcome_of,
    text_of,
)

# Each test on SQLite and on PostgreSQL: two instances of the app on one shared state.
pytestmark = pytest.mark.shared_state

EMAIL = "display.person@example.com"


@pytest.fixture
def two(simulator, app_config):
    """Two instances of the app on one shared state: the till's and the display's."""
    settings = {**app_config, "ENGAGE_BASE_URL": simulator.url, "ANSWER_PRIOR_SECONDS": 0.25,
                "MANAGER_PINS": "Anna@101:48291573",
                "OUTBOX_KEYS": Fernet.generate_key().decode(), "ENGAGE_READ_TIMEOUT": 1.0,
                "ENGAGE_CREATE_TIMEOUT": 1.0, "ENGAGE_SETTLE_SECONDS": 0.05,
                "ENGAGE_RETRY_SECONDS": 0.05}  # fmt: skip
    apps = [create_app(settings), create_app(settings)]
    yield apps
    for app in apps:
        app.extensions["engage"].close()


def token(html: str) -> str:
    """A CSRF token of the page, in whichever form it stands."""
    return re.search(r'name="csrf_token"(?: type="hidden")? value="([^"]+)"', html).group(1)


def paired(two):
    till_app, display_app = two
    till = enrol(till_app.test_client(), till_app, "staff")
    till.get("/?lang=en")
    display = enrol(display_app.test_client(), display_app, "display")
    rest = display.get("/display")
    assert outcome_of(rest) == "display-pairing"
    assert display.get("/display/status").get_json() == {"status": "pairing"}
    code = re.search(r"data-pairing-code>([\d ]+)<", rest.get_data(as_text=True)).group(1)
    page = till.get("/").get_data(as_text=True)
    assert "data-display-start" not in page
    answer = till.post("/display/pair", data={"csrf_token": csrf_token(page), "code": code})
    assert answer.status_code == 303
    return till, display


def hand_over(till) -> str:
    page = till.get("/").get_data(as_text=True)
    assert "data-display-start" in page
    answer = till.post("/display/start", data={"csrf_token": csrf_token(page)})
    assert answer.status_code == 303
    return answer.headers["Location"]


def display_sends(display, **fields):
    page = display.get("/display")
    assert outcome_of(page) == "form"
    data = {**VALID_FORM, "email": EMAIL, **fields, **hidden_fields(page.get_data(as_text=True))}
    return display.post("/display", data={k: v for k, v in data.items() if v is not None},
                        follow_redirects=True)  # fmt: skip


def reveal(till, till_page):
    done = till.get(till_page)
    assert outcome_of(done) == "handoff-done"
    html = done.get_data(as_text=True)
    token = re.search(r'/reveal"><input type="hidden" name="csrf_token" value="([^"]+)"',
                      html).group(1)  # fmt: skip
    return till.post(till_page + "/reveal", data={"csrf_token": token}, follow_redirects=True)


def test_pair_hand_over_sign_up_and_the_till_reveals_the_member_number(two, engine):
    till, display = paired(two)
    assert display.get("/display/status").get_json() == {"status": "idle"}
    rest = display.get("/display")
    assert outcome_of(rest) == "display-idle"
    assert "Bli medlem i vår klubb" in text_of(rest), "the store's language at rest"
    till_page = hand_over(till)
    waiting = till.get(till_page)
    assert outcome_of(waiting) == "handoff-waiting"
    assert "data-handoff-link" not in waiting.get_data(as_text=True), "no code for a phone"
    assert display.get("/display/status").get_json() == {"status": "form"}
    thanks = display_sends(display)
    assert outcome_of(thanks) == "thanks"
    assert len(engine.requests("/api/v3/contacts", "POST")) == 1
    shown = reveal(till, till_page)
    assert outcome_of(shown) == "created"
    number = engine.contacts()[0]["attributes"]["memberNumber"]
    assert number in text_of(shown)
    assert number not in thanks.get_data(as_text=True)
    rest = display.get("/display")
    assert outcome_of(rest) == "display-idle"
    assert EMAIL not in rest.get_data(as_text=True) and "Anna" not in rest.get_data(as_text=True)
    counts = two[0].extensions["state"].event_counts(None, 0)
    assert [(r["mode"], r["outcome"]) for r in counts] == [("display", "created")]


def test_a_member_reads_exactly_as_a_new_person_on_the_display(two, engine):
    engine.add_contact({**KNOWN_MEMBER, "email": "known.display@example.com"})
    till, display = paired(two)
    pages, sent = [], []
    for email in ("new.display@example.com", "known.display@example.com"):
        till_page = hand_over(till)
        before = len(engine.requests())
        pages.append(display_sends(display, email=email))
        sent += [(r.method, r.path) for r in engine.requests()[before:]]
        reveal(till, till_page)  # the cashier's choice, on the till: not the display's
    first, second = (p.get_data(as_text=True) for p in pages)
    strip = re.compile(r'name="csrf_token"[^>]*value="[^"]*"')
    assert strip.sub("", first) == strip.sub("", second)
    assert [outcome_of(p) for p in pages] == ["thanks", "thanks"]
    assert not [s for s in sent if s[0] == "PATCH" or s[1].endswith("updateContactType")]
    assert not [s for s in sent if re.fullmatch(r"/api/v3/contacts/[0-9a-f-]{36}", s[1])]


def test_a_refused_detail_is_corrected_on_the_display(two, engine):
    till, display = paired(two)
    till_page = hand_over(till)
    engine.inject("status", on="create", status=422, times=1)
    page = display_sends(display)
    assert outcome_of(page) == "rejected"
    assert outcome_of(till.get(till_page)) == "handoff-waiting"
    assert outcome_of(display_sends(display)) == "thanks"
    assert outcome_of(reveal(till, till_page)) == "created"


def test_engage_down_is_kept_and_the_till_says_so(two, engine):
    till, display = paired(two)
    till_page = hand_over(till)
    engine.inject("status", on="any", status=503, times=None)
    assert outcome_of(display_sends(display)) == "thanks"
    assert outcome_of(reveal(till, till_page)) == "queued"


def test_the_till_cancels_and_the_display_goes_back_to_rest(two, engine):
    till, display = paired(two)
    till_page = hand_over(till)
    page = display.get("/display")
    assert outcome_of(page) == "form"
    till.post(
        till_page + "/cancel",
        data={"csrf_token": token(till.get(till_page).get_data(as_text=True))},
    )
    assert display.get("/display/status").get_json() == {"status": "idle"}
    data = {**VALID_FORM, **hidden_fields(page.get_data(as_text=True))}
    answer = display.post("/display", data=data, follow_redirects=True)
    assert outcome_of(answer) == "display-idle", "nothing is sent for a cancelled handoff"
    assert engine.requests("/api/v3/contacts", "POST") == []


def test_the_display_gives_up_on_idle_and_never_leaves_a_phone_in(two, engine):
    till, display = paired(two)
    till_page = hand_over(till)
    assert outcome_of(display.get("/display")) == "form"
    assert display.get("/display/status").get_json() == {"status": "form"}, "the one it took"
    assert outcome_of(display.get("/display/rest", follow_redirects=True)) == "display-idle"
    assert display.get("/display/status").get_json() == {"status": "idle"}
    assert outcome_of(till.get(till_page)) == "handoff-closed"


def test_unpaired_from_either_side_and_a_display_is_never_a_till(two):
    till, display = paired(two)
    assert 'href="/display/unpair"' in display.get("/display").get_data(as_text=True)
    # On the display, facing the customers, unpairing asks for the staff PIN.
    asked = display.get("/display/unpair")
    assert outcome_of(asked) == "display-unpair"
    page = asked.get_data(as_text=True)
    assert display.post("/display/unpair", data={"csrf_token": token(page)}).status_code == 400
    wrong = display.post("/display/unpair", data={"csrf_token": token(asked.get_data(as_text=True)),
                                                  "pin": "1234"})  # fmt: skip
    assert wrong.status_code == 400 and outcome_of(wrong) == "display-unpair"
    assert display.get("/display/status").get_json() == {"status": "idle"}, "still paired"
    answer = display.post("/display/unpair", data={
        "csrf_token": token(wrong.get_data(as_text=True)), "pin": "4711"})  # fmt: skip
    assert answer.status_code == 303
    assert display.get("/display/status").get_json() == {"status": "pairing"}
    assert outcome_of(display.get("/display")) == "display-pairing"
    assert "data-display-start" not in till.get("/").get_data(as_text=True)
    assert display.get("/").status_code == 303, "a display's / is its own page"
    assert display.post("/lookup", data={"csrf_token": token(page)}).status_code == 404
    assert display.post("/display/start", data={"csrf_token": token(page)}).status_code == 404
    till, display = paired(two)
    # On the till: "Customer display", the page that pairs or, once paired, unpairs.
    form = till.get("/").get_data(as_text=True)
    assert 'class="display-link" href="/display/pair"' in form, "reachable while paired"
    page = till.get("/display/pair").get_data(as_text=True)
    assert "Unpair the customer display" in page
    till.post("/display/unpair", data={"csrf_token": token(page)})
    assert outcome_of(display.get("/display")) == "display-pairing"


def test_a_wrong_pairing_code_pairs_nothing(two):
    till_app, _display_app = two
    till = enrol(till_app.test_client(), till_app, "staff")
    page = till.get("/").get_data(as_text=True)
    answer = till.post("/display/pair", data={"csrf_token": csrf_token(page), "code": "000000"})
    assert answer.status_code == 400
    assert "data-display-start" not in till.get("/").get_data(as_text=True)


def test_the_managers_view_shows_each_display_and_its_till(two):
    from tests.pages.test_manager import manager

    till, display = paired(two)
    display.get("/display")
    browser, _ = manager(two[1], "48291573")
    page = browser.get("/manager/")
    assert "Customer displays and their tills" in text_of(page)
    assert "data-displays" in page.get_data(as_text=True)


def test_no_phone_can_take_a_handoff_given_to_the_display(two):
    till, display = paired(two)
    till_page = hand_over(till)
    handoff = two[0].extensions["state"].handoff(till=till_page.rsplit("/", 1)[1])
    phone = two[1].test_client()
    page = phone.get(f"/join/{handoff['store']}").get_data(as_text=True)
    answer = phone.post(f"/join/{handoff['store']}",
                        data={"code": handoff["code"], "csrf_token": token(page)})  # fmt: skip
    assert outcome_of(answer) == "handoff-closed"
    assert outcome_of(display.get("/display")) == "form", "the display still has it"


def test_without_javascript_a_framed_page_says_when_the_till_closed_the_form(two, engine):
    till, display = paired(two)
    till_page = hand_over(till)
    form = display.get("/display").get_data(as_text=True)
    assert re.search(r'<noscript><iframe class="display-watch-frame" src="/display/watch"', form)
    watch = display.get("/display/watch")
    html = watch.get_data(as_text=True)
    assert 'data-watch="open"' in html and 'http-equiv="refresh"' in html
    assert "frame-ancestors 'self'" in watch.headers["Content-Security-Policy"]
    assert watch.headers["X-Frame-Options"] == "SAMEORIGIN", "framed by its own site only"
    assert "frame-ancestors 'none'" in display.get("/display").headers["Content-Security-Policy"]
    till.post(
        till_page + "/cancel",
        data={"csrf_token": token(till.get(till_page).get_data(as_text=True))},
    )
    html = display.get("/display/watch").get_data(as_text=True)
    assert 'data-watch="closed"' in html and 'http-equiv="refresh"' not in html
    assert "Kassapersonalen har stängt formuläret." in html, "in the language of the form"
    assert re.search(r'href="/display/rest" target="_top"', html), "the way back, for the screen"
    assert EMAIL not in html and "Anna" not in html
    assert two[0].test_client().get("/display/watch").status_code == 404, "a display's alone"
    assert till.get("/display/watch").status_code == 404


def test_the_till_says_so_when_its_display_does_not_pick_the_form_up(two, engine):
    """A display switched off (or asleep) never polls: after DISPLAY_AWAY_SECONDS the till's
    waiting page says so, and once the display takes the form the warning goes."""
    from webapp.pages.handoff import DISPLAY_AWAY_SECONDS

    till, display = paired(two)
    till_page = hand_over(till)
    status_url = till_page + "/status"
    assert till.get(status_url).get_json() == {"status": "waiting"}
    assert "data-display-away" not in till.get(till_page).get_data(as_text=True)
    state = two[0].extensions["state"]
    clock = state.clock
    state.clock = lambda: clock() + DISPLAY_AWAY_SECONDS + 1
    try:
        assert till.get(status_url).get_json() == {"status": "unanswered"}  # app.js reloads
        page = till.get(till_page)
        assert outcome_of(page) == "handoff-waiting"
        assert "data-display-away" in page.get_data(as_text=True)
        assert 'http-equiv="refresh"' in page.get_data(as_text=True), "no-JS: it looks again"
        assert outcome_of(display.get("/display")) == "form", "switched on: it takes it"
        assert till.get(status_url).get_json() == {"status": "waiting"}
        assert "data-display-away" not in till.get(till_page).get_data(as_text=True)
    finally:
        state.clock = clock
