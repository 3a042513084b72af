"""The two baselines the benchmark measures the app against, served by gunicorn.

bare_app:  a bare Flask app returning a static page of the same size as the form page
           (BARE_PAGE: the path of a saved copy of it): the floor for serving the form.
naive_app: the signup integration written the way most people would: plain requests.get /
           requests.post without a session (a new connection per call), run on sync workers.
floor_app: the least any Flask signup does: read the posted form, the same two Engage calls
           through a pooled requests.Session per thread, a redirect. No CSRF, validation,
           session, idempotency, rate limit or breaker. Its Server-Timing comes from the app's
           own middleware (webapp.web.Edge), so its app;dur is the overhead floor that Flask,
           requests and this machine set, under the same server configuration.
form_floor_app: floor_app plus only what the chosen form packages add: Flask-WTF's
           CSRFProtect and the app's own signup form (WTForms), built and validated per POST,
           with Flask's own session. What Flask-WTF and WTForms cost before any of the app's
           own work (idempotency, rate limits, breaker, result cookie, logs).
"""

from __future__ import annotations

import os
import secrets
import threading
import time

import requests
from flask import Flask, redirect, request
from flask_babel import Babel
from flask_wtf import CSRFProtect
from flask_wtf.csrf import generate_csrf

from webapp.config import DEFAULT_CONSENTS
from webapp.i18n import countries
from webapp.ops.web import Edge, add_engage_time
from webapp.signup.forms import form_class_for

bare_app = Flask("bare")
_page = b""


@bare_app.get("/")
def bare_page():
    global _page
    if not _page:
        with open(os.environ["BARE_PAGE"], "rb") as handle:
            _page = handle.read()
    return _page, 200, {"Content-Type": "text/html; charset=utf-8"}


naive_app = Flask("naive")
ENGAGE = os.environ.get("ENGAGE_BASE_URL", "")
HEADERS = {"apikey": "naive", "Content-Type": "application/json", "User-Agent": "naive/1.0"}


@naive_app.post("/")
def naive_signup():
    email = request.form.get("email", "")
    found = requests.get(
        f"{ENGAGE}/api/v3/contacts/id",
        params={"email": email, "contactType": "Member"},
        headers=HEADERS,
        timeout=10,
    )
    if found.status_code == 404:
        requests.post(
            f"{ENGAGE}/api/v3/contacts",
            params={"source": "POS", "storeExternalId": "101"},
            json={"email": email, "firstName": request.form.get("firstName"), "countryCode": "SE"},
            headers=HEADERS,
            timeout=10,
        )
    return redirect("/thanks", code=303)


floor_app = Flask("floor")
_local = threading.local()


def _pooled() -> requests.Session:
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.headers.update(HEADERS)
    return session


def _engage(method: str, path: str, **kwargs) -> requests.Response:
    started = time.perf_counter()
    try:
        return _pooled().request(method, f"{ENGAGE}{path}", timeout=10, **kwargs)
    finally:
        add_engage_time(time.perf_counter() - started)


def _find_then_create(email: str, first_name: str | None) -> None:
    found = _engage("GET", "/api/v3/contacts/id", params={"email": email, "contactType": "Member"})
    if found.status_code == 404:
        _engage(
            "POST",
            "/api/v3/contacts",
            params={"source": "POS", "storeExternalId": "101"},
            json={"email": email, "firstName": first_name, "countryCode": "SE"},
        )


@floor_app.post("/")
def floor_signup():
    _find_then_create(request.form.get("email", ""), request.form.get("firstName"))
    return redirect("/thanks", code=303)


floor_app.wsgi_app = Edge(floor_app.wsgi_app, https=False)  # Server-Timing as the app's


form_floor_app = Flask("form_floor")
form_floor_app.config.update(
    SECRET_KEY="bench-secret-key-0123456789", WTF_CSRF_TIME_LIMIT=8 * 3600, WTF_I18N_ENABLED=False
)
CSRFProtect(form_floor_app)
Babel(form_floor_app)
SignupForm = form_class_for("email", (), DEFAULT_CONSENTS)  # the app's default deployment


@form_floor_app.get("/")
def form_floor_page():
    return (
        f'<input name="csrf_token" type="hidden" value="{generate_csrf()}">'
        f'<input name="submission" type="hidden" value="{secrets.token_urlsafe(18)}">'
    )


@form_floor_app.post("/")
def form_floor_signup():
    form = SignupForm()
    form.countryCode.choices = countries("en")
    if not form.validate_on_submit():
        return "invalid", 400
    _find_then_create(form.email.data, form.firstName.data)
    return redirect("/thanks", code=303)


form_floor_app.wsgi_app = Edge(form_floor_app.wsgi_app, https=False)


# cycle_floor_app: the lean floor of a whole till cycle (issue #28), about forty lines: the
# form page from a template compiled once, the posted form read, the same two Engage calls
# through a pooled requests.Session per thread, a redirect, and the result page.
cycle_floor_app = Flask("cycle_floor")
_FORM_PAGE = cycle_floor_app.jinja_env.from_string(
    (
        open(os.environ["BARE_PAGE"]).read() if os.environ.get("BARE_PAGE") else "<form>{{ t }}"
    ).replace("__TOKEN__", "{{ t }}")
)
_DONE_PAGE = cycle_floor_app.jinja_env.from_string(
    "<!doctype html><main data-outcome=created><h1>New member registered</h1>"
    "<p>Member number <strong>{{ n }}</strong></p></main>"
)


@cycle_floor_app.get("/")
def cycle_floor_form():
    return _FORM_PAGE.render(t=secrets.token_urlsafe(18))


@cycle_floor_app.post("/")
def cycle_floor_signup():
    _find_then_create(request.form.get("email", ""), request.form.get("firstName"))
    return redirect("/done", code=303)


@cycle_floor_app.get("/done")
def cycle_floor_done():
    return _DONE_PAGE.render(n="999000001")
