"""``GET /metrics``: the mailing service's statistics in Prometheus' text format.

Written by hand from ``MailingService.statistics()``: a dozen lines of formatting, against
prometheus_client's registry and collectors for figures that already exist as a snapshot.

=====================================  =========  ===========================================
metric                                 type       what
=====================================  =========  ===========================================
``herald_mailings_running``            gauge      mailings whose run is going on
``herald_sender_sent_total``           counter    messages a sender's gateway accepted
``herald_sender_failed_total``         counter    messages that failed for good
``herald_sender_throttled_total``      counter    throttling answers (429, SMPP THROTTLED)
``herald_sender_in_flight``            gauge      messages submitted, not answered yet
``herald_sender_latency_seconds``      histogram  seconds per gateway call
``herald_stage_busy_seconds_total``    counter    seconds each pipeline stage spent working
``herald_auth_failures_total``         counter    requests with no, an unknown or a revoked token
``herald_auth_refused_total``          counter    429s to addresses with too many failures
=====================================  =========  ===========================================

Sender metrics carry a ``sender`` label, stage busy time a ``stage`` label. Counters count
since the service started.
"""

from __future__ import annotations

from litestar import Response, get

from engine.api.auth import guarded
from engine.api.auth_failures import AuthFailures
from engine.api.state import Req, api_state
from engine.service import ServiceStats

__all__ = ["CONTENT_TYPE", "ROUTES", "exposition"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return str(value) if isinstance(value, int) else repr(float(value))


def exposition(stats: ServiceStats | None, auth: AuthFailures | None = None) -> str:
    """The Prometheus text exposition of a statistics snapshot (None: no service) and of
    the API's failed authentications."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("herald_mailings_running", "gauge", "Mailings whose run is going on.")
    out.append(f"herald_mailings_running {stats.running if stats else 0}")
    senders = stats.senders if stats else []
    for metric, kind, attr, help_text in (
        ("herald_sender_sent_total", "counter", "sent", "Messages the gateway accepted."),
        ("herald_sender_failed_total", "counter", "failed", "Messages that failed for good."),
        ("herald_sender_throttled_total", "counter", "throttled",
         "Throttling answers from the gateway."),
        ("herald_sender_in_flight", "gauge", "in_flight",
         "Messages submitted and not answered yet."),
    ):
        family(metric, kind, help_text)
        for s in senders:
            out.append(f'{metric}{{sender="{_label(s.name)}"}} {getattr(s, attr)}')
    family("herald_sender_latency_seconds", "histogram", "Seconds per gateway call.")
    for s in senders:
        label = f'sender="{_label(s.name)}"'
        buckets = list(zip(s.latency_buckets, s.latency_counts, strict=True))
        if not buckets or buckets[-1][0] != float("inf"):
            buckets.append((float("inf"), s.latency_count))
        for bound, count in buckets:
            out.append(f'herald_sender_latency_seconds_bucket{{{label},le="{_num(bound)}"}}'
                       f" {count}")
        out.append(f"herald_sender_latency_seconds_sum{{{label}}} {_num(s.latency_sum)}")
        out.append(f"herald_sender_latency_seconds_count{{{label}}} {s.latency_count}")
    family("herald_stage_busy_seconds_total", "counter",
           "Seconds each pipeline stage spent working.")
    for stage, seconds in sorted((stats.busy_s if stats else {}).items()):
        out.append(f'herald_stage_busy_seconds_total{{stage="{_label(stage)}"}} {_num(seconds)}')
    family("herald_auth_failures_total", "counter",
           "Requests with no, an unknown or a revoked token.")
    out.append(f"herald_auth_failures_total {auth.total if auth else 0}")
    family("herald_auth_refused_total", "counter",
           "Requests refused (429) after too many failed authentications.")
    out.append(f"herald_auth_refused_total {auth.refused if auth else 0}")
    return "\n".join(out) + "\n"


@get(["/metrics", "/api/v1/metrics"], **guarded("viewer"),
     tags=["service"], summary="Prometheus metrics", media_type=CONTENT_TYPE)
async def metrics(request: Req) -> Response[str]:
    """Per-sender counters and gateway latency, per-stage busy time."""
    state = api_state(request)
    service = state.service
    body = exposition(service.statistics() if service is not None else None,
                      state.auth_failures)
    return Response(body, media_type=CONTENT_TYPE)


ROUTES = [metrics]
