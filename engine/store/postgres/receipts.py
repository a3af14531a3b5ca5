"""Delivery receipts (ReceiptStore).

A call is applied chunk by chunk (``RECEIPT_CHUNK`` receipts per transaction). Each chunk
takes the advisory locks of its gateway's senders (``journal.sender_lock``) before it
reads, so it never keeps a receipt for a message a concurrent ``record`` has written but
not yet committed; then it reads the recipients and kept receipts its ids name in one
statement, decides in Python (as the SQLite store does) and writes in one more, with the
events and counts of the receipts that moved a recipient (``events.TALLY``). Rows travel
as JSON (``journal.json_rows``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.core.states import State, can_move
from engine.drivers import Receipt
from engine.store.base import ReceiptReport
from engine.store.counters import Tally, count_receipt
from engine.store.postgres.connection import PgBase
from engine.store.postgres.db import Tx
from engine.store.postgres.events import TALLY, tally_params
from engine.store.postgres.journal import json_rows, sender_lock, text_array

__all__ = ["DDL", "RECEIPT_CHUNK", "PgReceipts"]

#: This role's tables, in the first migration (``schema.py``). A kept receipt is keyed by
#: (gateway, provider id); past the cap the oldest go first (by arrival, then id). Each
#: sender maps to the one gateway whose receipts may move its recipients.
DDL = """
CREATE TABLE receipts_pending (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gateway text NOT NULL,
    provider_id text NOT NULL,
    status text NOT NULL,
    error text,
    at double precision,
    received_at double precision NOT NULL,
    expires_at double precision NOT NULL,
    UNIQUE (gateway, provider_id)
);
CREATE INDEX receipts_pending_expires ON receipts_pending(expires_at);
CREATE INDEX receipts_pending_received ON receipts_pending(received_at);
CREATE INDEX receipts_pending_age ON receipts_pending(gateway, received_at, id);
CREATE TABLE receipt_senders (
    sender text PRIMARY KEY,
    gateway text NOT NULL
);
"""

#: Receipts applied per transaction: a big callback holds the locks for one chunk at a
#: time, never for the whole of it.
RECEIPT_CHUNK = 500

#: Once per call: drop receipts that waited too long; each sender belongs to one gateway,
#: the one whose receipts came last for it.
_PREPARE = """
WITH expired AS (
    DELETE FROM receipts_pending WHERE expires_at <= %(now)s OR received_at < %(oldest)s
), moved_away AS (
    DELETE FROM receipt_senders WHERE gateway = %(gateway)s
    AND sender <> ALL(%(senders)s::text[])
)
INSERT INTO receipt_senders (sender, gateway) SELECT s, %(gateway)s
FROM unnest(%(senders)s::text[]) AS s ORDER BY s
ON CONFLICT (sender) DO UPDATE SET gateway = excluded.gateway
"""

_LOCK = """
SELECT pg_advisory_xact_lock(k) FROM (
    SELECT DISTINCT k FROM unnest(%s::bigint[]) AS k ORDER BY k
) AS locks
"""

#: The chunk's recipients ('r', provider id, run, seq, state, sender, profile id, phone)
#: and the receipts kept for its ids ('p', provider id, -, -, status, -, -, -).
_READ = f"""
SELECT 'r', provider_id, run_id, seq, state, sender, profile_id, phone FROM recipients
WHERE provider_id = ANY({text_array("%(ids)s")})
UNION ALL
SELECT 'p', provider_id, NULL, NULL, status, NULL, NULL, NULL FROM receipts_pending
WHERE gateway = %(gateway)s AND provider_id = ANY({text_array("%(ids)s")})
"""

#: The moves (run id, seq, state, error, at), their events and counts (``TALLY``) and
#: the receipts to keep (provider id, status, error, at), in that order.
_WRITE = f"""
WITH moved AS (
    UPDATE recipients r SET state = u->>2, error = u->>3, updated_at = (u->>4)::float8
    FROM jsonb_array_elements(%(moves)s::jsonb) AS u
    WHERE r.run_id = (u->>0)::bigint AND r.seq = (u->>1)::bigint
), {TALLY}
INSERT INTO receipts_pending (gateway, provider_id, status, error, at, received_at,
                              expires_at)
SELECT %(gateway)s, k->>0, k->>1, k->>2, (k->>3)::float8, %(now)s, %(expires)s
FROM jsonb_array_elements(%(keep)s::jsonb) WITH ORDINALITY AS t(k, i)
ORDER BY i
ON CONFLICT (gateway, provider_id) DO UPDATE SET status = excluded.status,
    error = excluded.error, at = excluded.at, received_at = excluded.received_at,
    expires_at = excluded.expires_at
"""

_CAP = """
DELETE FROM receipts_pending WHERE id IN (
    SELECT id FROM receipts_pending WHERE gateway = %(gateway)s
    ORDER BY received_at, id
    LIMIT greatest((SELECT count(*) FROM receipts_pending WHERE gateway = %(gateway)s)
                   - %(cap)s, 0)
)
"""


def decide(
    chunk: Sequence[Receipt], targets: dict[str, list[list[Any]]], kept: dict[str, State],
    now: float, tally: Tally,
) -> tuple[dict[tuple[int, int], tuple[str, str | None, float]], dict[str, Receipt],
           tuple[int, int, int]]:
    """What a chunk does, in order: the recipients' moves by (run id, seq), the receipts
    to keep by provider id, and (matched, pending, ignored); each move's event and count
    go to ``tally``.

    ``targets``: [run id, seq, state, sender, profile id, phone] of the gateway's
    recipients by provider id; ``kept``: the state of the receipt kept for each id. Both
    are updated as it goes."""
    matched = pending = ignored = 0
    moves: dict[tuple[int, int], tuple[str, str | None, float]] = {}
    keep: dict[str, Receipt] = {}
    for r in chunk:
        new = State(r.status)
        found = targets.get(r.provider_id)
        if found is None:
            # Kept for its message; it replaces a receipt kept for the same id only where
            # a recipient in that receipt's state could move to this one's.
            old = kept.get(r.provider_id)
            if old is None or can_move(old, new):
                kept[r.provider_id] = new
                keep[r.provider_id] = r
                pending += 1
            else:
                ignored += 1
            continue
        for target in found:
            if can_move(target[2], new):
                # the error of the state reached: a delivery clears an earlier one
                target[2] = new
                moves[target[0], target[1]] = (r.status, r.error, now if r.at is None else r.at)
                count_receipt(tally, target[0], target[1], target[4], target[5], target[3],
                              r.status, r.error, now)
                matched += 1
            else:
                ignored += 1
    return moves, keep, (matched, pending, ignored)


class PgReceipts(PgBase):
    async def apply_receipts(
        self, gateway: str, receipts: Sequence[Receipt], *, senders: Sequence[str],
        cap: int = 100_000, ttl: float = 7 * 86400.0, now: float | None = None,
    ) -> ReceiptReport:
        now = time.time() if now is None else now
        ours = sorted(set(senders))
        # Receipts for one message are applied in the order they happened; the sort is
        # stable, so ties and receipts without ``at`` keep the order they came in.
        ordered = sorted(receipts, key=lambda r: now if r.at is None else r.at)
        await self.db.execute(_PREPARE, {
            "now": now, "oldest": now - ttl, "gateway": gateway, "senders": ours,
        })
        locks = [sender_lock(s) for s in ours]
        total = [0, 0, 0, 0]
        for start in range(0, len(ordered), RECEIPT_CHUNK):
            async with self.db.transaction() as tx:
                counts = await self._apply_chunk(
                    tx, gateway, ordered[start:start + RECEIPT_CHUNK], frozenset(ours),
                    locks, cap, ttl, now,
                )
            total = [a + b for a, b in zip(total, counts, strict=True)]
        return ReceiptReport(*total)

    async def _apply_chunk(
        self, tx: Tx, gateway: str, chunk: Sequence[Receipt], ours: frozenset[str],
        locks: list[int], cap: int, ttl: float, now: float,
    ) -> tuple[int, int, int, int]:
        """(matched, pending, ignored, dropped) of a chunk of ``apply_receipts``."""
        if locks:
            await tx.execute(_LOCK, (locks,))
        targets: dict[str, list[list[Any]]] = {}
        kept: dict[str, State] = {}
        for kind, pid, run_id, seq, state, sender, profile_id, phone in await tx.fetchall(
            _READ, {"ids": json_rows(list({r.provider_id for r in chunk})), "gateway": gateway}
        ):
            if kind == "p":
                kept[pid] = State(state)
            elif sender in ours:  # another gateway's recipients are not seen
                targets.setdefault(pid, []).append(
                    [int(run_id), int(seq), State(state), sender, int(profile_id), phone])
        tally = Tally()
        moves, keep, (matched, pending, ignored) = decide(chunk, targets, kept, now, tally)
        if moves or keep:
            await self._on_channels(tx, tally)
            await tx.execute(_WRITE, {
                **tally_params(tally),
                "gateway": gateway, "now": now, "expires": now + ttl,
                "moves": json_rows([(*key, *move) for key, move in moves.items()]),
                "keep": json_rows([(r.provider_id, r.status, r.error, r.at)
                                   for r in keep.values()]),
            })
        dropped = 0
        if keep and cap:
            dropped = await tx.execute(_CAP, {"gateway": gateway, "cap": cap})
        return matched, pending, ignored, dropped
