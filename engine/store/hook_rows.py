"""What both stores' hooks role (``HookStore``) shares: how an event of the record is
joined to what its hook message says of it.

An event's database is the import's own (``events.database_id``), else its mailing's,
else its profile's (an event with no message: a STOP reply to none); its resource is its
mailing's, by the numeric id ``/api/v1/resources`` lists; ``custom_data`` is its trigger
call's. Each store selects its own columns over these joins (their casts differ).
"""

from __future__ import annotations

from typing import Final

__all__ = ["EVENT_JOINS"]

EVENT_JOINS: Final = (
    " FROM events e"
    " LEFT JOIN runs r ON r.id = e.run_id"
    " LEFT JOIN mailings m ON m.id = r.mailing_id"
    " LEFT JOIN resources res ON res.name = m.resource"
    " LEFT JOIN profiles p ON p.id = CASE WHEN e.run_id IS NULL THEN e.profile_id END"
    " LEFT JOIN databases d ON d.id = coalesce(e.database_id, m.database_id, p.database_id)"
    " LEFT JOIN trigger_queue q ON q.run_id = e.run_id AND q.seq = e.seq"
    " AND q.custom_data IS NOT NULL"
)
