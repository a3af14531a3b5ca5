"""``herald cluster status [--json]``: the workers of the cluster and the runs they share.

Read from the store (PostgreSQL), so any machine of the cluster sees the same: each live
worker (its host, pid, the age of its last heartbeat, the chunks it holds) and each run in
progress (its chunks pending, leased and done, and its counts so far). On SQLite it exits
2: a cluster needs PostgreSQL.

Per-sender rates are not read here: the recipients table has no index on ``updated_at``
(one would cost every write of the journal), so "sent in the last minute" would read every
recipient of the running runs. Each worker's ``/metrics`` has them instead
(``herald_sender_sent_total{sender=...}``, and the pace: ``herald_sender_limit_*``)."""

from __future__ import annotations

import argparse
import time
from typing import Any

import msgspec

from engine.cli.workspace import print_json, using
from engine.store.base import ChunkRow, Store, WorkerRow

__all__ = ["ClusterStatus", "RunProgress", "WorkerStatus", "add_cluster_parsers",
           "cluster_status"]

#: Runs looked at for chunks (newest first): a cluster rarely has more in progress.
RECENT_RUNS = 200


class WorkerStatus(msgspec.Struct, kw_only=True):
    worker: str
    host: str
    pid: int
    started_at: float
    #: Seconds since its last heartbeat (by this machine's clock).
    heartbeat_age: float
    chunks: int


class RunProgress(msgspec.Struct, kw_only=True):
    run_id: int
    mailing_id: int
    mailing: str
    status: str
    chunks_pending: int
    chunks_leased: int
    chunks_done: int
    #: The run's counters (received, reserved, skipped...) and its recipients by state.
    counts: dict[str, int]
    states: dict[str, int]


class ClusterStatus(msgspec.Struct, kw_only=True):
    workers: list[WorkerStatus]
    runs: list[RunProgress]


def _worker(row: WorkerRow, now: float) -> WorkerStatus:
    return WorkerStatus(worker=row.worker, host=row.host, pid=row.pid,
                        started_at=row.started_at,
                        heartbeat_age=round(max(0.0, now - row.heartbeat_at), 3),
                        chunks=row.chunks)


def _chunk_counts(chunks: list[ChunkRow]) -> dict[str, int]:
    out = {"pending": 0, "leased": 0, "done": 0}
    for c in chunks:
        out[c.state] = out.get(c.state, 0) + 1
    return out


async def cluster_status(store: Store) -> ClusterStatus:
    """The cluster as the store sees it; StoreError on a store that cannot share work."""
    workers = await store.workers()  # first: SQLite refuses here
    now = time.time()
    runs = []
    for mailing, run in await store.list_runs(RECENT_RUNS):
        if run.status not in ("running", "interrupted"):
            continue
        chunks = await store.chunks(run.id)
        if not chunks:  # a run of one process, not of the cluster
            continue
        by_state = _chunk_counts(chunks)
        summary = await store.run_summary(run.id)
        runs.append(RunProgress(
            run_id=run.id, mailing_id=mailing.id, mailing=mailing.name, status=run.status,
            chunks_pending=by_state["pending"], chunks_leased=by_state["leased"],
            chunks_done=by_state["done"], counts=dict(run.counts),
            states={state: sum(reasons.values()) for state, reasons in summary.items()},
        ))
    return ClusterStatus(workers=[_worker(w, now) for w in workers], runs=runs)


def _print_table(status: ClusterStatus) -> None:
    print(f"workers: {len(status.workers)}")
    if status.workers:
        print(f"  {'WORKER':<28} {'HOST':<20} {'PID':>7} {'HEARTBEAT':>10} {'CHUNKS':>6}")
        for w in status.workers:
            print(f"  {w.worker:<28} {w.host:<20} {w.pid:>7} {w.heartbeat_age:>9.1f}s"
                  f" {w.chunks:>6}")
    print(f"runs in progress: {len(status.runs)}")
    if status.runs:
        print(f"  {'RUN':>6} {'MAILING':<24} {'STATUS':<11} {'PENDING':>7} {'LEASED':>6}"
              f" {'DONE':>6}  COUNTS")
        for r in status.runs:
            counts = " ".join(f"{k}={v}" for k, v in sorted(r.counts.items()))
            states = " ".join(f"{k}={v}" for k, v in sorted(r.states.items()))
            print(f"  {r.run_id:>6} {r.mailing[:24]:<24} {r.status:<11} {r.chunks_pending:>7}"
                  f" {r.chunks_leased:>6} {r.chunks_done:>6}  {counts} | {states}")


def cmd_cluster_status(args: argparse.Namespace) -> int:
    async def action(herald: Any) -> ClusterStatus:
        return await cluster_status(herald.store)

    status = using(args, action)
    if args.json:
        print_json(status)
    else:
        _print_table(status)
    return 0


def add_cluster_parsers(subparsers: Any) -> None:
    """Register ``cluster status`` on the ``herald`` command's sub-parsers."""
    p = subparsers.add_parser("cluster", help="see the cluster's workers and runs")
    sub = p.add_subparsers(dest="cluster_command", required=True, metavar="COMMAND")
    status = sub.add_parser("status", help="workers, their heartbeats and chunks; runs in"
                            " progress (exit 2 on SQLite: a cluster needs PostgreSQL)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_cluster_status)
