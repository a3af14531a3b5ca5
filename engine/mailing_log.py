"""The mailing log: what happened in a run, under the field names of Altcraft's SMS log.

Altcraft's fields: ``mailing_started``, ``limit``, ``audience_source``, ``database_id`` /
``segment_id``, ``cursor_ms``, ``subscribers_received``, ``subscribers_found``,
``duplicate_phones``, ``recipients``, ``mailing_finished``, ``total_time_s``. Herald adds the
fate of every recipient (``sent``, ``failed`` with reasons, ``unknown``, ``pending``), what
was skipped and why (``suppressed``, ``invalid_phones``, ``empty``, ``too_long``,
``policy``, ``control``: held out by a control group) and busy time per stage.

A run with a spec says what it was for: its ``phase`` (``launch``, ``test``, ``winner``,
``trial``), the ``variant`` it sent (1-based; None for a mailing with one template), its
``share`` of the audience (the profiles of the other shares are counted as
``other_share``, not received), the launch it was ``due`` for and how many launches before
it were ``missed`` while nothing ran (they ran once, as this one), the ``decided`` figures
that made its variant the winner, and, for a trial (``is_test``), its test ``phones``. A
wave of a launch in the recipients' local time or held by quiet hours says which ``wave``
it was, its ``window`` of send times, how many profiles it left ``later`` (not received,
like ``other_share``) and when the ``next_wave`` is, and how many an ``earlier`` wave took.
Counts come from the run's persisted counters and recipient rows, so they stay exact across
interruptions and resumes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

from engine.core.localtime import EARLIER, EARLIEST, LATER, next_wave
from engine.store.models import Mailing, Run

__all__ = ["MailingLog", "build_log", "format_log"]


class MailingLog(msgspec.Struct, kw_only=True):
    run_id: int
    mailing_id: int
    mailing_name: str
    status: str
    mailing_started: str
    limit: int | None
    audience_source: str
    database_id: int | None
    segment_id: int | None
    cursor_ms: float | None
    #: Milliseconds from the start of the run (``herald send``'s call, a launch) to its
    #: first batch handed to a gateway (None: none was).
    first_submit_ms: float | None = None
    subscribers_received: int
    subscribers_found: int
    duplicate_phones: int
    recipients: int
    mailing_finished: str | None
    total_time_s: float | None
    suppressed: int
    invalid_phones: int
    #: Skipped: the template rendered nothing but whitespace for them.
    empty: int
    too_long: int
    #: Skipped: over the sending policy's limit.
    policy: int
    #: Skipped: held out by the mailing's or its database's control group.
    control: int
    #: Read, but in another run's share of the mailing (not received by this one).
    other_share: int
    sent: int
    delivered: int
    undelivered: int
    failed: int
    failed_reasons: dict[str, int]
    unknown: int
    #: Why they are unknown: ``timeout``, ``connection_lost`` (an ambiguous attempt, not
    #: retried), ``interrupted`` (at a gateway when the run was stopped or killed).
    unknown_reasons: dict[str, int]
    #: Reserved, then never handed to a gateway because the mailing was cancelled.
    cancelled: int
    pending: int
    messages_per_s: float | None
    stage_busy_s: dict[str, float]
    error: str | None = None
    phase: str = "launch"
    #: The template sent, 1-based (None: the mailing has one).
    variant: int | None = None
    #: The run's share [lo, hi) of the audience (None: all of it).
    share: list[float] | None = None
    #: A test send (``mailing test``): in no report and no policy count.
    is_test: bool = False
    #: A trial's phones.
    phones: list[str] = msgspec.field(default_factory=list)
    #: The scheduled time this launch was for, and the launches before it missed while
    #: nothing ran.
    due: str | None = None
    missed: int = 0
    #: The figures the winner was chosen on (a winner run): variant (1-based) -> figure.
    decided: dict[str, float] = msgspec.field(default_factory=dict)
    #: What the winner was chosen by (``clicks``, ``unique_clicks``, ``delivered``,
    #: ``manual``), for a winner run.
    winner_by: str | None = None
    #: A wave of a launch (1 first; None: the launch was one run), its window of send
    #: times ``[after, until]`` (after None: from the first), the profiles it left for
    #: later waves and the time of the next one, and those an earlier wave took.
    wave: int | None = None
    window: list[str | None] | None = None
    later: int = 0
    next_wave: str | None = None
    earlier: int = 0
    #: The mailing's channel (its resource's): ``sms`` or ``email``. An email run's
    #: ``duplicate_phones`` counts duplicate addresses, and its unreadable addresses are
    #: ``invalid_emails`` (``invalid_phones`` is then 0).
    channel: str = "sms"
    invalid_emails: int = 0


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def build_log(
    mailing: Mailing, run: Run, summary: dict[str, dict[str, int]]
) -> MailingLog:
    """``summary`` is ``Store.run_summary``: recipient counts by state and reason."""
    c = run.counts
    t = run.timings

    def total(state: str) -> int:
        return sum(summary.get(state, {}).values())

    skipped = summary.get("skipped", {})
    settled = sum(total(s) for s in ("sent", "delivered", "undelivered", "failed", "unknown"))
    reserved = c.get("reserved", 0)
    elapsed = t.get("total_time_s")
    spec = run.spec
    return MailingLog(
        run_id=run.id,
        mailing_id=mailing.id,
        mailing_name=mailing.name,
        status=run.status,
        mailing_started=_iso(run.started_at) or "",
        limit=mailing.limit,
        audience_source=mailing.source.kind,
        database_id=mailing.source.database_id if mailing.source.kind == "list" else None,
        segment_id=mailing.source.segment_id,
        cursor_ms=t.get("cursor_ms"),
        first_submit_ms=t.get("first_submit_ms"),
        subscribers_received=c.get("received", 0),
        subscribers_found=c.get("found", 0),
        duplicate_phones=skipped.get("duplicate", 0),
        recipients=settled,
        mailing_finished=_iso(run.finished_at),
        total_time_s=elapsed,
        suppressed=skipped.get("suppressed", 0),
        invalid_phones=skipped.get("invalid_phone", 0),
        empty=skipped.get("empty", 0),
        too_long=skipped.get("too_long", 0),
        policy=skipped.get("policy", 0),
        control=skipped.get("control", 0),
        other_share=c.get("other_share", 0),
        sent=total("sent") + total("delivered") + total("undelivered"),
        delivered=total("delivered"),
        undelivered=total("undelivered"),
        failed=total("failed"),
        failed_reasons=dict(sorted(summary.get("failed", {}).items())),
        unknown=total("unknown"),
        unknown_reasons=dict(sorted(summary.get("unknown", {}).items())),
        cancelled=skipped.get("cancelled", 0),
        pending=max(reserved - settled - skipped.get("cancelled", 0), 0),
        messages_per_s=round(settled / elapsed, 1) if elapsed else None,
        stage_busy_s={k[5:]: round(v, 3) for k, v in sorted(t.items())
                      if k.startswith("busy_")},
        error=run.error,
        phase=spec.phase,
        variant=spec.variant + 1 if mailing.options.variants else None,
        share=list(spec.share) if spec.share is not None else None,
        is_test=spec.is_test,
        phones=list(spec.phones),
        due=_iso(spec.due),
        missed=spec.missed,
        decided=dict(spec.decided),
        winner_by=mailing.options.winner if spec.phase == "winner" else None,
        wave=(spec.wave or None) if spec.window is not None else None,
        window=None if spec.window is None else [
            None if spec.window[0] <= EARLIEST else _iso(spec.window[0]),
            _iso(spec.window[1])],
        later=c.get(LATER, 0),
        next_wave=_iso(next_wave(c)),
        earlier=c.get(EARLIER, 0),
        channel=mailing.source.channel,
        invalid_emails=skipped.get("invalid_email", 0),
    )


_LABELS: list[tuple[str, str]] = [
    ("mailing_started", "Mailing started"),
    ("limit", "Limit"),
    ("audience_source", "Audience source"),
    ("database_id", "Database id"),
    ("segment_id", "Segment id"),
    ("cursor_ms", "Cursor, ms"),
    ("first_submit_ms", "First submit, ms"),
    ("subscribers_received", "Subscribers received"),
    ("subscribers_found", "Subscribers found"),
    ("duplicate_phones", "Duplicate phones"),
    ("suppressed", "Suppressed"),
    ("invalid_phones", "Invalid phones"),
    ("invalid_emails", "Invalid addresses"),
    ("empty", "Empty text"),
    ("too_long", "Too long"),
    ("policy", "Over the sending policy"),
    ("control", "Control group"),
    ("other_share", "In other runs' shares"),
    ("later", "Left for later waves"),
    ("earlier", "Taken by earlier waves"),
    ("recipients", "Recipients"),
    ("sent", "Sent"),
    ("failed", "Failed"),
    ("unknown", "Unknown"),
    ("cancelled", "Cancelled"),
    ("pending", "Pending"),
    ("mailing_finished", "Mailing finished"),
    ("total_time_s", "Total time, s"),
    ("messages_per_s", "Messages per second"),
]


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _spec_rows(log: MailingLog) -> list[tuple[str, str]]:
    """What the run was for, when it was more than a launch over the whole audience."""
    rows: list[tuple[str, str]] = []
    if log.phase != "launch" or log.is_test:
        rows.append(("Phase (phase)", log.phase + (" (test send)" if log.is_test else "")))
    if log.variant is not None:
        rows.append(("Variant (variant)", str(log.variant)))
    if log.share is not None:
        lo, hi = log.share
        rows.append(("Share of the audience (share)", f"{lo:.2%} to {hi:.2%}"))
    if log.phones:
        rows.append(("Test phones (phones)", ", ".join(log.phones)))
    if log.due is not None:
        rows.append(("Due (due)", log.due))
    if log.missed:
        launches = "launch" if log.missed == 1 else "launches"
        rows.append(("Missed launches (missed)",
                     f"{log.missed} {launches} missed while nothing ran; run once"))
    if log.wave is not None:
        rows.append(("Wave (wave)", str(log.wave)))
    if log.window is not None:
        after, until = log.window
        rows.append(("Send times (window)", f"{after or 'the first'} to {until}"))
    if log.next_wave is not None:
        rows.append(("Next wave (next_wave)", log.next_wave))
    if log.decided:
        figures = ", ".join(f"variant {k}: {_fmt(v)}" for k, v in
                            sorted(log.decided.items(), key=lambda kv: _variant_order(kv[0])))
        by = f" by {log.winner_by}" if log.winner_by else ""
        winner = f"variant {log.variant} won{by}" if log.variant is not None else "won"
        rows.append(("Winner (decided)", f"{winner} ({figures})"))
    return rows


def _variant_order(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 30, key)


#: Shown only when not zero: most runs have none of them.
_WHEN_ANY = frozenset({"control", "other_share", "later", "earlier"})


def format_log(log: MailingLog) -> str:
    """The log as a two-column table, like Altcraft's mailing log page."""
    rows: list[tuple[str, str]] = _spec_rows(log)
    email = log.channel == "email"
    if email:
        rows.insert(0, ("Channel (channel)", "email"))
    for key, label in _LABELS:
        value = getattr(log, key)
        if key == ("invalid_phones" if email else "invalid_emails"):
            continue
        if email and key == "duplicate_phones":
            label = "Duplicate addresses"
        elif email and key == "empty":
            continue  # an email is never judged empty: it has its headers
        if key == "database_id" and log.audience_source != "list":
            continue
        if key == "segment_id" and log.audience_source != "segment":
            continue
        if key in _WHEN_ANY and not value and not (key == "other_share" and log.share):
            continue
        rows.append((f"{label} ({key})", _fmt(value)))
        if key == "failed":
            for reason, n in log.failed_reasons.items():
                rows.append((f"  {reason}", _fmt(n)))
        if key == "unknown":
            for reason, n in log.unknown_reasons.items():
                rows.append((f"  {reason}", _fmt(n)))
    for stage, seconds in log.stage_busy_s.items():
        if stage == "dispatch":  # wall time in driver calls, summed over concurrent workers
            rows.append(("Waiting on gateways, s (all workers)", _fmt(seconds)))
        else:
            rows.append((f"Busy: {stage}, s", _fmt(seconds)))
    if log.error:
        rows.append(("Error", log.error))
    width = max(len(k) for k, _ in rows)
    head = (f"Mailing log: run {log.run_id}, mailing {log.mailing_id}"
            f" {log.mailing_name!r} ({log.status})")
    lines = [head, "-" * max(len(head), width + 20)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
