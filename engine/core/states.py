"""Recipient states, skip reasons and the transitions between states.

::

    pending ──▶ sent ──▶ delivered
       │          └────▶ undelivered
       ├──────▶ failed            (rejected, or retries exhausted; reason kept)
       └──────▶ unknown           (in flight when the process died; see resume)
    skipped                        (never sent; reason says why)

``pending`` exists only inside a reserved batch (the run's journal); a recipient row is
written once its fate is known. ``unknown`` can be settled later by a delivery receipt.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec

__all__ = ["FINAL", "TRANSITIONS", "Outcome", "Skip", "State", "can_move"]


class State(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNKNOWN = "unknown"


class Skip(StrEnum):
    """Why a recipient was not sent anything."""

    INVALID_PHONE = "invalid_phone"
    SUPPRESSED = "suppressed"
    DUPLICATE = "duplicate"
    TOO_LONG = "too_long"
    POLICY = "policy"
    NOT_SUBSCRIBED = "not_subscribed"
    CANCELLED = "cancelled"
    #: The template rendered to nothing (or only blanks) for this profile.
    EMPTY = "empty"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.SENT, State.FAILED, State.UNKNOWN}),
    State.SENT: frozenset({State.DELIVERED, State.UNDELIVERED}),
    State.UNKNOWN: frozenset({State.SENT, State.DELIVERED, State.UNDELIVERED, State.FAILED}),
    State.DELIVERED: frozenset(),
    State.UNDELIVERED: frozenset({State.DELIVERED}),
    State.FAILED: frozenset(),
    State.SKIPPED: frozenset(),
}

#: States after which nothing more is sent for a recipient.
FINAL = frozenset(State) - {State.PENDING}


def can_move(old: State, new: State) -> bool:
    return new in TRANSITIONS[old]


class Outcome(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The final fate of one reserved message, as the dispatcher reports it."""

    seq: int
    state: str
    reason: str | None = None
    provider_id: str | None = None
    error: str | None = None
    attempts: int = 1
