"""What every response gets: security headers, Server-Timing, a request id, one log line,
friendly errors."""

from __future__ import annotations

import logging
import re
import secrets
import time
import traceback

from flask import Flask, current_app, g, has_request_context, render_template, request
from flask_babel import gettext as _
from werkzeug.exceptions import HTTPException

log = logging.getLogger("webapp.request")

CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


TIMING = "webapp.timing"  # environ key: [perf_counter at arrival, seconds spent on Engage]
REQUEST_ID = "webapp.request_id"  # environ key: this request's id


class Edge:
    """WSGI middleware around the whole app: what every response carries.

    - `Server-Timing: app;dur=…, engage;dur=…`: everything Flask does for a request (session
      cookie, form parsing, routing, hooks, the view, saving the session), less the time spent
      waiting on Engage, and that Engage time. Only gunicorn's own HTTP parsing and writing are
      outside it.
    - `X-Request-Id`: the caller's, when it looks like one, else a new one (also in the logs).
    - The security headers; HSTS over HTTPS; `Cache-Control: no-store` on pages.

    Added here as plain tuples, not through Flask's response headers, which check each one:
    a few microseconds of every page, and one place that no response can get past.
    """

    def __init__(self, wsgi_app, *, https: bool):
        self.wsgi_app = wsgi_app
        self.https = https

    def __call__(self, environ, start_response):
        timing = environ[TIMING] = [time.perf_counter(), 0.0]
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = environ[REQUEST_ID] = (
            incoming if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
        )

        def edge_start_response(status, headers, exc_info=None):
            app_ms = (time.perf_counter() - timing[0] - timing[1]) * 1000
            # No view sets any of these itself, so they are added without looking for them.
            headers.extend(SECURITY_HEADERS)
            if self.https or environ.get("wsgi.url_scheme") == "https":
                headers.append(HSTS)
            if any(k.lower() == "content-type" and v.startswith("text/html") for k, v in headers):
                # Pages can show what a person typed: never keep them in any cache or history.
                headers.append(NO_STORE)
            headers.append(("X-Request-Id", request_id))
            headers.append(
                ("Server-Timing", f"app;dur={app_ms:.2f}, engage;dur={timing[1] * 1000:.2f}")
            )
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, edge_start_response)


def add_engage_time(seconds: float) -> None:
    """Called by the Engage client after each call, to split Server-Timing into app and Engage."""
    if has_request_context():
        timing = request.environ.get(TIMING)
        if timing is not None:
            timing[1] += seconds


def log_context() -> str:
    """Store and request id for log lines written while serving a request."""
    if not has_request_context():
        return ""
    store = current_app.config.get("STORE_EXTERNAL_ID", "-")
    return f"store={store} request_id={request_id()}"


def init_app(app: Flask) -> None:
    app.wsgi_app = Edge(app.wsgi_app, https=app.config["HTTPS"])
    app.after_request(_finish)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, _unexpected_error)


def request_id() -> str:
    """This request's id, as the Edge middleware chose it and sent it in X-Request-Id."""
    return request.environ.get(REQUEST_ID, "-")


SECURITY_HEADERS = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    # same-origin, not no-referrer: Flask-WTF's CSRF check needs the Referer over HTTPS.
    ("Referrer-Policy", "same-origin"),
    ("X-Frame-Options", "DENY"),
]
NO_STORE = ("Cache-Control", "no-store")
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


def _finish(response):
    # One line per request: no query string, no form data, no personal data.
    timing = request.environ.get(TIMING)
    if timing is not None and log.isEnabledFor(logging.INFO):
        total_ms = (time.perf_counter() - timing[0]) * 1000
        log.info(
            "request method=%s path=%s status=%s ms=%.1f engage_ms=%.1f outcome=%s engage=%s %s",
            request.method, request.path, response.status_code, total_ms, timing[1] * 1000,
            g.get("outcome", "-"), g.get("engage_cause") or "-", log_context(),
        )  # fmt: skip
    return response


def http_error(exc: HTTPException):
    messages = {
        400: _("Something in the request was not right. Go back to the form and try again."),
        404: _("There is no page at this address."),
        405: _("This page cannot be used that way."),
        413: _("That was more data than a signup can hold."),
    }
    text = messages.get(exc.code or 500, _("Something went wrong on our side."))
    g.outcome = f"http-{exc.code}"
    return render_template("errors/error.html", message=text, outcome="error"), exc.code or 500


def _unexpected_error(exc: Exception):
    # The frames, not the exception's message: a message can quote what the person typed.
    logging.getLogger("webapp").error(
        "unhandled error type=%s request_id=%s\n%s",
        type(exc).__name__, request_id(), "".join(traceback.format_tb(exc.__traceback__)),
    )  # fmt: skip
    g.outcome = "error"
    return (
        render_template(
            "errors/error.html", message=_("Something went wrong on our side."), outcome="error"
        ),
        500,
    )
