"""The action hooks' outbox (HookStore): a cursor and a lease per hook over the event
record, and the batches given up on (dead letters).

Why the cursor is ``(txid, id)`` and not an id: an event's id is drawn from its identity
sequence at insert, but transactions commit in their own order. A writer that drew id 10
may commit after another that drew 11; a reader that delivered 11 and moved its cursor to
it would never see 10. So each event keeps the id of the transaction that wrote it
(``txid xid8 DEFAULT pg_current_xact_id()``: every writer, the ``TALLY`` statements of
``events.py`` included, fills it without knowing), and hooks read in ``(txid, id)``
order, only events with ``txid < pg_snapshot_xmin(pg_current_snapshot())``. Every
transaction below the snapshot's ``xmin`` has ended, and every one that may still commit
(running, or not yet begun) has a txid at or above it: the events a reader can see are
final, and any event that appears later sorts after all of them, so after the cursor. A
long-running writing transaction anywhere on the server holds ``xmin`` back, and with it
the hooks (they wait; they lose nothing). The index on ``(txid, id)`` serves the read.

A new hook starts at ``(xmin, 0)``: after every event a hook could read at that moment,
before any event of a writer still open. An event committed a moment before the claim by a
writer above ``xmin`` (a transaction older than it was still open somewhere on the server)
is delivered too: delivery is at least once, and the start errs on that side. Leases are
on the server's clock (``clock_timestamp()``), so processes on machines whose clocks differ
agree on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from engine.store.base import DeadLetter, EventPosition, HookEvent, HookState
from engine.store.hook_rows import EVENT_JOINS
from engine.store.postgres.connection import PgBase

__all__ = ["DDL", "PgHooks"]

#: Migration 9 (issue 15). Events written before it take the migrating transaction's id
#: (adding the column rewrites the table, once). An import event has no profile: it keeps
#: its database, and what it says in ``data``. A trigger call's ``custom_data`` is found
#: by (run, seq), indexed only where given, so other calls pay nothing for it.
DDL = """
ALTER TABLE events ADD COLUMN txid xid8 NOT NULL DEFAULT pg_current_xact_id();
ALTER TABLE events ADD COLUMN data json;
ALTER TABLE events ADD COLUMN database_id bigint;
CREATE INDEX events_txid ON events(txid, id);
ALTER TABLE trigger_queue ADD COLUMN custom_data json;
CREATE INDEX trigger_queue_custom ON trigger_queue(run_id, seq) WHERE custom_data IS NOT NULL;
CREATE TABLE hooks (
    name text PRIMARY KEY,
    cursor_txid xid8 NOT NULL,
    cursor_id bigint NOT NULL,
    owner text NOT NULL DEFAULT '',
    lease_until double precision NOT NULL DEFAULT 0,
    last_error text NOT NULL DEFAULT '',
    failing_since double precision,
    delivered bigint NOT NULL DEFAULT 0
);
CREATE TABLE dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hook text NOT NULL,
    after_txid xid8 NOT NULL,
    after_id bigint NOT NULL,
    upto_txid xid8 NOT NULL,
    upto_id bigint NOT NULL,
    events bigint NOT NULL,
    error text NOT NULL,
    first_failed double precision NOT NULL,
    at double precision NOT NULL
);
CREATE INDEX dead_letters_hook ON dead_letters(hook, id);
"""

#: The server's clock, in seconds since the epoch.
_NOW = "extract(epoch FROM clock_timestamp())::float8"
#: Below it, every writer has ended (see the module's docstring).
_XMIN = "pg_snapshot_xmin(pg_current_snapshot())"

#: An event with what a hook's message says of it: its run's mailing, test flag and
#: message id, the mailing's resource (name and id), the database (an import's own, else
#: the mailing's, else the profile's for an event with no message) and the trigger call's
#: ``custom_data``.
_SELECT = (
    "SELECT e.txid::text, e.id, e.kind, e.at, coalesce((r.spec->>'is_test')::boolean, false),"
    " r.mailing_id, e.run_id, e.seq, r.uid || '-' || e.seq, e.profile_id,"
    " coalesce(e.database_id, m.database_id, p.database_id), d.name, res.id, m.resource,"
    " e.phone, e.sender, e.error, e.url, q.custom_data::text, e.data::text"
    + EVENT_JOINS
    + f" WHERE (e.txid, e.id) > (%(txid)s::text::xid8, %(id)s) AND e.txid < {_XMIN}"
)
_STATE_COLUMNS = ("name, cursor_txid::text, cursor_id, owner, lease_until, last_error,"
                  " failing_since, delivered")
_LETTER = ("SELECT id, hook, after_txid::text, after_id, upto_txid::text, upto_id, events,"
           " error, first_failed, at FROM dead_letters")
#: Whose lease is still held: a write is fenced on it.
_HELD = f"name = %(name)s AND owner = %(owner)s AND lease_until > {_NOW}"
#: Moves the cursor to %(txid)s/%(id)s, never back.
_FORWARD = (
    "cursor_txid = CASE WHEN (%(txid)s::text::xid8, %(id)s) > (cursor_txid, cursor_id)"
    " THEN %(txid)s::text::xid8 ELSE cursor_txid END,"
    " cursor_id = CASE WHEN (%(txid)s::text::xid8, %(id)s) > (cursor_txid, cursor_id)"
    " THEN %(id)s ELSE cursor_id END"
)


def _bytes(value: str | None) -> bytes | None:
    return None if value is None else value.encode()


def _event(r: Sequence[Any]) -> HookEvent:
    return HookEvent(
        EventPosition(int(r[0]), int(r[1])), r[2], float(r[3]), bool(r[4]), r[5], r[6], r[7],
        r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15], r[16], r[17], _bytes(r[18]),
        _bytes(r[19]))


def _state(r: Sequence[Any]) -> HookState:
    return HookState(r[0], EventPosition(int(r[1]), int(r[2])), r[3], float(r[4]), r[5],
                     None if r[6] is None else float(r[6]), int(r[7]))


def _letter(r: Sequence[Any]) -> DeadLetter:
    return DeadLetter(int(r[0]), r[1], EventPosition(int(r[2]), int(r[3])),
                      EventPosition(int(r[4]), int(r[5])), int(r[6]), r[7], float(r[8]),
                      float(r[9]))


def _at(position: EventPosition) -> dict[str, Any]:
    return {"txid": str(position.txid), "id": position.id}


class PgHooks(PgBase):
    async def record_import_event(
        self, kind: str, at: float, database_id: int, data: bytes
    ) -> None:
        await self.db.execute(
            "INSERT INTO events (kind, at, phone, database_id, data)"
            " VALUES (%s, %s, '', %s, %s::json)", (kind, at, database_id, data.decode()))

    async def hook_events(
        self, after: EventPosition, limit: int, *, upto: EventPosition | None = None
    ) -> list[HookEvent]:
        params = {**_at(after), "limit": limit}
        until = ""
        if upto is not None:
            until = " AND (e.txid, e.id) <= (%(upto_txid)s::text::xid8, %(upto_id)s)"
            params |= {"upto_txid": str(upto.txid), "upto_id": upto.id}
        rows = await self.db.fetchall(
            f"{_SELECT}{until} ORDER BY e.txid, e.id LIMIT %(limit)s", params)
        return [_event(r) for r in rows]

    async def events_at(self, since: float) -> EventPosition:
        # a scan (events have no index on time: each would cost every write), for a
        # replay now and then
        async with self.db.transaction() as tx:
            row = await tx.fetchone(
                "SELECT txid::text, id FROM events WHERE at >= %s ORDER BY txid, id LIMIT 1",
                (since,))
            if row is not None:
                return EventPosition(int(row[0]), int(row[1]) - 1)
            # none yet: the end, where a new hook starts
            end = await tx.fetchone(f"SELECT {_XMIN}::text")
            assert end is not None
            return EventPosition(int(end[0]), 0)

    async def claim_hook(self, name: str, owner: str, ttl: float) -> HookState | None:
        # one statement: of two processes claiming at once, the second waits on the
        # first's row and then sees its lease
        row = await self.db.fetchone(
            "INSERT INTO hooks (name, cursor_txid, cursor_id, owner, lease_until)"
            f" VALUES (%(name)s, {_XMIN}, 0, %(owner)s, {_NOW} + %(ttl)s)"
            " ON CONFLICT (name) DO UPDATE"
            " SET owner = excluded.owner, lease_until = excluded.lease_until"
            f" WHERE hooks.owner IN ('', excluded.owner) OR hooks.lease_until <= {_NOW}"
            f" RETURNING {_STATE_COLUMNS}",
            {"name": name, "owner": owner, "ttl": ttl})
        return None if row is None else _state(row)

    async def advance_hook(
        self, name: str, owner: str, cursor: EventPosition, delivered: int
    ) -> bool:
        n = await self.db.execute(
            f"UPDATE hooks SET {_FORWARD}, delivered = delivered + %(delivered)s,"
            f" last_error = '', failing_since = NULL WHERE {_HELD}",
            {**_at(cursor), "delivered": delivered, "name": name, "owner": owner})
        return n == 1

    async def fail_hook(self, name: str, owner: str, error: str, first_failed: float) -> bool:
        n = await self.db.execute(
            "UPDATE hooks SET last_error = %(error)s, failing_since = %(since)s"
            f" WHERE {_HELD}",
            {"error": error, "since": first_failed, "name": name, "owner": owner})
        return n == 1

    async def release_hook(self, name: str, owner: str) -> None:
        await self.db.execute(
            "UPDATE hooks SET owner = '', lease_until = 0 WHERE name = %s AND owner = %s",
            (name, owner))

    async def hook_states(self) -> list[HookState]:
        rows = await self.db.fetchall(f"SELECT {_STATE_COLUMNS} FROM hooks ORDER BY name")
        return [_state(r) for r in rows]

    async def dead_letter(self, name: str, owner: str, letter: DeadLetter) -> bool:
        # one statement: the letter is kept only if the fenced move happened. The batch is
        # given up on, so nothing is failing any more (its error stays shown).
        row = await self.db.fetchone(
            f"WITH moved AS (UPDATE hooks SET {_FORWARD}, failing_since = NULL"
            f" WHERE {_HELD} RETURNING name)"
            " INSERT INTO dead_letters (hook, after_txid, after_id, upto_txid, upto_id,"
            " events, error, first_failed, at)"
            " SELECT name, %(after_txid)s::text::xid8, %(after_id)s, %(txid)s::text::xid8,"
            " %(id)s, %(events)s, %(error)s, %(first_failed)s, %(at)s FROM moved"
            " RETURNING id",
            {**_at(letter.upto), "name": name, "owner": owner,
             "after_txid": str(letter.after.txid), "after_id": letter.after.id,
             "events": letter.events, "error": letter.error,
             "first_failed": letter.first_failed, "at": letter.at})
        return row is not None

    async def dead_letters(self, name: str | None = None) -> list[DeadLetter]:
        if name is None:
            rows = await self.db.fetchall(f"{_LETTER} ORDER BY id")
        else:
            rows = await self.db.fetchall(f"{_LETTER} WHERE hook = %s ORDER BY id", (name,))
        return [_letter(r) for r in rows]

    async def drop_dead_letters(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        await self.db.execute("DELETE FROM dead_letters WHERE id = ANY(%s::bigint[])",
                              (list(ids),))
