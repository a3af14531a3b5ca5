"""Email bounces and complaints (``TrackingStore.apply_bounces``), as on SQLite.

A bounce is credited to its message: the one its Herald id (``{run uid}-{seq}``) or its
gateway's id names, among the runs of the resources it came for, else the last email sent
to its address on one of them (``events_sent_email``, an index per profile, as a STOP
reply finds its SMS). A hard bounce makes the address's subscriptions to those resources
(and those of its message's address) ``hardbounced``, a complaint ``complainer`` (never a
complainer back to hardbounced: ``counters.BOUNCE_KEEPS``), and the address joins the
global suppression list ``complaints``; a soft one changes no status. Each (kind, address,
message) is applied once (``bounces``): a report that comes twice adds no second event
and no second count. A bounce of an address subscribed but sent nothing has an event per
subscriber that names no message and counts under no run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

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
from engine.store.postgres.connection import PgBase
from engine.store.postgres.db import Tx
from engine.store.postgres.events import WRITE_TALLY, tally_params

__all__ = ["DDL", "PgBounces"]

#: Migration 10 (issue 19): the bounces applied, one per (kind, address, message) (run
#: 0, seq 0: of no message).
DDL = """
CREATE TABLE bounces (
    kind text NOT NULL,
    address text NOT NULL,
    run_id bigint NOT NULL,
    seq bigint NOT NULL,
    at double precision NOT NULL,
    PRIMARY KEY (kind, address, run_id, seq)
);
"""

_BIGINT: Final = range(-(2**63), 2**63)

#: A recipient of the runs of the resources (``%(resources)s``) as a bounce is credited
#: to: run, seq, profile, address, sender.
_RECIPIENT = (
    "SELECT r.run_id, r.seq, r.profile_id, r.phone, r.sender FROM recipients r"
    " JOIN runs ru ON ru.id = r.run_id JOIN mailings m ON m.id = ru.mailing_id"
    " JOIN resources s ON s.name = m.resource"
)
_BY_ID = (f"{_RECIPIENT} WHERE ru.uid = %(uid)s AND r.seq = %(seq)s"
          " AND r.state <> 'skipped' AND s.id = ANY(%(resources)s::bigint[])")
_BY_PROVIDER_ID = (f"{_RECIPIENT} WHERE r.provider_id = %(provider_id)s"
                   " AND r.state <> 'skipped' AND s.id = ANY(%(resources)s::bigint[])"
                   " ORDER BY r.run_id DESC LIMIT 1")

#: The last email sent to ``address`` on one of ``resources`` by one of the profiles
#: subscribed with it, each found through its index: (run, seq, profile, sender).
_LAST_SENT = """
SELECT x.run_id, x.seq, x.profile_id, x.sender FROM (
    SELECT unnest(%(profiles)s::bigint[]) AS profile_id
) AS p CROSS JOIN LATERAL (
    SELECT e.id, e.run_id, e.seq, e.profile_id, e.sender FROM events e
    JOIN runs ru ON ru.id = e.run_id JOIN mailings m ON m.id = ru.mailing_id
    JOIN resources s ON s.name = m.resource
    WHERE e.profile_id = p.profile_id AND e.kind = 'send' AND e.phone = %(address)s
      AND s.id = ANY(%(resources)s::bigint[])
    ORDER BY e.id DESC LIMIT 1
) AS x
ORDER BY x.id DESC LIMIT 1
"""

#: The profiles with a subscription of the address to one of the resources.
_SUBSCRIBERS = """
SELECT DISTINCT profile_id FROM subscriptions
WHERE phone = %(address)s AND resource_id = ANY(%(resources)s::bigint[])
ORDER BY profile_id
"""

#: The subscriptions of the addresses to the resources that take a bounce's status.
_SET_STATUS = """
UPDATE subscriptions SET status = %(status)s, updated_at = %(at)s
WHERE phone = ANY(%(addresses)s::text[]) AND resource_id = ANY(%(resources)s::bigint[])
  AND status <> ALL(%(keeps)s::text[])
"""

#: Whether this bounce is new (its row inserted now).
_FIRST = """
INSERT INTO bounces (kind, address, run_id, seq, at) VALUES (%s, %s, %s, %s, %s)
ON CONFLICT DO NOTHING RETURNING 1
"""

#: A bounce's message: (run, seq, profile, address, sender).
Target = tuple[int, int, int, str, str | None]


def _message_id(raw: str) -> tuple[str, int] | None:
    """(run uid, seq) of a Herald message id ``{uid}-{seq}``; None if it is none."""
    uid, _, seq = raw.rpartition("-")
    if not uid or not seq.isascii() or not seq.isdigit() or int(seq) not in _BIGINT:
        return None
    return uid, int(seq)


def _target_of(row: Sequence[Any] | None) -> Target | None:
    return None if row is None else (int(row[0]), int(row[1]), int(row[2]), row[3], row[4])


async def _target(
    tx: Tx, bounce: Bounce, address: str, profiles: Sequence[int], resources: list[int],
) -> Target | None:
    """The message a bounce is credited to: the one its ids name, else the last one sent
    to ``address`` (by one of ``profiles``, the address's subscribers), if any."""
    named = _message_id(bounce.id) if bounce.id else None
    if named is not None:
        found = _target_of(await tx.fetchone(_BY_ID, {
            "uid": named[0], "seq": named[1], "resources": resources}))
        if found is not None:
            return found
    if bounce.provider_id:
        found = _target_of(await tx.fetchone(_BY_PROVIDER_ID, {
            "provider_id": bounce.provider_id, "resources": resources}))
        if found is not None:
            return found
    if not profiles:
        return None
    last = await tx.fetchone(_LAST_SENT, {
        "profiles": list(profiles), "address": address, "resources": resources})
    if last is None:
        return None
    return (int(last[0]), int(last[1]), int(last[2]), address, last[3])


class PgBounces(PgBase):
    async def apply_bounces(
        self, bounces: Sequence[Bounce], resource_ids: Sequence[int], *, at: float
    ) -> BounceReport:
        if not bounces:
            return BounceReport(0, 0, 0, 0)
        resources = sorted({r for r in resource_ids if r in _BIGINT})
        hard = soft = complainers = unknown = 0
        tally = Tally()
        async with self.db.transaction() as tx:
            for bounce in bounces:
                try:
                    address = normalise_email(bounce.email)
                except InputError:
                    # a redacted complaint (no address) is still its message's
                    named = None if bounce.email else await _target(
                        tx, bounce, "", [], resources)
                    if named is None:
                        unknown += 1
                        continue
                    address = named[3]
                args = {"address": address, "resources": resources}
                profiles = [int(r[0]) for r in await tx.fetchall(_SUBSCRIBERS, args)]
                target = await _target(tx, bounce, address, profiles, resources)
                if target is None and not profiles:
                    unknown += 1
                    continue
                run_id, seq = (target[0], target[1]) if target else (0, 0)
                if not await tx.fetchone(_FIRST, (bounce.kind, address, run_id, seq, at)):
                    continue  # applied before
                changed = 0
                status = BOUNCE_STATUS.get(bounce.kind)
                if status is not None:
                    changed = await tx.execute(_SET_STATUS, {
                        "status": status, "at": at, "resources": resources,
                        "addresses": sorted({address} | ({target[3]} if target else set())),
                        "keeps": list(BOUNCE_KEEPS[bounce.kind]),
                    })
                if bounce.kind == "hard":
                    hard += changed
                elif bounce.kind == "complaint":
                    complainers += changed
                    await self._suppress_complainer(tx, address, at)
                else:
                    soft += 1
                tally_bounce(tally, bounce.kind, bounce.error, address, target, profiles, at)
            if tally:
                await tx.execute(WRITE_TALLY, tally_params(tally))
        return BounceReport(hard, soft, complainers, unknown)

    async def _suppress_complainer(self, tx: Tx, address: str, at: float) -> None:
        """Put ``address`` on the global suppression list ``complaints`` (kind email),
        made if absent."""
        row = await tx.fetchone(
            "INSERT INTO suppression_lists (name, is_global, created_at)"
            " VALUES (%s, true, %s) ON CONFLICT (name) DO NOTHING RETURNING id",
            (COMPLAINTS_LIST, at),
        )
        if row is not None:  # a new list: it applies to runs already looked up
            self._run_lists.clear()
        await tx.execute(
            "INSERT INTO suppressions (list_id, kind, value, added_at)"
            " SELECT id, 'email', %s, %s FROM suppression_lists WHERE name = %s"
            " ON CONFLICT DO NOTHING",
            (address.lower(), at, COMPLAINTS_LIST),  # lists hold addresses lowercased
        )
