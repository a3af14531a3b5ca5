"""Server-sent events for the console (role viewer), read with ``fetch()`` (EventSource
cannot send the bearer header):

- ``GET /api/v1/mailings/{id}/live``: ``event: status`` with a ``LiveStatus`` at once,
  then every 0.5 s while the mailing's latest run is running (or paused with work in
  flight), every 5 s otherwise (a heartbeat too);
- ``GET /api/v1/senders/live``: ``event: senders`` with ``GET /api/v1/senders``'s body
  every second.

A mailing's figures come from the store (the report counters, the runs' persisted
counts), so whichever API process the browser reached, they are those of every worker of
a cluster; a look costs a few rows per (run, sender, hour), whatever the audience. Its
``mailing`` is ``GET /api/v1/mailings/{id}``'s body, whose list of runs (a count of each
run's recipients) is looked at again every 5 s, or at once when the run or its status
changes. The senders' figures are this process's.

A stream ends when its client goes, when its token is revoked, when its mailing is
deleted, and when the server stops (the server cancels it within its grace). The two
routes are left out of ``/openapi.json``: a client generated from it (or a fuzzer) would
wait for a body that never ends.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Final

import anyio
import msgspec
from litestar import get
from litestar.response import Stream

from engine.api.auth import guarded
from engine.api.mailings import DETAIL_RUNS, MailingDetail, MailingId
from engine.api.senders import senders_now
from engine.api.state import ApiState, Req, api_state, service_of
from engine.errors import NotFound
from engine.mailing_view import MailingView, describe
from engine.service import MailingService, MailingStatus
from engine.store.base import ChannelRow, ReportFilter
from engine.store.models import Run

__all__ = ["FAST", "ROUTES", "SLOW", "LiveCounts", "LiveSender", "LiveStatus"]

#: Seconds between two messages while a run goes on, and otherwise.
FAST: Final = 0.5
SLOW: Final = 5.0
#: Seconds between two messages of the senders' stream.
SENDERS_EVERY: Final = 1.0
#: Seconds a mailing's list of runs is reused while nothing about its run changed.
VIEW_TTL: Final = 5.0
HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
#: A run's persisted counts of what it skipped, by the reason its recipients carry.
_SKIP_REASONS: Final = {
    "duplicate": "duplicate", "suppressed": "suppressed", "invalid": "invalid_phone",
    "policy": "policy", "empty": "empty", "too_long": "too_long", "control": "control",
    "not_subscribed": "not_subscribed",
}
#: Reasons every message lists, 0 or not (others only when some were skipped so).
_ALWAYS: Final = ("duplicate", "suppressed", "invalid_phone", "policy", "empty", "too_long",
                  "control")
_encode = msgspec.json.Encoder().encode


class LiveCounts(msgspec.Struct, kw_only=True):
    """The mailing's channel-report counts (all its runs, test sends left out), and what
    its runs skipped, by reason (the usual reasons always, 0 or not)."""

    recipients: int = 0
    sent: int = 0
    delivered: int = 0
    undelivered: int = 0
    failed: int = 0
    unknown: int = 0
    segments: int = 0
    clicks: int = 0
    unique_clicks: int = 0
    unsubscribed: int = 0
    control: int = 0
    #: An email mailing's: people's opens, first opens, hard and soft bounces, complaints.
    opens: int = 0
    unique_opens: int = 0
    hard_bounced: int = 0
    soft_bounced: int = 0
    complaints: int = 0
    skipped: dict[str, int] = msgspec.field(default_factory=dict)


class LiveSender(msgspec.Struct, kw_only=True):
    name: str
    #: This mailing's segments through the sender so far.
    segments: int
    #: Segments per second since the previous message (0 in the first).
    rate: float
    #: The sender's ``rate`` and ``burst`` (None when its rate is unlimited).
    limit: float | None
    burst: int | None


class LiveStatus(msgspec.Struct, kw_only=True):
    #: Server time, seconds since the epoch.
    at: float
    mailing: MailingDetail
    counts: LiveCounts
    senders: list[LiveSender]


def _event(name: str, body: msgspec.Struct) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(body) + b"\n\n"


def _skipped(runs: list[Run]) -> dict[str, int]:
    out: dict[str, int] = {}
    for run in runs:
        if run.spec.is_test:
            continue
        for key, reason in _SKIP_REASONS.items():
            n = run.counts.get(key, 0)
            if n:
                out[reason] = out.get(reason, 0) + n
    return out


class _MailingFeed:
    """One stream's looks at one mailing, and what it keeps between them."""

    def __init__(self, api: ApiState, service: MailingService, mailing_id: int) -> None:
        self.api = api
        self.service = service
        self.mailing_id = mailing_id
        self.busy = False
        #: The list of runs, when it was read, and for which (run id, status).
        self._view: MailingView | None = None
        self._view_at = -1e18
        self._view_key: tuple[int | None, str] | None = None
        #: What the runs before the latest one skipped (read with the view).
        self._earlier: dict[str, int] = {}
        #: The previous message's (monotonic time, segments per sender).
        self._last: tuple[float, dict[str, int]] | None = None

    async def _detail(self, status: MailingStatus, now: float) -> MailingDetail:
        key = (status.run_id, status.status)
        if self._view is None or key != self._view_key or now - self._view_at >= VIEW_TTL:
            store = self.api.store
            mailing = await store.get_mailing(self.mailing_id)
            self._view = await describe(self.api.herald, mailing, runs=DETAIL_RUNS)
            runs = await store.mailing_runs(self.mailing_id)
            self._earlier = _skipped([r for r in runs if r.id != status.run_id])
            self._view_at, self._view_key = now, key
        view = self._view
        return MailingDetail(
            **msgspec.structs.asdict(status), next_launch_at=view.next_launch_at,
            timezone=view.timezone, options=view.options, variants=view.variants,
            winner=view.winner, launches_total=view.launches_total,
            tests_total=view.tests_total, launches=view.launches, tests=view.tests,
        )

    def _senders(self, resource: str, segments: dict[str, int], now: float) -> list[LiveSender]:
        """The senders the mailing's resource routes to (in its rules' order), then any
        other its messages went through, with their pace since the previous look."""
        config = self.api.herald.config
        names: list[str] = []
        res = config.resources.get(resource)
        if res is not None and res.virtual_sender in config.virtual_senders:
            for rule in config.virtual_senders[res.virtual_sender].rules:
                names += [t.sender for t in rule.senders if t.sender not in names]
        names += [n for n in segments if n not in names]
        previous = self._last
        out = []
        for name in names:
            s = config.senders.get(name)
            paced = s if s is not None and s.rate > 0 else None
            mine = segments.get(name, 0)
            rate = 0.0
            if previous is not None and now > previous[0]:
                rate = max(mine - previous[1].get(name, 0), 0) / (now - previous[0])
            out.append(LiveSender(
                name=name, segments=mine, rate=round(rate, 1),
                limit=paced.rate if paced else None, burst=paced.burst if paced else None))
        return out

    async def look(self) -> LiveStatus:
        """The mailing now (NotFound once it is gone)."""
        store = self.api.store
        now = anyio.current_time()
        status = await self.service.status(self.mailing_id)
        detail = await self._detail(status, now)
        self.busy = status.status == "running" or status.in_flight > 0
        rows = await store.report_channel(ReportFilter(mailings=(self.mailing_id,)),
                                          by="sender")
        counts = LiveCounts()
        for row in rows:
            for field in ChannelRow._fields[1:]:
                setattr(counts, field, getattr(counts, field) + getattr(row, field))
        skipped = dict.fromkeys(_ALWAYS, 0) | self._earlier
        latest = await store.latest_run(self.mailing_id)
        if latest is not None:
            for reason, n in _skipped([latest]).items():
                skipped[reason] = skipped.get(reason, 0) + n
        counts.skipped = skipped
        segments = {str(r.key): r.segments for r in rows if r.key}
        senders = self._senders(detail.resource, segments, now)
        self._last = (now, segments)
        return LiveStatus(at=time.time(), mailing=detail, counts=counts, senders=senders)


async def _still_allowed(request: Req) -> bool:
    """Whether the token the stream began with is still live (a cached check)."""
    scheme, _, secret = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return await api_state(request).tokens.verify(secret.strip()) is not None


@get("/mailings/{mailing_id:int}/live", **guarded("viewer", 400, 404, 503),
     tags=["mailings"], summary="A mailing's live status (server-sent events)",
     media_type="text/event-stream", include_in_schema=False)
async def mailing_live(request: Req, mailing_id: MailingId) -> Stream:
    """``event: status`` messages with the mailing, its counts and its senders' pace:
    every 0.5 s while it runs, every 5 s otherwise."""
    feed = _MailingFeed(api_state(request), service_of(request), mailing_id)
    first = await feed.look()  # a 404 before the stream begins

    async def events() -> AsyncIterator[bytes]:
        status: LiveStatus | None = first
        while status is not None:
            yield _event("status", status)
            await anyio.sleep(FAST if feed.busy else SLOW)
            status = None
            if await _still_allowed(request):
                try:
                    status = await feed.look()
                except NotFound:
                    pass  # the mailing was deleted: the stream ends

    return Stream(events(), media_type="text/event-stream", headers=HEADERS)


@get("/senders/live", **guarded("viewer", 503), tags=["service"],
     summary="The senders, live (server-sent events)", media_type="text/event-stream",
     include_in_schema=False)
async def senders_live(request: Req) -> Stream:
    """``event: senders`` messages with ``GET /api/v1/senders``'s body, every second."""
    service_of(request)
    api = api_state(request)

    async def events() -> AsyncIterator[bytes]:
        while True:
            yield _event("senders", senders_now(api))
            await anyio.sleep(SENDERS_EVERY)
            if not await _still_allowed(request):
                return

    return Stream(events(), media_type="text/event-stream", headers=HEADERS)


ROUTES = [mailing_live, senders_live]
