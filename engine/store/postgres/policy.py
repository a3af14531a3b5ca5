"""Message history for sending policies (PolicyStore).

The history is written by ``reserve`` (journal.py), in the transaction that reserves the
messages; this module owns its tables and reads them.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.core.policy import Policy, first_day
from engine.store.postgres.connection import PgBase

__all__ = ["DDL", "PgPolicy"]

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


class PgPolicy(PgBase):
    async def policy_counts(
        self, policy: Policy, resource_id: int, keys: Sequence[int | str], now: float
    ) -> dict[int | str, int]:
        if not keys:
            return {}
        day = first_day(policy, now)
        if policy.key == "phone":
            rows = await self.db.fetchall(
                "SELECT phone, sum(n) FROM history_contact WHERE day >= %s"
                " AND phone = ANY(%s::bigint[]) GROUP BY phone",
                (day, [int(str(k)[1:]) for k in keys]),
            )
            return {f"+{p}": int(n) for p, n in rows}
        if policy.scope == "profile_resource":
            rows = await self.db.fetchall(
                "SELECT profile_id, sum(n) FROM history_profile WHERE day >= %s"
                " AND profile_id = ANY(%s::bigint[]) AND resource_id = %s GROUP BY profile_id",
                (day, [int(k) for k in keys], resource_id),
            )
        else:
            rows = await self.db.fetchall(
                "SELECT profile_id, sum(n) FROM history_profile WHERE day >= %s"
                " AND profile_id = ANY(%s::bigint[]) GROUP BY profile_id",
                (day, [int(k) for k in keys]),
            )
        return {int(p): int(n) for p, n in rows}
