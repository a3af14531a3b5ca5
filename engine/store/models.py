"""Records the store hands back: plain immutable Structs, no connection attached."""

from __future__ import annotations

import os
import socket
from typing import Any, Literal

import msgspec

from engine.core.policy import Policy

__all__ = ["AudienceSource", "Mailing", "Run", "RunStatus", "run_is_live"]

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
