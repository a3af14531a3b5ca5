"""``GET /api/v1/senders`` (viewer): each ``[senders.NAME]`` with its address (an SMS
sender's ``caller_id``, an email sender's ``from`` and ``reply_to``), its configured pace, its
current weight in each virtual sender, its health, what it sent since this process
started, and its last gateway errors. ``GET /api/v1/senders/live`` (``engine.api.live``)
pushes the same body every second.

The figures are this process's (its runs, its routers' health): under ``herald serve
--workers N`` or on a cluster each process answers for itself. A sender with no run
going on here is ``ok`` with its configured weight: nothing says otherwise.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import get

from engine.api.auth import guarded
from engine.api.state import ApiState, Req, api_state, service_of
from engine.config import Config
from engine.core.routing import HealthState, RouterStats

__all__ = ["ROUTES", "SenderError", "SenderList", "SenderView", "senders_now"]

Health = Literal["ok", "degraded", "down"]
_HEALTH: dict[HealthState, Health] = {
    "healthy": "ok", "recovering": "degraded", "failing": "degraded", "unreachable": "down"}
_RANK: dict[Health, int] = {"ok": 0, "degraded": 1, "down": 2}


class SenderError(msgspec.Struct, kw_only=True):
    #: Seconds since the epoch.
    at: float
    error: str


class SenderView(msgspec.Struct, kw_only=True):
    """One sender: its config, live weight and health, and totals since start-up."""

    name: str
    gateway: str
    #: An SMS sender's caller id (None for an email sender).
    caller_id: str | None
    #: Segments per second (0: unlimited), burst (segments), window (messages in flight).
    rate: float
    burst: int
    window: int
    #: Virtual sender -> percent of its traffic this sender gets now (in the rule that
    #: gives it most), its configured share when no run routes through it here.
    weight: dict[str, float]
    health: Health
    sent: int = 0
    failed: int = 0
    #: Throttling answers from its gateway (each pushed the whole sender back).
    throttled: int = 0
    in_flight: int = 0
    last_errors: list[SenderError] = msgspec.field(default_factory=list)
    #: An email sender's From address (``"News <news@example.com>"``) and Reply-To.
    from_: str | None = msgspec.field(default=None, name="from")
    reply_to: str | None = None


class SenderList(msgspec.Struct):
    senders: list[SenderView]


def _configured(config: Config) -> dict[str, dict[str, float]]:
    """sender -> virtual sender -> its configured percent of the traffic (the most any
    rule gives it)."""
    out: dict[str, dict[str, float]] = {}
    for vs_name, vs in config.virtual_senders.items():
        for rule in vs.rules:
            total = sum(t.percent for t in rule.senders)
            for t in rule.senders:
                share = 100 * t.percent / total if total else 0.0
                mine = out.setdefault(t.sender, {})
                mine[vs_name] = round(max(mine.get(vs_name, 0.0), share), 1)
    return out


def _live(routing: list[tuple[str, RouterStats]]) -> tuple[
        dict[str, dict[str, float]], dict[str, Health]]:
    """From the routers of the runs going on: sender -> virtual sender -> percent now,
    and each sender's worst health."""
    weights: dict[str, dict[str, float]] = {}
    health: dict[str, Health] = {}
    for vs_name, stats in routing:
        seen: dict[str, float] = {}
        for rule in stats.rules:
            for w in rule.senders:
                seen[w.name] = max(seen.get(w.name, 0.0), round(100 * w.share, 1))
        for name, share in seen.items():
            weights.setdefault(name, {})[vs_name] = share
        for h in stats.senders:
            now = _HEALTH[h.state]
            if _RANK[now] >= _RANK[health.get(h.name, "ok")]:
                health[h.name] = now
    return weights, health


def senders_now(state: ApiState) -> SenderList:
    """The body of ``GET /api/v1/senders``: this process's view of every sender."""
    service = state.service
    config = state.herald.config
    metrics = {m.name: m for m in service.statistics().senders} if service else {}
    weights, health = _live(service.routing()) if service else ({}, {})
    configured = _configured(config)
    out = []
    for name, s in config.senders.items():
        m = metrics.get(name)
        view = SenderView(
            name=name, gateway=s.gateway, caller_id=s.caller_id, from_=s.from_,
            reply_to=s.reply_to, rate=s.rate, burst=s.burst, window=s.window,
            weight={**configured.get(name, {}), **weights.get(name, {})},
            health=health.get(name, "ok"))
        if m is not None:
            view.sent, view.failed, view.throttled = m.sent, m.failed, m.throttled
            view.in_flight = m.in_flight
            view.last_errors = [SenderError(at=at, error=e) for at, e in m.last_errors]
        out.append(view)
    return SenderList(out)


@get("/senders", **guarded("viewer", 503), tags=["service"], summary="Senders")
async def list_senders(request: Req) -> SenderList:
    """Each sender's rate, burst, window, current weight per virtual sender, health,
    throttling and last errors (this process's figures)."""
    service_of(request)  # 503 when the service is not running
    return senders_now(api_state(request))


ROUTES = [list_senders]
