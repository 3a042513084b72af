"""What only a real browser shows: headless Chromium driven by Playwright.

Runs when Chromium is found (CHROMIUM_PATH, or `chromium` on PATH); otherwise skipped with a
clear reason, unless REQUIRE_BROWSER=1 (as in CI), which turns a missing browser into a failure.
Screenshots of each outcome at tablet size go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import os
import re
import threading

import pytest
from werkzeug.serving import make_server

from tests.components import ARGS, SCREENSHOTS, chromium_path
from tests.conftest import device_cookie
from webapp import create_app

PORTRAIT = {"width": 800, "height": 1280}  # a 10" tablet, CSS pixels
# A member who holds a value for every field and has given every consent and preference: what
# a form brings is never new, so the till answers `existing` (not `updated`).
HOLDS_EVERYTHING = {
    "firstName": "Bea", "lastName": "Kassasson", "mobilePhone": "+46701234567",
    "countryCode": "SE", "zipCode": "111 22", "birthDay": "1990-01-31",
    "socialSecurityNumber": "199001311233", "externalId": "B-1",
    "preferences": {"acceptsEmail": True, "acceptsSms": True, "acceptsPostal": True},
    "consents": [{"id": "memberConsent", "value": True}],
}  # fmt: skip
LANDSCAPE = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if not path:
        message = (
            "Chromium not found: browser tests need Debian's chromium package (or CHROMIUM_PATH)"
        )
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=path,
            headless=True,
            args=ARGS,
            # Playwright turns the back-forward cache off by default; kiosks have it on.
            ignore_default_args=["--disable-back-forward-cache"],
        )
        yield chromium
        chromium.close()


SECRETS: dict[str, str] = {}  # base URL -> the app's SECRET_KEY, to enrol devices
APPS: dict[str, object] = {}  # base URL -> the app, for what a test does behind the page


@pytest.fixture
def serve(simulator, app_config):
    """Start the app on a loopback port against the simulator; returns its base URL."""
    servers = []

    def _serve(**config) -> str:
        app = create_app({**app_config, "ENGAGE_BASE_URL": simulator.url, **config})
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        base = f"http://127.0.0.1:{server.server_port}"
        if "PUBLIC_URL" not in config:  # the browser's "phones" reach this very server
            app.config["PUBLIC_URL"] = base
        SECRETS[base] = app.secret_key
        APPS[base] = app
        return base

    yield _serve
    for server in servers:
        server.shutdown()


def enrolled(page_or_context, base: str, mode: str = "staff", store: str = "101") -> str:
    """Give the browser the device cookie that /setup/ gives a device (setup itself is tested
    in test_staff_set_up_a_device_in_the_browser); returns `base`."""
    context = getattr(page_or_context, "context", page_or_context)
    value = device_cookie(SECRETS[base], mode, store)
    context.add_cookies([{"name": "device", "value": value, "url": base + "/"}])
    return base


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=PORTRAIT, locale="en-GB")
    page = context.new_page()
    yield page
    context.close()


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def no_serious_accessibility_violations(page) -> None:
    from axe_playwright_python.sync_playwright import Axe

    result = Axe().run(page)
    serious = [v for v in result.response["violations"] if v["impact"] in ("serious", "critical")]
    assert serious == [], result.generate_report()


def outcome(page) -> str:
    return page.get_attribute("main", "data-outcome")


def fill_person(page, email="browser@example.com"):
    page.fill("#firstName", "Bea")
    page.fill("#email", email)
    page.fill("#mobilePhone", "070 123 45 67")
    page.check("#consent-memberConsent")


def submit(page):
    with page.expect_navigation():
        page.click(
            "main button[type=submit]:not([data-handoff-start]):not([data-display-start])"
            ":not([name=lookup])"
        )


def test_a_new_member_signs_up_and_the_page_passes_axe(page, serve):
    base = enrolled(page, serve())
    page.goto(base + "/?lang=en")
    assert outcome(page) == "form"
    no_serious_accessibility_violations(page)
    shot(page, "form-portrait")
    fill_person(page)
    submit(page)
    assert outcome(page) == "created"
    assert page.locator(".member-number").is_visible()
    no_serious_accessibility_violations(page)
    shot(page, "created")


def test_errors_are_summarised_focused_and_linked_to_their_fields(page, serve):
    page.goto(enrolled(page, serve()) + "/?lang=en")
    page.fill("#email", "not-an-email")
    submit(page)
    assert outcome(page) == "invalid"
    assert page.evaluate("document.activeElement.id") == "error-summary"
    page.click("#error-summary a[href='#email']")
    assert page.evaluate("document.activeElement.id") == "email"
    assert page.get_attribute("#email", "aria-describedby") == "email-error"
    assert page.input_value("#email") == "not-an-email", "nothing typed is lost"
    no_serious_accessibility_violations(page)
    shot(page, "invalid")


@pytest.mark.parametrize(
    ("name", "prepare"),
    [
        (
            "existing",
            lambda engine: engine.add_contact({**HOLDS_EVERYTHING, "email": "browser@example.com"}),
        ),
        (
            "ambiguous",
            lambda engine: [engine.add_contact({"email": "browser@example.com"}) for _ in range(2)],
        ),  # fmt: skip
        ("timeout", lambda engine: engine.inject("latency", seconds=1.2)),
        ("unavailable", lambda engine: engine.inject("status", on="find", status=503, times=5)),
        ("rejected", lambda engine: engine.inject("status", status=422)),
    ],
)
def test_each_outcome_is_shown_and_screenshotted(page, serve, engine, name, prepare):
    prepare(engine)
    page.goto(enrolled(page, serve(ENGAGE_CREATE_TIMEOUT=3)) + "/?lang=en")
    fill_person(page)
    submit(page)
    assert outcome(page) == name
    no_serious_accessibility_violations(page)
    shot(page, name)


def test_the_submit_button_is_disabled_while_sending(page, serve, engine):
    engine.latency = 0.3
    page.goto(enrolled(page, serve()) + "/?lang=en")
    fill_person(page)
    # Note the button's state just after the submit handlers ran; window.name survives the
    # navigation that follows.
    page.evaluate(
        """() => document.querySelector('form.signup').addEventListener('submit', () =>
             setTimeout(() => { const b = document.querySelector(".actions button[type=submit]");
                                window.name = JSON.stringify([b.disabled, b.textContent]); }))"""
    )
    page.click(".actions button[type=submit]", no_wait_after=True)
    page.wait_for_url("**/done")
    assert page.evaluate("JSON.parse(window.name)") == [True, "Sending…"]
    assert len(engine.requests("/api/v3/contacts", "POST")) == 1


def test_the_language_switch_changes_the_page_and_what_engage_receives(page, serve, engine):
    page.goto(enrolled(page, serve()) + "/")
    assert page.get_attribute("html", "lang") == "sv"
    page.click(".languages [lang=fi]")
    assert page.get_attribute("html", "lang") == "fi"
    assert page.inner_text("h1") == "Uusi jäsen"
    assert page.inner_text("#countryCode option:checked") == "Ruotsi"
    fill_person(page)
    submit(page)
    assert engine.requests("/api/v3/contacts", "POST")[0].body["lang"] == "fi"


def test_touch_targets_are_large_enough_and_200_percent_zoom_reads(browser, serve):
    base = serve()
    context = browser.new_context(viewport={"width": 400, "height": 640}, device_scale_factor=2)
    enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    small = page.evaluate(
        # The clipped default button (Enter's, base.html) is for the keyboard, never a finger.
        """() => [...document.querySelectorAll(
                    'input:not([type=hidden]), select, button:not(.default-submit), a')]
              .map(e => [e.id || e.textContent.trim(), e.getBoundingClientRect()])
              .filter(([, r]) => r.width > 0 && (r.width < 44 || r.height < 44))
              .map(([name, r]) => name + ' ' + Math.round(r.width) + 'x' + Math.round(r.height))"""
    )
    checkboxes = [s for s in small if s.split()[0].startswith(("accepts", "consent-"))]
    # A checkbox is 28 px, but its label makes the whole row (at least 48 px) the target.
    assert [s for s in small if s not in checkboxes] == []
    rows = page.evaluate(
        "() => [...document.querySelectorAll('.check')].map(e => e.getBoundingClientRect().height)"
    )
    assert min(rows) >= 44
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, "no sideways scrolling at 200 % zoom"
    shot(page, "form-200-percent")
    context.close()


def test_error_pages_pass_axe(page, serve):
    base = enrolled(page, serve())
    page.goto(base + "/?lang=en")
    page.goto(base + "/no-such-page")
    assert outcome(page) == "error"
    no_serious_accessibility_violations(page)
    shot(page, "not-found")


def test_landscape_tablet(browser, serve):
    context = browser.new_context(viewport=LANDSCAPE)
    page = context.new_page()
    page.goto(enrolled(page, serve()) + "/?lang=en")
    no_serious_accessibility_violations(page)
    shot(page, "form-landscape")
    context.close()


def test_the_form_works_without_javascript(browser, serve):
    context = browser.new_context(viewport=PORTRAIT, java_script_enabled=False)
    page = context.new_page()
    page.goto(enrolled(page, serve()) + "/?lang=en")
    fill_person(page, email="nojs@example.com")
    submit(page)
    assert outcome(page) == "created"
    context.close()


# --- kiosk ---------------------------------------------------------------------------------------
@pytest.fixture
def kiosk_url(serve):
    return serve(DEVICE_MODE="kiosk", KIOSK_IDLE_SECONDS=60, KIOSK_COUNTDOWN_SECONDS=15)


def test_kiosk_idle_warns_then_wipes_and_back_brings_nothing_back(page, kiosk_url):
    page.clock.install()
    page.goto(kiosk_url + "/no-such-page")  # where this browser was before the person came
    page.goto(kiosk_url + "/?lang=en")
    fill_person(page, email="secret@example.com")
    page.clock.run_for("00:59")
    assert page.locator("#idle-warning").is_hidden()
    page.clock.run_for("00:02")
    assert page.locator("#idle-warning").is_visible()
    no_serious_accessibility_violations(page)
    shot(page, "kiosk-idle-warning")
    page.click("#idle-continue")  # still here: the countdown stops
    assert page.locator("#idle-warning").is_hidden()
    assert page.input_value("#email") == "secret@example.com"

    page.clock.run_for("01:01")
    assert page.locator("#idle-warning").is_visible()
    with page.expect_navigation():
        page.clock.run_for("00:16")  # every countdown tick, then the wipe
    assert page.input_value("#email") == ""
    # The wipe replaced the person's page: Back leads past it, Forward to an empty form.
    page.go_back(wait_until="commit")
    page.wait_for_load_state()
    assert page.url == kiosk_url + "/no-such-page"
    page.go_forward(wait_until="commit")
    page.wait_for_load_state()
    assert outcome(page) == "form"
    assert page.input_value("#email") == "" and page.input_value("#firstName") == ""


def test_kiosk_back_after_a_signup_shows_an_empty_form(page, kiosk_url):
    page.goto(kiosk_url + "/?lang=en")
    fill_person(page, email="private@example.com")
    submit(page)
    assert outcome(page) == "thanks"
    assert "Thank you!" in page.inner_text("h1")
    assert page.locator(".member-number").count() == 0
    no_serious_accessibility_violations(page)
    shot(page, "kiosk-thanks")
    page.go_back(wait_until="commit")
    page.wait_for_load_state()
    assert page.input_value("#email") == ""
    assert page.input_value("#firstName") == ""
    assert (
        page.evaluate("Object.keys(localStorage).length + Object.keys(sessionStorage).length") == 0
    )


def test_a_page_restored_from_the_back_forward_cache_is_loaded_afresh(page, serve):
    """A restored page would show the state it was left in (a previous person's entry); the
    page reloads itself instead."""
    page.goto(enrolled(page, serve()) + "/?lang=en")
    page.fill("#email", "left.behind@example.com")
    page.evaluate("window.__marker = 'restored'")
    with page.expect_navigation():
        page.evaluate(
            "window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))"
        )
    assert page.evaluate("window.__marker") is None, "the page was loaded again"
    assert page.input_value("#email") == ""


def test_kiosk_thank_you_returns_to_the_form_by_itself(page, serve):
    base = serve(DEVICE_MODE="kiosk", KIOSK_THANKS_SECONDS=3)
    page.clock.install()  # the page's own clock, run on by the test: no race with a slow machine
    page.goto(base + "/?lang=en")
    fill_person(page, email="back@example.com")
    submit(page)
    assert outcome(page) == "thanks"
    with page.expect_navigation():
        page.clock.run_for("00:04")
    page.wait_for_load_state()
    assert outcome(page) == "form"


# --- setup ---------------------------------------------------------------------------------------
def test_staff_set_up_a_device_in_the_browser(page, serve, engine):
    base = serve(STORE_EXTERNAL_ID="", STAFF_PIN="4711")
    page.goto(base + "/?lang=en")
    assert outcome(page) == "setup-needed"
    no_serious_accessibility_violations(page)
    page.click("text=Set up this device")
    no_serious_accessibility_violations(page)
    page.fill("#pin", "4711")
    submit(page)
    assert outcome(page) == "setup-device"
    no_serious_accessibility_violations(page)
    shot(page, "setup")
    page.select_option("#store", "401")
    page.check("input[value=kiosk]")
    submit(page)
    assert outcome(page) == "form"
    assert "Acme København Strøget" in page.inner_text("header")
    assert page.get_attribute("html", "lang") == "da"


# --- a shared device keeps nobody's details (issue #12) ------------------------------------------
def test_a_kiosk_page_and_cookies_are_the_same_whatever_engage_said(browser, serve, engine):
    """Created, existing, in-progress, ambiguous: the markup a person (or their phone's
    camera) can read, and the cookies the browser keeps, are the same."""
    import json

    from itsdangerous import URLSafeTimedSerializer

    base = serve(DEVICE_MODE="kiosk")
    engine.add_contact({"email": "known@example.com"})
    engine.add_contact({"email": "twice@example.com"})
    engine.add_contact({"email": "twice@example.com"})
    engine.begin_create("Member", "busy@example.com")
    reader = URLSafeTimedSerializer(SECRETS[base], salt="engage-signup-result")
    seen = []
    for email in ("new@example.com", "known@example.com", "busy@example.com", "twice@example.com"):
        context = browser.new_context(viewport=PORTRAIT, locale="en-GB")
        page = context.new_page()
        page.goto(base + "/?lang=en")
        fill_person(page, email=email)
        submit(page)
        html = page.evaluate("document.documentElement.outerHTML")
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        result = reader.loads(cookies["result"])[:-1]  # less this browser's own random id
        seen.append((html, json.dumps(result), sorted(cookies)))
        context.close()
    assert [s[0] for s in seen] == [seen[0][0]] * 4, "the same markup, byte for byte"
    assert [s[1:] for s in seen] == [seen[0][1:]] * 4, "the same cookies"
    assert 'data-outcome="thanks"' in seen[0][0]


@pytest.mark.parametrize("order", ["wipe-then-back", "back-then-wipe"])
def test_after_an_error_and_a_wipe_no_navigation_brings_the_entry_back(page, serve, engine, order):
    """A kiosk's error page shows the entry once and is cleared sooner than a half-filled form.
    Whether the wipe ran on it, or the next person went Back first and the wipe ran there,
    Back, Forward and Reload show an empty form and send nothing again."""
    base = serve(DEVICE_MODE="kiosk", KIOSK_IDLE_SECONDS=60, KIOSK_ERROR_IDLE_SECONDS=20)
    engine.inject("status", on="find", status=503, times=None)
    page.clock.install()
    page.goto(base + "/?lang=en")
    page.fill("#lastName", "Hemlighetsson")
    fill_person(page, email="walked.away@example.com")
    submit(page)
    assert outcome(page) == "unavailable"
    assert page.input_value("#email") == "walked.away@example.com", "the person can try again"
    assert page.get_attribute("body", "data-idle") == "20"
    finds = len(engine.requests("/api/v3/contacts/id"))

    def nothing_left() -> None:
        page.wait_for_load_state()
        html = page.content()
        assert "walked.away" not in html and "Hemlighetsson" not in html

    def wipe(idle: str) -> None:
        page.clock.run_for(idle)
        assert page.locator("#idle-warning").is_visible()
        with page.expect_navigation():
            page.clock.run_for("00:16")
        nothing_left()

    if order == "wipe-then-back":
        wipe("00:21")
        page.go_back(wait_until="commit")
        nothing_left()
    else:
        page.go_back(wait_until="commit")
        nothing_left()
        wipe("01:01")
    page.go_forward(wait_until="commit")
    nothing_left()
    page.reload()
    nothing_left()
    assert outcome(page) == "form"
    assert len(engine.requests("/api/v3/contacts/id")) == finds, "nothing was sent again"


def test_a_kiosk_error_page_reloaded_shows_an_empty_form(page, serve, engine):
    base = serve(DEVICE_MODE="kiosk")
    engine.inject("status", on="find", status=503, times=None)
    page.goto(base + "/?lang=en")
    fill_person(page, email="once@example.com")
    submit(page)
    assert page.input_value("#email") == "once@example.com"
    page.reload()
    assert outcome(page) == "form" and page.input_value("#email") == ""


@pytest.mark.parametrize("mode", ["staff", "kiosk"])
def test_nothing_typed_goes_into_the_browsers_autofill_store(browser, serve, tmp_path, mode):
    """Chromium keeps what is typed into fields with autocomplete on in its profile (Web Data,
    table autofill) and offers it to the next person who types there."""
    import sqlite3

    base = serve(DEVICE_MODE=mode)
    profile = tmp_path / "profile"
    context = browser.browser_type.launch_persistent_context(
        str(profile), executable_path=chromium_path(), headless=True, args=ARGS
    )
    if mode == "staff":
        enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    page.fill("#lastName", "Autofyllsson")
    fill_person(page, email="remember.me@example.com")
    submit(page)
    assert outcome(page) in ("created", "thanks")
    # Then an ordinary form elsewhere, which Chromium does remember: closing the browser
    # writes out what it keeps (the database is locked while it runs), so that form's entry
    # in the profile shows this run would have kept ours too, without waiting for a guess.
    control, control_server = _control_form_server()
    try:
        page.goto(control + "/")
        page.fill("#city", "Kiruna")
        with page.expect_navigation():
            page.click("button")
    finally:
        context.close()
        control_server.shutdown()
    with sqlite3.connect(profile / "Default" / "Web Data") as db:
        stored = db.execute("SELECT name, value FROM autofill").fetchall()
    assert stored == [("city", "Kiruna")], "only the ordinary form's entry is kept"


def _control_form_server():
    """A page with an ordinary form (autocomplete on), on a loopback port of its own: (its
    base URL, the server to shut down)."""
    from flask import Flask, request

    control = Flask("autofill-control")

    @control.route("/", methods=["GET", "POST"])
    def page():
        if request.method == "POST":
            return "<p>Sent</p>"
        return '<form method="post"><input name="city" id="city"><button>Send</button></form>'

    server = make_server("127.0.0.1", 0, control, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}", server


# --- the experience at the till and at the kiosk (issue #15) -------------------------------------
@pytest.mark.parametrize("mode", ["staff", "kiosk"])
def test_switching_language_keeps_a_half_filled_form(browser, serve, mode):
    base = serve(DEVICE_MODE="kiosk") if mode == "kiosk" else serve()
    context = browser.new_context(viewport=LANDSCAPE)
    if mode == "staff":
        enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    page.fill("#firstName", "Åsa")
    page.fill("#email", "half.filled@example.com")
    page.check("#acceptsSms")
    with page.expect_navigation():
        page.click(".languages [lang=fi]")
    assert page.get_attribute("html", "lang") == "fi"
    assert outcome(page) == "form", "not checked yet: no error summary for a half-filled form"
    assert page.input_value("#firstName") == "Åsa"
    assert page.input_value("#email") == "half.filled@example.com"
    assert page.is_checked("#acceptsSms") and not page.is_checked("#consent-memberConsent")
    assert page.locator("#error-summary").count() == 0
    context.close()


@pytest.mark.parametrize("how", ["thank-you return", "idle wipe"])
def test_the_next_person_at_a_kiosk_starts_in_the_stores_language(page, serve, how):
    base = serve(DEVICE_MODE="kiosk", KIOSK_THANKS_SECONDS=3, KIOSK_IDLE_SECONDS=60)
    page.clock.install()
    page.goto(base + "/")
    assert page.get_attribute("html", "lang") == "sv", "the store is in Sweden"
    with page.expect_navigation():
        page.click(".languages [lang=fi]")
    assert page.get_attribute("html", "lang") == "fi"
    if how == "thank-you return":
        fill_person(page, email="suomi@example.com")
        submit(page)
        assert outcome(page) == "thanks"
        with page.expect_navigation():
            page.clock.run_for("00:04")
    else:
        page.fill("#email", "left@example.com")
        page.clock.run_for("01:01")
        with page.expect_navigation():
            page.clock.run_for("00:16")
    page.wait_for_load_state()
    assert outcome(page) == "form"
    assert page.get_attribute("html", "lang") == "sv"


@pytest.mark.parametrize(
    ("key", "field_id", "settings"),
    [
        ("email", "email", {}),
        ("mobilePhone", "mobilePhone", {}),
        ("socialSecurityNumber", "socialSecurityNumber", {}),
        ("externalId", "externalId", {"ENGAGE_CUSTOM_KEY": "externalId"}),
    ],
)
def test_the_cursor_starts_in_the_key_field_which_comes_first(page, serve, key, field_id, settings):
    base = enrolled(page, serve(CONTACT_KEY=key, **settings))
    page.goto(base + "/?lang=en")
    assert page.evaluate("document.activeElement.id") == field_id
    first = page.evaluate("document.querySelector('#signup input:not([type=hidden])').id")
    assert first == field_id, "the key field is the first field"
    assert page.locator("[autofocus]").count() == 1
    assert 'autofocus="None"' not in page.content()


def test_a_filled_staff_form_at_1024x768_shows_its_submit_button_keyboard_up_too(browser, serve):
    """A cashier's landscape tablet: with the form filled, the submit button is in view. With
    the on-screen keyboard up, the visible area shrinks (emulated here: the viewport made
    340 px shorter, about an iPad's keyboard in landscape); the button sticks to its bottom."""
    base = serve()
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    fill_person(page)
    page.fill("#lastName", "Kassasson")

    def submit_in_view() -> bool:
        box = page.locator(".actions button[type=submit]").bounding_box()
        height = page.evaluate("window.innerHeight")
        return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height

    assert submit_in_view()
    # The look-up's answer beside the key field is the cashier's to read: the rest fits.
    height = (
        "document.documentElement.scrollHeight - document.getElementById('lookup').offsetHeight"
    )
    assert page.evaluate(height) <= 800, "no long page"
    shot(page, "staff-filled-1024x768")
    page.set_viewport_size({"width": 1024, "height": 768 - 340})
    page.focus("#email")
    assert submit_in_view(), "keyboard up: still in view"
    page.focus("#consent-memberConsent")
    assert submit_in_view()
    shot(page, "staff-filled-keyboard-up")
    context.close()


def test_a_stray_tap_on_new_customer_never_wipes_a_filled_form(page, serve):
    page.goto(enrolled(page, serve()) + "/?lang=en")
    page.fill("#email", "keep.me@example.com")
    page.click(".clear-form")
    assert page.input_value("#email") == "keep.me@example.com"
    assert page.inner_text(".clear-form") == "Tap again to clear the form"
    with page.expect_navigation():
        page.click(".clear-form")
    assert page.input_value("#email") == ""


def test_the_error_summary_reads_well_on_a_phone_in_finnish(browser, serve):
    context = browser.new_context(viewport={"width": 390, "height": 844})
    base = serve()
    enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=fi")
    page.fill("#email", "ei-osoite")
    page.fill("#mobilePhone", "12")
    page.fill("#birthDay", "2999-01-01")
    submit(page)
    links = page.evaluate(
        """() => [...document.querySelectorAll('#error-summary a')].map(a => {
             const r = a.getBoundingClientRect(), li = a.closest('li').getBoundingClientRect();
             return [r.height, r.top - li.top, getComputedStyle(a.closest('li')).listStyleType];
           })"""
    )
    assert len(links) == 4
    for height, offset, bullet in links:
        assert height >= 44, "each link is a full-size target"
        assert offset < 12 and bullet == "none", "no bullet pushed onto a line of its own"
    page.set_viewport_size({"width": 1024, "height": 768})  # one line each: still 44 px
    heights = page.evaluate(
        "() => [...document.querySelectorAll('#error-summary a')]"
        ".map(a => a.getBoundingClientRect().height)"
    )
    assert min(heights) >= 44
    page.focus("#error-summary a")
    ring = page.evaluate("getComputedStyle(document.activeElement).outlineColor")
    assert ring == "rgb(29, 35, 39)", "a dark focus ring: over 3:1 on white and on the halo"
    no_serious_accessibility_violations(page)
    shot(page, "error-summary-390-fi")
    context.close()


STAFF_OUTCOMES = ["created", "existing", "in-progress", "ambiguous", "rejected", "timeout",
                  "unavailable", "throttled"]  # fmt: skip


def _prepare(engine, name: str, email: str) -> dict:
    """Set the simulator up so that signing up `email` ends in outcome `name`."""
    settings: dict = {}
    if name == "existing":
        engine.add_contact({**HOLDS_EVERYTHING, "email": email})
    elif name == "ambiguous":
        engine.add_contact({"email": email})
        engine.add_contact({"email": email})
    elif name == "in-progress":
        engine.begin_create("Member", email)
    elif name == "rejected":
        engine.inject("status", status=422)
    elif name == "timeout":
        engine.inject("status", status=504)
    elif name == "unavailable":
        engine.inject("status", on="find", status=500, times=5)
    elif name == "throttled":
        settings["SUBMIT_LIMIT_PER_DEVICE"] = 1
    return settings


@pytest.mark.parametrize("mode", ["staff", "kiosk"])
@pytest.mark.parametrize("name", STAFF_OUTCOMES)
def test_a_screenshot_of_each_outcome_in_each_mode(browser, serve, engine, mode, name):
    email = f"{name}@example.com"
    settings = _prepare(engine, name, email)
    base = serve(**settings, **({"DEVICE_MODE": "kiosk"} if mode == "kiosk" else {}))
    context = browser.new_context(viewport=LANDSCAPE if mode == "staff" else PORTRAIT)
    if mode == "staff":
        enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    if name == "throttled":  # the one sign-up a minute this till may send
        fill_person(page, email="first@example.com")
        submit(page)
        page.goto(base + "/")
    fill_person(page, email=email)
    submit(page)
    shown = outcome(page)
    final = name in ("created", "existing", "in-progress", "ambiguous")
    assert shown == ("thanks" if mode == "kiosk" and final else name)
    no_serious_accessibility_violations(page)
    shot(page, f"{mode}-{name}")
    context.close()


@pytest.mark.parametrize(
    ("lang", "at_one", "at_two"),
    [
        ("en", "cleared in 1 second.", "cleared in 2 seconds."),
        ("sv", "töms formuläret om 1 sekund.", "töms formuläret om 2 sekunder."),
        ("da", "ryddes formularen om 1 sekund.", "ryddes formularen om 2 sekunder."),
    ],
)
def test_the_kiosk_countdown_says_one_second_not_one_seconds(page, serve, lang, at_one, at_two):
    base = serve(DEVICE_MODE="kiosk", KIOSK_IDLE_SECONDS=10, KIOSK_COUNTDOWN_SECONDS=3)
    page.clock.install()
    page.goto(f"{base}/?lang={lang}")
    page.fill("#email", "still.here@example.com")
    page.clock.run_for("00:10")  # idle over: the countdown shows 3
    page.clock.run_for("00:01")
    assert page.inner_text("#idle-text").endswith(at_two)
    page.clock.run_for("00:01")
    assert page.inner_text("#idle-text").endswith(at_one)


# --- the store manager's view (issue #18) ------------------------------------------------------
def test_a_store_manager_works_through_the_day_in_the_browser(browser, serve, engine, tmp_path):
    """Sign-ups made at a till produce the figures; one refused by Engage is corrected and
    created once, one discarded; the consent export downloads; another store's manager sees
    none of it. axe on every page; screenshots."""
    import csv as csv_module

    from cryptography.fernet import Fernet

    base = serve(OUTBOX_KEYS=Fernet.generate_key().decode(),
                 MANAGER_PINS="Anna@101:48291573,Bo@201:73920461")  # fmt: skip
    app = APPS[base]
    context = browser.new_context(viewport=LANDSCAPE, locale="en-GB", accept_downloads=True)
    enrolled(context, base)
    till = context.new_page()
    till.goto(base + "/?lang=en")
    engine.add_contact({**HOLDS_EVERYTHING, "email": "known@example.com"})
    for email in ("one@example.com", "two@example.com", "known@example.com"):
        fill_person(till, email=email)
        submit(till)
        till.goto(base + "/")
    # Engage down (for the look-ups as the cashier leaves the field too): two are kept.
    engine.inject("status", on="any", status=503, times=None)
    for email in ("typo@exampel.com", "drop@example.com"):
        fill_person(till, email=email)
        submit(till)
        assert outcome(till) == "queued"
        till.goto(base + "/")
    engine.clear_faults()
    engine.inject("status", status=422, times=2)  # their replays are refused: for a person
    state, outbox = app.extensions["state"], app.extensions["outbox"]
    state.outbox_retry()
    assert [outbox.replay_one(app, sleep=lambda s: None) for _ in range(2)] == ["rejected"] * 2

    page = context.new_page()
    page.goto(base + "/manager/?lang=en")
    assert outcome(page) == "manager-login"
    no_serious_accessibility_violations(page)
    page.fill("#pin", "48291573")
    submit(page)
    assert outcome(page) == "manager"
    read = " ".join(page.inner_text("main").split())
    assert "New members 2 2" in read and "Already members 1 1" in read  # today, 30 days
    assert "Kept for later 2 2" in read
    assert page.locator("svg.chart rect").count() >= 1
    no_serious_accessibility_violations(page)
    shot(page, "manager-overview")
    assert "typo@exampel.com" not in page.content()

    rows = page.locator("section[aria-labelledby=attention-title] tbody tr")
    assert rows.count() == 2
    rows.nth(0).locator("button").click()
    page.wait_for_load_state()
    assert outcome(page) == "manager-item"
    no_serious_accessibility_violations(page)
    shot(page, "manager-item")
    shown = page.input_value("#email")
    assert shown == "typo@exampel.com", "the oldest first"
    page.fill("#email", "typo@example.com")
    submit(page)
    assert outcome(page) == "manager"
    page.locator("section[aria-labelledby=attention-title] tbody tr button").click()
    page.wait_for_load_state()
    with page.expect_navigation():
        page.click("text=Discard this sign-up")
    assert outcome(page) == "manager-discard", "a second step asks first"
    with page.expect_navigation():
        page.click("text=Remove it")
    assert "Nothing needs a person." in page.inner_text("main")
    assert outbox.replay_one(app, sleep=lambda s: None) == "created"
    assert outbox.replay_one(app, sleep=lambda s: None) is None, "sent once, nothing left"
    emails = [c["attributes"]["email"] for c in engine.contacts()]
    assert emails.count("typo@example.com") == 1 and "typo@exampel.com" not in emails
    assert "drop@example.com" not in emails, "the discarded one was never sent"

    with page.expect_download() as download:
        page.click("text=Download (CSV)")
    saved = tmp_path / "consents.csv"
    download.value.save_as(saved)
    with open(saved, newline="", encoding="utf-8") as handle:
        exported = list(csv_module.DictReader(handle))
    assert {row["store"] for row in exported} == {"101"} and len(exported) == 5 * 4

    other = browser.new_context(viewport=LANDSCAPE, locale="en-GB")
    bo = other.new_page()
    bo.goto(base + "/manager/?lang=en")
    bo.fill("#pin", "73920461")
    submit(bo)
    assert "No sign-ups yet." in bo.inner_text("main")
    assert "Nothing needs a person." in bo.inner_text("main")
    assert bo.locator("#export-store option").all_inner_texts() == ["201"]
    shot(bo, "manager-other-store")
    other.close()
    context.close()


# --- what a cashier, a customer and a manager stumbled on (issue #23) -----------------------------
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
@pytest.mark.parametrize("mode", ["staff", "kiosk"])
def test_enter_in_a_field_signs_up(browser, serve, mode, javascript):
    """The on-screen keyboard's Go, or Enter at a keyboard, in any field sends the sign-up:
    the language buttons in the header come first in the page and must not be the form's
    default button (they used to be: Enter sent POST /language and nothing was said)."""
    base = serve(DEVICE_MODE="kiosk") if mode == "kiosk" else serve()
    context = browser.new_context(viewport=LANDSCAPE, java_script_enabled=javascript)
    if mode == "staff":
        enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    fill_person(page, email=f"enter.{mode}.{javascript}@example.com")
    with page.expect_navigation():
        page.press("#mobilePhone", "Enter")
    page.wait_for_load_state()
    assert outcome(page) == ("thanks" if mode == "kiosk" else "created")
    assert page.get_attribute("html", "lang") == "en"
    context.close()


# --- the membership card in the customer's phone (issue #25) ------------------------------------
def decoded_codes(page, selector: str) -> list[str]:
    """What a phone's camera reads off `selector` on the screen: Chromium's screenshot of it,
    decoded by zxing-cpp."""
    import io

    import zxingcpp
    from PIL import Image

    image = Image.open(io.BytesIO(page.locator(selector).screenshot()))
    return [code.text for code in zxingcpp.read_barcodes(image)]


def test_the_tills_card_qr_code_opens_the_members_card(browser, serve, engine):
    """After a sign-up the till shows a QR code; a phone that scans it opens the link Engage
    gave for that member, which (in training, the simulator's) shows the card."""
    from webapp.simulator.engine import DEMO_WALLET_CARD

    base = serve(WALLET_CARD_ID=DEMO_WALLET_CARD)
    context = browser.new_context(viewport=LANDSCAPE)
    enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    fill_person(page, email="scan.my.card@example.com")
    submit(page)
    assert outcome(page) == "created"
    shot(page, "created-with-wallet-card")
    (link,) = decoded_codes(page, "[data-wallet] svg")
    contact = next(c for c in engine.contacts()
                   if c["attributes"]["email"] == "scan.my.card@example.com")  # fmt: skip
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/_simulator/wallet/[a-z2-9]{24}", link)
    assert link not in page.content(), "in the QR code only, not as text or a link"
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    card = phone.new_page()
    card.goto(link)
    assert card.locator("[data-pretend-card]").is_visible()
    assert contact["attributes"]["memberNumber"] in card.inner_text("[data-pretend-card]")
    phone.close()
    context.close()


def test_a_kiosk_page_never_carries_a_card(page, serve, engine):
    from webapp.simulator.engine import DEMO_WALLET_CARD

    base = serve(DEVICE_MODE="kiosk", WALLET_CARD_ID=DEMO_WALLET_CARD)
    engine.add_contact({"email": "member.at.kiosk@example.com"})
    for email in ("new.at.kiosk@example.com", "member.at.kiosk@example.com"):
        page.goto(base + "/?lang=en")
        fill_person(page, email=email)
        submit(page)
        assert outcome(page) == "thanks"
        assert page.locator("[data-wallet], svg.qr").count() == 0
    assert engine.requests("/api/v3/wallet/pass/urls") == []


def test_no_focus_box_is_painted_on_the_result_heading_but_the_keyboard_keeps_its_ring(page, serve):
    """Focus goes to the heading so that a screen reader reads it first; a yellow box around
    it looked like a glitch (and printed). Tab still shows where the keyboard is."""
    base = enrolled(page, serve())
    page.goto(base + "/?lang=en")
    fill_person(page, email="no.box@example.com")
    submit(page)
    assert page.evaluate("document.activeElement.id") == "result-heading"
    ring = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [s.outlineStyle, s.boxShadow]; })()"
    )
    assert ring == ["none", "none"]
    page.keyboard.press("Tab")
    assert page.evaluate("getComputedStyle(document.activeElement).boxShadow") != "none"


def test_the_postcode_keypad_follows_the_country_chosen(page, serve):
    base = enrolled(page, serve())
    page.goto(base + "/?lang=en")
    assert page.get_attribute("#zipCode", "inputmode") == "numeric", "a store in Sweden"
    page.select_option("#countryCode", "DE")
    assert page.get_attribute("#zipCode", "inputmode") == "text"
    page.select_option("#countryCode", "NO")
    assert page.get_attribute("#zipCode", "inputmode") == "numeric"
    page.fill("#zipCode", "01500")
    fill_person(page, email="postcode@example.com")
    submit(page)
    assert outcome(page) == "invalid"
    assert "Enter a Norwegian postcode of four digits, like 0150" in page.inner_text(
        "#error-summary"
    )


# --- the customer alone at a kiosk (issue #23) ----------------------------------------------------
def test_a_kiosk_has_a_start_over_that_asks_again_when_the_form_holds_anything(page, serve):
    base = serve(DEVICE_MODE="kiosk")
    page.goto(base + "/?lang=en")
    start_over = page.locator("[data-start-over]")
    assert start_over.inner_text() == "Start over"
    page.fill("#email", "changed.my.mind@example.com")
    start_over.click()
    assert start_over.inner_text() == "Tap again to clear the form"
    assert page.input_value("#email") == "changed.my.mind@example.com", "nothing lost yet"
    with page.expect_navigation():
        start_over.click()
    assert outcome(page) == "form" and page.input_value("#email") == ""


def test_the_idle_warning_offers_start_over_at_once(page, serve):
    base = serve(DEVICE_MODE="kiosk", KIOSK_IDLE_SECONDS=60, KIOSK_COUNTDOWN_SECONDS=15)
    page.clock.install()
    page.goto(base + "/?lang=en")
    page.fill("#email", "walked.away@example.com")
    page.clock.run_for("01:01")
    assert page.locator("#idle-warning").is_visible()
    with page.expect_navigation():
        page.click("#idle-start-over")
    page.wait_for_load_state()
    assert page.input_value("#email") == ""


def test_the_thank_you_screen_says_the_seconds_left(page, serve):
    base = serve(DEVICE_MODE="kiosk", KIOSK_THANKS_SECONDS=5)
    page.clock.install()
    page.goto(base + "/?lang=en")
    fill_person(page, email="counting@example.com")
    submit(page)
    assert outcome(page) == "thanks"
    assert page.inner_text("#return-note") == "This screen goes back to the start in 5 seconds."
    page.clock.run_for("00:03")
    assert page.inner_text("#return-note") == "This screen goes back to the start in 2 seconds."
    page.clock.run_for("00:01")
    assert page.inner_text("#return-note") == "This screen goes back to the start in 1 second."
    with page.expect_navigation():
        page.clock.run_for("00:02")


@pytest.mark.parametrize("where", ["thank-you", "an entry sent back"])
def test_without_javascript_a_kiosk_still_goes_back_to_an_empty_form(browser, serve, where):
    """No script to count: the page's own refresh (in <noscript>) takes it back to the start,
    after KIOSK_THANKS_SECONDS on the thank-you screen, after the idle time and countdown on a
    page that shows what someone sent."""
    base = serve(DEVICE_MODE="kiosk", KIOSK_THANKS_SECONDS=3, KIOSK_ERROR_IDLE_SECONDS=5,
                 KIOSK_COUNTDOWN_SECONDS=3)  # fmt: skip
    context = browser.new_context(viewport=LANDSCAPE, java_script_enabled=False)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    fill_person(page, email="no.script@example.com" if where == "thank-you" else "not an email")
    submit(page)
    assert outcome(page) == ("thanks" if where == "thank-you" else "invalid")
    if where == "thank-you":
        assert "goes back to the start in 3 seconds" in page.inner_text("main")
    with page.expect_navigation(timeout=30_000):  # the page's refresh, by itself
        pass
    page.wait_for_load_state()
    assert outcome(page) == "form"
    assert page.locator("#email").input_value() == ""
    context.close()


# --- the cashier's member number (issue #23) ----------------------------------------------------
def test_the_member_number_scans_as_code_128_and_copies_in_one_tap(browser, serve, engine):
    """A till's scanner reads the barcode into the POS; one tap copies the number (the
    Clipboard API, allowed here), and where the page may not write the clipboard the number is
    selected for Ctrl+C."""
    base = serve()
    allowed = ["clipboard-read", "clipboard-write"]
    context = browser.new_context(viewport=LANDSCAPE, permissions=allowed)
    enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    fill_person(page, email="scan.my.number@example.com")
    submit(page)
    number = page.inner_text("#member-number")
    assert re.fullmatch(r"\d{9}", number)
    assert decoded_codes(page, "[data-member-number] svg.barcode") == [number]
    page.click("[data-copy]")
    page.locator("[data-copy]", has_text="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == number
    page.evaluate("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    page.click("[data-copy]")
    assert page.evaluate("window.getSelection().toString().trim()") == number
    shot(page, "created-member-number")
    context.close()


# --- scan to join (issue #24) ---------------------------------------------------------------------
@pytest.mark.shared_state
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_customer_scans_the_tills_code_signs_up_on_the_phone_and_the_till_learns_it(
    browser, serve, engine, javascript
):
    """Two browsers: the till (1024x768) and the customer's phone (390x844, touch), against two
    app instances on one shared state (each engine; PostgreSQL as a chain runs it): the till on
    one, the phone on the other, as a load balancer may send them. The QR code on the till
    decodes to the address the phone opens; the phone's sign-up creates the person once, the
    phone says thanks, and the till shows the member number without the cashier touching
    anything (polling, or without JavaScript its own refresh)."""
    base = serve()
    other = serve()  # another machine of the same deployment
    till_context = browser.new_context(viewport={"width": 1024, "height": 768},
                                       java_script_enabled=javascript)  # fmt: skip
    enrolled(till_context, base)
    till = till_context.new_page()
    till.goto(base + "/?lang=en")
    with till.expect_navigation():
        till.click("[data-handoff-start]")
    assert outcome(till) == "handoff-waiting"
    shot(till, f"handoff-till-waiting-{'js' if javascript else 'nojs'}")
    if javascript:  # axe runs in the page: each page of the handoff, with JavaScript on
        no_serious_accessibility_violations(till)
    (scanned,) = decoded_codes(till, ".handoff__qr svg")
    assert scanned == till.inner_text("[data-handoff-link]").strip()
    phone_context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                        has_touch=True, java_script_enabled=javascript)  # fmt: skip
    phone = phone_context.new_page()
    assert scanned.startswith(base + "/j/")
    phone.goto(scanned.replace(base, other, 1))  # the balancer sends the phone elsewhere
    assert phone.url == other + "/j/", "the token is gone from the address"
    assert outcome(phone) == "form"
    if javascript:
        no_serious_accessibility_violations(phone)
    assert phone.get_attribute("#email", "type") == "email"
    phone.fill("#email", f"scanned.{javascript}@example.com")
    phone.check("#consent-memberConsent")
    phone.tap("main button[type=submit]") if javascript else phone.click("main button[type=submit]")
    phone.wait_for_url(other + "/j/done")
    assert outcome(phone) == "thanks"
    assert "Show this screen to the cashier." in phone.inner_text("main")
    shot(phone, f"handoff-phone-thanks-{'js' if javascript else 'nojs'}")
    if javascript:
        no_serious_accessibility_violations(phone)
    # By itself (polling, or its own refresh): only that the customer is done, until the
    # cashier, with the screen turned to them, asks to see the result.
    till.wait_for_selector("main[data-outcome=handoff-done]", timeout=30_000)
    assert "Signed up on the phone" in till.inner_text("main")
    assert "member-number" not in till.content()
    shot(till, f"handoff-till-done-{'js' if javascript else 'nojs'}")
    with till.expect_navigation():
        till.press("[data-reveal]", "Enter") if javascript else till.click("[data-reveal]")
    assert till.url == base + "/done"
    assert outcome(till) == "created"
    contact = next(c for c in engine.contacts()
                   if c["attributes"]["email"] == f"scanned.{javascript}@example.com")  # fmt: skip
    assert contact["attributes"]["memberNumber"] in till.inner_text("#member-number")
    assert len(engine.requests("/api/v3/contacts", "POST")) == 1
    phone.goto(scanned)
    assert outcome(phone) == "handoff-closed", "a photo of the screen is worth one sign-up"
    if javascript:
        no_serious_accessibility_violations(phone)
    phone.goto(scanned.replace(base, other, 1))
    assert outcome(phone) == "handoff-closed", "on every machine"
    till_context.close()
    phone_context.close()


def test_a_tall_portrait_kiosk_scales_type_and_targets_to_its_screen(browser, serve):
    """A 1080x1920 portrait kiosk used to show a desktop page: 18 px labels in a narrow column
    and the lower half empty."""
    base = serve(DEVICE_MODE="kiosk")
    context = browser.new_context(viewport={"width": 1080, "height": 1920})
    page = context.new_page()
    page.goto(base + "/?lang=en")
    label = page.evaluate("parseFloat(getComputedStyle(document.querySelector('label')).fontSize)")
    field = page.locator("#email").bounding_box()
    button = page.locator(".actions button[type=submit]").bounding_box()
    column = page.locator("main").bounding_box()
    assert label >= 24, label
    assert field["height"] >= 72 and button["height"] >= 80
    assert column["width"] >= 0.8 * 1080
    # Each checkbox stands clear of its words (they touched: the box's margin ran past its
    # column into the gap).
    gaps = page.evaluate("""() => [...document.querySelectorAll('.check')].map(row => {
        const box = row.querySelector('input').getBoundingClientRect();
        const words = row.querySelector('label').getBoundingClientRect();
        return words.left - box.right; })""")
    assert gaps and min(gaps) >= 12, gaps
    shot(page, "kiosk-portrait-1080x1920")
    context.close()


def test_the_managers_view_reflows_at_200_percent_zoom_and_prints_without_buttons(
    browser, serve, engine
):
    """WCAG 1.4.10: at 200 % (a 1280 px window is 640 CSS px wide) nothing but a data table's
    own box scrolls sideways; on paper, no banner, language switch or button."""
    from cryptography.fernet import Fernet

    base = serve(OUTBOX_KEYS=Fernet.generate_key().decode(), MANAGER_PINS="Anna@101:48291573")
    app = APPS[base]
    # Engage down while the till looks the person up and signs them up: kept.
    engine.inject("status", on="any", status=503, times=None)
    page = browser.new_context(viewport={"width": 640, "height": 400},
                               device_scale_factor=2).new_page()  # fmt: skip
    enrolled(page, base)
    page.goto(base + "/?lang=en")
    fill_person(page, email="a.very.long.address.for.a.narrow.screen@example.com")
    submit(page)
    engine.clear_faults()
    engine.inject("status", status=422)
    app.extensions["state"].outbox_retry()
    app.extensions["outbox"].replay_one(app, sleep=lambda s: None)
    page.goto(base + "/manager/")
    page.fill("#pin", "48291573")
    submit(page)
    assert outcome(page) == "manager"
    assert page.locator("section[aria-labelledby=attention-title] tbody tr").count() == 1
    wide = page.evaluate("document.documentElement.scrollWidth")
    assert wide <= 640, f"the page scrolls sideways: {wide} px"
    shot(page, "manager-200-percent")
    page.emulate_media(media="print")
    for hidden in ("header", "form.filter", ".panel button"):
        assert all(not box.is_visible() for box in page.locator(hidden).all()), hidden
    page.context.close()


def till_with_a_handoff(browser, base: str):
    """An enrolled till (1024x768) that has pressed "Customer signs up on their phone"."""
    context = browser.new_context(viewport={"width": 1024, "height": 768})
    enrolled(context, base)
    till = context.new_page()
    till.goto(base + "/?lang=en")
    with till.expect_navigation():
        till.click("[data-handoff-start]")
    return context, till


SMALL_TARGETS = """(least) => [...document.querySelectorAll(
        'input:not([type=hidden]):not([type=checkbox]), select, button:not(.default-submit), a,'
        + ' summary')]
    .map(e => [e.id || e.textContent.trim(), e.getBoundingClientRect()])
    .filter(([, r]) => r.width > 0 && (r.height < least
            || (r.width < least && r.width < r.height * 3)))
    .map(([name, r]) => name + ' ' + Math.round(r.width) + 'x' + Math.round(r.height))"""


def test_every_target_on_the_customers_phone_is_48_px(browser, serve):
    """The README promises 48 px targets on the phone: "Read the terms" and the header's
    language buttons were 44. Each page a phone meets (the form, its errors, the typed code's
    page, the closed page) at 390x844 with touch: nothing smaller than 48 px high (and the
    language buttons 48 wide)."""
    base = serve()
    till_context, till = till_with_a_handoff(browser, base)
    link = till.inner_text("[data-handoff-link]").strip()
    address = till.inner_text(".handoff__address").strip()
    # In the page for tests and copying, never read aloud (a screen reader read the token out).
    token = link.rsplit("/j/", 1)[1]
    assert token not in till.locator("body").aria_snapshot()
    phone_context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                        has_touch=True)  # fmt: skip
    phone = phone_context.new_page()
    phone.goto(address + "?lang=en")
    assert outcome(phone) == "handoff-code"
    assert phone.evaluate(SMALL_TARGETS, 48) == []
    phone.goto(link)
    assert outcome(phone) == "form"
    assert phone.locator(".terms, .terms-text summary").count() >= 1, "the terms' link is there"
    assert phone.evaluate(SMALL_TARGETS, 48) == []
    phone.tap("main button[type=submit]")  # nothing filled in: the errors and their links
    phone.wait_for_selector("main[data-outcome=invalid]")
    assert phone.locator(".error-summary a").count() >= 1
    assert phone.evaluate(SMALL_TARGETS, 48) == []
    shot(phone, "phone-targets-errors")
    other = phone_context.new_page()
    other.goto(base + "/j/" + "x" * 43)
    assert outcome(other) == "handoff-closed" and other.evaluate(SMALL_TARGETS, 48) == []
    till_context.close()
    phone_context.close()


COVERED = """() => {
    const bar = document.querySelector('form#signup .actions').getBoundingClientRect();
    const field = document.activeElement.getBoundingClientRect();
    return field.bottom > bar.top && field.top < bar.bottom ? document.activeElement.id : null;
}"""


@pytest.mark.parametrize(
    ("size", "scale", "mode"),
    [({"width": 512, "height": 384}, 2, "staff"), ({"width": 390, "height": 844}, 1, "phone")],
    ids=["tablet-200-percent", "phone-390"],
)
def test_tabbing_through_the_form_never_hides_a_field_behind_the_submit_bar(
    browser, serve, size, scale, mode
):
    """The submit bar stays in view at the bottom; a field it covered (Last name at 200 % on
    the tablet, "Offers by post" on a phone) was typed into unseen. Tab from the top through
    every field: the focused one is never under the bar."""
    base = serve()
    context = browser.new_context(viewport=size, device_scale_factor=scale)
    enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    if mode == "phone":
        with page.expect_navigation():
            page.click("[data-handoff-start]")
        link = page.inner_text("[data-handoff-link]").strip()
        page = context.new_page()
        context.clear_cookies()
        page.goto(link)
        assert outcome(page) == "form"
    page.focus("form#signup input:not([type=hidden])")
    hidden, seen = [], []
    for _ in range(40):
        name = page.evaluate("document.activeElement.id")
        if page.evaluate("document.activeElement.closest('.actions') !== null"):
            break
        seen.append(name)
        covered = page.evaluate(COVERED)
        if covered:
            hidden.append(covered)
        page.keyboard.press("Tab")
    assert "acceptsPostal" in seen and "lastName" in seen, seen
    assert hidden == [], f"under the submit bar when focused: {hidden}"
    shot(page, f"tabbing-{mode}")
    context.close()


def test_the_phone_warns_a_minute_before_its_code_runs_out(browser, serve):
    """On the browser's own fake clock (no waiting): hidden until a minute is left, then said
    where a screen reader hears it."""
    till_context, till = till_with_a_handoff(browser, serve())
    link = till.inner_text("[data-handoff-link]").strip()
    phone_context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                        has_touch=True)  # fmt: skip
    phone = phone_context.new_page()
    phone.clock.install()
    phone.goto(link)
    warning = phone.locator("[data-expiry-warning]")
    left = int(warning.get_attribute("data-seconds-left"))
    assert left > 120 and not warning.is_visible()
    phone.clock.run_for((left - 62) * 1000)
    assert not warning.is_visible(), "not yet: more than a minute is left"
    phone.clock.run_for(3000)
    assert warning.is_visible() and warning.get_attribute("role") == "status"
    assert "One minute left" in warning.inner_text()
    shot(phone, "phone-one-minute-left")
    till_context.close()
    phone_context.close()


# --- the person at the till who is known already (issue #34) -------------------------------------
def test_typing_a_members_address_shows_the_masked_name_before_anything_else(
    browser, serve, engine
):
    """The cashier types the address and leaves the field: the member is named (masked) beside
    it, with the member number, before anything else is filled in; "Done" ends the visit."""
    engine.add_contact({"firstName": "Maja", "lastName": "Lind", "email": "maja@example.com",
                        "countryCode": "SE"})  # fmt: skip
    from webapp.simulator.engine import DEMO_WALLET_CARD

    base = serve(WALLET_CARD_ID=DEMO_WALLET_CARD)
    context = browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB")
    enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    page.fill("#email", "nobody.yet@example.com")
    page.press("#email", "Tab")
    page.locator("[data-lookup-result=none]").wait_for()
    no_serious_accessibility_violations(page)
    page.fill("#email", "maja@example.com")
    page.press("#email", "Tab")
    answer = page.locator("[data-lookup-result=member]")
    answer.wait_for()
    assert "Maja L. is a member." in answer.inner_text()
    assert "Lind" not in page.content()
    assert page.input_value("#firstName") == "", "nothing else was filled in"
    number = engine.contacts()[0]["attributes"]["memberNumber"]
    assert number in answer.inner_text()
    finds = len(engine.requests("/api/v3/contacts/id"))
    assert engine.requests("/api/v3/wallet/pass/urls") == [], "the card only when asked for"
    page.click("[data-lookup-wallet]")  # "Show the card for the phone's wallet"
    page.locator("[data-lookup-result=member] [data-wallet] svg").wait_for()
    (link,) = decoded_codes(page, "[data-wallet] svg")
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/_simulator/wallet/[a-z2-9]{24}", link)
    assert len(engine.requests("/api/v3/wallet/pass/urls")) == 1
    shot(page, "lookup-member")
    no_serious_accessibility_violations(page)
    with page.expect_navigation():
        page.click("[data-lookup-done]")
    assert outcome(page) == "form" and page.input_value("#email") == ""
    assert len(engine.requests("/api/v3/contacts/id")) == finds, "the visit cost no more calls"
    context.close()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_newsletter_subscriber_is_looked_up_and_made_a_member(browser, serve, engine, javascript):
    engine.add_contact({"contactType": "Contact", "firstName": "Nora", "lastName": "Berg",
                        "email": "nora@example.com", "mobilePhone": "+46701740607",
                        "preferences": {"acceptsEmail": True}})  # fmt: skip
    base = serve()
    context = browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB",
                                  java_script_enabled=javascript)  # fmt: skip
    enrolled(context, base)
    page = context.new_page()
    page.goto(base + "/?lang=en")
    page.fill("#email", "nora@example.com")
    if javascript:
        page.press("#email", "Tab")
    else:
        with page.expect_navigation():
            page.click("button[name=lookup]")
    page.locator("[data-lookup-result=other-type]").wait_for()
    assert page.is_checked("#acceptsEmail"), "what they have given is ticked"
    assert "Nora B. is registered as Contact" in page.inner_text("[data-lookup]")
    shot(page, f"lookup-other-type-{'js' if javascript else 'no-js'}")
    if javascript:  # axe runs in the page: only where script runs
        no_serious_accessibility_violations(page)
    page.fill("#lastName", "Berg")
    page.check("#consent-memberConsent")
    with page.expect_navigation():
        page.press("#lastName", "Enter")
    assert outcome(page) == "promoted"
    (contact,) = engine.contacts()
    assert contact["meta"]["contactType"] == "Member"
    assert contact["preferences"]["acceptsEmail"] is True
    if javascript:
        no_serious_accessibility_violations(page)
    shot(page, f"promoted-{'js' if javascript else 'no-js'}")
    context.close()


# --- the customer display at the till (issue #35) -----------------------------------------------
@pytest.mark.parametrize("state_engine", ["postgresql"], indirect=True)
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_till_pairs_its_display_and_the_customer_signs_up_there(
    browser, serve, engine, javascript, state_engine
):
    """The till (1024x768) and the customer display (800x1280, touch) on two app instances of
    one PostgreSQL: pair by the code the display shows, hand over, the display shows the form
    by itself, the customer corrects it and signs up there, the till reveals the member number;
    a phone that types the handoff's code gets nothing."""
    # The thank-you stays until the test moves on (see _paired_display).
    till_base, display_base = serve(KIOSK_THANKS_SECONDS=120), serve(KIOSK_THANKS_SECONDS=120)
    till_context = browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB")
    enrolled(till_context, till_base)
    display_context = browser.new_context(viewport=PORTRAIT, has_touch=True, locale="en-GB",
                                          java_script_enabled=javascript)  # fmt: skip
    enrolled(display_context, display_base, "display")
    till, display = till_context.new_page(), display_context.new_page()
    display.goto(display_base + "/display")
    assert outcome(display) == "display-pairing"
    if javascript:
        no_serious_accessibility_violations(display)
    code = display.inner_text("[data-pairing-code]")
    till.goto(till_base + "/?lang=en")
    with till.expect_navigation():
        till.click(".display-link")  # "Customer display"
    assert outcome(till) == "display-pair"
    no_serious_accessibility_violations(till)
    till.fill("#pair-code", code)
    with till.expect_navigation():
        till.press("#pair-code", "Enter")
    # Paired, the display leaves its code by itself (its poll, or its refresh without
    # JavaScript); a reload of the test's own would race that one.
    display.wait_for_selector("main[data-outcome=display-idle]", timeout=15_000)
    shot(display, f"display-idle-{'js' if javascript else 'no-js'}")
    if javascript:
        no_serious_accessibility_violations(display)
    with till.expect_navigation():
        till.click("[data-display-start]")
    assert outcome(till) == "handoff-waiting"
    # Nobody touches the display: it shows the form by itself (a poll, or its own refresh).
    display.wait_for_selector("main[data-outcome=form]", timeout=15_000)
    # A phone with the handoff's code (never shown for a display) gets nothing.
    handoff = APPS[till_base].extensions["state"].handoff(till=till.url.rsplit("/", 1)[1])
    phone_context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True)
    phone = phone_context.new_page()
    phone.goto(f"{till_base}/join/{handoff['store']}")
    phone.fill("#code", handoff["code"])
    with phone.expect_navigation():
        phone.press("#code", "Enter")
    assert outcome(phone) in ("handoff-closed", "handoff-code")
    assert phone.locator("#signup").count() == 0, "no form for the phone"
    phone_context.close()
    display.fill("#email", f"display.{javascript}@example.com")
    display.fill("#firstName", "Disa")
    with display.expect_navigation():
        display.press("#firstName", "Enter")
    assert outcome(display) == "invalid", "the terms are not accepted yet"
    if javascript:
        no_serious_accessibility_violations(display)
    display.check("#consent-memberConsent")
    shot(display, f"display-form-{'js' if javascript else 'no-js'}")
    if javascript:
        no_serious_accessibility_violations(display)
    with display.expect_navigation():
        if javascript:
            display.tap("main .actions button[type=submit]")
        else:
            display.click("main .actions button[type=submit]")
    assert outcome(display) == "thanks"
    if javascript:
        no_serious_accessibility_violations(display)
    till.wait_for_selector("main[data-outcome=handoff-done]", timeout=15_000)
    with till.expect_navigation():
        till.click("[data-reveal]")
    assert outcome(till) == "created"
    number = engine.contacts()[0]["attributes"]["memberNumber"]
    assert number in till.inner_text("main")
    assert number not in display.content()
    # The next customer presses Back on the display: nothing of this one comes back.
    display.go_back(wait_until="commit")
    display.wait_for_load_state()
    assert outcome(display) == "display-idle"
    assert f"display.{javascript}@example.com" not in display.content()
    assert "Disa" not in display.content()
    # At rest, "Unpair this display" asks for the staff PIN: it faces the customers.
    display.goto(display_base + "/display/rest")
    with display.expect_navigation():
        display.click(".display-unpair a")
    assert outcome(display) == "display-unpair"
    if javascript:
        no_serious_accessibility_violations(display)
    display.fill("#pin", "4711")
    with display.expect_navigation():
        display.press("#pin", "Enter")
    assert outcome(display) == "display-pairing"
    till.goto(till_base + "/?lang=en")
    assert till.locator("[data-display-start]").count() == 0, "the till has no display now"
    till_context.close()
    display_context.close()


def _paired_display(browser, serve, javascript, zoom: int = 1, **config):
    """A till (1024x768) and its customer display (800x1280, touch; at `zoom`, as many device
    pixels to a CSS pixel) on two app instances. The thank-you stays until the test moves on
    (its own return to rest, after 10 s, could race a step on a loaded machine)."""
    config = {"KIOSK_THANKS_SECONDS": 120, **config}
    till_base, display_base = serve(**config), serve(**config)
    till_context = browser.new_context(viewport={"width": 1024, "height": 768}, locale="en-GB")
    enrolled(till_context, till_base)
    viewport = {side: size // zoom for side, size in PORTRAIT.items()}
    display_context = browser.new_context(viewport=viewport, has_touch=True, locale="en-GB",
                                          java_script_enabled=javascript,
                                          device_scale_factor=zoom)  # fmt: skip
    enrolled(display_context, display_base, "display")
    till, display = till_context.new_page(), display_context.new_page()
    display.goto(display_base + "/display")
    code = display.inner_text("[data-pairing-code]")
    till.goto(till_base + "/display/pair")
    till.fill("#pair-code", code)
    with till.expect_navigation():
        till.press("#pair-code", "Enter")
    # Paired, the display leaves its code by itself (its poll, or its refresh without
    # JavaScript); a reload of the test's own would race that one.
    display.wait_for_selector("main[data-outcome=display-idle]", timeout=15_000)
    return till, display, till_base


def _hand_over(till, display, till_base):
    if outcome(display) == "thanks":  # the customer presses Done (else it rests by itself)
        with display.expect_navigation():
            display.click("main a.button")
        assert outcome(display) == "display-idle"
    till.goto(till_base + "/?lang=en")
    with till.expect_navigation():
        till.click("[data-display-start]")
    display.wait_for_selector("main[data-outcome=form]", timeout=15_000)


def _display_sends(display, email: str, javascript: bool, expected: str = "thanks"):
    display.fill("#email", email)
    display.check("#consent-memberConsent")
    with display.expect_navigation():
        if javascript:
            display.tap("main .actions button[type=submit]")
        else:
            display.click("main .actions button[type=submit]")
    if expected == "thanks":  # a correction comes back through a redirect to the form
        display.wait_for_selector("main[data-outcome=thanks]")
    assert outcome(display) == expected


@pytest.mark.parametrize("state_engine", ["postgresql"], indirect=True)
@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_the_display_reads_the_same_for_everyone_and_keeps_what_engage_cannot_take(
    browser, serve, engine, javascript, state_engine
):
    """A member reads exactly as a new person on the display; a value Engage refuses is
    corrected there; Engage down, the sign-up is kept; the till's cancel sends the display
    back to rest; at rest nothing of the last customer shows."""
    from cryptography.fernet import Fernet

    engine.add_contact({**HOLDS_EVERYTHING, "email": "member.display@example.com"})
    till, display, till_base = _paired_display(
        browser, serve, javascript, OUTBOX_KEYS=Fernet.generate_key().decode()
    )
    pages = []
    for email in ("new.display@example.com", "member.display@example.com"):
        _hand_over(till, display, till_base)
        _display_sends(display, email, javascript)
        pages.append(re.sub(r'name="csrf_token" value="[^"]*"', "", display.content()))
        till.wait_for_selector("main[data-outcome=handoff-done]", timeout=15_000)
    assert pages[0] == pages[1], "a member's thank-you is the new person's, byte for byte"
    display.goto(display.url.split("/display")[0] + "/display/rest")
    assert outcome(display) == "display-idle"
    assert "display@example.com" not in display.content()

    _hand_over(till, display, till_base)
    engine.inject("status", on="create", status=422, times=1)
    _display_sends(display, "refused.display@example.com", javascript, expected="rejected")
    assert display.locator("#firstName[aria-invalid=true]").count() == 1
    if javascript:
        no_serious_accessibility_violations(display)
    shot(display, f"display-rejected-{'js' if javascript else 'no-js'}")
    display.fill("#firstName", "Rättad")
    _display_sends(display, "refused.display@example.com", javascript)
    # The till's page goes to "done" by itself: let it, before the cashier moves on.
    till.wait_for_selector("main[data-outcome=handoff-done]", timeout=15_000)

    display.goto(display.url.split("/display")[0] + "/display/rest")
    _hand_over(till, display, till_base)
    engine.inject("status", on="any", status=503, times=None)
    _display_sends(display, "kept.display@example.com", javascript)
    till.wait_for_selector("main[data-outcome=handoff-done]", timeout=15_000)
    with till.expect_navigation():
        till.click("[data-reveal]")
    assert outcome(till) == "queued"
    engine.clear_faults()

    display.goto(display.url.split("/display")[0] + "/display/rest")
    _hand_over(till, display, till_base)
    with till.expect_navigation():
        till.click("form[action$='/cancel'] button")
    if javascript:  # it notices by itself
        display.wait_for_selector("main[data-outcome=display-idle]", timeout=15_000)
    else:  # a framed page refreshes itself, says the form is closed, and offers the way back
        display.fill("#email", "late.display@example.com")
        watch = display.frame_locator("iframe.display-watch-frame")
        watch.locator("body[data-watch=closed]").wait_for(timeout=15_000)
        assert "har stängt formuläret" in watch.locator("body").inner_text(), "the store's language"
        assert display.input_value("#email") == "late.display@example.com", "nothing reloaded"
        shot(display, "display-closed-no-js")
        with display.expect_navigation():
            watch.locator("a.button").tap()  # "Start over", in the frame, for the whole screen
        assert outcome(display) == "display-idle"
    assert not [
        c for c in engine.contacts() if c["attributes"]["email"] == "late.display@example.com"
    ]
    till.context.close()
    display.context.close()


SMALL_TARGETS = """() => [...document.querySelectorAll(
        'input:not([type=hidden]), select, button:not(.default-submit), a')]
      .filter(e => !e.closest('[hidden]'))
      .map(e => [e.id || e.textContent.trim(), e.getBoundingClientRect()])
      .filter(([, r]) => r.width > 0 && (r.width < 44 || r.height < 44))
      .filter(([name]) => !name.startsWith('accepts') && !name.startsWith('consent-'))
      .map(([name, r]) => name + ' ' + Math.round(r.width) + 'x' + Math.round(r.height))"""
SIDEWAYS = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


@pytest.mark.parametrize("state_engine", ["postgresql"], indirect=True)
def test_the_display_reads_at_200_percent_zoom_without_javascript(browser, serve, state_engine):
    """WCAG 1.4.10 on the customer display (800x1280 at 200 %: 400x640 CSS px), JavaScript off:
    at rest, the form, the strip that says the till closed it, and the PIN page to unpair it
    reflow without sideways scrolling, every target is a finger's size, and the strip's words
    fit in it."""
    till, display, till_base = _paired_display(browser, serve, False, zoom=2)
    for name in ("rest", "form", "closed", "unpair"):
        if name == "form":
            _hand_over(till, display, till_base)
        elif name == "closed":
            with till.expect_navigation():
                till.click("form[action$='/cancel'] button")
            watch = display.frame_locator("iframe.display-watch-frame")
            watch.locator("body[data-watch=closed]").wait_for(timeout=15_000)
            frame = display.frame(url=re.compile(r"/display/watch$"))
            hidden = frame.evaluate(
                "() => document.documentElement.scrollHeight - window.innerHeight"
            )
            assert hidden <= 0, f"the strip's words are cut off by {hidden} px"
            assert frame.evaluate(SMALL_TARGETS) == []
        elif name == "unpair":
            display.goto(display.url.split("/display")[0] + "/display/unpair")
            assert outcome(display) == "display-unpair"
        assert display.evaluate(SIDEWAYS) <= 0, f"sideways scrolling on the display's {name}"
        assert display.evaluate(SMALL_TARGETS) == [], name
        shot(display, f"display-200-percent-{name}")
    till.context.close()
    display.context.close()


@pytest.mark.parametrize("state_engine", ["postgresql"], indirect=True)
def test_the_till_says_when_its_display_is_not_picking_up(browser, serve, state_engine):
    """The display's tablet is asleep: the cashier hands over, and the till's waiting page
    says by itself (its status poll) that the display has not picked the form up."""
    from webapp.pages.handoff import DISPLAY_AWAY_SECONDS

    till, display, till_base = _paired_display(browser, serve, True)
    display.context.close()  # asleep: nothing polls
    till.goto(till_base + "/?lang=en")
    with till.expect_navigation():
        till.click("[data-display-start]")
    assert outcome(till) == "handoff-waiting"
    assert till.locator("[data-display-away]").count() == 0
    state = APPS[till_base].extensions["state"]
    clock = state.clock
    state.clock = lambda: clock() + DISPLAY_AWAY_SECONDS + 1
    try:
        till.locator("[data-display-away]").wait_for(timeout=15_000)  # reloaded by itself
        assert "not picked up the form" in till.inner_text("[data-display-away]")
        no_serious_accessibility_violations(till)
        shot(till, "till-display-not-picking-up")
    finally:
        state.clock = clock
    till.context.close()
