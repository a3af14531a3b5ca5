"""The PostgreSQL schema's migrations, applied in order; ``herald_schema`` keeps the
number applied. The first is each role module's ``DDL``, in dependency order; later ones
add what later issues need (a database made by an older Herald migrates on open)."""

from __future__ import annotations

from engine.store.postgres import (
    cluster,
    gallery,
    journal,
    policy,
    profiles,
    receipts,
    runs,
    segments,
    subscriptions,
    suppression,
    tokens,
    triggers,
)

__all__ = ["MIGRATIONS"]

MIGRATIONS: list[str] = [
    "\n".join(
        m.DDL
        for m in (profiles, subscriptions, suppression, segments, runs, journal, receipts,
                  policy, triggers, tokens, gallery)
    ),
    # 2: cluster runs' chunks and the workers (issue 12)
    cluster.DDL,
]
