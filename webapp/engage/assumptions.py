"""Everything the client assumes about Engage that no Voyado source states.

engage-api.md marks these as [ASSUMPTION]. They are kept here, and only here, so that when
real answers from a tenant show otherwise there is one place to correct.
"""

from __future__ import annotations

import json
from typing import Any

# engage-api.md §2.4: the error body is not documented. Look for the error token under these
# members, in this order, then in the raw text. The status code always decides first.
ERROR_TOKEN_MEMBERS = ("errorCode", "code", "error", "message", "detail")

# engage-api.md §2.4/§1.2: 409 bodies carry `messageDetails`; for 422 we assume per-field detail
# may sit in `messageDetails` as {"field": "text"} or [{"field": ..., "message": ...}], or in a
# top-level `errors` member. None of this is documented; any other shape gives no field detail.
FIELD_DETAIL_MEMBERS = ("messageDetails", "errors", "fieldErrors")

# engage-api.md §12.4: the status for a bad API key is not documented; 401 and 403 are assumed.
AUTH_STATUSES = (401, 403)

# engage-api.md §1.1: find-contact has no externalId parameter; an externalId key is looked up
# through `customKey`, which assumes the tenant configured externalId as its custom key.
FIND_PARAMETER_FOR_KEY = {
    "email": "email",
    "mobilePhone": "mobilePhone",
    "socialSecurityNumber": "socialSecurityNumber",
    "externalId": "customKey",
}

KNOWN_TOKENS = (
    "ApprovedContactWithKeyExists",
    "ContactWithKeyIsBeingCreated",
    "MultipleMatches",
    "ContactNotFound",
    "ValidationError",
    "RequestTimeOut",
    "NoData",
    "InvalidEmailAddress",
    "InvalidPhoneNumber",
    "InvalidSocialSecurityNumber",
    "InvalidContactType",
    "InvalidSearchQuery",
)


def parse_body(text: str) -> Any:
    """The body as JSON if it is JSON, else None. Never raises."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def error_token(body: Any, text: str) -> str | None:
    """The documented error token (e.g. ContactWithKeyIsBeingCreated) found in a body, if any."""
    candidates: list[str] = []
    if isinstance(body, dict):
        candidates += [str(body[m]) for m in ERROR_TOKEN_MEMBERS if isinstance(body.get(m), str)]
    candidates.append(text[:2000])
    for candidate in candidates:
        for token in KNOWN_TOKENS:
            if token.lower() in candidate.lower():
                return token
    return None


def field_errors(body: Any) -> dict[str, str]:
    """Per-field detail of a 422, as {engage attribute name: Engage's text}; {} when absent."""
    if not isinstance(body, dict):
        return {}
    for member in FIELD_DETAIL_MEMBERS:
        detail = body.get(member)
        if isinstance(detail, dict):
            return {str(k): str(v) for k, v in detail.items() if isinstance(k, str) and v}
        if isinstance(detail, list):
            found = {}
            for item in detail:
                if isinstance(item, dict) and isinstance(item.get("field"), str):
                    found[item["field"]] = str(item.get("message") or item.get("error") or "")
            if found:
                return found
    return {}


def multiple_match_ids(body: Any) -> list[str]:
    """Contact ids of a 409 MultipleMatches (messageDetails.multipleMatchesFound, per Stape)."""
    if isinstance(body, dict) and isinstance(body.get("messageDetails"), dict):
        ids = body["messageDetails"].get("multipleMatchesFound")
        if isinstance(ids, list):
            return [str(i) for i in ids]
    return []


def contact_id_from_find(text: str) -> str:
    """Find answers 200 with a JSON string literal ("<guid>"); tolerate a bare id too."""
    text = text.strip()
    if text.startswith('"'):
        try:
            value = json.loads(text)
        except ValueError:
            value = text.strip('"')
        return str(value)
    return text
