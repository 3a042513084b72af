"""The signup flow against Engage: find first, create only when nobody was found.

`register()` turns every answer Engage can give into one `Outcome`, whose name is what
`<main data-outcome>` shows, so tests and monitoring can rely on it.

On an enrolled staff tablet (and only there: `Signup.known_person`) a person who is found is
not where it stops: someone of another contact type is made a member (`promote`:
updateContactType, then one PATCH with what the customer chose), and a member whose record
lacks what the customer gives now has just that added (`complete`: one PATCH, only the new
values, never an empty one, never replacing a value Engage holds unless the cashier confirmed
that field). Both read the contact as Engage holds it at that moment, so a replay from the
outbox, or a contact that changed since the cashier's look-up, sends only what is still needed.
`look_up()` is the cashier's look-up while typing (webapp/pages/lookup.py).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..engage import (
    ContactBeingCreated,
    ContactExists,
    ContactNotFound,
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
PROMOTED = "promoted"  # found as another contact type, made a member (staff tablets only)
UPDATED = "updated"  # a member found, what they lacked added (staff tablets only)

# What the cashier's look-up found (data-lookup-result).
LOOKUP_NONE = "none"
LOOKUP_MEMBER = "member"
LOOKUP_OTHER_TYPE = "other-type"
LOOKUP_SEVERAL = "several"
LOOKUP_UNAVAILABLE = "unavailable"
# The attributes a found person may have completed or (confirmed) replaced: never the key,
# which found them, and never the language Engage writes to them in.
COMPLETABLE = (
    "firstName", "lastName", "email", "mobilePhone", "countryCode", "birthDay", "zipCode",
    "socialSecurityNumber", "externalId",
)  # fmt: skip
PREFERENCES = ("acceptsEmail", "acceptsSms", "acceptsPostal")

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
    # promoted/updated: what was sent (attribute, preference and consent names), and the
    # attributes Engage holds another value of that were left as they were (not confirmed).
    changed: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()


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
    # An enrolled staff tablet's sign-up: a person found is made a member or completed. Never
    # for a kiosk, a phone or a customer display: anyone can type anyone's address there.
    known_person: bool = False
    # Attributes Engage holds that the cashier confirmed to replace with what was typed.
    replace: tuple[str, ...] = ()
    # Preferences and consent ids the cashier's look-up showed as given (ticked on the form):
    # one unticked now is withdrawn. Any other unticked box says nothing and changes nothing.
    shown_given: tuple[str, ...] = ()
    # (consent id, comment) of each consent shown and left unticked, for a withdrawal.
    unticked_consents: tuple[tuple[str, str], ...] = ()
    # Nobody had this key at a look-up on this device moments ago (and no create of it since
    # ended in doubt): the look-up was the find, create at once.
    found_nobody: bool = False
    # The contact a look-up on this device found for this key moments ago: the look-up was the
    # find; the contact is read again before anything is sent to it.
    found_id: str | None = None


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
    if signup.found_id and signup.known_person:
        return complete(client, signup, signup.found_id)
    if not signup.found_nobody:
        try:
            found = _find(client, signup)
        except EngageError as exc:
            return _outcome_for_find_error(exc)
        if found:
            if signup.known_person:
                return complete(client, signup, found)
            return Outcome(EXISTING, contact_id=found)

    try:
        created = client.create_contact(
            signup.contact,
            source=SOURCE,
            store_external_id=signup.store_external_id,
            create_as_unapproved=signup.create_as_unapproved,
        )
    except ContactExists as exc:
        if signup.found_nobody and signup.known_person:
            # Made between the look-up and now: the person who has the key, as if just found.
            return _find_then_create(client, replace(signup, found_nobody=False), 0, sleep)
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


@dataclass(frozen=True)
class Person:
    """A contact as Engage holds it when it was read: for the cashier's eyes only what `view`
    gives; the rest decides what a sign-up still has to send."""

    id: str
    type: str | None
    number: str | None
    name: str | None
    attributes: dict[str, str]  # the attributes it holds (no empty ones)
    preferences: dict[str, bool]
    consents: dict[str, bool]  # the consents that are set, Yes or No

    def given(self) -> tuple[str, ...]:
        """The preferences and consent ids this person has given (Yes)."""
        return (*(n for n, v in self.preferences.items() if v),
                *(c for c, v in self.consents.items() if v))  # fmt: skip


def read_person(client: EngageClient, contact_id: str) -> Person:
    """The contact as Engage holds it now (GET /api/v3/contacts/{id}). Raises EngageError."""
    contact = client.get_contact(contact_id)
    attributes = contact.get("attributes") if isinstance(contact.get("attributes"), dict) else {}
    preferences = contact.get("preferences") if isinstance(contact.get("preferences"), dict) else {}
    consents = contact.get("consents") if isinstance(contact.get("consents"), list) else []
    described = _person(contact)
    return Person(
        id=contact_id,  # the id it was found and read by
        type=described["type"],
        number=described["number"],
        name=described["name"],
        attributes={
            k: str(v) for k, v in attributes.items() if k in COMPLETABLE and v not in (None, "")
        },  # fmt: skip
        preferences={
            k: v for k, v in preferences.items() if k in PREFERENCES and isinstance(v, bool)
        },
        consents={
            str(c.get("id")): c.get("value")
            for c in consents
            if isinstance(c, dict) and isinstance(c.get("value"), bool)
        },  # fmt: skip
    )


@dataclass(frozen=True)
class LookedUp:
    """What the cashier's look-up found: `result` is what data-lookup-result says."""

    result: str
    person: Person | None = None
    matches: tuple[str, ...] = ()
    cause: str | None = None


def look_up(
    client: EngageClient, *, key: str, value: str, contact_type: str,
    find_contact_type: str | None, breaker: Breaker | None = None,
) -> LookedUp:  # fmt: skip
    """Find who has `value` as their key, and read them: for a staff tablet only. Engage
    is not asked while the breaker keeps it alone."""
    if breaker is not None and not breaker.allows():
        return LookedUp(LOOKUP_UNAVAILABLE, cause="CircuitOpen")
    try:
        found = client.find_contact_id(key=key, value=value, contact_type=find_contact_type)
        if not found:
            return LookedUp(LOOKUP_NONE)
        person = read_person(client, found)
    except MultipleMatches as exc:
        matches = tuple(getattr(exc, "contact_ids", ())[:MAX_MATCHES])
        return LookedUp(LOOKUP_SEVERAL, matches=matches, cause=_name(exc))
    except EngageError as exc:
        return LookedUp(LOOKUP_UNAVAILABLE, cause=_name(exc))
    kind = LOOKUP_MEMBER if person.type in (None, contact_type) else LOOKUP_OTHER_TYPE
    return LookedUp(kind, person=person)


def changes_for(signup: Signup, person: Person, *, now: dt.datetime | None = None):
    """(the PATCH body, the attributes left as Engage holds them): what the customer gave now
    that Engage lacks, the fields the cashier confirmed to replace, the preferences and
    consents newly given, and those the look-up showed given that are unticked now. Never an
    empty value, never the key, never what Engage already holds."""
    contact = signup.contact
    changes: dict[str, Any] = {}
    kept = []
    for name in COMPLETABLE:
        typed = contact.get(name)
        if typed in (None, "") or name == signup.key:
            continue
        held = person.attributes.get(name)
        if held is None:
            changes[name] = typed
        elif not _same(name, held, typed):
            if name in signup.replace:
                changes[name] = typed
            else:
                kept.append(name)
    preferences = {}
    for name, ticked in (contact.get("preferences") or {}).items():
        held = person.preferences.get(name)
        if ticked and held is not True:
            preferences[name] = True
        elif not ticked and held is True and name in signup.shown_given:
            preferences[name] = False  # withdrawn: the cashier saw it given and unticked it
    if preferences:
        changes["preferences"] = preferences
    consents = [
        c for c in contact.get("consents") or [] if person.consents.get(c["id"]) is not True
    ]
    stamp = (now or dt.datetime.now(dt.UTC).astimezone()).isoformat(timespec="seconds")
    for consent_id, comment in signup.unticked_consents:
        if person.consents.get(consent_id) is True and consent_id in signup.shown_given:
            consents.append({"id": consent_id, "value": False, "date": stamp, "source": SOURCE,
                             "comment": comment})  # fmt: skip
    if consents:
        changes["consents"] = consents
    return changes, tuple(kept)


def complete(client: EngageClient, signup: Signup, contact_id: str) -> Outcome:
    """A staff tablet's sign-up for someone found: read them as Engage holds them now; made a
    member when of another type (`promoted`), what they lack added when a member (`updated`),
    or `existing` when nothing is new. Any doubt or failure is `unavailable`/`timeout`, so the
    outbox keeps it; its replay comes back here and sends only what is still needed."""
    try:
        person = read_person(client, contact_id)
    except ContactNotFound:
        # Gone since it was found (merged, deleted): nothing is sent now; kept in the outbox,
        # whose replay finds the person again first.
        return Outcome(UNAVAILABLE, cause="ContactGone")
    except EngageError as exc:
        # Found, but not readable now: a member as far as the cashier can tell (the contact id
        # finds them), with nothing added, as before the till could complete anyone.
        log.warning("found contact could not be read, nothing added: %s", exc)
        return Outcome(EXISTING, contact_id=contact_id, cause=_name(exc))
    promote = person.type not in (None, signup.contact_type)
    changes, kept = changes_for(signup, person)
    said = {"contact_id": person.id, "member_number": person.number, "masked_name": person.name}
    if not promote and not changes:
        return Outcome(EXISTING, kept=kept, **said)
    try:
        if promote:
            client.update_contact_type(person.id, signup.contact_type)
        if changes:
            answer = client.update_contact(person.id, changes)
            attributes = (
                answer.get("attributes") if isinstance(answer.get("attributes"), dict) else {}
            )
            said["member_number"] = _text(attributes.get("memberNumber")) or person.number
    except ContactNotFound:
        return Outcome(UNAVAILABLE, cause="ContactGone")
    except ContactExists as exc:
        # A member of this type already has the key beside this contact: two contacts of one
        # person, for the store manager to have merged.
        return Outcome(AMBIGUOUS, cause=_name(exc), matches=(person.id,))
    except EngageRejected as exc:
        return _rejection(signup, exc)
    except EngageError as exc:
        return _failed_step(exc, "promote" if promote else "update")
    return Outcome(PROMOTED if promote else UPDATED, changed=_names(changes), kept=kept, **said)


def _names(changes: dict) -> tuple[str, ...]:
    names = [n for n in changes if n not in ("preferences", "consents")]
    names += list(changes.get("preferences", {}))
    names += [f"consent:{c['id']}" for c in changes.get("consents", [])]
    return tuple(names)


def _failed_step(exc: EngageError, call: str) -> Outcome:
    if isinstance(exc, EngageMisconfigured):
        return misconfigured(exc, call)
    if isinstance(exc, EngageTimeout) or getattr(exc, "timed_out", False):
        return Outcome(TIMEOUT, cause=_name(exc))
    return Outcome(UNAVAILABLE, cause=_name(exc))


def _same(name: str, held: str, typed: Any) -> bool:
    if name == "email":
        return held.strip().lower() == str(typed).strip().lower()
    return held.strip() == str(typed).strip()


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
