"""Typed exceptions for every way an Engage call can fail.

The view decides what a person sees from the class alone; nothing outside the client looks at
HTTP status codes or bodies.
"""

from __future__ import annotations


class EngageError(Exception):
    """Base class. `status_code` is None when no HTTP answer arrived."""

    def __init__(
        self,
        message: str = "",
        *,
        status_code: int | None = None,
        code: str | None = None,
        field_errors: dict[str, str] | None = None,
    ):
        super().__init__(message or self.__class__.__name__)
        self.status_code = status_code
        self.code = code
        self.field_errors = field_errors or {}

    def __str__(self) -> str:  # short: never the body, never personal data
        status = f"HTTP {self.status_code}" if self.status_code else "no HTTP answer"
        return f"{self.__class__.__name__} ({status}{', ' + self.code if self.code else ''})"


# --- Engage refused this input or this request ------------------------------------------------
class EngageRejected(EngageError):
    """A 4xx saying the data itself is wrong (400 NoData/Invalid*, 422 ValidationError)."""


class ContactNotFound(EngageRejected):
    """404 ContactNotFound on a call naming a contact id: it is gone (deleted, or merged into
    another) since its id was found."""


class ContactExists(EngageError):
    """409 ApprovedContactWithKeyExists: an approved contact already has this key."""


class ContactBeingCreated(EngageError):
    """409 ContactWithKeyIsBeingCreated: another create with this key is still running."""


class MultipleMatches(EngageError):
    """409 MultipleMatches on find: more than one contact has this key."""


# --- Engage could not answer now --------------------------------------------------------------
class EngageUnavailable(EngageError):
    """Try again later: 429, 5xx, or the connection failed before anything was sent."""


class RateLimited(EngageUnavailable):
    """429 Too Many Requests."""


class EngageMisconfigured(EngageUnavailable):
    """Engage refused the request for a reason no customer can fix: the deployment's settings
    or the tenant's set-up are wrong (a contact type that does not exist, a bad API key, a
    request Engage cannot read). For the person it is "unavailable"; for operations, an error."""


class NotAuthorised(EngageMisconfigured):
    """401/403: the API key is wrong, lacks rights, or this address is not on its allow list."""


class EngageTimeout(EngageUnavailable):
    """504 RequestTimeOut from Engage, or our own read timeout: nothing reached a result."""


class OutcomeUnknown(EngageUnavailable):
    """The request may have been carried out: read timeout, dropped connection, or a gateway
    5xx after sending. For a create, look the person up before saying anything."""

    def __init__(self, message: str = "", *, timed_out: bool = False, **kwargs):
        super().__init__(message, **kwargs)
        self.timed_out = timed_out


class EngageServerError(EngageUnavailable):
    """5xx from Engage on a call that changes nothing (find, lists)."""
