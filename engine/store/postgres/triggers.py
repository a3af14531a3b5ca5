"""The queue of trigger mailings (TriggerStore).

A queued call's ``not_before`` is NULL while it is due at once; a call held for its
recipient's quiet hours has the time it may go (seconds since the epoch), and 0 once it
is released (reserved): ``trigger_chunk`` reads only the first kind, ``held_triggers``
only the second whose time has come.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from engine.errors import NotFound
from engine.store.base import TriggerRow
from engine.store.postgres.connection import PgBase, pick_subscription

__all__ = ["DDL", "HELD_DDL", "PgTriggers"]

#: This role's tables, in the first migration (``schema.py``).
DDL = """
-- One row per trigger call's message; drained in id order by the mailing's pipeline.
CREATE TABLE trigger_queue (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    mailing_id bigint NOT NULL REFERENCES mailings(id),
    run_id bigint NOT NULL REFERENCES runs(id),
    seq bigint NOT NULL,
    profile_id bigint NOT NULL,
    content bytea NOT NULL DEFAULT '\\x7b7d',
    idempotency_key text,
    created_at double precision NOT NULL
);
CREATE UNIQUE INDEX trigger_idempotency ON trigger_queue(mailing_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX trigger_queue_run ON trigger_queue(run_id, id);
-- suppression.py's attachments name mailings, created after them (runs.py): the key is
-- added here.
ALTER TABLE suppression_attachments
    ADD FOREIGN KEY (mailing_id) REFERENCES mailings(id);
"""

#: Calls held for their recipient's quiet hours (a later migration, ``schema.py``).
HELD_DDL = """
ALTER TABLE trigger_queue ADD COLUMN not_before double precision;
CREATE INDEX trigger_queue_held ON trigger_queue(run_id, not_before) WHERE not_before > 0;
"""


class PgTriggers(PgBase):
    async def enqueue_triggers(
        self, mailing_id: int, run_id: int, items: Sequence[tuple[int, bytes, str | None]],
        *, custom_data: Sequence[bytes | None] | None = None,
    ) -> list[tuple[int, bool]]:
        if not items:
            return []
        if custom_data is not None and len(custom_data) != len(items):
            raise ValueError("custom_data: one per item")
        custom = [None] * len(items) if custom_data is None else custom_data
        now = time.time()
        async with self.db.transaction() as tx:
            # The run's row lock orders concurrent calls: each sees the keys queued before.
            row = await tx.fetchone(
                "SELECT next_seq FROM runs WHERE id = %s FOR UPDATE", (run_id,))
            if row is None:
                raise NotFound(f"no run {run_id}")
            next_seq = int(row[0])
            keys = list({key for _, _, key in items if key is not None})
            known: dict[str, int] = {}
            if keys:
                known = {k: int(seq) for k, seq in await tx.fetchall(
                    "SELECT idempotency_key, seq FROM trigger_queue WHERE mailing_id = %s"
                    " AND idempotency_key = ANY(%s::text[])",
                    (mailing_id, keys),
                )}
            out: list[tuple[int, bool]] = []
            queued: list[tuple[int, int, bytes, str | None, str | None]] = []
            for (profile_id, content, key), data in zip(items, custom, strict=True):
                if key is not None and key in known:
                    out.append((known[key], True))
                    continue
                seq = next_seq
                next_seq += 1
                if key is not None:
                    known[key] = seq
                queued.append((seq, profile_id, content, key,
                               None if data is None else data.decode()))
                out.append((seq, False))
            if queued:
                await tx.execute(
                    "UPDATE runs SET next_seq = %s WHERE id = %s", (next_seq, run_id))
                await tx.execute(
                    "INSERT INTO trigger_queue (mailing_id, run_id, seq, profile_id, content,"
                    " idempotency_key, created_at, custom_data)"
                    " SELECT %s, %s, s, p, c, k, %s, d::json FROM unnest(%s::bigint[],"
                    " %s::bigint[], %s::bytea[], %s::text[], %s::text[]) AS u(s, p, c, k, d)"
                    " ORDER BY s",
                    (mailing_id, run_id, now, [q[0] for q in queued], [q[1] for q in queued],
                     [q[2] for q in queued], [q[3] for q in queued], [q[4] for q in queued]),
                )
        return out

    async def trigger_chunk(
        self, run_id: int, resource_id: int, after_id: int, limit: int
    ) -> list[TriggerRow]:
        async with self.db.transaction() as tx:
            pick = pick_subscription(await self._channel(tx, run_id))
            rows = await tx.fetchall(
                "SELECT q.id, q.seq, p.id, p.fields::text, s.phone, s.fields::text, q.content"
                f" FROM trigger_queue q JOIN profiles p ON p.id = q.profile_id {pick}"
                " WHERE q.run_id = %s AND q.id > %s AND q.not_before IS NULL"
                " ORDER BY q.id LIMIT %s",
                (resource_id, run_id, after_id, limit),
            )
        return [TriggerRow(*r) for r in rows]

    async def hold_triggers(self, run_id: int, held: Sequence[tuple[int, float]]) -> None:
        if not held:
            return
        await self.db.execute(
            "UPDATE trigger_queue q SET not_before = u.at FROM"
            " unnest(%s::bigint[], %s::float8[]) AS u(id, at)"
            " WHERE q.run_id = %s AND q.id = u.id",
            ([h[0] for h in held], [max(h[1], 1.0) for h in held], run_id),
        )

    async def held_triggers(
        self, run_id: int, resource_id: int, now: float, limit: int
    ) -> list[TriggerRow]:
        async with self.db.transaction() as tx:
            pick = pick_subscription(await self._channel(tx, run_id))
            rows = await tx.fetchall(
                "SELECT q.id, q.seq, p.id, p.fields::text, s.phone, s.fields::text, q.content"
                f" FROM trigger_queue q JOIN profiles p ON p.id = q.profile_id {pick}"
                " WHERE q.run_id = %s AND q.not_before > 0 AND q.not_before <= %s"
                " AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.run_id = q.run_id"
                " AND r.seq = q.seq) ORDER BY q.not_before, q.id LIMIT %s",
                (resource_id, run_id, now, limit),
            )
        return [TriggerRow(*r) for r in rows]

    async def release_triggers(self, run_id: int, queue_ids: Sequence[int]) -> None:
        if not queue_ids:
            return
        await self.db.execute(
            "UPDATE trigger_queue SET not_before = 0 WHERE run_id = %s AND id = ANY(%s::bigint[])",
            (run_id, list(queue_ids)),
        )
