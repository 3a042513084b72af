"""Consent records that stand up to an audit: what each person was shown, when, where, and
what they chose (GDPR Art. 7(1): the retailer must be able to demonstrate consent).

Each text shown beside a consent or preference checkbox (its label, its terms link or the terms
themselves, in the language shown, from CONSENTS or from Engage) is stored once, keyed by the
hash of what was shown. Each decision of each sign-up is a record: ticked or left unticked, the
text's hash, language, where the text came from, store, device, mode, server time (UTC), app
version and the submission token. No name, email or phone: the sign-up's way to Engage is
appended beside it (sent, with Engage's contact id; kept in the outbox, with its reference; not
sent), and the contact id links to the person in Engage. The consent `comment` sent to Engage
carries the text's short hash, so a consent in Engage leads back to the exact words.

A withdrawal of consent is Engage's record, not ours: Engage holds each consent's current
value; these records show what was shown and chosen at sign-up.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import io
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any

import click
from flask import current_app
from flask.cli import with_appcontext

from ..ops import metrics

log = logging.getLogger(__name__)

TEXT_FORMAT = 1  # how a shown text is written down for its hash; a new format, a new number
SHORT_HASH = 12  # the part of the hash that travels in Engage's consent comment
PREFERENCES = ("acceptsEmail", "acceptsSms", "acceptsPostal")


@dataclass(frozen=True)
class Shown:
    """One checkbox as the person saw it, and what they did with it."""

    kind: str  # "consent" or "preference"
    item: str  # the consent id, or the preference's attribute name
    given: bool  # ticked (True) or left unticked
    language: str
    source: str  # where the words came from: config, engage, config+engage, app
    body: dict[str, Any] = field(hash=False)  # the words: label, terms link or terms, context

    @functools.cached_property
    def _written(self) -> tuple[str, str]:
        return _written(self.kind, self.item, self.language, tuple(sorted(self.body.items())))

    @property
    def hash(self) -> str:
        return self._written[0]

    @property
    def body_json(self) -> str:
        """The words as they are stored beside the hash."""
        return self._written[1]


@functools.lru_cache(maxsize=512)
def _written(kind: str, item: str, language: str, body: tuple) -> tuple[str, str]:
    """A shown text's hash and its words as stored. Made once per distinct text, not for each
    sign-up: the key is the text itself, so a changed text is a new entry and there is nothing
    to invalidate (512 holds every consent and preference in every language several times)."""
    words = dict(body)
    canonical = json.dumps(
        {"format": TEXT_FORMAT, "kind": kind, "item": item, "language": language, "body": words},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )  # fmt: skip
    stored = json.dumps(words, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest(), stored


def shown_on(form, language: str, consent_texts: dict[str, dict], context: str) -> list[Shown]:
    """What the form showed beside each checkbox, and whether the person ticked it: the same
    texts the page was rendered with (consents.consent_texts for this language; `context`, the
    words above the preferences)."""
    shown = []
    for field_ in form.consent_fields():
        text = consent_texts[field_.name]
        body = {"label": str(text["label"])}
        if text.get("url"):
            body["terms_url"] = text["url"]
        if text.get("terms"):
            body["terms"] = str(text["terms"])
        if text.get("link_text"):
            body["terms_link_text"] = str(text["link_text"])
        shown.append(
            Shown(
                "consent",
                field_.name.removeprefix("consent-"),
                bool(field_.data),
                language,
                text.get("source", "config"),
                body,
            )  # fmt: skip
        )
    for name in PREFERENCES:
        if name in form:
            body = {"label": str(form[name].label.text), "context": context}
            shown.append(Shown("preference", name, bool(form[name].data), language, "app", body))
    return shown


def comment(channel: str, text_hash: str, version: str) -> str:
    """The consent comment sent to Engage: how it was given, and which words were shown."""
    return (
        f"Given on the engage-signup form ({channel}); text {text_hash[:SHORT_HASH]}; "
        f"engage-signup {version}"
    )


class ConsentRecords:
    def __init__(self, store, *, version: str, days: int):
        self.store = store
        self.version = version
        self.days = days

    def record(self, submission: str, shown: list[Shown], *, store: str, device, mode) -> None:
        """Write the texts (once each) and one record per decision. Raises StateUnavailable."""
        at = self.store.clock()
        texts = [
            {"hash": s.hash, "kind": s.kind, "item": s.item, "language": s.language,
             "source": s.source, "body": s.body_json, "at": at}
            for s in shown
        ]  # fmt: skip
        records = [
            {"id": secrets.token_hex(12), "at": at, "submission": submission, "kind": s.kind,
             "item": s.item, "given": int(s.given), "text_hash": s.hash, "language": s.language,
             "source": s.source, "store": store, "device": device or "-", "mode": mode,
             "app_version": self.version}
            for s in shown
        ]  # fmt: skip
        self.store.consent_record(texts, records)
        metrics.consent_records(len(records))

    def delivered(
        self,
        submission: str,
        state: str,
        *,
        contact_id: str | None = None,
        outbox_ref: str | None = None,
    ) -> None:
        """Append a step of the sign-up's way to Engage: sent, already-member, kept, not-sent,
        needs-attention, discarded, expired."""
        self.store.consent_delivery(
            self.delivery(submission, state, contact_id=contact_id, outbox_ref=outbox_ref)
        )

    def delivery(
        self,
        submission: str,
        state: str,
        *,
        contact_id: str | None = None,
        outbox_ref: str | None = None,
    ) -> dict[str, Any]:
        """A step of the way as a row, for a store write that appends it with others."""
        return {"submission": submission, "at": self.store.clock(), "state": state,
                "contact_id": contact_id, "outbox_ref": outbox_ref}  # fmt: skip

    def export(
        self,
        *,
        contact_id: str | None = None,
        store: str | None = None,
        start: dt.date | None = None,
        end: dt.date | None = None,
    ) -> list[dict[str, Any]]:
        """The records (with the full text each points to and where the sign-up went) of one
        contact, or of a store between two dates (UTC, `end` included)."""
        if start and end and start > end:
            raise ExportDates("the first day comes after the last")
        try:
            since = _epoch(start) if start else None
            until = _epoch(end + dt.timedelta(days=1)) if end else None
        except OverflowError:
            raise ExportDates("a day outside the calendar this export can count") from None
        submissions = self.store.consent_submissions_of(contact_id) if contact_id else None
        records = self.store.consent_records(
            submissions=submissions, store=store, since=since, until=until
        )
        deliveries = self.store.consent_deliveries(sorted({r["submission"] for r in records}))
        last: dict[str, dict] = {}
        contacts: dict[str, str] = {}
        for delivery in deliveries:  # oldest first: the last one wins
            last[delivery["submission"]] = delivery
            if delivery["contact_id"]:
                contacts[delivery["submission"]] = delivery["contact_id"]
        rows = []
        for record in records:
            delivery = last.get(record["submission"], {})
            body = json.loads(record["body"])
            rows.append(
                {
                    "record": record["id"],
                    "at_utc": _iso(record["at"]),
                    "submission": record["submission"],
                    "kind": record["kind"],
                    "item": record["item"],
                    "given": bool(record["given"]),
                    "language": record["language"],
                    "text_source": record["source"],
                    "text_hash": record["text_hash"],
                    "text_label": body.get("label", ""),
                    "text_terms_url": body.get("terms_url", ""),
                    "text_terms_link": body.get("terms_link_text", ""),
                    "text_terms": body.get("terms", ""),
                    "text_context": body.get("context", ""),
                    "store": record["store"],
                    "device": record["device"],
                    "mode": record["mode"],
                    "app_version": record["app_version"],
                    "delivery": delivery.get("state", "pending"),
                    "delivered_at_utc": _iso(delivery["at"]) if delivery else "",
                    "contact_id": contacts.get(record["submission"], ""),
                    "outbox_ref": delivery.get("outbox_ref") or "",
                }
            )
        return rows

    def expire(self) -> int:
        count = self.store.consent_expire(self.store.clock() - self.days * 86400)
        if count:
            log.info("consent records: %d older than %d days deleted", count, self.days)
        return count


FIELDS = (
    "record", "at_utc", "submission", "kind", "item", "given", "language", "text_source",
    "text_hash", "text_label", "text_terms_url", "text_terms_link", "text_terms", "text_context",
    "store", "device",
    "mode", "app_version", "delivery", "delivered_at_utc", "contact_id", "outbox_ref",
)  # fmt: skip


class ExportDates(ValueError):
    """The dates asked for cannot make an export (the message says why, without a value)."""


# A cell a spreadsheet would read as a formula (OWASP's CSV injection rule): =, +, -, @, a tab
# or a carriage return first. Such a cell is written with a ' in front, which the spreadsheet
# shows as text; a reader of the CSV itself sees the ' and knows why.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def as_csv(rows: list[dict[str, Any]], *, delimiter: str = ",", bom: bool = False) -> str:
    """RFC 4180 CSV; `bom`: a UTF-8 byte order mark first, by which Excel knows the encoding
    (without it Nordic letters come out wrong); `delimiter` ";" for Excel set to a Nordic
    locale, which takes "," as the decimal comma."""
    out = io.StringIO()
    if bom:
        out.write("\ufeff")
    names = FIELDS + (("at_local",) if rows and "at_local" in rows[0] else ())
    writer = csv.DictWriter(out, fieldnames=names, lineterminator="\r\n", delimiter=delimiter)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def as_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps(rows, indent=2, ensure_ascii=False)


def _epoch(day: dt.date) -> float:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()


def _iso(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


# --- flask --app webapp consents … ----------------------------------------------------------------
@click.group("consents", help="Consent records, for an auditor.")
def cli() -> None:
    pass


@cli.command("export", help="Export records by contact id, or by store and dates, as CSV or JSON.")
@click.option("--contact", help="Engage's contact id")
@click.option("--store", help="the store's externalId")
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), help="first day (UTC)")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), help="last day (UTC)")
@click.option("--format", "kind", type=click.Choice(["csv", "json"]), default="csv")
@with_appcontext
def export(contact, store, start, end, kind) -> None:
    if not contact and not store:
        raise click.ClickException("name a --contact, or a --store (with --from and --to)")
    try:
        rows = current_app.extensions["consent_records"].export(
            contact_id=contact,
            store=store,
            start=start.date() if start else None,
            end=end.date() if end else None,
        )
    except ExportDates as exc:
        raise click.BadParameter(str(exc), param_hint="'--from' / '--to'") from None
    log.info("consent records exported on the command line: %d rows", len(rows))
    click.echo(as_json(rows) if kind == "json" else as_csv(rows), nl=False)


@cli.command("expire", help="Delete records older than CONSENT_RECORD_DAYS now.")
@with_appcontext
def expire() -> None:
    click.echo(f"{current_app.extensions['consent_records'].expire()} record(s) deleted")
