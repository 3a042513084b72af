"""A submitted sign-up, from a checked form to its outcome: the one way through for the till's
form, the kiosk and the customer's own phone (scan to join). The views only turn requests into
a call here and the outcome into a page.

In order: the limits (per device or browser, per handoff, per address), the one-time
submission token (a double tap or a resubmit never creates twice; other details under a used
token are given back), the consent record (before Engage is asked), the flow (find; create
only if nobody was found: webapp/signup/flow.py), the member number for staff, the outbox when
Engage cannot take it now, and the sign-up's end written in one transaction (its outcome for a
repeat, its way to Engage beside the consent records, the manager's count). A channel that
must reveal nothing about anyone (a kiosk, a phone) releases every final outcome at one moment
fixed before Engage is asked (webapp/signup/padding.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from flask import current_app, g, request

from ..access import signed
from ..access.devices import PRIVATE_MODES
from ..i18n import current_language
from ..i18n import lazy_gettext as _l
from ..ops import metrics, web
from ..store import StateUnavailable
from . import consent_records, flow, lookups, padding
from .consents import consent_texts
from .outbox import KEPT_OUTCOMES, NOT_KEPT_CAUSES

log = logging.getLogger(__name__)

# Outcomes that end the person's part: shown on a result page after a redirect.
FINAL_OUTCOMES = (flow.CREATED, flow.EXISTING, flow.IN_PROGRESS, flow.AMBIGUOUS, flow.QUEUED,
                  flow.PROMOTED, flow.UPDATED)  # fmt: skip
ATTRIBUTES = (
    *("firstName", "lastName", "email", "mobilePhone", "countryCode", "birthDay", "zipCode"),
    *("socialSecurityNumber", "externalId", "acceptsEmail", "acceptsSms", "acceptsPostal"),
)
# The words above the preference checkboxes, by who reads them (the customer alone: True; a
# cashier: False): the page shows them, and each preference's consent record keeps them.
PREFERENCE_WORDS = {
    True: (_l("What may we send you?"), _l("You can change this at any time.")),
    False: (_l("Offers the customer wants"), _l("The customer can change this at any time.")),
}
DELIVERY = {flow.CREATED: "sent", flow.EXISTING: "already-member", flow.QUEUED: "kept",
            flow.PROMOTED: "sent", flow.UPDATED: "sent"}  # fmt: skip
# Outcomes after which Engage holds the contact: its id goes with the consent records.
FOUND = (flow.CREATED, flow.EXISTING, flow.PROMOTED, flow.UPDATED)


@dataclass(frozen=True)
class Channel:
    """Where a sign-up comes from: the store and device it counts for, its mode (staff,
    kiosk, phone), and the key its own rate limit counts against."""

    store_id: str
    device_id: str
    mode: str
    limit_key: str

    @property
    def private(self) -> bool:
        """The person is alone with a public screen (a kiosk, their phone): nothing may tell
        one outcome from another, not even timing, and no member number is shown."""
        return self.mode in PRIVATE_MODES

    @property
    def staff(self) -> bool:
        """An enrolled staff tablet: the only channel that looks a person up, makes them a
        member or completes them (anyone can type anyone's address on a public screen)."""
        return self.mode == "staff" and bool(self.device_id)


def channel_of(device) -> Channel:
    """The channel of a till or a kiosk (an enrolled device, or this browser on a kiosk)."""
    who = f"device:{device.id}" if device.id else f"browser:{signed.client_id()}"
    return Channel(device.store_id, device.id, device.mode, who)


@dataclass(frozen=True)
class Submitted:
    outcome: flow.Outcome
    note: str | None = None  # a form-level note to show with the form (token-used)
    duplicate: bool = False  # a repeat of an earlier POST: its outcome, nothing sent again


def submit(channel: Channel, form, *, extra_limits=()) -> Submitted:
    """Send a checked sign-up form on its way; its outcome (and it is counted)."""
    state = current_app.extensions["state"]
    token = form.submission.data
    digest = signed.digest(submitted_values(form), "submission")
    try:
        if not _within_rate_limits(channel, extra_limits):
            return Submitted(_counted(flow.Outcome("throttled"), channel))
        earlier = state.claim_submission(token, digest)
    except StateUnavailable as exc:
        # No Engage call without the double-submit guard: the person keeps their details.
        return Submitted(_counted(state_fault(exc), channel))
    if earlier is not None:
        if earlier.digest is not None and earlier.digest != digest:
            # Someone else's details under a used token: never show them the first outcome.
            outcome = _counted(flow.Outcome("invalid", cause="TokenUsed"), channel)
            return Submitted(outcome, note="token-used")
        # A double tap, a resubmit or a reload: never a second create, show the first's outcome.
        return Submitted(_wait_for(token, earlier), duplicate=True)

    signup, shown = signup_from(form, channel)
    try:
        signup = _with_what_was_looked_up(signup, shown, channel)
    except StateUnavailable as exc:
        return Submitted(_counted(state_fault(exc), channel))
    try:  # what the person was shown and chose is on record before Engage is asked
        current_app.extensions["consent_records"].record(
            token, shown, store=channel.store_id, device=channel.device_id, mode=channel.mode
        )
    except StateUnavailable as exc:
        return Submitted(_counted(state_fault(exc), channel))

    times = current_app.extensions["answer_times"]
    started = times.clock()
    # A public screen's answer is released at a moment fixed now, before Engage is asked.
    release = times.target() if channel.private else None
    engage = current_app.extensions["engage"]
    outcome = flow.register(
        engage,
        signup,
        breaker=current_app.extensions["breaker"],
        settle_seconds=current_app.config["ENGAGE_SETTLE_SECONDS"],
    )
    if outcome.name == flow.EXISTING and not channel.private and not signup.known_person:
        # The cashier attaches the purchase: show the member number of who was found.
        outcome = flow.with_member_number(engage, outcome, current_app.config["CONTACT_TYPE"])
    if signup.known_person:
        _after_create(signup, outcome, channel)
    g.engage_cause = outcome.cause
    outcome = _keep_for_later(signup, outcome, channel, token)
    _finish(token, outcome, channel)
    _even_out(outcome, started, release)
    return Submitted(outcome)


def _with_what_was_looked_up(signup: flow.Signup, shown, channel: Channel) -> flow.Signup:
    """A staff tablet's sign-up: a person found is made a member or completed; the fields the
    cashier confirmed to replace; what the look-up showed as given (an unticked box of those
    is a withdrawal); and a create at once where a look-up moments ago found nobody."""
    if not channel.staff:
        return signup
    value = signup.contact.get(signup.key)
    recalled = lookups.recall(channel.device_id, value) if value else None
    view = recalled.view if recalled is not None else None
    found = view is not None and view.get("result") in (flow.LOOKUP_MEMBER, flow.LOOKUP_OTHER_TYPE)
    confirmed = set(request.form.getlist("replace")) & set(flow.COMPLETABLE)
    return replace(
        signup,
        known_person=True,
        replace=tuple(sorted(confirmed)),
        shown_given=tuple(view.get("given") or ()) if found else (),
        unticked_consents=tuple(
            (s.item, _comment(channel, s)) for s in shown if s.kind == "consent" and not s.given
        ),
        found_nobody=recalled is not None and recalled.stands_for_a_find,
        found_id=view.get("contact_id")
        if found and recalled.age <= lookups.REUSE_SECONDS and not recalled.doubt
        else None,
    )


def _after_create(signup: flow.Signup, outcome: flow.Outcome, channel: Channel) -> None:
    """A remembered look-up stands for one find at most, and never after a create of its key
    ended in doubt: from then on each attempt starts with a new find (Voyado's retry policy)."""
    doubt = outcome.name in (flow.TIMEOUT, flow.UNAVAILABLE) or outcome.cause in (
        "OutcomeUnknown",
        "EngageTimeout",
    )
    if signup.found_nobody or doubt:
        try:
            lookups.note_doubt(channel.device_id, signup.contact[signup.key])
        except StateUnavailable as exc:
            state_fault(exc)


def _comment(channel: Channel, shown) -> str:
    said = f"{channel.mode} device in store {channel.store_id}"
    return consent_records.comment(
        said, shown.hash, current_app.extensions["consent_records"].version
    )


def count(outcome: flow.Outcome, channel: Channel) -> flow.Outcome:
    """Count an outcome the submission never reached (our own checks refused the form)."""
    return _counted(outcome, channel)


def _counted(outcome: flow.Outcome, channel: Channel) -> flow.Outcome:
    """One event per sign-up for the manager's figures (store, device, mode, outcome, what
    Engage said). A fault of the state database is already said, and never stops the answer."""
    try:
        current_app.extensions["state"].event(**_event(outcome, channel))
    except StateUnavailable as exc:
        state_fault(exc)
    return outcome


def _event(outcome: flow.Outcome, channel: Channel) -> dict:
    """The sign-up's count, for the manager's figures and for the metrics."""
    metrics.signup(outcome.name, channel.store_id, channel.mode)
    return {"store": channel.store_id, "device": channel.device_id, "mode": channel.mode,
            "outcome": outcome.name,
            "cause": outcome.cause if outcome.cause != "StateUnavailable" else None}  # fmt: skip


def _finish(token: str, outcome: flow.Outcome, channel: Channel) -> None:
    """Write down, in one transaction, the outcome for a repeat of this form, where the sign-up
    (and so its consents) went, beside the consent records, and its count for the manager."""
    found = outcome.name in FOUND
    kept_for_a_person = outcome.name == flow.AMBIGUOUS and outcome.reference
    delivery = current_app.extensions["consent_records"].delivery(
        token,
        "needs-attention" if kept_for_a_person else DELIVERY.get(outcome.name, "not-sent"),
        contact_id=outcome.contact_id if found else None,
        outbox_ref=outcome.reference,
    )
    try:
        current_app.extensions["state"].finish_signup(
            token, outcome.name, outcome.member_number, delivery=delivery,
            event=_event(outcome, channel),
        )  # fmt: skip
    except StateUnavailable as exc:
        state_fault(exc)  # Engage has answered: the person is still told what happened


def _keep_for_later(signup: flow.Signup, outcome: flow.Outcome, channel: Channel, token: str):
    """Engage could not take it now: with the outbox on, keep it and say it will be done. The
    details on several members: kept for the store manager, who has them merged."""
    outbox = current_app.extensions.get("outbox")
    if outbox is not None and outcome.name == flow.AMBIGUOUS and outcome.matches:
        try:
            ref = outbox.keep(signup, device_id=channel.device_id, mode=channel.mode,
                              submission=token, matches=tuple(outcome.matches))  # fmt: skip
        except StateUnavailable as exc:
            state_fault(exc)
            return outcome
        log.info("kept for the manager: reference %s (several matches) %s", ref,
                 web.log_context())  # fmt: skip
        return flow.Outcome(flow.AMBIGUOUS, cause=outcome.cause, matches=outcome.matches,
                            reference=ref)  # fmt: skip
    if outbox is None or outcome.name not in KEPT_OUTCOMES or outcome.cause in NOT_KEPT_CAUSES:
        return outcome
    try:
        ref = outbox.keep(signup, device_id=channel.device_id, mode=channel.mode,
                          submission=token)  # fmt: skip
    except StateUnavailable as exc:
        return state_fault(exc)
    log.info("kept in the outbox: reference %s after %s %s", ref, outcome.name, web.log_context())
    return flow.Outcome(flow.QUEUED, cause=outcome.cause, reference=ref)


def submitted_values(form) -> dict:
    """What the person sent, as a submission token is bound to it."""
    return {f.name: f.data for f in form if f.name not in ("csrf_token", "submission")}


def state_fault(exc: StateUnavailable) -> flow.Outcome:
    if not g.get("state_fault_logged"):  # one ERROR line per request, however many writes failed
        log.error("state database unavailable: %s %s", exc, web.log_context())
        g.state_fault_logged = True
    g.engage_cause = "StateUnavailable"
    return flow.Outcome(flow.UNAVAILABLE, cause="StateUnavailable")


def signup_from(form, channel: Channel) -> tuple[flow.Signup, list[consent_records.Shown]]:
    """The sign-up to send, and what the form showed beside each checkbox."""
    config = current_app.config
    language = current_language()
    # The heading and the hint under it, as the page shows them: two lines, never run together.
    context = "\n".join(str(words) for words in PREFERENCE_WORDS[channel.private])
    shown = consent_records.shown_on(form, language, consent_texts(language), context)
    consents = [(s.item, _comment(channel, s)) for s in shown if s.kind == "consent" and s.given]
    values = {name: form.normalized(name) for name in ATTRIBUTES if name in form}
    signup = flow.Signup(
        contact=flow.build_contact(
            values, contact_type=config["CONTACT_TYPE"], lang=language, consents=consents
        ),
        key=config["CONTACT_KEY"],
        contact_type=config["CONTACT_TYPE"],
        store_external_id=channel.store_id,
        create_as_unapproved=unapproved(channel.mode),
        find_contact_type=config["CONTACT_TYPE"] if config["FIND_CONTACT_TYPE"] == "same" else None,
        form_fields=frozenset(name for name in ATTRIBUTES if name in form),
    )
    return signup, shown


def unapproved(mode: str) -> bool:
    """Created unapproved (for a double opt-in in Engage): offers apply once confirmed."""
    config = current_app.config
    return config["CREATE_AS_UNAPPROVED"] or (
        mode in PRIVATE_MODES and config["KIOSK_CREATE_AS_UNAPPROVED"]
    )


def _even_out(outcome: flow.Outcome, started: float, release: float | None) -> None:
    """Where nothing may tell one person's outcome from another's (a kiosk, a phone), every
    final answer, a create's too, waits until `release` seconds after the sign-up began: a
    moment fixed before Engage was asked (webapp/signup/padding.py). Every create is timed, on every
    channel, for the targets to come."""
    times = current_app.extensions["answer_times"]
    if outcome.name == flow.CREATED:
        times.created(times.clock() - started)
    if release is not None and outcome.name in FINAL_OUTCOMES:
        times.hold(started, release)


def longest_seconds() -> float:
    """The longest a sign-up can take: a find and its resend, a create, the settling wait, a
    second find, and a public screen's release."""
    config = current_app.config
    engage = 2 * config["ENGAGE_READ_TIMEOUT"] + config["ENGAGE_CREATE_TIMEOUT"]
    return engage + config["ENGAGE_SETTLE_SECONDS"] + 2 + padding.CEILING_SECONDS


def _wait_for(token: str, earlier) -> flow.Outcome:
    """The outcome of the first request with this token, once it has one."""
    state = current_app.extensions["state"]
    deadline = time.monotonic() + longest_seconds()
    try:
        while earlier.outcome is None and time.monotonic() < deadline:
            time.sleep(0.05)
            earlier = state.submission(token) or earlier
    except StateUnavailable as exc:
        return state_fault(exc)
    if earlier.outcome is None:  # the first request died without an answer: say so safely
        return flow.Outcome(flow.UNAVAILABLE, cause="DuplicateStillRunning")
    return flow.Outcome(earlier.outcome, member_number=earlier.member_number)


def _within_rate_limits(channel: Channel, extra=()) -> bool:
    """Per device (its enrolment, else this browser, else the handoff) and per address, on
    every machine; `extra` (key, limit, seconds) limits of the channel's own."""
    config = current_app.config
    return current_app.extensions["state"].hits(
        [
            (channel.limit_key, config["SUBMIT_LIMIT_PER_DEVICE"], 60),
            (f"address:{request.remote_addr}", config["SUBMIT_LIMIT_PER_ADDRESS"], 60),
            *extra,
        ]
    )
