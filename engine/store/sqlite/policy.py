"""The message history sending policies count (PolicyStore)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any

import msgspec

from engine.core.policy import Policy, first_day, utc_day
from engine.store.sqlite.connection import SQLiteBase

__all__ = ["SQLitePolicy", "count_sent", "is_address"]

_json = msgspec.json.Encoder()


def count_sent(c: sqlite3.Connection, resource_id: int, sent: Sequence[tuple[int, str]]) -> None:
    """Count (profile id, phone) messages in today's history, for sending policies.

    Counted when reserved, in the transaction that reserves them, so that a message
    still at its gateway counts too: a policy never lets one through twice. A message
    that then fails still counts (erring on the side of sending less)."""
    day = utc_day(time.time())
    # one statement per batch: binding a row at a time cost as much as the writes
    c.execute(
        f"INSERT INTO history_profile (profile_id, day, resource_id, n)"
        f" SELECT value, {day}, {int(resource_id)}, 1 FROM json_each(?) WHERE true"
        " ON CONFLICT DO UPDATE SET n = n + 1",
        (_json.encode([p for p, _ in sent]),),
    )
    # the contact: an E.164 phone as an integer; an email run's address as text
    phones = [int(phone[1:]) for _, phone in sent if not is_address(phone)]
    if phones:
        c.execute(
            f"INSERT INTO history_contact (phone, day, n)"
            f" SELECT value, {day}, 1 FROM json_each(?) WHERE true"
            " ON CONFLICT DO UPDATE SET n = n + 1",
            (_json.encode(phones),),
        )
    addresses = [address for _, address in sent if is_address(address)]
    if addresses:
        c.execute(
            f"INSERT INTO history_address (address, day, n)"
            f" SELECT value, {day}, 1 FROM json_each(?) WHERE true"
            " ON CONFLICT DO UPDATE SET n = n + 1",
            (_json.encode(addresses),),
        )


def is_address(contact: str) -> bool:
    """Whether a contact is an email address (else an E.164 phone)."""
    return "@" in contact


class SQLitePolicy(SQLiteBase):
    async def policy_counts(
        self, policy: Policy, resource_id: int, keys: Sequence[int | str], now: float,
        *, channel_resources: Sequence[int] | None = None,
    ) -> dict[int | str, int]:
        """Messages counted under ``policy`` in its window ending today, per profile id
        (or per E.164 phone, or an email run's address, for ``contact`` scope), for the
        keys that have any."""
        day = first_day(policy, now)
        if policy.key == "phone":  # an email run's keys are its addresses
            phones = [int(str(k)[1:]) for k in keys if not is_address(str(k))]
            addresses = [str(k) for k in keys if is_address(str(k))]
            out: dict[int | str, int] = {}
            if phones:
                out.update((f"+{p}", int(n)) for p, n in self.conn.execute(
                    "SELECT phone, sum(n) FROM history_contact WHERE day >= ? AND phone IN"
                    " (SELECT value FROM json_each(?)) GROUP BY phone",
                    (day, _json.encode(phones)),
                ))
            if addresses:
                out.update((str(a), int(n)) for a, n in self.conn.execute(
                    "SELECT address, sum(n) FROM history_address WHERE day >= ? AND address IN"
                    " (SELECT value FROM json_each(?)) GROUP BY address",
                    (day, _json.encode(addresses)),
                ))
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
