"""The cashier's look-ups, remembered per device and key for a short while.

A look-up (webapp/pages/lookup.py: a staff tablet only) asks Engage who has the key the cashier
just typed. What it found is kept in the shared state, so that every machine behind the load
balancer knows it:
- a look-up repeated within REUSE_SECONDS (the cashier tabs back and forth) is answered from
  here, without asking Engage again;
- a form sent within REUSE_SECONDS of a look-up that found nobody is created at once: the
  look-up was the find Engage asks for (one round trip instead of two). Not after a create of
  that key from that device ended in doubt (a 504, a timeout, a broken connection): from then
  on, as Voyado's retry policy says, every attempt starts with a new find;
- what the look-up showed as given (preferences, consents), for KEEP_SECONDS: a box the
  cashier unticks after that is a withdrawal, while a box nobody was shown says nothing.

The row's id is a keyed hash of the device and the key's value, and what was found is sealed
(Fernet under SECRET_KEY): no personal data in clear in the shared state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import current_app

from ..access import signed
from . import flow

REUSE_SECONDS = 60
KEEP_SECONDS = 600
DOUBT_SECONDS = 600
PURPOSE = "lookup"


@dataclass(frozen=True)
class Recalled:
    view: dict[str, Any] | None  # what the look-up showed (see view()), None after a doubt only
    age: float  # seconds since Engage was asked
    doubt: bool  # a create of this key from this device ended in doubt since

    @property
    def stands_for_a_find(self) -> bool:
        """Nobody had the key moments ago, and nothing since leaves it open."""
        return (
            self.view is not None
            and self.view["result"] == flow.LOOKUP_NONE
            and self.age <= REUSE_SECONDS
            and not self.doubt
        )


def _id(device_id: str, value: str) -> str:
    key = current_app.config["CONTACT_KEY"]
    if key == "email":  # Engage finds an address whatever its case
        value = value.lower()
    return signed.digest({"device": device_id, "key": key, "value": value}, PURPOSE)


def view(looked: flow.LookedUp) -> dict[str, Any]:
    """What a look-up shows a cashier: the masked name, the member number, what Engage holds
    of each field (masked), the preferences and consents given; Engage's contact id for the
    wallet card and the several-matches list, never shown as such."""
    person = looked.person
    shown: dict[str, Any] = {"result": looked.result, "matches": list(looked.matches)}
    if person is not None:
        shown.update(
            contact_id=person.id,
            type=person.type,
            number=person.number,
            name=person.name,
            held={name: mask(name, value) for name, value in person.attributes.items()},
            given=list(person.given()),
        )
    return shown


def remember(device_id: str, value: str, looked: flow.LookedUp) -> dict[str, Any]:
    """Keep what a look-up found (not an answer Engage could not give); returns its view."""
    shown = view(looked)
    if looked.result != flow.LOOKUP_UNAVAILABLE:
        current_app.extensions["state"].lookup_put(
            _id(device_id, value), signed.seal(shown, PURPOSE), KEEP_SECONDS
        )
    return shown


def recall(device_id: str, value: str) -> Recalled | None:
    row = current_app.extensions["state"].lookup(_id(device_id, value))
    if row is None:
        return None
    shown = signed.unseal(row["sealed"], PURPOSE, KEEP_SECONDS) if row["sealed"] else None
    return Recalled(shown if isinstance(shown, dict) else None, row["age"], row["doubt"])


def note_doubt(device_id: str, value: str) -> None:
    current_app.extensions["state"].lookup_doubt(_id(device_id, value), DOUBT_SECONDS)


DOT = "\u2022"


def mask(name: str, value: str) -> str:
    """Enough of what Engage holds for the customer to say "that's my old number", never
    enough to learn it: an email's first letter and domain, a phone's last two digits, a
    postcode's first digit, a birth date's year; nothing of a personal identity number."""
    value = str(value).strip()
    if name == "email" and "@" in value:
        local, domain = value.rsplit("@", 1)
        return f"{local[:1]}{DOT * 3}@{domain}"
    if name == "mobilePhone":
        digits = [c for c in value if c.isdigit()]
        return f"{DOT * 3} {DOT * 3} {''.join(digits[-2:])}"
    if name == "birthDay":
        return f"{value[:4]}-{DOT * 2}-{DOT * 2}"
    if name == "countryCode":
        return value
    if name == "socialSecurityNumber":
        return DOT * 8
    if name == "externalId":
        return f"{DOT * 3}{value[-2:]}"
    return f"{value[:1]}{DOT * max(2, len(value) - 1)}"
