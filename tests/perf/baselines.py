"""The two baselines the benchmark measures the app against, served by gunicorn.

bare_app:  a bare Flask app returning a static page of the same size as the form page
           (BARE_PAGE: the path of a saved copy of it): the floor for serving the form.
naive_app: the signup integration written the way most people would: plain requests.get /
           requests.post without a session (a new connection per call), run on sync workers.
"""

from __future__ import annotations

import os

import requests
from flask import Flask, redirect, request

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
