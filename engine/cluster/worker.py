"""``herald worker``: a stateless process that leases chunks of broadcast and trigger runs.

::

    slot ×N:   claim_chunk ─▶ Pipeline(lease) over a LeasedStore ─▶ release_chunk(done?)
    heartbeat: every [cluster] heartbeat: renew_lease for each held chunk (a refusal stops
               that chunk at once), look at each held run's status (paused or cancelled:
               stop its chunks with the usual grace, release them pending), worker_heartbeat
    control:   LISTEN herald_control (engine.cluster.control): a pause or cancel stops that
               run's chunks at once, as the heartbeat would; a start or resume wakes the
               idle slots and the pipelines of that run (a trigger run's new calls).
               The heartbeat's look stays the fallback for a lost message.
    hooks:     a deliverer per [hooks.NAME] (engine.events.outbox), under the hook's lease:
               one process of the cluster delivers each hook.

A trigger mailing's run is one chunk (``create_trigger_chunk``: every profile, its
checkpoint the last queue id settled) that one worker holds for as long as the mailing is
active, in one of its slots: it is never done, a pause, a cancel or a stop gives it back
pending. The service queues each trigger call, then notifies ``start`` for its run: the
worker holding the chunk reads the queue at once (within ``trigger_linger``), the others'
idle slots look for a claimable chunk.

A chunk is a range of profile ids of one run (``ClusterStore.create_chunks``). A worker
killed with SIGKILL stops renewing; after ``lease_ttl`` another worker claims the chunk
(taken over: its fence goes up, so nothing the old owner could still write is accepted)
and settles its journal by the rule of ``herald resume``. SIGTERM or Ctrl-C stops the
slots gracefully and gives the chunks back pending. The worker that releases a run's last
chunk marks the run finished.

``send_on_cluster`` is ``herald send`` on a cluster: it cuts a new run into chunks, works
on that run like any worker, and returns when every chunk is done, whoever did them.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import anyio

from engine.cluster.control import Control, listen
from engine.cluster.leased import LeasedStore
from engine.config import ClusterConfig
from engine.core.ratelimit import GcraStats
from engine.core.sms import measure
from engine.errors import InputError, LeaseLost
from engine.mailing_log import MailingLog
from engine.pipeline import Pipeline, PipelineStats
from engine.store.base import Lease, Store

if TYPE_CHECKING:
    from engine.runner import Herald

__all__ = ["SenderGauge", "Worker", "WorkerStats", "send_on_cluster"]

#: Seconds between looks for a chunk when there was none (a start or resume notified
#: wakes the slots at once; this finds chunks given back or whose lease ran out).
IDLE_POLL = 0.3
#: Seconds before claiming again after the store failed to answer a claim.
CLAIM_BACKOFF = 1.0
#: Seconds ``herald send`` waits for the worker that released the last chunk to mark the
#: run finished before doing it itself.
FINISH_WAIT = 5.0


class SenderGauge(NamedTuple):
    """A sender as this worker sees it: its pace (GCRA, in Redis on a cluster with
    ``redis``), its window, whether Redis answers for it, and what this worker sent."""

    gcra: GcraStats
    in_flight: int
    #: Redis is unreachable for this sender: this worker sends nothing through it.
    unreachable: bool
    sent: int
    failed: int
    throttled: int


class WorkerStats(NamedTuple):
    """An immutable snapshot: the chunks held now and what this worker did so far."""

    worker: str
    chunks_held: int
    chunks_done: int
    chunks_lost: int
    sent: int
    failed: int
    unknown: int
    pipelines: list[PipelineStats]
    #: each configured sender, by name
    senders: dict[str, SenderGauge]


class _Held:
    """A chunk this worker holds: its lease, its pipeline and its fenced store."""

    def __init__(self, lease: Lease, pipeline: Pipeline, leased: LeasedStore) -> None:
        self.lease = lease
        self.pipeline = pipeline
        self.leased = leased


class Worker:
    """``concurrency`` chunk slots and a heartbeat, on one workspace (``herald``).

    ``run_id``: only that run's chunks (``herald send``); the worker then ends when every
    chunk of the run is done. Otherwise it runs until ``stop()``."""

    def __init__(
        self, herald: Herald, *, concurrency: int = 1, run_id: int | None = None,
        name: str | None = None,
    ) -> None:
        cluster = herald.config.cluster
        if cluster is None:
            raise InputError("herald worker needs a [cluster] table in the config")
        if concurrency < 1:
            raise InputError("--concurrency must be 1 or more")
        self.herald = herald
        self.cluster: ClusterConfig = cluster
        self.concurrency = concurrency
        self.run_id = run_id
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.name = name or f"{self.host}:{self.pid}:{secrets.token_hex(3)}"
        self.stopping = False
        self._grace: float | None = None
        self._held: dict[tuple[int, int], _Held] = {}
        #: compiled templates by (mailing id, variant)
        self._templates: dict[tuple[int, int], Any] = {}
        self._wake = anyio.Event()
        self._done = self._lost = 0
        self._results = {"sent": 0, "failed": 0, "unknown": 0}
        #: per sender: (sent, failed, throttled) of the chunks finished so far
        self._sender_totals: dict[str, tuple[int, int, int]] = {}

    @property
    def store(self) -> Store:
        return self.herald.store

    # -- control -----------------------------------------------------------------------

    def stop(self, *, grace: float | None = None) -> None:
        """Claim nothing more; the chunks held stop as a run does (``grace``: default
        ``shutdown_grace``) and go back pending. Again with a shorter grace: shorter."""
        self.stopping = True
        self._grace = grace
        for held in list(self._held.values()):
            held.pipeline.stop(grace=grace)
        self._wake.set()

    def statistics(self) -> WorkerStats:
        pipelines = [h.pipeline.statistics() for h in self._held.values()]
        r = self._results
        return WorkerStats(
            worker=self.name, chunks_held=len(self._held), chunks_done=self._done,
            chunks_lost=self._lost,
            sent=r["sent"] + sum(p.sent for p in pipelines),
            failed=r["failed"] + sum(p.failed for p in pipelines),
            unknown=r["unknown"] + sum(p.unknown for p in pipelines),
            pipelines=pipelines,
            senders=self._sender_gauges(pipelines),
        )

    def _sender_gauges(self, pipelines: list[PipelineStats]) -> dict[str, SenderGauge]:
        totals = dict(self._sender_totals)
        for p in pipelines:
            for s in p.senders:
                sent, failed, throttled = totals.get(s.name, (0, 0, 0))
                totals[s.name] = (sent + s.sent, failed + s.failed, throttled + s.throttled)
        out = {}
        for name, config in self.herald.config.senders.items():
            limit = self.herald.limits.get(name, config)  # the one the pipelines share
            gcra = limit.statistics()
            down = getattr(gcra, "unreachable_since", None)
            sent, failed, throttled = totals.get(name, (0, 0, 0))
            out[name] = SenderGauge(
                gcra=gcra, in_flight=limit.in_flight,
                unreachable=down is not None and gcra.rate > 0,  # unlimited: no Redis
                sent=sent, failed=failed, throttled=throttled)
        return out

    def _on_control(self, control: Control | None) -> None:
        """A control message (``engine.cluster.control``); None: some may have been lost."""
        if control is None or control.action in ("start", "resume"):
            wake, self._wake = self._wake, anyio.Event()
            wake.set()  # the idle slots claim now
            for held in list(self._held.values()):
                if control is None or held.lease.run_id == control.run:
                    held.pipeline.wake()  # a trigger run's queue has new calls: read it
        if control is None or control.action not in ("pause", "cancel"):
            return
        for held in list(self._held.values()):  # as the heartbeat does, only sooner
            if held.lease.run_id == control.run and not held.leased.lost \
                    and not held.pipeline.stopped:
                held.pipeline.stop()

    # -- the work ----------------------------------------------------------------------

    async def run(self, *, handle_signals: bool = False) -> None:
        """Work until ``stop()`` (or, restricted to a run, until its chunks are done)."""
        async with anyio.create_task_group() as tg:
            if handle_signals:
                tg.start_soon(self._stop_on_signal)
            # listening before the first claim: a pause of a chunk claimed is heard
            await tg.start(listen, self.store, self._on_control)
            tg.start_soon(self._heartbeat)
            if self.run_id is None and self.herald.config.hooks:  # herald worker: hooks too
                from engine.events.outbox import Outbox

                tg.start_soon(Outbox(self.store, self.herald.config, owner=self.name).run)
            async with anyio.create_task_group() as slots:
                for _ in range(self.concurrency):
                    slots.start_soon(self._slot)
            tg.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            try:
                await self.store.worker_heartbeat(
                    self.name, host=self.host, pid=self.pid, chunks=0,
                    ttl=self.cluster.lease_ttl * 3)
            except Exception as err:  # the store is going away: nothing to say it to
                _warn(f"last heartbeat: {err}")

    async def _slot(self) -> None:
        store, ttl = self.store, self.cluster.lease_ttl
        while not self.stopping:
            try:
                lease = await store.claim_chunk(self.name, ttl, run_id=self.run_id)
                if lease is None and self.run_id is not None and await self._run_over(
                        self.run_id):
                    return
            except Exception as err:  # the database away for a moment: say so, try again
                _warn(f"claim: {type(err).__name__}: {err}")
                await anyio.sleep(CLAIM_BACKOFF)
                lease = None
            if lease is not None:
                await self._work(lease)
                continue
            with anyio.move_on_after(IDLE_POLL):
                await self._wake.wait()

    async def _run_over(self, run_id: int) -> bool:
        """Every chunk of the run is done, or the run stopped (paused, cancelled)."""
        chunks = await self.store.chunks(run_id)
        if chunks and all(c.state == "done" for c in chunks):
            return True
        _, run = await self.store.get_run(run_id)
        return run.status != "running"

    async def _work(self, lease: Lease) -> None:
        """Run one chunk to its end (or until stopped), then give it back: done, or
        pending for any worker. A lease lost meanwhile: drop it, write nothing more."""
        herald = self.herald
        mailing, run = await self.store.get_run(lease.run_id)
        key = (mailing.id, run.spec.variant)  # a multivariate mailing's runs send their own
        template = self._templates.get(key)
        if template is None:
            template = self._templates[key] = await herald.compile_run_async(mailing, run)
        drivers = herald.drivers()
        pipeline: Pipeline | None = None

        def lost() -> None:
            if pipeline is not None:
                pipeline.stop(grace=0)

        leased = LeasedStore(self.store, lease, on_lost=lost)
        key = (lease.run_id, lease.chunk)
        try:
            resource_id = await self.store.resource_id(mailing.resource)
            total = await self.store.audience_bound(mailing.source)
            pipeline = Pipeline(
                store=cast(Store, leased), config=herald.config, drivers=drivers,
                mailing=mailing, run=run, template=template, measure=measure,
                resource_id=resource_id, total=total, limits=herald.limits,
                functions=herald.plugins.template_functions(), lease=lease,
            )
            self._held[key] = _Held(lease, pipeline, leased)
            if self.stopping:
                pipeline.stop(grace=self._grace)
            # a chunk read before (taken over, or given back by a pause or a stop) has
            # its journal settled first, by the rule of resume
            started = lease.taken_over or lease.checkpoint > lease.lo or lease.audience_done
            try:
                await pipeline.execute(resume=started)
            except Exception as err:
                if not leased.lost and not _has_lease_lost(err):
                    raise
                leased.lose()
        finally:
            self._held.pop(key, None)
            if pipeline is not None:
                stats = pipeline.statistics()
                self._results["sent"] += stats.sent
                self._results["failed"] += stats.failed
                self._results["unknown"] += stats.unknown
                for s in stats.senders:
                    sent, failed, throttled = self._sender_totals.get(s.name, (0, 0, 0))
                    self._sender_totals[s.name] = (
                        sent + s.sent, failed + s.failed, throttled + s.throttled)
            with anyio.CancelScope(shield=True):
                for driver in drivers.values():
                    await driver.aclose()
        if leased.lost:
            self._lost += 1
            _warn(f"run {lease.run_id} chunk {lease.chunk}: lease lost, chunk dropped")
            return
        with anyio.CancelScope(shield=True):  # a stopping worker still gives it back
            done = await pipeline.complete()
            try:
                last = await self.store.release_chunk(lease, done=done)
            except LeaseLost:
                self._lost += 1
                return
            if done:
                self._done += 1
            if last:
                await self._finish(lease.run_id)

    async def _finish(self, run_id: int) -> None:
        """This worker released the run's last chunk: the run is finished."""
        _, run = await self.store.get_run(run_id)
        if run.status != "running":
            return
        timings = dict(run.timings)
        timings["total_time_s"] = round(time.time() - run.started_at, 3)
        await self.store.set_run_status(run_id, "finished", timings=timings)

    # -- the heartbeat -----------------------------------------------------------------

    async def _heartbeat(self) -> None:
        store, ttl = self.store, self.cluster.lease_ttl
        while True:
            try:
                await self._beat(store, ttl)
            except Exception as err:  # PostgreSQL away for a moment: the lease lasts ttl
                _warn(f"heartbeat: {type(err).__name__}: {err}")
            await anyio.sleep(self.cluster.heartbeat_s)

    async def _beat(self, store: Store, ttl: float) -> None:
        status: dict[int, str] = {}
        for held in list(self._held.values()):
            if held.leased.lost:
                continue
            if not await store.renew_lease(held.lease, ttl):
                held.leased.lose()  # taken over: stop now, record nothing more
                continue
            run_id = held.lease.run_id
            if run_id not in status:
                _, run = await store.get_run(run_id)
                status[run_id] = run.status
            if status[run_id] != "running" and not held.pipeline.stopped:
                held.pipeline.stop()  # paused or cancelled: give the chunk back
        await store.worker_heartbeat(self.name, host=self.host, pid=self.pid,
                                     chunks=len(self._held), ttl=ttl * 3)

    async def _stop_on_signal(self) -> None:
        """First Ctrl-C/SIGTERM: stop gracefully. Second: stop waiting for the gateways."""
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                self.stop(grace=0 if self.stopping else None)


def _has_lease_lost(err: BaseException) -> bool:
    if isinstance(err, LeaseLost):
        return True
    if isinstance(err, BaseExceptionGroup):
        return any(_has_lease_lost(e) for e in err.exceptions)
    return False


def _warn(text: str) -> None:
    print(f"herald worker: {text}", file=sys.stderr, flush=True)


async def send_on_cluster(
    herald: Herald,
    *,
    resource: str,
    template: str,
    database: str | None = None,
    segment: str | None = None,
    limit: int | None = None,
    name: str | None = None,
    policy: Any = None,
    concurrency: int = 2,
    handle_signals: bool = False,
    progress: Callable[[WorkerStats], None] | None = None,
    subject: str | None = None,
    text: str | None = None,
) -> MailingLog:
    """``herald send`` on a cluster: a new run, cut into chunks of ``[cluster]
    chunk_profiles``, worked on here (``concurrency`` slots) and by every other worker;
    its mailing log once every chunk is done (or when stopped: the run goes on)."""
    cluster = herald.config.cluster
    if cluster is None:
        raise InputError("a cluster send needs a [cluster] table in the config")
    mailing, run, _ = await herald.create_broadcast(
        resource=resource, template=template, database=database, segment=segment,
        limit=limit, name=name, policy=policy, subject=subject, text=text,
    )
    await herald.store.create_chunks(run.id, mailing.source, size=cluster.chunk_profiles)
    worker = Worker(herald, concurrency=concurrency, run_id=run.id)
    async with anyio.create_task_group() as tg:
        if progress is not None:
            tg.start_soon(_report, worker, progress)
        await worker.run(handle_signals=handle_signals)
        tg.cancel_scope.cancel()
    if not worker.stopping:
        await _wait_finished(herald.store, run.id)
    return await herald.log(run.id)


async def _wait_finished(store: Store, run_id: int) -> None:
    """Every chunk is done: wait for whoever released the last one to mark the run
    finished (it does right after), then do it here if nobody did."""
    chunks = await store.chunks(run_id)
    if not chunks or any(c.state != "done" for c in chunks):
        return  # the run stopped (paused, cancelled): its log as it stands
    with anyio.move_on_after(FINISH_WAIT):
        while True:
            _, run = await store.get_run(run_id)
            if run.status != "running":
                return
            await anyio.sleep(0.1)
    chunks = await store.chunks(run_id)
    _, run = await store.get_run(run_id)
    if run.status == "running" and chunks and all(c.state == "done" for c in chunks):
        timings = dict(run.timings)
        timings["total_time_s"] = round(time.time() - run.started_at, 3)
        await store.set_run_status(run_id, "finished", timings=timings)


async def _report(worker: Worker, progress: Callable[[WorkerStats], None]) -> None:
    while True:
        progress(worker.statistics())
        await anyio.sleep(0.2)
