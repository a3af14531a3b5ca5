"""Mailings and their runs (RunStore)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from engine.core.policy import Policy
from engine.errors import InputError, NotFound, StoreError
from engine.store.base import Reserved
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
from engine.store.sqlite.connection import CHANNELS, SQLiteBase
from engine.store.sqlite.events import write_tally

__all__ = ["SQLiteRuns"]

_json = msgspec.json.Encoder()
_decode_entries = msgspec.msgpack.Decoder(list[Reserved]).decode

_RUN_COLUMNS = (
    "r.id, r.uid, r.mailing_id, r.status, r.started_at, r.finished_at, r.checkpoint,"
    " r.next_seq, r.audience_done, r.counts, r.timings, r.pid, r.host, r.error, r.spec,"
    " m.id, m.name, m.kind, m.resource, m.source_kind, m.database_id, m.segment_id,"
    " m.template, m.limit_n, m.document, m.created_at, m.policy, m.options, m.state,"
    " m.next_launch, m.channel"
)
_MAILING_COLUMNS = (
    "m.id, m.name, m.kind, m.resource, m.source_kind, m.database_id, m.segment_id,"
    " m.template, m.limit_n, m.document, m.created_at, m.policy, m.options, m.state,"
    " m.next_launch, m.channel"
)




def _with_channel(mailing: Mailing, channel: str) -> Mailing:
    """The mailing with its audience's channel (the column after ``mailing_from_row``'s)."""
    if mailing.source.channel == channel:
        return mailing
    source = msgspec.structs.replace(mailing.source, channel=channel)
    return msgspec.structs.replace(mailing, source=source)


def _mailing(row: Sequence[Any]) -> Mailing:
    """A mailing from ``_MAILING_COLUMNS``."""
    return _with_channel(mailing_from_row(row), row[15])


def _run(row: Sequence[Any]) -> tuple[Mailing, Run]:
    """A run and its mailing from ``_RUN_COLUMNS``."""
    mailing, run = run_from_row(row)
    return _with_channel(mailing, row[30]), run


class SQLiteRuns(SQLiteBase):
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
        if source.channel not in CHANNELS:
            raise InputError(f"a mailing's channel is sms or email, not {source.channel!r}")
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO mailings (name, kind, resource, source_kind, database_id,"
                " segment_id, template, limit_n, document, created_at, policy, options,"
                " state, next_launch, channel)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, kind, resource, source.kind, source.database_id, source.segment_id,
                 template, limit, _json.encode(document or {}).decode(), time.time(),
                 _json.encode(policy) if policy else None,
                 _json.encode(options or MailingOptions()).decode(),
                 "draft" if next_launch is None else "scheduled", next_launch,
                 source.channel),
            )
            mailing_id = int(cur.lastrowid or 0)
        return await self.get_mailing(mailing_id)

    async def get_mailing(self, mailing_id: int) -> Mailing:
        row = self.conn.execute(
            f"SELECT {_MAILING_COLUMNS} FROM mailings m WHERE m.id = ?", (mailing_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no mailing {mailing_id}")
        return _mailing(row)

    async def list_mailings(self, limit: int = 100, *, documents: bool = True) -> list[Mailing]:
        columns = _MAILING_COLUMNS if documents else _MAILING_COLUMNS.replace(
            "m.document", "'{}'")
        rows = self.conn.execute(
            f"SELECT {columns} FROM mailings m ORDER BY m.id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_mailing(r) for r in rows]

    async def start_run(self, mailing_id: int, spec: RunSpec | None = None) -> Run:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO runs (uid, mailing_id, status, started_at, pid, host, spec)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (secrets.token_hex(5), mailing_id, time.time(), os.getpid(),
                 socket.gethostname(), _json.encode(spec or RunSpec()).decode()),
            )
            run_id = int(cur.lastrowid or 0)
        return self._get_run(run_id)[1]

    async def set_launch(
        self, mailing_id: int, *, expect: float | None, next_launch: float | None,
        state: MailingState | None = None,
    ) -> bool:
        with self._tx() as c:
            cur = c.execute(
                "UPDATE mailings SET next_launch = ?, state = coalesce(?, state)"
                " WHERE id = ? AND next_launch IS ? AND state NOT IN ('cancelled')",
                (next_launch, state, mailing_id, expect),
            )
            return cur.rowcount == 1

    async def set_mailing_state(self, mailing_id: int, state: MailingState) -> None:
        with self._tx() as c:
            cur = c.execute(
                "UPDATE mailings SET state = ?,"
                " next_launch = CASE WHEN ? IN ('done', 'cancelled', 'draft') THEN NULL"
                " ELSE next_launch END WHERE id = ?", (state, state, mailing_id))
            if cur.rowcount == 0:
                raise NotFound(f"no mailing {mailing_id}")

    async def due_mailings(self, now: float) -> list[Mailing]:
        rows = self.conn.execute(
            f"SELECT {_MAILING_COLUMNS} FROM mailings m WHERE m.next_launch <= ?"
            " AND m.state IN ('scheduled', 'waiting') ORDER BY m.next_launch, m.id", (now,)
        ).fetchall()
        return [_mailing(r) for r in rows]

    async def next_due(self) -> float | None:
        row = self.conn.execute(
            "SELECT min(next_launch) FROM mailings WHERE state IN ('scheduled', 'waiting')"
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def mailing_runs(self, mailing_id: int) -> list[Run]:
        rows = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs r JOIN mailings m ON m.id = r.mailing_id"
            " WHERE r.mailing_id = ? ORDER BY r.id", (mailing_id,)
        ).fetchall()
        return [_run(r)[1] for r in rows]

    async def latest_run(self, mailing_id: int) -> Run | None:
        row = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs r JOIN mailings m ON m.id = r.mailing_id"
            " WHERE r.mailing_id = ? ORDER BY r.id DESC LIMIT 1",
            (mailing_id,),
        ).fetchone()
        return None if row is None else _run(row)[1]

    def _get_run(self, run_id: int) -> tuple[Mailing, Run]:
        row = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs r JOIN mailings m ON m.id = r.mailing_id"
            " WHERE r.id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no run {run_id}")
        return _run(row)

    async def get_run(self, run_id: int) -> tuple[Mailing, Run]:
        return self._get_run(run_id)

    async def list_runs(self, limit: int = 100) -> list[tuple[Mailing, Run]]:
        rows = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs r JOIN mailings m ON m.id = r.mailing_id"
            " ORDER BY r.id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [_run(r) for r in rows]

    async def claim_run(self, run_id: int) -> Run:
        with self._tx() as c:
            _, run = self._get_run(run_id)
            if run_is_live(run):
                raise StoreError(
                    f"run {run_id} is still running (pid {run.pid} on {run.host})"
                )
            if run.status == "finished":
                raise StoreError(f"run {run_id} is finished; nothing to resume")
            c.execute(
                "UPDATE runs SET status = 'running', pid = ?, host = ?, error = NULL"
                " WHERE id = ?",
                (os.getpid(), socket.gethostname(), run_id),
            )
        return self._get_run(run_id)[1]

    async def set_run_status(
        self,
        run_id: int,
        status: RunStatus,
        *,
        timings: dict[str, float] | None = None,
        error: str | None = None,
    ) -> None:
        finished = time.time() if status in ("finished", "failed") else None
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status = ?, finished_at = coalesce(?, finished_at),"
                " timings = coalesce(?, timings), error = ? WHERE id = ?",
                (status, finished, _json.encode(timings).decode() if timings else None,
                 error, run_id),
            )

    async def cancel_run(self, run_id: int) -> None:
        now = time.time()
        with self._tx() as c:
            sending = {b for (b,) in c.execute(
                "SELECT batch FROM journal_sending WHERE run_id = ?", (run_id,))}
            rows = []
            for batch, sender, blob in c.execute(
                "SELECT batch, sender, messages FROM journal WHERE run_id = ?", (run_id,)
            ).fetchall():
                maybe = batch in sending
                for e in _decode_entries(blob):
                    rows.append((run_id, e.seq, e.profile_id, e.phone,
                                 "unknown" if maybe else "skipped",
                                 "interrupted" if maybe else "cancelled", sender, now))
            c.executemany(
                "INSERT INTO recipients (run_id, seq, profile_id, phone, state, reason, sender,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            # the messages that may be at their gateway count as recipients, unknown
            tally = Tally()
            for row in rows:
                if row[4] == "unknown":
                    tally.count(run_id, row[6], now, RECIPIENTS)
                    tally.count(run_id, row[6], now, UNKNOWN)
            write_tally(c, tally)
            c.execute("DELETE FROM journal WHERE run_id = ?", (run_id,))
            c.execute("DELETE FROM journal_sending WHERE run_id = ?", (run_id,))
            c.execute(
                "UPDATE runs SET status = 'cancelled', finished_at = ?, audience_done = 1"
                " WHERE id = ?",
                (now, run_id),
            )

    async def add_step(
        self, mailing_id: int, spec: RunSpec, *, after_run: int | None = None,
        at: float | None = None, kind: StepKind = "run",
    ) -> int:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO launch_steps (mailing_id, kind, spec, after_run, at)"
                " VALUES (?, ?, ?, ?, ?)",
                (mailing_id, kind, _json.encode(spec).decode(), after_run, at),
            )
            return int(cur.lastrowid or 0)

    async def start_run_then(
        self, mailing_id: int, spec: RunSpec, kind: StepKind, then: RunSpec,
    ) -> tuple[Run, int]:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO runs (uid, mailing_id, status, started_at, pid, host, spec)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?)",
                (secrets.token_hex(5), mailing_id, time.time(), os.getpid(),
                 socket.gethostname(), _json.encode(spec).decode()),
            )
            run_id = int(cur.lastrowid or 0)
            cur = c.execute(
                "INSERT INTO launch_steps (mailing_id, kind, spec, after_run)"
                " VALUES (?, ?, ?, ?)", (mailing_id, kind, _json.encode(then).decode(), run_id),
            )
            step_id = int(cur.lastrowid or 0)
        return self._get_run(run_id)[1], step_id

    async def pending_steps(self, now: float) -> list[Step]:
        rows = self.conn.execute(
            "SELECT s.id, s.mailing_id, s.kind, s.spec, s.after_run, s.at"
            " FROM launch_steps s LEFT JOIN runs r ON r.id = s.after_run"
            " WHERE (s.after_run IS NULL OR r.status = 'finished')"
            " AND (s.at IS NULL OR s.at <= ?) ORDER BY s.id", (now,)
        ).fetchall()
        return [step_from_row(r) for r in rows]

    async def take_step(self, step_id: int) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM launch_steps WHERE id = ?", (step_id,)).rowcount == 1

    async def drop_steps(self, mailing_id: int) -> int:
        with self._tx() as c:
            return c.execute("DELETE FROM launch_steps WHERE mailing_id = ?",
                             (mailing_id,)).rowcount
