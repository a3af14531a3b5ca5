"""The journal and the recipients (JournalStore).

Each write of the hot path is one statement per batch, whatever its size: the parts of a
write go in data-modifying ``WITH`` clauses of that one statement, so a ``reserve`` or a
``record`` costs one round trip (``record`` two when it has provider ids: receipts that
came early are applied in a second statement, which sees the first one's rows, and a
third writes their events when any moved). ``record``'s statement also writes the
batch's send events (``send_sms``; an email run's ``send``) and adds to its report
counters (``events.py``); ``reserve``'s writes the URLs of its data links. The send
events (a row and three index entries per message) cost about as much as the recipients'
rows: a 500-message ``record`` went from 6.3 to 9.5 ms on a loaded 2-core machine, the
counters' upsert adding nothing measurable. The rows travel as one JSON array of arrays
(``json_rows``), which the server unpacks with ``jsonb_array_elements``: psycopg adapts a
Python list for ``unnest`` at 2-4 us an element (3-5 ms of a 500-message ``record``),
msgspec encodes the whole batch in tens of us.

``run_phones`` is the exact record of the phones a run has accepted (the digits of the
E.164 number, as an integer): the ``(run, phone)`` key behind the dedupe filter. It is
written by ``reserve`` in the transaction that journals the messages, read by ``lookup``
(``audience.py``), and durable, so a resumed run needs no rebuild. An email run's
addresses (text) are kept in ``run_addresses`` the same way, and its policy history per
address in ``history_address`` (``policy.py``): each channel's statements are made once,
from one text (``_reserve_sql``).

Under a cluster lease (``cluster.py``) every write first holds the lease (``LEASE_HELD``,
in the same statement), or raises LeaseLost having written nothing. ``reserve`` then
costs two statements: the first holds the lease and inserts the batch's phones into
``run_phones`` (``ON CONFLICT DO NOTHING``, in phone order); a phone it did not insert
was accepted by another worker (or earlier in the batch), and its message is refused as
a duplicate in the second.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec

from engine.core.events import SENT as SENT_EVENT
from engine.core.events import kind_for
from engine.core.policy import utc_day
from engine.core.prepare import Message, Skipped
from engine.core.states import TRANSITIONS, Outcome, Skip
from engine.errors import NotFound
from engine.store.base import JournalBatch, Lease, RecipientRow, Reserved
from engine.store.counters import CONTROL, COUNTS, Tally, count_receipt, hour_of
from engine.store.postgres.cluster import LEASE_HELD, lease_lost
from engine.store.postgres.connection import Channel, PgBase
from engine.store.postgres.db import Tx
from engine.store.postgres.events import WRITE_TALLY, tally_params

__all__ = [
    "ADDRESSES_DDL", "DDL", "MOVES", "PgJournal", "decode_entries", "json_rows",
    "reserve_params", "reserve_sql", "sender_lock", "text_array",
]

#: This role's tables, in the first migration (``schema.py``).
DDL = """
-- One row per recipient whose fate is known. Written once per message, when settled.
-- No foreign key to runs: its check, a trigger per row, cost 40% of a batch's insert;
-- only the store writes these rows, for a run it has.
CREATE TABLE recipients (
    run_id bigint NOT NULL,
    seq bigint NOT NULL,
    profile_id bigint NOT NULL,
    phone text NOT NULL,
    state text NOT NULL,
    reason text,
    sender text,
    segments integer,
    encoding text,
    provider_id text,
    error text,
    attempts integer NOT NULL DEFAULT 0,
    updated_at double precision NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX recipients_provider ON recipients(provider_id) WHERE provider_id IS NOT NULL;
-- Reserved batches whose fate is not yet recorded: the run's write-ahead journal.
-- A batch with a row in journal_sending may have been handed to its gateway.
CREATE TABLE journal (
    run_id bigint NOT NULL REFERENCES runs(id),
    batch bigint NOT NULL,
    sender text NOT NULL,
    messages bytea NOT NULL,
    PRIMARY KEY (run_id, batch)
);
CREATE TABLE journal_sending (
    run_id bigint NOT NULL,
    batch bigint NOT NULL,
    PRIMARY KEY (run_id, batch)
);
-- The phones each run has accepted (E.164 digits): the backstop of exact dedupe.
CREATE TABLE run_phones (
    run_id bigint NOT NULL,
    phone bigint NOT NULL,
    PRIMARY KEY (run_id, phone)
);
"""
#: Migration 10 (issue 19): the addresses each email run has accepted (normalised,
#: ``engine.core.emails``): its exact dedupe's backstop, as ``run_phones`` is an SMS run's.
ADDRESSES_DDL = """
CREATE TABLE run_addresses (
    run_id bigint NOT NULL,
    address text NOT NULL,
    PRIMARY KEY (run_id, address)
);
"""

_msgpack = msgspec.msgpack.Encoder()
_json = msgspec.json.Encoder()
decode_entries = msgspec.msgpack.Decoder(list[Reserved]).decode


def json_rows(values: Any) -> str:
    """Rows (or values) as the JSON text a statement unpacks with ``jsonb_array_elements``
    (``r->>0``, ``r->>1``... of each row) or ``jsonb_array_elements_text``."""
    return _json.encode(values).decode()


def text_array(param: str) -> str:
    """SQL for the text values of a JSON array parameter (``json_rows``) as an array: ``x =
    ANY(...)`` of it is an index scan."""
    return f"ARRAY(SELECT jsonb_array_elements_text({param}::jsonb))"


#: Every move ``engine.core.states.can_move`` allows, as ``'old>new'``: SQL checks a
#: recipient's move with ``state || '>' || new = ANY(MOVES)`` (state names are plain
#: words, safe as literals).
MOVES = "ARRAY[{}]".format(", ".join(
    f"'{old}>{new}'" for old, news in sorted(TRANSITIONS.items()) for new in sorted(news)))

#: The high half of the advisory locks named by ``sender_lock``.
_SENDER_LOCKS = 0x4852_4C44 << 32  # "HRLD"


def sender_lock(sender: str) -> int:
    """The advisory lock that orders a sender's records and its gateway's receipts.

    ``record`` holds it shared while it looks for receipts kept for its messages;
    ``apply_receipts`` holds it exclusively while it decides, chunk by chunk, which
    receipts have no recipient yet. So a receipt is never kept for a message whose row a
    concurrent ``record`` has written but not yet committed: one of the two waits."""
    return _SENDER_LOCKS | zlib.crc32(sender.encode())


def _entries(messages: Sequence[Message]) -> bytes:
    return _msgpack.encode([(m.seq, m.profile_id, m.phone) for m in messages])


#: Where each channel keeps its addresses: (SQL type of an address, the run's accepted
#: addresses (table, column), the policy history per address (table, column)). An SMS
#: phone is kept as the integer of its E.164 digits (``_address_key``).
_KEPT = {
    "sms": ("bigint", "run_phones", "phone", "history_contact", "phone"),
    "email": ("text", "run_addresses", "address", "history_address", "address"),
}


def _address_key(channel: Channel, address: str) -> int | str:
    """How a channel's tables keep ``address``: an E.164 phone's digits as an integer,
    an email address as it is."""
    return int(address[1:]) if channel == "sms" else address


#: ``reserve``: the policy history, the journal, the run's phones (``{accepted}``), the
#: skips, the reading position (the run's, ``{position}``, or the chunk's, ``{chunk}``)
#: and the run's counters, in one statement. History keys are counted first (a profile
#: twice in a batch counts twice) and written in key order, so concurrent runs lock rows
#: in one order. ``{type}``, ``{history}``, ``{hcol}``: the channel's (``_KEPT``).
_RESERVE = """
WITH sent AS (
    SELECT (r->>0)::bigint AS profile_id, (r->>1)::{type} AS phone
    FROM jsonb_array_elements(%(sent)s::jsonb) AS r
), history_p AS (
    INSERT INTO history_profile (profile_id, day, resource_id, n)
    SELECT profile_id, %(day)s, %(resource)s, count(*) FROM sent WHERE %(count)s
    GROUP BY profile_id ORDER BY profile_id
    ON CONFLICT (profile_id, day, resource_id) DO UPDATE SET n = history_profile.n + excluded.n
), history_c AS (
    INSERT INTO {history} ({hcol}, day, n)
    SELECT phone, %(day)s, count(*) FROM sent WHERE %(count)s GROUP BY phone ORDER BY phone
    ON CONFLICT ({hcol}, day) DO UPDATE SET n = {history}.n + excluded.n
){accepted}, journalled AS (
    INSERT INTO journal (run_id, batch, sender, messages)
    SELECT %(run)s, b, s, m
    FROM unnest(%(batches)s::bigint[], %(senders)s::text[], %(blobs)s::bytea[]) AS t(b, s, m)
), skips AS (
    INSERT INTO recipients (run_id, seq, profile_id, phone, state, reason, updated_at)
    SELECT %(run)s, (r->>0)::bigint, (r->>1)::bigint, r->>2, 'skipped', r->>3, %(now)s
    FROM jsonb_array_elements(%(skipped)s::jsonb) AS r
), data_urls AS (
    INSERT INTO data_links (link_id, seq, url)
    SELECT (r->>0)::bigint, (r->>1)::bigint, r->>2
    FROM jsonb_array_elements(%(links)s::jsonb) AS r ORDER BY 1, 2
    ON CONFLICT (link_id, seq) DO UPDATE SET url = excluded.url
){chunk}
UPDATE {table} SET {position}
    counts = (
        SELECT coalesce(jsonb_object_agg(key, n), '{{}}') FROM (
            SELECT key, sum(value::bigint) AS n FROM (
                SELECT key, value FROM jsonb_each_text({table}.counts)
                UNION ALL SELECT key, value FROM jsonb_each_text(%(counts)s::jsonb)
            ) AS c GROUP BY key
        ) AS totals
    )
WHERE {row}
"""


def _reserve_sql(channel: Channel, leased: bool) -> str:
    """``reserve``'s statement for a run of ``channel``: alone, the run's phones are
    written with the rest, and its position; under a lease, the phones were accepted by
    ``_ACCEPT``, and the position and the counters are the chunk's (the run's are summed
    when it is read: ``runs.RUN_COUNTS``)."""
    kind, accepted, column, history, hcol = _KEPT[channel]
    return _RESERVE.format(
        accepted="" if leased else f""", accepted AS (
    INSERT INTO {accepted} (run_id, {column}) SELECT %(run)s, phone FROM sent
    ON CONFLICT DO NOTHING
)""",
        chunk="",
        position="""checkpoint = %(checkpoint)s, next_seq = coalesce(%(next_seq)s, next_seq),
    audience_done = %(done)s,""",
        table="run_chunks" if leased else "runs",
        row="run_id = %(run)s AND chunk = %(chunk)s" if leased else "id = %(run)s",
        type=kind, history=history, hcol=hcol,
    )


_RESERVES = {(channel, leased): _reserve_sql(channel, leased)
             for channel in ("sms", "email") for leased in (False, True)}


def reserve_sql(channel: Channel, *, leased: bool) -> str:
    """``reserve``'s statement for a run of ``channel``, alone or under a lease (made
    once)."""
    return _RESERVES[channel, leased]


def reserve_params(
    channel: Channel, batches: Sequence[tuple[int, str, Sequence[Message]]],
) -> dict[str, Any]:
    """``reserve``'s parameters that its batches give: the history rows (profile, the
    channel's key of its address), the batches, their senders and their entries."""
    return {
        "sent": json_rows([(m.profile_id, _address_key(channel, m.phone))
                           for _, _, msgs in batches for m in msgs]),
        "batches": [b for b, _, _ in batches],
        "senders": [sender for _, sender, _ in batches],
        "blobs": [_entries(msgs) for _, _, msgs in batches],
    }


#: ``reserve`` under a lease, first: hold the lease and insert the batches' phones into
#: the run's (``{table}``, ``{column}`` of type ``{type}``: the channel's), in phone order
#: (concurrent reserves of one run wait for each other in one order). Its row: whether
#: the lease is held, and the phones inserted (JSON).
_ACCEPT = """
WITH lease AS ({held}), accepted AS (
    INSERT INTO {table} (run_id, {column})
    SELECT DISTINCT %(run)s, p::{type}
    FROM jsonb_array_elements_text(%(phones)s::jsonb) AS p
    WHERE EXISTS (SELECT 1 FROM lease) ORDER BY 2
    ON CONFLICT DO NOTHING RETURNING {column}
)
SELECT EXISTS (SELECT 1 FROM lease),
    (SELECT coalesce(json_agg({column}), '[]')::text FROM accepted)
"""
_ACCEPTS = {
    channel: _ACCEPT.format(held=LEASE_HELD, table=table, column=column, type=kind)
    for channel, (kind, table, column, _, _) in _KEPT.items()
}

_decode_keys = msgspec.json.Decoder(list[int | str]).decode


def _lease_params(run_id: int, lease: Lease) -> dict[str, int]:
    """``LEASE_HELD``'s parameters: the lease's chunk of ``run_id`` at its fence."""
    return {"run": run_id, "chunk": lease.chunk, "fence": lease.fence}


def _held(write: str, lease: Lease | None) -> str:
    """A one-table write (``{held}`` where its condition ends): as it is, or under a lease,
    done only if the lease is held, the statement's one row saying whether it was."""
    if lease is None:
        return write.format(held="")
    return (f"WITH lease AS ({LEASE_HELD}), w AS"
            f" ({write.format(held=' AND EXISTS (SELECT 1 FROM lease)')})"
            " SELECT count(*) FROM lease")


_MARK_SENDING = (
    "INSERT INTO journal_sending (run_id, batch) SELECT %(run)s, %(batch)s"
    " WHERE true{held} ON CONFLICT DO NOTHING"
)
_UNMARK_SENDING = (
    "DELETE FROM journal_sending WHERE run_id = %(run)s AND batch = %(batch)s{held}"
)
_MOVE_BATCH = (
    "UPDATE journal SET sender = %(sender)s WHERE run_id = %(run)s AND batch = %(batch)s{held}"
)

#: ``record``: the batch's recipient rows, their send events (``%(sent_kind)s``, the run's
#: channel's), its counters (under part ``%(part)s``, ``events.py``) and the journal's
#: change (``{journal}``); under a lease (``{lease}``), only if it is held (``{where}``,
#: ``{held_and}``), which the row says.
_RECORD = """
WITH {lease}settled AS (
    INSERT INTO recipients (run_id, seq, profile_id, phone, state, reason, sender, segments,
                            encoding, provider_id, error, attempts, updated_at)
    SELECT %(run)s, (r->>0)::bigint, (r->>1)::bigint, r->>2, r->>3, r->>4, %(sender)s,
           (r->>5)::int, r->>6, r->>7, r->>8, (r->>9)::int, %(now)s
    FROM jsonb_array_elements(%(rows)s::jsonb) AS r{where}
), sends AS (
    INSERT INTO events (kind, at, run_id, seq, profile_id, phone, sender)
    SELECT %(sent_kind)s, %(now)s, %(run)s, (r->>0)::bigint, (r->>1)::bigint, r->>2,
           %(sender)s
    FROM jsonb_array_elements(%(rows)s::jsonb) AS r WHERE r->>3 = 'sent'{held_and}
), counted AS (
    INSERT INTO report_counts (run_id, sender, hour, part, {count_columns})
    SELECT %(run)s, %(sender)s, %(hour)s, %(part)s, {count_values}
    WHERE %(counted)s{held_and}
    ON CONFLICT (run_id, sender, hour, part) DO UPDATE SET {count_sums}
){journal}
SELECT {lock}, {held}
"""
_RECORD_COUNTS = {
    "count_columns": ", ".join(COUNTS),
    "count_values": ", ".join(f"%(c_{c})s" for c in COUNTS),
    "count_sums": ", ".join(f"{c} = report_counts.{c} + excluded.{c}" for c in COUNTS),
}

#: ``record``, when the batch has provider ids: the receipts its gateway sent before the
#: messages were recorded, applied (not expired; as far as ``can_move`` allows; to that
#: gateway's recipients only) and dropped, expired or not.
_APPLY_PENDING = f"""
WITH gw AS (
    SELECT gateway FROM receipt_senders WHERE sender = %(sender)s
), found AS (
    SELECT p.provider_id, p.status, p.error, coalesce(p.at, p.received_at) AS at
    FROM receipts_pending p JOIN gw ON p.gateway = gw.gateway
    WHERE p.provider_id = ANY({text_array("%(ids)s")}) AND p.expires_at > %(now)s
), moved AS (
    UPDATE recipients r SET state = f.status, error = f.error, updated_at = f.at
    FROM found f
    WHERE r.provider_id = f.provider_id AND r.state || '>' || f.status = ANY({MOVES})
      AND r.sender IN (SELECT s.sender FROM receipt_senders s JOIN gw ON s.gateway = gw.gateway)
    RETURNING r.run_id, r.seq, r.profile_id, r.phone, r.sender, f.status, f.error
), dropped AS (
    DELETE FROM receipts_pending p USING gw
    WHERE p.gateway = gw.gateway AND p.provider_id = ANY({text_array("%(ids)s")})
)
SELECT run_id, seq, profile_id, phone, sender, status, error FROM moved
"""



async def write_control(tx: Tx, run_id: int, skipped: Sequence[Skipped], now: float) -> None:
    """Count the profiles among ``skipped`` held out in a control group, for the reports
    (under sender "": no sender was theirs)."""
    held_out = sum(1 for s in skipped if s.reason == Skip.CONTROL)
    if held_out:
        tally = Tally()
        tally.count(run_id, "", now, CONTROL, held_out)
        await tx.execute(WRITE_TALLY, tally_params(tally, 0))

class PgJournal(PgBase):
    async def _run_is_test(self, tx: Tx, run_id: int) -> bool:
        """Whether a run sends test messages (``RunSpec.is_test``; cached: a run's spec
        never changes)."""
        flag = self._run_test.get(run_id)
        if flag is None:
            row = await tx.fetchone(
                "SELECT coalesce((spec->>'is_test')::boolean, false) FROM runs WHERE id = %s",
                (run_id,))
            flag = self._run_test[run_id] = bool(row and row[0])
        return flag

    async def _run_resource_id(self, tx: Tx, run_id: int) -> int:
        """The resource id of a run's mailing (cached: a run never changes resource), its
        row created on first use as ``resource_id`` does."""
        resource_id = self._run_resource.get(run_id)
        if resource_id is not None:
            return resource_id
        await tx.execute(
            "INSERT INTO resources (name, created_at) SELECT m.resource, %s FROM runs r"
            " JOIN mailings m ON m.id = r.mailing_id WHERE r.id = %s"
            " ON CONFLICT (name) DO NOTHING",
            (time.time(), run_id),
        )
        row = await tx.fetchone(
            "SELECT s.id FROM runs r JOIN mailings m ON m.id = r.mailing_id"
            " JOIN resources s ON s.name = m.resource WHERE r.id = %s",
            (run_id,),
        )
        if row is None:
            raise NotFound(f"no run {run_id}")
        resource_id = self._run_resource[run_id] = int(row[0])
        return resource_id

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
        now = time.time()
        refused: set[int] = set()
        async with self.db.transaction() as tx:
            channel = await self._channel(tx, run_id)
            if lease is not None:
                batches, skipped, counts, refused = await self._accept(
                    tx, run_id, channel, lease, batches, skipped, counts)
            # Messages count in the policy history from the moment they are reserved, so
            # one still at its gateway counts too: a policy never lets one through twice.
            # (test messages count for no policy: RunSpec.is_test)
            resource = await self._run_resource_id(tx, run_id) if any(
                msgs for _, _, msgs in batches) else None
            count = resource is not None and not await self._run_is_test(tx, run_id)
            await tx.execute(reserve_sql(channel, leased=lease is not None), {
                "run": run_id, "now": now, "day": utc_day(now), "resource": resource,
                "count": count, **reserve_params(channel, batches),
                "skipped": json_rows(skipped),
                "checkpoint": checkpoint, "next_seq": next_seq, "done": audience_done,
                "counts": json_rows(counts),
                "chunk": None if lease is None else lease.chunk,
                # one row per (link, seq): the last url given for it
                "links": json_rows([(k[0], k[1], url) for k, url in
                                    {(link, seq): url for link, seq, url in links}.items()]),
            })
            await write_control(tx, run_id, skipped, now)
        return refused

    async def _accept(
        self, tx: Tx, run_id: int, channel: Channel, lease: Lease,
        batches: Sequence[tuple[int, str, Sequence[Message]]], skipped: Sequence[Skipped],
        counts: dict[str, int],
    ) -> tuple[list[tuple[int, str, Sequence[Message]]], list[Skipped], dict[str, int],
               set[int]]:
        """Hold the lease and accept the batches' phones into the run's: the messages whose
        phone another worker accepted first (or an earlier message of these batches) are
        refused, skipped as duplicates. Returns what is left to reserve and the refused
        seqs. LeaseLost if the lease is not held."""
        row = await tx.fetchone(_ACCEPTS[channel], {
            **_lease_params(run_id, lease),
            "phones": json_rows([_address_key(channel, m.phone)
                                 for _, _, msgs in batches for m in msgs]),
        })
        if row is None or not row[0]:
            raise lease_lost(lease)
        fresh = set(_decode_keys(row[1]))
        kept: list[tuple[int, str, Sequence[Message]]] = []
        refusals: list[Skipped] = []
        for batch, sender, msgs in batches:
            accepted: list[Message] = []
            for m in msgs:
                key = _address_key(channel, m.phone)
                if key in fresh:
                    fresh.discard(key)  # the first message to the phone has it
                    accepted.append(m)
                else:
                    refusals.append(Skipped(m.seq, m.profile_id, m.phone, "duplicate"))
            if accepted:  # a batch left with no message is not journalled
                kept.append((batch, sender, accepted))
        if not refusals:
            return kept, list(skipped), counts, set()
        counts = dict(counts)
        counts["duplicate"] = counts.get("duplicate", 0) + len(refusals)
        if "reserved" in counts:
            counts["reserved"] -= len(refusals)
        return kept, [*skipped, *refusals], counts, {r.seq for r in refusals}

    async def _held_write(self, write: str, params: dict[str, Any],
                          lease: Lease | None) -> None:
        """One of the small journal writes, under ``lease`` if given (LeaseLost, nothing
        written, if it is not held)."""
        if lease is None:
            await self.db.execute(_held(write, None), params)
            return
        async with self.db.transaction() as tx:
            row = await tx.fetchone(_held(write, lease), {
                **params, **_lease_params(params["run"], lease)})
            if row is None or not row[0]:
                raise lease_lost(lease)

    async def mark_sending(
        self, run_id: int, batch: int, *, lease: Lease | None = None
    ) -> None:
        await self._held_write(_MARK_SENDING, {"run": run_id, "batch": batch}, lease)

    async def unmark_sending(
        self, run_id: int, batch: int, *, lease: Lease | None = None
    ) -> None:
        await self._held_write(_UNMARK_SENDING, {"run": run_id, "batch": batch}, lease)

    async def move_batch(
        self, run_id: int, batch: int, sender: str, *, lease: Lease | None = None
    ) -> None:
        await self._held_write(
            _MOVE_BATCH, {"run": run_id, "batch": batch, "sender": sender}, lease)

    async def record(
        self, run_id: int, batch: int, sender: str, messages: Sequence[Message],
        outcomes: Sequence[Outcome], keep: Sequence[Message] = (),
        keep_sending: bool = False, lease: Lease | None = None,
    ) -> None:
        settled = [
            # a clean send keeps no reason, whatever the dispatcher said
            (m.seq, m.profile_id, m.phone, o.state,
             None if o.state == "sent" and o.error is None else o.reason,
             m.segments, m.encoding, o.provider_id, o.error, o.attempts)
            for m, o in zip(messages, outcomes, strict=True)
        ]
        counts = dict.fromkeys(COUNTS, 0)
        for m, o in zip(messages, outcomes, strict=True):
            if o.state == "sent":
                counts["sent"] += 1
                counts["segments"] += m.segments
            elif o.state in ("failed", "unknown"):
                counts[o.state] += 1
            if o.state != "skipped":
                counts["recipients"] += 1
        provider_ids = [o.provider_id for o in outcomes if o.provider_id]
        held = "" if lease is None else " AND EXISTS (SELECT 1 FROM lease)"
        journal = (
            ", kept AS (UPDATE journal SET sender = %(sender)s, messages = %(keep)s"
            f" WHERE run_id = %(run)s AND batch = %(batch)s{held})" if keep else
            ", dropped AS (DELETE FROM journal WHERE run_id = %(run)s AND batch = %(batch)s"
            f"{held})"
        )
        if not (keep and keep_sending):
            journal += (", unmarked AS (DELETE FROM journal_sending WHERE run_id = %(run)s"
                        f" AND batch = %(batch)s{held})")
        # Held to the commit: receipts are not judged "too early" meanwhile (sender_lock).
        lock = "pg_advisory_xact_lock_shared(%(lock)s)" if provider_ids else "1"
        sql = _RECORD.format(
            journal=journal, lock=lock,
            lease="" if lease is None else f"lease AS ({LEASE_HELD}), ",
            where="" if lease is None else " WHERE EXISTS (SELECT 1 FROM lease)",
            held_and=held,
            held="true" if lease is None else "EXISTS (SELECT 1 FROM lease)",
            **_RECORD_COUNTS,
        )
        now = time.time()
        # a chunk's counters are its own (events.py): its records already take turns
        part = 0 if lease is None else lease.chunk
        async with self.db.transaction() as tx:
            channel = await self._channel(tx, run_id)
            row = await tx.fetchone(sql, {
                "run": run_id, "batch": batch, "sender": sender, "now": now,
                "sent_kind": kind_for(SENT_EVENT, channel),
                "rows": json_rows(settled), "keep": _entries(keep) if keep else None,
                "lock": sender_lock(sender), "hour": hour_of(now), "part": part,
                "counted": counts["recipients"] > 0,
                **{f"c_{c}": n for c, n in counts.items()},
                **({} if lease is None else _lease_params(run_id, lease)),
            })
            if lease is not None and (row is None or not row[1]):
                raise lease_lost(lease)
            if provider_ids:
                moved = await tx.fetchall(_APPLY_PENDING, {
                    "sender": sender, "ids": json_rows(provider_ids), "now": now,
                })
                if moved:  # receipts that came early: their events and counts, now
                    tally = Tally()
                    for run, seq, profile_id, phone, owner, status, error in moved:
                        count_receipt(tally, int(run), int(seq), int(profile_id), phone,
                                      owner, status, error, now)
                    await self._on_channels(tx, tally)
                    await tx.execute(WRITE_TALLY, tally_params(tally, part))

    async def journal(self, run_id: int) -> list[JournalBatch]:
        rows = await self.db.fetchall(
            "SELECT j.run_id, j.batch, j.sender, CASE WHEN s.batch IS NULL THEN 'reserved'"
            " ELSE 'sending' END, j.messages FROM journal j LEFT JOIN journal_sending s"
            " ON s.run_id = j.run_id AND s.batch = j.batch WHERE j.run_id = %s"
            " ORDER BY j.batch",
            (run_id,),
        )
        return [JournalBatch(r[0], r[1], r[2], r[3], decode_entries(r[4])) for r in rows]

    async def recipient_phones(self, run_id: int, chunk: int = 5000) -> AsyncIterator[list[str]]:
        after = 0
        while True:
            rows = await self.db.fetchall(
                "SELECT seq, phone FROM recipients WHERE run_id = %s AND seq > %s"
                " AND state != 'skipped' ORDER BY seq LIMIT %s",
                (run_id, after, chunk),
            )
            if not rows:
                return
            after = rows[-1][0]
            yield [r[1] for r in rows]

    async def recipient_rows(self, run_id: int) -> list[RecipientRow]:
        rows = await self.db.fetchall(
            "SELECT seq, profile_id, phone, state, reason FROM recipients WHERE run_id = %s"
            " ORDER BY seq",
            (run_id,),
        )
        return [RecipientRow(*r) for r in rows]

    async def run_summary(self, run_id: int) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for state, reason, n in await self.db.fetchall(
            "SELECT state, coalesce(reason, ''), count(*) FROM recipients WHERE run_id = %s"
            " GROUP BY state, reason",
            (run_id,),
        ):
            out.setdefault(state, {})[reason] = int(n)
        return out
