"""What a mailing looks like to its users: the view ``herald mailing show --json`` prints
and ``GET /api/v1/mailings/{id}`` answers (so the two always agree), and the messages of
a test send (``mailing test``), from the store."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from engine.errors import StoreError
from engine.mailing_log import MailingLog
from engine.store.models import Mailing, MailingOptions, Run

__all__ = ["MAX_RUNS_SHOWN", "MailingView", "RunView", "TrialMessage", "TrialRun", "describe",
           "local_time", "trial_runs", "zone_of"]

#: Runs ``mailing show`` and ``GET /api/v1/mailings/{id}`` list (the newest), each kind
#: (launches, tests) apart: a regular mailing every minute has half a million in a year.
MAX_RUNS_SHOWN = 100


class RunView(msgspec.Struct, kw_only=True):
    """One run of a mailing with its counts so far."""

    id: int
    status: str
    #: ``launch`` (a broadcast's or regular mailing's), ``test`` and ``winner`` (a
    #: multivariate mailing's), ``trial`` (``mailing test``).
    phase: str
    #: The template it sent, numbered from 1 (None: the mailing's one template).
    variant: int | None = None
    is_test: bool = False
    started_at: float
    finished_at: float | None = None
    #: The scheduled time this launch was for, and how many launches it stood for.
    due: float | None = None
    missed: int = 0
    #: Reserved recipients, and how their messages ended so far.
    recipients: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    unknown: int = 0
    #: Held out as the mailing's or the database's control group.
    control: int = 0
    #: Skipped for any reason (control included).
    skipped: int = 0
    #: A trial's phones.
    phones: list[str] = msgspec.field(default_factory=list)
    #: A winner run: the figure of each variant that decided it.
    decided: dict[str, float] = msgspec.field(default_factory=dict)


class MailingView(msgspec.Struct, kw_only=True):
    """A mailing, its options and its runs, as ``mailing show`` prints it."""

    id: int
    name: str
    kind: str
    resource: str
    state: str
    #: ``database NAME`` or ``segment NAME`` (``database #ID`` when no segment names it).
    audience: str
    #: When it launches next: seconds since the epoch, and the wall-clock time in
    #: ``timezone`` (ISO 8601 with the offset).
    next_launch: float | None = None
    next_launch_at: str | None = None
    timezone: str = "UTC"
    #: Its options, the templates of the variants left out (``variants`` counts them).
    options: MailingOptions = msgspec.field(default_factory=MailingOptions)
    variants: int = 0
    #: Its template, or each variant's (variant 1 first).
    templates: list[str] = msgspec.field(default_factory=list)
    #: The variant (from 1) that won, once a winner run exists.
    winner: int | None = None
    #: How many launch runs and test sends it has had (the lists hold the newest).
    launches_total: int = 0
    tests_total: int = 0
    #: Its runs: launches (and a multivariate mailing's variant tests and winner), oldest
    #: first.
    launches: list[RunView] = msgspec.field(default_factory=list)
    #: ``mailing test`` sends, listed apart: they count for no report.
    tests: list[RunView] = msgspec.field(default_factory=list)


def zone_of(herald: Any, mailing: Mailing) -> str:
    schedule = mailing.options.schedule
    if schedule is not None and schedule.timezone:
        return schedule.timezone
    return str(getattr(herald.config.engine, "timezone", None) or "UTC")


def local_time(ts: float | None, zone: str) -> dt.datetime | None:
    if ts is None:
        return None
    try:
        tz: dt.tzinfo = ZoneInfo(zone)
    except (KeyError, ValueError):  # a name this machine's tzdata lacks
        tz = dt.UTC
    return dt.datetime.fromtimestamp(ts, tz)


def _run_view(mailing: Mailing, run: Run, summary: dict[str, dict[str, int]]) -> RunView:
    spec = run.spec
    numbered = bool(mailing.options.variants)
    skipped = summary.get("skipped", {})
    return RunView(
        id=run.id, status=run.status, phase=spec.phase,
        variant=spec.variant + 1 if numbered else None, is_test=spec.is_test,
        started_at=run.started_at, finished_at=run.finished_at, due=spec.due,
        missed=spec.missed, recipients=run.counts.get("reserved", 0),
        sent=sum(sum(summary.get(s, {}).values()) for s in ("sent", "delivered", "undelivered")),
        delivered=sum(summary.get("delivered", {}).values()),
        failed=sum(summary.get("failed", {}).values()),
        unknown=sum(summary.get("unknown", {}).values()),
        control=run.counts.get("control", skipped.get("control", 0)),
        skipped=sum(skipped.values()),
        phones=list(spec.phones), decided=dict(spec.decided),
    )


async def _audience(store: Any, mailing: Mailing) -> str:
    source = mailing.source
    if source.kind == "segment" and source.segment_id is not None:
        try:
            return f"segment {(await store.segment_by_id(source.segment_id)).name}"
        except StoreError:
            return f"segment #{source.segment_id}"
    return f"database #{source.database_id}"


async def describe(herald: Any, mailing: Mailing, *, runs: int = MAX_RUNS_SHOWN) -> MailingView:
    """The mailing with its newest ``runs`` launches and tests and their counts."""
    store = herald.store
    all_runs: list[Run] = await store.mailing_runs(mailing.id)
    launches = [r for r in all_runs if not r.spec.is_test]
    tests = [r for r in all_runs if r.spec.is_test]
    zone = zone_of(herald, mailing)
    local = local_time(mailing.next_launch, zone)
    winner = next((r.spec.variant + 1 for r in reversed(launches)
                   if r.spec.phase == "winner"), None)

    async def views(chosen: list[Run]) -> list[RunView]:
        return [_run_view(mailing, r, await store.run_summary(r.id)) for r in chosen[-runs:]]

    return MailingView(
        id=mailing.id, name=mailing.name, kind=mailing.kind, resource=mailing.resource,
        state=mailing.state, audience=await _audience(store, mailing),
        next_launch=mailing.next_launch,
        next_launch_at=local.isoformat(timespec="seconds") if local else None,
        timezone=zone, options=msgspec.structs.replace(mailing.options, variants=[]),
        variants=len(mailing.options.variants),
        templates=list(mailing.options.variants or [mailing.template]), winner=winner,
        launches_total=len(launches),
        tests_total=len(tests), launches=await views(launches), tests=await views(tests),
    )


class TrialMessage(msgspec.Struct, kw_only=True):
    phone: str
    state: str
    reason: str | None = None


class TrialRun(msgspec.Struct, kw_only=True):
    """One run of ``mailing test``: the variant it sent and each message's fate."""

    run_id: int
    variant: int | None
    status: str
    messages: list[TrialMessage]


async def trial_runs(herald: Any, logs: list[MailingLog]) -> list[TrialRun]:
    """The messages of ``engine.mailings.test_mailing``'s runs."""
    out = []
    for log in logs:
        mailing, run = await herald.store.get_run(log.run_id)
        rows = await herald.store.recipient_rows(log.run_id)
        out.append(TrialRun(
            run_id=log.run_id, status=log.status,
            variant=run.spec.variant + 1 if mailing.options.variants else None,
            messages=[TrialMessage(phone=r.phone, state=r.state, reason=r.reason)
                      for r in rows],
        ))
    return out


# -- create ------------------------------------------------------------------------------
