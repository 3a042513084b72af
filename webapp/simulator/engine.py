"""The simulated Engage tenant: contacts, stores, consents, faults, and every request received.

This module shares no code with the client (webapp.engage) on purpose: it is written from
engage-api.md independently, so that it catches the client's mistakes rather than repeating
them. Where it follows an assumption rather than a documented fact, a comment says
ASSUMPTION with the section of engage-api.md.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babel import Locale

# ASSUMPTION (engage-api.md §3): contact types, their key and mandatory fields are tenant
# configuration with no public listing endpoint. `Member` keyed on email is the common case.
DEFAULT_CONTACT_TYPES = {
    "Member": {"key": "email", "mandatory": ["email"]},
    "Contact": {"key": "mobilePhone", "mandatory": ["mobilePhone"]},
}

DEFAULT_STORES = [
    {"externalId": "101", "name": "Acme Stockholm Drottninggatan", "city": "Stockholm",
     "countryCode": "SE", "type": "RETAIL", "timeZone": "W. Europe Standard Time", "active": True},
    {"externalId": "201", "name": "Acme Helsinki Aleksanterinkatu", "city": "Helsinki",
     "countryCode": "FI", "type": "RETAIL", "timeZone": "FLE Standard Time", "active": True},
    {"externalId": "301", "name": "Acme Oslo Karl Johans gate", "city": "Oslo",
     "countryCode": "NO", "type": "RETAIL", "timeZone": "W. Europe Standard Time", "active": True},
    {"externalId": "401", "name": "Acme København Strøget", "city": "København",
     "countryCode": "DK", "type": "RETAIL", "timeZone": "Romance Standard Time", "active": True},
    {"externalId": "900", "name": "Acme Closed Outlet", "city": "Malmö",
     "countryCode": "SE", "type": "RETAIL", "timeZone": "W. Europe Standard Time", "active": False},
]  # fmt: skip

# Shaped like engage-api.md §4's example: displayText + linkText make the checkbox label.
DEFAULT_CONSENTS = [
    {
        "id": "memberConsent",
        "name": "Member terms",
        "metaData": {
            "displayText": {"sv-SE": "Jag godkänner", "fi-FI": "Hyväksyn", "nb-NO": "Jeg godtar",
                            "da-DK": "Jeg accepterer", "en-GB": "I accept the"},
            "linkText": {"sv-SE": "medlemsvillkoren", "fi-FI": "jäsenehdot",
                         "nb-NO": "medlemsvilkårene", "da-DK": "medlemsbetingelserne",
                         "en-GB": "membership terms"},
            # Demo terms in every language of the form, so that training shows them.
            "conditionText": {
                "sv-SE": "<p>Acmes medlemsvillkor (övning): du får erbjudanden och samlar "
                         "poäng. Du kan när som helst avsluta medlemskapet.</p>",
                "fi-FI": "<p>Acmen jäsenehdot (harjoitus): saat etuja ja keräät pisteitä. "
                         "Voit lopettaa jäsenyyden milloin tahansa.</p>",
                "nb-NO": "<p>Acmes medlemsvilkår (opplæring): du får tilbud og samler poeng. "
                         "Du kan når som helst avslutte medlemskapet.</p>",
                "da-DK": "<p>Acmes medlemsbetingelser (øvelse): du får tilbud og samler "
                         "point. Du kan til enhver tid opsige medlemskabet.</p>",
                "en-GB": "<p>Acme membership terms (training): you get offers and collect "
                         "points. You can end your membership at any time.</p>",
            },
        },
    },
    {
        "id": "doubleOptInConsent",
        "name": "Double opt-in",
        "metaData": {"displayText": {"en-GB": "Confirmed by email link"}, "linkText": {},
                     "conditionText": {}},
    },
]  # fmt: skip

# Existing contacts for training: "already a member" and "several matches" can be tried.
# With every key a tenant may use: the phone numbers are from the range Sweden keeps for fiction
# (070-174 06 05 to 99), the personal numbers are well-known test numbers.
DEMO_CONTACTS = [
    {"contactType": "Member", "firstName": "Maja", "email": "member@example.com",
     "countryCode": "SE", "mobilePhone": "+46701740605", "socialSecurityNumber": "191212121212",
     "externalId": "M-1001"},
    {"contactType": "Member", "firstName": "Tove", "email": "twins@example.com",
     "mobilePhone": "+46701740606", "socialSecurityNumber": "198112189876", "externalId": "M-2002"},
    {"contactType": "Member", "firstName": "Tilde", "email": "twins@example.com",
     "mobilePhone": "+46701740606", "socialSecurityNumber": "198112189876", "externalId": "M-2002"},
    # A newsletter subscriber, kept as another contact type: made a member at the till.
    {"contactType": "Contact", "firstName": "Nora", "lastName": "Berg",
     "email": "newsletter@example.com", "mobilePhone": "+46701740607",
     "socialSecurityNumber": "199001011239", "externalId": "C-4004",
     "preferences": {"acceptsEmail": True}},
    # A member without a mobile number or a postcode: completed at the till.
    {"contactType": "Member", "firstName": "Ines", "lastName": "Olsson",
     "email": "incomplete@example.com", "countryCode": "SE",
     "socialSecurityNumber": "198505054562", "externalId": "M-3003"},
]  # fmt: skip
# What the incomplete member holds where the tenant's key is the mobile number (a member has
# its key): a number of Sweden's range for fiction.
DEMO_INCOMPLETE_MOBILE = "+46701740608"

ATTRIBUTES = (
    "firstName", "lastName", "street", "zipCode", "city", "email", "mobilePhone", "countryCode",
    "careOf", "country", "age", "birthDay", "externalId", "socialSecurityNumber", "gender", "lang",
)  # fmt: skip
PREFERENCES = ("acceptsEmail", "acceptsSms", "acceptsPostal")
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
E164 = re.compile(r"\+[1-9]\d{6,14}")
FAULT_KINDS = ("latency", "status", "drop", "hang")
# How an error answer's body looks (a fault may choose): this simulator's own shape (an
# ASSUMPTION, engage-api.md §2.4), no body, plain text, ASP.NET's {"Message": ...}, or RFC 7807
# ProblemDetails. The real body is not documented; the client must cope with all of them.
BODY_SHAPES = ("engage", "empty", "text", "message", "problem")


def valid_ssn(value: str) -> bool:
    """A Swedish personnummer/samordningsnummer (10 or 12 digits, optional - or +) with a
    Luhn check digit, or a Finnish henkilötunnus with its century sign and check character
    (engage-api.md §8). Written here on its own, not shared with the app."""
    swedish = re.fullmatch(r"(\d{2})?(\d{2})(\d{2})(\d{2})[-+]?(\d{3})(\d)", value)
    if swedish:
        _century, yy, mm, dd, serial, check = swedish.groups()
        digits = [int(c) for c in yy + mm + dd + serial + check]
        total = sum(sum(divmod(d * (2 - i % 2), 10)) for i, d in enumerate(digits))
        # A samordningsnummer adds 60 to the day.
        return total % 10 == 0 and 1 <= int(mm) <= 12 and 1 <= int(dd) % 60 <= 31
    finnish = re.fullmatch(r"(\d{6})([-+A-FU-Y])(\d{3})([0-9A-Y])", value)
    if finnish:
        checks = "0123456789ABCDEFHJKLMNPRSTUVWXY"
        return checks[int(finnish.group(1) + finnish.group(3)) % 31] == finnish.group(4)
    return False


SCOPES = ("any", "find", "create", "read", "wallet", "update", "promote")
# The wallet card this tenant has designed (Design Studio's card id, engage-api.md §13).
DEMO_WALLET_CARD = "0e6b1c2d-7a8f-4e3b-9c1d-5a6f7e8d9c0b"


class DropConnection(Exception):
    """Raised by the app to make the simulator's server close the socket without an answer."""


@dataclass
class Fault:
    """One injected fault. `times` counts down; `share` (0..1) picks requests at random."""

    kind: str
    on: str = "create"
    times: int | None = 1
    share: float | None = None
    seconds: float = 0.0  # latency / hang length
    status: int | None = None  # for kind "status"
    after_commit: bool = False  # create first, then answer with the fault (the dangerous case)
    body: str = "engage"  # the error body's shape (BODY_SHAPES)
    token: str | None = None  # the error token a status fault carries, if any
    # A hang ends early once this is set (Fault.release): a test decides when, not a clock.
    released: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def release(self) -> None:
        """End the hang of every request that met this fault (their connections drop)."""
        self.released.set()

    def as_dict(self) -> dict[str, Any]:
        """What the admin endpoint answers: the fault's settings."""
        return {k: v for k, v in self.__dict__.items() if k != "released"}

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        if self.body not in BODY_SHAPES:
            raise ValueError(f"body must be one of {BODY_SHAPES}")
        if self.on not in SCOPES:
            raise ValueError(f"on must be one of {SCOPES}")
        if self.kind == "status" and not (self.status and 400 <= self.status <= 599):
            raise ValueError("a status fault needs a status between 400 and 599")
        if self.share is not None and not 0 <= self.share <= 1:
            raise ValueError("share must be between 0 and 1")


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    status: int | None = None
    faults: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Engine:
    """A thread-safe in-memory Engage tenant, optionally saved to a JSON file."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        contact_types: dict[str, dict] | None = None,
        stores: list[dict] | None = None,
        consents: list[dict] | None = None,
        contacts: list[dict] | None = None,
        latency: float = 0.0,
        connect_latency: float = 0.0,
        create_latency: tuple[float, float] | None = None,
        create_limit: float = 5.0,
        rate_limit: float = 200.0,
        custom_key: str = "externalId",
        state_file: str | os.PathLike | None = None,
        seed: int = 1,
        unapproved_blocks_create: bool = True,
        allowed_addresses: list[str] | None = None,
    ):
        self.api_key = api_key  # None: any non-empty key is accepted
        self.contact_types = copy.deepcopy(contact_types or DEFAULT_CONTACT_TYPES)
        self.stores = copy.deepcopy(DEFAULT_STORES if stores is None else stores)
        self.consents = copy.deepcopy(DEFAULT_CONSENTS if consents is None else consents)
        self.latency = latency  # seconds every API call takes from its arrival: a round trip
        # Seconds a new connection takes before its first request is read (TCP and TLS
        # handshakes to a real tenant): what a client that does not pool pays on every call.
        self.connect_latency = connect_latency
        # A create's time drawn anew for each (low, high seconds, uniform) in place of `latency`:
        # a tenant whose creates vary, as the public screens' timing benchmark needs.
        self.create_latency = create_latency
        # Engage's own limit on create (engage-api.md §7: ~5 s, then 504 RequestTimeOut).
        self.create_limit = create_limit
        self.rate_limit = rate_limit  # requests per second per API key before 429 (§7: 200)
        self.custom_key = custom_key  # which attribute `customKey` finds (§1.1: tenant setup)
        # ASSUMPTION (§2.4): Engage documents only that an *approved* contact with the key
        # blocks a create. Whether an unapproved one does is not stated: either way here.
        self.unapproved_blocks_create = unapproved_blocks_create
        # The API key's address allow list (§6): None lets every address in.
        self.allowed_addresses = allowed_addresses
        self.consents_v3 = True  # False: a tenant that answers consents on v2 only
        # The host a customer's phone reaches this machine by (training for real phones): the
        # wallet links name it instead of the address the app called the simulator at.
        self.public_host: str | None = None
        self.state_file = Path(state_file) if state_file else None
        self.stopping = threading.Event()
        self._lock = threading.RLock()
        self._random = random.Random(seed)
        self._contacts: dict[str, dict] = {}
        # (attribute, value as found) -> ids, in the order the contacts were made. Engage finds a
        # contact by key without reading every contact; a scan here grew with every signup and
        # held the lock while it ran, so at benchmark volumes the stand-in, not the app, set the
        # pace.
        self._index: dict[tuple[str, str], list[str]] = {}
        self._pending: dict[tuple[str, str], int] = {}
        self._faults: list[Fault] = []
        self._requests: list[Recorded] = []
        self._buckets: dict[str, tuple[float, float]] = {}
        self._member_number = 999_000_000
        self.wallet_cards = {DEMO_WALLET_CARD}
        self._passes: dict[str, str] = {}  # pass token -> contact id (one link per contact)
        if self.state_file and self.state_file.exists():
            self._load()
        for contact in contacts or []:
            self.add_contact(contact)

    def call_latency(self, scope: str) -> float:
        """How long one call takes: `latency`, or for a create a draw from `create_latency`."""
        if scope == "create" and self.create_latency:
            low, high = self.create_latency
            with self._lock:
                return self._random.uniform(low, high)
        return self.latency

    # --- for tests, demos and the admin endpoint -----------------------------------------------
    def inject(self, kind: str, **options) -> Fault:
        fault = Fault(kind, **options)
        with self._lock:
            self._faults.append(fault)
        return fault

    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests(self, path: str | None = None, method: str | None = None) -> list[Recorded]:
        with self._lock:
            return [
                r
                for r in self._requests
                if (path is None or r.path == path) and (method is None or r.method == method)
            ]

    def contacts(self) -> list[dict]:
        with self._lock:
            return copy.deepcopy(list(self._contacts.values()))

    def add_contact(self, attributes: dict, *, approved: bool = True) -> dict:
        """Store a contact as an import would: no key uniqueness check (so duplicates exist)."""
        attributes = dict(attributes)
        contact_type = attributes.pop("contactType", "Member")
        with self._lock:
            contact = self._new_contact(attributes, contact_type, None, approved, "Import")
            self._save()
        return contact

    def reset(self) -> None:
        with self._lock:
            self._contacts.clear()
            self._index.clear()
            self._pending.clear()
            self._faults.clear()
            self._requests.clear()
            self._buckets.clear()
            self._save()

    # --- used by the WSGI app ------------------------------------------------------------------
    def record(self, entry: Recorded) -> None:
        with self._lock:
            self._requests.append(entry)
            del self._requests[:-10_000]

    def take_faults(self, scope: str) -> list[Fault]:
        """The faults that apply to this request, counting down their `times`."""
        chosen = []
        with self._lock:
            for fault in list(self._faults):
                if fault.on not in ("any", scope) and not (fault.on == "read" and scope == "find"):
                    continue
                if fault.share is not None and self._random.random() >= fault.share:
                    continue
                chosen.append(fault)
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
        return chosen

    def over_rate(self, api_key: str) -> bool:
        """Token bucket per API key: `rate_limit` per second, bursts up to one second's worth."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(api_key, (self.rate_limit, now))
            tokens = min(self.rate_limit, tokens + (now - last) * self.rate_limit)
            if tokens < 1:
                self._buckets[api_key] = (tokens, now)
                return True
            self._buckets[api_key] = (tokens - 1, now)
            return False

    def find(self, param: str, value: str, contact_type: str | None) -> list[str]:
        attribute = self.custom_key if param == "customKey" else param
        wanted = value.lower() if attribute == "email" else value
        with self._lock:
            ids = self._index.get((attribute, wanted), ())
            return [
                cid
                for cid in ids
                if contact_type in (None, self._contacts[cid]["meta"]["contactType"])
            ]

    def pass_url_token(self, contact_id: str) -> str | None:
        """The token of `contact_id`'s one pass link, or None for a contact this tenant lacks."""
        with self._lock:
            if contact_id not in self._contacts:
                return None
            for token, owner in self._passes.items():
                if owner == contact_id:
                    return token
            token = "".join(self._random.choice("abcdefghijkmnpqrstuvwxyz23456789")
                            for _ in range(24))  # fmt: skip
            self._passes[token] = contact_id
            return token

    def pass_owner(self, token: str) -> dict | None:
        with self._lock:
            contact_id = self._passes.get(token)
        return self.get(contact_id) if contact_id else None

    def get(self, contact_id: str) -> dict | None:
        with self._lock:
            contact = self._contacts.get(contact_id)
            return copy.deepcopy(contact) if contact else None

    def update(self, contact_id: str, changes: dict) -> dict | None:
        """PATCH: each attribute, preference and consent named is set to the value sent, an empty
        or null one included (it empties what was held, as Engage's own does: engage-api.md §15).
        None for a contact this tenant lacks."""
        with self._lock:
            contact = self._contacts.get(contact_id)
            if contact is None:
                return None
            self._drop_from_index(contact)
            for name, value in changes.items():
                if name in ATTRIBUTES:
                    contact["attributes"][name] = value
            if "countryCode" in changes:
                code = changes["countryCode"]
                country = Locale("en").territories.get(code) if code else None
                contact["attributes"]["country"] = country
            if "birthDay" in changes:
                contact["attributes"]["age"] = _age(changes["birthDay"])
            for name, value in (changes.get("preferences") or {}).items():
                if name in PREFERENCES:
                    contact["preferences"][name] = value
            held = {c["id"]: c for c in contact["consents"]}
            for consent in changes.get("consents") or []:
                given = {k: consent.get(k) for k in ("id", "value", "date", "source", "comment")}
                if consent.get("id") in held:
                    held[consent["id"]].update(given)
                else:
                    contact["consents"].append(given)
            contact["meta"]["modifiedOn"] = _now()
            self._add_to_index(contact)
            self._save()
            return copy.deepcopy(contact)

    def change_type(self, contact_id: str, contact_type: str) -> str | dict | None:
        """updateContactType: the contact, now of `contact_type`; a 409 token when a contact of
        that type already holds its key; None for a contact this tenant lacks."""
        with self._lock:
            contact = self._contacts.get(contact_id)
            if contact is None:
                return None
            key = self.contact_types[contact_type]["key"]
            value = contact["attributes"].get(key)
            if value in (None, ""):
                return "MissingKey"
            others = [c for c in self.find(key, value, contact_type) if c != contact_id]
            if others:
                return "ApprovedContactWithKeyExists"
            contact["meta"]["contactType"] = contact_type
            contact["meta"]["modifiedOn"] = _now()
            self._save()
            return copy.deepcopy(contact)

    def begin_create(self, contact_type: str, key_value: str) -> str | None:
        """Claim the key for a create in progress; returns the 409 token if it cannot be."""
        slot = (contact_type, key_value.lower())
        with self._lock:
            key = self.contact_types[contact_type]["key"]
            holders = [self._contacts[cid] for cid in self.find(key, key_value, contact_type)]
            if any(c["meta"]["approved"] or self.unapproved_blocks_create for c in holders):
                return "ApprovedContactWithKeyExists"
            if self._pending.get(slot):
                return "ContactWithKeyIsBeingCreated"
            self._pending[slot] = 1
            return None

    def end_create(self, contact_type: str, key_value: str) -> None:
        with self._lock:
            self._pending.pop((contact_type, key_value.lower()), None)

    def commit(self, body: dict, contact_type: str, store_id: str | None, approved: bool) -> dict:
        with self._lock:
            contact = self._new_contact(body, contact_type, store_id, approved, "API")
            self._save()
            return copy.deepcopy(contact)

    def store(self, external_id: str | None) -> dict | None:
        return next((s for s in self.stores if s["externalId"] == external_id), None)

    # --- internals -----------------------------------------------------------------------------
    def _new_contact(self, body, contact_type, store_id, approved, source_type) -> dict:
        self._member_number += 1
        now = dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")
        attributes = {name: body.get(name) for name in ATTRIBUTES}
        code = body.get("countryCode")
        attributes["country"] = Locale("en").territories.get(code) if code else None
        attributes["age"] = _age(body.get("birthDay"))
        attributes["memberNumber"] = str(self._member_number)
        attributes["staff"] = False
        store = self.store(store_id)
        attributes["currentStore"] = (
            {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, store["externalId"])),
             "name": store["name"], "externalId": store["externalId"]}
            if store else None
        )  # fmt: skip
        preferences = body.get("preferences") or {}
        contact = {
            "id": str(uuid.uuid4()),
            "attributes": attributes,
            "meta": {
                "createdOn": now,
                "modifiedOn": now,
                "sourceType": source_type,
                "approved": approved,
                "contactType": contact_type,
            },
            "preferences": {name: bool(preferences.get(name)) for name in PREFERENCES},
            "consents": [
                {"id": c.get("id"), "value": c.get("value"), "date": c.get("date"),
                 "source": c.get("source"), "comment": c.get("comment")}
                for c in body.get("consents") or []
            ],
        }  # fmt: skip
        self._contacts[contact["id"]] = contact
        self._add_to_index(contact)
        return contact

    def _drop_from_index(self, contact: dict) -> None:
        for attribute, value in contact["attributes"].items():
            if isinstance(value, str):
                found_as = value.lower() if attribute == "email" else value
                ids = self._index.get((attribute, found_as), [])
                if contact["id"] in ids:
                    ids.remove(contact["id"])

    def _add_to_index(self, contact: dict) -> None:
        for attribute, value in contact["attributes"].items():
            if isinstance(value, str):
                found_as = value.lower() if attribute == "email" else value
                self._index.setdefault((attribute, found_as), []).append(contact["id"])

    def _save(self) -> None:
        if not self.state_file:
            return
        data = {"memberNumber": self._member_number, "contacts": list(self._contacts.values())}
        tmp = self.state_file.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
        os.replace(tmp, self.state_file)

    def _load(self) -> None:
        data = json.loads(self.state_file.read_text(encoding="utf-8"))
        self._member_number = int(data.get("memberNumber", self._member_number))
        self._contacts = {c["id"]: c for c in data.get("contacts", [])}
        self._index.clear()
        for contact in self._contacts.values():
            self._add_to_index(contact)


def _now() -> str:
    return dt.datetime.now(dt.UTC).astimezone().isoformat(timespec="seconds")


def _age(birthday: Any) -> int | None:
    try:
        born = dt.date.fromisoformat(birthday)
    except (TypeError, ValueError):
        return None
    today = dt.date.today()
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


NOT_ASSIGNED = set("AC CP CQ DG EA EU EZ IC QO TA UN XA XB XK ZZ".split())


def country_codes() -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes, from CLDR's territory list less groupings and reserved codes."""
    names = Locale("en").territories
    return frozenset(c for c in names if len(c) == 2 and c.isalpha() and c not in NOT_ASSIGNED)
