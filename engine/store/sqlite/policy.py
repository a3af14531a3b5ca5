"""The message history sending policies count (PolicyStore)."""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import msgspec

from engine.core.policy import Policy, first_day, utc_day
from engine.store.sqlite.connection import SQLiteBase

__all__ = ["FOLD_AT", "RecentContacts", "SQLitePolicy", "contact_key", "count_sent",
           "fold_recent", "is_address"]

_json = msgspec.json.Encoder()


#: The recent contacts ``history_recent`` holds before they are folded into
#: ``history_contact`` and ``history_address`` (one fold per this many messages). A fold
#: writes each page of the per-contact table it touches once, so the larger this is
#: against the table's pages, the less each message costs; a contact-scope count reads
#: the recent rows into memory (``RecentContacts``), at most this many.
FOLD_AT = 65536


def count_sent(c: sqlite3.Connection, resource_id: int, sent: Sequence[tuple[int, str]]) -> None:
    """Count (profile id, phone) messages in today's history, for sending policies.

    Counted when reserved, in the transaction that reserves them, so that a message
    still at its gateway counts too: a policy never lets one through twice. A message
    that then fails still counts (erring on the side of sending less).

    The profile's count is upserted at once: profiles come in id order, so a batch's rows
    fill the same few B-tree pages. The contact's are not. A real audience meets its
    phones in no order, so a batch's upserts into ``history_contact`` touched a page each,
    and every commit wrote each of those pages to the WAL in full: about 4 KB a message.
    On 1M profiles whose phones are in no order (``bench/pipeline.py --shuffled``) that
    was 11.8 µs a message of the kernel's CPU against 1.7 µs now, and it grew with the
    audience. So the contacts are appended to ``history_recent``, in order, and every
    ``FOLD_AT`` of them are folded into the per-contact tables in one sorted pass, in the
    same transaction: a page is written once per fold, not once per batch. The counts
    read both (``SQLitePolicy.policy_counts``)."""
    day = utc_day(time.time())
    # one statement per batch: binding a row at a time cost as much as the writes
    c.execute(
        f"INSERT INTO history_profile (profile_id, day, resource_id, n)"
        f" SELECT value, {day}, {int(resource_id)}, 1 FROM json_each(?) WHERE true"
        " ON CONFLICT DO UPDATE SET n = n + 1",
        (_json.encode([p for p, _ in sent]),),
    )
    if not sent:
        return
    # the contact: an E.164 phone as an integer; an email run's address as text
    last = c.execute(
        f"INSERT INTO history_recent (contact, day) SELECT value, {day} FROM json_each(?)",
        (_json.encode([contact_key(contact) for _, contact in sent]),),
    ).lastrowid
    (first,) = c.execute("SELECT min(id) FROM history_recent").fetchone()
    if last is not None and first is not None and last - first + 1 >= FOLD_AT:
        fold_recent(c)


def contact_key(contact: str) -> int | str:
    """What the contact history keys ``contact`` by: an E.164 phone's digits as an
    integer, an email address as itself."""
    return contact if is_address(contact) else int(contact[1:])


def fold_recent(c: sqlite3.Connection) -> None:
    """Move ``history_recent`` into the per-contact counts (inside the caller's
    transaction): one upsert per contact and day, in key order."""
    for table, column, kind in (("history_contact", "phone", "integer"),
                                ("history_address", "address", "text")):
        c.execute(
            f"INSERT INTO {table} ({column}, day, n) SELECT contact, day, count(*)"
            f" FROM history_recent WHERE typeof(contact) = '{kind}' GROUP BY contact, day"
            f" ORDER BY contact, day ON CONFLICT DO UPDATE SET n = n + excluded.n"
        )
    c.execute("DELETE FROM history_recent")


def _plus(phone: Any) -> str:
    return f"+{phone}"


class RecentContacts:
    """One connection's view of ``history_recent``: its rows counted by (contact, day),
    read incrementally (only the rows after the last one read).

    A fold deletes every row and ids never repeat (AUTOINCREMENT), so when the first id
    is no longer the one this view started from, the rows it counted are in the
    per-contact tables now, and it starts again. ``refresh`` must run in the same read
    transaction as the read of those tables: then each row is counted in exactly one."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.after = 0
        self.counts: Counter[tuple[Any, int]] = Counter()
        self.days: set[int] = set()

    def refresh(self, c: sqlite3.Connection) -> None:
        (first,) = c.execute("SELECT min(id) FROM history_recent").fetchone()
        if first is None or first != self.first:
            self.first, self.after = first, 0
            self.counts.clear()
            self.days.clear()
            if first is None:
                return
        rows = c.execute("SELECT id, contact, day FROM history_recent WHERE id > ?"
                         " ORDER BY id", (self.after,)).fetchall()
        if rows:
            self.after = rows[-1][0]
            self.counts.update((contact, day) for _, contact, day in rows)
            self.days.update(day for _, _, day in rows)

    def count(self, contact: Any, since: int) -> int:
        """The recent messages to ``contact`` (its history key) on day ``since`` or
        later."""
        return sum(self.counts.get((contact, d), 0) for d in self.days if d >= since)


def is_address(contact: str) -> bool:
    """Whether a contact is an email address (else an E.164 phone)."""
    return "@" in contact


class SQLitePolicy(SQLiteBase):
    _recent: RecentContacts | None = None

    def _recent_contacts(self) -> RecentContacts:
        if self._recent is None:
            self._recent = RecentContacts()
        return self._recent

    async def policy_counts(
        self, policy: Policy, resource_id: int, keys: Sequence[int | str], now: float,
        *, channel_resources: Sequence[int] | None = None,
    ) -> dict[int | str, int]:
        """Messages counted under ``policy`` in its window ending today, per profile id
        (or per E.164 phone, or an email run's address, for ``contact`` scope), for the
        keys that have any."""
        day = first_day(policy, now)
        if policy.key == "phone":  # an email run's keys are its addresses
            contacts = [contact_key(str(k)) for k in keys]
            phones = [k for k in contacts if isinstance(k, int)]
            addresses = [k for k in contacts if isinstance(k, str)]
            out: dict[int | str, int] = {}
            # the folded counts and the recent contacts not folded yet, in one read
            # transaction (one snapshot: a fold moves rows from one to the other at once)
            recent = self._recent_contacts()
            begun = not self.conn.in_transaction
            if begun:
                self.conn.execute("BEGIN")
            try:
                recent.refresh(self.conn)
                for table, column, found, key in (
                    ("history_contact", "phone", phones, _plus),
                    ("history_address", "address", addresses, str),
                ):
                    if not found:
                        continue
                    folded = dict(self.conn.execute(
                        f"SELECT {column}, sum(n) FROM {table} WHERE day >= ? AND {column}"
                        f" IN (SELECT value FROM json_each(?)) GROUP BY {column}",
                        (day, _json.encode(found)),
                    ).fetchall())
                    for k in found:
                        n = folded.get(k, 0) + recent.count(k, day)
                        if n:
                            out[key(k)] = int(n)
            finally:
                if begun:
                    self.conn.execute("COMMIT")
            return out
        resource = ""
        args: tuple[Any, ...] = (day, _json.encode(list(keys)))
        if policy.scope == "profile_resource":
            resource, args = " AND resource_id = ?", (*args, resource_id)
        elif policy.scope == "profile_channel" and channel_resources is not None:
            resource = " AND resource_id IN (SELECT value FROM json_each(?))"
            args = (*args, _json.encode([int(r) for r in channel_resources]))
        rows = self.conn.execute(
            "SELECT profile_id, sum(n) FROM history_profile WHERE day >= ? AND profile_id IN"
            f" (SELECT value FROM json_each(?)){resource} GROUP BY profile_id",
            args,
        )
        return {int(p): int(n) for p, n in rows}
