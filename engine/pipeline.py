"""The async shell of a mailing run: stages as tasks of one task group.

::

    cursor ──chunks──▶ prepare ──batches per sender──▶ dispatch workers (per sender)
    (keyset pages)     (core: E.164, suppression,       (journal 'sending', driver call,
                        dedupe, render, reserve)          retries, record outcomes)

What a run is for is its ``Run.spec`` (``RunSpec``): a run with a ``share`` reads the whole
audience and keeps only its share (``engine.core.groups``); the mailing's ``control`` and
its database's ``control_group`` hold a stable part of the eligible out (reason
``control``); a ``trial`` (``mailing test``) sends one profile's text to each of its phones;
a wave (``window``) keeps the profiles whose send time (their local time, quiet hours:
``send_times``) falls in it, and counts the rest ``later`` by send time for the next wave.

Stages exchange chunks and batches through bounded memory object streams, never single
messages: per-message work is synchronous (``engine.core``). Durability follows a
write-ahead journal: ``prepare`` reserves each batch (with the skips and the cursor
checkpoint) in one transaction; a worker marks the batch ``sending`` before the driver sees
it and writes the recipient rows, dropping the journal entry, in one transaction after.
So after any crash, ``resume`` knows exactly which messages were never handed over (sent
now), which were (``sending``: re-sent under the same id when the driver declares idempotent
submission, otherwise recorded as ``unknown`` for the operator), and where the cursor was.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, NamedTuple, Protocol, cast

import anyio
import anyio.lowlevel
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from engine.config import Config, ResourceConfig, SenderConfig
from engine.core.codes import MAX_VALUE
from engine.core.dedupe import Dedupe
from engine.core.email_message import Composer, EmailNormaliser, EmailPreparer, OpenPixel
from engine.core.groups import Groups, global_key
from engine.core.links import Shortener, link_request
from engine.core.localtime import (
    EARLIER,
    LATER,
    QuietHours,
    SendTimes,
    later_times,
    profile_zone,
)
from engine.core.phones import PhoneNormaliser
from engine.core.prepare import AudienceRow, Message, Preparer, Renderer
from engine.core.states import Outcome, State
from engine.core.submission import Compose
from engine.dispatch import Batch, Dispatcher, SenderRuntime, SenderStats, split_parts
from engine.drivers import Driver
from engine.errors import InputError, NotFound
from engine.limits import SenderLimit, SenderLimits
from engine.segments import Condition, compile_condition
from engine.store.base import JournalBatch, Lease, Store, TriggerRow
from engine.store.models import Mailing, Run

__all__ = ["Limits", "Pipeline", "PipelineStats", "run_template", "send_times"]


class Limits(Protocol):
    """Where each sender's pace and window come from: this process's memory
    (``engine.limits.SenderLimits``) or, on a cluster, Redis."""

    def get(self, name: str, config: SenderConfig) -> SenderLimit: ...


class PipelineStats(msgspec.Struct, frozen=True):
    """An immutable snapshot for progress bars, metrics and the mailing log."""

    total: int
    received: int
    found: int
    invalid: int
    suppressed: int
    duplicate: int
    too_long: int
    empty: int
    reserved: int
    sent: int
    failed: int
    unknown: int
    in_flight: int
    busy_s: dict[str, float]
    senders: list[SenderStats]
    #: Held out by a control group (reason ``control``).
    control: int = 0
    #: Read but left to the mailing's other runs (a run with a ``share``).
    other_share: int = 0
    #: A wave of a launch (``RunSpec.window``): the profiles left to later waves, the
    #: earliest of their send times (None: nobody left), and those an earlier wave took.
    later: int = 0
    next_wave: float | None = None
    earlier: int = 0


def send_times(config: Config, mailing: Mailing, due: float) -> SendTimes | None:
    """How each recipient's send time is found for a launch of ``mailing`` due at
    ``due``: in their local time (the schedule's ``local_time``), moved out of their
    resource's ``quiet_hours``; None when every recipient's is the launch's own (a trigger
    mailing's: it has no launch; its calls go at once, or are held one by one for quiet
    hours, see ``Pipeline``)."""
    if mailing.kind == "trigger":
        return None
    schedule = mailing.options.schedule
    local = schedule is not None and schedule.local_time
    resource = config.resources.get(mailing.resource)
    quiet = resource.quiet() if resource is not None else None
    if not local and quiet is None:
        return None
    zone = schedule.timezone if schedule is not None and schedule.timezone \
        else config.engine.timezone
    return SendTimes(due, zone, local=local,
                     late=schedule.late if schedule is not None else "now", quiet=quiet)


def run_template(mailing: Mailing, run: Run) -> str:
    """The template a run sends: its variant's (``run.spec.variant``) of a multivariate
    mailing, the mailing's one template otherwise. A resumed run sends the same."""
    variants = mailing.options.variants
    if not variants:
        return mailing.template
    variant = run.spec.variant
    if not 0 <= variant < len(variants):
        raise InputError(f"run {run.id} is for variant {variant + 1}, but mailing"
                         f" {mailing.id} has {len(variants)} templates")
    return variants[variant]


class Pipeline:
    """Runs (or resumes) one mailing run to its end, or until ``stop()``.

    With ``lease``, it runs one chunk of a cluster run (``engine.cluster.worker``): it
    reads only the chunk's profiles (``lo < id <= hi``) from the chunk's checkpoint, gives
    seqs from the chunk's ``next_seq``, and, when the chunk was taken over from a dead
    worker, settles only the chunk's journal batches first. ``store`` is then the
    ``LeasedStore`` that fences every write with the lease. The ``(run, phone)`` backstop
    of the store dedupes across chunks: ``reserve`` hands back the seqs it refused as
    duplicates, which are not sent.

    A trigger mailing's run on a cluster is one chunk (lo 0, no hi) whose checkpoint is
    the last queue id settled: the queue is read from there, its reserves are fenced by
    the lease (``reserve_triggers``: no phone is refused, each call is its own message),
    and it is never complete while the mailing is active (a stop gives it back).

    A trigger mailing with ``quiet_hours`` (``MailingOptions``) holds each call whose
    recipient is inside their resource's quiet hours (in their ``_tz``, else ``[engine]
    timezone``) at the moment it is prepared: the call stays queued with the time the
    window ends (``TriggerStore.hold_triggers``), keeps its seq (the message id its call
    was answered with) and is prepared then like any call, its policy and suppression
    judged at that time. ``wall`` is the clock of that judgement."""

    #: Wall-clock time (seconds since the epoch) a trigger mailing's quiet hours are
    #: judged on (a test sets a fake one on the class, or on a pipeline before it runs).
    wall: Callable[[], float] = time.time

    def __init__(
        self,
        *,
        store: Store,
        config: Config,
        drivers: Mapping[str, Driver],
        mailing: Mailing,
        run: Run,
        template: Renderer,
        measure: Callable[[str], Any],
        resource_id: int,
        total: int,
        clock: Callable[[], float] = time.monotonic,
        limits: Limits | None = None,
        functions: Mapping[str, Callable[..., Any]] | None = None,
        lease: Lease | None = None,
    ) -> None:
        self.store = store
        #: The chunk of a cluster run this pipeline runs (None: the whole run).
        self.lease = lease
        self._audience_done = run.audience_done if lease is None else lease.audience_done
        #: The workspace's template functions (plugins'), for a dynamic segment's condition.
        self.functions = functions
        self.config = config
        self.mailing = mailing
        self.run = run
        self.resource_id = resource_id
        self._channel_ids: list[int] | None = None
        spec = run.spec
        #: A ``mailing test`` run: one profile's text to each of the spec's phones.
        self.trial = spec.phase == "trial" and mailing.kind != "trigger"
        if self.trial:
            total = len(spec.phones)
        self.total = total
        self.clock = clock
        eng = config.engine
        resource = config.resources[mailing.resource]
        vs = config.virtual_senders[resource.virtual_sender]
        self.router = vs.router()
        # only the senders this mailing can route to: others stay idle
        names = {t.sender for rule in vs.rules for t in rule.senders}
        # one pace and window per sender, shared with the other runs of this process
        limits = limits or SenderLimits()
        self.senders = {
            name: SenderRuntime(name, s, drivers[s.gateway], limits.get(name, s))
            for name, s in config.senders.items() if name in names
        }
        self.dispatcher = Dispatcher(
            store=store, run_id=run.id, senders=self.senders, router=self.router, clock=clock
        )
        single = [t.sender for t in vs.rules[0].senders] if len(vs.rules) == 1 else []
        self._multi = len(single) != 1
        route = _constant(single[0]) if len(single) == 1 else self.router.choose
        # a chunk's seqs start high (disjoint ranges per chunk): size its filter by the
        # audience alone
        next_seq = run.next_seq if lease is None else lease.next_seq
        self.dedupe = Dedupe(total + (run.next_seq if lease is None else 1),
                             eng.dedupe_fp_rate)
        counts = run.counts
        #: Where this mailing's links and unsubscribe pages are (None: links go as written).
        self.tracking_base = config.tracking_base(mailing.resource)
        self._static_unsubscribe = resource.unsubscribe_url or ""
        #: The resource's channel: an email run prepares packed emails, its senders
        #: build each message with their From (``engine.core.email_message``).
        self.channel = resource.channel
        email = self.channel == "email"
        if email:
            for name, runtime in self.senders.items():
                runtime.compose = _composer(config.senders[name], resource)
        preparer_class = EmailPreparer if email else Preparer
        extra: dict[str, Any] = {"static_unsubscribe": self._static_unsubscribe} \
            if email else {}
        self.preparer = preparer_class(
            **extra,
            run_uid=run.uid,
            run_id=run.id,
            normaliser=EmailNormaliser() if email else PhoneNormaliser(eng.default_region),
            dedupe=self.dedupe,
            template=template,
            measure=measure,
            route=route,
            max_segments={n: s.max_segments for n, s in config.senders.items()},
            context={
                "mailing": {"id": mailing.id, "name": mailing.name},
                "resource": {
                    "id": resource_id,
                    "name": mailing.resource,
                    "unsubscribe_url": resource.unsubscribe_url or "",
                },
                "json": mailing.document,
            },
            next_seq=next_seq,
            limit=None if self.trial else mailing.limit,
            reserved=counts.get("reserved", 0),
            # triggers are transactional: only their mailing's own policy holds them back
            policy=mailing.policy if mailing.kind == "trigger"
            else mailing.policy or resource.policy or eng.policy,
            # the database's global group joins in execute (its id is the store's)
            groups=Groups(mailing.id, spec.share, ((mailing.id, mailing.options.control),)),
            trial=self.trial,
        )
        if spec.window is not None and spec.due is not None and not self.trial:
            # a wave: only the profiles whose send time is in its window
            self.preparer.use_window(spec.window, send_times(config, mailing, spec.due))
        self._share = None if self.trial else spec.share
        self.set_total(total)
        self._counts = {k: counts.get(k, 0) for k in (
            "received", "found", "invalid", "suppressed", "duplicate", "too_long", "empty",
            "policy", "control", "other_share", "reserved", LATER, EARLIER)}
        #: A wave's profiles left for later, by send time (``engine.core.localtime``).
        self._later_at = later_times(counts)
        self._busy = {"cursor": 0.0, "prepare": 0.0}
        self.cursor_ms: float | None = None
        self._stop_scope = anyio.CancelScope()
        self._wake = anyio.Event()
        self._ready = False
        #: A trial's profile row (``ready``).
        self._trial: AudienceRow | None = None
        #: A trigger mailing that obeys its resource's quiet hours: it may have calls held
        #: (read back even if the window left the config since), the window, and the zone
        #: of recipients without a ``_tz``.
        self._holds = mailing.kind == "trigger" and mailing.options.quiet_hours
        self._quiet: QuietHours | None = resource.quiet() if self._holds else None
        schedule = mailing.options.schedule
        self._quiet_zone = schedule.timezone if schedule is not None and schedule.timezone \
            else eng.timezone
        #: A trigger run's position in its queue as last reserved (a queue id).
        self._queue_checkpoint = run.checkpoint if lease is None else lease.checkpoint
        #: Held calls read back and not yet released (the cursor reads no more meanwhile).
        self._held_busy = False
        #: Seqs in the journal when the run resumed: held calls reserved already.
        self._journal_seqs: set[int] = set()

    # -- control -----------------------------------------------------------------------

    def stop(self, *, grace: float | None = None) -> None:
        """Stop reading the audience and start no new batch; batches already handed to a
        gateway get ``grace`` seconds (default ``shutdown_grace``) to finish and be
        recorded. Everything else stays reserved in the journal for ``resume``. Calling it
        again with a shorter grace shortens the wait."""
        if grace is None:
            grace = self.config.engine.shutdown_grace
        self._stop_scope.cancel()
        self.dispatcher.stop(anyio.current_time() + grace)

    @property
    def stopped(self) -> bool:
        return self.dispatcher.stopping

    @property
    def busy(self) -> dict[str, float]:
        """Seconds each stage spent working (not waiting)."""
        return {**self._busy, **self.dispatcher.busy}

    async def complete(self) -> bool:
        """True when the audience (a chunk's: its part of it) is read to its end and no
        batch is left unrecorded."""
        if self.lease is not None:
            return self._audience_done and not await self._journal()
        _, run = await self.store.get_run(self.run.id)
        return run.audience_done and not await self.store.journal(self.run.id)

    async def _journal(self) -> list[JournalBatch]:
        """The run's journal, or in chunk mode only the chunk's batches (those of its
        profiles)."""
        batches = await self.store.journal(self.run.id)
        if self.lease is None:
            return batches
        lo, hi = self.lease.lo, self.lease.hi
        return [jb for jb in batches
                if jb.entries and lo < jb.entries[0].profile_id
                and (hi is None or jb.entries[0].profile_id <= hi)]

    def statistics(self) -> PipelineStats:
        c = self._counts
        results = self.dispatcher.results
        now = self.clock()
        return PipelineStats(
            total=self.total, received=c["received"], found=c["found"], invalid=c["invalid"],
            suppressed=c["suppressed"], duplicate=c["duplicate"], too_long=c["too_long"],
            empty=c["empty"], reserved=c["reserved"], sent=results["sent"],
            failed=results["failed"], unknown=results["unknown"],
            in_flight=self.dispatcher.in_flight,
            busy_s=self.busy,
            senders=[s.statistics(now) for s in self.senders.values()],
            control=c["control"], other_share=c["other_share"],
            later=c[LATER], earlier=c[EARLIER],
            next_wave=min(self._later_at) if self._later_at else None,
        )

    # -- the run -----------------------------------------------------------------------

    async def ready(self) -> None:
        """What the run needs from the store before it starts (its database's global
        control group, a trial's profile); ``execute`` calls it when the caller did not.
        InputError when a trial names a profile that does not exist."""
        if self._ready:
            return
        await self._global_control()
        if self.trial and self.run.next_seq == 1:  # not when its chunk is reserved already
            self._trial = await self._trial_row()
        self._ready = True

    async def execute(self, *, resume: bool = False) -> None:
        await self.ready()
        trial_row = self._trial
        await self._track_links()
        backlog: list[Batch] = []
        if resume:
            backlog = await self._recover()
        async with anyio.create_task_group() as tg:
            for sender in self.senders.values():
                for _ in range(sender.concurrency):
                    tg.start_soon(self.dispatcher.worker, sender, sender.receive.clone())
                sender.receive.close()  # each worker holds its own clone
            with self._stop_scope:
                async with anyio.create_task_group() as feed:
                    if self.mailing.kind == "trigger":
                        queued_send, queued_receive = anyio.create_memory_object_stream[
                            _Queued
                        ](4)
                        feed.start_soon(self._trigger_cursor, queued_send)
                        feed.start_soon(self._prepare_triggers, queued_receive, backlog)
                    else:
                        chunks_send, chunks_receive = anyio.create_memory_object_stream[
                            list[AudienceRow]
                        ](4)
                        if self._audience_done or self.preparer.limit_reached:
                            chunks_send.close()
                        elif trial_row is not None:
                            feed.start_soon(self._trial_cursor, chunks_send, trial_row)
                        elif self.trial:  # its one chunk is reserved already (a resume)
                            chunks_send.close()
                        else:
                            feed.start_soon(self._cursor, chunks_send)
                        feed.start_soon(self._prepare, chunks_receive, backlog)
            for sender in self.senders.values():
                sender.send.close()

    async def _global_control(self) -> None:
        """Hold the mailing's database's global control group (``[databases.X]
        control_group``) out too, unless the mailing ignores it (transactional mail)."""
        mailing = self.mailing
        if self.trial or mailing.options.ignore_global_control:
            return
        groups = [(mailing.id, mailing.options.control)]
        for name, db in self.config.databases.items():
            if db.control_group <= 0:
                continue
            try:
                database_id = await self.store.database_id(name)
            except NotFound:
                continue  # no profile imported into it yet: nobody to hold out
            if database_id == mailing.source.database_id:
                groups.append((global_key(database_id), db.control_group))
        if len(groups) > 1:
            self.preparer.use_groups(Groups(mailing.id, self.run.spec.share, tuple(groups)))

    async def _trial_cursor(
        self, out: MemoryObjectSendStream[list[AudienceRow]], row: AudienceRow
    ) -> None:
        """A trial's one chunk: its profile's row once per phone of the spec."""
        async with out:
            await out.send([AudienceRow(row[0], row[1], phone, row[3])
                            for phone in self.run.spec.phones])

    async def _trial_row(self) -> AudienceRow:
        """The profile a trial renders: ``spec.profile_id`` (InputError if there is no
        such profile), else the audience's first by id; in an empty audience, profile 0
        with no fields."""
        store, source, spec = self.store, self.mailing.source, self.run.spec
        if spec.profile_id is not None:
            rows = await store.audience_rows(source, self.resource_id, [spec.profile_id])
            if not rows:
                raise InputError(f"profile: no profile {spec.profile_id}")
            return AudienceRow(*rows[0])
        condition = await self._condition()
        after = 0
        while True:
            page, next_after = await store.audience_page(
                source, self.resource_id, after, self.config.engine.chunk_size,
                self.run.started_at, condition=condition)
            if page:
                return AudienceRow(*page[0])
            if next_after is None:
                return AudienceRow(0, None, None, None)
            after = next_after

    async def _track_links(self) -> None:
        """Where the resource has a tracking domain, give the preparer the run's shortener:
        its link rows made (or, on a resume or another worker, read back: the same ids, so
        a message re-rendered gets the same codes). Nothing at all without a domain.

        Codes carry ``seq - seq_base`` in 29 bits: a cluster chunk (whose seqs start at
        ``k * 2**32 + 1``) has link rows of its own, for the multiple of ``MAX_VALUE`` its
        seqs start from."""
        base = self.tracking_base
        if base is None:
            return
        seq_base = 0 if self.lease is None else \
            (self.lease.next_seq - 1) // MAX_VALUE * MAX_VALUE
        template = self.preparer.template
        urls, slots = link_request(template, base)
        links = await self.store.ensure_links(
            self.run.id, urls, slots, seq_base=seq_base) if urls or slots else []
        secret = await self.store.tracking_secret()
        self.preparer.track(Shortener.of(
            template, base=base, secret=secret, links=links, seq_base=seq_base,
            static_unsubscribe=self._static_unsubscribe))
        if isinstance(self.preparer, EmailPreparer) and links and links[0].id < MAX_VALUE:
            self.preparer.pixel = OpenPixel(base, secret, links[0].id, seq_base)

    async def _recover(self) -> list[Batch]:
        """Rebuild dedupe and settle the journal of an interrupted run (in chunk mode: of
        the chunk, whose dedupe across the run is the store's backstop)."""
        if self.lease is None:
            async for phones in self.store.recipient_phones(self.run.id):
                self.dedupe.remember(phones)
        backlog = []
        for jb in await self._journal():
            self.dedupe.remember(e.phone for e in jb.entries)
            if self._holds:
                self._journal_seqs.update(e.seq for e in jb.entries)
            sender = jb.sender
            if sender not in self.senders:
                # The sender left the config: route its messages again (same ids).
                sender = self.router.choose(jb.entries[0].phone, self.clock())
            rows = await self.store.audience_rows(
                self.mailing.source, self.resource_id, [e.profile_id for e in jb.entries]
            )
            messages, missing = self.preparer.rerender(jb.entries, rows, sender)
            batch = Batch(jb.batch, sender, messages)
            outcomes = [
                Outcome(seq, State.FAILED, "profile_deleted", error="deleted before resume")
                for seq, _, _ in missing
            ]
            gone = [Message(seq, f"{self.run.uid}-{seq}", pid, phone, sender, "", 0, "")
                    for seq, pid, phone in missing]
            if jb.state == "sending" and not self.senders[sender].retry_ambiguous:
                outcomes = [
                    Outcome(m.seq, State.UNKNOWN, "interrupted",
                            error="in flight when the run was interrupted; the gateway may "
                                  "or may not have it")
                    for m in messages
                ] + outcomes
                await self.dispatcher.record(Batch(jb.batch, sender, messages + gone), outcomes)
                continue
            backlog.append(batch._replace(settled=tuple(zip(gone, outcomes, strict=True))))
        return backlog

    async def _cursor(self, out: MemoryObjectSendStream[list[AudienceRow]]) -> None:
        store, source = self.store, self.mailing.source
        chunk = self.config.engine.chunk_size
        after = self.run.checkpoint if self.lease is None else self.lease.checkpoint
        hi = None if self.lease is None else self.lease.hi
        # a dynamic segment is judged as of the run's start, resumed or not
        as_of = self.run.started_at
        condition = await self._condition()
        async with out:
            while True:
                t0 = time.perf_counter()
                rows, next_after = await store.audience_page(
                    source, self.resource_id, after, chunk, as_of, condition=condition)
                elapsed = time.perf_counter() - t0
                self._busy["cursor"] += elapsed
                if self.cursor_ms is None:
                    self.cursor_ms = elapsed * 1000
                if hi is not None and rows and rows[-1].profile_id > hi:
                    rows = [r for r in rows if r.profile_id <= hi]  # the next chunk's
                    next_after = None
                if hi is not None and next_after is not None and next_after >= hi:
                    next_after = None
                if rows:
                    try:
                        await out.send(rows)
                    except anyio.BrokenResourceError:
                        return  # prepare is done early (the run's limit was reached)
                else:
                    await anyio.lowlevel.checkpoint()  # a page the segment kept none of
                if next_after is None:
                    return
                after = next_after

    async def _condition(self) -> Condition | None:
        """A dynamic segment's condition, compiled once per run with the workspace's
        template functions (a condition may call a plugin's)."""
        source = self.mailing.source
        if source.kind != "segment" or source.segment_id is None:
            return None
        segment = await self.store.segment_by_id(source.segment_id)
        if segment.condition is None:
            return None
        return compile_condition(segment.condition, functions=self.functions)

    async def _enqueue(self, batch: Batch) -> None:
        """Hand a reserved batch to its sender's workers. When that sender's queue is full
        and another sender of the batch's rule has room, the batch moves there (same ids):
        a slow sender never holds the others up. When all are full, wait for room."""
        try:
            await self._enqueue_now(batch)
        except anyio.BrokenResourceError:
            if not self.stopped:
                raise
            # a stop: the sender's workers are gone, the batch waits in the journal

    async def _enqueue_now(self, batch: Batch) -> None:
        while True:
            target = self.senders[batch.sender]
            try:
                target.send.send_nowait(batch)
                return
            except anyio.WouldBlock:
                pass
            if not self._multi:
                await target.send.send(batch)
                return
            moved = await self._move_to_room(batch)
            if moved is not None:
                batch = moved
                continue
            room = self.dispatcher.room
            await room.wait()

    async def _send_backlog(self, backlog: list[Batch]) -> None:
        """The batches a resume settles first, each to its own sender."""
        for batch in backlog:
            try:
                await self.senders[batch.sender].send.send(batch)
            except anyio.BrokenResourceError:
                if not self.stopped:
                    raise
                return  # a stop: they wait in the journal

    async def _move_to_room(self, batch: Batch) -> Batch | None:
        allowed: set[str] | None = None
        for m in batch.messages:
            names = set(self.router.rule_senders(m.phone))
            allowed = names if allowed is None else allowed & names
        full = {name for name, s in self.senders.items() if _full(s)}
        candidates = (allowed or set()) & set(self.senders) - full
        if not candidates:
            return None
        other = self.router.choose(batch.messages[0].phone, self.clock(),
                                   exclude=set(self.senders) - candidates)
        if other not in candidates:
            return None
        await self.store.move_batch(self.run.id, batch.batch, other)
        return Batch(batch.batch, other, [m._replace(sender=other) for m in batch.messages],
                     batch.settled)

    def wake(self) -> None:
        """New triggers are queued: look now rather than at the next poll."""
        self._wake.set()

    async def _trigger_cursor(self, out: MemoryObjectSendStream[_Queued]) -> None:
        """A trigger mailing's queue, in order, for as long as the run goes on; with quiet
        hours, the held calls whose time has come too (looked at least every
        ``TRIGGER_POLL``, one chunk of them at a time)."""
        store, run_id = self.store, self.run.id
        chunk = self.config.engine.chunk_size
        # a trigger run on a cluster: its one chunk's position (the last queue id settled)
        after = self.run.checkpoint if self.lease is None else self.lease.checkpoint
        looked = -TRIGGER_POLL
        async with out:
            while True:
                if self._holds and not self._held_busy and \
                        anyio.current_time() - looked >= TRIGGER_POLL:
                    looked = anyio.current_time()
                    held = await self._due_held(chunk)
                    if held:
                        self._held_busy = True
                        await out.send(_Queued(held, True))
                t0 = time.perf_counter()
                rows = await store.trigger_chunk(run_id, self.resource_id, after, chunk)
                self._busy["cursor"] += time.perf_counter() - t0
                if rows:
                    after = rows[-1].queue_id
                    await out.send(_Queued(rows, False))
                    continue
                with anyio.move_on_after(TRIGGER_POLL):  # another process may queue too
                    await self._wake.wait()
                    # let the calls arriving meanwhile join this chunk: per-chunk and
                    # per-batch costs are then shared by many messages
                    await anyio.sleep(self.config.engine.trigger_linger)
                self._wake = anyio.Event()

    async def _due_held(self, limit: int) -> list[TriggerRow]:
        """Held calls whose time has come (all of them when the resource has no quiet
        hours any more), without those a crash left reserved but not released (their seq
        was in the journal at the resume: released now)."""
        store, run_id = self.store, self.run.id
        t0 = time.perf_counter()
        now = self.wall() if self._quiet is not None else _NO_END
        rows = await store.held_triggers(run_id, self.resource_id, now, limit)
        self._busy["cursor"] += time.perf_counter() - t0
        seqs = self._journal_seqs
        if seqs and rows:
            done = {r.queue_id for r in rows if r.seq in seqs}
            if done:
                await store.release_triggers(run_id, sorted(done))
                seqs.difference_update(r.seq for r in rows if r.queue_id in done)
                rows = [r for r in rows if r.queue_id not in done]
        return rows

    def _quiet_split(
        self, rows: list[TriggerRow]
    ) -> tuple[list[TriggerRow], list[tuple[int, float]]]:
        """The calls to prepare now, and the (queue id, time) of those to hold: their
        recipient is inside the quiet hours now."""
        if self._quiet is None:
            return rows, []
        now = self.wall()
        times = SendTimes(now, self._quiet_zone, local=False, quiet=self._quiet)
        due: list[TriggerRow] = []
        held: list[tuple[int, float]] = []
        for r in rows:
            at = times.of(profile_zone(r.fields))
            if at > now:
                held.append((r.queue_id, at))
            else:
                due.append(r)
        return due, held

    async def _prepare_triggers(
        self, chunks: MemoryObjectReceiveStream[_Queued], backlog: list[Batch]
    ) -> None:
        await self._send_backlog(backlog)
        store, run_id, prep = self.store, self.run.id, self.preparer
        normalise = prep.normaliser.normalise
        batch_size = self.config.engine.batch_size
        async with chunks:
            async for queued, released in chunks:
                t0 = time.perf_counter()
                rows, held = self._quiet_split(queued)
                if held:  # before the checkpoint passes them
                    await store.hold_triggers(run_id, held)
                if not released:
                    self._queue_checkpoint = queued[-1].queue_id
                phones = [None if r.phone is None else normalise(r.phone) for r in rows]
                valid = [p for p in phones if p is not None]
                suppressed, _ = await store.lookup(run_id, valid, [])
                policy_counts = None
                if prep.policy is not None:
                    keys: list[int | str] = (list(valid) if prep.policy.key == "phone"
                                             else [r.profile_id for r in rows])
                    policy_counts = await store.policy_counts(
                        prep.policy, self.resource_id, keys, time.time(),
                        channel_resources=await self._channel_resources())
                result = prep.finish_triggers(rows, phones, suppressed, self.clock(),
                                              policy_counts)
                batches = _group(result.messages, self.senders, batch_size)
                counts = {**result.counts, "reserved": len(result.messages)}
                # a held chunk's calls are behind the queue's position: it stays
                checkpoint = self._queue_checkpoint
                if self.lease is not None:
                    # fenced by the trigger chunk's lease, without the (run, phone)
                    # backstop: two calls to one phone are two messages
                    await cast(Any, store).reserve_triggers(
                        run_id, batches=[(b.batch, b.sender, b.messages) for b in batches],
                        skipped=result.skipped, checkpoint=checkpoint,
                        counts=counts, lease=self.lease, links=result.links)
                else:
                    await store.reserve(
                        run_id,
                        batches=[(b.batch, b.sender, b.messages) for b in batches],
                        skipped=result.skipped,
                        checkpoint=checkpoint,
                        next_seq=None,  # trigger calls hand out seqs as they queue
                        counts=counts,
                        audience_done=False,
                        links=result.links,
                    )
                if released:  # reserved (or recorded): never handed back again
                    await store.release_triggers(run_id, [r.queue_id for r in rows])
                    self._held_busy = False
                for k in self._counts:
                    self._counts[k] += result.counts.get(k, 0)
                self._counts["reserved"] += len(result.messages)
                self._busy["prepare"] += time.perf_counter() - t0
                for b in batches:
                    await self._enqueue(b)

    async def _channel_resources(self) -> list[int] | None:
        """The ids of the configured resources of this mailing's channel, which a
        ``profile_channel`` policy counts (looked up once a run); None for other scopes."""
        policy = self.preparer.policy
        if policy is None or policy.scope != "profile_channel":
            return None
        if self._channel_ids is None:
            resources = self.config.resources
            channel = resources[self.mailing.resource].channel
            self._channel_ids = [await self.store.resource_id(name)
                                 for name in sorted(resources)
                                 if resources[name].channel == channel]
        return self._channel_ids

    async def _prepare(
        self, chunks: MemoryObjectReceiveStream[list[AudienceRow]], backlog: list[Batch]
    ) -> None:
        await self._send_backlog(backlog)
        store, run_id, prep = self.store, self.run.id, self.preparer
        batch_size = self.config.engine.batch_size
        async with chunks:
            async for rows in chunks:
                t0 = time.perf_counter()
                plan = prep.screen(rows)
                suppressed, seen = await store.lookup(run_id, plan.valid, plan.maybe_seen())
                policy_counts = None
                if prep.policy is not None:
                    policy_counts = await store.policy_counts(
                        prep.policy, self.resource_id, prep.policy_keys(plan), time.time(),
                        channel_resources=await self._channel_resources())
                result = prep.finish(plan, suppressed, seen, self.clock(), policy_counts)
                batches = _group(result.messages, self.senders, batch_size)
                done = result.limit_reached
                refused = await store.reserve(
                    run_id,
                    batches=[(b.batch, b.sender, b.messages) for b in batches],
                    skipped=result.skipped,
                    checkpoint=result.checkpoint,
                    next_seq=prep.next_seq,
                    counts={**result.counts, "reserved": len(result.messages)},
                    audience_done=done,
                    links=result.links,
                )
                mine = self._counts
                for k, v in result.counts.items():
                    if k in mine:
                        mine[k] += v
                    else:  # a wave's later@<time>
                        self._later_at.update(later_times({k: v}))
                mine["reserved"] += len(result.messages)
                batches = self._drop_refused(batches, refused)
                self._busy["prepare"] += time.perf_counter() - t0
                for b in batches:
                    await self._enqueue(b)
                if done:
                    self._audience_done = True
                    return
        # The audience (the chunk's part) is exhausted: say so, so that resume does not
        # read it again.
        end = _MAX_ID if self.lease is None or self.lease.hi is None else self.lease.hi
        await store.reserve(
            run_id, batches=[], skipped=[], checkpoint=end, next_seq=prep.next_seq,
            counts={}, audience_done=True,
        )
        self._audience_done = True

    def set_total(self, total: int) -> None:
        """How many profiles the run's audience holds (its share of them), for progress:
        the bound the run started with, then the count once it came."""
        if self.trial:
            return
        if self._share is not None:
            lo, hi = self._share
            total = min(total, int(total * max(hi - lo, 0.0)) + 1)
        self.total = total

    def _drop_refused(self, batches: list[Batch], refused: Collection[int]) -> list[Batch]:
        """The batches as the store journalled them: without the messages it refused as
        duplicates (another worker of the cluster took their phone first; the store
        recorded them skipped), which count as duplicates, not reserved."""
        if not refused:
            return batches
        self._counts["duplicate"] += len(refused)
        self._counts["reserved"] -= len(refused)
        out = []
        for b in batches:
            kept = [m for m in b.messages if m.seq not in refused]
            if kept:
                out.append(b if len(kept) == len(b.messages) else b._replace(messages=kept))
        return out

_MAX_ID = 2**63 - 1
#: After any time a call can be held until (seconds since the epoch).
_NO_END = 1.0e18


class _Queued(NamedTuple):
    """A chunk of a trigger mailing's queue: calls read in order, or held calls whose
    quiet hours are over (``released``)."""

    rows: list[TriggerRow]
    released: bool
#: Seconds between looks at a trigger queue when nobody wakes the pipeline.
TRIGGER_POLL = 0.5


def _full(sender: SenderRuntime) -> bool:
    st = sender.send.statistics()
    return st.current_buffer_used >= st.max_buffer_size


def _composer(sender: SenderConfig, resource: ResourceConfig) -> Compose:
    """An email sender's message builder (its From checked when the config was read)."""
    assert sender.from_ is not None
    return Composer(from_=sender.from_, reply_to=sender.reply_to,
                    return_path=sender.return_path,
                    list_unsubscribe=resource.list_unsubscribe).compose


def _constant(name: str) -> Callable[[str, float], str]:
    """The route of a virtual sender with one sender: no choice to make per message."""

    def route(phone: str, now: float) -> str:
        return name

    return route


def _group(
    messages: Sequence[Message], senders: Mapping[str, SenderRuntime], batch_size: int
) -> list[Batch]:
    """Split a chunk's messages into per-sender batches; a batch's id is its first seq."""
    by_sender: dict[str, list[Message]] = {}
    for m in messages:
        by_sender.setdefault(m.sender, []).append(m)
    out: list[Batch] = []
    for name, msgs in by_sender.items():
        sender = senders[name]
        size = min(batch_size, sender.max_batch)
        for i in range(0, len(msgs), size):
            # at most the sender's burst in segments: each batch goes out in one piece
            for part in split_parts(msgs[i : i + size], sender.part_segments):
                out.append(Batch(part[0].seq, name, part))
    out.sort(key=lambda b: b.batch)
    return out

