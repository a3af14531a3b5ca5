"""Recipient states, skip reasons and the transitions between states.

::

    pending ─┬─▶ sent ──────┬─▶ undelivered ──▶ delivered
             │              └─────────────────▶ delivered
             ├─▶ unknown ───┬─▶ sent, failed               (resume learns its fate)
             │              └─▶ undelivered, delivered     (a receipt settles it)
             └─▶ failed                (rejected, or retries exhausted; reason kept)
    skipped                             (never sent; reason says why)

``pending`` exists only inside a reserved batch (the run's journal); a recipient row is
written once its fate is known. ``TRANSITIONS`` is this diagram and ``can_move`` reads it:
nothing else decides whether a recipient may move.

Delivery receipts move a recipient up one order, ``sent | unknown < undelivered <
delivered``, and never down it:

=================  =========  ===========  ==========================================
recipient in       delivered  undelivered
=================  =========  ===========  ==========================================
sent               yes        yes          the gateway's verdict
unknown            yes        yes          a receipt settles a message in doubt
undelivered        yes        no (same)    a late delivery is real
delivered          no (same)  no           a delivery is never taken back
failed, skipped    no         no           the gateway never took it
=================  =========  ===========  ==========================================

A refused receipt, including one for the state already reached, changes nothing. The
error kept is that of the state reached: ``undelivered`` sets the receipt's error,
``delivered`` sets the receipt's own (usually none), clearing an earlier one. The same
order decides between two receipts for one message: several in one call are applied in
order of their ``at`` (one without counts as received now; ties in the order received),
and a receipt kept for a message not recorded yet is replaced by a later one only if it
could move from it.
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
    #: An email channel's address that email-validator refuses (``engine.core.emails``).
    INVALID_EMAIL = "invalid_email"
    SUPPRESSED = "suppressed"
    DUPLICATE = "duplicate"
    TOO_LONG = "too_long"
    POLICY = "policy"
    NOT_SUBSCRIBED = "not_subscribed"
    CANCELLED = "cancelled"
    #: The template rendered to nothing (or only blanks) for this profile.
    EMPTY = "empty"
    #: Held out in the mailing's or the database's control group (``engine.core.groups``).
    CONTROL = "control"


#: The moves allowed from each state, as the module docstring draws them. A state is not
#: a move from itself: the same receipt twice changes nothing.
TRANSITIONS: dict[State, frozenset[State]] = {
    State.PENDING: frozenset({State.SENT, State.FAILED, State.UNKNOWN}),
    State.SENT: frozenset({State.DELIVERED, State.UNDELIVERED}),
    State.UNKNOWN: frozenset({State.SENT, State.DELIVERED, State.UNDELIVERED, State.FAILED}),
    State.UNDELIVERED: frozenset({State.DELIVERED}),  # a late delivery is real
    State.DELIVERED: frozenset(),  # never taken back
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
