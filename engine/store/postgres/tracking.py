"""Short links, clicks and unsubscribes from messages (TrackingStore).

A run's links are made once per seq_base (``ensure_links``, under an advisory lock of
the run, so workers asking at once agree); a data slot's URL is each message's own,
written by ``reserve(links=...)`` into ``data_links``. A click is kept when its (link, seq) names a
recipient of the link's run; a person's first click on that pair is the one whose
``first_clicks`` row its transaction inserted (``ON CONFLICT DO NOTHING RETURNING``), so
concurrent writers never both count it unique. Every change writes its events and counts
in its own transaction (``events.TALLY``, part ``events.AFTER``).

Unsubscribing works on the recipient's profile: its subscriptions of the run's channel
to the run's resource, or ``everywhere`` to every resource (a profile is in one database,
so these are the resources of its database). A profile subscribed with two phones is
unsubscribed from both: the person asked not to get the newsletter, whichever number it
goes to. An email run's events take the email kinds (``click``, ``unsub``...:
``PgBase._on_channels``).

An email's opens (``add_opens``) are kept like clicks, by (run, seq): a person's first
open of a message is the one whose ``first_opens`` row its transaction inserted.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any, Final

import psycopg

from engine.core.events import UNSUBSCRIBED, kind_for
from engine.errors import NotFound
from engine.store import counters
from engine.store.base import Click, ClickReport, LinkRow, Open, OpenReport, RecipientRef
from engine.store.counters import Tally, count_clicks, count_opens
from engine.store.postgres.connection import PgBase
from engine.store.postgres.events import TALLY, WRITE_TALLY, tally_params
from engine.store.postgres.journal import json_rows

__all__ = ["DDL", "OPENS_DDL", "PgTracking"]

#: This role's tables (migration 4).
DDL = """
CREATE TABLE tracking_secret (
    id integer PRIMARY KEY CHECK (id = 1),
    secret bytea NOT NULL
);
-- A run's short links: its template's URLs, then its data slots (url NULL), one set
-- per seq_base (codes carry seq - seq_base: a cluster chunk's seqs are large).
CREATE TABLE links (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id bigint NOT NULL REFERENCES runs(id),
    position integer NOT NULL,
    url text,
    seq_base bigint NOT NULL DEFAULT 0,
    UNIQUE (run_id, seq_base, position)
);
CREATE TABLE data_links (
    link_id bigint NOT NULL,
    seq bigint NOT NULL,
    url text NOT NULL,
    PRIMARY KEY (link_id, seq)
);
CREATE TABLE clicks (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    link_id bigint NOT NULL,
    seq bigint NOT NULL,
    at double precision NOT NULL,
    ip text,
    user_agent text,
    bot boolean NOT NULL
);
-- The (link, seq) pairs a person has clicked: the next click is not unique.
CREATE TABLE first_clicks (
    link_id bigint NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (link_id, seq)
);
"""
#: Migration 10 (issue 19): an email's opens, as clicks are kept, and the messages a
#: person has opened (the next open is not unique).
OPENS_DDL = """
CREATE TABLE opens (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id bigint NOT NULL,
    seq bigint NOT NULL,
    at double precision NOT NULL,
    ip text,
    user_agent text,
    bot boolean NOT NULL,
    prefetch boolean NOT NULL DEFAULT false
);
CREATE TABLE first_opens (
    run_id bigint NOT NULL,
    seq bigint NOT NULL,
    PRIMARY KEY (run_id, seq)
);
"""

#: The high half of the advisory lock under which a run's links are made.
_LINK_LOCKS: Final = 0x4C4E_4B53 << 32  # "LNKS"
_BIGINT: Final = range(-(2**63), 2**63)

#: Whether ``r``'s profile has an active subscription of ``m``'s channel to ``m``'s
#: resource (``r``: recipients, ``m``: mailings).
_SUBSCRIBED = (
    "EXISTS (SELECT 1 FROM subscriptions s"
    " WHERE s.profile_id = r.profile_id AND s.resource_id = (SELECT id FROM resources"
    " WHERE name = m.resource) AND s.channel = m.channel AND s.status = 'subscribed')"
)

#: Each (link id, seq) of the JSON pairs bound: the link's run, the URL (the link's, or
#: the message's for a data slot) and the recipient.
_RESOLVE = """
SELECT l.id, q.seq, l.run_id, coalesce(l.url, d.url), r.profile_id, r.phone, r.sender
FROM (SELECT DISTINCT (p->>0)::bigint AS link_id, (p->>1)::bigint AS seq
      FROM jsonb_array_elements(%s::jsonb) AS p) AS q
JOIN links l ON l.id = q.link_id
JOIN recipients r ON r.run_id = l.run_id AND r.seq = q.seq AND r.state <> 'skipped'
LEFT JOIN data_links d ON l.url IS NULL AND d.link_id = l.id AND d.seq = q.seq
"""

#: The pairs of people's clicks that no one clicked before (JSON pairs, in key order).
_FIRSTS = """
INSERT INTO first_clicks (link_id, seq)
SELECT (p->>0)::bigint, (p->>1)::bigint FROM jsonb_array_elements(%s::jsonb) AS p
ORDER BY 1, 2
ON CONFLICT DO NOTHING RETURNING link_id, seq
"""

#: The clicks kept (JSON rows: link, seq, at, ip, user agent, bot), with their tally.
_ADD_CLICKS = f"""
WITH {TALLY}
INSERT INTO clicks (link_id, seq, at, ip, user_agent, bot)
SELECT (k->>0)::bigint, (k->>1)::bigint, (k->>2)::float8, k->>3, k->>4, (k->>5)::boolean
FROM jsonb_array_elements(%(clicks)s::jsonb) AS k
"""

#: The recipient of (run, seq), if recorded: (profile, phone, sender, resource, database,
#: channel).
_RECIPIENT = (
    "SELECT r.profile_id, r.phone, r.sender, m.resource, m.database_id, m.channel"
    " FROM recipients r JOIN runs ru ON ru.id = r.run_id"
    " JOIN mailings m ON m.id = ru.mailing_id"
    " WHERE r.run_id = %s AND r.seq = %s AND r.state <> 'skipped'"
)

#: The last message sent to ``phone`` on one of ``resources``: one of those to the
#: profiles it has subscribed with, each found through its index.
_LAST_SENT = """
SELECT x.run_id, x.seq, x.sender FROM (
    SELECT DISTINCT profile_id FROM subscriptions
    WHERE phone = %(phone)s AND resource_id = ANY(%(resources)s::bigint[])
) AS p CROSS JOIN LATERAL (
    SELECT e.id, e.run_id, e.seq, e.sender FROM events e
    JOIN runs ru ON ru.id = e.run_id JOIN mailings m ON m.id = ru.mailing_id
    JOIN resources s ON s.name = m.resource
    WHERE e.profile_id = p.profile_id AND e.kind = 'send_sms' AND e.phone = %(phone)s
      AND s.id = ANY(%(resources)s::bigint[])
    ORDER BY e.id DESC LIMIT 1
) AS x
ORDER BY x.id DESC LIMIT 1
"""


#: Each (run, seq) of the JSON pairs bound that names a recipient: (run, seq, profile,
#: phone, sender).
_RESOLVE_OPENS = """
SELECT r.run_id, r.seq, r.profile_id, r.phone, r.sender
FROM (SELECT DISTINCT (p->>0)::bigint AS run_id, (p->>1)::bigint AS seq
      FROM jsonb_array_elements(%s::jsonb) AS p) AS q
JOIN recipients r ON r.run_id = q.run_id AND r.seq = q.seq AND r.state <> 'skipped'
"""

#: The messages of people's opens that no one opened before (JSON pairs, in key order).
_FIRST_OPENS = """
INSERT INTO first_opens (run_id, seq)
SELECT (p->>0)::bigint, (p->>1)::bigint FROM jsonb_array_elements(%s::jsonb) AS p
ORDER BY 1, 2
ON CONFLICT DO NOTHING RETURNING run_id, seq
"""

#: The opens kept (JSON rows: run, seq, at, ip, user agent, bot, prefetch), with their
#: tally.
_ADD_OPENS = f"""
WITH {TALLY}
INSERT INTO opens (run_id, seq, at, ip, user_agent, bot, prefetch)
SELECT (o->>0)::bigint, (o->>1)::bigint, (o->>2)::float8, o->>3, o->>4, (o->>5)::boolean,
       (o->>6)::boolean
FROM jsonb_array_elements(%(opens)s::jsonb) AS o
"""


def _link_row(row: Sequence[Any]) -> LinkRow:
    return LinkRow(int(row[0]), int(row[1]), row[2], int(row[3]))


class PgTracking(PgBase):
    async def tracking_secret(self) -> bytes:
        if self._tracking_secret is None:
            async with self.db.transaction() as tx:
                # a concurrent first call waits on this row, then reads the same secret
                await tx.execute(
                    "INSERT INTO tracking_secret (id, secret) VALUES (1, %s)"
                    " ON CONFLICT DO NOTHING", (secrets.token_bytes(32),))
                row = await tx.fetchone("SELECT secret FROM tracking_secret")
            assert row is not None
            self._tracking_secret = bytes(row[0])
        return self._tracking_secret

    async def ensure_links(
        self, run_id: int, urls: Sequence[str], slots: int, *, seq_base: int = 0
    ) -> list[LinkRow]:
        select = ("SELECT id, run_id, url, seq_base FROM links"
                  " WHERE run_id = %s AND seq_base = %s ORDER BY position")
        async with self.db.transaction() as tx:
            rows = await tx.fetchall(select, (run_id, seq_base))
            if rows or not (urls or slots):
                return [_link_row(r) for r in rows]
            # per run (the low half of its id), whatever the seq_base: makers are rare
            # and brief, so that two chunks of a run wait on each other costs nothing
            await tx.execute("SELECT pg_advisory_xact_lock(%s)",
                             (_LINK_LOCKS | (run_id & 0xFFFF_FFFF),))
            try:
                # made by whoever got the lock first, whatever this call asks
                await tx.execute(
                    "INSERT INTO links (run_id, seq_base, position, url)"
                    " SELECT %s, %s, i - 1, u"
                    " FROM unnest(%s::text[]) WITH ORDINALITY AS t(u, i)"
                    " WHERE NOT EXISTS (SELECT 1 FROM links WHERE run_id = %s"
                    " AND seq_base = %s)",
                    (run_id, seq_base, [*urls, *[None] * slots], run_id, seq_base),
                )
            except psycopg.errors.ForeignKeyViolation:
                raise NotFound(f"no run {run_id}") from None
            rows = await tx.fetchall(select, (run_id, seq_base))
        return [_link_row(r) for r in rows]

    async def link(self, link_id: int) -> LinkRow | None:
        if link_id not in _BIGINT:
            return None
        row = await self.db.fetchone(
            "SELECT id, run_id, url, seq_base FROM links WHERE id = %s", (link_id,))
        return None if row is None else _link_row(row)

    async def data_link_url(self, link_id: int, seq: int) -> str | None:
        if link_id not in _BIGINT or seq not in _BIGINT:
            return None
        row = await self.db.fetchone(
            "SELECT url FROM data_links WHERE link_id = %s AND seq = %s", (link_id, seq))
        return None if row is None else str(row[0])

    async def add_clicks(self, clicks: Sequence[Click]) -> ClickReport:
        asked = [k for k in clicks if k.link_id in _BIGINT and k.seq in _BIGINT]
        if not asked:
            return ClickReport(0, 0, len(clicks))
        async with self.db.transaction() as tx:
            # (link, seq) -> [run id, url, profile id, phone, sender, clicked before]
            found: dict[tuple[int, int], list[Any]] = {}
            for link_id, seq, run_id, url, profile_id, phone, sender in await tx.fetchall(
                _RESOLVE, (json_rows([(k.link_id, k.seq) for k in asked]),)
            ):
                if url is not None:  # a data slot with no URL for this message
                    found[int(link_id), int(seq)] = [
                        int(run_id), url, int(profile_id), phone, sender, True]
            kept = [k for k in asked if (k.link_id, k.seq) in found]
            if not kept:
                return ClickReport(0, 0, len(clicks))
            people = sorted({(k.link_id, k.seq) for k in kept if not k.bot})
            if people:
                for link_id, seq in await tx.fetchall(_FIRSTS, (json_rows(people),)):
                    found[int(link_id), int(seq)][5] = False  # its first click is here
            tally, firsts = count_clicks(kept, found)
            await self._on_channels(tx, tally)
            await tx.execute(_ADD_CLICKS, {
                **tally_params(tally),
                "clicks": json_rows([(k.link_id, k.seq, k.at, k.ip, k.user_agent, k.bot)
                                     for k in kept]),
            })
        return ClickReport(len(kept), len(firsts), len(clicks) - len(kept))

    async def add_opens(self, opens: Sequence[Open]) -> OpenReport:
        asked = [o for o in opens if o.run_id in _BIGINT and o.seq in _BIGINT]
        if not asked:
            return OpenReport(0, 0, len(opens))
        async with self.db.transaction() as tx:
            # (run, seq) -> [profile id, phone, sender, opened before]
            found: dict[tuple[int, int], list[Any]] = {
                (int(run_id), int(seq)): [int(profile_id), phone, sender, True]
                for run_id, seq, profile_id, phone, sender in await tx.fetchall(
                    _RESOLVE_OPENS, (json_rows([(o.run_id, o.seq) for o in asked]),))
            }
            kept = [o for o in asked if (o.run_id, o.seq) in found]
            if not kept:
                return OpenReport(0, 0, len(opens))
            people = sorted({(o.run_id, o.seq) for o in kept if not (o.bot or o.prefetch)})
            if people:
                for run_id, seq in await tx.fetchall(_FIRST_OPENS, (json_rows(people),)):
                    found[int(run_id), int(seq)][3] = False  # its first open is here
            tally, firsts = count_opens(kept, found)
            await tx.execute(_ADD_OPENS, {
                **tally_params(tally),
                "opens": json_rows([(o.run_id, o.seq, o.at, o.ip, o.user_agent, o.bot,
                                     o.prefetch) for o in kept]),
            })
        return OpenReport(len(kept), len(firsts), len(opens) - len(kept))

    async def recipient_ref(self, run_id: int, seq: int) -> RecipientRef | None:
        if run_id not in _BIGINT or seq not in _BIGINT:
            return None
        row = await self.db.fetchone(
            "SELECT r.run_id, r.seq, m.id, m.resource, r.profile_id, r.phone,"
            f" m.database_id, {_SUBSCRIBED} FROM recipients r"
            " JOIN runs ru ON ru.id = r.run_id JOIN mailings m ON m.id = ru.mailing_id"
            " WHERE r.run_id = %s AND r.seq = %s AND r.state <> 'skipped'",
            (run_id, seq),
        )
        if row is None:
            return None
        return RecipientRef(int(row[0]), int(row[1]), int(row[2]), row[3], int(row[4]),
                            row[5], int(row[6]), bool(row[7]))

    async def unsubscribe_recipient(
        self, run_id: int, seq: int, *, everywhere: bool = False, at: float
    ) -> int:
        if run_id not in _BIGINT or seq not in _BIGINT:
            return 0
        async with self.db.transaction() as tx:
            row = await tx.fetchone(_RECIPIENT, (run_id, seq))
            if row is None:
                return 0
            profile_id, phone, sender, resource, _, channel = row
            sql = ("UPDATE subscriptions SET status = 'unsubscribed', updated_at = %s"
                   " WHERE profile_id = %s AND channel = %s"
                   " AND status <> 'unsubscribed'")
            args: list[Any] = [at, profile_id, channel]
            if not everywhere:
                sql += " AND resource_id = (SELECT id FROM resources WHERE name = %s)"
                args.append(resource)
            changed = int(await tx.execute(sql, args))
            if changed:
                tally = Tally()
                tally.event(kind_for(UNSUBSCRIBED, channel), at, run_id, seq, int(profile_id),
                            phone, sender)
                tally.count(run_id, sender, at, counters.UNSUBSCRIBED)
                await tx.execute(WRITE_TALLY, tally_params(tally))
        return changed

    async def unsubscribe_reply(
        self, phone: str, resource_ids: Sequence[int], *, at: float
    ) -> int:
        resources = sorted({r for r in resource_ids if r in _BIGINT})
        if not resources:
            return 0
        async with self.db.transaction() as tx:
            changed = await tx.fetchall(
                "UPDATE subscriptions SET status = 'unsubscribed', updated_at = %s"
                " WHERE phone = %s AND channel = 'sms' AND status <> 'unsubscribed'"
                " AND resource_id = ANY(%s::bigint[]) RETURNING profile_id",
                (at, phone, resources),
            )
            if not changed:
                return 0
            # the last message sent to the phone on one of the resources, if any
            last = await tx.fetchone(_LAST_SENT, {"phone": phone, "resources": resources})
            tally = Tally()
            for profile_id in sorted({int(p) for (p,) in changed}):
                if last is None:
                    tally.event(UNSUBSCRIBED, at, None, None, profile_id, phone, None)
                else:
                    run_id, seq, sender = int(last[0]), int(last[1]), last[2]
                    tally.event(UNSUBSCRIBED, at, run_id, seq, profile_id, phone, sender)
                    tally.count(run_id, sender, at, counters.UNSUBSCRIBED)
            await tx.execute(WRITE_TALLY, tally_params(tally))
        return len(changed)
