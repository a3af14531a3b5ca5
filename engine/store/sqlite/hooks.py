"""The action hooks' outbox (HookStore): a cursor and a lease per hook over the event
record, and the batches given up on (dead letters).

SQLite has one writer at a time and an event's id is its rowid, given at insert under the
write lock: ids grow in commit order, so a hook's cursor is an id (``txid`` is always 0)
and a reader paging by id never passes an event that commits later. Leases are on this
machine's clock (``time.time()``); every process on the file shares it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from engine.store.base import DeadLetter, EventPosition, HookEvent, HookState
from engine.store.hook_rows import EVENT_JOINS
from engine.store.sqlite.connection import SQLiteBase

__all__ = ["SQLiteHooks"]

#: An event with what a hook's message says of it: its run's mailing, test flag and
#: message id, the mailing's resource (name and id), the database (an import's own, else
#: the mailing's, else the profile's for an event with no message) and the trigger call's
#: ``custom_data`` (indexed where it is given).
_SELECT = (
    "SELECT e.id, e.kind, e.at, coalesce(json_extract(r.spec, '$.is_test'), 0),"
    " r.mailing_id, e.run_id, e.seq, r.uid || '-' || e.seq, e.profile_id,"
    " coalesce(e.database_id, m.database_id, p.database_id), d.name, res.id, m.resource,"
    " e.phone, e.sender, e.error, e.url, q.custom_data, e.data"
    + EVENT_JOINS
)
_STATE = ("SELECT name, cursor_txid, cursor_id, owner, lease_until, last_error, failing_since,"
          " delivered FROM hooks")
_LETTER = ("SELECT id, hook, after_txid, after_id, upto_txid, upto_id, events, error,"
           " first_failed, at FROM dead_letters")
#: Whose lease is still held: a write is fenced on it.
_HELD = "name = ? AND owner = ? AND lease_until > ?"


def _bytes(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def _event(r: Sequence[Any]) -> HookEvent:
    return HookEvent(
        EventPosition(0, int(r[0])), r[1], float(r[2]), bool(r[3]), r[4], r[5], r[6], r[7],
        r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15], r[16], _bytes(r[17]),
        _bytes(r[18]))


def _state(r: Sequence[Any]) -> HookState:
    return HookState(r[0], EventPosition(int(r[1]), int(r[2])), r[3], float(r[4]), r[5],
                     r[6], int(r[7]))


def _letter(r: Sequence[Any]) -> DeadLetter:
    return DeadLetter(int(r[0]), r[1], EventPosition(int(r[2]), int(r[3])),
                      EventPosition(int(r[4]), int(r[5])), int(r[6]), r[7], float(r[8]),
                      float(r[9]))


class SQLiteHooks(SQLiteBase):
    async def record_import_event(
        self, kind: str, at: float, database_id: int, data: bytes
    ) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT INTO events (kind, at, phone, database_id, data)"
                " VALUES (?, ?, '', ?, ?)", (kind, at, database_id, data.decode()))

    async def hook_events(
        self, after: EventPosition, limit: int, *, upto: EventPosition | None = None
    ) -> list[HookEvent]:
        if upto is None:
            rows = self.conn.execute(
                f"{_SELECT} WHERE e.id > ? ORDER BY e.id LIMIT ?", (after.id, limit))
        else:
            rows = self.conn.execute(
                f"{_SELECT} WHERE e.id > ? AND e.id <= ? ORDER BY e.id LIMIT ?",
                (after.id, upto.id, limit))
        return [_event(r) for r in rows]

    async def events_at(self, since: float) -> EventPosition:
        # a scan (events have no index on time: each would cost every write), for a
        # replay now and then
        (first,) = self.conn.execute(
            "SELECT min(id) FROM events WHERE at >= ?", (since,)).fetchone()
        if first is None:
            (end,) = self.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
            return EventPosition(0, int(end))
        return EventPosition(0, int(first) - 1)

    async def claim_hook(self, name: str, owner: str, ttl: float) -> HookState | None:
        now = time.time()
        with self._tx() as c:
            row = c.execute("SELECT owner, lease_until FROM hooks WHERE name = ?",
                            (name,)).fetchone()
            if row is None:  # a new hook delivers what happens from now on
                (end,) = c.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()
                c.execute(
                    "INSERT INTO hooks (name, cursor_txid, cursor_id, owner, lease_until)"
                    " VALUES (?, 0, ?, ?, ?)", (name, end, owner, now + ttl))
            elif row[0] in ("", owner) or row[1] <= now:
                c.execute("UPDATE hooks SET owner = ?, lease_until = ? WHERE name = ?",
                          (owner, now + ttl, name))
            else:
                return None
            return _state(c.execute(f"{_STATE} WHERE name = ?", (name,)).fetchone())

    async def advance_hook(
        self, name: str, owner: str, cursor: EventPosition, delivered: int
    ) -> bool:
        with self._tx() as c:
            cur = c.execute(
                "UPDATE hooks SET"
                " cursor_txid = CASE WHEN (?, ?) > (cursor_txid, cursor_id) THEN ?"
                " ELSE cursor_txid END,"
                " cursor_id = CASE WHEN (?, ?) > (cursor_txid, cursor_id) THEN ?"
                " ELSE cursor_id END,"
                " delivered = delivered + ?, last_error = '', failing_since = NULL"
                f" WHERE {_HELD}",
                (*cursor, cursor.txid, *cursor, cursor.id, delivered, name, owner,
                 time.time()))
            return cur.rowcount == 1

    async def fail_hook(self, name: str, owner: str, error: str, first_failed: float) -> bool:
        with self._tx() as c:
            cur = c.execute(
                f"UPDATE hooks SET last_error = ?, failing_since = ? WHERE {_HELD}",
                (error, first_failed, name, owner, time.time()))
            return cur.rowcount == 1

    async def release_hook(self, name: str, owner: str) -> None:
        with self._tx() as c:
            c.execute("UPDATE hooks SET owner = '', lease_until = 0"
                      " WHERE name = ? AND owner = ?", (name, owner))

    async def hook_states(self) -> list[HookState]:
        return [_state(r) for r in self.conn.execute(f"{_STATE} ORDER BY name")]

    async def dead_letter(self, name: str, owner: str, letter: DeadLetter) -> bool:
        upto = letter.upto
        with self._tx() as c:
            # the batch is given up on: nothing is failing any more (its error stays shown)
            cur = c.execute(
                "UPDATE hooks SET"
                " cursor_txid = CASE WHEN (?, ?) > (cursor_txid, cursor_id) THEN ?"
                " ELSE cursor_txid END,"
                " cursor_id = CASE WHEN (?, ?) > (cursor_txid, cursor_id) THEN ?"
                " ELSE cursor_id END,"
                f" failing_since = NULL WHERE {_HELD}",
                (*upto, upto.txid, *upto, upto.id, name, owner, time.time()))
            if cur.rowcount != 1:
                return False
            c.execute(
                "INSERT INTO dead_letters (hook, after_txid, after_id, upto_txid, upto_id,"
                " events, error, first_failed, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, *letter.after, *upto, letter.events, letter.error,
                 letter.first_failed, letter.at))
            return True

    async def dead_letters(self, name: str | None = None) -> list[DeadLetter]:
        if name is None:
            rows = self.conn.execute(f"{_LETTER} ORDER BY id")
        else:
            rows = self.conn.execute(f"{_LETTER} WHERE hook = ? ORDER BY id", (name,))
        return [_letter(r) for r in rows]

    async def drop_dead_letters(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._tx() as c:
            c.executemany("DELETE FROM dead_letters WHERE id = ?", [(i,) for i in ids])
