"""The accounting every fault test ends with: the store's record against the gateway's.

``account(db, run_id, seen=..., accepted=...)`` reads a run's recipients straight from the
SQLite file (its own connection, so it works after a ``herald`` process was killed), or
from the PostgreSQL database ``HERALD_DATABASE`` names when it is set, and
checks what issue 10 guarantees, collecting every violation before failing:

- the run is finished with nothing left in its journal, and every reserved recipient has
  exactly one row, in a final state (failed, unknown and skipped with a reason);
- a gateway that does not dedupe accepted no id twice (and no phone under two ids);
- ``unknown`` only with the reasons an ambiguous attempt may give, and only for messages
  the gateway saw: one it never saw was certainly not sent, so it must not be unknown;
- sent means accepted: every sent id was accepted, every accepted id is sent (or
  unknown: the gateway took it, the answer was lost), none failed.

It returns an ``Accounting`` for the case's own assertions.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AMBIGUOUS_REASONS", "Accounting", "account"]

FINAL = {"sent", "delivered", "undelivered", "failed", "unknown", "skipped"}
SENT = {"sent", "delivered", "undelivered"}
#: The reasons an ``unknown`` may carry after a fault (issue 10).
AMBIGUOUS_REASONS = frozenset({"timeout", "connection_lost", "interrupted"})


@dataclass(frozen=True)
class Accounting:
    """What the store recorded for a run, by message id."""

    states: Counter[str]
    #: message id -> (state, reason)
    by_id: dict[str, tuple[str, str | None]]
    unknown_reasons: Counter[str]
    failed_reasons: Counter[str]
    #: Unknown messages the gateway never saw (allowed only with ``unseen_may_be``).
    unseen_unknown: int

    def ids(self, *states: str) -> set[str]:
        return {mid for mid, (state, _) in self.by_id.items() if state in states}


def read_run(db: Path, run_id: int) -> tuple[str, str, int, list[tuple[int, str, str, str | None]]]:
    """(uid, status, journal batches left, [(seq, phone, state, reason)]) of one run."""
    url = os.environ.get("HERALD_DATABASE")
    if url:
        return _read_run_from(url, run_id)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        uid, status = conn.execute("SELECT uid, status FROM runs WHERE id = ?",
                                   (run_id,)).fetchone()
        journal = conn.execute("SELECT count(*) FROM journal WHERE run_id = ?",
                               (run_id,)).fetchone()[0]
        rows = conn.execute("SELECT seq, phone, state, reason FROM recipients WHERE run_id = ?"
                            " ORDER BY seq", (run_id,)).fetchall()
    finally:
        conn.close()
    return uid, status, journal, rows


def _read_run_from(
    url: str, run_id: int
) -> tuple[str, str, int, list[tuple[int, str, str, str | None]]]:
    """``read_run`` through the store's own protocol (any store), on an event loop of its
    own in a thread (callers may be sync or async)."""
    import anyio

    from engine.store.open import open_store

    box: list[tuple[str, str, int, list[tuple[int, str, str, str | None]]]] = []

    async def go() -> None:
        store = await open_store(url)
        try:
            _, run = await store.get_run(run_id)
            journal = await store.journal(run_id)
            rows = [(r.seq, r.phone, r.state, r.reason)
                    for r in await store.recipient_rows(run_id)]
            box.append((run.uid, run.status, len(journal), rows))
        finally:
            await store.aclose()

    thread = threading.Thread(target=anyio.run, args=(go,))
    thread.start()
    thread.join()
    assert box, f"could not read run {run_id} from {url}"
    return box[0]


def account(
    db: Path,
    run_id: int,
    *,
    seen: Collection[str],
    accepted: Mapping[str, int],
    gateway_idempotent: bool,
    recipients: int | None = None,
    phones: Mapping[str, str] | None = None,
    unknown_reasons: Collection[str] = AMBIGUOUS_REASONS,
    unseen_may_be: Collection[str] = (),
) -> Accounting:
    """Check the run against the gateway's ledger (see the module docstring).

    ``unseen_may_be``: reasons an unknown the gateway never saw may have all the same
    ("interrupted" after kill -9: a batch marked sending whose request was not written yet
    cannot be told from one that was).
    """
    uid, status, journal, rows = read_run(db, run_id)
    problems: list[str] = []
    if status != "finished":
        problems.append(f"run {run_id} is {status!r}, not finished")
    if journal:
        problems.append(f"{journal} batches left in the journal")
    by_id: dict[str, tuple[str, str | None]] = {}
    states: Counter[str] = Counter()
    for seq, _phone, state, reason in rows:
        states[state] += 1
        if state not in FINAL:
            problems.append(f"seq {seq} ended {state!r}, not a final state")
        if state in ("failed", "unknown", "skipped") and not reason:
            problems.append(f"seq {seq} is {state} without a reason")
        by_id[f"{uid}-{seq}"] = (state, reason)
    live = [r for r in rows if r[2] != "skipped"]
    live_phones = Counter(r[1] for r in live)
    twice = [p for p, n in live_phones.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} phones have two non-skipped rows, e.g. {twice[0]}")
    if recipients is not None and len(live) != recipients:
        problems.append(f"{len(live)} recipients recorded, {recipients} expected")

    ours = {mid: n for mid, n in accepted.items() if mid.startswith(f"{uid}-")}
    if not gateway_idempotent:
        doubled = sorted(mid for mid, n in ours.items() if n > 1)
        if doubled:
            problems.append(f"{len(doubled)} ids accepted twice by a non-idempotent gateway,"
                            f" e.g. {doubled[0]}")
    if phones is not None:
        ids_per_phone = Counter(phones[mid] for mid in ours)
        several = [p for p, n in ids_per_phone.items() if n > 1]
        if several:
            problems.append(f"{len(several)} phones accepted under several ids")

    unknown = {mid: reason for mid, (state, reason) in by_id.items() if state == "unknown"}
    odd = Counter(reason for reason in unknown.values() if reason not in unknown_reasons)
    if odd:
        problems.append(f"unknown with unexpected reasons: {dict(odd)}")
    seen_ids = set(seen)
    unseen_unknown = sorted(mid for mid, reason in unknown.items()
                            if mid not in seen_ids and reason not in unseen_may_be)
    if unseen_unknown:
        problems.append(f"{len(unseen_unknown)} messages the gateway never saw are unknown,"
                        f" e.g. {unseen_unknown[0]} ({unknown[unseen_unknown[0]]})")

    sent = {mid for mid, (state, _) in by_id.items() if state in SENT}
    failed = {mid for mid, (state, _) in by_id.items() if state == "failed"}
    not_accepted = sorted(sent - ours.keys())
    if not_accepted:
        problems.append(f"{len(not_accepted)} sent but never accepted, e.g. {not_accepted[0]}")
    lost = sorted(ours.keys() - sent - unknown.keys())
    if lost:
        state, reason = by_id.get(lost[0], ("no row", None))
        problems.append(f"{len(lost)} accepted by the gateway but recorded neither sent nor"
                        f" unknown, e.g. {lost[0]} ({state}, {reason})")
    if failed & ours.keys():
        problems.append(f"{len(failed & ours.keys())} recorded failed though accepted")

    result = Accounting(
        states=states,
        unseen_unknown=len([mid for mid in unknown if mid not in seen_ids]),
        by_id=by_id,
        unknown_reasons=Counter(unknown.values()),
        failed_reasons=Counter(r for s, r in by_id.values() if s == "failed"),
    )
    assert not problems, "; ".join(problems) + f"  [states {dict(states)}," \
        f" unknown {dict(result.unknown_reasons)}, failed {dict(result.failed_reasons)}]"
    return result
