"""The event record (EventStore), the report counters' tables, and the one way every role
writes to both: ``TALLY``, data-modifying ``WITH`` clauses that ride in the writer's own
statement (``tally_params`` binds an ``engine.store.counters.Tally``).

Counter rows are keyed by (run, sender, hour, ``part``). The part keeps writers that run
at once off each other's rows: a ``record`` counts under its lease's chunk (0 without a
lease; a chunk's records already take turns on its lease), everything after the send
(receipts, clicks, unsubscribes) under ``AFTER``. Rows are written in key order, so
writers of one part lock them in one order. Reports sum the parts.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from engine.store.base import EventRow
from engine.store.counters import COUNTS, EMAIL_COUNTS, Tally
from engine.store.postgres.connection import PgBase

__all__ = ["AFTER", "CONTROL_DDL", "DDL", "EMAIL_DDL", "TALLY", "WRITE_TALLY", "PgEvents",
           "tally_params"]

#: This role's tables (migration 4). A message's mailing and id come from its run.
#: The counters as migration 4 made them (later ones add columns: ``CONTROL_DDL``).
_COUNTS_OF_MIGRATION_4 = ("recipients", "sent", "delivered", "undelivered", "failed",
                          "unknown", "segments", "clicks", "unique_clicks", "unsubscribed")
#: Migration 8 (issue 14): profiles held out in control groups, counted.
CONTROL_DDL = "ALTER TABLE report_counts ADD COLUMN control bigint NOT NULL DEFAULT 0;"
#: Migration 10 (issue 19): the email channel's counters, and the index that finds the
#: last email sent to a profile (a bounce that names no message is credited to it).
EMAIL_DDL = "".join(
    f"ALTER TABLE report_counts ADD COLUMN {c} bigint NOT NULL DEFAULT 0;\n"
    for c in EMAIL_COUNTS
) + "CREATE INDEX events_sent_email ON events(profile_id, id) WHERE kind = 'send';\n"

DDL = f"""
CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind text NOT NULL,
    at double precision NOT NULL,
    run_id bigint,
    seq bigint,
    profile_id bigint,
    phone text NOT NULL,
    sender text,
    error text,
    url text
);
CREATE INDEX events_run ON events(run_id, id) WHERE run_id IS NOT NULL;
-- The messages sent to a profile: a STOP reply is credited to the last one sent to its
-- phone. (Profiles come in id order, so this index grows at a few places, unlike one on
-- phones, which cost a batch five times the rest of its events.)
CREATE INDEX events_sent_profile ON events(profile_id, id) WHERE kind = 'send_sms';
CREATE TABLE report_counts (
    run_id bigint NOT NULL,
    sender text NOT NULL,
    hour bigint NOT NULL,
    part integer NOT NULL,
    {", ".join(f"{c} bigint NOT NULL DEFAULT 0" for c in _COUNTS_OF_MIGRATION_4)},
    PRIMARY KEY (run_id, sender, hour, part)
);
CREATE INDEX report_counts_hour ON report_counts(hour);
CREATE TABLE report_reasons (
    run_id bigint NOT NULL,
    sender text NOT NULL,
    hour bigint NOT NULL,
    part integer NOT NULL,
    reason text NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (run_id, sender, hour, part, reason)
);
CREATE TABLE report_urls (
    run_id bigint NOT NULL,
    url text NOT NULL,
    hour bigint NOT NULL,
    clicks bigint NOT NULL,
    unique_clicks bigint NOT NULL,
    PRIMARY KEY (run_id, url, hour)
);
"""

#: The counters' part of what happens after the send (receipts, clicks, unsubscribes).
AFTER: Final = -1

#: ``WITH`` clauses (without ``WITH``) writing a tally's events, in order, and counts.
TALLY = f"""
t_events AS (
    INSERT INTO events (kind, at, run_id, seq, profile_id, phone, sender, error, url)
    SELECT e->>0, (e->>1)::float8, (e->>2)::bigint, (e->>3)::bigint, (e->>4)::bigint,
           e->>5, e->>6, e->>7, e->>8
    FROM jsonb_array_elements(%(t_events)s::jsonb) WITH ORDINALITY AS t(e, i) ORDER BY i
), t_counts AS (
    INSERT INTO report_counts (run_id, sender, hour, part, {", ".join(COUNTS)})
    SELECT (c->>0)::bigint, c->>1, (c->>2)::bigint, %(t_part)s,
           {", ".join(f"(c->>{i + 3})::bigint" for i in range(len(COUNTS)))}
    FROM jsonb_array_elements(%(t_counts)s::jsonb) WITH ORDINALITY AS t(c, i) ORDER BY i
    ON CONFLICT (run_id, sender, hour, part) DO UPDATE SET
        {", ".join(f"{c} = report_counts.{c} + excluded.{c}" for c in COUNTS)}
), t_reasons AS (
    INSERT INTO report_reasons (run_id, sender, hour, part, reason, n)
    SELECT (c->>0)::bigint, c->>1, (c->>2)::bigint, %(t_part)s, c->>3, (c->>4)::bigint
    FROM jsonb_array_elements(%(t_reasons)s::jsonb) WITH ORDINALITY AS t(c, i) ORDER BY i
    ON CONFLICT (run_id, sender, hour, part, reason) DO UPDATE
        SET n = report_reasons.n + excluded.n
), t_urls AS (
    INSERT INTO report_urls (run_id, url, hour, clicks, unique_clicks)
    SELECT (c->>0)::bigint, c->>1, (c->>2)::bigint, (c->>3)::bigint, (c->>4)::bigint
    FROM jsonb_array_elements(%(t_urls)s::jsonb) WITH ORDINALITY AS t(c, i) ORDER BY i
    ON CONFLICT (run_id, url, hour) DO UPDATE SET
        clicks = report_urls.clicks + excluded.clicks,
        unique_clicks = report_urls.unique_clicks + excluded.unique_clicks
)"""

#: ``TALLY`` as a statement of its own.
WRITE_TALLY = f"WITH {TALLY} SELECT 1"

#: An event's row, with its message's mailing and id from its run.
_SELECT = (
    "SELECT e.id, e.kind, e.at, r.mailing_id, e.run_id, e.seq, e.profile_id, e.phone,"
    " r.uid || '-' || e.seq, e.sender, e.error, e.url"
    " FROM events e LEFT JOIN runs r ON r.id = e.run_id"
)


_json = msgspec.json.Encoder()


def tally_params(tally: Tally, part: int = AFTER) -> dict[str, Any]:
    """``TALLY``'s parameters for ``tally``, counted under ``part`` (rows as JSON text,
    as ``journal.json_rows`` sends them)."""
    return {
        "t_events": _json.encode(tally.events).decode(),
        "t_counts": _json.encode(tally.count_rows()).decode(),
        "t_reasons": _json.encode(tally.reason_rows()).decode(),
        "t_urls": _json.encode(tally.url_rows()).decode(),
        "t_part": part,
    }


class PgEvents(PgBase):
    async def events(
        self, *, after: int = 0, limit: int = 1000, run_id: int | None = None
    ) -> list[EventRow]:
        if run_id is None:
            rows = await self.db.fetchall(
                f"{_SELECT} WHERE e.id > %s ORDER BY e.id LIMIT %s", (after, limit))
        else:
            rows = await self.db.fetchall(
                f"{_SELECT} WHERE e.run_id = %s AND e.id > %s ORDER BY e.id LIMIT %s",
                (run_id, after, limit))
        return [EventRow(int(r[0]), r[1], float(r[2]), r[3], r[4], r[5], r[6], r[7], r[8],
                         r[9], r[10], r[11]) for r in rows]
