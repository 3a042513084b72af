"""The signup flow through the pages, CSRF on, Engage stubbed at the HTTP edge."""

from __future__ import annotations

import json
import re

import pytest
import requests

from tests.conftest import (
    CONTACT_ID,
    CREATE,
    ENGAGE,
    FIND,
    VALID_FORM,
    created_body,
    csrf_token,
    english_browser,
    hidden_fields,
    member_body,
    outcome_of,
    submitter,
    text_of,
)


def methods(engage_api):
    return [r.method for r in engage_api.request_history]


def test_the_empty_form_has_every_field_unticked_and_the_store_country_chosen(client):
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert outcome_of(page) == "form"
    for name in ("firstName", "lastName", "email", "mobilePhone", "birthDay", "zipCode"):
        assert f'name="{name}"' in html
    for name in ("acceptsEmail", "acceptsSms", "acceptsPostal", "consent-memberConsent"):
        assert f'name="{name}"' in html
    assert "checked" not in html
    assert '<option selected value="SE">' in html
    assert page.headers["Cache-Control"] == "no-store"


def test_a_new_person_is_found_nowhere_then_created_and_welcomed(submit, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body())
    page = submit()
    assert outcome_of(page) == "created"
    assert "Member number 999032095" in text_of(page)
    assert methods(engage_api) == ["GET", "POST"], "find always comes before create"


def test_success_redirects_so_a_reload_does_not_post_again(submit, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body())
    response = submit(follow=False)
    assert response.status_code == 303
    assert response.headers["Location"] == "/done"


def test_the_create_body_holds_only_what_the_person_gave(submit, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body())
    submit(
        {
            **VALID_FORM,
            "mobilePhone": "070-123 45 67",
            "birthDay": "1990-01-31",
            "acceptsSms": "y",
            "zipCode": "",
            "lastName": "   ",
        }
    )
    body = engage_api.request_history[1].json()
    assert body["mobilePhone"] == "+46701234567"
    assert body["birthDay"] == "1990-01-31"
    assert body["countryCode"] == "SE"
    assert body["contactType"] == "Member"
    assert body["lang"] == "en"  # the language the person used
    assert body["preferences"] == {
        "acceptsEmail": False,
        "acceptsSms": True,
        "acceptsPostal": False,
    }
    assert "country" not in body
    assert "zipCode" not in body and "lastName" not in body
    assert None not in body.values() and "" not in body.values()
    (consent,) = body["consents"]
    assert consent["id"] == "memberConsent" and consent["value"] is True
    assert consent["source"] == "POS" and "store 101" in consent["comment"]
    assert consent["date"][:2] == "20" and consent["date"][-6] in "+-"  # ISO 8601 with offset
    query = engage_api.request_history[1].qs
    assert query == {"source": ["pos"], "storeexternalid": ["101"]}


def test_find_uses_the_same_normalised_key_that_create_sends(submit, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body())
    submit(email="  Anna@EXAMPLE.com ")
    assert engage_api.request_history[0].qs["email"] == ["anna@example.com"]
    assert engage_api.request_history[1].json()["email"] == "Anna@example.com"


def test_someone_already_found_is_told_so_and_never_created(submit, engage_api):
    engage_api.get(FIND, status_code=200, text=json.dumps(CONTACT_ID))
    engage_api.get(f"{CREATE}/{CONTACT_ID}", json=member_body())
    page = submit()
    assert outcome_of(page) == "existing"
    assert "Already a member" in text_of(page)
    assert "Member number 999032095" in text_of(page), "the cashier attaches the purchase"
    assert methods(engage_api) == ["GET", "GET"], "no create after a hit"


@pytest.mark.parametrize(
    ("status", "body", "outcome", "words"),
    [
        (409, {"errorCode": "ApprovedContactWithKeyExists"}, "existing", "Already a member"),
        (
            409,
            {"errorCode": "ContactWithKeyIsBeingCreated"},
            "in-progress",
            "Already being registered",
        ),
        (504, {"errorCode": "RequestTimeOut"}, "timeout", "Nothing was saved. Send again"),
        (429, None, "unavailable", "Finish the purchase without a member"),
        (401, None, "unavailable", "Finish the purchase without a member"),
        (
            422,
            {"errorCode": "ValidationError"},
            "rejected",
            "The membership system did not accept these details",
        ),
        (400, {"errorCode": "NoData"}, "unavailable", "Finish the purchase without a member"),
    ],
)
def test_each_create_answer_becomes_a_friendly_outcome(
    submit, engage_api, status, body, outcome, words
):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=status, json=body)
    page = submit()
    assert outcome_of(page) == outcome
    assert words in text_of(page)
    assert not re.search(rf"\b{status}\b", text_of(page)), "no error codes for people"
    assert "ValidationError" not in text_of(page)
    assert methods(engage_api) == ["GET", "POST"], "a create is never sent twice"


@pytest.mark.parametrize("outcome", ["rejected", "timeout", "unavailable"])
def test_the_form_comes_back_filled_in_when_trying_again_makes_sense(submit, engage_api, outcome):
    status = {"rejected": 422, "timeout": 504, "unavailable": 503}[outcome]
    engage_api.get(FIND, status_code=404 if outcome != "unavailable" else status)
    engage_api.post(CREATE, status_code=status, json={"errorCode": "RequestTimeOut"})
    page = submit(mobilePhone="0701234567", acceptsSms="y", birthDay="1990-01-31")
    html = page.get_data(as_text=True)
    assert outcome_of(page) == outcome
    assert 'value="Anna"' in html and 'value="anna@example.com"' in html
    assert 'value="0701234567"' in html and 'value="1990-01-31"' in html
    assert 'id="acceptsSms" name="acceptsSms" type="checkbox" value="y"' in html
    assert html.count("checked") == 2  # the SMS preference and the consent stay ticked


def test_a_rejected_field_is_marked_and_linked_from_the_summary(submit, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(
        CREATE,
        status_code=422,
        json={"errorCode": "ValidationError", "messageDetails": {"email": "x"}},
    )
    html = submit().get_data(as_text=True)
    # The summary names the field (GOV.UK's pattern), not "this wasn't accepted".
    assert '<a href="#email">The email address wasn&#39;t accepted – please check it</a>' in html
    assert 'aria-describedby="email-error"' in html


def test_several_matches_send_the_person_to_staff(submit, engage_api):
    engage_api.get(
        FIND, status_code=409, json={"messageDetails": {"multipleMatchesFound": ["a", "b"]}}
    )
    for contact_id, first, number in (("a", "Anna", "101"), ("b", "Bo", "102")):
        engage_api.get(f"{ENGAGE}/api/v3/contacts/{contact_id}", json={
            "id": contact_id, "attributes": {"firstName": first, "lastName": "Ek",
                                             "memberNumber": number}})  # fmt: skip
    page = submit()
    assert outcome_of(page) == "ambiguous"
    assert "merge the members below" in text_of(page)
    assert "Anna E. · Member number 101 Bo E. · Member number 102 Next customer" in text_of(page), (
        "the members that matched, as the cashier may see them"
    )
    assert methods(engage_api) == ["GET", "GET", "GET"], "the find, then each member read"


def test_engage_down_at_find_means_unavailable_and_no_create(submit, engage_api):
    engage_api.get(FIND, exc=requests.exceptions.ConnectionError)
    page = submit()
    assert outcome_of(page) == "unavailable"
    assert methods(engage_api) == ["GET"]


def test_a_create_that_timed_out_on_our_side_is_looked_up_before_anything_is_said(
    submit, engage_api
):
    engage_api.get(
        FIND, [{"status_code": 404}, {"status_code": 200, "text": json.dumps(CONTACT_ID)}]
    )
    engage_api.post(CREATE, exc=requests.exceptions.ReadTimeout)
    page = submit()
    assert outcome_of(page) == "created", "the first create went through after all"
    assert methods(engage_api) == ["GET", "POST", "GET"]


def test_a_create_that_timed_out_and_left_nobody_behind_is_safe_to_retry(submit, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, exc=requests.exceptions.ReadTimeout)
    page = submit()
    assert outcome_of(page) == "timeout"
    assert "Nothing was saved. Send again" in text_of(page)
    assert methods(engage_api) == ["GET", "POST", "GET"]


def test_a_dropped_connection_on_create_is_looked_up_and_never_reposted(submit, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, exc=requests.exceptions.ConnectionError("reset"))
    page = submit()
    assert outcome_of(page) == "unavailable"
    assert methods(engage_api) == ["GET", "POST", "GET"]


def test_when_the_look_up_after_a_doubtful_create_fails_nothing_is_promised(submit, engage_api):
    """Our read timeout left the create in doubt and the check could not be made: the person
    must not read "nothing was saved, safe to send again" (it may well have been saved)."""
    engage_api.get(FIND, [{"status_code": 404}, {"exc": requests.exceptions.ConnectionError}])
    engage_api.post(CREATE, exc=requests.exceptions.ReadTimeout)
    page = submit()
    assert outcome_of(page) == "unavailable"
    assert "Nothing was saved. Send again" not in text_of(page)
    assert methods(engage_api) == ["GET", "POST", "GET"]


def test_a_gateway_error_after_create_is_resolved_by_looking_up(submit, engage_api):
    engage_api.get(
        FIND, [{"status_code": 404}, {"status_code": 200, "text": json.dumps(CONTACT_ID)}]
    )
    engage_api.post(CREATE, status_code=502, text="<html>Bad Gateway</html>")
    page = submit()
    assert outcome_of(page) == "created"
    assert methods(engage_api) == ["GET", "POST", "GET"]


def test_invalid_input_never_reaches_engage_and_keeps_what_was_typed(submit, engage_api):
    page = submit(
        email="not-an-email",
        mobilePhone="12",
        birthDay="2999-01-01",
        **{"consent-memberConsent": None},
    )
    html = page.get_data(as_text=True)
    assert page.status_code == 400
    assert outcome_of(page) == "invalid"
    assert engage_api.call_count == 0
    assert 'value="not-an-email"' in html and 'value="12"' in html
    summary = html[html.index('id="error-summary"') : html.index("</ul>")]
    for field_id in ("email", "mobilePhone", "birthDay", "consent-memberConsent"):
        assert f'href="#{field_id}"' in summary
    assert text_of(page).startswith("Error:") or "<title>Error:" in html


def test_the_key_field_is_required(submit, engage_api):
    page = submit(email="")
    assert outcome_of(page) == "invalid"
    assert "Enter your email address" in text_of(page)
    assert engage_api.call_count == 0


def test_a_post_without_a_csrf_token_is_refused_and_makes_no_engage_call(client, engage_api):
    response = client.post("/", data=VALID_FORM)
    assert response.status_code == 400
    assert engage_api.call_count == 0
    assert "needs to be sent again" in text_of(response)
    assert 'value="anna@example.com"' in response.get_data(as_text=True), "nothing typed is lost"


def test_the_form_given_back_after_a_stale_token_can_be_sent(client, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=201, json=created_body())
    refused = client.post("/", data={**VALID_FORM, "csrf_token": "stale"})
    again = {**VALID_FORM, "csrf_token": csrf_token(refused.get_data(as_text=True))}
    assert outcome_of(client.post("/", data=again, follow_redirects=True)) == "created"


def test_markup_in_a_name_is_shown_as_text_not_run(submit, engage_api):
    engage_api.get(FIND, status_code=404)
    engage_api.post(CREATE, status_code=503)
    engage_api.get(FIND, status_code=404)
    html = submit(firstName='<script>alert("x")</script>').get_data(as_text=True)
    assert '<script>alert("x")</script>' not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html


def test_the_result_page_without_a_submission_goes_back_to_the_form(client):
    response = client.get("/done")
    assert response.status_code == 303
    assert response.headers["Location"] == "/"


def test_unknown_pages_are_friendly(client):
    page = client.get("/nope")
    assert page.status_code == 404
    assert "There is no page at this address" in text_of(page)


def test_a_found_contact_without_a_member_number_shows_its_contact_id_to_staff(submit, engage_api):
    engage_api.get(FIND, status_code=200, text=json.dumps(CONTACT_ID))
    engage_api.get(f"{CREATE}/{CONTACT_ID}", status_code=503)
    page = submit()
    assert outcome_of(page) == "existing"
    assert f"Contact id in the membership system {CONTACT_ID}" in text_of(page)


def test_a_staff_tablet_puts_the_cursor_in_the_key_field(client):
    html = client.get("/").get_data(as_text=True)
    assert re.search(r'<input[^>]*autofocus[^>]*name="email"', html)


@pytest.mark.parametrize("status", [404, 409, 422, 504, 503])
def test_a_cashiers_screen_speaks_of_the_membership_system_never_of_engage(
    submit, engage_api, status
):
    """Cashiers know "the membership system" (kundklubben); "Engage" is for the manager's view
    and the logs."""
    engage_api.get(FIND, status_code=404)
    body = {409: {"errorCode": "ContactWithKeyIsBeingCreated"}, 422: {"errorCode": "X"}}
    if status == 404:
        engage_api.post(CREATE, status_code=201, json=created_body())
    else:
        engage_api.post(CREATE, status_code=status, json=body.get(status, {}))
    page = submit()
    assert "Engage" not in text_of(page), outcome_of(page)


def test_result_pages_are_rendered_once_per_kind_and_each_shows_its_own_member(
    app, engage_api, monkeypatch
):
    """Three new members at one till, then one already a member: the result page is rendered
    once for "created" and once for "existing", and each page shows its own member's number,
    with the barcode of that number and no other's; a kiosk's thank-you page shows none."""
    from webapp.pages import codes, views

    rendered = []
    real = views.render_template
    monkeypatch.setattr(views, "render_template", lambda name, **kw: rendered.append(name)
                        or real(name, **kw))  # fmt: skip
    engage_api.get(FIND, status_code=404)
    browser = english_browser(app)
    numbers = ["999000001", "999000002", "999000003"]
    for n, number in enumerate(numbers):
        engage_api.post(CREATE, status_code=201, json=created_body(memberNumber=number))
        page = submitter(browser)(email=f"member{n}@example.com")
        html = page.get_data(as_text=True)
        assert outcome_of(page) == "created"
        assert f'id="member-number">{number}</strong>' in html
        assert str(codes.code128_svg(number, "Member number as a barcode")) in html
        assert not [other for other in numbers if other != number and other in html]
    assert rendered.count("signup/done.html") == 1
    engage_api.get(FIND, status_code=200, text=json.dumps(CONTACT_ID))
    engage_api.get(f"{CREATE}/{CONTACT_ID}", json=member_body(memberNumber="999000777"))
    page = submitter(browser)(email="known@example.com")
    assert outcome_of(page) == "existing" and "999000777" in page.get_data(as_text=True)
    assert rendered.count("signup/done.html") == 2
    kiosk = submitter(english_browser(app, "kiosk"))(email="member0@example.com")
    assert outcome_of(kiosk) == "thanks"
    assert "999000" not in kiosk.get_data(as_text=True) and "<svg" not in kiosk.get_data(
        as_text=True)  # fmt: skip


def test_the_empty_form_is_rendered_once_and_each_page_gets_its_own_tokens(app, monkeypatch):
    """The till's page holds two forms (the sign-up and "Customer signs up on their phone"),
    each with the session's CSRF token: the cached page fills in every one of them, and a fresh
    submission token, without rendering the template again."""
    from webapp.pages import views

    rendered = []
    real = views.render_form
    monkeypatch.setattr(views, "render_form",
                        lambda *a, **k: rendered.append(1) or real(*a, **k))  # fmt: skip
    browser = english_browser(app)
    pages = [browser.get("/").get_data(as_text=True) for _ in range(3)]
    assert len(rendered) == 1, "rendered once, then served from the cache"
    for page in pages:
        tokens = re.findall(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page)
        assert len(tokens) == 2 and len(set(tokens)) == 1, "the same token in both forms"
    submissions = [hidden_fields(page)["submission"] for page in pages]
    assert len(set(submissions)) == 3, "a new one-time token on every page"
    other = english_browser(app).get("/").get_data(as_text=True)
    assert hidden_fields(other)["csrf_token"] != hidden_fields(pages[0])["csrf_token"]


def test_several_matches_are_shown_to_the_cashier_by_masked_name_and_member_number(sim_app, engine):
    """Two raw contact ids told the cashier nothing: each member that matched is shown as a
    first name and last initial with the member number, read from Engage (staff only)."""
    from tests.conftest import english_browser, submitter

    first = engine.add_contact({"email": "shared@example.com", "firstName": "Astrid",
                                "lastName": "Lindgren"})  # fmt: skip
    second = engine.add_contact({"email": "shared@example.com", "firstName": "Tove",
                                 "lastName": "Jansson"})  # fmt: skip
    page = submitter(english_browser(sim_app))(email="shared@example.com")
    assert outcome_of(page) == "ambiguous"
    shown = text_of(page)
    for contact, name in ((first, "Astrid L."), (second, "Tove J.")):
        assert name in shown and contact["attributes"]["memberNumber"] in shown
        assert contact["id"] not in page.get_data(as_text=True)
    assert "Lindgren" not in shown and "Jansson" not in shown
