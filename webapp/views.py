"""The signup pages: the form (GET/POST /) and the result page (GET /done)."""

from __future__ import annotations

import secrets
import time

from flask import (
    Blueprint,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError

from . import signed, web
from . import signup as flow
from .consents import consent_texts
from .devices import current_device
from .i18n import LANGUAGES, countries, outcome_messages

bp = Blueprint("signup", __name__)

# Outcomes that end the person's part: shown on a result page after a redirect.
FINAL_OUTCOMES = (flow.CREATED, flow.EXISTING, flow.IN_PROGRESS, flow.AMBIGUOUS)
ATTRIBUTES = (
    *("firstName", "lastName", "email", "mobilePhone", "countryCode", "birthDay", "zipCode"),
    *("socialSecurityNumber", "externalId", "acceptsEmail", "acceptsSms", "acceptsPostal"),
)


@bp.before_app_request
def _switch_language():
    if request.method != "GET" or not request.query_string:
        return None  # the query string is parsed only when there is one
    chosen = request.args.get("lang")
    if chosen in LANGUAGES:
        session["lang"] = chosen
        return redirect(request.path, code=303)
    return None


@bp.app_context_processor
def _page_context():
    config = current_app.config
    return {
        "language": _language(),
        "languages": LANGUAGES,
        "device": current_device(),
        "kiosk_timing": {
            "idle": config["KIOSK_IDLE_SECONDS"],
            "countdown": config["KIOSK_COUNTDOWN_SECONDS"],
            "thanks": config["KIOSK_THANKS_SECONDS"],
        },
    }


@bp.get("/")
def form():
    if "outcome" in session:  # sessions from before results had their own cookie
        session.pop("outcome")
    device = current_device()
    if device is None:
        g.outcome = "setup-needed"
        return render_template("signup/setup_needed.html", outcome="setup-needed")
    g.outcome = "form"
    page = _empty_form_page(device)
    if _result_cookie() in request.cookies:
        # A new person: the previous result page is gone, Back and reload included.
        page = make_response(page)
        page.delete_cookie(_result_cookie(), **_result_cookie_flags())
    return page


@bp.post("/")
def submit():
    if current_device() is None:
        return redirect(url_for(".form"), code=303)
    form = _new_form()
    if not form.validate_on_submit():
        return _render_form(form, "invalid", 400)
    if not _within_rate_limits():
        return _render_form(form, "throttled", 429)

    state = current_app.extensions["state"]
    token = form.submission.data
    earlier = state.claim_submission(token)
    if earlier is not None:
        # A double tap, a resubmit or a reload: never a second create, show the first's outcome.
        return _present(form, _wait_for(token, earlier), duplicate=True)

    engage = current_app.extensions["engage"]
    outcome = flow.register(
        engage,
        _signup_from(form),
        breaker=current_app.extensions["breaker"],
        settle_seconds=current_app.config["ENGAGE_SETTLE_SECONDS"],
    )
    if outcome.name == flow.EXISTING and not current_device().kiosk:
        # The cashier attaches the purchase: show the member number of who was found.
        outcome = flow.with_member_number(engage, outcome)
    g.engage_cause = outcome.cause
    state.finish_submission(token, outcome.name, outcome.member_number)
    return _present(form, outcome)


def _signup_from(form) -> flow.Signup:
    config = current_app.config
    device = current_device()
    values = {name: form.normalized(name) for name in ATTRIBUTES if name in form}
    consents = [f.name.removeprefix("consent-") for f in form.consent_fields() if f.data]
    return flow.Signup(
        contact=flow.build_contact(
            values,
            contact_type=config["CONTACT_TYPE"],
            lang=_language(),
            consents=consents,
            channel=f"{device.mode} device in store {device.store_id}",
        ),
        key=config["CONTACT_KEY"],
        contact_type=config["CONTACT_TYPE"],
        store_external_id=device.store_id,
        create_as_unapproved=config["CREATE_AS_UNAPPROVED"]
        or (device.kiosk and config["KIOSK_CREATE_AS_UNAPPROVED"]),
    )


def _present(form, outcome: flow.Outcome, duplicate: bool = False):
    """The page for an outcome: a redirect to the result page, or the form back, filled in."""
    if outcome.name in FINAL_OUTCOMES:
        # Post/Redirect/Get. Only the outcome and Engage's member number and contact id go in
        # the result cookie: never anything the person typed.
        result = {
            "name": outcome.name,
            "member_number": outcome.member_number,
            "contact_id": outcome.contact_id,
        }
        g.outcome = outcome.name
        response = redirect(url_for(".done"), code=303)
        response.set_cookie(
            _result_cookie(),
            signed.result_value(result, signed.client_id()),
            **_result_cookie_flags(),
        )
        return response
    if outcome.name == flow.REJECTED and not duplicate:
        for name in outcome.fields:
            if name in form:
                form[name].errors = [*form[name].errors, _("Check this: it could not be accepted")]
    form.submission.data = new_submission_token()  # trying again is a new submission
    return _render_form(form, outcome.name)


def _wait_for(token: str, earlier) -> flow.Outcome:
    """The outcome of the first request with this token, once it has one."""
    state = current_app.extensions["state"]
    config = current_app.config
    # The first request can take find + create + settle + a second find.
    deadline = (
        time.monotonic() + 2 * config["ENGAGE_READ_TIMEOUT"] + config["ENGAGE_CREATE_TIMEOUT"]
    )
    deadline += config["ENGAGE_SETTLE_SECONDS"] + 2
    while earlier.outcome is None and time.monotonic() < deadline:
        time.sleep(0.05)
        earlier = state.submission(token) or earlier
    if earlier.outcome is None:  # the first request died without an answer: say so safely
        return flow.Outcome(flow.UNAVAILABLE, cause="DuplicateStillRunning")
    return flow.Outcome(earlier.outcome, member_number=earlier.member_number)


def _within_rate_limits() -> bool:
    """Per device (its session) and per address; counted where all workers see it."""
    state = current_app.extensions["state"]
    config = current_app.config
    client_id = signed.client_id()
    return state.hits(
        [
            (f"device:{client_id}", config["SUBMIT_LIMIT_PER_DEVICE"], 60),
            (f"address:{request.remote_addr}", config["SUBMIT_LIMIT_PER_ADDRESS"], 60),
        ]
    )


def _result_cookie() -> str:
    # __Host-: only ever sent over HTTPS, to this host, for every path (like the session's).
    return "__Host-result" if current_app.config["HTTPS"] else "result"


def _result_cookie_flags() -> dict:
    return {"httponly": True, "samesite": "Lax", "secure": current_app.config["HTTPS"], "path": "/"}


def new_submission_token() -> str:
    return secrets.token_urlsafe(18)


@bp.app_errorhandler(CSRFError)
def _csrf_failed(exc: CSRFError):
    """A missing or stale token: no Engage call, but give the form back with what was typed."""
    if request.endpoint != "signup.submit":
        return web.http_error(exc)
    if current_device() is None:
        return redirect(url_for(".form"), code=303)
    form = _new_form()  # not validated: it only carries the data back, with a fresh token
    form.form_errors.append(
        _("This page was open for a long time, so for your safety it needs to be sent again. "
          "Check your details and press the button once more.")
    )  # fmt: skip
    return _render_form(form, "invalid", 400)


@bp.get("/done")
def done():
    value = request.cookies.get(_result_cookie())
    result = signed.read_result(value, session.get("client_id")) if value else None
    if result is None or result["name"] not in FINAL_OUTCOMES:
        return redirect(url_for(".form"), code=303)
    g.outcome = name = result["name"]
    device = current_device()
    kiosk = device is not None and device.kiosk
    heading, text = outcome_messages(kiosk=kiosk)[name]
    # Staff see the member number to attach the purchase; a kiosk never shows one.
    show_number = not kiosk and name in (flow.CREATED, flow.EXISTING)
    return render_template(
        "signup/done.html",
        outcome=name,
        heading=heading,
        text=text,
        member_number=result.get("member_number") if show_number else None,
        # Without a member number (Engage did not say), the contact id still finds them.
        contact_id=result.get("contact_id") if show_number else None,
    )


def _language() -> str:
    locale = get_locale()
    return locale.language if locale else "en"


def _new_form(**kwargs):
    # Flask-WTF signs a CSRF token for every form it builds, a POST's included; this session's
    # signed token is usually remembered already (signed.csrf_token), and Flask-WTF takes it.
    signed.csrf_token()
    form = current_app.extensions["signup_form"](**kwargs)
    form.countryCode.choices = countries(_language())
    if not form.submission.data:
        form.submission.data = new_submission_token()
    g.setdefault("forms", []).append(form)  # released when the request ends
    return form


@bp.teardown_app_request
def _release_forms(exc):
    """Take the fields out of this request's forms, so they are freed when the request ends.

    Each WTForms field points back at its form, so every form is a reference cycle (about 110
    objects) that only Python's cycle collector frees, and each collection pauses every thread
    of the worker. A signup holds its form across both Engage calls, long enough to reach the
    older generations. Measured in one worker with 16 threads and 16 tills for 15 s (throwaway
    gc callback): collections 395-398 -> 162-177, their total time 216-241 -> 103-121 ms, the
    longest 9-11 -> 2-3 ms.
    """
    for form in g.pop("forms", ()):
        for field in list(form):
            del form[field.short_name]


def _empty_form_page(device):
    """The empty form, rendered once per language, device and consent texts.

    Rendering it (Jinja, WTForms, ~250 country options) cost far more than serving it. Only the
    two tokens differ between requests, so they are put into a cached copy: the CSRF token of
    this session and a fresh one-time submission token.
    """
    language = _language()
    consents = consent_texts(language)
    key = (language, device, tuple((k, v["label"], v["url"]) for k, v in consents.items()))
    cache = current_app.extensions.setdefault("page_cache", {})
    page = cache.get(key)
    if page is None:
        form = _new_form(data={"countryCode": device.country})
        html, _status = _render_form(form, "form")
        csrf, submission = form.csrf_token.current_token, form.submission.data
        if html.count(csrf) != 1 or html.count(submission) != 1:  # pragma: no cover
            return html  # cannot template it safely: serve this rendering as it is
        before, rest = html.split(csrf)
        between, after = rest.split(submission)
        page = (before.encode(), between.encode(), after.encode())  # UTF-8 once, not per request
        if len(cache) > 64:  # languages x device kinds: a handful in practice
            cache.clear()
        cache[key] = page
    before, between, after = page
    return b"".join(
        (before, signed.csrf_token().encode(), between, new_submission_token().encode(), after)
    )


def _render_form(form, outcome: str, status: int = 200):
    g.outcome = outcome
    device = current_device()
    heading, text = outcome_messages(kiosk=bool(device and device.kiosk)).get(outcome, (None, None))
    return (
        render_template(
            "signup/form.html",
            form=form,
            outcome=outcome,
            heading=heading,
            text=text,
            consents=consent_texts(_language()),
            language=_language(),
        ),
        status,
    )
