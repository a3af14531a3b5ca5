"""What a simulated gateway does (``SimOptions``) and what it has done (``SimStats``)."""

from __future__ import annotations

import math
from urllib.parse import urlsplit

import msgspec

__all__ = ["SimOptions", "SimStats"]

# Host names a receipt_url may carry: receipts never leave the machine.
_LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1"}


class SimOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the simulated gateway behaves. Rates are probabilities in [0, 1]; times seconds.

    Per request, in this order: ``error_rate`` answers 500, ``timeout_rate`` hangs for
    ``hang`` seconds without answering (processing the messages first if ``hang_accepts``),
    ``throttle_rate`` answers 429 with ``retry_after``; over ``max_throughput`` messages per
    second (0 = unlimited; ``burst`` at once, 0 = one second's worth) answers 429 with the
    exact wait. Per message: ``reject_rate`` rejects with ``reject_code``, ``retry_rate``
    answers "retry", the rest are accepted. Receipts go to ``receipt_url`` after
    ``receipt_delay``, ``undelivered_rate`` of them "undelivered". Inbound messages
    (recipients' replies: ``send_inbound``, ``POST /inbound``) go to ``inbound_url``.
    """

    latency: float = 0.0
    jitter: float = 0.0
    max_throughput: float = 0.0
    burst: int = 0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    hang: float = 3600.0
    hang_accepts: bool = False
    throttle_rate: float = 0.0
    retry_after: float = 1.0
    reject_rate: float = 0.0
    reject_code: str = "invalid_number"
    retry_rate: float = 0.0
    idempotent: bool = False
    receipt_url: str | None = None
    receipt_delay: float = 0.0
    undelivered_rate: float = 0.0
    undelivered_code: str = "expired"
    track_ids: bool = True
    seed: int | None = None
    inbound_url: str | None = None

    def __post_init__(self) -> None:
        rates = ("error_rate", "timeout_rate", "throttle_rate", "reject_rate", "retry_rate")
        for name in (*rates, "undelivered_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.error_rate + self.timeout_rate + self.throttle_rate > 1.0:
            raise ValueError("error_rate + timeout_rate + throttle_rate must not exceed 1")
        if self.reject_rate + self.retry_rate > 1.0:
            raise ValueError("reject_rate + retry_rate must not exceed 1")
        for name in ("latency", "jitter", "max_throughput", "hang", "retry_after"):
            if not 0.0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0")
        for name in ("receipt_url", "inbound_url"):
            url = getattr(self, name)
            if url is None:
                continue
            parts = urlsplit(url)
            if parts.scheme != "http" or parts.hostname not in _LOOPBACK_NAMES:
                raise ValueError(
                    f"{name} must be http:// on loopback (127.0.0.1), not {url!r}"
                )


class SimStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of a simulator.

    ``duplicates``: accepted ids submitted again (answered from memory when ``idempotent``,
    accepted again otherwise); ``accepted_twice``: ids accepted more than once, the number a
    "nothing sent twice" test wants at 0. Both need ``track_ids`` (or ``idempotent``).
    """

    requests: int
    messages: int
    accepted: int
    rejected: int
    retried: int
    errors: int
    timeouts: int
    throttled: int
    bad_requests: int
    duplicates: int
    accepted_twice: int
    receipts_sent: int
    receipts_failed: int
    #: Inbound messages POSTed to ``inbound_url`` and answered 2xx, or not.
    inbound_sent: int = 0
    inbound_failed: int = 0
