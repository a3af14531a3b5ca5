"""Mailings of every kind, as one process runs them: created (with every check), launched,
tested, and a multivariate mailing's winner chosen.

A mailing's runs, by kind::

    broadcast      one launch (now, or ``at`` a time): one run
    regular        a launch per ``schedule`` (cron) time, until ``until``: a run each
    multivariate   one launch: a test run per variant, each to its share of the
                   audience, one after another; then the ``wait``; then the winner run
                   to the rest (``manual``: when ``pick`` says which)
    trigger        one run that takes trigger calls (``engine.service``)

A variant's share is a slice of [0, 1) that ``engine.core.groups.share_point`` of each
profile falls in: variant k of n takes ``[k*s/n, (k+1)*s/n)``, s = test_share/100, the
winner ``[s, 1)``, so every profile gets one message over all the runs.

Times of a schedule are wall-clock strings in its time zone, resolved with zoneinfo when a
launch is computed (``next_launch``). A wall-clock time runs once: on a fall-back day the
repeated hour's times run at their first occurrence only, and a time that a spring-forward
day skips runs when the clock jumps past it (02:30 of a 02:00→03:00 day at 03:30).
croniter iterates the wall-clock times; it is not given aware datetimes, as it runs a time
of the repeated hour twice then.

Launching takes a mailing's launch through ``RunStore.set_launch`` (compare-and-set): of
processes that saw a launch due, or a user starting it while a scheduler takes it, only
one runs it (``engine.scheduling``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from functools import partial
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
import msgspec
from croniter import croniter

from engine.audience import resolve_audience
from engine.core.localtime import EARLIEST, next_wave
from engine.core.phones import PhoneNormaliser
from engine.core.policy import Policy
from engine.core.templates import refuse_blank
from engine.errors import InputError, StoreError, TemplateError
from engine.mailing_log import MailingLog
from engine.pipeline import run_template, send_times
from engine.runner import Herald
from engine.store.models import (
    Mailing,
    MailingKind,
    MailingOptions,
    MailingState,
    Run,
    RunSpec,
    Schedule,
    Step,
    StepKind,
    Winner,
)

__all__ = [
    "Clock",
    "Execute",
    "Launch",
    "MailingSpec",
    "Sleep",
    "WaveState",
    "after_tests",
    "claim_pick",
    "compile_mailing",
    "continue_launch",
    "create_mailing",
    "decide_winner",
    "default_timezone",
    "end_tests",
    "first_wave",
    "follow",
    "launch",
    "next_launch",
    "next_window",
    "phase_end",
    "pick",
    "resolve_time",
    "run_phase",
    "run_steps",
    "run_template",
    "run_waves",
    "template_part",
    "test_mailing",
    "test_specs",
    "wave_end",
    "wave_time",
    "winner_spec",
]

#: Runs one run of a mailing to its end, and returns its log (``herald.execute`` by
#: default; the service's keeps the run's progress, pause and cancel).
Execute = Callable[[Mailing, Run], Awaitable[MailingLog]]
Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class MailingSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a new mailing is (``POST /api/v1/mailings``, ``herald mailing create``: same
    names). Kinds: ``broadcast`` (to an audience, when started or ``at`` a time),
    ``regular`` (on a cron ``schedule``), ``multivariate`` (2 to 8 ``templates`` tested on
    ``test_share`` percent, the best to the rest), ``trigger`` (a message per call)."""

    name: str
    kind: MailingKind
    resource: str
    #: The one template (or give ``templates``): an SMS text, or an email resource's HTML.
    template: str | None = None
    #: A multivariate mailing's templates, variant 1 first (of email: HTML bodies that
    #: share the ``subject`` and ``text``).
    templates: list[str] = msgspec.field(default_factory=list)
    #: An email resource's subject (a template too; required there, refused on SMS).
    subject: str | None = None
    #: An email resource's text version; None: made from each HTML body.
    text: str | None = None
    database: str | None = None
    segment: str | None = None
    limit: int | None = None
    #: The JSON document templates reach as ``{json.*}``.
    document: dict[str, Any] = msgspec.field(default_factory=dict)
    #: This mailing's sending policy (over its resource's and the account's).
    policy: Policy | None = None
    #: Launch once at this wall-clock time (``2026-12-24T10:00``) in ``timezone``.
    at: str | None = None
    #: Launch on this cron schedule (five fields; ``MON#1``: a month's first Monday).
    schedule: str | None = None
    #: An IANA name; default ``[engine] timezone``, else UTC.
    timezone: str | None = None
    #: No launch after this wall-clock time.
    until: str | None = None
    #: Each recipient at the schedule's time in their profile's ``_tz`` (else in
    #: ``timezone``); those whose time has passed at the launch get it ``now``, or at
    #: that time the ``next`` day (``late``). Needs ``at`` or ``schedule``.
    local_time: bool = False
    late: Literal["now", "next"] = "now"
    test_share: float | None = None
    winner: Winner | None = None
    #: Seconds between the test and the choice of the winner.
    wait: float | None = None
    control: float = 0.0
    ignore_global_control: bool = False
    #: A trigger mailing obeying its resource's ``quiet_hours``: a call whose recipient
    #: is inside them is held until they end (other kinds always obey).
    quiet_hours: bool = False


class Launch(msgspec.Struct, frozen=True, kw_only=True):
    """One launch a scheduler took: the time it was due (None: by hand), how many due
    before it were missed, and whether it is a multivariate mailing's ``winner`` phase;
    or the ``step`` of a launch under way that it took from the store (the next test,
    the next wave), to carry on from."""

    due: float | None = None
    missed: int = 0
    winner: bool = False
    step: Step | None = None


# -- schedules ---------------------------------------------------------------------------


def default_timezone(herald: Herald) -> str:
    """``[engine] timezone``, else UTC."""
    zone = getattr(herald.config.engine, "timezone", None)
    return zone if isinstance(zone, str) and zone else "UTC"


def _zone(name: str, key: str = "timezone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InputError(f"{key}: no time zone {name!r} (an IANA name such as"
                         " Europe/Moscow)") from None


def _wall(text: str, key: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"{key}: not a date and time: {text!r} (write"
                         " 2026-12-24T10:00)") from None


def _instant(wall: datetime, zone: ZoneInfo) -> float:
    """The instant of a wall-clock time: its first occurrence on a fall-back day; on a
    spring-forward day a skipped time is as far past the jump as it was past the hour
    (zoneinfo's ``fold=0``)."""
    if wall.tzinfo is not None:
        return wall.timestamp()
    return wall.replace(tzinfo=zone, fold=0).timestamp()


def resolve_time(text: str, timezone: str, key: str = "at") -> float:
    """Seconds since the epoch of a wall-clock time in ``timezone`` (an ISO time with an
    offset is taken as it is)."""
    return _instant(_wall(text, key), _zone(timezone))


#: Cron times looked at for one next launch before giving up (a schedule that never
#: comes, such as February 30th, stops croniter itself sooner).
_MAX_STEPS = 10_000


def next_launch(schedule: Schedule, after: float, default_timezone: str = "UTC") -> float | None:
    """The schedule's first launch strictly after ``after`` (seconds since the epoch), or
    None if it has none left (an ``at`` passed, or past ``until``). Each wall-clock time
    of a cron schedule runs once, DST or not (see the module docstring)."""
    zone = _zone(schedule.timezone or default_timezone)
    until = None if schedule.until is None else _instant(_wall(schedule.until, "until"), zone)
    if schedule.at is not None:
        at = _instant(_wall(schedule.at, "at"), zone)
        return at if at > after and (until is None or at <= until) else None
    if schedule.cron is None:
        return None
    wall = datetime.fromtimestamp(after, zone).replace(tzinfo=None)
    it = croniter(schedule.cron, wall)
    for _ in range(_MAX_STEPS):
        try:
            candidate: datetime = it.get_next(datetime)
        except Exception:  # croniter found no time left (it raises its own errors)
            return None
        at = _instant(candidate, zone)
        if until is not None and at > until:
            return None
        if at > after:  # else: a time of the repeated hour, run at its first occurrence
            return at
    return None


def _check_cron(expression: str) -> None:
    if len(expression.split()) != 5 or not croniter.is_valid(expression):
        raise InputError(f"schedule: not a five-field cron schedule: {expression!r} (for"
                         " example '0 10 * * MON#1')")


# -- creating ----------------------------------------------------------------------------


async def create_mailing(
    herald: Herald, spec: MailingSpec, *, now: float | None = None
) -> Mailing:
    """Check ``spec`` (InputError naming the field at fault; TemplateError for a template
    that does not compile or would send blank messages) and store the mailing: scheduled
    if it has a time to launch, else a draft. A trigger mailing's run is the caller's."""
    now = time.time() if now is None else now
    if spec.limit is not None and spec.limit < 0:
        raise InputError("limit: must be 0 or more")
    if spec.resource not in herald.config.resources:
        raise InputError(f"resource: no resource {spec.resource!r} in the config")
    variants = await _templates(herald, spec)
    options = _options(spec, variants)
    schedule = _schedule(herald, spec)
    first: float | None = None
    if schedule is not None:
        first = next_launch(schedule, now, default_timezone(herald))
        if first is None:
            key = "at" if spec.at is not None and spec.until is None else "until"
            raise InputError(f"{key}: the mailing would never launch ({key} {getattr(spec, key)}"
                             f" in {schedule.timezone} is past)")
        options = msgspec.structs.replace(options, schedule=schedule)
    if spec.kind == "trigger" and spec.database is None:
        raise InputError("database: a trigger mailing needs a database")
    source = await resolve_audience(
        herald.store, herald.config, spec.resource,
        database=spec.database if spec.kind == "trigger" or spec.segment is None else None,
        segment=spec.segment if spec.kind != "trigger" else None,
    )
    return await herald.store.create_mailing(
        name=spec.name, kind=spec.kind, resource=spec.resource, source=source,
        template=variants[0], limit=spec.limit, document=spec.document, policy=spec.policy,
        options=options, next_launch=first,
    )


async def compile_mailing(
    herald: Herald, resource: str, template: str, *, subject: str | None = None,
    text: str | None = None,
) -> Any:
    """A mailing's template compiled for its resource's channel (``Herald.compile_for``),
    off the event loop: an SMS text refused when blank; an email resource's ``subject``
    (required), HTML ``template`` and ``text`` version. InputError names ``subject`` or
    ``text`` (given on SMS, missing on email); TemplateError names the part at fault as
    its message's first word (``subject:``, ``template:``, ``text:``) for email."""
    res = herald.config.resources.get(resource)
    if (res is None or res.channel != "email") and subject is None and text is None:
        return refuse_blank(await herald.compile_async(template))
    return await anyio.to_thread.run_sync(
        partial(herald.compile_for, resource, template, subject=subject, text=text))


async def _templates(herald: Herald, spec: MailingSpec) -> list[str]:
    """The mailing's templates, each compiled now (not mid-mailing) and refused if blank;
    an email mailing's with its subject and text version."""
    if spec.template is not None and spec.templates:
        raise InputError("templates: give template or templates, not both")
    texts = spec.templates or ([] if spec.template is None else [spec.template])
    if spec.kind == "multivariate":
        if not 2 <= len(texts) <= 8:
            raise InputError(f"templates: a multivariate mailing has 2 to 8 templates, not"
                             f" {len(texts)}")
    elif len(texts) != 1:
        raise InputError("template: a mailing needs one template" if not texts else
                         f"templates: only a multivariate mailing has several ({spec.kind})")
    for k, text in enumerate(texts):
        try:
            await compile_mailing(herald, spec.resource, text, subject=spec.subject,
                                  text=spec.text)
        except TemplateError as err:
            part, rest = template_part(err)
            if len(texts) == 1 or part != "template":
                raise  # the subject and text version are all the variants'
            raise TemplateError(f"templates[{k + 1}]: {rest}", line=err.line,
                                col=err.col, source_line=err.source_line) from None
    return texts


#: The parts of an email mailing a TemplateError of ``compile_email`` names first.
_EMAIL_PARTS = ("subject", "template", "text")


def template_part(err: TemplateError) -> tuple[str, str]:
    """Which part of a mailing a TemplateError is about (``subject``, ``text``, else
    ``template``), and its message without that part's name."""
    part, sep, rest = err.message.partition(": ")
    if sep and part in _EMAIL_PARTS:
        return part, rest
    return "template", err.message


def _options(spec: MailingSpec, variants: list[str]) -> MailingOptions:
    if spec.local_time and spec.at is None and spec.schedule is None:
        raise InputError("local_time: sends at the schedule's time in each recipient's"
                         " zone: give at or schedule too")
    if not 0 <= spec.control < 100:
        raise InputError(f"control: a percent from 0 to under 100, not {spec.control}")
    if spec.kind != "multivariate":
        for key in ("test_share", "winner", "wait"):
            if getattr(spec, key) is not None:
                raise InputError(f"{key}: only a multivariate mailing has one")
        return MailingOptions(control=spec.control,
                              ignore_global_control=spec.ignore_global_control,
                              quiet_hours=spec.quiet_hours, subject=spec.subject,
                              text=spec.text)
    share = spec.test_share
    if share is None or not 0 < share <= 100:
        raise InputError("test_share: a multivariate mailing needs the percent of its"
                         f" audience to test on, over 0 and at most 100 (not {share})")
    if share == 100:
        if spec.winner is not None:
            raise InputError("winner: test_share 100 is a plain split, with no winner")
    elif spec.winner is None:
        raise InputError("winner: a multivariate mailing needs one of clicks,"
                         " unique_clicks, delivered, manual (or test_share 100)")
    if spec.wait is not None and not (spec.wait >= 0 and math.isfinite(spec.wait)):
        raise InputError(f"wait: seconds, 0 or more, not {spec.wait}")
    return MailingOptions(
        variants=variants, test_share=share, winner=spec.winner,
        wait=None if share == 100 else (spec.wait or 0.0), control=spec.control,
        ignore_global_control=spec.ignore_global_control, quiet_hours=spec.quiet_hours,
        subject=spec.subject, text=spec.text,
    )


def _schedule(herald: Herald, spec: MailingSpec) -> Schedule | None:
    if spec.at is not None and spec.schedule is not None:
        raise InputError("at: give at (once) or schedule (cron), not both")
    if spec.kind == "regular" and spec.schedule is None:
        raise InputError("schedule: a regular mailing needs a cron schedule")
    if spec.kind == "trigger" and (spec.at or spec.schedule):
        raise InputError("at: a trigger mailing sends on each call, it has no schedule")
    if spec.kind in ("broadcast", "multivariate") and spec.schedule is not None:
        raise InputError(f"schedule: a {spec.kind} mailing launches once: use at, or kind"
                         " regular for a periodic one")
    zone = spec.timezone or default_timezone(herald)
    _zone(zone)
    if spec.at is None and spec.schedule is None:
        if spec.until is not None:
            raise InputError("until: only a scheduled mailing ends")
        return None
    if spec.schedule is not None:
        _check_cron(spec.schedule)
    for key in ("at", "until"):
        text = getattr(spec, key)
        if text is not None:
            _wall(text, key)
    return Schedule(at=spec.at, cron=spec.schedule, timezone=zone, until=spec.until,
                    local_time=spec.local_time, late=spec.late)


# -- launching ---------------------------------------------------------------------------


def _execute_here(herald: Herald, progress: Any = None, handle_signals: bool = False
                  ) -> Execute:
    """Each run in this process; ``handle_signals``: Ctrl-C or SIGTERM stops the run in
    progress gracefully (a second one stops waiting for its gateways), as in
    ``herald send``."""
    async def execute(mailing: Mailing, run: Run) -> MailingLog:
        template = await herald.compile_run_async(mailing, run)
        return await herald.execute(mailing, run, template=template, progress=progress,
                                    handle_signals=handle_signals)

    return execute


def test_specs(mailing: Mailing, due: float | None = None, missed: int = 0) -> list[RunSpec]:
    """A multivariate mailing's test runs, variant 1 first."""
    n = len(mailing.options.variants)
    s = (mailing.options.test_share or 100.0) / 100.0
    # the last one ends exactly at s, where the winner's share begins (k * s / n can be
    # off by an ulp either way, and no profile may be in two shares or none)
    bounds = [k * s / n for k in range(n)] + [s]
    return [RunSpec(phase="test", variant=k, due=due, missed=missed,
                    share=(bounds[k], bounds[k + 1])) for k in range(n)]


async def launch(
    herald: Herald,
    mailing: Mailing,
    *,
    progress: Any = None,
    due: float | None = None,
    missed: int = 0,
    taken: bool = False,
    execute: Execute | None = None,
    clock: Clock = time.time,
    sleep: Sleep = anyio.sleep,
    handle_signals: bool = False,
) -> list[MailingLog]:
    """Run one launch of the mailing now, in this process, to its end; the logs of its
    runs. ``due``: the scheduled time a scheduler took it for (with ``missed`` launches
    before it); None: started by hand, which takes a broadcast's or multivariate
    mailing's scheduled launch first (StoreError if another process took it), unless
    the caller has (``taken``).

    A multivariate mailing runs its tests one after another, then waits (state
    ``waiting``, its next launch the end of the wait), then takes that launch and runs
    the winner; with ``manual`` it stops after the tests, waiting for ``pick``. A run
    that does not finish (paused, cancelled) ends the launch there. Where the mailing
    has local time or its resource quiet hours, each phase runs in waves
    (``run_waves``), one after another here (``clock``, ``sleep``).

    Each run's next step is kept in the store (``run_steps``) and taken from it here as
    it comes due: should this process stop, whichever scheduler runs next carries on
    (and if one takes a step first, this launch ends there, that scheduler's)."""
    store = herald.store
    execute = execute or _execute_here(herald, progress, handle_signals)
    if mailing.kind == "trigger":
        raise InputError(f"mailing {mailing.id} is a trigger mailing: it runs on calls")
    manual = due is None and not taken and mailing.kind != "regular"
    if manual and mailing.state in ("waiting", "done", "cancelled"):
        raise StoreError(f"mailing {mailing.id} was launched already ({mailing.state})")
    if mailing.kind == "broadcast":
        # a draft may have a run: ``herald send`` makes it, then marks the mailing done
        sent = [r for r in await store.mailing_runs(mailing.id) if not r.spec.is_test]
        if sent:  # a second run would send to everybody again
            raise StoreError(f"mailing {mailing.id} was sent already (run {sent[-1].id},"
                             f" {sent[-1].status}): a broadcast sends once; resume its run"
                             " or create another mailing")
    if manual:
        state: MailingState = "waiting" if mailing.kind == "multivariate" else "done"
        if not await store.set_launch(
                mailing.id, expect=mailing.next_launch, next_launch=None, state=state):
            raise StoreError(f"mailing {mailing.id} was launched already ({mailing.state})")
    if mailing.kind != "multivariate":
        if send_times(herald.config, mailing, 0.0) is None:  # one run, as it always was
            run = await store.start_run(mailing.id, RunSpec(due=due, missed=missed))
            return [await execute(mailing, run)]
        return (await run_phase(herald, mailing, [RunSpec(due=due, missed=missed)],
                                execute=execute, clock=clock, sleep=sleep))[0]
    logs, finished = await run_phase(herald, mailing, test_specs(mailing, due, missed),
                                     execute=execute, clock=clock, sleep=sleep)
    if not finished:
        return logs
    return logs + await after_tests(herald, mailing, execute=execute, clock=clock,
                                    sleep=sleep)


async def continue_launch(
    herald: Herald,
    mailing: Mailing,
    step: Step,
    *,
    execute: Execute | None = None,
    clock: Clock = time.time,
    sleep: Sleep = anyio.sleep,
) -> list[MailingLog]:
    """Carry on a launch from a step a scheduler took (``Scheduler``: a process stopped
    mid-launch, or it took the step first), in this process, as ``launch`` would have:
    the logs of the runs it made."""
    execute = execute or _execute_here(herald)
    logs, finished = await run_steps(herald, mailing, step.kind, step.spec,
                                     execute=execute, clock=clock, sleep=sleep)
    if finished and step.spec.phase == "test" and mailing.kind == "multivariate":
        logs += await after_tests(herald, mailing, execute=execute, clock=clock,
                                  sleep=sleep)
    return logs


async def end_tests(herald: Herald, mailing: Mailing, now: float) -> float | None:
    """A multivariate mailing's tests are over: a plain split (``test_share`` 100) is
    done; a ``manual`` one waits for ``pick``; else its wait begins (state ``waiting``,
    its next launch the end of the wait, which a scheduler takes: ``launch`` or
    ``Scheduler``). The end of the wait, or None (no wait, or cancelled meanwhile)."""
    store, options = herald.store, mailing.options
    if options.test_share == 100:
        await store.set_mailing_state(mailing.id, "done")
        return None
    if options.winner == "manual":
        return None  # waiting for pick
    end = now + (options.wait or 0.0)
    if not await store.set_launch(mailing.id, expect=None, next_launch=end, state="waiting"):
        return None  # cancelled meanwhile
    return end


async def after_tests(
    herald: Herald,
    mailing: Mailing,
    *,
    execute: Execute,
    clock: Clock = time.time,
    sleep: Sleep = anyio.sleep,
) -> list[MailingLog]:
    """After a multivariate mailing's tests, in this process: ``end_tests``, then sleep
    through the wait and run the winner, unless a scheduler took it first."""
    store = herald.store
    end = await end_tests(herald, mailing, clock())
    if end is None:
        return []
    while (left := end - clock()) > 0:
        await sleep(left)
    if not await store.set_launch(mailing.id, expect=end, next_launch=None, state="done"):
        return []  # a scheduler took the winner (or it was cancelled)
    return (await run_phase(herald, mailing, [await winner_spec(herald, mailing)],
                            execute=execute, clock=clock, sleep=sleep))[0]


async def run_phase(
    herald: Herald,
    mailing: Mailing,
    specs: Sequence[RunSpec],
    *,
    execute: Execute | None = None,
    clock: Clock = time.time,
    sleep: Sleep = anyio.sleep,
) -> tuple[list[MailingLog], bool]:
    """Run ``specs`` (a launch's one run, a multivariate mailing's winner, its test
    runs) one after another, in waves where the mailing has local time or quiet hours
    (``run_waves``): their logs, and whether all finished (a run that does not, or a
    cancel, ends the phase there)."""
    execute = execute or _execute_here(herald)
    if send_times(herald.config, mailing, 0.0) is not None:
        return await run_waves(herald, mailing, specs, execute=execute, clock=clock,
                               sleep=sleep)
    if not specs:
        return [], True
    return await run_steps(herald, mailing, "run", specs[0], execute=execute, clock=clock,
                           sleep=sleep)


def first_wave(specs: Sequence[RunSpec], now: float) -> list[RunSpec]:
    """A phase's specs as its first wave: each spec's ``due`` (now when None) is the
    launch's time S; ``window = (EARLIEST, S]``."""
    specs = [s if s.due is not None else msgspec.structs.replace(s, due=now) for s in specs]
    until = max(s.due or now for s in specs)
    return [msgspec.structs.replace(s, window=(EARLIEST, until), wave=1) for s in specs]


async def run_waves(
    herald: Herald,
    mailing: Mailing,
    specs: Sequence[RunSpec],
    *,
    execute: Execute | None = None,
    clock: Clock = time.time,
    sleep: Sleep = anyio.sleep,
) -> tuple[list[MailingLog], bool]:
    """Run one phase of a launch (``specs``: its one run, or a multivariate mailing's
    test runs) in waves of send times (``engine.core.localtime``): the recipients' local
    time, quiet hours. Each spec's ``due`` (now when None) is the launch's time S.

    Wave 1 runs each spec at once with ``window = (EARLIEST, S]``; a run counts the
    profiles whose send time is later, by time; the phase then sleeps until the earliest
    of them and runs wave k+1 over ``(until of wave k, that time or now if later]``, so
    each profile is in exactly one wave (``run_steps``: each next wave a step in the
    store). The logs of its runs, and whether every wave finished (False: a run did not
    finish, the mailing was cancelled, or another process took the next wave)."""
    execute = execute or _execute_here(herald)
    if not specs:
        return [], True
    return await run_steps(herald, mailing, "run", first_wave(specs, clock())[0],
                           execute=execute, clock=clock, sleep=sleep)


def follow(mailing: Mailing, spec: RunSpec) -> tuple[StepKind, RunSpec] | None:
    """The step that follows a launch's run with ``spec``: the next variant's test (in
    the same wave); after a wave's last run the next wave (``wave_end``); after a
    multivariate mailing's last test its wait; None: the launch ends with it."""
    if spec.is_test or spec.phase == "trial":
        return None
    if spec.phase == "test" and spec.variant + 1 < len(mailing.options.variants):
        nxt = test_specs(mailing, spec.due, spec.missed)[spec.variant + 1]
        return "run", msgspec.structs.replace(nxt, window=spec.window, wave=spec.wave)
    return wave_end(mailing, spec)


def wave_end(mailing: Mailing, spec: RunSpec) -> tuple[StepKind, RunSpec] | None:
    """What follows the last run of a wave (or of a phase not in waves): the next wave
    (its first spec, numbered on, with this wave's window until its time is known),
    else ``phase_end``."""
    if spec.window is not None:
        first = test_specs(mailing, spec.due, 0)[0] if spec.phase == "test" else spec
        return "wave", msgspec.structs.replace(first, window=spec.window,
                                               wave=spec.wave + 1, missed=0)
    return phase_end(mailing, spec)


def phase_end(mailing: Mailing, spec: RunSpec) -> tuple[StepKind, RunSpec] | None:
    """What follows a phase: a multivariate mailing's tests, its wait; else nothing."""
    if spec.phase == "test" and mailing.kind == "multivariate":
        return "wait", spec
    return None


WaveState = Literal["ready", "going", "ended"]


async def wave_time(
    herald: Herald, mailing: Mailing, spec: RunSpec
) -> tuple[WaveState, float | None]:
    """The wave before a ``wave`` step's ``spec`` (the runs of its phase and launch
    numbered one less): ``ready`` once all of them finished (``going`` while one runs,
    ``ended`` if one did not finish), and the soonest later send time they counted
    (None: nobody left: the phase is over)."""
    runs = [r for r in await herald.store.mailing_runs(mailing.id)
            if not r.spec.is_test and r.spec.phase == spec.phase
            and r.spec.wave == spec.wave - 1 and r.spec.due == spec.due]
    if any(r.status in ("cancelled", "failed") for r in runs):
        return "ended", None
    if not runs or any(r.status != "finished" for r in runs):
        return "going", None
    later = [t for r in runs if (t := next_wave(r.counts)) is not None]
    return "ready", min(later, default=None)


def next_window(spec: RunSpec, soonest: float, now: float) -> RunSpec:
    """A ``wave`` step's spec as its run: over ``(until of the wave before, its time or
    now if later]``."""
    assert spec.window is not None
    return msgspec.structs.replace(spec, window=(spec.window[1], max(soonest, now)))


async def run_steps(
    herald: Herald,
    mailing: Mailing,
    kind: StepKind,
    spec: RunSpec,
    *,
    execute: Execute,
    clock: Clock = time.time,
    sleep: Sleep = anyio.sleep,
) -> tuple[list[MailingLog], bool]:
    """Run a launch from a step on (``kind``, ``spec``: its first run, or a step taken
    from the store), in this process, to the end of its phase.

    As each run starts, the step that follows it (``follow``) is kept in the store
    (``RunStore.add_step``), due once the run is finished; when it is, this process
    takes it (``take_step``) and goes on. A next wave's time is read from the finished
    wave's counts: its step is kept with that time while this process sleeps to it.
    Should this process stop meanwhile, a scheduler takes the step (``Scheduler``); if
    one took it first, this ends here. Ends at a ``wait`` (the caller's:
    ``after_tests``). The logs of its runs, and whether the phase finished (False: a
    run did not, and the launch's steps were dropped; the mailing was cancelled; or
    another process took the next step)."""
    store = herald.store
    logs: list[MailingLog] = []
    while True:
        if kind == "wait":
            return logs, True
        if kind == "wave":
            state, soonest = await wave_time(herald, mailing, spec)
            if state != "ready":  # this process ran the wave: it never is "going" here
                await store.drop_steps(mailing.id)
                return logs, False
            if soonest is None:
                end = phase_end(mailing, spec)
                if end is None:
                    return logs, True
                kind, spec = end
                continue
            if soonest > clock():
                armed = await store.add_step(mailing.id, spec, at=soonest, kind="wave")
                while (left := soonest - clock()) > 0:
                    await sleep(left)
                if not await store.take_step(armed):
                    return logs, False  # a scheduler took it
            spec = next_window(spec, soonest, clock())
        if (await store.get_mailing(mailing.id)).state == "cancelled":
            await store.drop_steps(mailing.id)
            return logs, False
        nxt = follow(mailing, spec)
        step_id: int | None = None
        if nxt is None:
            run = await store.start_run(mailing.id, spec)
        else:  # the run and its next step together: neither without the other
            run, step_id = await store.start_run_then(mailing.id, spec, *nxt)
        log = await execute(mailing, run)
        logs.append(log)
        if log.status != "finished":
            await store.drop_steps(mailing.id)
            return logs, False
        if nxt is None or step_id is None:
            return logs, True
        if not await store.take_step(step_id):
            return logs, False  # a scheduler took it
        kind, spec = nxt


async def decide_winner(herald: Herald, mailing: Mailing) -> tuple[int, dict[int, float]]:
    """The best variant (0-based) of a multivariate mailing's test runs by its ``winner``
    figure, and the figure of each variant: ``clicks`` and ``unique_clicks`` are people's
    clicks on the run's short links (bots left out), ``delivered`` the delivery receipts.
    Ties go to the lowest number. (``manual``: by clicks, for the log.)"""
    metric = mailing.options.winner or "clicks"
    if metric == "manual":
        metric = "clicks"
    figures: dict[int, float] = {k: 0.0 for k in range(len(mailing.options.variants))}
    for run in await herald.store.mailing_runs(mailing.id):
        if run.spec.phase != "test" or run.spec.is_test:
            continue
        figures[run.spec.variant] = figures.get(run.spec.variant, 0.0) + await _figure(
            herald, run.id, metric)
    best = max(sorted(figures), key=lambda k: (figures[k], -k))
    return best, figures


async def _figure(herald: Herald, run_id: int, metric: str) -> float:
    store = herald.store
    if metric == "delivered":
        return float(sum((await store.run_summary(run_id)).get("delivered", {}).values()))
    # an SMS run's clicks are click_sms / uclick_sms, an email run's click / uclick
    kinds = {"uclick_sms", "uclick"} if metric == "unique_clicks" else {"click_sms", "click"}
    # the counters are kept per run but reports filter by mailing: the run's events
    n, after = 0, 0
    while True:
        events = await store.events(after=after, limit=1000, run_id=run_id)
        if not events:
            return float(n)
        n += sum(1 for e in events if e.kind in kinds)
        after = events[-1].id


async def winner_spec(
    herald: Herald, mailing: Mailing, variant: int | None = None
) -> RunSpec:
    """The winner run of a multivariate mailing: ``variant`` (0-based) or the one
    ``decide_winner`` finds, to the rest of the audience, with the figures it won on (by
    variant number, 1-based, as users see them)."""
    best, figures = await decide_winner(herald, mailing)
    s = (mailing.options.test_share or 100.0) / 100.0
    return RunSpec(phase="winner", variant=best if variant is None else variant,
                   share=(s, 1.0), decided={str(k + 1): v for k, v in figures.items()})


async def claim_pick(herald: Herald, mailing_id: int, variant: int) -> tuple[Mailing, RunSpec]:
    """Take a waiting multivariate mailing's winner phase with ``variant`` (1-based, as the
    user says it): the mailing and the winner run's spec (the caller starts the run)."""
    store = herald.store
    mailing = await store.get_mailing(mailing_id)
    n = len(mailing.options.variants)
    if mailing.kind != "multivariate":
        raise InputError(f"mailing {mailing_id} is a {mailing.kind}: only a multivariate"
                         " mailing has variants to pick")
    if not 1 <= variant <= n:
        raise InputError(f"variant: a number from 1 to {n}, not {variant}")
    if mailing.options.test_share == 100:
        raise InputError(f"mailing {mailing_id} is a plain split (test_share 100): it has"
                         " no winner to pick")
    tests = [r for r in await store.mailing_runs(mailing_id) if r.spec.phase == "test"]
    if mailing.state != "waiting" or len(tests) < n:
        raise StoreError(f"mailing {mailing_id} is not waiting for its winner"
                         f" ({mailing.state})")
    if any(r.status in ("running", "interrupted") for r in tests):
        raise StoreError(f"mailing {mailing_id}'s test is still going on")
    if not await store.set_launch(mailing_id, expect=mailing.next_launch, next_launch=None,
                                  state="done"):
        raise StoreError(f"mailing {mailing_id}'s winner was taken already")
    return mailing, await winner_spec(herald, mailing, variant - 1)


async def pick(
    herald: Herald, mailing_id: int, variant: int, *, execute: Execute | None = None,
    progress: Any = None, handle_signals: bool = False,
) -> MailingLog:
    """Send variant ``variant`` (1-based) of a waiting multivariate mailing to the rest of
    its audience, now, to the end of that run; its log."""
    mailing, spec = await claim_pick(herald, mailing_id, variant)
    logs, _ = await run_phase(herald, mailing, [spec],
                              execute=execute or _execute_here(herald, progress,
                                                               handle_signals))
    if not logs:
        raise StoreError(f"mailing {mailing_id} was cancelled")
    return logs[-1]


async def test_mailing(
    herald: Herald, mailing_id: int, phones: Sequence[str], profile_id: int | None = None,
    *, execute: Execute | None = None,
) -> list[MailingLog]:
    """Send each of the mailing's templates (every variant) once to each of ``phones``,
    rendered for ``profile_id`` (default: the first profile of its audience), through its
    real routing: a trial run per variant, marked ``is_test`` (no dedupe, no policy, in
    no report). Works before the mailing is ever started. An email mailing's ``phones``
    are email addresses."""
    mailing = await herald.store.get_mailing(mailing_id)
    email = mailing.source.channel == "email"
    if not phones:
        raise InputError("phones: give at least one"
                         f" {'address' if email else 'phone'} to send the test to")
    numbers = _addresses(phones) if email else _phones(herald, phones)
    if profile_id is not None and not await herald.store.profile_ids_in(
            mailing.source.database_id, [profile_id]):
        raise InputError(f"profile: no profile {profile_id} in the mailing's database")
    execute = execute or _execute_here(herald)
    logs = []
    for k in range(max(1, len(mailing.options.variants))):
        spec = RunSpec(phase="trial", is_test=True, variant=k, phones=numbers,
                       profile_id=profile_id)
        logs.append(await execute(mailing, await herald.store.start_run(mailing.id, spec)))
    return logs


def _phones(herald: Herald, phones: Sequence[str]) -> list[str]:
    normaliser = PhoneNormaliser(herald.config.engine.default_region)
    numbers: list[str] = []
    for phone in phones:
        e164 = normaliser.normalise(phone)
        if e164 is None:
            raise InputError(f"phones: not a phone number: {phone!r}")
        numbers.append(e164)
    return numbers


def _addresses(addresses: Sequence[str]) -> list[str]:
    """An email mailing's test addresses, normalised (as its subscriptions are)."""
    from engine.core.emails import normalise_email

    out: list[str] = []
    for address in addresses:
        try:
            out.append(normalise_email(address))
        except InputError as err:
            raise InputError(f"phones: {err}") from None
    return out


# not tests, whatever pytest makes of their names where they are imported
test_mailing.__test__ = False  # type: ignore[attr-defined]
test_specs.__test__ = False  # type: ignore[attr-defined]
