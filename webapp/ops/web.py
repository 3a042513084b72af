"""What every response gets: security headers, Server-Timing, a request id, one log line,
friendly errors."""

from __future__ import annotations

import logging
import re
import secrets
import time
import traceback
from urllib.parse import urlsplit

from flask import Flask, current_app, g, has_request_context, render_template, request
from werkzeug.exceptions import BadRequest, HTTPException

from ..i18n import gettext as _

log = logging.getLogger("webapp.request")

CSP = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


TIMING = "webapp.timing"  # environ key: [perf_counter at arrival, seconds on Engage, on state]
REQUEST_ID = "webapp.request_id"  # environ key: this request's id
HIDE_TIMING = "webapp.hide_timing"  # environ key: leave Server-Timing out (a kiosk's answers)

# A host name (labels of letters, digits and hyphens), an IPv4 address or a bracketed IPv6
# address, with an optional port. Anything else in Host is refused before Flask sees it.
_HOST_HEADER = re.compile(
    r"(?P<name>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?"
)


class HostCheck:
    """WSGI middleware just outside Flask: a Host header that is malformed, or not one of
    ALLOWED_HOSTS, gets a plain 400 and one log line. Flask itself would fail on some of them
    while building URLs for its error page (a 500 and a traceback per request)."""

    def __init__(self, wsgi_app, allowed: tuple[str, ...]):
        self.wsgi_app = wsgi_app
        self.allowed = allowed

    def __call__(self, environ, start_response):
        host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
        if self.host_ok(host):
            return self.wsgi_app(environ, start_response)
        log.warning(
            "request method=%s path=%s status=400 outcome=bad-host request_id=%s",
            environ.get("REQUEST_METHOD", "-"),
            _printable(loggable_path(environ.get("PATH_INFO", ""))),
            environ.get(REQUEST_ID, "-"),
        )  # fmt: skip
        body = b"Bad request: this site is not served under that name.\n"
        start_response(
            "400 Bad Request",
            [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
        )
        return [body]

    def host_ok(self, host: str) -> bool:
        if len(host) > 260 or not _HOST_HEADER.fullmatch(host):
            return False
        name = _HOST_HEADER.fullmatch(host).group("name").lower().rstrip(".")
        if not self.allowed:
            return True
        return any(
            name == allowed or (allowed.startswith(".") and name.endswith(allowed))
            or name == allowed[1:]
            for allowed in self.allowed
        )  # fmt: skip


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() and ch != " " else "?" for ch in text[:200])


class Edge:
    """WSGI middleware around the whole app: what every response carries.

    - `Server-Timing: app;dur=…, engage;dur=…, state;dur=…`: everything Flask does for a request
      (session cookie, form parsing, routing, hooks, the view, saving the session), less the
      time spent waiting on Engage; that Engage time; and the part of app spent on the shared
      state database. Only gunicorn's own HTTP parsing and writing are outside it.
    - `X-Request-Id`: the caller's, when it looks like one, else a new one (also in the logs).
    - The security headers; HSTS over HTTPS; `Cache-Control: no-store` on pages.

    Added here as plain tuples, not through Flask's response headers, which check each one:
    a few microseconds of every page, and one place that no response can get past.
    """

    def __init__(self, wsgi_app, *, https: bool):
        self.wsgi_app = wsgi_app
        self.https = https

    def __call__(self, environ, start_response):
        timing = environ[TIMING] = [time.perf_counter(), 0.0, 0.0]
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        request_id = environ[REQUEST_ID] = (
            incoming if _REQUEST_ID.fullmatch(incoming) else secrets.token_hex(8)
        )

        def edge_start_response(status, headers, exc_info=None):
            app_ms = (time.perf_counter() - timing[0] - timing[1]) * 1000
            # Each, unless the view chose its own (the scan-to-join token's redirect says
            # Referrer-Policy: no-referrer): a browser obeys the last of two, so a second one
            # would undo the view's.
            chosen = {name.lower() for name, _value in headers}
            headers.extend(h for h in SECURITY_HEADERS if h[0].lower() not in chosen)
            if self.https or environ.get("wsgi.url_scheme") == "https":
                headers.append(HSTS)
            if any(k.lower() == "content-type" and v.startswith("text/html") for k, v in headers):
                # Pages can show what a person typed: never keep them in any cache or history.
                headers.append(NO_STORE)
            headers.append(("X-Request-Id", request_id))
            if not environ.get(HIDE_TIMING):
                engage, state = timing[1] * 1000, timing[2] * 1000
                value = f"app;dur={app_ms:.2f}, engage;dur={engage:.2f}, state;dur={state:.2f}"
                headers.append(("Server-Timing", value))
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, edge_start_response)


def add_engage_time(seconds: float) -> None:
    """Called by the Engage client after each call, to split Server-Timing into app and Engage."""
    if has_request_context():
        timing = request.environ.get(TIMING)
        if timing is not None:
            timing[1] += seconds


def add_state_time(seconds: float) -> None:
    """Called by the store after each operation: Server-Timing's state (a part of app)."""
    if has_request_context():
        timing = request.environ.get(TIMING)
        if timing is not None:
            timing[2] += seconds


def request_seconds() -> float:
    """Seconds since this request reached the app (the Edge middleware's clock)."""
    timing = request.environ.get(TIMING)
    return time.perf_counter() - timing[0] if timing is not None else 0.0


def log_context() -> str:
    """Store and request id for log lines written while serving a request."""
    if not has_request_context():
        return ""
    try:  # the device's own store (a chain's devices serve many), else the configured one
        device = current_app.extensions["current_device"]()  # handed in by the app factory
    except Exception:  # noqa: BLE001 - a log line never fails the request it describes
        device = None
    store = device.store_id if device is not None else current_app.config.get("STORE_EXTERNAL_ID")
    name = device.name.replace(" ", "_") if device is not None and device.name else "-"
    return (f"store={store or '-'} device={name} client={request.remote_addr or '-'} "
            f"request_id={request_id()}")  # fmt: skip


def init_app(app: Flask) -> None:
    app.wsgi_app = Edge(app.wsgi_app, https=app.config["HTTPS"])
    app.before_request(_same_origin)  # before Flask-WTF's CSRF check: registered first
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
    # No window opened from elsewhere keeps a handle on ours, and ours on it.
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    # A signup form needs none of the browser's powerful features.
    (
        "Permissions-Policy",
        "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), "
        "bluetooth=(), hid=(), display-capture=(), browsing-topics=()",
    ),
]


def _same_origin():
    """A POST that a browser says comes from another site is refused, whatever token it has."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    origin = request.headers.get("Origin")
    if origin is None:
        return None  # not sent by every client; the CSRF token still has to match
    if urlsplit(origin).netloc.lower() != request.host.lower():
        g.outcome = "foreign-origin"
        return http_error(BadRequest())
    return None


NO_STORE = ("Cache-Control", "no-store")
HSTS = ("Strict-Transport-Security", "max-age=31536000; includeSubDomains")


_SECRET_PATHS = re.compile(r"^/(j|handoff)/(?!done$|language$)([^/]+)")


def loggable_path(path: str) -> str:
    """The path as a log line may show it: a handoff's token (/j/<token>) or a till page's id
    (/handoff/<id>) replaced by its name, so that nothing in a log can be replayed."""
    return _SECRET_PATHS.sub(lambda m: f"/{m.group(1)}/<{'token' if m.group(1) == 'j' else 'id'}>",
                             path)  # fmt: skip


def _finish(response):
    # One line per request: no query string, no form data, no personal data, no token.
    timing = request.environ.get(TIMING)
    if timing is not None and log.isEnabledFor(logging.INFO):
        total_ms = (time.perf_counter() - timing[0]) * 1000
        log.info(
            "request method=%s path=%s status=%s ms=%.1f engage_ms=%.1f outcome=%s engage=%s %s",
            request.method, loggable_path(request.path), response.status_code, total_ms,
            timing[1] * 1000,
            g.get("outcome", "-"), g.get("engage_cause") or "-", log_context(),
        )  # fmt: skip
    return response


def http_error(exc: HTTPException):
    """A friendly page for a client error: one log line (the request's), never a traceback."""
    messages = {
        400: _("Something in the request was not right. Go back to the form and try again."),
        404: _("There is no page at this address."),
        405: _("This page cannot be used that way."),
        413: _("That was more data than a sign-up can hold."),
    }
    text = messages.get(exc.code or 500, _("Something went wrong on our side."))
    g.setdefault("outcome", f"http-{exc.code}")
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
