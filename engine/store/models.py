"""Records the store hands back: plain immutable Structs, no connection attached."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from engine.core.policy import Policy

__all__ = [
    "AudienceSource", "Mailing", "MailingOptions", "MailingState", "Run", "RunSpec",
    "RunStatus", "Schedule", "Step", "StepKind", "mailing_from_row", "run_from_row",
    "run_is_live", "step_from_row",
]

RunStatus = Literal["running", "finished", "interrupted", "failed", "cancelled"]
MailingKind = Literal["broadcast", "regular", "multivariate", "trigger"]
#: ``draft``: launched by hand only; ``scheduled``: ``next_launch`` says when;
#: ``waiting``: a multivariate mailing between its test and its winner (``next_launch``
#: is the end of the wait, None while a ``manual`` one waits for ``mailing pick``);
#: ``done``: no launch left; ``cancelled``: for good.
MailingState = Literal["draft", "scheduled", "waiting", "done", "cancelled"]
Winner = Literal["clicks", "unique_clicks", "delivered", "manual"]


class Schedule(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """When a mailing launches: once, ``at`` a wall-clock time, or on a ``cron`` schedule,
    both in ``timezone`` (an IANA name), until ``until`` (a wall-clock time there).

    Times are kept as the user wrote them (``2026-12-24T10:00``), not as instants, so a
    daylight-saving change between now and then is zoneinfo's to resolve, at launch."""

    at: str | None = None
    #: Five fields, with croniter's extensions (``MON#1``: the first Monday of a month).
    cron: str | None = None
    timezone: str = "UTC"
    until: str | None = None
    #: Send each recipient at the schedule's time in their profile's ``_tz``.
    local_time: bool = False
    #: With ``local_time``: those whose time has passed when the run starts get it
    #: ``now``, or at that time the ``next`` day.
    late: Literal["now", "next"] = "now"


class MailingOptions(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a mailing is beyond its audience and template (all optional)."""

    #: A multivariate mailing's templates (2 to 8), variant 1 first; [] for other kinds,
    #: whose one template is ``Mailing.template``.
    variants: list[str] = msgspec.field(default_factory=list)
    #: Percent of the eligible audience that takes part in the test, split evenly among
    #: the variants; the rest gets the winner. 100: a plain split, no winner phase.
    test_share: float | None = None
    winner: Winner | None = None
    #: Seconds between the test and the choice of the winner.
    wait: float | None = None
    #: Percent of the eligible audience held out of this mailing (reason ``control``).
    control: float = 0.0
    #: Send to the database's global control group too (transactional mail).
    ignore_global_control: bool = False
    #: A trigger mailing obeys its resource's ``quiet_hours`` (broadcasts always do).
    quiet_hours: bool = False
    schedule: Schedule | None = None
    #: An email mailing's subject template (``Mailing.template`` is then its HTML).
    subject: str | None = None
    #: An email mailing's text version; None: made from the HTML (Altcraft's "Text
    #: version" button), once, when the mailing's templates are compiled.
    text: str | None = None


class RunSpec(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What one run of a mailing is for (all defaults: a launch over the whole audience)."""

    #: ``launch``: a broadcast's or regular mailing's run; ``test``: a multivariate
    #: mailing's test of one variant; ``winner``: its winner to the rest; ``trial``: a
    #: ``mailing test`` send to given phones.
    phase: Literal["launch", "test", "winner", "trial"] = "launch"
    #: Which template (0-based index into ``MailingOptions.variants``; 0 otherwise).
    variant: int = 0
    #: The run takes only the profiles whose variant hash (``engine.core.groups``) falls
    #: in ``[lo, hi)`` of [0, 1); None: every profile.
    share: tuple[float, float] | None = None
    #: Test messages: no dedupe, no policy, in no report or policy count.
    is_test: bool = False
    #: The scheduled time (seconds since the epoch) this launch was for, and how many
    #: launches before it were missed while nothing ran (they run once, as this one).
    due: float | None = None
    missed: int = 0
    #: A trial's phones, and the profile whose data it renders (None: the audience's first).
    phones: list[str] = msgspec.field(default_factory=list)
    profile_id: int | None = None
    #: Why this variant won, for the log (a winner run): the figure per variant.
    decided: dict[str, float] = msgspec.field(default_factory=dict)
    #: A wave of a launch in the recipients' local time (``Schedule.local_time``) or
    #: held by quiet hours: the run takes the profiles whose send time falls in
    #: ``(after, until]`` (seconds since the epoch); ``wave`` counts from 1. None: all.
    window: tuple[float, float] | None = None
    wave: int = 0


#: What a launch step does once due: ``run`` starts a run with its spec; ``wave`` is
#: the next wave of a phase (its time and window read from the finished wave's counts
#: when it is taken); ``wait`` ends a multivariate mailing's tests (its wait, then the
#: winner).
StepKind = Literal["run", "wave", "wait"]


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """A launch's next step, kept in the store (``RunStore.add_step``) so that whichever
    scheduler runs next takes it, once: due when run ``after_run`` (if any) is finished
    and time ``at`` (if any) has come."""

    id: int
    mailing_id: int
    kind: StepKind = "run"
    spec: RunSpec
    after_run: int | None = None
    at: float | None = None


class AudienceSource(msgspec.Struct, frozen=True):
    """Where a mailing's audience comes from: a whole profile database or a segment."""

    kind: Literal["list", "segment"]
    database_id: int
    segment_id: int | None = None
    #: The resource's channel: which of a profile's subscriptions the audience reads
    #: (``subscriptions.phone`` holds the channel's address: an E.164 phone for SMS, a
    #: normalised email address for email).
    channel: Literal["sms", "email"] = "sms"


class Mailing(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    name: str
    kind: MailingKind = "broadcast"
    resource: str
    source: AudienceSource
    template: str
    limit: int | None = None
    document: dict[str, Any] = msgspec.field(default_factory=dict)
    created_at: float
    #: This mailing's own sending policy (over its resource's and the account's).
    policy: Policy | None = None
    options: MailingOptions = MailingOptions()
    state: MailingState = "draft"
    #: When it launches next (seconds since the epoch), if it is scheduled.
    next_launch: float | None = None


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
    spec: RunSpec = RunSpec()


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
_decode_options = msgspec.json.Decoder(MailingOptions).decode
_decode_spec = msgspec.json.Decoder(RunSpec).decode
_DEFAULT_OPTIONS = MailingOptions()
_DEFAULT_SPEC = RunSpec()


def _options(value: Any) -> MailingOptions:
    if not value or value in ("{}", b"{}"):
        return _DEFAULT_OPTIONS
    if isinstance(value, dict):  # PostgreSQL's JSONB comes decoded
        return msgspec.convert(value, MailingOptions)
    return _decode_options(value)


def _spec(value: Any) -> RunSpec:
    if not value or value in ("{}", b"{}"):
        return _DEFAULT_SPEC
    if isinstance(value, dict):
        return msgspec.convert(value, RunSpec)
    return _decode_spec(value)


def mailing_from_row(row: Sequence[Any]) -> Mailing:
    """A mailing from the stores' column order: id, name, kind, resource, source kind,
    database id, segment id, template, limit, document (JSON), created at, policy (JSON),
    options (JSON), state, next launch."""
    return Mailing(
        id=row[0], name=row[1], kind=row[2], resource=row[3],
        source=AudienceSource(row[4], row[5], row[6]), template=row[7], limit=row[8],
        document=_decode_dict(row[9]), created_at=row[10],
        policy=_decode_policy(row[11]) if row[11] else None,
        options=_options(row[12]), state=row[13], next_launch=row[14],
    )


def run_from_row(row: Sequence[Any]) -> tuple[Mailing, Run]:
    """A run and its mailing from the stores' column order: the run's 15 columns (counts,
    timings and spec as JSON), then the mailing's (``mailing_from_row``)."""
    run = Run(
        id=row[0], uid=row[1], mailing_id=row[2], status=row[3], started_at=row[4],
        finished_at=row[5], checkpoint=row[6], next_seq=row[7], audience_done=bool(row[8]),
        counts=_decode_counts(row[9]), timings=_decode_timings(row[10]), pid=row[11],
        host=row[12], error=row[13], spec=_spec(row[14]),
    )
    return mailing_from_row(row[15:]), run


def step_from_row(row: Sequence[Any]) -> Step:
    """A step from the stores' column order: id, mailing id, kind, spec (JSON), after
    run, at."""
    return Step(id=row[0], mailing_id=row[1], kind=row[2], spec=_spec(row[3]),
                after_run=row[4], at=row[5])
