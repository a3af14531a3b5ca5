"""What every PostgreSQL role module shares: the pool and the open store's caches."""

from __future__ import annotations

from engine.store.postgres.db import Database

__all__ = ["AUDIENCE_COLUMNS", "PICK_SUBSCRIPTION", "PgBase"]

#: Joins each profile ``p`` to ``s``, its highest-priority active SMS subscription to the
#: resource bound at this ``%s`` (all NULL if it has none).
PICK_SUBSCRIPTION = (
    "LEFT JOIN LATERAL (SELECT phone, fields FROM subscriptions"
    " WHERE profile_id = p.id AND resource_id = %s AND channel = 'sms'"
    " AND status = 'subscribed' ORDER BY priority DESC, id LIMIT 1) s ON true"
)

#: An ``AudienceRow``'s columns, fields as JSON text (decoded lazily by the renderer).
AUDIENCE_COLUMNS = "p.id, p.fields::text, s.phone, s.fields::text"


class PgBase:
    """The state the role mixins of ``PostgresStore`` share.

    Each method runs in one transaction (``async with self.db.transaction() as tx``) and
    awaits the driver inside it: other tasks run meanwhile, so nothing may assume two
    calls are atomic together. The caches hold what never changes once written."""

    db: Database
    #: The database's URL, without its password.
    url: str

    def __init__(self, db: Database, url: str) -> None:
        self.db = db
        self.url = url
        #: resource name -> id (resources are never renamed nor dropped).
        self._resources: dict[str, int] = {}
        #: run id -> the suppression lists that apply to it (cleared on attach).
        self._run_lists: dict[int, list[int]] = {}
        #: run id -> its mailing's resource id.
        self._run_resource: dict[int, int] = {}
        self._run_test: dict[int, bool] = {}
        #: the tracking domain's secret, once read (it never changes).
        self._tracking_secret: bytes | None = None
