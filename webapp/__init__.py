"""engage-signup: the point-of-sale form that registers loyalty members in Voyado Engage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import Flask
from flask_babel import Babel
from flask_wtf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix

from . import i18n
from .access.devices import current_device
from .access.signed import SessionInterface
from .config import ConfigError, handoff_available, load_config
from .engage import EngageClient
from .i18n import select_locale
from .ops import health, metrics, web
from .ops.version import __version__
from .pages import display, handoff, lookup, manager, setup, views
from .signup import consents, flow
from .signup.consent_records import ConsentRecords
from .signup.consent_records import cli as consents_cli
from .signup.flow import Breaker
from .signup.forms import form_class_for
from .signup.outbox import Outbox
from .signup.outbox import cli as outbox_cli
from .signup.padding import AnswerTimes
from .store import StateUnavailable, open_store

__all__ = ["ConfigError", "create_app", "__version__"]

_HERE = Path(__file__).resolve().parent


def _resource_dir(name: str) -> str:
    """templates/ and static/: inside the package when installed, at the top level in a checkout."""
    for candidate in (_HERE / name, _HERE.parent / name):
        if candidate.is_dir():
            return str(candidate)
    raise RuntimeError(f"{name}/ not found next to {_HERE}")


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. Raises ConfigError (naming the key) when the configuration is wrong; on
    the command line (`flask --app webapp …`) that is one line, as the server says it."""
    if not from_the_command_line():
        return _build(config)
    import os

    import click

    from . import training

    try:  # a training instance's operator: its state and keys are where training keeps them
        return _build({**(training.cli_settings(os.environ) or {}), **(config or {})})
    except ConfigError as exc:
        raise click.ClickException(f"configuration error: {exc}") from None


def _build(config: dict[str, Any] | None) -> Flask:
    settings = load_config(config)
    app = Flask(
        __name__,
        template_folder=_resource_dir("templates"),
        static_folder=_resource_dir("static"),
    )
    app.config.update(
        WTF_CSRF_TIME_LIMIT=8 * 3600,  # seconds: a form left open for a whole shift still works
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        MAX_CONTENT_LENGTH=64 * 1024,  # bytes: a signup is well under 2 KB
        # Every validator carries its own translated message, so WTForms' catalogue (loaded
        # from disk on each request by Flask-WTF) is not needed.
        WTF_I18N_ENABLED=False,
        BABEL_TRANSLATION_DIRECTORIES=str(_HERE / "translations"),
    )
    app.config.update(settings)
    if app.config["HTTPS"]:
        # __Host-: only ever sent over HTTPS, to this host, for every path.
        app.config.update(SESSION_COOKIE_SECURE=True, SESSION_COOKIE_NAME="__Host-session")
    # Outermost last: Edge (headers, timing, request id) > ProxyFix > HostCheck > Flask.
    app.wsgi_app = web.HostCheck(app.wsgi_app, app.config["ALLOWED_HOSTS"])
    if app.config["TRUSTED_PROXIES"]:
        n = app.config["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    logging.getLogger("webapp").setLevel(app.config["LOG_LEVEL"])

    # What the lower parts (i18n, ops) need from above is handed in here, never imported:
    # the device a request comes from, and readiness's checks of the settings Engage refused.
    app.extensions["current_device"] = current_device
    app.extensions["readiness"] = health.Readiness(
        setting_to_check=flow.setting_to_check, consent_problems=consents.problems
    )
    web.init_app(app)  # first: its log line must come after every other hook's work
    app.session_interface = SessionInterface()
    Babel(app, locale_selector=select_locale)
    i18n.install_jinja(app)
    CSRFProtect(app)
    app.extensions["engage"] = EngageClient(
        app.config["ENGAGE_BASE_URL"],
        app.config["ENGAGE_API_KEY"],
        user_agent=f"engage-signup/{__version__}",
        connect_timeout=app.config["ENGAGE_CONNECT_TIMEOUT"],
        read_timeout=app.config["ENGAGE_READ_TIMEOUT"],
        create_timeout=app.config["ENGAGE_CREATE_TIMEOUT"],
        retry_seconds=app.config["ENGAGE_RETRY_SECONDS"],
        observer=_engage_observer,
        log_context=web.log_context,
    )
    try:
        state = open_store(app.config, instance_path=app.instance_path)
    except StateUnavailable as exc:
        key = "DATABASE_URL" if app.config["DATABASE_URL"] else "STATE_DB"
        raise ConfigError(key, f"the shared state database cannot be used: {exc}") from None
    state.observer = web.add_state_time
    app.extensions["state"] = state
    app.extensions["breaker"] = Breaker(
        state,
        threshold=app.config["BREAKER_THRESHOLD"],
        cooldown=app.config["BREAKER_COOLDOWN"],
        window=app.config["BREAKER_WINDOW"],
    )
    app.extensions["answer_times"] = AnswerTimes(state, prior=app.config["ANSWER_PRIOR_SECONDS"])
    records = app.extensions["consent_records"] = ConsentRecords(
        state, version=__version__, days=app.config["CONSENT_RECORD_DAYS"]
    )
    app.cli.add_command(consents_cli)
    if app.config["OUTBOX_KEYS"]:
        outbox = app.extensions["outbox"] = Outbox(
            state, app.config["OUTBOX_KEYS"], days=app.config["OUTBOX_DAYS"], records=records
        )
        if not from_the_command_line():  # an operator may come to discard what nothing opens
            _keys_open_the_outbox(outbox)
    else:
        _no_orphans(state)
    app.cli.add_command(outbox_cli)
    app.extensions["signup_form"] = form_class_for(
        app.config["CONTACT_KEY"], app.config["REQUIRED_FIELDS"], app.config["CONSENTS"]
    )

    app.register_blueprint(views.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(setup.bp)
    app.register_blueprint(manager.bp)
    app.register_blueprint(handoff.bp)
    app.register_blueprint(lookup.bp)
    app.register_blueprint(display.bp)
    metrics.init_app(app)
    manager.end_stale_sessions(app)
    if app.config["HANDOFF_MINUTES"] and not handoff_available(app.config):
        # Said once the app stands (a configuration error stays one line of its own).
        logging.getLogger("webapp").warning(
            "scan to join is off: set PUBLIC_URL to the address customers' phones reach this "
            "service by (or HANDOFF_MINUTES=0 to say it is off on purpose)"
        )
    return app


def _engage_observer(method: str, path: str, status, token, elapsed: float) -> None:
    web.add_engage_time(elapsed)
    metrics.engage_call(method, path, status, token, elapsed)


def from_the_command_line() -> bool:
    """Built by the Flask command line (`flask --app webapp outbox …`), not by a server."""
    import click

    return click.get_current_context(silent=True) is not None


def _keys_open_the_outbox(outbox: Outbox) -> None:
    """A machine whose OUTBOX_KEYS open none of the kept sign-ups has keys that differ from the
    ones they were kept with: it would seal new ones that the other machines cannot open."""
    try:
        tried, opened = outbox.key_check()
    except StateUnavailable:
        return  # the database is already known to work: this is a passing fault
    if tried and not opened:
        raise ConfigError(
            "OUTBOX_KEYS",
            f"opens none of the {tried} newest kept sign-up(s): set the keys they were kept with "
            "(the same OUTBOX_KEYS as the other machines); `flask --app webapp outbox list` "
            "shows what cannot be opened",
        )


def _no_orphans(state) -> None:
    """Kept sign-ups cannot be sent, or even read, without the keys they were sealed with."""
    try:
        waiting = state.outbox_count()
    except StateUnavailable:
        return  # the database is already known to work: this is a passing fault
    if waiting:
        raise ConfigError(
            "OUTBOX_KEYS",
            f"not set, but the outbox holds {waiting} sign-up(s) waiting to be sent: set the "
            "keys they were kept with",
        )
