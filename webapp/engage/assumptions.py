"""Everything the client assumes about Engage that no Voyado source states.

engage-api.md marks these as [ASSUMPTION]. They are kept here, and only here, so that when
real answers from a tenant show otherwise there is one place to correct.
"""

from __future__ import annotations

import json
from typing import Any

# engage-api.md §2.4: the error body is not documented. Look for the error token under these
# members, in this order (our simulator's shape, common API shapes, ASP.NET's {"Message": …}
# and RFC 7807 ProblemDetails), then in the raw text. The status code always decides first.
ERROR_TOKEN_MEMBERS = ("errorCode", "code", "error", "message", "Message", "title", "type",
                       "detail")  # fmt: skip

# engage-api.md §2.4/§1.2: 409 bodies carry `messageDetails`; for 422 we assume per-field detail
# may sit in `messageDetails` as {"field": "text"} or [{"field": ..., "message": ...}], or in a
# top-level `errors` member (ProblemDetails: {"field": ["text", ...]}). None of this is
# documented; any other shape gives no field detail.
FIELD_DETAIL_MEMBERS = ("messageDetails", "errors", "fieldErrors")

# engage-api.md §12.4: the status for a bad API key is not documented; 401 and 403 are assumed.
# A 403 can also mean this server's address is not on the key's allow list (§6).
AUTH_STATUSES = (401, 403)

# Tokens that mean the deployment or the tenant is set up wrong, never the customer's input
# (engage-api.md §1.2, §2.4): the contact type does not exist, the query we built is not one
# Engage takes (e.g. customKey on a tenant without one), the create body was empty or
# unreadable, the tenant's own configuration is broken. The person sees "unavailable";
# operations get an ERROR line naming the setting (webapp/signup/flow.py: SETTING_TO_CHECK).
MISCONFIGURATION_TOKENS = frozenset(
    {"InvalidContactType", "InvalidSearchQuery", "NoData", "InvalidSystemConfiguration"}
)

# engage-api.md §1.1: find-contact has no externalId parameter; an external id is looked up
# through `customKey`, which finds by externalId only on a tenant whose custom key is externalId
# (the other choice is memberNumber). ENGAGE_CUSTOM_KEY says which; start-up refuses
# CONTACT_KEY=externalId unless it is externalId.
FIND_PARAMETER_FOR_KEY = {
    "email": "email",
    "mobilePhone": "mobilePhone",
    "socialSecurityNumber": "socialSecurityNumber",
    "externalId": "customKey",
}

# engage-api.md §1.1: `contactType` is optional on find in v3. Not settled by the docs: whether
# a create with a key that a contact of another type already has is refused (409) or makes a
# second contact for the same person. The safer default (FIND_CONTACT_TYPE=any) searches every
# type, so such a person is found and never created again; "same" searches CONTACT_TYPE only.

# engage-api.md §4: only GET /api/v2/consents is documented; v3 is inferred. Tried in order,
# the first that answers is kept.
CONSENTS_PATHS = ("/api/v3/consents", "/api/v2/consents")

# engage-api.md §7: a lookup changes nothing and may be sent once more, later rather than
# sooner (ENGAGE_RETRY_SECONDS), after one of these gateway answers or a refused connection.
# A read timeout is not resent: the person has already waited ENGAGE_READ_TIMEOUT.
LOOKUP_RESEND_STATUSES = (502, 503, 504)

# engage-api.md §8: the personal numbers in Voyado's own examples (196903027573, 198506059738)
# fail the Luhn check. We send only numbers that pass it (webapp/signup/forms.py
# personal_number), on the assumption that Engage checks it (find documents
# InvalidSocialSecurityNumber).

# Not documented: a 400 on find without one of the documented tokens. Treated as the value
# being refused (the person can check it), with a WARNING line from the client.

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
    "InvalidSystemConfiguration",
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
            return {
                str(k): "; ".join(map(str, v)) if isinstance(v, list) else str(v)
                for k, v in detail.items()
                if isinstance(k, str) and v
            }
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
