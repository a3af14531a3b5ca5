"""The queue of a trigger mailing (TriggerStore).

A queued call's ``not_before`` is NULL while it is due at once; a call held for its
recipient's quiet hours has the time it may go (seconds since the epoch), and 0 once it
is released (reserved): ``trigger_chunk`` reads only the first kind, ``held_triggers``
only the second whose time has come.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from engine.store.base import TriggerRow
from engine.store.sqlite.connection import SQLiteBase, pick_subscription

__all__ = ["SQLiteTriggers"]


class SQLiteTriggers(SQLiteBase):
    async def enqueue_triggers(
        self, mailing_id: int, run_id: int, items: Sequence[tuple[int, bytes, str | None]],
        *, custom_data: Sequence[bytes | None] | None = None,
    ) -> list[tuple[int, bool]]:
        now = time.time()
        out: list[tuple[int, bool]] = []
        if custom_data is not None and len(custom_data) != len(items):
            raise ValueError("custom_data: one per item")
        custom = [None] * len(items) if custom_data is None else custom_data
        with self._tx() as c:
            for (profile_id, content, key), data in zip(items, custom, strict=True):
                if key is not None:
                    row = c.execute(
                        "SELECT seq FROM trigger_queue WHERE mailing_id = ?"
                        " AND idempotency_key = ?",
                        (mailing_id, key),
                    ).fetchone()
                    if row is not None:
                        out.append((int(row[0]), True))
                        continue
                (seq,) = c.execute(
                    "UPDATE runs SET next_seq = next_seq + 1 WHERE id = ? RETURNING next_seq - 1",
                    (run_id,),
                ).fetchone()
                c.execute(
                    "INSERT INTO trigger_queue (mailing_id, run_id, seq, profile_id, content,"
                    " idempotency_key, created_at, custom_data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (mailing_id, run_id, seq, profile_id, content, key, now,
                     None if data is None else data.decode()),
                )
                out.append((int(seq), False))
        return out

    async def trigger_chunk(
        self, run_id: int, resource_id: int, after_id: int, limit: int
    ) -> list[TriggerRow]:
        pick = pick_subscription(self._run_channel(self.conn, run_id))
        rows = self.conn.execute(
            "SELECT q.id, q.seq, p.id, p.fields, s.phone, s.fields, q.content"
            f" FROM trigger_queue q JOIN profiles p ON p.id = q.profile_id {pick}"
            " WHERE q.run_id = ? AND q.id > ? AND q.not_before IS NULL ORDER BY q.id LIMIT ?",
            (resource_id, run_id, after_id, limit),
        ).fetchall()
        return list(map(TriggerRow._make, rows))

    async def hold_triggers(self, run_id: int, held: Sequence[tuple[int, float]]) -> None:
        if not held:
            return
        with self._tx() as c:
            c.executemany(
                "UPDATE trigger_queue SET not_before = ? WHERE run_id = ? AND id = ?",
                [(max(at, 1.0), run_id, queue_id) for queue_id, at in held],
            )

    async def held_triggers(
        self, run_id: int, resource_id: int, now: float, limit: int
    ) -> list[TriggerRow]:
        pick = pick_subscription(self._run_channel(self.conn, run_id))
        rows = self.conn.execute(
            "SELECT q.id, q.seq, p.id, p.fields, s.phone, s.fields, q.content"
            f" FROM trigger_queue q JOIN profiles p ON p.id = q.profile_id {pick}"
            " WHERE q.run_id = ? AND q.not_before > 0 AND q.not_before <= ?"
            " AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.run_id = q.run_id"
            " AND r.seq = q.seq) ORDER BY q.not_before, q.id LIMIT ?",
            (resource_id, run_id, now, limit),
        ).fetchall()
        return list(map(TriggerRow._make, rows))

    async def release_triggers(self, run_id: int, queue_ids: Sequence[int]) -> None:
        if not queue_ids:
            return
        with self._tx() as c:
            c.executemany(
                "UPDATE trigger_queue SET not_before = 0 WHERE run_id = ? AND id = ?",
                [(run_id, queue_id) for queue_id in queue_ids],
            )
