"""Mailings and runs (RunStore)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from engine.core.policy import Policy
from engine.errors import NotFound, StoreError
from engine.store.counters import RECIPIENTS, UNKNOWN, Tally
from engine.store.models import (
    AudienceSource,
    Mailing,
    MailingOptions,
    MailingState,
    Run,
    RunSpec,
    RunStatus,
    Step,
    StepKind,
    mailing_from_row,
    run_from_row,
    run_is_live,
    step_from_row,
)
from engine.store.postgres.connection import PgBase, checked_channel
from engine.store.postgres.events import TALLY, tally_params
from engine.store.postgres.journal import decode_entries, json_rows

__all__ = ["CHANNEL_DDL", "DDL", "KINDS_DDL", "STEPS_DDL", "PgRuns"]

#: This role's tables, in the first migration (``schema.py``). A mailing's document is
#: ``json``, kept as written (its keys in the user's order); counts and timings are jsonb.
DDL = """
CREATE TABLE mailings (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text NOT NULL,
    kind text NOT NULL,
    resource text NOT NULL,
    source_kind text NOT NULL,
    database_id bigint NOT NULL REFERENCES databases(id),
    segment_id bigint,
    template text NOT NULL,
    limit_n bigint,
    document json NOT NULL DEFAULT '{}',
    created_at double precision NOT NULL,
    policy jsonb
);
CREATE TABLE runs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid text NOT NULL UNIQUE,
    mailing_id bigint NOT NULL REFERENCES mailings(id),
    status text NOT NULL,
    started_at double precision NOT NULL,
    finished_at double precision,
    checkpoint bigint NOT NULL DEFAULT 0,
    next_seq bigint NOT NULL DEFAULT 1,
    audience_done boolean NOT NULL DEFAULT false,
    counts jsonb NOT NULL DEFAULT '{}',
    timings jsonb NOT NULL DEFAULT '{}',
    pid integer,
    host text,
    error text
);
CREATE INDEX runs_mailing ON runs(mailing_id, id);
"""
#: Migration 5 (issue 14): mailing kinds and schedules.
KINDS_DDL = """
ALTER TABLE mailings ADD COLUMN options jsonb NOT NULL DEFAULT '{}';
ALTER TABLE mailings ADD COLUMN state text NOT NULL DEFAULT 'draft';
ALTER TABLE mailings ADD COLUMN next_launch double precision;
CREATE INDEX mailings_due ON mailings(next_launch) WHERE next_launch IS NOT NULL;
ALTER TABLE runs ADD COLUMN spec jsonb NOT NULL DEFAULT '{}';
"""
#: Migration 6 (issue 14): a launch's next steps (``RunStore.add_step``).
STEPS_DDL = """
CREATE TABLE launch_steps (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailing_id bigint NOT NULL REFERENCES mailings(id),
    kind text NOT NULL DEFAULT 'run',
    spec jsonb NOT NULL DEFAULT '{}',
    after_run bigint REFERENCES runs(id),
    at double precision
);
CREATE INDEX launch_steps_mailing ON launch_steps(mailing_id);
"""
#: Migration 10 (issue 19): the channel a mailing's audience reads (``AudienceSource``).
CHANNEL_DDL = "ALTER TABLE mailings ADD COLUMN channel text NOT NULL DEFAULT 'sms';\n"

_json = msgspec.json.Encoder()

#: ``mailing_from_row``'s column order (the channel, the source's, last).
_MAILING_COLUMNS = (
    "m.id, m.name, m.kind, m.resource, m.source_kind, m.database_id, m.segment_id,"
    " m.template, m.limit_n, m.document::text, m.created_at, m.policy::text,"
    " m.options::text, m.state, m.next_launch, m.channel"
)
#: A run's counters: its row's, plus those its chunks keep (a cluster run's reserves add
#: to their chunk's row, not to the run's, so concurrent workers do not wait on one row).
RUN_COUNTS = (
    "(SELECT coalesce(jsonb_object_agg(key, n), '{}')::text FROM (SELECT key,"
    " sum(value::bigint) AS n FROM (SELECT key, value FROM jsonb_each_text(r.counts)"
    " UNION ALL SELECT e.key, e.value FROM run_chunks c, jsonb_each_text(c.counts) AS e"
    " WHERE c.run_id = r.id) AS parts GROUP BY key) AS totals)"
)
_RUN_COLUMNS = (
    "r.id, r.uid, r.mailing_id, r.status, r.started_at, r.finished_at, r.checkpoint,"
    " r.next_seq, r.audience_done, " + RUN_COUNTS + ", r.timings::text, r.pid, r.host,"
    " r.error, r.spec::text, "
    + _MAILING_COLUMNS
)
_RUNS = f"SELECT {_RUN_COLUMNS} FROM runs r JOIN mailings m ON m.id = r.mailing_id"


def _with_channel(mailing: Mailing, channel: str) -> Mailing:
    """The mailing with its audience's channel (the column after ``mailing_from_row``'s)."""
    if mailing.source.channel == channel:
        return mailing
    source = msgspec.structs.replace(mailing.source, channel=checked_channel(channel))
    return msgspec.structs.replace(mailing, source=source)


def _mailing(row: Sequence[Any]) -> Mailing:
    """A mailing from ``_MAILING_COLUMNS``."""
    return _with_channel(mailing_from_row(row), row[15])


def _run(row: Sequence[Any]) -> tuple[Mailing, Run]:
    """A run and its mailing from ``_RUN_COLUMNS``."""
    mailing, run = run_from_row(row)
    return _with_channel(mailing, row[30]), run




class PgRuns(PgBase):
    async def create_mailing(
        self,
        *,
        name: str,
        kind: str,
        resource: str,
        source: AudienceSource,
        template: str,
        limit: int | None,
        document: dict[str, Any] | None = None,
        policy: Policy | None = None,
        options: MailingOptions | None = None,
        next_launch: float | None = None,
    ) -> Mailing:
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO mailings (name, kind, resource, source_kind, database_id,"
                " segment_id, template, limit_n, document, created_at, policy, options,"
                " state, next_launch, channel)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s, %s::jsonb,"
                " %s::jsonb, %s, %s, %s)"
                f" RETURNING {_MAILING_COLUMNS.replace('m.', '')}",
                (name, kind, resource, source.kind, source.database_id, source.segment_id,
                 template, limit, _json.encode(document or {}).decode(), time.time(),
                 _json.encode(policy).decode() if policy else None,
                 _json.encode(options or MailingOptions()).decode(),
                 "draft" if next_launch is None else "scheduled", next_launch,
                 checked_channel(source.channel)),
            )
        assert row is not None
        return _mailing(row)

    async def get_mailing(self, mailing_id: int) -> Mailing:
        row = await self.db.fetchone(
            f"SELECT {_MAILING_COLUMNS} FROM mailings m WHERE m.id = %s", (mailing_id,)
        )
        if row is None:
            raise NotFound(f"no mailing {mailing_id}")
        return _mailing(row)

    async def list_mailings(self, limit: int = 100, *, documents: bool = True) -> list[Mailing]:
        columns = _MAILING_COLUMNS if documents else _MAILING_COLUMNS.replace(
            "m.document::text", "'{}'")
        rows = await self.db.fetchall(
            f"SELECT {columns} FROM mailings m ORDER BY m.id DESC LIMIT %s", (limit,)
        )
        return [_mailing(r) for r in rows]

    async def start_run(self, mailing_id: int, spec: RunSpec | None = None) -> Run:
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO runs (uid, mailing_id, status, started_at, pid, host, spec)"
                " VALUES (%s, %s, 'running', %s, %s, %s, %s::jsonb) RETURNING id",
                (secrets.token_hex(5), mailing_id, time.time(), os.getpid(),
                 socket.gethostname(), _json.encode(spec or RunSpec()).decode()),
            )
        assert row is not None
        return (await self.get_run(int(row[0])))[1]

    async def set_launch(
        self, mailing_id: int, *, expect: float | None, next_launch: float | None,
        state: MailingState | None = None,
    ) -> bool:
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "UPDATE mailings SET next_launch = %s, state = coalesce(%s, state)"
                " WHERE id = %s AND next_launch IS NOT DISTINCT FROM %s"
                " AND state <> 'cancelled' RETURNING id",
                (next_launch, state, mailing_id, expect),
            )
        return row is not None

    async def set_mailing_state(self, mailing_id: int, state: MailingState) -> None:
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "UPDATE mailings SET state = %s,"
                " next_launch = CASE WHEN %s IN ('done', 'cancelled', 'draft') THEN NULL"
                " ELSE next_launch END WHERE id = %s RETURNING id", (state, state, mailing_id))
        if row is None:
            raise NotFound(f"no mailing {mailing_id}")

    async def due_mailings(self, now: float) -> list[Mailing]:
        rows = await self.db.fetchall(
            f"SELECT {_MAILING_COLUMNS} FROM mailings m WHERE m.next_launch <= %s"
            " AND m.state IN ('scheduled', 'waiting') ORDER BY m.next_launch, m.id", (now,)
        )
        return [_mailing(r) for r in rows]

    async def next_due(self) -> float | None:
        row = await self.db.fetchone(
            "SELECT min(next_launch) FROM mailings WHERE state IN ('scheduled', 'waiting')"
        )
        return None if row is None or row[0] is None else float(row[0])

    async def mailing_runs(self, mailing_id: int) -> list[Run]:
        rows = await self.db.fetchall(
            f"{_RUNS} WHERE r.mailing_id = %s ORDER BY r.id", (mailing_id,))
        return [_run(r)[1] for r in rows]

    async def get_run(self, run_id: int) -> tuple[Mailing, Run]:
        row = await self.db.fetchone(f"{_RUNS} WHERE r.id = %s", (run_id,))
        if row is None:
            raise NotFound(f"no run {run_id}")
        return _run(row)

    async def latest_run(self, mailing_id: int) -> Run | None:
        row = await self.db.fetchone(
            f"{_RUNS} WHERE r.mailing_id = %s ORDER BY r.id DESC LIMIT 1", (mailing_id,)
        )
        return None if row is None else _run(row)[1]

    async def list_runs(self, limit: int = 100) -> list[tuple[Mailing, Run]]:
        rows = await self.db.fetchall(f"{_RUNS} ORDER BY r.id DESC LIMIT %s", (limit,))
        return [_run(r) for r in rows]

    async def claim_run(self, run_id: int) -> Run:
        async with self.db.transaction() as tx:
            # The row lock makes claims of one run take turns: the second sees the first's.
            row = await tx.fetchone(f"{_RUNS} WHERE r.id = %s FOR UPDATE OF r", (run_id,))
            if row is None:
                raise NotFound(f"no run {run_id}")
            _, run = _run(row)
            if run_is_live(run):
                raise StoreError(
                    f"run {run_id} is still running (pid {run.pid} on {run.host})"
                )
            if run.status == "finished":
                raise StoreError(f"run {run_id} is finished; nothing to resume")
            row = await tx.fetchone(
                "UPDATE runs r SET status = 'running', pid = %s, host = %s, error = NULL"
                f" FROM mailings m WHERE m.id = r.mailing_id AND r.id = %s"
                f" RETURNING {_RUN_COLUMNS}",
                (os.getpid(), socket.gethostname(), run_id),
            )
        assert row is not None
        return _run(row)[1]

    async def set_run_status(
        self,
        run_id: int,
        status: RunStatus,
        *,
        timings: dict[str, float] | None = None,
        error: str | None = None,
    ) -> None:
        finished = time.time() if status in ("finished", "failed") else None
        await self.db.execute(
            "UPDATE runs SET status = %s, finished_at = coalesce(%s, finished_at),"
            " timings = coalesce(%s::jsonb, timings), error = %s WHERE id = %s",
            (status, finished, _json.encode(timings).decode() if timings else None,
             error, run_id),
        )

    async def cancel_run(self, run_id: int) -> None:
        now = time.time()
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "SELECT j.batch, j.sender, j.messages, s.batch IS NOT NULL FROM journal j"
                " LEFT JOIN journal_sending s ON s.run_id = j.run_id AND s.batch = j.batch"
                " WHERE j.run_id = %s",
                (run_id,),
            )
            batches = [r[0] for r in rows]
            settled = [
                (e.seq, e.profile_id, e.phone, "unknown" if maybe else "skipped",
                 "interrupted" if maybe else "cancelled", sender)
                for _, sender, blob, maybe in rows for e in decode_entries(blob)
            ]
            # the messages that may be at their gateway count as recipients, unknown
            tally = Tally()
            for _, _, _, state, _, sender in settled:
                if state == "unknown":
                    tally.count(run_id, sender, now, RECIPIENTS)
                    tally.count(run_id, sender, now, UNKNOWN)
            # Only the batches read: one reserved since is not settled unseen.
            await tx.execute(
                f"WITH {TALLY}, settled AS (INSERT INTO recipients (run_id, seq, profile_id,"
                " phone, state, reason, sender, updated_at)"
                " SELECT %(run)s, (r->>0)::bigint, (r->>1)::bigint, r->>2, r->>3, r->>4,"
                " r->>5, %(now)s FROM jsonb_array_elements(%(rows)s::jsonb) AS r),"
                " dropped AS (DELETE FROM journal WHERE run_id = %(run)s"
                " AND batch = ANY(%(batches)s::bigint[])),"
                " unmarked AS (DELETE FROM journal_sending WHERE run_id = %(run)s"
                " AND batch = ANY(%(batches)s::bigint[]))"
                " UPDATE runs SET status = 'cancelled', finished_at = %(now)s,"
                " audience_done = true WHERE id = %(run)s",
                {"run": run_id, "now": now, "rows": json_rows(settled), "batches": batches,
                 **tally_params(tally, 0)},
            )

    async def add_step(
        self, mailing_id: int, spec: RunSpec, *, after_run: int | None = None,
        at: float | None = None, kind: StepKind = "run",
    ) -> int:
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO launch_steps (mailing_id, kind, spec, after_run, at)"
                " VALUES (%s, %s, %s::jsonb, %s, %s) RETURNING id",
                (mailing_id, kind, _json.encode(spec).decode(), after_run, at),
            )
        assert row is not None
        return int(row[0])

    async def start_run_then(
        self, mailing_id: int, spec: RunSpec, kind: StepKind, then: RunSpec,
    ) -> tuple[Run, int]:
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "INSERT INTO runs (uid, mailing_id, status, started_at, pid, host, spec)"
                " VALUES (%s, %s, 'running', %s, %s, %s, %s::jsonb) RETURNING id",
                (secrets.token_hex(5), mailing_id, time.time(), os.getpid(),
                 socket.gethostname(), _json.encode(spec).decode()),
            )
            assert row is not None
            run_id = int(row[0])
            step = await tx.fetchone(
                "INSERT INTO launch_steps (mailing_id, kind, spec, after_run)"
                " VALUES (%s, %s, %s::jsonb, %s) RETURNING id",
                (mailing_id, kind, _json.encode(then).decode(), run_id),
            )
            assert step is not None
        return (await self.get_run(run_id))[1], int(step[0])

    async def pending_steps(self, now: float) -> list[Step]:
        rows = await self.db.fetchall(
            "SELECT s.id, s.mailing_id, s.kind, s.spec::text, s.after_run, s.at"
            " FROM launch_steps s LEFT JOIN runs r ON r.id = s.after_run"
            " WHERE (s.after_run IS NULL OR r.status = 'finished')"
            " AND (s.at IS NULL OR s.at <= %s) ORDER BY s.id", (now,)
        )
        return [step_from_row(r) for r in rows]

    async def take_step(self, step_id: int) -> bool:
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "DELETE FROM launch_steps WHERE id = %s RETURNING id", (step_id,))
        return row is not None

    async def drop_steps(self, mailing_id: int) -> int:
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(
                "DELETE FROM launch_steps WHERE mailing_id = %s RETURNING id", (mailing_id,))
        return len(rows)
