"""Herald as a long-running service: mailings that run in the background of one process.

The HTTP API (``herald serve``) and embedding applications drive mailings through a
``MailingService`` that owns a task group: broadcasts run as background tasks that can be
paused, resumed and cancelled, and each trigger mailing has a queue that a background
pipeline drains, so a trigger call answers with message ids at once.

On a cluster (a ``[cluster]`` table) the service runs no broadcast itself: ``start`` cuts
the run into chunks that ``herald worker`` processes lease, and pause, resume and cancel
only move the run's status in the store, then tell every worker at once (a NOTIFY,
``engine.cluster.control``); each worker also reads the status at each heartbeat, should
the notification be lost. So several service instances may run at once and any of them
answers for any broadcast.
A trigger mailing on a cluster is the workers' too: its run is one chunk that one worker
holds at a time (``ClusterStore`` of PostgreSQL: ``create_trigger_chunk``). A trigger call
is queued here (group commit, as in one process) and answered with its ids at once, then a
``start`` notification for the run wakes the worker holding the chunk, which reads the
queue within ``trigger_linger``; any instance takes calls for any trigger mailing.

::

    async with MailingService.running(herald) as service:
        mailing = await service.create(MailingSpec(name="welcome", kind="trigger", ...))
        ids = await service.trigger(mailing.id, [TriggerRequest(profile_id=7, content={...})])
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec
from anyio.abc import TaskGroup

from engine.cluster.control import notify
from engine.core.phones import PhoneNormaliser
from engine.core.routing import RouterStats
from engine.dispatch import LAST_ERRORS, SenderRuntime
from engine.errors import InputError, StoreError
from engine.listening import listen_gateways
from engine.mailing_log import MailingLog
from engine.mailings import (
    Clock,
    Launch,
    MailingSpec,
    Sleep,
    claim_pick,
    continue_launch,
    create_mailing,
    launch,
    run_phase,
    test_mailing,
    winner_spec,
)
from engine.pipeline import Pipeline, send_times
from engine.runner import Herald
from engine.scheduling import Scheduler, queue_launch, queue_phase
from engine.store.models import Mailing, Run, RunSpec, run_is_live

__all__ = [
    "MailingRun",
    "MailingService",
    "MailingSpec",
    "MailingStatus",
    "SenderMetrics",
    "ServiceStats",
    "TriggerAccepted",
    "TriggerRequest",
]

logger = logging.getLogger(__name__)
#: How a trigger call names its profile: exactly one of these.
_WHO = ("profile_id", "phone", "email", "field_name")


class MailingStatus(msgspec.Struct, kw_only=True):
    """A mailing and the progress of its latest run."""

    id: int
    name: str
    kind: str
    resource: str
    status: Literal["draft", "running", "paused", "finished", "cancelled", "failed"]
    #: Where its schedule is (``engine.store.models.MailingState``) and when it launches
    #: next (seconds since the epoch).
    state: str = "draft"
    next_launch: float | None = None
    run_id: int | None = None
    total: int = 0
    received: int = 0
    reserved: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    in_flight: int = 0


class MailingRun(msgspec.Struct, kw_only=True):
    """One run of a mailing: what it was for (``spec``: a launch, a variant's test, the
    winner, a trial send) and its counts."""

    id: int
    status: str
    started_at: float
    finished_at: float | None = None
    spec: RunSpec
    received: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0


class TriggerRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One message of a trigger mailing: to a profile (by id, or found by phone/email in
    the mailing's database), with ``content`` rendered as ``{apicontent.*}``."""

    profile_id: int | None = None
    phone: str | None = None
    email: str | None = None
    content: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The same key never sends twice: a repeated call answers with the first message id.
    idempotency_key: str | None = None
    #: Or found by a custom field's value (Altcraft's ``matching = "custom"``):
    #: ``field_name`` with ``field_value``, compared as text.
    field_name: str | None = None
    field_value: str | None = None
    #: Handed to the action hooks with each event of this message (Altcraft's
    #: ``custom_data``); never rendered.
    custom_data: dict[str, Any] | None = None


class TriggerAccepted(msgspec.Struct, kw_only=True):
    """The answer to one trigger request: its message id, or why it was refused."""

    message_id: str | None = None
    duplicate: bool = False
    error: str | None = None


class SenderMetrics(msgspec.Struct, kw_only=True):
    """Totals of one sender since the service started (all its mailings)."""

    name: str
    sent: int = 0
    failed: int = 0
    throttled: int = 0
    in_flight: int = 0
    #: Seconds per gateway call: upper bounds of the buckets, and cumulative counts.
    latency_buckets: list[float] = msgspec.field(default_factory=list)
    latency_counts: list[int] = msgspec.field(default_factory=list)
    latency_sum: float = 0.0
    latency_count: int = 0
    #: The newest gateway errors, oldest first: (seconds since the epoch, the error).
    last_errors: list[tuple[float, str]] = msgspec.field(default_factory=list)


class ServiceStats(msgspec.Struct, kw_only=True):
    senders: list[SenderMetrics]
    #: Seconds each stage spent working, summed over the service's runs.
    busy_s: dict[str, float]
    running: int


class _Calls:
    """Trigger calls not yet queued, and the signal that there are some."""

    def __init__(self) -> None:
        self.calls: list[_Call] = []
        self.calls_waiting = anyio.Event()


class _Queue(_Calls):
    """A trigger mailing on a cluster: its calls are queued here, sent by the workers."""

    def __init__(self, mailing: Mailing) -> None:
        super().__init__()
        self.mailing = mailing
        self.scope = anyio.CancelScope()


class _Call:
    """A trigger call waiting for its message ids."""

    def __init__(self, requests: Sequence[TriggerRequest]) -> None:
        self.requests = requests
        self.answers: list[TriggerAccepted] = []
        self.error: Exception | None = None
        self.done = anyio.Event()


class _Active(_Calls):
    """A mailing whose run is going on in the background."""

    def __init__(self, run: Run) -> None:
        super().__init__()
        self.run = run
        self.pipeline: Pipeline | None = None
        self.ready = anyio.Event()
        self.done = anyio.Event()
        #: (sent, failed, unknown) recorded before this session of the run.
        self.settled_before = (0, 0, 0)

    def started(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.ready.set()


class _Runs:
    """The runs of a launch in the background, each in the service's pipeline
    (``execute`` for ``engine.mailings``); the task that started the launch goes on once
    its first run is under way, or it ended without one (``done``)."""

    def __init__(self, service: MailingService, task_status: anyio.abc.TaskStatus[None]
                 ) -> None:
        self._service = service
        self._task_status = task_status
        self._started = False

    async def execute(self, mailing: Mailing, run: Run) -> MailingLog:
        active = await self._service._launch(mailing, run, resume=False)
        self.done()
        await active.done.wait()
        return await self._service.herald.log(run.id)

    def done(self) -> None:
        if not self._started:
            self._started = True
            self._task_status.started()


class MailingService:
    """Runs mailings in the background of one process; see the module docstring."""

    def __init__(
        self, herald: Herald, tg: TaskGroup, *, clock: Clock = time.time,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        self.herald = herald
        self._tg = tg
        self._clock, self._sleep = clock, sleep
        #: Launches due mailings (``engine.scheduling``), while ``running``.
        self.scheduler = Scheduler(herald, self._start_launch, clock=clock, sleep=sleep)
        self._cluster = herald.config.cluster
        self._active: dict[int, _Active] = {}
        #: trigger mailings on a cluster that took calls here: their group committers
        self._queues: dict[int, _Queue] = {}
        self._finished_busy: dict[str, float] = {}
        self._finished_senders: dict[str, SenderMetrics] = {}
        self._normaliser = PhoneNormaliser(herald.config.engine.default_region)
        self._settled_cache: dict[int, tuple[float, tuple[int, int, int], str | None]] = {}
        #: Launches going on here (a multivariate one through its test, wait and winner).
        self._launching: dict[int, anyio.CancelScope] = {}
        self._launches: set[anyio.CancelScope] = set()

    @classmethod
    @asynccontextmanager
    async def running(
        cls, herald: Herald, *, clock: Clock = time.time, sleep: Sleep = anyio.sleep,
        schedule: bool = True,
    ) -> AsyncIterator[MailingService]:
        """The service, for as long as the block runs; then every run is stopped
        gracefully (what is left stays in its journal) and waited for; the launches
        under way keep their next steps in the store. With ``schedule``, its scheduler
        launches due mailings and takes those steps (on ``clock``, ``sleep``)."""
        async with anyio.create_task_group() as tg:
            service = cls(herald, tg, clock=clock, sleep=sleep)
            await service._restore()
            listening, scheduling = anyio.CancelScope(), anyio.CancelScope()

            async def listen() -> None:
                with listening:
                    await listen_gateways(herald)

            async def launch_due() -> None:
                with scheduling:
                    await service.scheduler.run()

            tg.start_soon(listen)  # receipts and replies of SMPP gateways between runs
            if schedule:
                tg.start_soon(launch_due)
            delivering = anyio.CancelScope()  # action hooks ([hooks.NAME]): engine.events
            if herald.config.hooks:
                tg.start_soon(_deliver_hooks, herald, delivering)
            try:
                yield service
            finally:
                scheduling.cancel()
                # launches first: each one's next step stays in the store (a run stopped
                # by the shutdown is not a pause that ends its launch), for whichever
                # scheduler runs next once the run is resumed and over
                for task in list(service._launches):
                    task.cancel()
                with anyio.CancelScope(shield=True):
                    await service._stop_all()
                listening.cancel()
                delivering.cancel()

    async def _restore(self) -> None:
        """Trigger mailings keep taking calls across restarts: resume their runs (on a
        cluster: see that each running one has its chunk, for the workers)."""
        store = self.herald.store
        for mailing in await store.list_mailings(limit=10_000, documents=False):
            if mailing.kind != "trigger" or mailing.resource not in self.herald.config.resources:
                continue
            run = await self.herald.store.latest_run(mailing.id)
            if self._cluster is not None:
                if run is not None and run.status == "running":
                    await _create_trigger_chunk(store, run.id)  # begun by one process
                continue
            if run is not None and run.status in ("running", "interrupted") \
                    and not run_is_live(run):
                try:
                    run = await self.herald.store.claim_run(run.id)
                except StoreError:
                    if self._cluster is None:
                        raise
                    continue  # another instance of the cluster claimed it first
                # the run renders {json.*}: this one needs its document
                await self._launch(await store.get_mailing(mailing.id), run, resume=True)

    async def _stop_all(self) -> None:
        for queue in list(self._queues.values()):
            queue.scope.cancel()
        for active in list(self._active.values()):
            await active.ready.wait()
            if active.pipeline is not None:
                active.pipeline.stop()
        for active in list(self._active.values()):
            await active.done.wait()

    # -- lifecycle ---------------------------------------------------------------------

    async def create(self, spec: MailingSpec) -> MailingStatus:
        """A new mailing (``engine.mailings.create_mailing`` checks it): one with ``at``
        or a ``schedule`` launches then; a draft waits for ``start``; a trigger mailing
        takes calls at once."""
        herald = self.herald
        mailing = await create_mailing(herald, spec, now=self._clock())
        if mailing.next_launch is not None:
            self.scheduler.wake()
        if spec.kind == "trigger":
            run = await herald.store.start_run(mailing.id)
            if self._cluster is not None:
                await _create_trigger_chunk(herald.store, run.id)
                await notify(herald.store, run.id, "start")  # an idle worker claims it now
            else:
                await self._launch(mailing, run, resume=False)
        return await self._status(mailing)

    async def start(self, mailing_id: int) -> MailingStatus:
        """Launch the mailing now: a broadcast's one run (a scheduled one's launch is
        taken, it will not launch again then), a regular mailing's extra run, a
        multivariate mailing's test (then its wait and winner, in the background)."""
        mailing = await self.herald.store.get_mailing(mailing_id)
        if mailing_id in self._active or mailing_id in self._launching:
            raise StoreError(f"mailing {mailing_id} is already running")
        if mailing.kind == "trigger":
            return await self.resume(mailing_id)
        if mailing.state == "cancelled":
            raise StoreError(f"mailing {mailing_id} is cancelled")
        run = await self.herald.store.latest_run(mailing_id)
        if run is not None and run.status != "finished" and run.status != "cancelled" \
                and not run.spec.is_test:
            raise StoreError(f"mailing {mailing_id} has a {run.status} run {run.id};"
                             " resume or cancel it")
        if mailing.kind == "broadcast":
            sent = [r for r in await self.herald.store.mailing_runs(mailing_id)
                    if not r.spec.is_test]
            if sent:  # a second run would send to everybody again
                raise StoreError(f"mailing {mailing_id} was sent already (run {sent[-1].id},"
                                 f" {sent[-1].status}): a broadcast sends once; create"
                                 " another mailing to send again")
            if mailing.state == "scheduled" and not await self.herald.store.set_launch(
                    mailing_id, expect=mailing.next_launch, next_launch=None, state="done"):
                raise StoreError(f"mailing {mailing_id} was launched already")
            if self._in_waves(mailing):
                # local time or quiet hours: its recipients' send times differ (on a
                # cluster too: each wave queued at its time, ``queue_launch``)
                await self._start_launch(mailing, Launch())
                return await self.status(mailing_id)
            run = await self.herald.store.start_run(mailing_id)
            if self._cluster is not None:
                await self._queue_chunks(mailing, run)
                await notify(self.herald.store, run.id, "start")  # idle workers claim now
            else:
                await self._launch(mailing, run, resume=False)
            return await self.status(mailing_id)
        if mailing.kind == "multivariate" and (
                mailing.state in ("waiting", "done") or not await self.herald.store.set_launch(
                    mailing_id, expect=mailing.next_launch, next_launch=None,
                    state="waiting")):
            raise StoreError(f"mailing {mailing_id} was launched already ({mailing.state})")
        await self._start_launch(mailing, Launch())
        return await self.status(mailing_id)

    async def _start_launch(self, mailing: Mailing, what: Launch) -> None:
        """Run a launch (the scheduler's, or ``start``'s) in the background: here, or on
        a cluster as chunks for the workers. Returns once its first run is under way."""
        if self._cluster is not None:
            await queue_launch(self.herald, mailing, what, now=self._clock())
            return
        await self._tg.start(self._run_launch, mailing, what)

    def _in_waves(self, mailing: Mailing) -> bool:
        """Whether the mailing's recipients have send times of their own (local time,
        quiet hours): its runs then go in waves (``engine.mailings.run_phase``)."""
        return send_times(self.herald.config, mailing, 0.0) is not None

    async def _run_phase(
        self, mailing: Mailing, spec: RunSpec, *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """One run's spec, in waves, in the background (a picked winner)."""
        runs = _Runs(self, task_status)
        try:
            await run_phase(self.herald, mailing, [spec], execute=runs.execute,
                            clock=self._clock, sleep=self._sleep)
        except Exception:
            logger.exception("mailing %s: its winner failed", mailing.id)
        finally:
            runs.done()

    async def _run_launch(
        self, mailing: Mailing, what: Launch, *,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        runs = _Runs(self, task_status)
        execute = runs.execute
        scope = anyio.CancelScope()
        self._launching[mailing.id] = scope
        self._launches.add(scope)
        try:
            with scope:
                if what.step is not None:  # a launch under way: a step the scheduler took
                    await continue_launch(self.herald, mailing, what.step, execute=execute,
                                          clock=self._clock, sleep=self._sleep)
                elif what.winner:  # in waves where its recipients' send times differ
                    spec = await winner_spec(self.herald, mailing)
                    await run_phase(self.herald, mailing, [spec], execute=execute,
                                    clock=self._clock, sleep=self._sleep)
                else:
                    # the scheduler or start took the launch: launch() must not again
                    await launch(self.herald, mailing, due=what.due, missed=what.missed,
                                 taken=True, execute=execute, clock=self._clock,
                                 sleep=self._sleep)
        except Exception:
            logger.exception("mailing %s: its launch failed", mailing.id)
        finally:
            if self._launching.get(mailing.id) is scope:  # not a step's launch after it
                del self._launching[mailing.id]
            self._launches.discard(scope)
            runs.done()

    async def pause(self, mailing_id: int) -> MailingStatus:
        """Stop gracefully; ``resume`` carries on without losing or repeating anyone.

        On a cluster the run is marked interrupted at once and the workers are notified:
        they stop at once (within a heartbeat if the notification is lost) and hand its
        chunks back."""
        active = self._active.get(mailing_id)
        if active is None and await self._is_clustered(mailing_id):
            run = await self.herald.store.latest_run(mailing_id)
            if run is None or run.status != "running":
                raise StoreError(f"mailing {mailing_id} is not running")
            await self.herald.store.set_run_status(run.id, "interrupted")
            await notify(self.herald.store, run.id, "pause")  # its chunks stop now
            return await self.status(mailing_id)
        if active is None:
            await self.herald.store.get_mailing(mailing_id)  # NotFound first
            raise StoreError(f"mailing {mailing_id} is not running")
        await active.ready.wait()
        assert active.pipeline is not None
        active.pipeline.stop()
        await active.done.wait()
        return await self.status(mailing_id)

    async def resume(self, mailing_id: int) -> MailingStatus:
        mailing = await self.herald.store.get_mailing(mailing_id)
        if mailing_id in self._active:
            raise StoreError(f"mailing {mailing_id} is already running")
        run = await self.herald.store.latest_run(mailing_id)
        if run is None or run.status not in ("interrupted", "running", "failed"):
            state = "never started" if run is None else run.status
            raise StoreError(f"mailing {mailing_id} has nothing to resume ({state})")
        if self._is_clustered_mailing(mailing):
            if run.status == "running":
                raise StoreError(f"mailing {mailing_id} is already running")
            await self._queue_chunks(mailing, run)
            await notify(self.herald.store, run.id, "resume")  # idle workers claim now
            return await self.status(mailing_id)
        run = await self.herald.store.claim_run(run.id)
        await self._launch(mailing, run, resume=True)
        return await self.status(mailing_id)

    async def cancel(self, mailing_id: int) -> MailingStatus:
        """Stop for good: what was never handed to a gateway is skipped as cancelled.

        On a cluster the run is paused first, and settled once no live worker holds a
        chunk of it any more (StoreError if one still does after ``lease_ttl``, a
        heartbeat and ``shutdown_grace``: the run stays paused).

        A scheduled mailing (or a multivariate one waiting for its winner) is cancelled
        too: it never launches again, here or in any process."""
        mailing = await self.herald.store.get_mailing(mailing_id)
        scheduled = mailing.state in ("scheduled", "waiting")
        if scheduled or mailing.kind in ("regular", "multivariate"):
            await self.herald.store.set_mailing_state(mailing_id, "cancelled")
        await self.herald.store.drop_steps(mailing_id)  # its launch's next wave or test
        launching = self._launching.get(mailing_id)
        if launching is not None:  # its next run (a winner after a wait) never starts
            launching.cancel()
        if mailing_id in self._active:
            await self.pause(mailing_id)
        run = await self.herald.store.latest_run(mailing_id)
        if run is None or run.status in ("finished", "cancelled"):
            if scheduled:
                return await self.status(mailing_id)
            if run is None:
                raise StoreError(f"mailing {mailing_id} was never started")
            raise StoreError(f"mailing {mailing_id}'s run is {run.status}")
        if await self._is_clustered(mailing_id):
            if run.status == "running":
                await self.herald.store.set_run_status(run.id, "interrupted")
                await notify(self.herald.store, run.id, "cancel")  # its chunks stop now
            await self._wait_chunks_released(run.id)
        await self.herald.store.cancel_run(run.id)
        self._settled_cache.pop(run.id, None)
        return await self.status(mailing_id)

    # -- cluster -----------------------------------------------------------------------

    def _is_clustered_mailing(self, mailing: Mailing) -> bool:
        """Its runs are the workers' (any mailing on a cluster), not this process's."""
        return self._cluster is not None

    async def _is_clustered(self, mailing_id: int) -> bool:
        if self._cluster is None:
            return False
        return self._is_clustered_mailing(await self.herald.store.get_mailing(mailing_id))

    async def _queue_chunks(self, mailing: Mailing, run: Run) -> None:
        """Hand the run to the workers: its chunks (cut once: a resumed run keeps its
        own), and the status ``running`` they lease chunks of."""
        assert self._cluster is not None
        store = self.herald.store
        if mailing.kind == "trigger":  # one chunk, never done while the mailing is active
            await _create_trigger_chunk(store, run.id)
            chunks = 1
        else:
            chunks = await store.create_chunks(run.id, mailing.source,
                                               size=self._cluster.chunk_profiles)
        if chunks == 0:  # nothing to read: no worker would ever finish it
            await store.set_run_status(run.id, "finished")
        elif run.status != "running":
            await store.set_run_status(run.id, "running")
        self._settled_cache.pop(run.id, None)

    async def _wait_chunks_released(self, run_id: int) -> None:
        """Until no live worker holds a lease on a chunk of the (paused) run."""
        assert self._cluster is not None
        store = self.herald.store
        # a worker sees the pause within a heartbeat, settles its batches within the
        # shutdown grace; a dead one's lease runs out within lease_ttl
        patience = (self._cluster.lease_ttl + self._cluster.heartbeat_s
                    + self.herald.config.engine.shutdown_grace)
        with anyio.move_on_after(patience):
            while True:
                live = {w.worker for w in await store.workers()}
                holders = sorted({c.worker for c in await store.chunks(run_id)
                                  if c.state == "leased" and c.worker in live
                                  and (c.lease_left or 0.0) > 0})
                if not holders:
                    return
                # workers stop at once (NOTIFY); the heartbeat is only the fallback
                await anyio.sleep(min(0.25, self._cluster.heartbeat_s))
        raise StoreError(f"run {run_id}: workers {', '.join(holders)} still hold chunks of"
                         " it; it stays paused, cancel it again later")

    async def _launch(self, mailing: Mailing, run: Run, *, resume: bool) -> _Active:
        active = _Active(run)
        if resume:  # what earlier sessions of the run settled; the pipeline counts the rest
            self._settled_cache.pop(run.id, None)
            active.settled_before = await self._settled(run.id)
        self._active[mailing.id] = active
        try:
            template = await self.herald.compile_run_async(mailing, run)
        except BaseException:
            self._active.pop(mailing.id, None)
            raise

        async def go() -> None:
            try:
                async with anyio.create_task_group() as tg:
                    if mailing.kind == "trigger":
                        tg.start_soon(self._take_calls, active,
                                      lambda requests: self._queue_active(active, requests))
                    await self.herald.execute(mailing, run, template=template,
                                              resume=resume, started=active.started)
                    tg.cancel_scope.cancel()
            except Exception:
                logger.exception("mailing %s run %s failed", mailing.id, run.id)
            finally:
                self._settled_cache.pop(run.id, None)
                for call in active.calls:  # calls that came in as the run stopped
                    call.error = StoreError(f"trigger mailing {mailing.id} stopped")
                    call.done.set()
                if active.pipeline is not None:
                    self._retire(active.pipeline)
                active.ready.set()
                active.done.set()
                self._active.pop(mailing.id, None)

        self._tg.start_soon(go)
        await active.ready.wait()
        return active

    def _retire(self, pipeline: Pipeline) -> None:
        """Keep a finished run's figures in the service totals."""
        for stage, seconds in pipeline.busy.items():
            self._finished_busy[stage] = self._finished_busy.get(stage, 0.0) + seconds
        for name, sender in pipeline.senders.items():
            total = self._finished_senders.setdefault(name, SenderMetrics(name=name))
            _add_sender(total, sender)

    # -- reading -----------------------------------------------------------------------

    async def status(self, mailing_id: int) -> MailingStatus:
        return await self._status(await self.herald.store.get_mailing(mailing_id))

    async def _status(self, mailing: Mailing) -> MailingStatus:
        mailing_id = mailing.id
        run = await self.herald.store.latest_run(mailing_id)
        out = MailingStatus(id=mailing.id, name=mailing.name, kind=mailing.kind,
                            resource=mailing.resource, status="draft", state=mailing.state,
                            next_launch=mailing.next_launch)
        if run is None:
            return out
        out.run_id = run.id
        active = self._active.get(mailing_id)
        if active is not None and active.pipeline is not None:
            # live figures from memory: counting rows on every poll would stall the loop
            stats = active.pipeline.statistics()
            out.status = "running"
            out.total, out.received, out.reserved = stats.total, stats.received, stats.reserved
            out.in_flight = stats.in_flight
            base = active.settled_before
            out.sent, out.failed, out.unknown = (
                base[0] + stats.sent, base[1] + stats.failed, base[2] + stats.unknown)
            return out
        if run.status == "running" and self._is_clustered_mailing(mailing):
            out.status = "running"  # the workers' (a run of this process would be active)
        else:
            out.status = _STATUS.get(run.status, "paused")  # type: ignore[assignment]
        out.received, out.reserved = run.counts.get("received", 0), run.counts.get(
            "reserved", 0)
        out.sent, out.failed, out.unknown = await self._settled(run.id, run.status)
        return out

    async def _settled(self, run_id: int, status: str | None = None) -> tuple[int, int, int]:
        """(sent, failed, unknown) of a run, counted at most every few seconds (and again
        when its status changed: a cluster run's workers may have finished it since)."""
        now = anyio.current_time()
        cached = self._settled_cache.get(run_id)
        if cached is not None and now - cached[0] < SETTLED_TTL and cached[2] == status:
            return cached[1]
        summary = await self.herald.store.run_summary(run_id)
        settled = (
            sum(n for state in ("sent", "delivered", "undelivered")
                for n in summary.get(state, {}).values()),
            sum(summary.get("failed", {}).values()),
            sum(summary.get("unknown", {}).values()),
        )
        self._settled_cache[run_id] = (now, settled, status)
        return settled

    async def list(self) -> builtins.list[MailingStatus]:
        """The newest mailings' statuses, from one read of them (not one more each)."""
        out = []
        for mailing in await self.herald.store.list_mailings(documents=False):
            out.append(await self._status(mailing))
            await anyio.lowlevel.checkpoint()
        return out

    async def log(self, mailing_id: int) -> MailingLog:
        run = await self.herald.store.latest_run(mailing_id)
        if run is None:
            await self.herald.store.get_mailing(mailing_id)
            raise StoreError(f"mailing {mailing_id} was never started")
        return await self.herald.log(run.id)

    async def runs(self, mailing_id: int) -> builtins.list[MailingRun]:
        """Every run of the mailing, oldest first, with its counts (a regular mailing's
        launches, a multivariate one's tests and winner, ``mailing test`` sends)."""
        await self.herald.store.get_mailing(mailing_id)  # NotFound first
        out = []
        for run in await self.herald.store.mailing_runs(mailing_id):
            active = self._active.get(mailing_id)
            if active is not None and active.run.id == run.id and active.pipeline is not None:
                stats = active.pipeline.statistics()
                base = active.settled_before
                sent, failed, unknown = (base[0] + stats.sent, base[1] + stats.failed,
                                         base[2] + stats.unknown)
                received = stats.received
            else:
                sent, failed, unknown = await self._settled(run.id, run.status)
                received = run.counts.get("received", 0)
            out.append(MailingRun(
                id=run.id, status=run.status, started_at=run.started_at,
                finished_at=run.finished_at, spec=run.spec, received=received, sent=sent,
                failed=failed, unknown=unknown))
        return out

    async def test(
        self, mailing_id: int, phones: Sequence[str], profile_id: int | None = None,
    ) -> builtins.list[MailingLog]:
        """``mailing test``: each of the mailing's templates to each phone, now, in this
        process (``engine.mailings.test_mailing``); the trial runs' logs."""
        return await test_mailing(self.herald, mailing_id, phones, profile_id)

    async def pick(self, mailing_id: int, variant: int) -> MailingStatus:
        """Send variant ``variant`` (1-based) of a multivariate mailing waiting for its
        ``manual`` winner to the rest of its audience, in the background."""
        mailing, spec = await claim_pick(self.herald, mailing_id, variant)
        if self._cluster is not None and self._in_waves(mailing):
            await queue_phase(self.herald, mailing, [spec], now=self._clock())
            return await self.status(mailing_id)
        if self._cluster is None and self._in_waves(mailing):
            await self._tg.start(self._run_phase, mailing, spec)
            return await self.status(mailing_id)
        run = await self.herald.store.start_run(mailing_id, spec)
        if self._cluster is not None:
            await self._queue_chunks(mailing, run)
            await notify(self.herald.store, run.id, "start")
        else:
            await self._launch(mailing, run, resume=False)
        return await self.status(mailing_id)

    # -- triggers ----------------------------------------------------------------------

    async def trigger(
        self, mailing_id: int, requests: Sequence[TriggerRequest]
    ) -> builtins.list[TriggerAccepted]:
        """Queue one message per request and answer with their ids at once; the sending
        happens in the background. A repeated idempotency key answers with the first id.

        Concurrent calls are queued together: one lookup and one transaction for all of
        them (group commit), which is what lets one process take thousands of calls a
        second. On a cluster the workers send them (see the module docstring)."""
        if self._cluster is not None:
            return await self._trigger_on_cluster(mailing_id, requests)
        active = self._active.get(mailing_id)
        if active is None:
            mailing = await self.herald.store.get_mailing(mailing_id)
            if mailing.kind != "trigger":
                raise InputError(f"mailing {mailing_id} is a {mailing.kind}, not a trigger")
            raise StoreError(f"trigger mailing {mailing_id} is paused or cancelled")
        await active.ready.wait()
        call = _Call(requests)
        active.calls.append(call)
        active.calls_waiting.set()
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.answers

    async def _trigger_on_cluster(
        self, mailing_id: int, requests: Sequence[TriggerRequest]
    ) -> builtins.list[TriggerAccepted]:
        queue = self._queues.get(mailing_id)
        if queue is None:
            mailing = await self.herald.store.get_mailing(mailing_id)
            if mailing.kind != "trigger":
                raise InputError(f"mailing {mailing_id} is a {mailing.kind}, not a trigger")
            queue = self._queues.get(mailing_id)  # another call may have made it meanwhile
            if queue is None:
                queue = self._queues[mailing_id] = _Queue(mailing)
                self._tg.start_soon(self._commit_on_cluster, queue)
        call = _Call(requests)
        queue.calls.append(call)
        queue.calls_waiting.set()
        await call.done.wait()
        if call.error is not None:
            raise call.error
        return call.answers

    async def _commit_on_cluster(self, queue: _Queue) -> None:
        """A clustered trigger mailing's group committer, for as long as the service."""
        store, mailing = self.herald.store, queue.mailing

        async def enqueue(
            requests: Sequence[TriggerRequest],
        ) -> builtins.list[TriggerAccepted]:
            # its status as the store has it now: any instance may have paused it
            run = await store.latest_run(mailing.id)
            if run is None or run.status != "running":
                raise StoreError(f"trigger mailing {mailing.id} is paused or cancelled")
            answers, queued = await self._queue_triggers(mailing, run, requests)
            if queued:  # the worker holding its chunk reads the queue now
                await notify(store, run.id, "start")
            return answers

        try:
            with queue.scope:
                await self._take_calls(queue, enqueue)
        finally:
            self._queues.pop(mailing.id, None)
            for call in queue.calls:
                call.error = StoreError("the service is stopping")
                call.done.set()

    async def _take_calls(
        self, waiting: _Calls,
        enqueue: Callable[[Sequence[TriggerRequest]], Awaitable[builtins.list[TriggerAccepted]]],
    ) -> None:
        """A trigger mailing's group committer: every call waiting is queued at once."""
        while True:
            await waiting.calls_waiting.wait()
            waiting.calls_waiting = anyio.Event()
            await anyio.lowlevel.checkpoint()  # let the calls arriving now join
            calls, waiting.calls = waiting.calls, []
            if not calls:
                continue
            try:
                answers = await enqueue([r for call in calls for r in call.requests])
            except Exception as err:
                for call in calls:
                    call.error = err
                    call.done.set()
                continue
            start = 0
            for call in calls:
                call.answers = answers[start : start + len(call.requests)]
                start += len(call.requests)
                call.done.set()

    async def _queue_active(
        self, active: _Active, requests: Sequence[TriggerRequest]
    ) -> builtins.list[TriggerAccepted]:
        """Queue the calls of a trigger mailing whose pipeline runs here, and wake it."""
        pipeline = active.pipeline
        assert pipeline is not None
        answers, queued = await self._queue_triggers(pipeline.mailing, active.run, requests)
        if queued:
            pipeline.wake()
        return answers

    async def _queue_triggers(
        self, mailing: Mailing, run: Run, requests: Sequence[TriggerRequest]
    ) -> tuple[builtins.list[TriggerAccepted], bool]:
        """The answers to the calls, and whether any was queued."""
        database_id = mailing.source.database_id
        answers: list[TriggerAccepted | None] = [None] * len(requests)
        profile_of: list[int | None] = [None] * len(requests)
        by_phone: dict[str, list[int]] = {}
        by_email: dict[str, list[int]] = {}
        by_id: dict[int, list[int]] = {}
        by_field: dict[str, dict[str, list[int]]] = {}
        for i, r in enumerate(requests):
            given = [k for k in _WHO if getattr(r, k) is not None]
            if len(given) != 1:
                answers[i] = TriggerAccepted(error="give exactly one of profile_id, phone,"
                                             " email, field_name")
            elif r.field_name is not None:
                if r.field_value is None:
                    answers[i] = TriggerAccepted(error="field_value: required with"
                                                 " field_name")
                else:
                    by_field.setdefault(r.field_name, {}).setdefault(
                        r.field_value, []).append(i)
            elif r.profile_id is not None:
                by_id.setdefault(r.profile_id, []).append(i)
            elif r.phone is not None:
                e164 = self._normaliser.normalise(r.phone)
                if e164 is None:
                    answers[i] = TriggerAccepted(error=f"phone: not a phone number: {r.phone!r}")
                else:
                    by_phone.setdefault(e164, []).append(i)
            elif r.email is not None:
                by_email.setdefault(r.email.strip().lower(), []).append(i)
        store = self.herald.store
        found_ids = await store.profile_ids_in(database_id, list(by_id)) if by_id else set()
        for pid, idx in by_id.items():
            for i in idx:
                profile_of[i] = pid if pid in found_ids else None
        lookups = [("phone", by_phone), ("email", by_email)]
        lookups += [(f"field:{name}", table) for name, table in by_field.items()]
        for key, table in lookups:
            if table:
                found = await store.find_profiles(database_id, key, list(table))
                for value, idx in table.items():
                    for i in idx:
                        profile_of[i] = found.get(value)
        items: list[tuple[int, bytes, str | None]] = []
        custom: list[bytes | None] = []
        positions: list[int] = []
        for i, r in enumerate(requests):
            if answers[i] is not None:
                continue
            profile_id = profile_of[i]
            if profile_id is None:
                field = next(k for k in _WHO if getattr(r, k) is not None)
                answers[i] = TriggerAccepted(error=f"{field}: no such profile in the"
                                             " mailing's database")
                continue
            items.append((profile_id, _encode(r.content), r.idempotency_key))
            custom.append(None if r.custom_data is None else _encode(r.custom_data))
            positions.append(i)
        if items:
            queued = await store.enqueue_triggers(
                mailing.id, run.id, items,
                custom_data=custom if any(c is not None for c in custom) else None)
            for i, (seq, duplicate) in zip(positions, queued, strict=True):
                answers[i] = TriggerAccepted(message_id=f"{run.uid}-{seq}", duplicate=duplicate)
        return [a if a is not None else TriggerAccepted(error="not processed")
                for a in answers], bool(items)

    # -- metrics -----------------------------------------------------------------------

    def statistics(self) -> ServiceStats:
        busy = dict(self._finished_busy)
        # copies: the active runs are added to them, never to the finished totals
        senders = {n: msgspec.structs.replace(m, latency_counts=list(m.latency_counts))
                   for n, m in self._finished_senders.items()}
        counted: set[int] = set()  # runs on one sender share its window: count it once
        for active in self._active.values():
            if active.pipeline is None:
                continue
            for stage, seconds in active.pipeline.busy.items():
                busy[stage] = busy.get(stage, 0.0) + seconds
            for name, sender in active.pipeline.senders.items():
                total = senders.setdefault(name, SenderMetrics(name=name))
                _add_sender(total, sender)
                if id(sender.limit) not in counted:
                    counted.add(id(sender.limit))
                    total.in_flight += sender.limit.in_flight
        return ServiceStats(senders=sorted(senders.values(), key=lambda s: s.name),
                            busy_s=busy, running=len(self._active))

    def routing(self) -> builtins.list[tuple[str, RouterStats]]:
        """Each run going on here: its virtual sender, and its router's weights and sender
        health now (each run routes with its own health)."""
        out = []
        for active in self._active.values():
            pipeline = active.pipeline
            if pipeline is not None:
                resource = self.herald.config.resources.get(pipeline.mailing.resource)
                if resource is not None:
                    out.append((resource.virtual_sender,
                                pipeline.router.statistics(pipeline.clock())))
        return out


#: Seconds a stopped run's counts are reused by ``status`` (receipts may still move them).
SETTLED_TTL = 5.0
_STATUS = {"running": "paused", "interrupted": "paused", "finished": "finished",
           "cancelled": "cancelled", "failed": "failed"}
_encode = msgspec.json.Encoder().encode


async def _deliver_hooks(herald: Herald, scope: anyio.CancelScope) -> None:
    """The action hooks' deliverers (``engine.events.outbox``), until ``scope`` is
    cancelled."""
    from engine.events.outbox import Outbox

    with scope:
        await Outbox(herald.store, herald.config).run()


async def _create_trigger_chunk(store: Any, run_id: int) -> None:
    """The one chunk of a trigger run on a cluster (PostgreSQL's ``ClusterStore``); kept
    if it has it."""
    await store.create_trigger_chunk(run_id)


def _add_sender(total: SenderMetrics, sender: SenderRuntime) -> None:
    total.sent += sender.sent
    total.failed += sender.failed
    total.throttled += sender.throttled
    h = sender.latency
    if not total.latency_buckets:
        total.latency_buckets = list(h.bounds)
        total.latency_counts = [0] * len(h.bounds)
    for i, n in enumerate(h.cumulative()):
        total.latency_counts[i] += n
    total.latency_sum += h.total
    total.latency_count += h.count
    if sender.errors:
        total.last_errors = sorted([*total.last_errors, *sender.errors])[-LAST_ERRORS:]
