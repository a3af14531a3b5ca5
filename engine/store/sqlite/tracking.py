"""Short links, clicks and unsubscribes from messages (TrackingStore).

A run's links are made once per seq_base (``ensure_links``); a data slot's URL is each
message's own, written by ``reserve(links=...)`` into ``data_links``. A click is kept when
its (link, seq) names a recipient of the link's run; a person's first click on that pair
is marked in ``first_clicks``, which is what makes it unique. Every change writes its events and
counts in its own transaction (``events.write_tally``).

Unsubscribing works on the recipient's profile: its subscriptions of the run's channel to
the run's resource, or ``everywhere`` to every resource (a profile is in one database, so
these are the resources of its database). A profile subscribed with two phones is
unsubscribed from both: the person asked not to get the newsletter, whichever number it
goes to. A STOP reply is SMS's only.

An email run's opens are kept like clicks (``first_opens`` makes a person's first open of a
message unique). Bounces and complaints change the subscriptions with their address; each
(kind, address, message) is applied once (``bounces``), so a report that comes twice
changes nothing more.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Sequence
from typing import Any

from engine.core.events import UNSUBSCRIBED
from engine.errors import NotFound
from engine.store import counters
from engine.store.base import Click, ClickReport, LinkRow, Open, OpenReport, RecipientRef
from engine.store.counters import Tally, count_clicks, count_opens
from engine.store.sqlite.connection import SQLiteBase, json
from engine.store.sqlite.events import write_tally

__all__ = ["SQLiteTracking"]

#: Whether ``r``'s profile has an active subscription of ``m``'s channel to ``m``'s
#: resource (``r``: recipients, ``m``: mailings).
_SUBSCRIBED = (
    "EXISTS (SELECT 1 FROM subscriptions s"
    " WHERE s.profile_id = r.profile_id AND s.resource_id = (SELECT id FROM resources"
    " WHERE name = m.resource) AND s.channel = m.channel AND s.status = 'subscribed')"
)

#: Each (link id, seq) of the JSON pairs bound: the link's run, the URL (the link's, or
#: the message's for a data slot), the recipient, and whether a person clicked it before.
_RESOLVE = """
SELECT l.id, q.seq, l.run_id, coalesce(l.url, d.url), r.profile_id, r.phone, r.sender,
    EXISTS (SELECT 1 FROM first_clicks f WHERE f.link_id = l.id AND f.seq = q.seq)
FROM (SELECT DISTINCT json_extract(value, '$[0]') AS link_id,
             json_extract(value, '$[1]') AS seq FROM json_each(?)) AS q
JOIN links l ON l.id = q.link_id
JOIN recipients r ON r.run_id = l.run_id AND r.seq = q.seq AND r.state != 'skipped'
LEFT JOIN data_links d ON l.url IS NULL AND d.link_id = l.id AND d.seq = q.seq
"""

#: Each (run, seq) of the JSON pairs bound that names a recipient: its profile, address
#: and sender, and whether a person opened it before.
_RESOLVE_OPENS = """
SELECT r.run_id, r.seq, r.profile_id, r.phone, r.sender,
    EXISTS (SELECT 1 FROM first_opens f WHERE f.run_id = r.run_id AND f.seq = r.seq)
FROM (SELECT json_extract(value, '$[0]') AS run_id,
             json_extract(value, '$[1]') AS seq FROM json_each(?)) AS q
JOIN recipients r ON r.run_id = q.run_id AND r.seq = q.seq AND r.state != 'skipped'
"""

#: The last message sent to profile ? at phone ? on one of the resources (JSON ids).
_LAST_SENT = (
    "SELECT e.id, e.run_id, e.seq, e.sender FROM events e INDEXED BY events_sent_profile"
    " JOIN runs ru ON ru.id = e.run_id JOIN mailings m ON m.id = ru.mailing_id"
    " JOIN resources s ON s.name = m.resource"
    " WHERE e.profile_id = ? AND e.kind = 'send_sms' AND e.phone = ?"
    " AND s.id IN (SELECT value FROM json_each(?)) ORDER BY e.id DESC LIMIT 1"
)


class SQLiteTracking(SQLiteBase):
    async def tracking_secret(self) -> bytes:
        if self._tracking_secret is None:
            with self._tx() as c:
                c.execute("INSERT OR IGNORE INTO tracking_secret (id, secret) VALUES (1, ?)",
                          (secrets.token_bytes(32),))
                (secret,) = c.execute("SELECT secret FROM tracking_secret").fetchone()
            self._tracking_secret = bytes(secret)
        return self._tracking_secret

    async def ensure_links(
        self, run_id: int, urls: Sequence[str], slots: int, *, seq_base: int = 0
    ) -> list[LinkRow]:
        select = ("SELECT id, run_id, url, seq_base FROM links"
                  " WHERE run_id = ? AND seq_base = ? ORDER BY position")
        with self._tx() as c:
            rows = c.execute(select, (run_id, seq_base)).fetchall()
            if not rows and (urls or slots):
                try:
                    c.executemany(
                        "INSERT INTO links (run_id, seq_base, position, url)"
                        " VALUES (?, ?, ?, ?)",
                        [(run_id, seq_base, i, url)
                         for i, url in enumerate([*urls, *[None] * slots])],
                    )
                except sqlite3.IntegrityError:
                    raise NotFound(f"no run {run_id}") from None
                rows = c.execute(select, (run_id, seq_base)).fetchall()
        return [LinkRow._make(r) for r in rows]

    async def link(self, link_id: int) -> LinkRow | None:
        row = self.conn.execute(
            "SELECT id, run_id, url, seq_base FROM links WHERE id = ?", (link_id,)).fetchone()
        return None if row is None else LinkRow._make(row)

    async def data_link_url(self, link_id: int, seq: int) -> str | None:
        row = self.conn.execute(
            "SELECT url FROM data_links WHERE link_id = ? AND seq = ?", (link_id, seq)
        ).fetchone()
        return None if row is None else str(row[0])

    async def add_clicks(self, clicks: Sequence[Click]) -> ClickReport:
        if not clicks:
            return ClickReport(0, 0, 0)
        with self._tx() as c:
            found: dict[tuple[int, int], list[Any]] = {}
            for link_id, seq, *rest in c.execute(
                _RESOLVE, (json.encode([(k.link_id, k.seq) for k in clicks]),)
            ):
                if rest[1] is not None:  # a data slot with no URL for this message
                    found[link_id, seq] = rest
            kept = [k for k in clicks if (k.link_id, k.seq) in found]
            c.executemany(
                "INSERT INTO clicks (link_id, seq, at, ip, user_agent, bot)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(k.link_id, k.seq, k.at, k.ip, k.user_agent, int(k.bot)) for k in kept],
            )
            tally, firsts = count_clicks(kept, found)
            c.executemany(
                "INSERT OR IGNORE INTO first_clicks (link_id, seq) VALUES (?, ?)", firsts)
            write_tally(c, tally)
        return ClickReport(len(kept), len(firsts), len(clicks) - len(kept))

    async def recipient_ref(self, run_id: int, seq: int) -> RecipientRef | None:
        row = self.conn.execute(
            "SELECT r.run_id, r.seq, m.id, m.resource, r.profile_id, r.phone,"
            f" m.database_id, {_SUBSCRIBED} FROM recipients r"
            " JOIN runs ru ON ru.id = r.run_id JOIN mailings m ON m.id = ru.mailing_id"
            " WHERE r.run_id = ? AND r.seq = ? AND r.state != 'skipped'",
            (run_id, seq),
        ).fetchone()
        if row is None:
            return None
        return RecipientRef(row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                            bool(row[7]))

    async def unsubscribe_recipient(
        self, run_id: int, seq: int, *, everywhere: bool = False, at: float
    ) -> int:
        with self._tx() as c:
            row = c.execute(
                "SELECT r.profile_id, r.phone, r.sender, m.resource, m.channel"
                " FROM recipients r JOIN runs ru ON ru.id = r.run_id"
                " JOIN mailings m ON m.id = ru.mailing_id"
                " WHERE r.run_id = ? AND r.seq = ? AND r.state != 'skipped'",
                (run_id, seq),
            ).fetchone()
            if row is None:
                return 0
            profile_id, phone, sender, resource, channel = row
            sql = ("UPDATE subscriptions SET status = 'unsubscribed', updated_at = ?"
                   " WHERE profile_id = ? AND channel = ?"
                   " AND status != 'unsubscribed'")
            args: list[Any] = [at, profile_id, channel]
            if not everywhere:
                sql += " AND resource_id = (SELECT id FROM resources WHERE name = ?)"
                args.append(resource)
            changed = c.execute(sql, args).rowcount
            if changed:
                tally = Tally()
                tally.event(UNSUBSCRIBED, at, run_id, seq, profile_id, phone, sender)
                tally.count(run_id, sender, at, counters.UNSUBSCRIBED)
                write_tally(c, tally)
        return changed

    async def unsubscribe_reply(
        self, phone: str, resource_ids: Sequence[int], *, at: float
    ) -> int:
        if not resource_ids:
            return 0
        resources = json.encode(sorted(set(resource_ids)))
        with self._tx() as c:
            changed = c.execute(
                "UPDATE subscriptions SET status = 'unsubscribed', updated_at = ?"
                " WHERE phone = ? AND channel = 'sms' AND status != 'unsubscribed'"
                " AND resource_id IN (SELECT value FROM json_each(?)) RETURNING profile_id",
                (at, phone, resources),
            ).fetchall()
            if not changed:
                return 0
            # the last message sent to the phone on one of the resources, if any: one
            # of the messages to the profiles it has subscribed with (by their index)
            last = None
            for (profile_id,) in c.execute(
                "SELECT DISTINCT profile_id FROM subscriptions WHERE phone = ?"
                " AND resource_id IN (SELECT value FROM json_each(?))", (phone, resources)
            ).fetchall():
                row = c.execute(_LAST_SENT, (profile_id, phone, resources)).fetchone()
                if row is not None and (last is None or row[0] > last[0]):
                    last = row
            tally = Tally()
            for profile_id in sorted({p for (p,) in changed}):
                if last is None:
                    tally.event(UNSUBSCRIBED, at, None, None, profile_id, phone, None)
                else:
                    _, run_id, seq, sender = last
                    tally.event(UNSUBSCRIBED, at, run_id, seq, profile_id, phone, sender)
                    tally.count(run_id, sender, at, counters.UNSUBSCRIBED)
            write_tally(c, tally)
        return len(changed)

    async def add_opens(self, opens: Sequence[Open]) -> OpenReport:
        if not opens:
            return OpenReport(0, 0, 0)
        with self._tx() as c:
            found: dict[tuple[int, int], list[Any]] = {}
            for run_id, seq, *rest in c.execute(_RESOLVE_OPENS, (
                json.encode(sorted({(o.run_id, o.seq) for o in opens})),
            )):
                found[run_id, seq] = rest
            kept = [o for o in opens if (o.run_id, o.seq) in found]
            c.executemany(
                "INSERT INTO opens (run_id, seq, at, ip, user_agent, bot, prefetch)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(o.run_id, o.seq, o.at, o.ip, o.user_agent, int(o.bot), int(o.prefetch))
                 for o in kept],
            )
            tally, firsts = count_opens(kept, found)
            c.executemany("INSERT OR IGNORE INTO first_opens (run_id, seq) VALUES (?, ?)",
                          firsts)
            write_tally(c, tally)
        return OpenReport(len(kept), len(firsts), len(opens) - len(kept))

