"""The journal of reserved batches, the recipients' rows, and the dedupe record
(JournalStore).

The exact record that confirms the dedupe filter's positives (the phones a run has accepted)
lives in a private scratch database (a temporary file, no journal, a small page cache),
keyed by the phone as an integer (an email run's by the normalised address, as text).
Random-key inserts there cost a third of what a phone index on the recipients table costs
in WAL mode, and the durable tables stay append-only. It is rebuilt from the recipients and
the journal when a run is resumed.

``record`` also writes, in its transaction, a ``send_sms`` event (an email run's ``send``)
per message sent and the batch's report counters (``engine.store.counters``); ``reserve``
writes the URLs of its messages' data links. The send events cost about as much as the
recipients' rows: a 500-message ``record`` went from 1.5 to 2.6 ms on a loaded 2-core
machine.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from engine.core.events import SENT as SENT_EVENT
from engine.core.events import kind_for
from engine.core.prepare import Message, Skipped
from engine.core.states import Outcome, Skip
from engine.store.base import JournalBatch, Lease, RecipientRow, Reserved
from engine.store.counters import (
    CONTROL,
    COUNTS,
    FAILED,
    RECIPIENTS,
    SEGMENTS,
    SENT,
    UNKNOWN,
    Tally,
    hour_of,
)
from engine.store.sqlite.cluster import no_cluster
from engine.store.sqlite.connection import SQLiteBase, sql_text
from engine.store.sqlite.events import add_counts, write_tally
from engine.store.sqlite.policy import count_sent
from engine.store.sqlite.receipts import apply_pending

__all__ = ["SQLiteJournal"]

_json = msgspec.json.Encoder()
_decode_counts = msgspec.json.Decoder(dict[str, int]).decode
_msgpack = msgspec.msgpack.Encoder()
_decode_entries = msgspec.msgpack.Decoder(list[Reserved]).decode

#: The accepted keys a run holds in memory before it writes them, sorted, to its scratch
#: table (``SQLiteJournal._add_seen`` says why).
SEEN_FLUSH = 65536
_sql_text = sql_text


def seen_keys(phones: Sequence[str], as_text: bool) -> list[Any]:
    """The keys of the dedupe record for these phones: E.164 as an integer, or (an email
    run's, ``as_text``) the address itself."""
    return list(phones) if as_text else [int(p[1:]) for p in phones]


class SQLiteJournal(SQLiteBase):
    def _seen_table(self, run_id: int) -> tuple[sqlite3.Connection, str, bool]:
        """The scratch table of phones accepted in a run, and whether it keys them as text
        (an email run's addresses); built on first use."""
        table = f"seen_{int(run_id)}"
        as_text = self._run_channel(self.conn, run_id) == "email"
        if self._scratch is None:
            self._scratch = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            self._scratch.execute("PRAGMA journal_mode=OFF")
            self._scratch.execute("PRAGMA synchronous=OFF")
            self._scratch.execute("PRAGMA cache_size=-8192")
        scratch = self._scratch
        if run_id not in self._seen_tables:
            if self._seen_run == run_id:
                self._seen_run = None
                self._seen_held.clear()
            scratch.execute(f"DROP TABLE IF EXISTS {table}")
            scratch.execute(f"CREATE TABLE {table} (phone TEXT PRIMARY KEY) WITHOUT ROWID"
                            if as_text else f"CREATE TABLE {table} (phone INTEGER PRIMARY KEY)")
            after = 0
            while True:
                rows = self.conn.execute(
                    "SELECT seq, phone FROM recipients WHERE run_id = ? AND seq > ?"
                    " AND state != 'skipped' ORDER BY seq LIMIT 10000",
                    (run_id, after),
                ).fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                self._add_seen(run_id, scratch, [r[1] for r in rows], as_text)
            for (blob,) in self.conn.execute(
                "SELECT messages FROM journal WHERE run_id = ?", (run_id,)
            ):
                self._add_seen(run_id, scratch, [e.phone for e in _decode_entries(blob)],
                               as_text)
            self._seen_tables.add(run_id)
        return scratch, table, as_text

    def _add_seen(
        self, run_id: int, scratch: sqlite3.Connection, phones: Sequence[str], as_text: bool
    ) -> None:
        """Add accepted phones to the run's dedupe record.

        They are held in memory (``_seen_held``) and written to the scratch table
        ``SEEN_FLUSH`` at a time, in key order. A chunk's phones, written at once, fell on
        as many B-tree pages as phones; once the table outgrew the scratch cache (5M
        phones take about 45 MB), nearly every one read and wrote a page. A sorted batch
        of 65,536 passes over each page once. Only this connection reads the scratch, so
        what is held in memory is as good as written; another run's batch is written
        first, so at most one run holds any."""
        if self._seen_run != run_id:
            self._flush_seen(scratch)
            self._seen_run = run_id
        self._seen_held.update(seen_keys(phones, as_text))
        if len(self._seen_held) >= SEEN_FLUSH:
            self._flush_seen(scratch)

    def _flush_seen(self, scratch: sqlite3.Connection) -> None:
        """Write the held keys to their run's scratch table, sorted."""
        if self._seen_run is not None and self._seen_held:
            scratch.execute(
                f"INSERT OR IGNORE INTO seen_{int(self._seen_run)}"
                " SELECT value FROM json_each(?)",
                (_json.encode(sorted(self._seen_held)),),
            )
            self._seen_held.clear()

    async def reserve(
        self,
        run_id: int,
        *,
        batches: Sequence[tuple[int, str, Sequence[Message]]],
        skipped: Sequence[Skipped],
        checkpoint: int,
        next_seq: int | None,
        counts: dict[str, int],
        audience_done: bool,
        lease: Lease | None = None,
        links: Sequence[tuple[int, int, str]] = (),
    ) -> set[int]:
        no_cluster(lease)
        now = time.time()
        if batches:
            scratch, _, as_text = self._seen_table(run_id)
            self._add_seen(run_id, scratch, [m.phone for _, _, msgs in batches for m in msgs],
                           as_text)
        with self._tx() as c:
            if batches:
                if not self._run_is_test(c, run_id):  # a test send counts for no policy
                    count_sent(
                        c, self._run_resource_id(c, run_id),
                        [(m.profile_id, m.phone) for _, _, msgs in batches for m in msgs],
                    )
                c.executemany(
                    "INSERT INTO journal (run_id, batch, sender, messages) VALUES (?, ?, ?, ?)",
                    [
                        (run_id, b, sender,
                         _msgpack.encode([(m.seq, m.profile_id, m.phone) for m in msgs]))
                        for b, sender, msgs in batches
                    ],
                )
            if links:
                c.executemany(
                    "INSERT INTO data_links (link_id, seq, url) VALUES (?, ?, ?)"
                    " ON CONFLICT (link_id, seq) DO UPDATE SET url = excluded.url",
                    links,
                )
            if skipped:
                c.executemany(
                    "INSERT INTO recipients (run_id, seq, profile_id, phone, state, reason,"
                    " updated_at) VALUES (?, ?, ?, ?, 'skipped', ?, ?)",
                    [(run_id, s.seq, s.profile_id, s.phone, s.reason, now) for s in skipped],
                )
                held_out = sum(1 for s in skipped if s.reason == Skip.CONTROL)
                if held_out:  # the control groups, in the reports
                    tally = Tally()
                    tally.count(run_id, "", now, CONTROL, held_out)
                    write_tally(c, tally)
            (raw,) = c.execute("SELECT counts FROM runs WHERE id = ?", (run_id,)).fetchone()
            total = _decode_counts(raw)
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
            c.execute(
                "UPDATE runs SET checkpoint = ?, next_seq = coalesce(?, next_seq), counts = ?,"
                " audience_done = ? WHERE id = ?",
                (checkpoint, next_seq, _json.encode(total).decode(), int(audience_done),
                 run_id),
            )
        return set()  # one process: its own dedupe saw every phone of the run

    async def mark_sending(
        self, run_id: int, batch: int, *, lease: Lease | None = None
    ) -> None:
        no_cluster(lease)
        self.conn.execute(
            "INSERT OR IGNORE INTO journal_sending (run_id, batch) VALUES (?, ?)", (run_id, batch)
        )

    async def unmark_sending(
        self, run_id: int, batch: int, *, lease: Lease | None = None
    ) -> None:
        no_cluster(lease)
        self.conn.execute(
            "DELETE FROM journal_sending WHERE run_id = ? AND batch = ?", (run_id, batch)
        )

    async def move_batch(
        self, run_id: int, batch: int, sender: str, *, lease: Lease | None = None
    ) -> None:
        no_cluster(lease)
        self.conn.execute(
            "UPDATE journal SET sender = ? WHERE run_id = ? AND batch = ?", (sender, run_id, batch)
        )

    async def record(
        self, run_id: int, batch: int, sender: str, messages: Sequence[Message],
        outcomes: Sequence[Outcome], keep: Sequence[Message] = (),
        keep_sending: bool = False, lease: Lease | None = None,
    ) -> None:
        no_cluster(lease)
        # Batch-wide values are written into the statement as literals: binding them once
        # per row cost 40% of the insert (bench/pipeline.py). They are an int, a float and
        # a quoted config name, never user text.
        head = (
            "INSERT INTO recipients (run_id, seq, profile_id, phone, state, reason, sender,"
            " segments, encoding, provider_id, error, attempts, updated_at) VALUES"
            f" ({int(run_id)}, ?, ?, ?, "
        )
        now = time.time()
        sender_sql, now_sql = _sql_text(sender), repr(float(now))
        sent: list[tuple[Any, ...]] = []
        other: list[tuple[Any, ...]] = []
        # (run, sender, hour, *COUNTS) of the batch; the send events' (seq, profile, phone)
        counts = [0] * len(COUNTS)
        sends: list[tuple[int, int, str]] = []
        for m, o in zip(messages, outcomes, strict=True):
            state = o.state
            if state == "sent" and o.error is None:
                sent.append((m.seq, m.profile_id, m.phone, m.segments, m.encoding,
                             o.provider_id, o.attempts))
            else:
                other.append((m.seq, m.profile_id, m.phone, state, o.reason, m.segments,
                              m.encoding, o.provider_id, o.error, o.attempts))
            if state == "sent":
                sends.append((m.seq, m.profile_id, m.phone))
                counts[SEGMENTS] += m.segments
            elif state == "failed":
                counts[FAILED] += 1
            elif state == "unknown":
                counts[UNKNOWN] += 1
            if state != "skipped":
                counts[RECIPIENTS] += 1
        counts[SENT] = len(sends)
        with self._tx() as c:
            if sent:
                c.executemany(
                    f"{head}'sent', NULL, {sender_sql}, ?, ?, ?, NULL, ?, {now_sql})", sent
                )
            if other:
                c.executemany(f"{head}?, ?, {sender_sql}, ?, ?, ?, ?, ?, {now_sql})", other)
            if sends:
                c.executemany(
                    "INSERT INTO events (kind, at, run_id, seq, profile_id, phone, sender)"
                    f" VALUES ('{kind_for(SENT_EVENT, self._run_channel(c, run_id))}',"
                    f" {now_sql}, {int(run_id)}, ?, ?, ?, {sender_sql})",
                    sends,
                )
            if counts[RECIPIENTS]:
                add_counts(c, [(run_id, sender, hour_of(now), *counts)])
            if keep:
                c.execute(
                    "UPDATE journal SET sender = ?, messages = ? WHERE run_id = ? AND batch = ?",
                    (sender, _msgpack.encode([(m.seq, m.profile_id, m.phone) for m in keep]),
                     run_id, batch),
                )
            else:
                c.execute("DELETE FROM journal WHERE run_id = ? AND batch = ?", (run_id, batch))
            if not (keep and keep_sending):
                c.execute(
                    "DELETE FROM journal_sending WHERE run_id = ? AND batch = ?", (run_id, batch)
                )
            ids = [o.provider_id for o in outcomes if o.provider_id]
            if ids:
                apply_pending(c, sender, ids, now)

    async def journal(self, run_id: int) -> list[JournalBatch]:
        rows = self.conn.execute(
            "SELECT j.run_id, j.batch, j.sender, CASE WHEN s.batch IS NULL THEN 'reserved'"
            " ELSE 'sending' END, j.messages FROM journal j LEFT JOIN journal_sending s"
            " ON s.run_id = j.run_id AND s.batch = j.batch WHERE j.run_id = ? ORDER BY j.batch",
            (run_id,),
        ).fetchall()
        return [JournalBatch(r[0], r[1], r[2], r[3], _decode_entries(r[4])) for r in rows]

    async def recipient_phones(self, run_id: int, chunk: int = 5000) -> AsyncIterator[list[str]]:
        after = 0
        while True:
            rows = self.conn.execute(
                "SELECT seq, phone FROM recipients WHERE run_id = ? AND seq > ?"
                " AND state != 'skipped' ORDER BY seq LIMIT ?",
                (run_id, after, chunk),
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield [r[1] for r in rows]

    async def recipient_rows(self, run_id: int) -> list[RecipientRow]:
        rows = self.conn.execute(
            "SELECT seq, profile_id, phone, state, reason FROM recipients WHERE run_id = ?"
            " ORDER BY seq",
            (run_id,),
        ).fetchall()
        return list(map(RecipientRow._make, rows))

    async def run_summary(self, run_id: int) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for state, reason, n in self.conn.execute(
            "SELECT state, coalesce(reason, ''), count(*) FROM recipients WHERE run_id = ?"
            " GROUP BY state, reason",
            (run_id,),
        ):
            out.setdefault(state, {})[reason] = n
        return out
