"""The Engage client: the only code that speaks HTTP to Voyado Engage.

One `EngageClient` per app. Each worker thread gets its own pooled `requests.Session`
(a Session is not documented as thread-safe), so connections to Engage stay warm across
requests instead of paying a TLS handshake per call.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NameResolutionError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from . import assumptions
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

log = logging.getLogger(__name__)


class _RedactQueryStrings(logging.Filter):
    """urllib3 logs request URLs (retries, debug lines); a query string holds email or phone."""

    _QUERY = re.compile(r"\?[^\s\"']*")

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._QUERY.sub("?[redacted]", record.getMessage())
        record.args = ()
        return True


for _name in (
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.util.retry",
    "urllib3.poolmanager",
):
    logging.getLogger(_name).addFilter(_RedactQueryStrings())

CONTACTS_PATH = "/api/v3/contacts"
FIND_PATH = "/api/v3/contacts/id"
STORES_PATH = "/api/v3/stores"
PASS_URLS_PATH = "/api/v3/wallet/pass/urls"
# A wallet link is asked for on the result page, after the sign-up has its outcome: a short
# wait, then the page goes on without the card.
WALLET_TIMEOUT = 2.0


class EngageClient:
    """Calls Engage. Every failure is raised as a subclass of `EngageError`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        user_agent: str,
        connect_timeout: float = 3.05,
        read_timeout: float = 5.0,
        create_timeout: float = 15.0,
        retry_seconds: float = 1.0,
        pool_size: int = 16,
        # (method, path, HTTP status or None, Engage's error token or None, seconds)
        observer: Callable[[str, str, int | None, str | None, float], None] | None = None,
        log_context: Callable[[], str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.user_agent = user_agent
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.create_timeout = create_timeout
        self.retry_seconds = retry_seconds  # wait before the one resend of a lookup
        self.sleep = sleep
        self.pool_size = pool_size
        self._consents_path: str | None = None  # the one of CONSENTS_PATHS this tenant answers
        self.observer = observer
        self.log_context = log_context  # e.g. "store=101 request_id=…" for each log line
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    def __repr__(self) -> str:  # the key stays out of every repr and log line
        return f"EngageClient({self.base_url!r})"

    # --- public operations ---------------------------------------------------------------------
    def find_contact_id(self, *, key: str, value: str, contact_type: str | None) -> str | None:
        """The contact id of the one contact whose `key` is `value`, or None when nobody has it.
        With `contact_type` None, contacts of every type are searched (the parameter is
        optional in v3, engage-api.md §1.1).

        Raises MultipleMatches (409), EngageRejected (400 about the value),
        EngageMisconfigured (400 about the query or contact type), EngageUnavailable.
        """
        params = {assumptions.FIND_PARAMETER_FOR_KEY[key]: value}
        if contact_type is not None:
            params["contactType"] = contact_type
        response = self._request(
            "GET", FIND_PATH, params=params, timeout=self.read_timeout, accept=(404,)
        )
        if response.status_code == 404:
            return None
        contact_id = assumptions.contact_id_from_find(response.text)
        if not contact_id:  # a 200 that names nobody is no "not found": never create on it
            raise EngageServerError("find answered without an id", status_code=200,
                                    code="EmptyAnswer")  # fmt: skip
        return contact_id

    def create_contact(
        self,
        contact: dict[str, Any],
        *,
        source: str,
        store_external_id: str,
        create_as_unapproved: bool = False,
    ) -> dict[str, Any]:
        """Create a contact; returns Engage's 201 body (id, attributes, meta, ...).

        Raises ContactExists / ContactBeingCreated (409), EngageRejected (400/422),
        EngageTimeout (Engage's own 504: nothing created), OutcomeUnknown (may have been
        created: look the person up before doing anything else), EngageUnavailable.
        Never retried after the request was sent (Engage's retry policy, engage-api.md §7).
        """
        params = {"source": source, "storeExternalId": store_external_id}
        if create_as_unapproved:
            params["createAsUnapproved"] = "true"
        response = self._request(
            "POST", CONTACTS_PATH, params=params, json=contact, timeout=self.create_timeout
        )
        body = assumptions.parse_body(response.text)
        return body if isinstance(body, dict) else {}

    def get_contact(self, contact_id: str) -> dict[str, Any]:
        """One contact (GET /api/v3/contacts/{id}): id, attributes, meta, preferences, consents."""
        response = self._request(
            "GET", f"{CONTACTS_PATH}/{quote(contact_id, safe='')}", timeout=self.read_timeout
        )
        body = assumptions.parse_body(response.text)
        return body if isinstance(body, dict) else {}

    def update_contact(self, contact_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        """Change what `changes` names on one contact (PATCH /api/v3/contacts/{id}, engage-api.md
        §15): only attributes that change, since any value sent overwrites what Engage holds and
        an empty one empties it. So an empty or null value is refused here, before it can leave.
        Returns Engage's answer (the contact), or {} when it sends none.

        Raises ContactNotFound (gone since it was found), EngageRejected (a value refused),
        EngageUnavailable; a timeout or a dropped connection as OutcomeUnknown: sending the same
        changes again is harmless (they set, never add), so a later replay may.
        """
        empty = sorted(name for name, value in changes.items() if value in (None, "", [], {}))
        if not changes or empty:
            raise ValueError(f"no PATCH with nothing or an empty value in it: {empty}")
        response = self._request(
            "PATCH", f"{CONTACTS_PATH}/{quote(contact_id, safe='')}", json=changes,
            timeout=self.read_timeout,
        )  # fmt: skip
        body = assumptions.parse_body(response.text)
        return body if isinstance(body, dict) else {}

    def update_contact_type(self, contact_id: str, contact_type: str) -> None:
        """Make one contact of `contact_type` (POST /api/v3/contacts/{id}/updateContactType
        ?contactTypeId=…): v3's only way to change a contact's type (engage-api.md §3, §15; a
        PATCH cannot). Raises as update_contact does."""
        self._request(
            "POST", f"{CONTACTS_PATH}/{quote(contact_id, safe='')}/updateContactType",
            params={"contactTypeId": contact_type}, timeout=self.read_timeout,
        )  # fmt: skip

    def get_stores(self) -> list[dict[str, Any]]:
        """Engage's active stores (GET /api/v3/stores)."""
        response = self._request("GET", STORES_PATH, timeout=self.read_timeout)
        body = assumptions.parse_body(response.text)
        return [s for s in body if isinstance(s, dict)] if isinstance(body, list) else []

    def pass_url(self, card_id: str, contact_id: str) -> str | None:
        """The link that adds `contact_id`'s membership card to a phone's wallet (POST
        /api/v3/wallet/pass/urls, engage-api.md §13), or None when Engage's answer names no
        web link (https, or http as the training simulator's) for that contact. Raises
        EngageError (its own timeout is WALLET_TIMEOUT; never resent: nobody waits for a
        second try). The link is a key to the member's card:
        it is returned, never logged."""
        response = self._call(
            "POST", PASS_URLS_PATH, json={"cardId": card_id, "contactIds": [contact_id]},
            timeout=WALLET_TIMEOUT, words=wallet_words,
        )  # fmt: skip
        body = assumptions.parse_body(response.text)
        link = body.get(contact_id) if isinstance(body, dict) else None
        if isinstance(link, str) and link.startswith(("https://", "http://")) and len(link) < 2000:
            return link
        return None

    def get_consents(self) -> list[dict[str, Any]]:
        """The tenant's consent definitions: v3 first, then the documented v2 path."""
        paths = [self._consents_path] if self._consents_path else assumptions.CONSENTS_PATHS
        for path in paths:
            try:
                response = self._request("GET", path, timeout=self.read_timeout)
            except EngageError as exc:
                if exc.status_code in (404, 405) and path != paths[-1]:
                    continue  # this tenant has no such path: the next one
                raise
            self._consents_path = path
            body = assumptions.parse_body(response.text)
            return [c for c in body if isinstance(c, dict)] if isinstance(body, list) else []
        return []  # pragma: no cover - the loop returns or raises

    def close(self) -> None:
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    # --- plumbing ---------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            # Read proxy and CA settings from the environment once, not on every call (requests
            # scans all of os.environ per request when trust_env is on). With trust_env off,
            # `verify` is also honoured as set (REQUESTS_CA_BUNDLE would otherwise override it).
            session.trust_env = False
            session.proxies = requests.utils.get_environ_proxies(self.base_url)
            session.verify = (
                os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            )
            session.headers.update(
                {
                    "apikey": self._api_key,
                    "User-Agent": self.user_agent,
                    # Engage answers 500 to any request, GET included, without this header.
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                }
            )
            # No retries down here: _request() decides (one lookup resend, later rather than
            # sooner; a create never re-sent once it may have left). read=False: a read
            # timeout arrives as itself, not wrapped in a retry error.
            retry = Retry(total=0, read=False, redirect=False, raise_on_status=False)
            adapter = HTTPAdapter(
                pool_connections=1, pool_maxsize=self.pool_size, max_retries=retry
            )
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def _request(
        self, method: str, path: str, *, timeout: float, accept: tuple[int, ...] = (), **kwargs
    ) -> requests.Response:
        """One call, and at most one resend: a lookup after a gateway error or a refused
        connection, a create only when its connection failed before anything was sent. The
        resend waits `retry_seconds` (Voyado's retry policy: later rather than sooner)."""
        try:
            return self._call(method, path, timeout=timeout, accept=accept, **kwargs)
        except EngageError as exc:
            if not _worth_one_resend(method, exc):
                raise
        self.sleep(self.retry_seconds)
        return self._call(method, path, timeout=timeout, accept=accept, **kwargs)

    def _call(
        self, method: str, path: str, *, timeout: float, accept: tuple[int, ...] = (),
        words=None, **kwargs,
    ) -> requests.Response:  # fmt: skip
        """One call, and its log line. `words` names a failure in the call's own terms (a
        wallet call that timed out is no create whose outcome is unknown)."""
        started = time.perf_counter()
        status: int | None = None
        error: EngageError | None = None
        try:
            response = self._send(method, path, timeout=timeout, **kwargs)
            status = response.status_code
            if status >= 300 and status not in accept:
                raise error_for(method, response)
            return response
        except EngageError as exc:
            error = exc
            raise
        finally:
            elapsed = time.perf_counter() - started
            # One line per call; never the query string (personal data), body or headers (key).
            log.log(
                logging.WARNING if error else logging.INFO,
                "engage call method=%s path=%s status=%s ms=%.1f outcome=%s %s",
                method, path, status if status is not None else "-", elapsed * 1000,
                (words or _class_name)(error) if error else "ok",
                self.log_context() if self.log_context else "",
            )  # fmt: skip
            if self.observer is not None:
                self.observer(method, path, status, error.code if error else None, elapsed)

    def _send(self, method: str, path: str, *, timeout: float, **kwargs) -> requests.Response:
        """Send one request; transport failures become EngageError subclasses."""
        try:
            return self._session().request(
                method,
                self.base_url + path,
                timeout=(self.connect_timeout, timeout),
                allow_redirects=False,
                **kwargs,
            )
        except requests.exceptions.ConnectTimeout as exc:
            raise EngageUnavailable("connect timeout", code="NotSent") from exc
        except requests.exceptions.ReadTimeout as exc:
            if method == "GET":
                raise EngageTimeout("read timeout") from exc
            raise OutcomeUnknown("read timeout", timed_out=True) from exc
        except requests.exceptions.ConnectionError as exc:
            if _read_timed_out(exc):  # a lookup's read timeouts, after urllib3's retry
                raise EngageTimeout("read timeout") from exc
            if _not_sent(exc):
                raise EngageUnavailable("connection failed", code="NotSent") from exc
            if method == "GET":
                raise EngageUnavailable("connection dropped") from exc
            raise OutcomeUnknown("connection dropped") from exc
        except requests.exceptions.RequestException as exc:
            raise EngageUnavailable("request failed") from exc


def _class_name(exc: EngageError) -> str:
    return exc.__class__.__name__


def wallet_words(exc: EngageError) -> str:
    """What went wrong with a wallet link, in the wallet's own words: the card's id unknown to
    Engage, the API key not allowed it, Engage busy, no answer in time, no connection, or an
    error of Engage's. None of them touches the sign-up."""
    status = exc.status_code
    if status is None:
        timed_out = getattr(exc, "timed_out", False) or isinstance(exc, EngageTimeout)
        return "WalletNoAnswerInTime" if timed_out else "WalletUnreachable"
    if status in (400, 404):
        return "WalletCardUnknown"
    if status in assumptions.AUTH_STATUSES:
        return "WalletNotAllowed"
    if status == 429:
        return "WalletBusy"
    return f"WalletError{status}" if status >= 500 else "WalletRefused"


def _worth_one_resend(method: str, exc: EngageError) -> bool:
    """Nothing reached Engage (any method), or a lookup met a gateway error."""
    if exc.code == "NotSent":
        return True
    return method == "GET" and exc.status_code in assumptions.LOOKUP_RESEND_STATUSES


def _read_timed_out(exc: requests.exceptions.ConnectionError) -> bool:
    """True when retries ran out on read timeouts: requests then raises ConnectionError
    wrapping urllib3's MaxRetryError(ReadTimeoutError), not ReadTimeout."""
    reason = exc.args[0] if exc.args else None
    return isinstance(getattr(reason, "reason", None), ReadTimeoutError)


def _not_sent(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the connection failed before the request left (refused, DNS, TLS handshake)."""
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # MaxRetryError wraps the real cause
    return isinstance(reason, NewConnectionError | NameResolutionError) or isinstance(
        exc, requests.exceptions.SSLError
    )


def error_for(method: str, response: requests.Response) -> EngageError:
    """Map a non-2xx answer to an exception: status first, then the token; any body is fine.

    What a customer can correct (a value Engage refused) is EngageRejected; what only the
    deployment or the tenant can correct is EngageMisconfigured (assumptions.py lists which)."""
    status = response.status_code
    text = response.text if response.content else ""
    body = assumptions.parse_body(text)
    token = assumptions.error_token(body, text)
    kwargs = {"status_code": status, "code": token}
    if token in assumptions.MISCONFIGURATION_TOKENS:
        return EngageMisconfigured(**kwargs)
    if status == 409:
        if token == "ContactWithKeyIsBeingCreated":
            return ContactBeingCreated(**kwargs)
        if method == "GET" or token == "MultipleMatches":
            exc = MultipleMatches(**kwargs)
            exc.contact_ids = assumptions.multiple_match_ids(body)
            return exc
        # ApprovedContactWithKeyExists, or a 409 on create whose body we could not read: the
        # key is taken either way.
        return ContactExists(**kwargs)
    if status == 429:
        return RateLimited(**kwargs)
    if status in assumptions.AUTH_STATUSES:
        return NotAuthorised(**kwargs)
    if status == 404 and token != "ContactNotFound":  # a path the tenant does not have
        return EngageMisconfigured(**kwargs)
    if status == 404:
        return ContactNotFound(**kwargs)
    if status in (400, 422):
        return EngageRejected(field_errors=assumptions.field_errors(body), **kwargs)
    if status >= 500:
        if status == 504 and token == "RequestTimeOut":
            return EngageTimeout(**kwargs)  # Engage's own: nothing created, rolled back
        if method == "POST":
            # A 5xx on create that is not Engage's documented 504 (a gateway, a crash after
            # commit) leaves it open whether the contact exists.
            return OutcomeUnknown(timed_out=status == 504, **kwargs)
        if status == 504:
            return EngageTimeout(**kwargs)
        return EngageServerError(**kwargs)
    # 3xx and other 4xx: nothing we can act on; treat as Engage being unavailable to us.
    return EngageUnavailable(**kwargs)
