"""Message history for sending policies (PolicyStore).

The history is written by ``reserve`` (journal.py), in the transaction that reserves the
messages; this module owns its tables and reads them. A ``contact`` policy counts per
address: an SMS run's phones in ``history_contact`` (as integers), an email run's
addresses in ``history_address``.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.core.policy import Policy, first_day
from engine.store.postgres.connection import PgBase

__all__ = ["ADDRESS_DDL", "DDL", "PgPolicy"]

#: This role's tables, in the first migration (``schema.py``).
DDL = """
CREATE TABLE history_profile (
    profile_id bigint NOT NULL,
    day integer NOT NULL,
    resource_id bigint NOT NULL,
    n integer NOT NULL,
    PRIMARY KEY (profile_id, day, resource_id)
);
-- phone: the E.164 number's digits, as an integer.
CREATE TABLE history_contact (
    phone bigint NOT NULL,
    day integer NOT NULL,
    n integer NOT NULL,
    PRIMARY KEY (phone, day)
);
"""
#: Migration 10 (issue 19): an email run's history per address (normalised).
ADDRESS_DDL = """
CREATE TABLE history_address (
    address text NOT NULL,
    day integer NOT NULL,
    n integer NOT NULL,
    PRIMARY KEY (address, day)
);
"""


def _phone_digits(key: int | str) -> int | None:
    """An E.164 key's digits as ``history_contact`` keeps them (None: not a phone)."""
    text = str(key)
    digits = text[1:]
    if text[:1] == "+" and digits.isascii() and digits.isdigit() and len(digits) <= 18:
        return int(digits)
    return None


class PgPolicy(PgBase):
    async def policy_counts(
        self, policy: Policy, resource_id: int, keys: Sequence[int | str], now: float,
        *, channel_resources: Sequence[int] | None = None,
    ) -> dict[int | str, int]:
        if not keys:
            return {}
        day = first_day(policy, now)
        if policy.key == "phone":
            # the keys are the channel's addresses: E.164 phones, or emails
            phones = [d for d in map(_phone_digits, keys) if d is not None]
            addresses = [str(k) for k in keys if _phone_digits(k) is None]
            rows = await self.db.fetchall(
                "SELECT '+' || phone, sum(n) FROM history_contact WHERE day >= %s"
                " AND phone = ANY(%s::bigint[]) GROUP BY phone"
                " UNION ALL SELECT address, sum(n) FROM history_address WHERE day >= %s"
                " AND address = ANY(%s::text[]) GROUP BY address",
                (day, phones, day, addresses),
            )
            return {str(p): int(n) for p, n in rows}
        resources: list[int] | None = None
        if policy.scope == "profile_resource":
            resources = [resource_id]
        elif policy.scope == "profile_channel" and channel_resources is not None:
            resources = [int(r) for r in channel_resources]
        if resources is not None:
            rows = await self.db.fetchall(
                "SELECT profile_id, sum(n) FROM history_profile WHERE day >= %s"
                " AND profile_id = ANY(%s::bigint[]) AND resource_id = ANY(%s::bigint[])"
                " GROUP BY profile_id",
                (day, [int(k) for k in keys], resources),
            )
        else:
            rows = await self.db.fetchall(
                "SELECT profile_id, sum(n) FROM history_profile WHERE day >= %s"
                " AND profile_id = ANY(%s::bigint[]) GROUP BY profile_id",
                (day, [int(k) for k in keys]),
            )
        return {int(p): int(n) for p, n in rows}
