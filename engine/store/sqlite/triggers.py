"""The queue of a trigger mailing (TriggerStore)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from engine.store.base import TriggerRow
from engine.store.sqlite.connection import PICK_SUBSCRIPTION, SQLiteBase

__all__ = ["SQLiteTriggers"]


class SQLiteTriggers(SQLiteBase):
    async def enqueue_triggers(
        self, mailing_id: int, run_id: int, items: Sequence[tuple[int, bytes, str | None]]
    ) -> list[tuple[int, bool]]:
        now = time.time()
        out: list[tuple[int, bool]] = []
        with self._tx() as c:
            for profile_id, content, key in items:
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
                    " idempotency_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (mailing_id, run_id, seq, profile_id, content, key, now),
                )
                out.append((int(seq), False))
        return out

    async def trigger_chunk(
        self, run_id: int, resource_id: int, after_id: int, limit: int
    ) -> list[TriggerRow]:
        rows = self.conn.execute(
            "SELECT q.id, q.seq, p.id, p.fields, s.phone, s.fields, q.content"
            f" FROM trigger_queue q JOIN profiles p ON p.id = q.profile_id {PICK_SUBSCRIPTION}"
            " WHERE q.run_id = ? AND q.id > ? ORDER BY q.id LIMIT ?",
            (resource_id, run_id, after_id, limit),
        ).fetchall()
        return list(map(TriggerRow._make, rows))
