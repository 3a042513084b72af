"""The outbox: sign-ups kept while Engage cannot take them, and sent later, find first.

When a live sign-up that passed our own checks ends in `timeout` or `unavailable` (Engage slow,
down, rate-limiting, refusing the deployment's settings, or the breaker open), it is kept here
and the person is told it will be completed (`queued`). The person's details are stored only as
ciphertext (MultiFernet under OUTBOX_KEYS, newest key first); the columns in clear say where and
when it came from, how often it was tried and what Engage last said.

A thread in each app process replays due items: it claims one with a lease (exactly one worker
on any machine works on it), runs the same flow as the live path (find; create only if nobody
is found; any doubt looked up again before anything else), and then:
- created or found: the item is deleted at once (the contact is in Engage); a staff tablet's
  sign-up for someone found reads them again and sends only what is still needed (made a
  member, what they lack added: webapp/signup/flow.py `complete`), never twice;
- Engage refused it clearly (422, several matches, a misconfiguration): kept for a person
  (`attention`), for the manager's view or `flask outbox retry|discard`;
- anything else: tried again later, on Voyado's retry policy's schedule (later, not sooner),
  with the breaker respected and a shared cap on replays per second.
Items older than OUTBOX_DAYS are deleted, counted and logged (no personal data).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import threading
import time
from dataclasses import asdict
from typing import Any

import click
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import Flask, current_app
from flask.cli import with_appcontext

from ..ops import metrics
from ..store import UNOPENED, StateUnavailable
from . import flow

log = logging.getLogger(__name__)

# Live outcomes that are kept: nothing reached a result, and the person did nothing wrong.
# Not kept: a fault of the state database itself (the outbox lives there), and a duplicate
# POST whose first request is still running (that one is kept, or not, on its own).
KEPT_OUTCOMES = (flow.TIMEOUT, flow.UNAVAILABLE)
NOT_KEPT_CAUSES = ("StateUnavailable", "DuplicateStillRunning")
# Replayed outcomes that no retry changes: a person must correct or discard the item.
NEEDS_A_PERSON = (flow.AMBIGUOUS, flow.REJECTED)
# Seconds before the next try, after the 1st, 2nd, ... failed one (Voyado's retry policy:
# "10 s, 30 s, 60 s, 300 s…" for background jobs); the last one repeats.
BACKOFF = (10, 30, 60, 300, 900, 1800, 3600)
IN_PROGRESS_RETRY = 10  # another create of this person is running: look again soon
# An item this machine's keys cannot open is left for a machine whose keys can: it is due again
# after this many seconds (for whichever machine claims it), and this machine says so.
UNOPENED_RETRY = 60
KEY_SAMPLE = 20  # kept items tried at start-up and by /readyz: do these keys open any?
# Longer than a replay can take (find, create, settle, find at the longest timeouts), so a
# lease never runs out under a worker that is still working on its item.
LEASE_SECONDS = 120
IDLE_SECONDS = 2.0  # how often an idle worker looks for due items
EXPIRE_EVERY = 60.0  # seconds between expiry runs in each worker
REPLAY_THREADS = 3  # per process: each replay waits on Engage for about two round trips


def reference(item_id: str) -> str:
    """The short reference a cashier reads out: XXXXX-XXXXX."""
    return f"{item_id[:5]}-{item_id[5:10]}"


def parse_keys(value: Any) -> tuple[str, ...]:
    """OUTBOX_KEYS: Fernet keys, comma-separated, the newest first."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    keys = tuple(k.strip() for k in items if k.strip())
    for n, key in enumerate(keys, 1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ValueError(
                f"key {n} is not a Fernet key (44 characters of url-safe base64); make one with "
                'python3 -c "from cryptography.fernet import Fernet; '
                'print(Fernet.generate_key().decode())"'
            ) from None
    return keys


class Outbox:
    def __init__(self, store, keys: tuple[str, ...], *, days: int, records=None):
        self.store = store
        self.days = days
        self.records = records  # consent records: each kept sign-up's way is appended there
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    # --- keeping ------------------------------------------------------------------------------
    def keep(
        self,
        signup: flow.Signup,
        *,
        device_id: str,
        mode: str,
        submission: str | None = None,
        matches: tuple[str, ...] = (),
    ) -> str:
        """Keep a sign-up for later; returns its reference. Raises StateUnavailable. With
        `matches` (the contacts that share its key) it waits for a person instead: the store
        manager has them merged in Engage, then sends it again."""
        item_id = base64.b32encode(secrets.token_bytes(10)).decode()[:10]
        now = self.store.clock()
        self.store.outbox_add(
            {
                "id": item_id,
                "store": signup.store_external_id,
                "device": device_id or "-",
                "mode": mode,
                "created": now,
                "next_attempt": now + BACKOFF[0],
                "payload": self.seal(signup, matches=matches),
                "submission": submission,
                "state": "attention" if matches else "waiting",
                "last_error": "MultipleMatches" if matches else None,
            }
        )
        return reference(item_id)

    def _delivered(self, item: dict, state: str, contact_id: str | None = None) -> None:
        if self.records is not None and item.get("submission"):
            try:
                self.records.delivered(
                    item["submission"], state, contact_id=contact_id,
                    outbox_ref=reference(item["id"]),
                )  # fmt: skip
            except StateUnavailable as exc:
                log.error("consent records: state database unavailable: %s", exc)

    def seal(self, signup: flow.Signup, *, matches: tuple[str, ...] = ()) -> str:
        values = asdict(signup)
        values["form_fields"] = sorted(values["form_fields"])
        if matches:  # Engage's contact ids to merge: personal enough to be sealed too
            values["_matches"] = list(matches)
        return self._fernet.encrypt(json.dumps(values).encode()).decode()

    def open(self, payload: str) -> flow.Signup:
        """The sign-up in `payload`. Raises InvalidToken when no key of OUTBOX_KEYS opens it."""
        values = json.loads(self._fernet.decrypt(payload.encode()))
        values.pop("_matches", None)
        values["form_fields"] = frozenset(values["form_fields"])
        for name in ("replace", "shown_given"):
            values[name] = tuple(values.get(name) or ())
        values["unticked_consents"] = tuple(tuple(c) for c in values.get("unticked_consents") or ())
        # A replay always finds first: what a look-up once found stands in for nothing later.
        values["found_nobody"] = False
        values["found_id"] = None
        return flow.Signup(**values)

    def matches(self, payload: str) -> list[str]:
        """The contacts to merge, for an item kept because several shared its key."""
        return list(json.loads(self._fernet.decrypt(payload.encode())).get("_matches") or [])

    def opens(self, payload: str) -> bool:
        try:
            self._fernet.decrypt(payload.encode())
        except InvalidToken:
            return False
        return True

    def key_check(self) -> tuple[int, int]:
        """(kept items tried, how many of them these keys open), over the newest KEY_SAMPLE: a
        machine whose OUTBOX_KEYS open none of them has keys that differ from the others'."""
        payloads = self.store.outbox_payloads(KEY_SAMPLE)
        return len(payloads), sum(1 for p in payloads if self.opens(p))

    # --- replaying ----------------------------------------------------------------------------
    def replay_one(self, app: Flask, *, sleep=time.sleep) -> str | None:
        """Claim one due item and send it as the live path would; returns what Engage said
        (an outcome name), or None when nothing was due."""
        claimed = self.store.outbox_claim(LEASE_SECONDS, 1)
        if not claimed:
            return None
        item = claimed[0]
        ref = reference(item["id"])
        try:
            signup = self.open(item["payload"])
        except InvalidToken:
            # This machine's keys are wrong, or the item's key was dropped before a rekey: it
            # is never given up here. Another machine, whose keys open it, sends it.
            log.error(
                "outbox item %s cannot be opened with this machine's OUTBOX_KEYS: left for a "
                "machine whose keys open it (check OUTBOX_KEYS is the same on every machine)",
                ref,
            )
            self.store.outbox_unopened(item["id"], self.store.clock() + UNOPENED_RETRY, UNOPENED)
            return "unopened"
        outcome = flow.register(
            app.extensions["engage"],
            signup,
            breaker=app.extensions["breaker"],
            settle_seconds=app.config["ENGAGE_SETTLE_SECONDS"],
            sleep=sleep,
        )
        said = outcome.cause or outcome.name
        metrics.replay(outcome.name)
        self.store.event(
            store=item["store"], device=item["device"], mode=item["mode"], outcome=outcome.name,
            cause=outcome.cause, replay=True,
        )  # fmt: skip
        if outcome.name in (flow.CREATED, flow.EXISTING, flow.PROMOTED, flow.UPDATED):
            self.store.outbox_done(item["id"])
            state = "already-member" if outcome.name == flow.EXISTING else "sent"
            self._delivered(item, state, outcome.contact_id)
            log.info(
                "outbox item %s sent: %s (store=%s attempts=%d)",
                ref, outcome.name, item["store"], item["attempts"],
            )  # fmt: skip
        elif outcome.name in NEEDS_A_PERSON or outcome.cause == "Misconfigured":
            if outcome.name == flow.REJECTED and outcome.fields:
                # Which fields Engage named, for the manager's correction form to mark.
                said = f"{said}:{','.join(outcome.fields)}"
            self.store.outbox_attention(item["id"], said)
            self._delivered(item, "needs-attention")
            log.warning("outbox item %s needs a person: %s (store=%s)", ref, said, item["store"])
        else:
            if outcome.name == flow.IN_PROGRESS:
                wait = IN_PROGRESS_RETRY
            elif outcome.cause == "CircuitOpen":  # Engage was not asked: after the cool-down
                wait = app.config["BREAKER_COOLDOWN"]
            else:
                wait = BACKOFF[min(item["attempts"], len(BACKOFF) - 1)]
            self.store.outbox_later(item["id"], self.store.clock() + wait, said)
            log.info("outbox item %s not sent yet: %s, next try in %.0f s", ref, said, wait)
        return outcome.name

    def expire(self) -> int:
        """Delete items older than OUTBOX_DAYS; one line per store, no personal data."""
        gone = self.store.outbox_expire(self.store.clock() - self.days * 86400)
        by_store: dict[str, int] = {}
        for item in gone:
            self._delivered(item, "expired")
            by_store[item["store"]] = by_store.get(item["store"], 0) + 1
        for store, count in sorted(by_store.items()):
            log.warning(
                "outbox: %d sign-ups of store %s expired after %d days unsent",
                count, store, self.days,
            )  # fmt: skip
        return len(gone)

    def rekey(self) -> int:
        """Encrypt every item under the newest key (after adding a key in front of
        OUTBOX_KEYS; the old one can then be dropped). Returns how many."""
        count = 0
        for item in self.store.outbox_items(payload=True):
            self.store.outbox_set_payload(
                item["id"], self._fernet.rotate(item["payload"].encode()).decode()
            )
            count += 1
        return count

    def find(self, ref: str, *, payload: bool = False) -> dict | None:
        """The item of a reference (XXXXX-XXXXX, as read out; its id without the dash)."""
        wanted = ref.replace("-", "").upper()
        if not wanted:
            return None
        items = self.store.outbox_items(wanted, payload=payload)
        return items[0] if items else None

    def discard(self, item: dict) -> None:
        """Delete an item: it will not be sent. Its consent records say so."""
        self.store.outbox_discard(item["id"])
        self._delivered(item, "discarded")


class Worker(threading.Thread):
    """Replays due items in the background of one app process, until stopped."""

    def __init__(self, app: Flask):
        super().__init__(name="engage-signup-outbox", daemon=True)
        self.app = app
        self.stopping = threading.Event()
        self.last_expiry = float("-inf")

    def run(self) -> None:
        while not self.stopping.is_set():
            self.stopping.wait(self.step())

    def step(self) -> float:
        """One round of the loop: expire when due, then claim and send one item unless the
        breaker is open or the deployment's cap is reached. Returns the seconds to wait."""
        outbox: Outbox = self.app.extensions["outbox"]
        state = self.app.extensions["state"]
        per_second = self.app.config["OUTBOX_REPLAY_PER_SECOND"]
        try:
            if time.monotonic() - self.last_expiry > EXPIRE_EVERY:
                outbox.expire()
                self.last_expiry = time.monotonic()
            # While the breaker is open Engage is left alone: nothing is claimed.
            if state.breaker_is_open(flow.Breaker.NAME):
                return 1.0
            # A shared cap over every worker on every machine: replays never crowd out live
            # sign-ups or approach Engage's rate limit.
            if not state.hits([("outbox-replay", per_second, 1.0)]):
                return 1.0 / per_second
            if outbox.replay_one(self.app, sleep=self.stopping.wait) is None:
                return IDLE_SECONDS
            return 0.0
        except StateUnavailable as exc:
            log.error("outbox: state database unavailable: %s", exc)
            return IDLE_SECONDS * 5
        except Exception:  # noqa: BLE001 - the worker must outlive one bad item
            log.exception("outbox: replay failed unexpectedly")
            return IDLE_SECONDS * 5

    def stop(self) -> None:
        self.stopping.set()


def start_worker(app: Flask, threads: int = REPLAY_THREADS) -> list[Worker]:
    """Start this process's replay threads (the production server does, in each worker). They
    share the deployment-wide cap, OUTBOX_REPLAY_PER_SECOND; several of them let a process
    keep up with it when each replay waits on Engage for two round trips."""
    if "outbox" not in app.extensions:
        return []
    workers = [Worker(app) for _ in range(threads)]
    app.extensions["outbox_workers"] = workers
    for worker in workers:
        worker.start()
    return workers


# --- operators: flask --app webapp outbox … -------------------------------------------------------
@click.group("outbox", help="The outbox of sign-ups waiting for Engage.")
def cli() -> None:
    pass


def _outbox() -> Outbox:
    outbox = current_app.extensions.get("outbox")
    if outbox is None:
        raise click.ClickException("the outbox is off: OUTBOX_KEYS is not set")
    return outbox


@cli.command("list", help="Every item, without personal data.")
@with_appcontext
def list_items() -> None:
    items = current_app.extensions["state"].outbox_items(payload=True)
    outbox = current_app.extensions.get("outbox")
    click.echo(f"{len(items)} item(s)")
    for item in items:
        unopened = outbox is None or not outbox.opens(item["payload"])
        kept = time.strftime("%Y-%m-%d %H:%M", time.gmtime(item["created"]))
        due = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(item["next_attempt"]))
        click.echo(
            f"{reference(item['id'])}  {item['state']:<9}  store {item['store']:<8} "
            f"{item['mode']:<5}  kept {kept} UTC  tries {item['attempts']}  next {due} UTC"
            f"  last {item['last_error'] or '-'}"
            + ("  (cannot be opened with these OUTBOX_KEYS)" if unopened else "")
        )


@cli.command("show", help="One item's details, personal data included (the access is logged).")
@click.argument("ref")
@with_appcontext
def show(ref: str) -> None:
    outbox = _outbox()
    item = outbox.find(ref, payload=True)
    if item is None:
        raise click.ClickException(f"no item {ref}")
    try:
        signup = outbox.open(item["payload"])
    except InvalidToken:
        raise click.ClickException(
            f"{reference(item['id'])} cannot be opened with this deployment's OUTBOX_KEYS: it was "
            "kept under a key that is not among them. Put that key back in OUTBOX_KEYS (after "
            "the newest) and run rekey, or give the sign-up up with: outbox discard "
            f"{reference(item['id'])}"
        ) from None
    log.warning("outbox item %s shown on the command line", reference(item["id"]))
    click.echo(json.dumps(signup.contact, indent=2, ensure_ascii=False))


@cli.command("retry", help="Send one item (or all with --all) at the next chance.")
@click.argument("ref", required=False)
@click.option("--all", "every", is_flag=True)
@with_appcontext
def retry(ref: str | None, every: bool) -> None:
    if not ref and not every:
        raise click.ClickException("name an item, or --all")
    state = current_app.extensions["state"]
    item = _outbox().find(ref) if ref else None
    if ref and item is None:
        raise click.ClickException(f"no item {ref}")
    count = state.outbox_retry(item["id"] if item else None)
    click.echo(f"{count} item(s) will be sent at the next chance")


@cli.command("discard", help="Delete one item: it will not be sent.")
@click.argument("ref")
@with_appcontext
def discard(ref: str) -> None:
    item = _outbox().find(ref)
    if item is None:
        raise click.ClickException(f"no item {ref}")
    _outbox().discard(item)
    log.warning("outbox item %s discarded on the command line", reference(item["id"]))
    click.echo(f"{reference(item['id'])} discarded")


@cli.command("rekey", help="Encrypt every item under the first key of OUTBOX_KEYS.")
@with_appcontext
def rekey() -> None:
    click.echo(f"{_outbox().rekey()} item(s) encrypted under the newest key")
