"""Records the store hands back: plain immutable Structs, no connection attached."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from engine.core.policy import Policy

__all__ = [
    "AudienceSource", "Mailing", "Run", "RunStatus", "mailing_from_row", "run_from_row",
    "run_is_live",
]

RunStatus = Literal["running", "finished", "interrupted", "failed", "cancelled"]


class AudienceSource(msgspec.Struct, frozen=True):
    """Where a mailing's audience comes from: a whole profile database or a segment."""

    kind: Literal["list", "segment"]
    database_id: int
    segment_id: int | None = None


class Mailing(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    kind: Literal["broadcast", "regular", "trigger"] = "broadcast"
    resource: str
    source: AudienceSource
    template: str
    limit: int | None = None
    document: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: float
    #: This mailing's own sending policy (over its resource's and the account's).
    policy: Policy | None = None


class Run(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    uid: str
    mailing_id: int
    status: RunStatus
    started_at: float
    finished_at: float | None = None
    #: Keyset position of the audience cursor: every profile id <= this one is settled.
    checkpoint: int = 0
    next_seq: int = 1
    audience_done: bool = False
    counts: dict[str, int] = msgspec.field(default_factory=dict)
    timings: dict[str, float] = msgspec.field(default_factory=dict)
    pid: int | None = None
    host: str | None = None
    error: str | None = None


def run_is_live(run: Run) -> bool:
    """True when a run says running and its process is still there.

    A run killed with ``kill -9`` still says running; its process is gone, so it is not
    live and may be resumed. A run of another host cannot be checked: assumed live.
    """
    if run.status != "running" or run.pid is None:
        return False
    if run.host != socket.gethostname():
        return True
    if run.pid == os.getpid():
        return True
    try:
        os.kill(run.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_decode_dict = msgspec.json.Decoder(dict[str, Any]).decode
_decode_counts = msgspec.json.Decoder(dict[str, int]).decode
_decode_timings = msgspec.json.Decoder(dict[str, float]).decode
_decode_policy = msgspec.json.Decoder(Policy).decode


def mailing_from_row(row: Sequence[Any]) -> Mailing:
    """A mailing from the stores' column order: id, name, kind, resource, source kind,
    database id, segment id, template, limit, document (JSON), created at, policy (JSON)."""
    return Mailing(
        id=row[0], name=row[1], kind=row[2], resource=row[3],
        source=AudienceSource(row[4], row[5], row[6]), template=row[7], limit=row[8],
        document=_decode_dict(row[9]), created_at=row[10],
        policy=_decode_policy(row[11]) if row[11] else None,
    )


def run_from_row(row: Sequence[Any]) -> tuple[Mailing, Run]:
    """A run and its mailing from the stores' column order: the run's 14 columns (counts
    and timings as JSON), then the mailing's (``mailing_from_row``)."""
    run = Run(
        id=row[0], uid=row[1], mailing_id=row[2], status=row[3], started_at=row[4],
        finished_at=row[5], checkpoint=row[6], next_seq=row[7], audience_done=bool(row[8]),
        counts=_decode_counts(row[9]), timings=_decode_timings(row[10]), pid=row[11],
        host=row[12], error=row[13],
    )
    return mailing_from_row(row[14:]), run
