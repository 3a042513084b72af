"""Configuration: defaults, read from environment variables of the same name, overridable by a dict.

Every key is parsed and checked once at start-up. A wrong value stops the app with one
`ConfigError` line that names the key, so a misconfigured till never shows a broken form.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

CONTACT_KEYS = ("email", "mobilePhone", "socialSecurityNumber", "externalId")
OPTIONAL_FIELDS = ("firstName", "lastName", "mobilePhone", "birthDay", "zipCode", "email")

# The default consent: the membership terms, with the id used in the create-contact page's
# example payload. Tenants name their consents themselves (engage-api.md §4), so CONSENTS
# is usually set per deployment.
DEFAULT_CONSENTS = [
    {
        "id": "memberConsent",
        "required": True,
        "label": {
            "en": "I accept the membership terms",
            "sv": "Jag godkänner medlemsvillkoren",
            "fi": "Hyväksyn jäsenehdot",
            "nb": "Jeg godtar medlemsvilkårene",
            "da": "Jeg accepterer medlemsbetingelserne",
        },
    }
]


class ConfigError(RuntimeError):
    """A configuration value is missing or wrong; the message names the key."""

    def __init__(self, key: str, problem: str):
        super().__init__(f"{key}: {problem}")
        self.key = key


def _str(value: Any) -> str:
    return str(value).strip()


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _number(minimum: float, maximum: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        number = float(value)
        if not minimum <= number <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return number

    return parse


def _integer(minimum: int, maximum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = int(value)
        if not minimum <= number <= maximum:
            raise ValueError(f"must be between {minimum} and {maximum}")
        return number

    return parse


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return text

    return parse


def _base_url(value: Any) -> str:
    text = str(value).strip().rstrip("/")
    if not text:
        return ""
    # Scheme and host only: the client adds /api/v3/... itself (urljoin would drop segments).
    if not re.fullmatch(r"https?://[^/\s?#]+", text):
        raise ValueError("must be scheme and host only, like https://acme.staging.voyado.com")
    return text


def _country(value: Any) -> str:
    text = str(value).strip().upper()
    from .i18n import country_codes

    if text not in country_codes():
        raise ValueError("must be a two-letter ISO 3166 country code, like SE")
    return text


def _pin(value: Any) -> str:
    text = str(value).strip()
    if text and not re.fullmatch(r"\d{4,12}", text):
        raise ValueError("must be 4 to 12 digits")
    return text


def _database_url(value: Any) -> str:
    text = str(value).strip()
    if text and not re.match(r"postgres(ql)?://", text):
        raise ValueError("must be a PostgreSQL URL, like postgresql://user:password@host/dbname")
    return text


_HOST = re.compile(
    r"\.?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)


def _hosts(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    hosts = tuple(item.strip().lower() for item in items if item.strip())
    for host in hosts:
        if not _HOST.fullmatch(host) and not re.fullmatch(r"[0-9.]+|\[[0-9a-f:.]+\]", host):
            raise ValueError(f"{host!r} is not a host name (like signup.acme.se or .acme.se)")
    return hosts


def _outbox_keys(value: Any) -> tuple[str, ...]:
    from .signup.outbox import parse_keys

    return parse_keys(value)


def _manager_pins(value: Any) -> tuple[dict, ...]:
    """MANAGER_PINS: name@store:pin, comma-separated; store * for the whole chain."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    managers = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        match = re.fullmatch(r"([\w .-]{1,40})@([A-Za-z0-9_.*-]{1,64}):(\d+)", item)
        if not match:
            raise ValueError("each entry is name@store:pin (store * for the whole chain)")
        name, store, pin = match.groups()
        if len(pin) < 8:
            raise ValueError(f"{name}'s PIN: at least 8 digits (it opens personal data)")
        managers.append({"name": name, "store": store, "pin": pin})
    pins = [m["pin"] for m in managers]
    if len(set(pins)) != len(pins):
        raise ValueError("each manager needs a PIN of their own")
    return tuple(managers)


def _networks(value: Any) -> tuple:
    """METRICS_ALLOW: addresses or networks (CIDR), comma-separated."""
    import ipaddress

    items = value if isinstance(value, list | tuple) else str(value).split(",")
    networks = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an address or a network like 10.0.0.0/8") from None
    return tuple(networks)


def _card_id(value: Any) -> str:
    """WALLET_CARD_ID: the card's id from Engage's Design Studio, a GUID."""
    text = str(value).strip().lower()
    if text and not re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", text
    ):
        raise ValueError("must be the card's id from Engage's Design Studio, like "
                         "0e6b1c2d-7a8f-4e3b-9c1d-5a6f7e8d9c0b")  # fmt: skip
    return text


def _timezone(value: Any) -> str:
    import zoneinfo

    text = str(value).strip()
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be a time zone like Europe/Stockholm") from None
    return text


def _field_list(value: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    fields = tuple(item.strip() for item in items if item.strip())
    unknown = [name for name in fields if name not in OPTIONAL_FIELDS]
    if unknown:
        raise ValueError(f"unknown field {unknown[0]!r}; known: {', '.join(OPTIONAL_FIELDS)}")
    return fields


def _consents(value: Any) -> tuple[dict, ...]:
    items = json.loads(value) if isinstance(value, str) else value
    if not isinstance(items, list):
        raise ValueError("must be a JSON list of consents")
    consents = []
    for item in items:
        if not isinstance(item, dict) or not re.fullmatch(
            r"[A-Za-z0-9_.-]{1,64}", item.get("id") or ""
        ):
            raise ValueError("each consent needs an id of letters, digits, '_', '.' or '-'")
        label = item.get("label")
        if not isinstance(label, dict) or not label.get("en"):
            raise ValueError(f"consent {item['id']!r} needs a label with at least an 'en' text")
        url = item.get("url")
        if url is not None and not re.fullmatch(r"https?://\S+", str(url)):
            raise ValueError(f"consent {item['id']!r}: url must start with http:// or https://")
        consents.append(
            {
                "id": item["id"],
                "required": bool(item.get("required")),
                "label": dict(label),
                "url": url,
            }
        )
    ids = [c["id"] for c in consents]
    if len(set(ids)) != len(ids):
        raise ValueError("consent ids must be unique")
    return tuple(consents)


# key: (parser, default). Only these keys are read from the environment.
SCHEMA: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "ENGAGE_BASE_URL": (_base_url, ""),
    "ENGAGE_API_KEY": (_str, ""),
    "STORE_EXTERNAL_ID": (_str, ""),
    # Shown on devices that use STORE_EXTERNAL_ID (bound devices show Engage's store name).
    "STORE_NAME": (_str, ""),
    "SECRET_KEY": (_str, ""),
    "CONTACT_TYPE": (_str, "Member"),
    "CONTACT_KEY": (_choice(*CONTACT_KEYS), "email"),
    # What the tenant's custom key (find's `customKey`) is: externalId or memberNumber
    # (engage-api.md §1.1). Needed, and must be externalId, when CONTACT_KEY=externalId.
    "ENGAGE_CUSTOM_KEY": (_choice("", "externalId", "memberNumber"), ""),
    # Find the person in every contact type ("any", Engage's default: someone stored as a
    # Contact is found, never created again as a Member) or only in CONTACT_TYPE ("same").
    "FIND_CONTACT_TYPE": (_choice("any", "same"), "any"),
    "DEFAULT_COUNTRY": (_country, "SE"),
    "CREATE_AS_UNAPPROVED": (_bool, False),
    "CONSENTS": (_consents, DEFAULT_CONSENTS),
    # Fields that the tenant's contact type makes mandatory, beyond the key.
    "REQUIRED_FIELDS": (_field_list, ()),
    # Seconds. Connect short; the create's read comfortably longer than Engage's own limit
    # ("under 10 seconds", then 504 RequestTimeOut: engage-api.md §7), so that Engage's answer
    # reaches us before we give up ourselves.
    "ENGAGE_CONNECT_TIMEOUT": (_number(0.1, 30), 3.05),
    "ENGAGE_READ_TIMEOUT": (_number(0.1, 60), 5.0),
    "ENGAGE_CREATE_TIMEOUT": (_number(0.1, 60), 15.0),
    # Seconds before the one resend of a lookup after a gateway error or a refused connection
    # (Voyado's retry policy: at most once, later rather than sooner).
    "ENGAGE_RETRY_SECONDS": (_number(0, 30), 1.0),
    # Seconds to wait before looking a person up again when a create ended in doubt
    # (dropped connection, 502/503): Engage's retry policy says wait, then check.
    "ENGAGE_SETTLE_SECONDS": (_number(0, 30), 1.0),
    # Set by the launcher when it runs the built-in simulator: shows the training banner.
    "TRAINING_MODE": (_bool, False),
    "LOG_LEVEL": (_choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
    # Log lines as text (key=value) or as one JSON object per line (python-json-logger).
    "LOG_FORMAT": (_choice("text", "json"), "text"),
    # /metrics for Prometheus: on unless turned off; open to METRICS_ALLOW's addresses
    # (loopback by default) and to whoever sends METRICS_TOKEN as a bearer token.
    "METRICS": (_bool, True),
    "METRICS_TOKEN": (_str, ""),
    "METRICS_ALLOW": (_networks, _networks("127.0.0.1,::1")),
    # Served over HTTPS (directly or behind a TLS proxy): Secure __Host- cookies and HSTS.
    # Default: on, except in training mode (browsers treat http://localhost as secure).
    "HTTPS": (_bool, None),
    # Reverse proxies in front of the app whose X-Forwarded-* headers are trusted.
    "TRUSTED_PROXIES": (_integer(0, 5), 0),
    # The SQLite file all workers of one machine share (tokens, limits, breaker).
    # Default: the instance folder. Not used when DATABASE_URL is set.
    "STATE_DB": (_str, ""),
    # PostgreSQL for several machines sharing one state (postgresql://user:pass@host/db).
    "DATABASE_URL": (_database_url, ""),
    # Threads per worker process (the server's --threads): sizes the database pool.
    "WEB_THREADS": (_integer(1, 256), 16),
    # Host names this deployment answers to (comma-separated; ".acme.se" also allows its
    # subdomains). Empty: any well-formed host name. Others get a 400.
    "ALLOWED_HOSTS": (_hosts, ()),
    # Submissions allowed per device, and per client address, each minute.
    "SUBMIT_LIMIT_PER_DEVICE": (_integer(1, 10_000), 12),
    # The cashier's look-ups while typing, per minute and staff tablet (each asks Engage at
    # most twice: find and read; Engage's limit is per API key, engage-api.md §15).
    "LOOKUP_LIMIT_PER_DEVICE": (_integer(1, 10_000), 30),
    "SUBMIT_LIMIT_PER_ADDRESS": (_integer(1, 100_000), 300),
    # Circuit breaker: after this many failed signups in a row, answer `unavailable` at once
    # for BREAKER_COOLDOWN seconds, then let one request probe Engage.
    "BREAKER_THRESHOLD": (_integer(1, 100), 3),
    "BREAKER_COOLDOWN": (_number(1, 600), 30.0),
    # Seconds within which BREAKER_THRESHOLD failures count as "in a row": older ones are
    # forgotten, so one timeout after a quiet spell does not stop every till.
    "BREAKER_WINDOW": (_number(1, 3600), 60.0),
    # The manager's view (/manager/): name@store:pin, comma-separated; * for the whole chain.
    "MANAGER_PINS": (_manager_pins, ()),
    # The time zone the manager's view counts hours and days in.
    "TIMEZONE": (_timezone, "Europe/Stockholm"),
    # Devices: staff bind each tablet or kiosk to a store and a mode on /setup with this PIN.
    "STAFF_PIN": (_pin, ""),
    # Wrong staff PINs allowed per hour across the whole deployment; then PIN entry is locked
    # for everyone until the hour has passed, and an ERROR line says so.
    "PIN_FAILURES_PER_HOUR": (_integer(1, 10_000), 30),
    # Devices not bound on /setup: "kiosk" serves them as kiosks of STORE_EXTERNAL_ID;
    # "staff" shows them the setup page. A staff tablet is always a bound device.
    "DEVICE_MODE": (_choice("staff", "kiosk"), "staff"),
    # Kiosk: seconds without input before the countdown, the countdown, the thank-you screen.
    "KIOSK_IDLE_SECONDS": (_integer(10, 3600), 60),
    # Kiosk: seconds without input before the countdown on a page that shows a sent entry
    # (an error, details to correct): shorter, as the person may have walked away.
    "KIOSK_ERROR_IDLE_SECONDS": (_integer(5, 3600), 20),
    "KIOSK_COUNTDOWN_SECONDS": (_integer(3, 120), 15),
    "KIOSK_THANKS_SECONDS": (_integer(3, 120), 10),
    # Kiosk sign-ups created unapproved, for a double opt-in process in Engage.
    "KIOSK_CREATE_AS_UNAPPROVED": (_bool, False),
    # The outbox: sign-ups kept while Engage cannot take them, sent later. On when keys are set:
    # Fernet keys, comma-separated, the newest first (the others still open older items).
    "OUTBOX_KEYS": (_outbox_keys, ()),
    # Days a kept sign-up waits before it is given up (deleted, counted, logged).
    "OUTBOX_DAYS": (_integer(1, 90), 7),
    # Replays per second across the whole deployment: far below Engage's rate limit (§7).
    "OUTBOX_REPLAY_PER_SECOND": (_integer(1, 50), 5),
    # Days each consent record (what was shown and chosen at sign-up) is kept. Ten years: the
    # longest general limitation period in the Nordics (Sweden's), as a consent given at sign-up
    # may be relied on for as long as the membership lasts (README: Consent records).
    "CONSENT_RECORD_DAYS": (_integer(30, 36_500), 3650),
    # Scan to join: minutes a handoff from a till to a customer's phone lasts; 0 turns it off.
    "HANDOFF_MINUTES": (_integer(0, 60), 10),
    # Public screens (kiosk, phone): seconds after its start at which a final answer is
    # released while no create has yet been timed anywhere (webapp/signup/padding.py).
    "ANSWER_PRIOR_SECONDS": (_number(0.25, 10), 1.0),
    # Scan to join: the address customers' phones reach this service by (scheme and host), for
    # the QR code and the store's short address. Outside training scan to join is off without
    # it: the request's own host is often a name only the tills can reach.
    "PUBLIC_URL": (_base_url, ""),
    # The membership card offered on a staff tablet after created and existing (off unset).
    "WALLET_CARD_ID": (_card_id, ""),
    # Consent texts: "config" (CONSENTS labels) or "engage" (GET /api/v3/consents texts in the
    # person's language, falling back to CONSENTS labels).
    "CONSENT_TEXTS": (_choice("config", "engage"), "config"),
}


def handoff_available(config) -> bool:
    """Scan to join is offered: HANDOFF_MINUTES above 0, and an address customers' phones can
    reach (PUBLIC_URL; in training, the address the till used)."""
    return config["HANDOFF_MINUTES"] > 0 and bool(config["PUBLIC_URL"] or config["TRAINING_MODE"])


def load_config(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Defaults, then environment variables, then `overrides`; parsed and checked."""
    environ = os.environ if environ is None else environ
    overrides = dict(overrides or {})
    config: dict[str, Any] = {}
    for key, (parse, default) in SCHEMA.items():
        if key in overrides:
            raw = overrides.pop(key)
        elif key in environ:
            raw = environ[key]
        else:
            config[key] = default
            continue
        try:
            config[key] = parse(raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(key, str(exc)) from None
    if config["HTTPS"] is None:
        config["HTTPS"] = not config["TRAINING_MODE"]
    config.update(overrides)  # Flask's own keys (TESTING, ...) pass through untouched.
    _check_required(config)
    return config


def _check_required(config: dict[str, Any]) -> None:
    if not config["ENGAGE_BASE_URL"]:
        raise ConfigError(
            "ENGAGE_BASE_URL",
            "not set. Set it to your Engage tenant (https://<tenant>.voyado.com), "
            "or start with `python3 dev.py run` to use the built-in Engage simulator",
        )
    for key in ("ENGAGE_API_KEY", "SECRET_KEY"):
        if not config[key]:
            raise ConfigError(key, "not set")
    unbound_kiosks = config["DEVICE_MODE"] == "kiosk" and config["STORE_EXTERNAL_ID"]
    if not config["STAFF_PIN"] and not unbound_kiosks:
        # Staff tablets exist only where staff enrolled them with the PIN (README: Devices).
        raise ConfigError(
            "STAFF_PIN",
            "not set; devices become staff tablets or kiosks only when staff enrol them with it "
            "on /setup/ (or set DEVICE_MODE=kiosk and STORE_EXTERNAL_ID to serve every "
            "device as a kiosk of that store)",
        )
    public = config["PUBLIC_URL"]
    if (
        public
        and not public.startswith("https://")
        and config["HTTPS"]
        and not config["TRAINING_MODE"]
    ):
        raise ConfigError("PUBLIC_URL", "must be https:// (customers' phones come from the "
                          "internet), like https://signup.acme.se")  # fmt: skip
    if config["METRICS_TOKEN"] and len(config["METRICS_TOKEN"]) < 16:
        raise ConfigError("METRICS_TOKEN", "too short; use at least 16 random characters")
    if len(config["SECRET_KEY"]) < 16:
        raise ConfigError("SECRET_KEY", "too short; use at least 16 random characters")
    if config["STAFF_PIN"] and config["STAFF_PIN"] in {m["pin"] for m in config["MANAGER_PINS"]}:
        raise ConfigError("MANAGER_PINS", "a manager's PIN must not be the staff PIN")
    if config["CONTACT_KEY"] == "externalId" and config["ENGAGE_CUSTOM_KEY"] != "externalId":
        raise ConfigError(
            "ENGAGE_CUSTOM_KEY",
            "must be externalId when CONTACT_KEY=externalId: Engage finds an external id only "
            "through customKey, and only where the tenant's custom key is externalId (where it "
            "is memberNumber, a typed customer number could match another person's member "
            "number)",
        )
