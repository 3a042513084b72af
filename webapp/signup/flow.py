"""The signup flow against Engage: find first, create only when nobody was found.

`register()` turns every answer Engage can give into one `Outcome`, whose name is what
`<main data-outcome>` shows, so tests and monitoring can rely on it.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..engage import (
    ContactBeingCreated,
    ContactExists,
    EngageClient,
    EngageError,
    EngageMisconfigured,
    EngageRejected,
    EngageTimeout,
    EngageUnavailable,
    MultipleMatches,
    NotAuthorised,
    OutcomeUnknown,
)

log = logging.getLogger(__name__)

CREATED = "created"
EXISTING = "existing"
IN_PROGRESS = "in-progress"
AMBIGUOUS = "ambiguous"
REJECTED = "rejected"
TIMEOUT = "timeout"
UNAVAILABLE = "unavailable"
QUEUED = "queued"  # kept in the outbox, to be sent when Engage can take it

SOURCE = "POS"
MAX_MATCHES = 5

# Engage's find-contact error tokens that name the field at fault (engage-api.md §1.2).
FIELD_FOR_TOKEN = {
    "InvalidEmailAddress": "email",
    "InvalidPhoneNumber": "mobilePhone",
    "InvalidSocialSecurityNumber": "socialSecurityNumber",
}

# What operations should check when Engage refuses a request for a reason no customer can fix.
SETTING_TO_CHECK = {
    "InvalidContactType": "CONTACT_TYPE",
    "InvalidSearchQuery": "CONTACT_KEY and ENGAGE_CUSTOM_KEY",
    "NoData": "nothing: the create body was empty or unreadable, a fault in engage-signup",
    "InvalidSystemConfiguration": "the tenant's own set-up in Engage (ask Voyado)",
    "contactType": "CONTACT_TYPE",
    "consents": "CONSENTS (a consent id the tenant does not have)",
    "preferences": "nothing: the preferences were refused, a fault in engage-signup",
}


@dataclass(frozen=True)
class Outcome:
    name: str
    contact_id: str | None = None
    member_number: str | None = None
    # Engage attribute names that Engage said were wrong (422 detail or a find token).
    fields: tuple[str, ...] = field(default=())
    # What Engage said, as an error class name, for logs and the circuit breaker.
    cause: str | None = None
    # The contact type of a found contact, when it was read and differs from CONTACT_TYPE.
    other_type: str | None = None
    # The contacts that matched, when several did (at most MAX_MATCHES), for staff to merge.
    matches: tuple[str, ...] = ()
    # The outbox item's short reference, when the sign-up was kept for later.
    reference: str | None = None
    # A found member's first name and the initial of the last ("Astrid L."), when it was read:
    # for the cashier to ask "Are you Astrid?" after a sign-up on the customer's phone.
    masked_name: str | None = None


@dataclass(frozen=True)
class Signup:
    """What one submission asks Engage for."""

    contact: dict[str, Any]  # the create body: only what the person gave
    key: str  # which attribute is the contact type's key
    contact_type: str
    store_external_id: str
    create_as_unapproved: bool = False
    # The contact type to find in (FIND_CONTACT_TYPE=same), or None: every type (any).
    find_contact_type: str | None = None
    # Engage attribute names the form shows: a refusal naming others is no customer's to fix.
    form_fields: frozenset[str] = frozenset()


def build_contact(
    values: dict[str, Any],
    *,
    contact_type: str,
    lang: str,
    consents: list[tuple[str, str]],
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The create body: no null, no empty string, `countryCode` but never `country`.

    `values` holds attribute → already normalised value (E.164 phone, YYYY-MM-DD birthDay);
    `consents` holds (id, comment) of each consent the person ticked: the comment says how it
    was given and which words were shown (consent_records.comment).
    """
    now = now or dt.datetime.now(dt.UTC).astimezone()
    contact: dict[str, Any] = {
        name: value
        for name, value in values.items()
        if name not in ("country", "preferences", "consents") and value not in (None, "")
    }
    contact["contactType"] = contact_type
    contact["lang"] = lang
    contact["preferences"] = {
        name: bool(values.get(name)) for name in ("acceptsEmail", "acceptsSms", "acceptsPostal")
    }
    for name in contact["preferences"]:
        contact.pop(name, None)
    if consents:
        contact["consents"] = [
            {
                "id": consent_id,
                "value": True,
                "date": now.isoformat(timespec="seconds"),
                "source": SOURCE,
                "comment": comment,
            }
            for consent_id, comment in consents
        ]
    return contact


class Breaker:
    """A circuit breaker shared by every worker on every machine (see store/): after
    `threshold` failed signups in a row within `window` seconds, or one 429, Engage is left
    alone for `cooldown` seconds; then one request probes."""

    NAME = "engage"

    def __init__(self, state, *, threshold: int, cooldown: float, window: float = 60.0):
        self.state = state
        self.threshold = threshold
        self.cooldown = cooldown
        self.window = window

    def allows(self) -> bool:
        return self.state.breaker_allows(self.NAME, probe_seconds=self.cooldown)

    def record(self, outcome: Outcome) -> None:
        self.state.breaker_record(
            self.NAME,
            ok=outcome.name not in (TIMEOUT, UNAVAILABLE),
            threshold=self.threshold,
            cooldown=self.cooldown,
            window=self.window,
            at_once=outcome.cause == "RateLimited",  # 429: back off now, never hammer
        )


def register(
    client: EngageClient,
    signup: Signup,
    *,
    breaker: Breaker | None = None,
    settle_seconds: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Find the person; create them only if nobody was found. Never POSTs twice.

    With a breaker that is open, answers `unavailable` at once without calling Engage.
    """
    if breaker is not None and not breaker.allows():
        return Outcome(UNAVAILABLE, cause="CircuitOpen")
    outcome = _find_then_create(client, signup, settle_seconds, sleep)
    if breaker is not None:
        breaker.record(outcome)
    return outcome


def _find(client, signup: Signup) -> str | None:
    return client.find_contact_id(
        key=signup.key, value=signup.contact[signup.key], contact_type=signup.find_contact_type
    )


def _find_then_create(client, signup, settle_seconds, sleep) -> Outcome:
    try:
        found = _find(client, signup)
    except EngageError as exc:
        return _outcome_for_find_error(exc)
    if found:
        return Outcome(EXISTING, contact_id=found)

    try:
        created = client.create_contact(
            signup.contact,
            source=SOURCE,
            store_external_id=signup.store_external_id,
            create_as_unapproved=signup.create_as_unapproved,
        )
    except ContactExists as exc:
        return Outcome(EXISTING, cause=_name(exc))
    except ContactBeingCreated as exc:
        return Outcome(IN_PROGRESS, cause=_name(exc))
    except EngageMisconfigured as exc:
        return misconfigured(exc, "create")
    except EngageRejected as exc:
        return _rejection(signup, exc)
    except OutcomeUnknown as exc:
        return _settle_doubt(client, signup, exc, settle_seconds, sleep)
    except EngageTimeout as exc:
        return Outcome(TIMEOUT, cause=_name(exc))  # Engage's own 504: nothing created
    except EngageUnavailable as exc:
        return Outcome(UNAVAILABLE, cause=_name(exc))
    attributes = created.get("attributes") if isinstance(created.get("attributes"), dict) else {}
    return Outcome(
        CREATED,
        contact_id=_text(created.get("id")),
        member_number=_text(attributes.get("memberNumber")),
    )


def with_member_number(client: EngageClient, outcome: Outcome, contact_type: str) -> Outcome:
    """The outcome with the found contact's member number, when Engage can tell it, and its
    contact type when that is not `contact_type` (a "Contact" found by a "Member" signup)."""
    if not outcome.contact_id or outcome.member_number:
        return outcome
    try:
        person = _person(client.get_contact(outcome.contact_id))
    except EngageError:
        return outcome
    found_type = person["type"]
    return Outcome(
        **{
            **outcome.__dict__,
            "member_number": person["number"],
            "other_type": found_type if found_type and found_type != contact_type else None,
            "masked_name": person["name"],
        }
    )


def _person(contact: dict) -> dict[str, str | None]:
    """What a cashier may see of a contact Engage gave: its member number, its first name and
    last initial, and its contact type."""
    attributes = contact.get("attributes") if isinstance(contact.get("attributes"), dict) else {}
    meta = contact.get("meta") if isinstance(contact.get("meta"), dict) else {}
    return {
        "number": _text(attributes.get("memberNumber")),
        "name": masked_name(attributes.get("firstName"), attributes.get("lastName")),
        "type": _text(meta.get("contactType") or attributes.get("contactType")),
    }


def described_matches(client: EngageClient, contact_ids) -> list[dict[str, str | None]]:
    """Each contact that matched, as a cashier may see it on a staff tablet: the first name and
    the last initial and the member number, read from Engage now; where one cannot be read, its
    contact id (still enough to have it merged)."""
    described = []
    for contact_id in list(contact_ids)[:MAX_MATCHES]:
        try:
            person = _person(client.get_contact(contact_id))
        except EngageError:
            person = {"name": None, "number": None}
        described.append({"id": contact_id, "name": person["name"], "number": person["number"]})
    return described


def masked_name(first, last) -> str | None:
    """ "Astrid L.": the first name and the initial of the last, enough for a cashier to ask
    "Are you Astrid?" and no more."""
    first, last = (_text(first) or "").strip(), (_text(last) or "").strip()
    if not first:
        return None
    return f"{first} {last[0].upper()}." if last else first


def setting_to_check(exc: EngageError) -> str:
    """What operations should check when Engage refused for a reason no customer can fix."""
    if isinstance(exc, NotAuthorised):
        return "ENGAGE_API_KEY (and this server's address on the key's allow list)"
    if exc.status_code == 404:
        return "ENGAGE_BASE_URL (scheme and host of the tenant only)"
    return SETTING_TO_CHECK.get(exc.code or "", "the deployment's Engage settings")


def misconfigured(exc: EngageError, call: str) -> Outcome:
    """Engage refused for a reason only operations can fix: one ERROR line naming what to
    check; for the person, `unavailable` (and the breaker counts it)."""
    log.error(
        "engage refused the %s for a reason no customer can fix (HTTP %s %s): check %s",
        call, exc.status_code, exc.code or "-", setting_to_check(exc),
    )  # fmt: skip
    return Outcome(UNAVAILABLE, cause="Misconfigured")


def _rejection(signup: Signup, exc: EngageRejected) -> Outcome:
    """A 400/422 on create: the person's to correct only when it names fields the form shows."""
    fields = tuple(exc.field_errors) or _token_fields(exc)
    elsewhere = [name for name in fields if name not in signup.form_fields]
    if elsewhere:
        setting = SETTING_TO_CHECK.get(elsewhere[0], "REQUIRED_FIELDS")
        log.error(
            "engage refused the create for fields the form does not show (%s): check %s",
            ", ".join(sorted(elsewhere)), setting,
        )  # fmt: skip
        return Outcome(UNAVAILABLE, cause="Misconfigured")
    left_empty = [name for name in fields if name not in signup.contact]
    if left_empty:  # the person can fill them in; the form should have asked for them
        log.warning(
            "engage requires %s, which the form leaves optional: add to REQUIRED_FIELDS",
            ", ".join(sorted(left_empty)),
        )
    return Outcome(REJECTED, fields=fields, cause=_name(exc))


def _settle_doubt(client, signup, exc: OutcomeUnknown, settle_seconds, sleep) -> Outcome:
    """A create ended without a clear answer: look the person up before saying anything."""
    fallback = Outcome(TIMEOUT if exc.timed_out else UNAVAILABLE, cause=_name(exc))
    if not exc.timed_out:
        # A dropped connection or a gateway error may leave Engage still working on it; after
        # our own read timeout Engage's shorter server-side limit has already passed.
        sleep(settle_seconds)
    try:
        found = _find(client, signup)
    except MultipleMatches as lookup_exc:
        return _ambiguous(lookup_exc)
    except EngageError:
        # Could not check: we cannot say "nothing was saved", only that Engage is unwell.
        return Outcome(UNAVAILABLE, cause=_name(exc))
    return Outcome(CREATED, contact_id=found, cause=_name(exc)) if found else fallback


def _ambiguous(exc: MultipleMatches) -> Outcome:
    matches = tuple(getattr(exc, "contact_ids", ())[:MAX_MATCHES])
    return Outcome(AMBIGUOUS, cause=_name(exc), matches=matches)


def _outcome_for_find_error(exc: EngageError) -> Outcome:
    if isinstance(exc, MultipleMatches):
        return _ambiguous(exc)
    if isinstance(exc, EngageMisconfigured):
        return misconfigured(exc, "find")
    if isinstance(exc, EngageRejected):
        return Outcome(REJECTED, fields=_token_fields(exc), cause=_name(exc))
    if isinstance(exc, EngageTimeout):
        return Outcome(TIMEOUT, cause=_name(exc))
    return Outcome(UNAVAILABLE, cause=_name(exc))


def _name(exc: Exception) -> str:
    return exc.__class__.__name__


def _token_fields(exc: EngageError) -> tuple[str, ...]:
    field_name = FIELD_FOR_TOKEN.get(exc.code or "")
    return (field_name,) if field_name else ()


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
