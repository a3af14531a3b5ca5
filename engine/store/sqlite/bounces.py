"""Email bounces and complaints (``TrackingStore.apply_bounces``).

A bounce is credited to its message: the one its Herald id (``{run uid}-{seq}``) or its
gateway's id names, among the runs of the resources it came for, else the last message sent
to its address on one of them (``events_sent_email``). A hard bounce makes the address's
subscriptions to those resources ``hardbounced``, a complaint ``complainer`` (and the
address joins the global suppression list ``complaints``); a soft one changes no status.
Each (kind, address, message) is applied once (``bounces``): a report that comes twice adds
no second event and no second count.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from engine.core.emails import normalise_email
from engine.drivers import Bounce
from engine.errors import InputError
from engine.store.base import BounceReport
from engine.store.counters import (
    BOUNCE_KEEPS,
    BOUNCE_STATUS,
    COMPLAINTS_LIST,
    Tally,
    tally_bounce,
)
from engine.store.sqlite.connection import SQLiteBase, json
from engine.store.sqlite.events import write_tally

__all__ = ["SQLiteBounces"]

#: A recipient of the runs of the resources (JSON ids, the last ?) as a bounce is credited
#: to: run, seq, profile, address, sender.
_RECIPIENT = (
    "SELECT r.run_id, r.seq, r.profile_id, r.phone, r.sender FROM recipients r"
    " JOIN runs ru ON ru.id = r.run_id JOIN mailings m ON m.id = ru.mailing_id"
    " JOIN resources s ON s.name = m.resource"
)
_BY_ID = (f"{_RECIPIENT} WHERE ru.uid = ? AND r.seq = ? AND r.state != 'skipped'"
          " AND s.id IN (SELECT value FROM json_each(?))")
_BY_PROVIDER_ID = (f"{_RECIPIENT} WHERE r.provider_id = ? AND r.state != 'skipped'"
                   " AND s.id IN (SELECT value FROM json_each(?)) ORDER BY r.run_id DESC LIMIT 1")
#: The last message sent by email to profile ? at address ? on one of the resources.
_LAST_SENT = (
    "SELECT e.id, e.run_id, e.seq, e.sender FROM events e INDEXED BY events_sent_email"
    " JOIN runs ru ON ru.id = e.run_id JOIN mailings m ON m.id = ru.mailing_id"
    " JOIN resources s ON s.name = m.resource"
    " WHERE e.profile_id = ? AND e.kind = 'send' AND e.phone = ?"
    " AND s.id IN (SELECT value FROM json_each(?)) ORDER BY e.id DESC LIMIT 1"
)

#: A bounce's message: (run, seq, profile, address, sender).
Target = tuple[int, int, int, str, str | None]


def _by_id(c: sqlite3.Connection, herald_id: str, resources: bytes) -> Target | None:
    """The recipient a Herald message id (``{run uid}-{seq}``) names, if any."""
    uid, _, seq = herald_id.rpartition("-")
    if not uid or not seq.isascii() or not seq.isdigit() or len(seq) > 18:
        return None
    row = c.execute(_BY_ID, (uid, int(seq), resources)).fetchone()
    return None if row is None else (row[0], row[1], row[2], row[3], row[4])


def _target(
    c: sqlite3.Connection, bounce: Bounce, address: str, profiles: Sequence[int],
    resources: bytes,
) -> Target | None:
    """The message a bounce is credited to: the one its ids name, else the last one sent
    to ``address`` (by one of ``profiles``, the address's subscribers), if any."""
    if bounce.id:
        found = _by_id(c, bounce.id, resources)
        if found is not None:
            return found
    if bounce.provider_id:
        row = c.execute(_BY_PROVIDER_ID, (bounce.provider_id, resources)).fetchone()
        if row is not None:
            return (row[0], row[1], row[2], row[3], row[4])
    last = None
    for profile_id in profiles:
        row = c.execute(_LAST_SENT, (profile_id, address, resources)).fetchone()
        if row is not None and (last is None or row[0] > last[0]):
            last = (row, profile_id)
    if last is None:
        return None
    (_, run_id, seq, sender), profile_id = last
    return (run_id, seq, profile_id, address, sender)


class SQLiteBounces(SQLiteBase):
    async def apply_bounces(
        self, bounces: Sequence[Bounce], resource_ids: Sequence[int], *, at: float
    ) -> BounceReport:
        if not bounces:
            return BounceReport(0, 0, 0, 0)
        resources = json.encode(sorted(set(resource_ids)))
        hard = soft = complainers = unknown = 0
        complained: list[str] = []
        tally = Tally()
        with self._tx() as c:
            for bounce in bounces:
                try:
                    address = normalise_email(bounce.email)
                except InputError:
                    # a redacted complaint (no address) is still its message's
                    named = _target(c, bounce, "", (), resources) if not bounce.email \
                        else None
                    if named is None:
                        unknown += 1
                        continue
                    address = named[3]
                profiles = sorted({int(p) for (p,) in c.execute(
                    "SELECT profile_id FROM subscriptions WHERE phone = ?"
                    " AND resource_id IN (SELECT value FROM json_each(?))",
                    (address, resources))})
                target = _target(c, bounce, address, profiles, resources)
                if target is None and not profiles:
                    unknown += 1
                    continue
                run_id, seq = (target[0], target[1]) if target else (0, 0)
                if not c.execute(
                    "INSERT OR IGNORE INTO bounces (kind, address, run_id, seq, at)"
                    " VALUES (?, ?, ?, ?, ?)", (bounce.kind, address, run_id, seq, at),
                ).rowcount:
                    continue  # applied before
                changed = self._set_status(c, bounce, address, target, resources, at)
                if bounce.kind == "hard":
                    hard += changed
                elif bounce.kind == "complaint":
                    complainers += changed
                    complained.append(address)
                else:
                    soft += 1
                tally_bounce(tally, bounce.kind, bounce.error, address, target, profiles, at)
            write_tally(c, tally)
            if complained:
                self._suppress_complainers(c, complained, at)
        return BounceReport(hard, soft, complainers, unknown)

    @staticmethod
    def _set_status(
        c: sqlite3.Connection, bounce: Bounce, address: str, target: Target | None,
        resources: bytes, at: float,
    ) -> int:
        """Give the bounce's status to the subscriptions with its address (and its
        message's) to the resources; how many changed."""
        status = BOUNCE_STATUS.get(bounce.kind)
        if status is None:
            return 0
        addresses = sorted({address} | ({target[3]} if target else set()))
        keeps: Any = BOUNCE_KEEPS[bounce.kind]
        return c.execute(
            "UPDATE subscriptions SET status = ?, updated_at = ?"
            " WHERE phone IN (SELECT value FROM json_each(?))"
            " AND resource_id IN (SELECT value FROM json_each(?))"
            " AND status NOT IN (SELECT value FROM json_each(?))",
            (status, at, json.encode(addresses), resources, json.encode(list(keeps))),
        ).rowcount

    def _suppress_complainers(
        self, c: sqlite3.Connection, addresses: Sequence[str], at: float
    ) -> None:
        """Add complainers' addresses to the global list ``complaints`` (made if absent)."""
        made = c.execute(
            "INSERT OR IGNORE INTO suppression_lists (name, is_global, created_at)"
            " VALUES (?, 1, ?)", (COMPLAINTS_LIST, time.time())).rowcount
        (list_id,) = c.execute("SELECT id FROM suppression_lists WHERE name = ?",
                               (COMPLAINTS_LIST,)).fetchone()
        c.executemany(
            "INSERT OR IGNORE INTO suppressions (list_id, kind, value, added_at)"
            " VALUES (?, 'email', ?, ?)", [(list_id, a.lower(), at) for a in addresses])
        if made:
            self._run_lists.clear()  # a new global list applies to every run
