"""``campaigns/log_v2``: a mailing's log as Altcraft's rows of ``{level, message, state,
time, value}``, built from the mailing log of each of its runs (``engine.mailing_log``).

A run gives, in time order:

- at its start, ``Mailing started`` (``Test send started``, ``Variant test started``,
  ``Winner started`` for the other phases), ``state`` ``started``, ``value`` the run id;
- its counts, one row each (``Subscribers received``, ``Subscribers found``, ``Sent``,
  ``Delivered``, ``Failed``...; the ones at 0 left out, but ``Recipients`` and ``Sent``),
  ``value`` the count, ``state`` the run's status, at its end (a run still going: the
  time of the call, its figures so far); ``warning`` for the counts of messages lost
  (invalid phones, empty or too long texts, undelivered, failed, unknown);
- its error, if any (``error``, ``value`` the text);
- at its end, ``Mailing finished``, ``value`` its seconds, ``warning`` when it was
  cancelled or interrupted and ``error`` when it failed.

``from_time`` keeps the rows at that time or later (and skips runs that ended before it);
``total_count`` counts them before ``limit`` cuts.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from typing import Literal

import anyio.lowlevel
import msgspec

from engine.api.altcraft.bodies import LogAnswer, LogBody, LogRow
from engine.api.altcraft.envelope import OK, Refused, decode
from engine.api.state import ApiState, Req
from engine.errors import NotFound
from engine.mailing_log import MailingLog
from engine.store.models import Run

__all__ = ["log_rows", "log_v2"]

Level = Literal["info", "warning", "error"]

#: The mailing log's counts: (its field, the row's message, a warning when not 0).
_COUNTS: list[tuple[str, str, bool]] = [
    ("subscribers_received", "Subscribers received", False),
    ("subscribers_found", "Subscribers found", False),
    ("duplicate_phones", "Duplicate phones", False),
    ("suppressed", "Suppressed", False),
    ("invalid_phones", "Invalid phones", True),
    ("empty", "Empty text", True),
    ("too_long", "Too long", True),
    ("policy", "Over the sending policy", False),
    ("control", "Control group", False),
    ("recipients", "Recipients", False),
    ("sent", "Sent", False),
    ("delivered", "Delivered", False),
    ("undelivered", "Undelivered", True),
    ("failed", "Failed", True),
    ("unknown", "Unknown", True),
    ("cancelled", "Cancelled", False),
    ("pending", "Pending", False),
]
_ALWAYS = frozenset({"recipients", "sent"})
_STARTED = {"launch": "Mailing started", "trial": "Test send started",
            "test": "Variant test started", "winner": "Winner started"}
_ENDED: dict[str, Level] = {"finished": "info", "cancelled": "warning",
                            "interrupted": "warning", "failed": "error"}
_decode = msgspec.json.Decoder(LogBody).decode


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def _run_rows(run: Run, log: MailingLog, now: float) -> list[tuple[float, LogRow]]:
    rows = [(run.started_at, LogRow(level="info", message=_STARTED.get(
        log.phase, "Mailing started"), state="started", time=_iso(run.started_at),
        value=run.id))]
    at = run.finished_at if run.finished_at is not None else now
    figures = msgspec.structs.asdict(log)
    for name, message, warn in _COUNTS:
        count = figures[name]
        if count or name in _ALWAYS:
            rows.append((at, LogRow(level="warning" if warn and count else "info",
                                    message=message, state=log.status, time=_iso(at),
                                    value=count)))
    if log.error:
        rows.append((at, LogRow(level="error", message="Error", state=log.status,
                                time=_iso(at), value=log.error)))
    if run.finished_at is not None:
        rows.append((at, LogRow(level=_ENDED.get(log.status, "info"),
                                message="Mailing finished", state=log.status,
                                time=_iso(at), value=log.total_time_s)))
    return rows


def log_rows(runs: Sequence[tuple[Run, MailingLog]], now: float,
             since: float | None = None) -> list[LogRow]:
    """The rows of the runs' logs at ``since`` or later, in time order (a run's in
    order at equal times); ``now`` is the time of the figures of a run still going."""
    timed = [row for run, log in runs for row in _run_rows(run, log, now)]
    timed = [(at, row) for at, row in timed if since is None or at >= since]
    timed.sort(key=lambda item: item[0])  # stable: a run's rows keep their order
    return [row for _, row in timed]


async def log_v2(request: Req, state: ApiState, body: bytes) -> LogAnswer:
    """``campaigns/log_v2``."""
    data: LogBody = decode(_decode, body, state.herald.config.limits)
    since = None
    if data.from_time is not None:
        moment = data.from_time
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=dt.UTC)
        since = moment.timestamp()
    store = state.store
    try:
        await store.get_mailing(data.id)
    except NotFound:
        raise Refused(404, f"id: no mailing with id {data.id}") from None
    runs = await store.mailing_runs(data.id)
    logs = []
    for run in runs:
        if since is not None and run.finished_at is not None and run.finished_at < since:
            continue
        logs.append((run, await state.herald.log(run.id)))
        await anyio.lowlevel.checkpoint()
    rows = log_rows(logs, time.time(), since)
    return LogAnswer(error=0, error_text=OK, data=rows[: data.limit], total_count=len(rows))
