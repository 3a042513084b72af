"""The simulator's own contract: each status and body engage-api.md describes, over HTTP."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests

from tests.conftest import cycle_garbage, wait_until

HEADERS = {"apikey": "k", "User-Agent": "contract-test/1.0", "Content-Type": "application/json"}
MEMBER = {"contactType": "Member", "email": "eva@example.com", "countryCode": "SE"}


@pytest.fixture
def http(simulator):
    session = requests.Session()
    session.trust_env = False

    def call(method, path, *, headers=HEADERS, **kwargs):
        return session.request(method, simulator.url + path, headers=headers, timeout=5, **kwargs)

    yield call
    session.close()


def create(http, body=MEMBER, query="?source=POS&storeExternalId=101", **kwargs):
    return http("POST", "/api/v3/contacts" + query, data=json.dumps(body), **kwargs)


def test_find_answers_the_id_as_a_json_string_literal(http, engine):
    contact = engine.add_contact(MEMBER)
    response = http("GET", "/api/v3/contacts/id", params={"email": "EVA@example.com"})
    assert response.status_code == 200
    assert response.text == f'"{contact["id"]}"'


@pytest.mark.parametrize(
    ("params", "status", "token"),
    [
        ({"email": "nobody@example.com"}, 404, "ContactNotFound"),
        ({"email": "not-an-email"}, 400, "InvalidEmailAddress"),
        ({"mobilePhone": "0701234567"}, 400, "InvalidPhoneNumber"),
        ({"socialSecurityNumber": "12"}, 400, "InvalidSocialSecurityNumber"),
        ({"email": "eva@example.com", "contactType": "Nope"}, 400, "InvalidContactType"),
        ({}, 400, "InvalidSearchQuery"),
    ],
)
def test_find_errors_carry_the_documented_tokens(http, params, status, token):
    response = http("GET", "/api/v3/contacts/id", params=params)
    assert response.status_code == status
    assert response.json()["errorCode"] == token


def test_find_with_several_matches_lists_them_in_message_details(http, engine):
    ids = sorted(engine.add_contact(MEMBER)["id"] for _ in range(2))
    response = http("GET", "/api/v3/contacts/id", params={"email": "eva@example.com"})
    assert response.status_code == 409
    assert response.json()["messageDetails"]["multipleMatchesFound"] == ids


def test_find_by_phone_needs_the_plus_encoded(http, engine):
    engine.add_contact({"email": "p@example.com", "mobilePhone": "+46701234567"})
    assert http("GET", "/api/v3/contacts/id?mobilePhone=%2B46701234567").status_code == 200
    # An unencoded + arrives as a space: Engage sees an invalid number.
    assert http("GET", "/api/v3/contacts/id?mobilePhone=+46701234567").status_code == 400


def test_find_any_stops_at_the_first_attribute_the_value_looks_like(http, engine):
    engine.add_contact({"email": "a@example.com", "externalId": "+46700000000"})
    response = http("GET", "/api/v3/contacts/id", params={"any": "+46700000000"})
    assert response.status_code == 404  # it looked like a phone number, so customKey was not tried


def test_create_answers_201_with_the_full_contact(http):
    response = create(http, {**MEMBER, "birthDay": "1966-06-26", "lang": "sv"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "attributes", "meta", "preferences", "consents"}
    attributes = body["attributes"]
    assert attributes["country"] == "Sweden" and attributes["countryCode"] == "SE"
    assert attributes["age"] >= 60 and attributes["memberNumber"].isdigit()
    assert attributes["currentStore"]["externalId"] == "101"
    assert attributes["lastName"] is None  # unset fields come back as null
    assert body["meta"]["approved"] is True and body["meta"]["contactType"] == "Member"


def test_create_as_unapproved_is_stored_unapproved(http):
    response = create(http, query="?source=POS&storeExternalId=101&createAsUnapproved=true")
    assert response.json()["meta"]["approved"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**MEMBER, "email": "nope"}, "email"),
        ({**MEMBER, "mobilePhone": "070 123 45 67"}, "mobilePhone"),
        ({**MEMBER, "birthDay": "31/01/1990"}, "birthDay"),
        ({**MEMBER, "birthDay": "2999-01-01"}, "birthDay"),
        ({**MEMBER, "countryCode": "XX"}, "countryCode"),
        ({**MEMBER, "contactType": "Ghost"}, "contactType"),
        ({"contactType": "Member", "firstName": "No key"}, "email"),
        ({**MEMBER, "consents": [{"id": "memberConsent"}]}, "consents"),
        ({**MEMBER, "consents": [{"id": "unknownConsent", "value": True}]}, "consents"),
        ({**MEMBER, "preferences": {"acceptsEmail": "yes"}}, "preferences"),
    ],
)
def test_create_rejects_bad_fields_with_422_and_field_detail(http, engine, body, field):
    response = create(http, body)
    assert response.status_code == 422
    assert response.json()["errorCode"] == "ValidationError"
    assert field in response.json()["messageDetails"]
    assert engine.contacts() == []


@pytest.mark.parametrize("payload", ["", "not json", "[]", "{}"])
def test_create_without_data_is_400_no_data(http, payload):
    response = http("POST", "/api/v3/contacts?source=POS", data=payload)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "NoData"


def test_create_with_a_taken_key_is_409_approved_contact_exists(http, engine):
    engine.add_contact(MEMBER)
    response = create(http)
    assert response.status_code == 409
    assert response.json()["errorCode"] == "ApprovedContactWithKeyExists"


def test_create_while_the_same_key_is_being_created_is_409_being_created(http, engine, simulator):
    import threading

    engine.inject("latency", seconds=0.5)
    slow = threading.Thread(target=create, args=(http,))
    slow.start()
    # Until the first create holds the latency fault (and so is the slow one): not merely seen
    wait_until(lambda: [r for r in engine.requests("/api/v3/contacts") if r.faults],
               "the first create never took its latency")  # fmt: skip
    response = create(http)
    slow.join()
    assert response.status_code == 409
    assert response.json()["errorCode"] == "ContactWithKeyIsBeingCreated"
    assert len(engine.contacts()) == 1


def test_every_call_takes_the_configured_latency_from_its_arrival(http, engine):
    """Benchmarks count 2 x L as Engage's floor: no call may come back sooner than L."""
    engine.latency = 0.15
    for method, path in [("GET", "/api/v3/contacts/id?email=nobody@example.com"),
                         ("GET", "/api/v3/stores")]:  # fmt: skip
        started = time.perf_counter()
        response = http(method, path)
        assert time.perf_counter() - started >= 0.15, path
        assert response.status_code in (200, 404)
    started = time.perf_counter()
    assert create(http).status_code == 201
    assert time.perf_counter() - started >= 0.15


def test_create_over_its_own_limit_is_504_and_nothing_is_created(http, engine):
    engine.inject("latency", seconds=engine.create_limit + 0.1)
    response = create(http)
    assert response.status_code == 504
    assert response.json()["errorCode"] == "RequestTimeOut"
    assert engine.contacts() == []


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"User-Agent": "t/1", "Content-Type": "application/json"}, 401),  # no apikey
        ({"apikey": "k", "User-Agent": "t/1"}, 500),  # no Content-Type: documented 500
    ],
)
def test_every_call_needs_a_key_and_a_json_content_type(http, headers, status):
    assert http("GET", "/api/v3/stores", headers=headers).status_code == status


def test_a_missing_user_agent_is_recorded_as_a_warning_not_refused(http, engine):
    """Engage asks for one (engage-api.md §6) but what it answers without one is not
    documented: the simulator does not invent a refusal, it records the lapse."""
    headers = {"apikey": "k", "User-Agent": "", "Content-Type": "application/json"}
    assert http("GET", "/api/v3/stores", headers=headers).status_code == 200
    assert "no User-Agent" in " ".join(engine.requests()[-1].warnings)


def test_a_wrong_api_key_is_401_when_the_simulator_has_one(http, engine):
    engine.api_key = "right"
    assert http("GET", "/api/v3/stores").status_code == 401


def test_over_the_rate_limit_is_429(http, engine):
    engine.rate_limit = 5
    statuses = [http("GET", "/api/v3/stores").status_code for _ in range(8)]
    assert statuses[:5] == [200] * 5
    assert 429 in statuses[5:]


def test_stores_lists_active_stores_unless_asked_for_all(http):
    active = http("GET", "/api/v3/stores").json()
    every = http("GET", "/api/v3/stores?includeInactive=true").json()
    assert all(s["active"] for s in active)
    assert len(every) > len(active)
    assert {"externalId", "name", "countryCode"} <= set(active[0])


def test_consents_come_with_localised_texts(http):
    (member, *_) = http("GET", "/api/v3/consents").json()
    assert member["id"] == "memberConsent"
    assert member["metaData"]["displayText"]["sv-SE"]


def test_a_contact_can_be_read_by_id(http, engine):
    contact = engine.add_contact(MEMBER)
    assert (
        http("GET", f"/api/v3/contacts/{contact['id']}").json()["attributes"]["email"]
        == "eva@example.com"
    )
    assert http("GET", "/api/v3/contacts/nope").status_code == 404


def test_every_request_is_recorded_with_warnings_for_what_engage_frowns_upon(http, engine):
    create(
        http, {**MEMBER, "country": "Sweden", "lastName": ""}, headers={**HEADERS, "source": "POS"}
    )
    (entry,) = engine.requests()
    assert entry.query == {"source": ["POS"], "storeExternalId": ["101"]}
    assert any("country sent" in w for w in entry.warnings)
    assert any("lastName is null or empty" in w for w in entry.warnings)
    assert any("source sent as a header" in w for w in entry.warnings)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_status_fault_answers_the_next_request_only(http, engine, status):
    engine.inject("status", on="any", status=status)
    assert http("GET", "/api/v3/stores").status_code == status
    assert http("GET", "/api/v3/stores").status_code == 200


def test_a_share_of_requests_can_fail(http, engine):
    engine.inject("status", on="any", status=503, times=None, share=0.5)
    statuses = [http("GET", "/api/v3/stores").status_code for _ in range(40)]
    assert 5 < statuses.count(503) < 35


def test_a_dropped_connection_gives_no_answer_at_all(simulator, engine):
    engine.inject("drop", on="any")
    with socket.create_connection(("127.0.0.1", int(simulator.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"GET /api/v3/stores HTTP/1.1\r\nHost: x\r\napikey: k\r\nUser-Agent: t/1\r\n"
                     b"Content-Type: application/json\r\n\r\n")  # fmt: skip
        assert sock.recv(1024) == b""


def test_faults_can_be_set_through_the_admin_endpoint(http, engine):
    response = http(
        "POST", "/_simulator/faults", json={"kind": "status", "status": 503, "on": "any"}
    )
    assert response.status_code == 201
    assert http("GET", "/api/v3/stores").status_code == 503
    assert http("POST", "/_simulator/faults", json={"kind": "explode"}).status_code == 400
    assert http("GET", "/_simulator/requests").json()[0]["faults"] == ["status 503"]
    assert http("POST", "/_simulator/reset").status_code == 204
    assert engine.requests() == []


def test_state_survives_a_restart_when_kept_in_a_file(tmp_path):
    from webapp.simulator import Engine

    state = tmp_path / "training.json"
    first = Engine(state_file=state)
    first.add_contact(MEMBER)
    again = Engine(state_file=state)
    assert [c["attributes"]["email"] for c in again.contacts()] == ["eva@example.com"]
    assert again.find("email", "EVA@example.com", "Member") == [again.contacts()[0]["id"]]


def test_latency_can_be_changed_through_the_admin_endpoint(http, engine):
    assert http("POST", "/_simulator/settings", json={"latency": 0.2}).json()["latency"] == 0.2
    assert engine.latency == 0.2
    http("POST", "/_simulator/settings", json={"latency": -1, "rate_limit": "x"})
    assert engine.latency == 0.2 and engine.rate_limit == 200


def test_answering_leaves_nothing_for_the_cycle_collector(http):
    """Each call's objects are freed as soon as it is answered. Calls wait L, long enough for
    their objects to reach the oldest generation; when each left a reference cycle, a full
    collection (about 50 ms in a benchmark) stopped the simulator's every call beyond L."""
    http("GET", "/api/v3/contacts/id", params={"email": "warm@example.com", **MEMBER})
    with cycle_garbage() as left:
        for n in range(10):
            http("GET", "/api/v3/contacts/id", params={"email": f"c{n}@example.com", **MEMBER})
            http("POST", "/api/v3/contacts", json={**MEMBER, "email": f"c{n}@example.com"})
    assert [type(o).__qualname__ for o in left] == []


def test_the_simulators_page_has_buttons_that_make_engage_fail_and_recover(http, engine):
    """A newcomer in training makes Engage fail from the simulator's own page, no curl."""
    page = http("GET", "/_simulator", headers={})
    assert 'name="fault" value="down"' in page.text and "Faults now: none" in page.text
    answer = http("POST", "/_simulator/ui", headers={}, data={"fault": "down"},
                  allow_redirects=False)  # fmt: skip
    assert answer.status_code == 303 and answer.headers["Location"] == "/_simulator"
    assert [(f.kind, f.status, f.on) for f in engine.faults()] == [("status", 503, "any")]
    assert "status 503 on any" in http("GET", "/_simulator", headers={}).text
    http("POST", "/_simulator/ui", headers={}, data={"fault": ""}, allow_redirects=False)
    assert engine.faults() == []


def test_a_create_latency_range_draws_each_creates_time_from_it():
    """For the public screens' timing benchmark: creates that vary, other calls as set."""
    from webapp.simulator import Engine

    engine = Engine(latency=0.03, create_latency=(0.04, 0.4))
    draws = [engine.call_latency("create") for _ in range(200)]
    assert all(0.04 <= d <= 0.4 for d in draws) and len(set(draws)) > 150
    assert max(draws) - min(draws) > 0.3, "across the range"
    assert engine.call_latency("find") == 0.03 and Engine().call_latency("create") == 0.0


def test_wallet_links_name_the_host_a_phone_reaches_when_told_one(simulator, engine):
    """Training for real phones: the simulator's wallet links name the machine's public host
    (with the simulator's own port), not the loopback address the app called it at."""
    import requests

    from webapp.simulator.engine import DEMO_WALLET_CARD

    contact = engine.add_contact({"email": "phone.card@example.com"})
    engine.public_host = "192.0.2.10"
    answer = requests.post(simulator.url + "/api/v3/wallet/pass/urls", timeout=5,
                           json={"cardId": DEMO_WALLET_CARD, "contactIds": [contact["id"]]},
                           headers={"apikey": "k", "User-Agent": "test"})  # fmt: skip
    port = simulator.url.rsplit(":", 1)[1]
    assert answer.json()[contact["id"]].startswith(f"http://192.0.2.10:{port}/_simulator/wallet/")


def test_training_for_real_phones_starts_the_simulator_on_all_addresses_with_the_public_host():
    from webapp.serve import _simulator_command

    loopback = _simulator_command({}, "127.0.0.1")
    assert "--host" not in loopback and "--public-host" not in loopback
    phones = _simulator_command({"PUBLIC_URL": "http://192.0.2.10:8000"}, "0.0.0.0")
    assert phones[phones.index("--host") + 1] == "0.0.0.0"
    assert phones[phones.index("--public-host") + 1] == "192.0.2.10"
