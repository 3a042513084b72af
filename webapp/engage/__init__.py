"""Voyado Engage: the client and its errors."""

from .client import EngageClient
from .errors import (
    ContactBeingCreated,
    ContactExists,
    ContactNotFound,
    EngageError,
    EngageMisconfigured,
    EngageRejected,
    EngageServerError,
    EngageTimeout,
    EngageUnavailable,
    MultipleMatches,
    NotAuthorised,
    OutcomeUnknown,
    RateLimited,
)

__all__ = [
    "ContactBeingCreated",
    "ContactExists",
    "ContactNotFound",
    "EngageClient",
    "EngageError",
    "EngageMisconfigured",
    "EngageRejected",
    "EngageServerError",
    "EngageTimeout",
    "EngageUnavailable",
    "MultipleMatches",
    "NotAuthorised",
    "OutcomeUnknown",
    "RateLimited",
]
