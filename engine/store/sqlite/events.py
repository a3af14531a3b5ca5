"""The event record (EventStore), and the one way every role writes to it and to the
report counters (``write_tally``, in the writer's transaction)."""

from __future__ import annotations

import sqlite3

from engine.store.base import EventRow
from engine.store.counters import COUNTS, Tally, on_channels
from engine.store.sqlite.connection import SQLiteBase, run_channel

__all__ = ["SQLiteEvents", "add_counts", "write_tally"]

_INSERT_EVENT = (
    "INSERT INTO events (kind, at, run_id, seq, profile_id, phone, sender, error, url)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ADD_COUNTS = (
    f"INSERT INTO report_counts (run_id, sender, hour, {', '.join(COUNTS)})"
    f" VALUES (?, ?, ?, {', '.join('?' * len(COUNTS))})"
    " ON CONFLICT (run_id, sender, hour) DO UPDATE SET "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTS)
)
_ADD_REASONS = (
    "INSERT INTO report_reasons (run_id, sender, hour, reason, n) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id, sender, hour, reason) DO UPDATE SET n = n + excluded.n"
)
_ADD_URLS = (
    "INSERT INTO report_urls (run_id, url, hour, clicks, unique_clicks)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (run_id, url, hour) DO UPDATE SET"
    " clicks = clicks + excluded.clicks, unique_clicks = unique_clicks + excluded.unique_clicks"
)

#: An event's row, with its message's mailing and id from its run.
_SELECT = (
    "SELECT e.id, e.kind, e.at, r.mailing_id, e.run_id, e.seq, e.profile_id, e.phone,"
    " r.uid || '-' || e.seq, e.sender, e.error, e.url"
    " FROM events e LEFT JOIN runs r ON r.id = e.run_id"
)


def add_counts(c: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    """Add (run, sender, hour, *COUNTS) rows to the counters."""
    c.executemany(_ADD_COUNTS, rows)


def write_tally(c: sqlite3.Connection, tally: Tally) -> None:
    """Write what ``tally`` holds: its events, in order (each run's with the kinds of its
    channel: ``counters.on_channels``), and its counts."""
    if tally.events:
        on_channels(tally, lambda run_id: run_channel(c, run_id) or "sms")
        c.executemany(_INSERT_EVENT, tally.events)
    if tally.counts:
        add_counts(c, tally.count_rows())
    if tally.reasons:
        c.executemany(_ADD_REASONS, tally.reason_rows())
    if tally.urls:
        c.executemany(_ADD_URLS, tally.url_rows())


class SQLiteEvents(SQLiteBase):
    async def events(
        self, *, after: int = 0, limit: int = 1000, run_id: int | None = None
    ) -> list[EventRow]:
        if run_id is None:
            rows = self.conn.execute(
                f"{_SELECT} WHERE e.id > ? ORDER BY e.id LIMIT ?", (after, limit))
        else:
            rows = self.conn.execute(
                f"{_SELECT} WHERE e.run_id = ? AND e.id > ? ORDER BY e.id LIMIT ?",
                (run_id, after, limit))
        return [EventRow._make(r) for r in rows]
