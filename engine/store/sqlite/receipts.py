"""Delivery receipts, kept until their message is recorded (ReceiptStore).

Each receipt that moves a recipient adds a ``deliv_sms`` or ``undeliv_sms`` event and
counts under the recipient's sender, at the time it is applied (``now``), in the
transaction that moves it (``engine.store.counters``).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import anyio.lowlevel
import msgspec

from engine.core.states import State, can_move
from engine.drivers import Receipt
from engine.store.base import ReceiptReport
from engine.store.counters import Tally, count_receipt
from engine.store.sqlite.connection import SQLiteBase
from engine.store.sqlite.events import write_tally

__all__ = ["RECEIPT_CHUNK", "SQLiteReceipts", "apply_pending"]

_json = msgspec.json.Encoder()

#: Receipts applied per transaction: a big callback holds the loop and the write lock for
#: one chunk at a time (a few ms), never for the whole of it.
RECEIPT_CHUNK = 500


class SQLiteReceipts(SQLiteBase):
    async def apply_receipts(
        self, gateway: str, receipts: Sequence[Receipt], *, senders: Sequence[str],
        cap: int = 100_000, ttl: float = 7 * 86400.0, now: float | None = None,
    ) -> ReceiptReport:
        now = time.time() if now is None else now
        ours = frozenset(senders)
        # Receipts for one message are applied in the order they happened; the sort is
        # stable, so ties and receipts without ``at`` keep the order they came in.
        ordered = sorted(receipts, key=lambda r: now if r.at is None else r.at)
        with self._tx() as c:
            # Once per call, each through its index: receipts that waited too long.
            c.execute("DELETE FROM receipts_pending WHERE expires_at <= ?", (now,))
            c.execute("DELETE FROM receipts_pending WHERE received_at < ?", (now - ttl,))
            # Each sender belongs to one gateway: the one whose receipts came last for it.
            c.execute(
                "DELETE FROM receipt_senders WHERE gateway = ?"
                " AND sender NOT IN (SELECT value FROM json_each(?))",
                (gateway, _json.encode(sorted(ours))),
            )
            c.executemany(
                "INSERT INTO receipt_senders (sender, gateway) VALUES (?, ?)"
                " ON CONFLICT (sender) DO UPDATE SET gateway = excluded.gateway",
                [(s, gateway) for s in sorted(ours)],
            )
        total = [0, 0, 0, 0]
        for start in range(0, len(ordered), RECEIPT_CHUNK):
            if start:
                await anyio.lowlevel.checkpoint()  # let the loop breathe between chunks
            with self._tx() as c:
                counts = self._apply_chunk(
                    c, gateway, ordered[start:start + RECEIPT_CHUNK], ours, cap, ttl, now
                )
            total = [a + b for a, b in zip(total, counts, strict=True)]
        return ReceiptReport(*total)

    @staticmethod
    def _apply_chunk(
        c: sqlite3.Connection, gateway: str, chunk: Sequence[Receipt],
        ours: frozenset[str], cap: int, ttl: float, now: float,
    ) -> tuple[int, int, int, int]:
        """(matched, pending, ignored, dropped) of a chunk of ``apply_receipts``, in order,
        with one read of the recipients and of the kept receipts their ids name."""
        matched = pending = ignored = dropped = 0
        ids = _json.encode(list({r.provider_id for r in chunk}))
        # [run id, seq, state, profile id, phone, sender] of the gateway's recipients:
        # another gateway's are not seen
        targets: dict[str, list[list[Any]]] = {}
        for pid, run_id, seq, state, profile_id, phone, sender in c.execute(
            "SELECT provider_id, run_id, seq, state, profile_id, phone, sender FROM recipients"
            " WHERE provider_id IN (SELECT value FROM json_each(?))", (ids,)
        ):
            if sender in ours:
                targets.setdefault(pid, []).append(
                    [run_id, seq, State(state), profile_id, phone, sender])
        kept: dict[str, State] = {
            pid: State(status) for pid, status in c.execute(
                "SELECT provider_id, status FROM receipts_pending WHERE gateway = ?"
                " AND provider_id IN (SELECT value FROM json_each(?))", (gateway, ids))
        }
        moves: dict[tuple[int, int], tuple[str, str | None, float]] = {}
        keep: dict[str, tuple[Any, ...]] = {}
        tally = Tally()
        for r in chunk:
            new = State(r.status)
            found = targets.get(r.provider_id)
            if found is None:
                # Kept for its message; it replaces a receipt kept for the same id only
                # where a recipient in that receipt's state could move to this one's.
                old = kept.get(r.provider_id)
                if old is None or can_move(old, new):
                    kept[r.provider_id] = new
                    keep[r.provider_id] = (gateway, r.provider_id, r.status, r.error, r.at,
                                           now, now + ttl)
                    pending += 1
                else:
                    ignored += 1
                continue
            for target in found:
                if can_move(target[2], new):
                    # the error of the state reached: a delivery clears an earlier one
                    target[2] = new
                    moves[target[0], target[1]] = (r.status, r.error,
                                                   now if r.at is None else r.at)
                    count_receipt(tally, target[0], target[1], target[3], target[4], target[5],
                                  r.status, r.error, now)
                    matched += 1
                else:
                    ignored += 1
        c.executemany(
            "UPDATE recipients SET state = ?, error = ?, updated_at = ?"
            " WHERE run_id = ? AND seq = ?",
            [(*move, run_id, seq) for (run_id, seq), move in moves.items()],
        )
        write_tally(c, tally)
        if keep:
            c.executemany(
                "INSERT INTO receipts_pending (gateway, provider_id, status, error, at,"
                " received_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (gateway, provider_id) DO UPDATE SET status = excluded.status,"
                " error = excluded.error, at = excluded.at,"
                " received_at = excluded.received_at, expires_at = excluded.expires_at",
                keep.values(),
            )
            if cap:
                (n,) = c.execute(
                    "SELECT count(*) FROM receipts_pending WHERE gateway = ?", (gateway,)
                ).fetchone()
                if n > cap:
                    dropped = c.execute(
                        "DELETE FROM receipts_pending WHERE rowid IN (SELECT rowid FROM"
                        " receipts_pending WHERE gateway = ? ORDER BY received_at, rowid"
                        " LIMIT ?)", (gateway, n - cap),
                    ).rowcount
        return matched, pending, ignored, dropped


def apply_pending(
    c: sqlite3.Connection, sender: str, provider_ids: Sequence[str], now: float
) -> None:
    """Receipts that arrived before their message was recorded by ``sender``: apply
    the ones its gateway sent that are not expired, as far as ``can_move`` allows, to
    that gateway's recipients only (with their events and counts, ``now``), and drop
    them all."""
    row = c.execute(
        "SELECT gateway FROM receipt_senders WHERE sender = ?", (sender,)
    ).fetchone()
    if row is None:  # no receipts ever came for this sender's gateway
        return
    (gateway,) = row
    if not c.execute(
        "SELECT EXISTS (SELECT 1 FROM receipts_pending WHERE gateway = ?)", (gateway,)
    ).fetchone()[0]:
        return
    ids = _json.encode(list(provider_ids))
    found = c.execute(
        "SELECT provider_id, status, error, at, received_at FROM receipts_pending"
        " WHERE gateway = ? AND provider_id IN (SELECT value FROM json_each(?))"
        " AND expires_at > ?",
        (gateway, ids, now),
    ).fetchall()
    if found:
        targets: dict[str, list[list[Any]]] = {}
        for pid, run_id, seq, state, profile_id, phone, owner in c.execute(
            "SELECT provider_id, run_id, seq, state, profile_id, phone, sender FROM recipients"
            " WHERE provider_id IN (SELECT value FROM json_each(?))"
            " AND sender IN (SELECT sender FROM receipt_senders WHERE gateway = ?)",
            (_json.encode([f[0] for f in found]), gateway),
        ):
            targets.setdefault(pid, []).append(
                [run_id, seq, State(state), profile_id, phone, owner])
        updates: list[tuple[Any, ...]] = []
        tally = Tally()
        for provider_id, status, error, at, received in found:
            new = State(status)
            for target in targets.get(provider_id, ()):
                if can_move(target[2], new):
                    target[2] = new
                    updates.append((status, error, received if at is None else at,
                                    target[0], target[1]))
                    count_receipt(tally, target[0], target[1], target[3], target[4], target[5],
                                  status, error, now)
        if updates:
            c.executemany(
                "UPDATE recipients SET state = ?, error = ?, updated_at = ?"
                " WHERE run_id = ? AND seq = ?", updates)
            write_tally(c, tally)
    c.execute(
        "DELETE FROM receipts_pending WHERE gateway = ?"
        " AND provider_id IN (SELECT value FROM json_each(?))",
        (gateway, ids),
    )
