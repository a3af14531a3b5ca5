"""The PostgreSQL schema's migrations, applied in order; ``herald_schema`` keeps the
number applied. The first is each role module's ``DDL``, in dependency order; later ones
add what later issues need (a database made by an older Herald migrates on open)."""

from __future__ import annotations

from engine.store.postgres import (
    bounces,
    cluster,
    events,
    gallery,
    hooks,
    journal,
    policy,
    profiles,
    receipts,
    runs,
    segments,
    subscriptions,
    suppression,
    tokens,
    tracking,
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
    # 3: each chunk keeps its own counters (a run's are its row's plus its chunks'), so
    # workers reserving at once do not queue on the run's row lock
    "ALTER TABLE run_chunks ADD COLUMN counts jsonb NOT NULL DEFAULT '{}';",
    # 4: the tracking domain (links, clicks), the event record and the report counters
    # (issue 13)
    tracking.DDL + events.DDL,
    # 5: mailing kinds and schedules (issue 14): a mailing's options, state and next
    # launch; what each run is for (its spec)
    runs.KINDS_DDL,
    # 6: a launch's next steps (issue 14): the next test, wave or wait-then-winner, taken
    # by whichever scheduler runs next
    runs.STEPS_DDL,
    # 7: trigger calls held for their recipient's quiet hours (issue 14)
    triggers.HELD_DDL,
    # 8: profiles held out in control groups, in the report counters (issue 14)
    events.CONTROL_DDL,
    # 9: action hooks (issue 15): events ordered by their writer's transaction (``txid``),
    # what an import event says, a trigger call's custom_data, the hooks' cursors and
    # leases and their dead letters
    hooks.DDL,
    # 10: the email channel (issue 19): a mailing's channel, an email run's accepted
    # addresses and its policy history per address, opens, the bounces applied and the
    # email counters
    runs.CHANNEL_DDL + journal.ADDRESSES_DDL + policy.ADDRESS_DDL + tracking.OPENS_DDL
    + bounces.DDL + events.EMAIL_DDL,
]
