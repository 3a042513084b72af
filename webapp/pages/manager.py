"""/manager/: the store manager's view. Today's and the last 30 days' sign-ups per store and
device, what needs a person (outbox items Engage refused), the queue, and the consent export.

Managers sign in with a PIN of their own (MANAGER_PINS: name@store:pin), never the staff PIN,
under the same lockout rules as /setup/ (per device, per address, and a cap for the whole
deployment), for a short session. A manager of one store sees that store only; `*` sees all.
Personal data appears only on the page that an explicit "Show details" (a POST) opens, for one
item, and that access is logged (who, when, which item; never the details). No personal data in
URLs or logs; every page is `no-store`. It reads the shared state only: no page load calls
Engage.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import time
import zoneinfo
from collections import Counter, defaultdict

from cryptography.fernet import InvalidToken
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_wtf import FlaskForm
from markupsafe import Markup, escape
from werkzeug.datastructures import MultiDict
from wtforms import PasswordField
from wtforms.validators import DataRequired

from ..access import pins, signed
from ..i18n import countries, current_language, ngettext
from ..i18n import gettext as _
from ..i18n import lazy_gettext as _l
from ..ops import web
from ..signup import consent_records, flow
from ..signup.outbox import UNOPENED, reference
from ..store import StateUnavailable

log = logging.getLogger(__name__)
bp = Blueprint("manager", __name__, url_prefix="/manager")

SESSION_SECONDS = 15 * 60  # a manager's session: short, as it opens personal data
RECENT_SECONDS = 10 * 60  # "the last minutes" of the connection line
UNANSWERED = (flow.QUEUED, flow.TIMEOUT, flow.UNAVAILABLE)
DAYS = 30
EDITABLE = ("email", "mobilePhone", "socialSecurityNumber", "externalId", "firstName",
            "lastName", "birthDay", "zipCode", "countryCode")  # fmt: skip
# Outcomes that mean the person is (or will be) a member, for the chart's colours; the
# customers' own typing corrections (invalid) and "wait a minute" are neither those nor
# problems of the service, and get a colour of their own.
GOOD = (flow.CREATED, flow.EXISTING, flow.QUEUED, flow.IN_PROGRESS)
NEUTRAL = ("invalid", "throttled")


def cause_words(cause: str | None) -> str:
    """What Engage (or the app) said, in the manager's language; never the raw token, which a
    page may show in a tooltip at most."""
    token = (cause or "").split(":", 1)[0]
    words = {
        "EngageServerError": _("The membership system had a fault"),
        "EngageUnavailable": _("The membership system could not be reached"),
        "NotSent": _("The membership system could not be reached"),
        "EngageTimeout": _("The membership system took too long"),
        "OutcomeUnknown": _("The membership system took too long"),
        "RequestTimeOut": _("The membership system took too long"),
        "RateLimited": _("The membership system asked for fewer calls"),
        "CircuitOpen": _("Not sent: sending was paused"),
        "Misconfigured": _("A setting needs checking (see the log)"),
        "NotAuthorised": _("A setting needs checking (see the log)"),
        "MultipleMatches": _("The details are on several members"),
        "ambiguous": _("The details are on several members"),
        "EngageRejected": _("The membership system refused a detail"),
        "rejected": _("The membership system refused a detail"),
        "ValidationError": _("The membership system refused a detail"),
        "KeyNotInOutboxKeys": _("Cannot be opened with this deployment's keys"),
        "ContactBeingCreated": _("Being registered elsewhere"),
        "ContactWithKeyIsBeingCreated": _("Being registered elsewhere"),
        "StateUnavailable": _("The app's own database had a fault"),
        "DuplicateStillRunning": _("Sent twice at once"),
        "FileField": _("A malformed request"),
        "TokenUsed": _("A page used twice"),
    }
    return words.get(token) or (_("Another answer") if token else "-")


def refused_fields(cause: str | None) -> list[str]:
    """The fields Engage named when it refused a kept sign-up (outbox: 'token:field,field')."""
    if not cause or ":" not in cause:
        return []
    return [name for name in cause.split(":", 1)[1].split(",") if name]


def outcome_labels() -> dict[str, str]:
    return {
        "created": _("New members"),
        "promoted": _("Made members (were in the system already)"),
        "existing": _("Already members"),
        "updated": _("Members with details added"),
        "queued": _("Kept for later"),
        "in-progress": _("Being registered"),
        "ambiguous": _("Several matches"),
        "rejected": _("Refused by the membership system"),
        "timeout": _("Membership system too slow"),
        "unavailable": _("Membership system unavailable"),
        "invalid": _("Details to correct"),
        "throttled": _("Too many at once"),
    }


class LoginForm(FlaskForm):
    pin = PasswordField(_l("Manager PIN"), validators=[DataRequired(_l("Enter your manager PIN"))])


def entries(app=None) -> dict[str, dict]:
    """Each manager of MANAGER_PINS by a keyed hash of their whole entry (name, store, PIN): a
    session made under an entry that changed (a new PIN) or went away matches none of them."""
    app = app or current_app
    if "manager_entries" not in app.extensions:
        with app.app_context():
            app.extensions["manager_entries"] = {
                signed.digest(m, "manager-entry"): m for m in app.config["MANAGER_PINS"]
            }
    return app.extensions["manager_entries"]


def end_stale_sessions(app) -> None:
    """At start-up: end, on every machine, the sessions of managers whose PIN changed or who
    are no longer in MANAGER_PINS (each machine checks every request against its own list)."""
    try:
        ended = app.extensions["state"].manager_sessions_keep(list(entries(app)))
    except StateUnavailable:
        return
    if ended:
        log.warning("manager view: %d session(s) ended: their MANAGER_PINS entry changed", ended)


def signed_in() -> dict | None:
    """The signed-in manager: a session recorded in the shared state (so that signing out, or
    a changed PIN, ends it on every machine at once), under an entry MANAGER_PINS still has."""
    if "manager" in g:
        return g.manager
    g.manager = None
    cookie = session.get("manager")
    if not isinstance(cookie, dict) or not isinstance(cookie.get("sid"), str):
        return None
    try:
        recorded = current_app.extensions["state"].manager_session(cookie["sid"])
    except StateUnavailable as exc:
        log.error("state database unavailable: %s %s", exc, web.log_context())
        return None
    if recorded is None or recorded["entry"] not in entries():
        return None
    g.manager = {"name": recorded["name"], "store": recorded["store"], "sid": cookie["sid"],
                 "until": recorded["until"]}  # fmt: skip
    return g.manager


def _scope(manager: dict) -> list[str] | None:
    """The stores this manager may see: None for all."""
    return None if manager["store"] == "*" else [manager["store"]]


def _in_scope(manager: dict, store: str) -> bool:
    return manager["store"] in ("*", store)


def _told_apart(names: dict[str, str], stores: dict[str, str]):
    """Devices' names as the manager reads them: two with the same name (two "Kassa 2", in one
    store or in two) each get the start of their own id, so that neither hides the other."""
    taken: dict[str, int] = {}
    for name in names.values():
        taken[name] = taken.get(name, 0) + 1
    shown = {device: f"{name} · {device[:6]}" if taken[name] > 1 else name
             for device, name in names.items()}  # fmt: skip
    return shown, stores


def _page(template: str, outcome: str, status: int = 200, **context):
    g.outcome = outcome
    return render_template(template, outcome=outcome, **context), status


@bp.before_request
def _require_manager():
    if request.endpoint in ("manager.start", "manager.login"):
        return None
    if signed_in() is None:
        return redirect(url_for(".start"), code=303)
    return None


@bp.get("/")
def start():
    manager = signed_in()
    if not current_app.config["MANAGER_PINS"]:
        return _page("manager/disabled.html", "manager-disabled")
    if manager is None:
        signed.client_id()  # this browser's id exists before its first PIN: limits count it
        return _page("manager/login.html", "manager-login", form=LoginForm())
    return dashboard(manager)


@bp.post("/login")
def login():
    config = current_app.config
    if not config["MANAGER_PINS"]:
        return redirect(url_for(".start"), code=303)
    form = LoginForm(formdata=request.form)
    managers = config["MANAGER_PINS"]
    match, status = pins.check(
        form, "manager", [m["pin"] for m in managers], empty=_("Enter your manager PIN")
    )
    if match is None:
        return _page("manager/login.html", "manager-login", status, form=form)
    manager = managers[match]
    sid = secrets.token_urlsafe(24)
    entry = next(h for h, m in entries().items() if m is manager)
    state = current_app.extensions["state"]
    try:
        state.manager_session_add(
            sid, manager["name"], manager["store"], entry, state.clock() + SESSION_SECONDS
        )
    except StateUnavailable as exc:
        log.error("state database unavailable: %s %s", exc, web.log_context())
        form.pin.errors = [_("Setup cannot be opened right now. Try again in a moment.")]
        return _page("manager/login.html", "manager-login", 503, form=form)
    session["manager"] = {"sid": sid}
    g.pop("manager", None)
    log.info(
        "manager view: %s signed in (stores %s) %s",
        manager["name"], manager["store"], web.log_context(),
    )  # fmt: skip
    response = redirect(url_for(".start"), code=303)
    pins.remember_known(response)
    return response


@bp.post("/logout")
def logout():
    """Ends the session on every machine: a copy of the cookie opens nothing any more."""
    manager = signed_in()
    session.pop("manager", None)
    if manager is not None:
        try:
            current_app.extensions["state"].manager_session_end(manager["sid"])
        except StateUnavailable as exc:
            log.error("state database unavailable: %s %s", exc, web.log_context())
        log.info("manager view: %s signed out %s", manager["name"], web.log_context())
    return redirect(url_for(".start"), code=303)


# --- the figures ----------------------------------------------------------------------------------
def dashboard(manager: dict, export_error: str | None = None):
    state = current_app.extensions["state"]
    zone = zoneinfo.ZoneInfo(current_app.config["TIMEZONE"])
    now = dt.datetime.now(zone)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    since = (midnight - dt.timedelta(days=DAYS - 1)).timestamp()
    chosen = request.args.get("store") or None
    stores = _scope(manager)
    if chosen and (stores is None or chosen in stores):
        stores = [chosen]
    try:
        rows = state.event_counts(stores, since)
        device_names, store_names = _told_apart(*state.device_names())
        recent = state.recent_outcomes(stores, state.clock() - RECENT_SECONDS)
        breaker_open = state.breaker_is_open(flow.Breaker.NAME)
        items = state.outbox_items()
        displays = [
            d for d in state.displays()
            if _in_scope(manager, d["store"]) and (not chosen or d["store"] == chosen)
        ]  # fmt: skip
    except StateUnavailable as exc:
        log.error("state database unavailable: %s", exc)
        message = _("The figures cannot be read right now. Try again in a moment.")
        return _page("errors/error.html", "error", 503, message=message)
    labels = outcome_labels()
    today_from = midnight.timestamp() // 3600
    hourly: dict[int, Counter] = defaultdict(Counter)
    today, month = Counter(), Counter()
    per_device: dict[tuple, dict[str, Counter]] = defaultdict(
        lambda: {"today": Counter(), "month": Counter()}
    )
    causes: Counter = Counter()
    replays: Counter = Counter()
    for row in rows:
        if row["replay"]:
            replays[row["outcome"]] += row["count"]
            continue
        month[row["outcome"]] += row["count"]
        per_device[(row["store"], row["device"], row["mode"])]["month"][row["outcome"]] += row[
            "count"
        ]
        if row["hour"] >= today_from:
            local = dt.datetime.fromtimestamp(row["hour"] * 3600, zone).hour
            hourly[local][row["outcome"]] += row["count"]
            today[row["outcome"]] += row["count"]
            per_device[(row["store"], row["device"], row["mode"])]["today"][row["outcome"]] += row[
                "count"
            ]
        if row["cause"]:
            causes[row["cause"]] += row["count"]
    visible = [
        i for i in items if _in_scope(manager, i["store"]) and (not chosen or i["store"] == chosen)
    ]
    waiting = [i for i in visible if i["state"] == "waiting" and i["last_error"] != UNOPENED]
    days = current_app.config["OUTBOX_DAYS"]
    soon = time.time() - (days - 1) * 86400
    return _page(
        "manager/dashboard.html",
        "manager",
        manager=manager,
        chosen=chosen,
        scope_stores=sorted(
            {r["store"] for r in rows} | {i["store"] for i in items}
            if manager["store"] == "*"
            else [manager["store"]]
        ),  # fmt: skip
        labels=labels,
        outcomes=[o for o in labels if today[o] or month[o]],
        today=today,
        month=month,
        chart=_chart(hourly, labels),
        hours=[(h, hourly[h]) for h in sorted(hourly)],
        device_names=device_names,
        displays=displays,
        store_names=store_names,
        per_device=sorted(per_device.items()),
        causes=causes.most_common(),
        replays=replays,
        breaker_open=breaker_open,
        # What Engage's answers were like lately, for "Connection to Engage": the sign-ups of the
        # last minutes that Engage did not answer (kept, too slow, unavailable) out of all.
        recent_total=sum(recent.values()),
        recent_unanswered=sum(recent.get(o, 0) for o in UNANSWERED),
        # Kept for a person, and those that no machine's keys have opened yet (to discard).
        attention=[i for i in visible if i["state"] == "attention" or i["last_error"] == UNOPENED],
        queue={
            "depth": len(waiting),
            "oldest": min((i["created"] for i in waiting), default=None),
            "expiring": sum(1 for i in waiting if i["created"] < soon),
        },  # fmt: skip
        outbox_on="outbox" in current_app.extensions,
        said=cause_words,
        when=lambda seconds: dt.datetime.fromtimestamp(seconds, zone).strftime("%Y-%m-%d %H:%M"),
        ref=reference,
        zone=current_app.config["TIMEZONE"],
        days=DAYS,
        today_date=midnight.date().isoformat(),
        first_date=(midnight - dt.timedelta(days=DAYS - 1)).date().isoformat(),
        export_error=export_error,
    )


def _chart(hourly: dict[int, Counter], labels: dict[str, str]) -> Markup:
    """Today's sign-ups per hour as a small SVG: members (dark), corrections the customers
    typed (grey) and problems (light), stacked, each bar's total above it. No chart library
    reaches the browser; a legend and a table of the same figures sit beside it."""
    width, height, top = 480, 140, 16
    most = max((sum(c.values()) for c in hourly.values()), default=0) or 1
    bar = width / 24
    parts = []
    total = 0
    for hour in range(24):
        counts = hourly.get(hour, Counter())
        good = sum(counts[o] for o in GOOD)
        neutral = sum(counts[o] for o in NEUTRAL)
        bad = sum(counts.values()) - good - neutral
        total += good + neutral + bad
        y = height
        for value, kind in ((good, "good"), (neutral, "neutral"), (bad, "bad")):
            if value:
                h = (height - top) * value / most
                y -= h
                parts.append(
                    f'<rect class="bar bar--{kind}" x="{hour * bar + 2:.1f}" y="{y:.1f}" '
                    f'width="{bar - 4:.1f}" height="{h:.1f}"/>'
                )
        if sum(counts.values()):
            parts.append(
                f'<text class="value" x="{hour * bar + bar / 2:.1f}" y="{y - 3:.1f}" '
                f'text-anchor="middle">{sum(counts.values())}</text>'
            )
        if hour % 3 == 0:
            parts.append(
                f'<text class="axis" x="{hour * bar + bar / 2:.1f}" y="{height + 14}" '
                f'text-anchor="middle">{hour:02d}</text>'
            )
    summary = ngettext(
        "%(num)s sign-up today, by hour: dark bars are members, light bars problems.",
        "%(num)s sign-ups today, by hour: dark bars are members, light bars problems.",
        total,
    )
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height + 20}" role="img" '
        f'aria-labelledby="chart-title"><title id="chart-title">{escape(summary)}</title>'
        f'{"".join(parts)}<line class="baseline" x1="0" y1="{height}" x2="{width}" '
        f'y2="{height}"/></svg>'
    )


# --- what needs a person --------------------------------------------------------------------------
def _item(ref: str, *, payload: bool = False) -> dict:
    manager = signed_in()
    outbox = current_app.extensions.get("outbox")
    item = outbox.find(ref, payload=payload) if outbox else None
    if item is None or not _in_scope(manager, item["store"]):
        abort(404)  # another store's item is no more visible than a missing one
    return item


def _opened(item: dict) -> flow.Signup | None:
    """The kept sign-up, or None when this deployment's OUTBOX_KEYS cannot open it."""
    try:
        return current_app.extensions["outbox"].open(item["payload"])
    except InvalidToken:
        return None


def _unopened_page(item: dict):
    """An item no key of this deployment opens: what it is, what to do, and discard."""
    return _page("manager/item.html", "manager-item", 200, item=item, correction=None,
                 fields=[], ref=reference(item["id"]), csrf=signed.csrf_token(),
                 unopened=True, said=cause_words)  # fmt: skip


@bp.post("/items/<ref>/show")
def show(ref: str):
    item = _item(ref, payload=True)
    manager = signed_in()
    signup = _opened(item)
    if signup is None:
        return _unopened_page(item)
    log.warning(
        "manager view: outbox item %s shown to %s %s",
        reference(item["id"]), manager["name"], web.log_context(),
    )  # fmt: skip
    return _correction_page(item, _form_for(signup))


def _form_for(signup: flow.Signup, formdata=None):
    """The sign-up form, filled with what the person gave (or what the manager typed)."""
    if formdata is None:
        values = {k: v for k, v in signup.contact.items() if k in EDITABLE}
        formdata = MultiDict(values)
    formdata = MultiDict(formdata)
    for consent in signup.contact.get("consents", []):
        formdata[f"consent-{consent['id']}"] = "y"  # given at sign-up: not the manager's to undo
    formdata["submission"] = "manager-correction-token"
    form = current_app.extensions["signup_form"](formdata=formdata, meta={"csrf": False})
    form.countryCode.choices = countries(current_language())
    return form


def _correction_page(item: dict, form, status: int = 200):
    from .views import REFUSED

    matches = []
    if (item["last_error"] or "").startswith("MultipleMatches") and item.get("payload"):
        matches = current_app.extensions["outbox"].matches(item["payload"])
    fields = [form[name] for name in EDITABLE if name in form]
    if status == 200:  # first shown: the fields Engage named are marked, as on the till
        for name in refused_fields(item["last_error"]):
            if name in form and not form[name].errors:
                said = REFUSED.get(name) or _("The membership system refused a detail")
                form[name].errors = [str(said)]
    return _page("manager/item.html", "manager-item", status, item=item, correction=form,
                 fields=fields, ref=reference(item["id"]), csrf=signed.csrf_token(),
                 said=cause_words, matches=matches)  # fmt: skip


@bp.post("/items/<ref>/correct")
def correct(ref: str):
    """Send the item again with the details the manager corrected (checked as the form checks
    them); the replay looks the person up first, as always."""
    item = _item(ref, payload=True)
    manager = signed_in()
    outbox = current_app.extensions["outbox"]
    state = current_app.extensions["state"]
    signup = _opened(item)
    if signup is None:
        return _unopened_page(item)
    form = _form_for(signup, {k: v for k, v in request.form.items() if k in EDITABLE})
    if not form.validate():
        return _correction_page(item, form, 400)
    contact = {k: v for k, v in signup.contact.items() if k not in EDITABLE}
    for name in EDITABLE:
        if name in form and form.normalized(name):
            contact[name] = form.normalized(name)
    corrected = flow.Signup(**{**signup.__dict__, "contact": contact})
    state.outbox_set_payload(item["id"], outbox.seal(corrected))
    state.outbox_retry(item["id"])
    log.warning(
        "manager view: outbox item %s corrected by %s and sent again %s",
        reference(item["id"]), manager["name"], web.log_context(),
    )  # fmt: skip
    return redirect(url_for(".start", done="corrected"), code=303)


@bp.post("/items/<ref>/discard")
def discard(ref: str):
    """A second step, without JavaScript too: a page that asks, then the discard itself."""
    item = _item(ref)
    manager = signed_in()
    if request.form.get("confirm") != "yes":
        return _page("manager/discard.html", "manager-discard", item=item,
                     ref=reference(item["id"]), csrf=signed.csrf_token())  # fmt: skip
    current_app.extensions["outbox"].discard(item)
    log.warning(
        "manager view: outbox item %s discarded by %s %s",
        reference(item["id"]), manager["name"], web.log_context(),
    )  # fmt: skip
    return redirect(url_for(".start", done="discarded"), code=303)


@bp.post("/queue/retry")
def retry_queue():
    """Send every waiting item of this manager's stores at the next chance."""
    manager = signed_in()
    state = current_app.extensions["state"]
    count = 0
    for item in state.outbox_items():
        if item["state"] == "waiting" and _in_scope(manager, item["store"]):
            count += state.outbox_retry(item["id"])
    log.info(
        "manager view: %s sent %d queued item(s) again %s",
        manager["name"], count, web.log_context(),
    )  # fmt: skip
    return redirect(url_for(".start", done="retried"), code=303)


@bp.get("/consents.csv")
def consents_csv():
    """The consent records of one store and date range, with the full texts (CSV)."""
    manager = signed_in()
    store = request.args.get("store", "")
    if not store or not _in_scope(manager, store):
        abort(404)
    try:
        start = dt.date.fromisoformat(request.args.get("from", ""))
        end = dt.date.fromisoformat(request.args.get("to", ""))
        rows = current_app.extensions["consent_records"].export(store=store, start=start, end=end)
    except ValueError:  # not a date, the days the wrong way round, or past the calendar's end
        g.outcome = "manager"
        page, _status = dashboard(manager, export_error=_("Choose a first and a last day, the "
                                  "first no later than the last."))  # fmt: skip
        return page, 400
    log.info(
        "manager view: %s exported %d consent record(s) of store %s %s",
        manager["name"], len(rows), store, web.log_context(),
    )  # fmt: skip
    name = f"consents-{store}-{start.isoformat()}-{end.isoformat()}.csv"
    zone = zoneinfo.ZoneInfo(current_app.config["TIMEZONE"])
    for row in rows:  # the manager's own time beside UTC
        at = dt.datetime.fromisoformat(row["at_utc"]).astimezone(zone)
        row["at_local"] = at.strftime("%Y-%m-%d %H:%M:%S")
    semicolons = request.args.get("sep") == "semicolon"  # what Nordic Excel opens as it is
    return Response(
        consent_records.as_csv(rows, delimiter=";" if semicolons else ",", bom=True),
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{name}"',
                 "Cache-Control": "no-store"},
    )  # fmt: skip
