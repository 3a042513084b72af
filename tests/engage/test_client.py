"""The exact HTTP contract with Engage, checked at the HTTP edge with requests-mock."""

from __future__ import annotations

import json
import threading

import pytest
import requests

from tests.conftest import CONTACT_ID, CREATE, ENGAGE, FIND, created_body
from webapp.engage import (
    ContactBeingCreated,
    ContactExists,
    EngageClient,
    EngageMisconfigured,
    EngageRejected,
    EngageServerError,
    EngageTimeout,
    EngageUnavailable,
    MultipleMatches,
    NotAuthorised,
    OutcomeUnknown,
    RateLimited,
)


@pytest.fixture
def engage():
    client = EngageClient(ENGAGE, "secret-key-123", user_agent="engage-signup/1.2.3")
    client.slept = []
    client.sleep = client.slept.append  # waits before a resend are recorded, not waited
    yield client
    client.close()


def find(engage, key="email", value="anna@example.com"):
    return engage.find_contact_id(key=key, value=value, contact_type="Member")


def create(engage, contact=None, **kwargs):
    return engage.create_contact(
        contact or {"email": "anna@example.com"}, source="POS", store_external_id="101", **kwargs
    )


def test_every_call_sends_the_key_user_agent_and_json_headers(engage, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body())
    find(engage)
    create(engage)
    for request in engage_api.request_history:
        assert request.headers["apikey"] == "secret-key-123"
        assert request.headers["User-Agent"] == "engage-signup/1.2.3"
        assert request.headers["Content-Type"] == "application/json"
        assert request.headers["Accept"] == "application/json"


def test_find_asks_by_key_and_contact_type_and_returns_the_json_string_id(engage, engage_api):
    engage_api.get(FIND, status_code=200, text=json.dumps(CONTACT_ID))
    assert find(engage) == CONTACT_ID
    request = engage_api.last_request
    assert request.method == "GET"
    assert request.path == "/api/v3/contacts/id"
    assert (
        request.query == "email=anna%40example.com&contacttype=member"
    )  # requests-mock lowercases


def test_find_url_encodes_the_plus_of_a_phone_number(engage, engage_api):
    engage_api.get(FIND, status_code=404)
    find(engage, key="mobilePhone", value="+46701234567")
    assert "mobilePhone=%2B46701234567" in engage_api.last_request.url


def test_find_by_external_id_uses_custom_key(engage, engage_api):
    engage_api.get(FIND, status_code=404)
    find(engage, key="externalId", value="C-77")
    assert "customKey=C-77" in engage_api.last_request.url


def test_find_tolerates_a_bare_id_without_quotes(engage, engage_api):
    engage_api.get(FIND, status_code=200, text=CONTACT_ID)
    assert find(engage) == CONTACT_ID


def test_find_returns_none_when_nobody_has_the_key(engage, engage_api):
    engage_api.get(FIND, status_code=404, json={"errorCode": "ContactNotFound"})
    assert find(engage) is None


def test_find_with_several_matches_raises_multiple_matches_with_their_ids(engage, engage_api):
    engage_api.get(
        FIND, status_code=409, json={"messageDetails": {"multipleMatchesFound": ["a", "b"]}}
    )
    with pytest.raises(MultipleMatches) as caught:
        find(engage)
    assert caught.value.contact_ids == ["a", "b"]


def test_find_with_invalid_email_is_rejected_with_its_token(engage, engage_api):
    engage_api.get(FIND, status_code=400, json={"errorCode": "InvalidEmailAddress"})
    with pytest.raises(EngageRejected) as caught:
        find(engage)
    assert caught.value.code == "InvalidEmailAddress"


def test_create_sends_source_store_and_the_body_as_json(engage, engage_api):
    engage_api.post(CREATE, status_code=201, json=created_body())
    contact = {"email": "anna@example.com", "countryCode": "SE", "contactType": "Member"}
    body = create(engage, contact)
    request = engage_api.last_request
    assert request.method == "POST"
    assert request.path == "/api/v3/contacts"
    assert request.qs == {"source": ["pos"], "storeexternalid": ["101"]}
    assert "createAsUnapproved" not in request.url
    assert request.json() == contact
    assert body["attributes"]["memberNumber"] == "999032095"


def test_create_as_unapproved_is_a_query_parameter(engage, engage_api):
    engage_api.post(CREATE, status_code=201, json=created_body())
    create(engage, create_as_unapproved=True)
    assert "createAsUnapproved=true" in engage_api.last_request.url
    assert "createAsUnapproved" not in engage_api.last_request.headers


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (409, {"errorCode": "ApprovedContactWithKeyExists"}, ContactExists),
        (409, {"errorCode": "ContactWithKeyIsBeingCreated"}, ContactBeingCreated),
        (409, "ContactWithKeyIsBeingCreated", ContactBeingCreated),  # token in plain text
        (409, None, ContactExists),  # no body: the key is taken either way
        (422, {"errorCode": "ValidationError"}, EngageRejected),
        (400, {"errorCode": "NoData"}, EngageMisconfigured),
        (400, {"errorCode": "InvalidContactType"}, EngageMisconfigured),
        (404, "<html>Not Found</html>", EngageMisconfigured),  # no such path: ENGAGE_BASE_URL
        (504, {"errorCode": "RequestTimeOut"}, EngageTimeout),
        (504, "<html><body>Gateway Time-out</body></html>", OutcomeUnknown),  # a proxy's
        (502, "<html>Bad gateway</html>", OutcomeUnknown),
        (503, None, OutcomeUnknown),
        (500, {"message": "An error has occurred."}, OutcomeUnknown),
        (429, None, RateLimited),
        (401, None, NotAuthorised),
        (403, "<h1>Forbidden</h1>", NotAuthorised),
        (500, {"errorCode": "InvalidSystemConfiguration"}, EngageMisconfigured),
    ],
)
def test_create_maps_each_answer_to_a_typed_error_whatever_the_body(
    engage, engage_api, status, body, expected
):
    if isinstance(body, dict):
        engage_api.post(CREATE, status_code=status, json=body)
    else:
        engage_api.post(CREATE, status_code=status, text=body or "")
    with pytest.raises(expected) as caught:
        create(engage)
    assert caught.value.status_code == status
    assert engage_api.call_count == 1, "a create is never re-sent"


def test_validation_error_carries_field_detail_when_the_body_has_some(engage, engage_api):
    engage_api.post(
        CREATE,
        status_code=422,
        json={"errorCode": "ValidationError", "messageDetails": {"mobilePhone": "Invalid"}},
    )
    with pytest.raises(EngageRejected) as caught:
        create(engage)
    assert caught.value.field_errors == {"mobilePhone": "Invalid"}


def test_validation_error_tolerates_a_list_of_field_errors(engage, engage_api):
    engage_api.post(CREATE, status_code=422, json={"errors": [{"field": "email", "message": "x"}]})
    with pytest.raises(EngageRejected) as caught:
        create(engage)
    assert list(caught.value.field_errors) == ["email"]


@pytest.mark.parametrize(
    ("status", "expected", "calls"),
    [(500, EngageServerError, 1), (503, EngageServerError, 2), (504, EngageTimeout, 2),
     (429, RateLimited, 1)],
)  # fmt: skip
def test_find_maps_server_failures_to_unavailable(engage, engage_api, status, expected, calls):
    engage_api.get(FIND, status_code=status, text="<html>oops</html>")
    with pytest.raises(expected):
        find(engage)
    assert issubclass(expected, EngageUnavailable)
    assert engage_api.call_count == calls, "a gateway error is worth one resend, no more"


@pytest.mark.parametrize(
    "first",
    [{"status_code": 502, "text": "bad gateway"}, {"status_code": 503, "text": ""},
     {"status_code": 504, "text": "<html>Gateway Time-out</html>"},
     {"exc": requests.exceptions.ConnectTimeout}],
)  # fmt: skip
def test_a_lookup_is_resent_once_and_later_after_a_gateway_error(engage, engage_api, first):
    """Voyado's retry policy: at most one resend, later rather than sooner."""
    engage_api.get(FIND, [first, {"status_code": 200, "text": json.dumps(CONTACT_ID)}])
    assert find(engage) == CONTACT_ID
    assert engage_api.call_count == 2
    assert engage.slept == [1.0], "one wait of ENGAGE_RETRY_SECONDS before the resend"


def test_a_lookup_that_timed_out_is_not_resent(engage, engage_api):
    engage_api.get(FIND, exc=requests.exceptions.ReadTimeout)
    with pytest.raises(EngageTimeout):
        find(engage)
    assert engage_api.call_count == 1 and engage.slept == []


def test_a_find_that_names_nobody_is_no_not_found(engage, engage_api):
    """A 200 with an empty body must never lead to a create."""
    for body in ("", '""', "   "):
        engage_api.get(FIND, status_code=200, text=body)
        with pytest.raises(EngageUnavailable):
            find(engage)


def test_find_can_search_every_contact_type(engage, engage_api):
    engage_api.get(FIND, status_code=404)
    engage.find_contact_id(key="email", value="a@example.com", contact_type=None)
    assert "contactType" not in engage_api.last_request.qs
    find(engage)
    assert engage_api.last_request.qs["contacttype"] == ["member"]


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (400, {"errorCode": "InvalidContactType"}, EngageMisconfigured, "InvalidContactType"),
        (400, {"errorCode": "InvalidSearchQuery"}, EngageMisconfigured, "InvalidSearchQuery"),
        (500, "InvalidSystemConfiguration", EngageMisconfigured, "InvalidSystemConfiguration"),
        (400, {"errorCode": "InvalidEmailAddress"}, EngageRejected, "InvalidEmailAddress"),
        (401, None, NotAuthorised, None),
    ],
)
def test_find_tells_a_misconfiguration_from_a_refused_value(
    engage, engage_api, status, body, expected, code
):
    if isinstance(body, dict):
        engage_api.get(FIND, status_code=status, json=body)
    else:
        engage_api.get(FIND, status_code=status, text=body or "")
    with pytest.raises(expected) as caught:
        find(engage)
    assert caught.value.code == code
    if expected is EngageRejected:
        assert not isinstance(caught.value, EngageMisconfigured)


@pytest.mark.parametrize(
    "body",
    [
        {"errorCode": "InvalidContactType", "message": "x"},  # our simulator's shape
        {"Message": "InvalidContactType"},  # ASP.NET's
        {"type": "https://voyado/errors/InvalidContactType", "title": "Bad Request",
         "status": 400, "detail": "InvalidContactType", "traceId": "00-ab"},  # ProblemDetails
        "InvalidContactType",  # text/plain
    ],
)  # fmt: skip
def test_the_token_is_found_in_any_body_shape(engage, engage_api, body):
    if isinstance(body, dict):
        engage_api.get(FIND, status_code=400, json=body)
    else:
        engage_api.get(FIND, status_code=400, text=body, headers={"Content-Type": "text/plain"})
    with pytest.raises(EngageMisconfigured) as caught:
        find(engage)
    assert caught.value.code == "InvalidContactType"


def test_problem_details_field_errors_are_read(engage, engage_api):
    errors = {"lastName": ["Mandatory"], "email": ["Invalid", "Taken"]}
    engage_api.post(CREATE, status_code=422, json={"title": "ValidationError", "errors": errors})
    with pytest.raises(EngageRejected) as caught:
        create(engage)
    assert caught.value.field_errors == {"lastName": "Mandatory", "email": "Invalid; Taken"}


@pytest.mark.parametrize(("first", "then"), [(404, 200), (405, 200)])
def test_consents_come_from_v3_or_else_the_documented_v2(engage, engage_api, first, then):
    engage_api.get(f"{ENGAGE}/api/v3/consents", status_code=first)
    engage_api.get(f"{ENGAGE}/api/v2/consents", status_code=then, json=[{"id": "memberConsent"}])
    assert engage.get_consents() == [{"id": "memberConsent"}]
    assert engage.get_consents() == [{"id": "memberConsent"}]
    paths = [r.path for r in engage_api.request_history]
    assert paths == ["/api/v3/consents", "/api/v2/consents", "/api/v2/consents"], "v2 kept"


def test_consents_from_v3_when_the_tenant_has_it(engage, engage_api):
    engage_api.get(f"{ENGAGE}/api/v3/consents", json=[{"id": "memberConsent"}])
    assert engage.get_consents() == [{"id": "memberConsent"}]
    assert [r.path for r in engage_api.request_history] == ["/api/v3/consents"]


def test_a_read_timeout_on_create_leaves_the_outcome_unknown(engage, engage_api):
    engage_api.post(CREATE, exc=requests.exceptions.ReadTimeout)
    with pytest.raises(OutcomeUnknown) as caught:
        create(engage)
    assert caught.value.timed_out
    assert engage_api.call_count == 1


def test_a_dropped_connection_on_create_leaves_the_outcome_unknown(engage, engage_api):
    engage_api.post(CREATE, exc=requests.exceptions.ConnectionError("reset by peer"))
    with pytest.raises(OutcomeUnknown) as caught:
        create(engage)
    assert not caught.value.timed_out


def test_a_connect_timeout_means_nothing_was_sent_and_the_create_may_go_once_more(
    engage, engage_api
):
    engage_api.post(CREATE, exc=requests.exceptions.ConnectTimeout)
    with pytest.raises(EngageUnavailable) as caught:
        create(engage)
    assert not isinstance(caught.value, OutcomeUnknown)
    assert engage_api.call_count == 2 and engage.slept == [1.0]


def test_create_uses_a_read_timeout_long_enough_for_engages_own_504(engage, engage_api):
    engage_api.post(CREATE, status_code=201, json=created_body())
    create(engage)
    connect, read = engage_api.last_request.timeout
    assert connect <= 5
    # Engage's own limit is "under 10 seconds", then 504: we must still be listening.
    assert read >= 15


def test_each_thread_reuses_one_session_and_threads_do_not_share_one(engage):
    sessions = []
    sessions.append(engage._session())
    sessions.append(engage._session())
    worker = threading.Thread(target=lambda: sessions.append(engage._session()))
    worker.start()
    worker.join()
    assert sessions[0] is sessions[1]
    assert sessions[2] is not sessions[0]


def test_the_api_key_never_appears_in_repr_or_logs(engage, engage_api, caplog):
    engage_api.get(FIND, status_code=500)
    caplog.set_level("DEBUG")
    with pytest.raises(EngageUnavailable) as caught:
        find(engage, value="anna@example.com")
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name != "requests_mock.adapter")
    everything = repr(engage) + str(caught.value) + ours
    assert "secret-key-123" not in everything
    assert "anna" not in everything
    assert "path=/api/v3/contacts/id status=500" in caplog.text


def test_urllib3_log_lines_never_show_the_query_string(caplog):
    """urllib3 logs URLs when it retries; the query string holds the person's email."""
    import logging

    caplog.set_level("DEBUG")
    logging.getLogger("urllib3.connectionpool").warning(
        "Retrying after connection broken: %s", "/api/v3/contacts/id?email=anna%40example.com"
    )
    assert "anna" not in caplog.text
    assert "/api/v3/contacts/id?[redacted]" in caplog.text
