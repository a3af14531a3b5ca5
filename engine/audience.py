"""Who a mailing goes to: a profile database, or a segment of one. One place decides it,
for the CLI (``Herald.send``), the API and the service (``MailingService.create``).

The resource's ``databases`` (when it lists any) bound both: a database not among them is
refused, and so is a segment of one.
"""

from __future__ import annotations

from engine.config import Config
from engine.errors import InputError
from engine.store.base import Store
from engine.store.models import AudienceSource

__all__ = ["resolve_audience"]


async def resolve_audience(
    store: Store, config: Config, resource: str, *, database: str | None = None,
    segment: str | None = None, keys: tuple[str, str] = ("database", "segment"),
) -> AudienceSource:
    """The audience of a mailing of ``resource``: exactly one of ``database`` and
    ``segment``. InputError (NotFound for an unknown database or segment) names the
    field at fault by ``keys`` (the caller's names for the two: ``--database`` on the
    command line)."""
    db_key, segment_key = keys
    res = config.resources.get(resource)
    if res is None:
        known = ", ".join(sorted(config.resources)) or "none"
        raise InputError(f"resource: no resource {resource!r} in the config (configured: {known})")
    if (database is None) == (segment is None):
        raise InputError(f"{db_key}: give exactly one audience: {db_key} or {segment_key}")
    allowed = list(res.databases)
    if segment is not None:
        segment_id, database_id = await store.segment_id(segment)
        if allowed:
            row = await store.segment_by_id(segment_id)
            if row.database not in allowed:
                raise InputError(
                    f"{segment_key}: segment {segment!r} is of database {row.database!r},"
                    f" which is not one of resource {resource!r}'s databases"
                    f" ({', '.join(allowed)})"
                )
        return AudienceSource("segment", database_id, segment_id, channel=res.channel)
    assert database is not None
    if allowed and database not in allowed:
        raise InputError(
            f"{db_key}: database {database!r} is not one of resource {resource!r}'s"
            f" databases ({', '.join(allowed)})"
        )
    return AudienceSource("list", await store.database_id(database), channel=res.channel)
