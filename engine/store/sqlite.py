"""The embedded store: stdlib ``sqlite3`` in WAL mode, on the event loop thread.

Each method runs its statements synchronously with no ``await`` inside, so it is atomic with
respect to other tasks sharing the connection, and it is short: the audience is read in
keyset-paginated chunks, and writes are one transaction per batch. Measured here, a reader
thread lost to GIL ping-pong in the full pipeline; see ``bench/pipeline.py``.

``synchronous=NORMAL`` in WAL mode keeps every committed transaction across a process crash
(``kill -9``); only a power loss can lose the last commits.

The exact record that confirms the dedupe filter's positives (the phones a run has accepted)
lives in a private scratch database (a temporary file, no journal, a small page cache),
keyed by the phone as an integer. Random-key inserts there cost a third of what a phone
index on the recipients table costs in WAL mode, and the durable tables stay append-only.
It is rebuilt from the recipients and the journal when a run is resumed.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio.lowlevel
import msgspec

from engine.core.policy import Policy, first_day, utc_day
from engine.core.prepare import AudienceRow, Message, Skipped
from engine.core.states import Outcome, State, can_move
from engine.drivers import Receipt
from engine.errors import InputError, NotFound, StoreError
from engine.store.base import (
    ImportRecord,
    ImportResult,
    JournalBatch,
    ReceiptReport,
    Reserved,
    Store,
)
from engine.store.models import AudienceSource, Mailing, Run, RunStatus, run_is_live
from engine.store.schema import MIGRATIONS

__all__ = ["RECEIPT_CHUNK", "SQLiteStore"]

_json = msgspec.json.Encoder()
_decode_dict = msgspec.json.Decoder(dict[str, Any]).decode
_decode_counts = msgspec.json.Decoder(dict[str, int]).decode
_decode_timings = msgspec.json.Decoder(dict[str, float]).decode
_msgpack = msgspec.msgpack.Encoder()
_decode_entries = msgspec.msgpack.Decoder(list[Reserved]).decode

#: Receipts applied per transaction: a big callback holds the loop and the write lock for
#: one chunk at a time (a few ms), never for the whole of it.
RECEIPT_CHUNK = 500

_RUN_COLUMNS = (
    "r.id, r.uid, r.mailing_id, r.status, r.started_at, r.finished_at, r.checkpoint,"
    " r.next_seq, r.audience_done, r.counts, r.timings, r.pid, r.host, r.error,"
    " m.id, m.name, m.kind, m.resource, m.source_kind, m.database_id, m.segment_id,"
    " m.template, m.limit_n, m.document, m.created_at, m.policy"
)


#: Joins each profile ``p`` to its highest-priority active SMS subscription to resource ?.
_PICK_SUBSCRIPTION = (
    "LEFT JOIN subscriptions s ON s.id = (SELECT id FROM subscriptions"
    " WHERE profile_id = p.id AND resource_id = ? AND channel = 'sms'"
    " AND status = 'subscribed' ORDER BY priority DESC, id LIMIT 1)"
)


_MAILING_COLUMNS = (
    "m.id, m.name, m.kind, m.resource, m.source_kind, m.database_id, m.segment_id,"
    " m.template, m.limit_n, m.document, m.created_at, m.policy"
)
_decode_policy = msgspec.json.Decoder(Policy).decode


def _mailing_from_row(row: Sequence[Any]) -> Mailing:
    return Mailing(
        id=row[0], name=row[1], kind=row[2], resource=row[3],
        source=AudienceSource(row[4], row[5], row[6]), template=row[7], limit=row[8],
        document=_decode_dict(row[9]), created_at=row[10],
        policy=_decode_policy(row[11]) if row[11] else None,
    )


def _run_from_row(row: Sequence[Any]) -> tuple[Mailing, Run]:
    run = Run(
        id=row[0], uid=row[1], mailing_id=row[2], status=row[3], started_at=row[4],
        finished_at=row[5], checkpoint=row[6], next_seq=row[7], audience_done=bool(row[8]),
        counts=_decode_counts(row[9]), timings=_decode_timings(row[10]), pid=row[11],
        host=row[12], error=row[13],
    )
    return _mailing_from_row(row[14:]), run


class SQLiteStore(Store):
    """``SQLiteStore.open(path)`` creates or migrates the file and returns a store."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._resources: dict[str, int] = {}
        self._scratch: sqlite3.Connection | None = None
        self._seen_tables: set[int] = set()
        self._run_lists: dict[int, list[int]] = {}
        self._run_resource: dict[int, int] = {}

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> SQLiteStore:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(p, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.DatabaseError as err:
            raise StoreError(f"{p}: not a Herald database ({err})") from err
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA cache_size=-16384")  # 16 MiB: RSS stays flat as data grows
        store = cls(conn, p)
        store._migrate()
        return store

    def _migrate(self) -> None:
        (version,) = self.conn.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path}: schema version {version} is newer than this Herald "
                f"({len(MIGRATIONS)}); upgrade Herald"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; the version bump rides in the same script.
            self.conn.executescript(
                f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )

    def _tx(self) -> _Transaction:
        return _Transaction(self.conn)

    # -- profile data ------------------------------------------------------------------

    async def database_id(self, name: str, *, create: bool = False) -> int:
        return self.database_id_sync(name, create=create)

    def database_id_sync(self, name: str, *, create: bool = False) -> int:
        row = self.conn.execute("SELECT id FROM databases WHERE name = ?", (name,)).fetchone()
        if row:
            return int(row[0])
        if not create:
            raise NotFound(f"no profile database named {name!r}")
        cur = self.conn.execute(
            "INSERT INTO databases (name, created_at) VALUES (?, ?)", (name, time.time())
        )
        return int(cur.lastrowid or 0)

    async def resource_id(self, name: str) -> int:
        return self.resource_id_sync(name)

    def resource_id_sync(self, name: str) -> int:
        if name in self._resources:
            return self._resources[name]
        self.conn.execute(
            "INSERT OR IGNORE INTO resources (name, created_at) VALUES (?, ?)",
            (name, time.time()),
        )
        (rid,) = self.conn.execute(
            "SELECT id FROM resources WHERE name = ?", (name,)
        ).fetchone()
        self._resources[name] = int(rid)
        return int(rid)

    async def import_profiles(
        self,
        database_id: int,
        records: Sequence[ImportRecord],
        *,
        matching: str,
        resource_id: int | None,
        mode: str = "add+update",
    ) -> ImportResult:
        if mode not in ("add+update", "add", "update"):
            raise InputError(f"mode must be add+update, add or update, not {mode!r}")
        now = time.time()
        added = updated = skipped = 0
        rejected: list[tuple[int, str]] = []
        with self._tx() as c:
            keys = list({rec.key for rec in records if rec.key is not None})
            found = self._match(c, database_id, matching, keys)
            taken: set[Any] = set()  # ids held by profiles of other databases
            if matching == "id" and mode != "update" and len(found) < len(keys):
                taken = {
                    row[0] for row in c.execute(
                        "SELECT id FROM profiles WHERE id IN (SELECT value FROM json_each(?))"
                        " AND database_id != ?",
                        (_json.encode([k for k in keys if k not in found]), database_id),
                    )
                }
            next_id = 0
            # profile id -> [phone, email, fields]: new rows, and changes to existing ones.
            # A later record for the same profile merges into its entry, as if applied in turn.
            inserts: dict[int, list[Any]] = {}
            changes: dict[int, list[Any]] = {}
            subscribe: list[tuple[int, int, str, float, float]] = []
            for index, rec in enumerate(records):
                pid = found.get(rec.key) if rec.key is not None else None
                if pid is None:
                    if mode == "update":
                        rejected.append((index, "no profile matches"))
                        continue
                    if matching == "id":
                        if not isinstance(rec.key, int) or rec.key in taken:
                            why = f"id {rec.key} belongs to a profile of another database"
                            rejected.append((index, why if rec.key else "no id to match on"))
                            continue
                        pid = rec.key
                    else:
                        if not next_id:  # under the write lock: nobody else inserts
                            (top,) = c.execute("SELECT max(id) FROM profiles").fetchone()
                            next_id = (top or 0) + 1
                        pid = next_id
                        next_id += 1
                    inserts[pid] = [rec.phone, rec.email, dict(rec.fields)]
                    if rec.key is not None:
                        found[rec.key] = pid
                    added += 1
                elif mode == "add":
                    skipped += 1
                    continue
                else:
                    entry = inserts.get(pid) or changes.setdefault(pid, [None, None, {}])
                    if rec.phone is not None:
                        entry[0] = rec.phone
                    if rec.email is not None:
                        entry[1] = rec.email
                    entry[2].update(rec.fields)
                    updated += 1
                if resource_id is not None and rec.phone:
                    subscribe.append((pid, resource_id, rec.phone, now, now))
            c.executemany(
                "INSERT INTO profiles (id, database_id, phone, email, fields, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (pid, database_id, phone, email, _json.encode(fields).decode(), now, now)
                    for pid, (phone, email, fields) in inserts.items()
                ],
            )
            if changes:
                old = dict(c.execute(
                    "SELECT id, fields FROM profiles WHERE id IN (SELECT value FROM json_each(?))",
                    (_json.encode(list(changes)),),
                ))
                rows = []
                for pid, (phone, email, fields) in changes.items():
                    merged = _decode_dict(old[pid])
                    merged.update(fields)
                    rows.append((phone, email, _json.encode(merged).decode(), now, pid))
                c.executemany(
                    "UPDATE profiles SET phone = coalesce(?, phone), email = coalesce(?, email),"
                    " fields = ?, updated_at = ? WHERE id = ?",
                    rows,
                )
            c.executemany(
                "INSERT INTO subscriptions (profile_id, resource_id, channel, phone, status,"
                " created_at, updated_at) VALUES (?, ?, 'sms', ?, 'subscribed', ?, ?)"
                " ON CONFLICT (profile_id, resource_id, channel, phone)"
                " DO UPDATE SET updated_at = excluded.updated_at",
                subscribe,
            )
        return ImportResult(added, updated, skipped, tuple(rejected))

    @staticmethod
    def _match(
        c: sqlite3.Connection, database_id: int, matching: str, keys: Sequence[str | int]
    ) -> dict[str | int, int]:
        """The profile each key matches (the oldest, if several): one query per batch."""
        if matching in ("phone", "email"):
            column = matching
        elif matching == "id":
            column = "id"
        elif matching.startswith("field:") and len(matching) > 6 and '"' not in matching:
            # A custom field's value, as text (a number stored by the API matches too).
            path = _sql_text(f'$."{matching[6:]}"')
            column = f"CAST(json_extract(fields, {path}) AS TEXT)"
        else:
            raise InputError(
                f"matching must be phone, email, id or field:NAME, not {matching!r}"
            )
        if not keys:
            return {}
        return {
            key: int(pid)
            for key, pid in c.execute(
                f"SELECT {column} AS k, min(id) FROM profiles WHERE database_id = ?"
                " AND k IN (SELECT value FROM json_each(?)) GROUP BY k",
                (database_id, _json.encode(keys)),
            )
        }

    async def set_subscription_status(
        self, resource_id: int, profile_ids: Sequence[int], status: str
    ) -> int:
        with self._tx() as c:
            before = c.total_changes
            c.executemany(
                "UPDATE subscriptions SET status = ?, updated_at = ? WHERE profile_id = ?"
                " AND resource_id = ? AND channel = 'sms'",
                [(status, time.time(), p, resource_id) for p in profile_ids],
            )
            return c.total_changes - before

    async def add_suppressions(
        self, list_name: str, kind: str, values: Sequence[str], *, is_global: bool = True
    ) -> int:
        if kind not in ("phone", "email", "domain"):
            raise InputError(f"a suppression is a phone, an email or a domain, not {kind!r}")
        now = time.time()
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO suppression_lists (name, is_global, created_at)"
                " VALUES (?, ?, ?)",
                (list_name, int(is_global), now),
            )
            (list_id,) = c.execute(
                "SELECT id FROM suppression_lists WHERE name = ?", (list_name,)
            ).fetchone()
            before = c.total_changes
            c.executemany(
                "INSERT OR IGNORE INTO suppressions (list_id, kind, value, added_at)"
                " VALUES (?, ?, ?, ?)",
                [(list_id, kind, v, now) for v in values],
            )
            return c.total_changes - before

    async def attach_suppression_list(
        self, list_name: str, *, database_id: int | None = None, mailing_id: int | None = None
    ) -> None:
        if (database_id is None) == (mailing_id is None):
            raise InputError("attach a suppression list to a database or to a mailing")
        row = self.conn.execute(
            "SELECT id FROM suppression_lists WHERE name = ?", (list_name,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no suppression list named {list_name!r}")
        with self._tx() as c:
            c.execute(
                "INSERT OR IGNORE INTO suppression_attachments (list_id, database_id, mailing_id)"
                " VALUES (?, ?, ?)",
                (row[0], database_id, mailing_id),
            )
        self._run_lists.clear()

    async def suppression_lists(self) -> list[dict[str, Any]]:
        out = []
        for lid, name, is_global in self.conn.execute(
            "SELECT id, name, is_global FROM suppression_lists ORDER BY name"
        ).fetchall():
            counts = dict(self.conn.execute(
                "SELECT kind, count(*) FROM suppressions WHERE list_id = ? GROUP BY kind", (lid,)
            ).fetchall())
            attached = self.conn.execute(
                "SELECT d.name, a.mailing_id FROM suppression_attachments a"
                " LEFT JOIN databases d ON d.id = a.database_id WHERE a.list_id = ?", (lid,)
            ).fetchall()
            out.append({
                "name": name, "global": bool(is_global), "counts": counts,
                "databases": sorted(d for d, _ in attached if d),
                "mailings": sorted(m for _, m in attached if m),
            })
        return out

    def _lists_for_run(self, run_id: int) -> list[int]:
        """The suppression lists that apply to a run: global ones, and those attached to
        its mailing or its mailing's database."""
        lists = self._run_lists.get(run_id)
        if lists is None:
            lists = [r[0] for r in self.conn.execute(
                "SELECT l.id FROM suppression_lists l WHERE l.is_global OR l.id IN"
                " (SELECT a.list_id FROM suppression_attachments a JOIN runs r ON r.id = ?"
                "  JOIN mailings m ON m.id = r.mailing_id"
                "  WHERE a.mailing_id = m.id OR a.database_id = m.database_id)",
                (run_id,),
            )]
            self._run_lists[run_id] = lists
        return lists

    async def segment_id(self, name: str) -> tuple[int, int]:
        row = self.conn.execute(
            "SELECT id, database_id FROM segments WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no segment named {name!r}")
        return int(row[0]), int(row[1])

    def create_static_segment(self, name: str, database_id: int, profile_ids: Sequence[int]) -> int:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO segments (name, database_id, kind, created_at)"
                " VALUES (?, ?, 'static', ?)",
                (name, database_id, time.time()),
            )
            sid = int(cur.lastrowid or 0)
            c.executemany(
                "INSERT OR IGNORE INTO segment_members (segment_id, profile_id) VALUES (?, ?)",
                [(sid, p) for p in profile_ids],
            )
        return sid

    async def count_audience(self, source: AudienceSource) -> int:
        if source.kind == "segment":
            row = self.conn.execute(
                "SELECT kind FROM segments WHERE id = ?", (source.segment_id,)
            ).fetchone()
            if row is not None and row[0] == "dynamic":
                # An upper bound: judging every profile now would hold the event loop for
                # seconds on a big database; the run judges them as it reads them anyway.
                row = self.conn.execute(
                    "SELECT count(*) FROM profiles WHERE database_id = ?",
                    (source.database_id,),
                ).fetchone()
                return int(row[0])
            row = self.conn.execute(
                "SELECT count(*) FROM segment_members WHERE segment_id = ?", (source.segment_id,)
            ).fetchone()
        else:
            row = self.conn.execute(
                "SELECT count(*) FROM profiles WHERE database_id = ?", (source.database_id,)
            ).fetchone()
        return int(row[0])

    # -- runs --------------------------------------------------------------------------

    async def create_run(
        self,
        *,
        name: str,
        resource: str,
        source: AudienceSource,
        template: str,
        limit: int | None,
        document: dict[str, Any] | None = None,
        policy: Policy | None = None,
    ) -> tuple[Mailing, Run]:
        mailing = await self.create_mailing(
            name=name, kind="broadcast", resource=resource, source=source, template=template,
            limit=limit, document=document, policy=policy,
        )
        run = await self.start_run(mailing.id)
        return mailing, run

    async def create_mailing(
        self,
        *,
        name: str,
        kind: str,
        resource: str,
        source: AudienceSource,
        template: str,
        limit: int | None,
        document: dict[str, Any] | None = None,
        policy: Policy | None = None,
    ) -> Mailing:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO mailings (name, kind, resource, source_kind, database_id,"
                " segment_id, template, limit_n, document, created_at, policy)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, kind, resource, source.kind, source.database_id, source.segment_id,
                 template, limit, _json.encode(document or {}).decode(), time.time(),
                 _json.encode(policy) if policy else None),
            )
            mailing_id = int(cur.lastrowid or 0)
        return await self.get_mailing(mailing_id)

    async def get_mailing(self, mailing_id: int) -> Mailing:
        row = self.conn.execute(
            f"SELECT {_MAILING_COLUMNS} FROM mailings m WHERE m.id = ?", (mailing_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no mailing {mailing_id}")
        return _mailing_from_row(row)

    async def list_mailings(self, limit: int = 100, *, documents: bool = True) -> list[Mailing]:
        columns = _MAILING_COLUMNS if documents else _MAILING_COLUMNS.replace(
            "m.document", "'{}'")
        rows = self.conn.execute(
            f"SELECT {columns} FROM mailings m ORDER BY m.id DESC LIMIT ?", (limit,)
        ).fetchall()
        return [_mailing_from_row(r) for r in rows]

    async def start_run(self, mailing_id: int) -> Run:
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO runs (uid, mailing_id, status, started_at, pid, host)"
                " VALUES (?, ?, 'running', ?, ?, ?)",
                (secrets.token_hex(5), mailing_id, time.time(), os.getpid(),
                 socket.gethostname()),
            )
            run_id = int(cur.lastrowid or 0)
        return self._get_run(run_id)[1]

    async def latest_run(self, mailing_id: int) -> Run | None:
        row = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs r JOIN mailings m ON m.id = r.mailing_id"
            " WHERE r.mailing_id = ? ORDER BY r.id DESC LIMIT 1",
            (mailing_id,),
        ).fetchone()
        return None if row is None else _run_from_row(row)[1]

    async def cancel_run(self, run_id: int) -> None:
        now = time.time()
        with self._tx() as c:
            sending = {b for (b,) in c.execute(
                "SELECT batch FROM journal_sending WHERE run_id = ?", (run_id,))}
            rows = []
            for batch, sender, blob in c.execute(
                "SELECT batch, sender, messages FROM journal WHERE run_id = ?", (run_id,)
            ).fetchall():
                maybe = batch in sending
                for e in _decode_entries(blob):
                    rows.append((run_id, e.seq, e.profile_id, e.phone,
                                 "unknown" if maybe else "skipped",
                                 "interrupted" if maybe else "cancelled", sender, now))
            c.executemany(
                "INSERT INTO recipients (run_id, seq, profile_id, phone, state, reason, sender,"
                " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            c.execute("DELETE FROM journal WHERE run_id = ?", (run_id,))
            c.execute("DELETE FROM journal_sending WHERE run_id = ?", (run_id,))
            c.execute(
                "UPDATE runs SET status = 'cancelled', finished_at = ?, audience_done = 1"
                " WHERE id = ?",
                (now, run_id),
            )

    # -- trigger mailings --------------------------------------------------------------

    async def find_profiles(
        self, database_id: int, key: str, values: Sequence[str]
    ) -> dict[str, int]:
        if key not in ("phone", "email"):
            raise InputError(f"profiles are found by phone or email, not {key!r}")
        found: dict[str, int] = {}
        for value, pid in self.conn.execute(
            f"SELECT {key}, min(id) FROM profiles WHERE database_id = ? AND {key} IN"
            " (SELECT value FROM json_each(?)) GROUP BY 1",
            (database_id, _json.encode(list(values))),
        ):
            found[value] = int(pid)
        return found

    async def profile_ids_in(self, database_id: int, ids: Sequence[int]) -> set[int]:
        return {int(r[0]) for r in self.conn.execute(
            "SELECT id FROM profiles WHERE database_id = ? AND id IN"
            " (SELECT value FROM json_each(?))",
            (database_id, _json.encode(list(ids))),
        )}

    async def enqueue_triggers(
        self, mailing_id: int, run_id: int, items: Sequence[tuple[int, bytes, str | None]]
    ) -> list[tuple[int, bool]]:
        now = time.time()
        out: list[tuple[int, bool]] = []
        with self._tx() as c:
            for profile_id, content, key in items:
                if key is not None:
                    row = c.execute(
                        "SELECT seq FROM trigger_queue WHERE mailing_id = ?"
                        " AND idempotency_key = ?",
                        (mailing_id, key),
                    ).fetchone()
                    if row is not None:
                        out.append((int(row[0]), True))
                        continue
                (seq,) = c.execute(
                    "UPDATE runs SET next_seq = next_seq + 1 WHERE id = ? RETURNING next_seq - 1",
                    (run_id,),
                ).fetchone()
                c.execute(
                    "INSERT INTO trigger_queue (mailing_id, run_id, seq, profile_id, content,"
                    " idempotency_key, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (mailing_id, run_id, seq, profile_id, content, key, now),
                )
                out.append((int(seq), False))
        return out

    async def trigger_chunk(
        self, run_id: int, resource_id: int, after_id: int, limit: int
    ) -> list[tuple[Any, ...]]:
        return self.conn.execute(
            "SELECT q.id, q.seq, p.id, p.fields, s.phone, s.fields, q.content"
            f" FROM trigger_queue q JOIN profiles p ON p.id = q.profile_id {_PICK_SUBSCRIPTION}"
            " WHERE q.run_id = ? AND q.id > ? ORDER BY q.id LIMIT ?",
            (resource_id, run_id, after_id, limit),
        ).fetchall()

    def _get_run(self, run_id: int) -> tuple[Mailing, Run]:
        row = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs r JOIN mailings m ON m.id = r.mailing_id"
            " WHERE r.id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no run {run_id}")
        return _run_from_row(row)

    async def get_run(self, run_id: int) -> tuple[Mailing, Run]:
        return self._get_run(run_id)

    async def list_runs(self, limit: int = 100) -> list[tuple[Mailing, Run]]:
        rows = self.conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM runs r JOIN mailings m ON m.id = r.mailing_id"
            " ORDER BY r.id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [_run_from_row(r) for r in rows]

    async def claim_run(self, run_id: int) -> Run:
        with self._tx() as c:
            _, run = self._get_run(run_id)
            if run_is_live(run):
                raise StoreError(
                    f"run {run_id} is still running (pid {run.pid} on {run.host})"
                )
            if run.status == "finished":
                raise StoreError(f"run {run_id} is finished; nothing to resume")
            c.execute(
                "UPDATE runs SET status = 'running', pid = ?, host = ?, error = NULL"
                " WHERE id = ?",
                (os.getpid(), socket.gethostname(), run_id),
            )
        return self._get_run(run_id)[1]

    async def set_run_status(
        self,
        run_id: int,
        status: RunStatus,
        *,
        timings: dict[str, float] | None = None,
        error: str | None = None,
    ) -> None:
        finished = time.time() if status in ("finished", "failed") else None
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status = ?, finished_at = coalesce(?, finished_at),"
                " timings = coalesce(?, timings), error = ? WHERE id = ?",
                (status, finished, _json.encode(timings).decode() if timings else None,
                 error, run_id),
            )

    # -- the hot path ------------------------------------------------------------------

    async def audience_chunk(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int
    ) -> list[AudienceRow]:
        pick = _PICK_SUBSCRIPTION
        if source.kind == "segment":
            sql = (
                "SELECT p.id, p.fields, s.phone, s.fields FROM segment_members g"
                f" JOIN profiles p ON p.id = g.profile_id {pick}"
                " WHERE g.segment_id = ? AND g.profile_id > ? ORDER BY g.profile_id LIMIT ?"
            )
            args: tuple[Any, ...] = (resource_id, source.segment_id, after_id, limit)
        else:
            sql = (
                f"SELECT p.id, p.fields, s.phone, s.fields FROM profiles p {pick}"
                " WHERE p.database_id = ? AND p.id > ? ORDER BY p.id LIMIT ?"
            )
            args = (resource_id, source.database_id, after_id, limit)
        return self.conn.execute(sql, args).fetchall()

    async def audience_page(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int, now: float
    ) -> tuple[list[AudienceRow], int | None]:
        if source.kind == "segment":
            from engine.segments import segment_chunk  # segments build on this store

            assert source.segment_id is not None
            return segment_chunk(self, source.segment_id, resource_id, after_id, limit, now)
        rows = await self.audience_chunk(source, resource_id, after_id, limit)
        return rows, (rows[-1][0] if rows else None)

    async def audience_rows(
        self, source: AudienceSource, resource_id: int, profile_ids: Sequence[int]
    ) -> list[AudienceRow]:
        rows: list[AudienceRow] = []
        for i in range(0, len(profile_ids), 500):
            part = profile_ids[i : i + 500]
            rows += self.conn.execute(
                f"SELECT p.id, p.fields, s.phone, s.fields FROM profiles p {_PICK_SUBSCRIPTION}"
                " WHERE p.id IN (SELECT value FROM json_each(?))",
                (resource_id, _json.encode(list(part))),
            ).fetchall()
        return rows

    async def lookup(
        self, run_id: int, phones: Sequence[str], maybe_seen: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        c = self.conn
        suppressed: set[str] = set()
        seen: set[str] = set()
        lists = self._lists_for_run(run_id)
        if lists:
            in_lists = ",".join(str(int(i)) for i in lists)
            for i in range(0, len(phones), 500):
                part = phones[i : i + 500]
                marks = ",".join("?" * len(part))
                suppressed.update(
                    r[0]
                    for r in c.execute(
                        f"SELECT value FROM suppressions WHERE value IN ({marks})"
                        f" AND kind = 'phone' AND list_id IN ({in_lists})",
                        part,
                    )
                )
        if maybe_seen:
            scratch, table = self._seen_table(run_id)
            found = scratch.execute(
                f"SELECT phone FROM {table} WHERE phone IN"
                " (SELECT value FROM json_each(?))",
                (_json.encode([int(p[1:]) for p in maybe_seen]),),
            )
            seen.update(f"+{r[0]}" for r in found)
        return suppressed, seen

    def _seen_table(self, run_id: int) -> tuple[sqlite3.Connection, str]:
        """The scratch table of phones accepted in a run; built on first use."""
        table = f"seen_{int(run_id)}"
        if self._scratch is None:
            self._scratch = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            self._scratch.execute("PRAGMA journal_mode=OFF")
            self._scratch.execute("PRAGMA synchronous=OFF")
            self._scratch.execute("PRAGMA cache_size=-8192")
        scratch = self._scratch
        if run_id not in self._seen_tables:
            scratch.execute(f"DROP TABLE IF EXISTS {table}")
            scratch.execute(f"CREATE TABLE {table} (phone INTEGER PRIMARY KEY)")
            after = 0
            while True:
                rows = self.conn.execute(
                    "SELECT seq, phone FROM recipients WHERE run_id = ? AND seq > ?"
                    " AND state != 'skipped' ORDER BY seq LIMIT 10000",
                    (run_id, after),
                ).fetchall()
                if not rows:
                    break
                after = rows[-1][0]
                self._add_seen(scratch, table, [r[1] for r in rows])
            for (blob,) in self.conn.execute(
                "SELECT messages FROM journal WHERE run_id = ?", (run_id,)
            ):
                self._add_seen(scratch, table, [e.phone for e in _decode_entries(blob)])
            self._seen_tables.add(run_id)
        return scratch, table

    @staticmethod
    def _add_seen(scratch: sqlite3.Connection, table: str, phones: Sequence[str]) -> None:
        scratch.execute(
            f"INSERT OR IGNORE INTO {table} SELECT value FROM json_each(?)",
            (_json.encode([int(p[1:]) for p in phones]),),
        )

    async def reserve(
        self,
        run_id: int,
        *,
        batches: Sequence[tuple[int, str, Sequence[Message]]],
        skipped: Sequence[Skipped],
        checkpoint: int,
        next_seq: int | None,
        counts: dict[str, int],
        audience_done: bool,
    ) -> None:
        now = time.time()
        if batches:
            scratch, table = self._seen_table(run_id)
            self._add_seen(scratch, table, [m.phone for _, _, msgs in batches for m in msgs])
        with self._tx() as c:
            if batches:
                self._count_sent(
                    c, run_id, [(m.profile_id, m.phone) for _, _, msgs in batches for m in msgs]
                )
                c.executemany(
                    "INSERT INTO journal (run_id, batch, sender, messages) VALUES (?, ?, ?, ?)",
                    [
                        (run_id, b, sender,
                         _msgpack.encode([(m.seq, m.profile_id, m.phone) for m in msgs]))
                        for b, sender, msgs in batches
                    ],
                )
            if skipped:
                c.executemany(
                    "INSERT INTO recipients (run_id, seq, profile_id, phone, state, reason,"
                    " updated_at) VALUES (?, ?, ?, ?, 'skipped', ?, ?)",
                    [(run_id, s.seq, s.profile_id, s.phone, s.reason, now) for s in skipped],
                )
            (raw,) = c.execute("SELECT counts FROM runs WHERE id = ?", (run_id,)).fetchone()
            total = _decode_counts(raw)
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
            c.execute(
                "UPDATE runs SET checkpoint = ?, next_seq = coalesce(?, next_seq), counts = ?,"
                " audience_done = ? WHERE id = ?",
                (checkpoint, next_seq, _json.encode(total).decode(), int(audience_done),
                 run_id),
            )

    async def mark_sending(self, run_id: int, batch: int) -> None:
        self.conn.execute(
            "INSERT OR IGNORE INTO journal_sending (run_id, batch) VALUES (?, ?)", (run_id, batch)
        )

    async def unmark_sending(self, run_id: int, batch: int) -> None:
        self.conn.execute(
            "DELETE FROM journal_sending WHERE run_id = ? AND batch = ?", (run_id, batch)
        )

    async def move_batch(self, run_id: int, batch: int, sender: str) -> None:
        self.conn.execute(
            "UPDATE journal SET sender = ? WHERE run_id = ? AND batch = ?", (sender, run_id, batch)
        )

    async def record(
        self, run_id: int, batch: int, sender: str, messages: Sequence[Message],
        outcomes: Sequence[Outcome], keep: Sequence[Message] = (),
        keep_sending: bool = False,
    ) -> None:
        # Batch-wide values are written into the statement as literals: binding them once
        # per row cost 40% of the insert (bench/pipeline.py). They are an int, a float and
        # a quoted config name, never user text.
        head = (
            "INSERT INTO recipients (run_id, seq, profile_id, phone, state, reason, sender,"
            " segments, encoding, provider_id, error, attempts, updated_at) VALUES"
            f" ({int(run_id)}, ?, ?, ?, "
        )
        sender_sql, now_sql = _sql_text(sender), repr(float(time.time()))
        sent: list[tuple[Any, ...]] = []
        other: list[tuple[Any, ...]] = []
        for m, o in zip(messages, outcomes, strict=True):
            if o.state == "sent" and o.error is None:
                sent.append((m.seq, m.profile_id, m.phone, m.segments, m.encoding,
                             o.provider_id, o.attempts))
            else:
                other.append((m.seq, m.profile_id, m.phone, o.state, o.reason, m.segments,
                              m.encoding, o.provider_id, o.error, o.attempts))
        with self._tx() as c:
            if sent:
                c.executemany(
                    f"{head}'sent', NULL, {sender_sql}, ?, ?, ?, NULL, ?, {now_sql})", sent
                )
            if other:
                c.executemany(f"{head}?, ?, {sender_sql}, ?, ?, ?, ?, ?, {now_sql})", other)
            if keep:
                c.execute(
                    "UPDATE journal SET sender = ?, messages = ? WHERE run_id = ? AND batch = ?",
                    (sender, _msgpack.encode([(m.seq, m.profile_id, m.phone) for m in keep]),
                     run_id, batch),
                )
            else:
                c.execute("DELETE FROM journal WHERE run_id = ? AND batch = ?", (run_id, batch))
            if not (keep and keep_sending):
                c.execute(
                    "DELETE FROM journal_sending WHERE run_id = ? AND batch = ?", (run_id, batch)
                )
            ids = [o.provider_id for o in outcomes if o.provider_id]
            if ids:
                self._apply_pending(c, sender, ids)

    async def apply_receipts(
        self, gateway: str, receipts: Sequence[Receipt], *, senders: Sequence[str],
        cap: int = 100_000, ttl: float = 7 * 86400.0, now: float | None = None,
    ) -> ReceiptReport:
        now = time.time() if now is None else now
        ours = frozenset(senders)
        # Receipts for one message are applied in the order they happened; the sort is
        # stable, so ties and receipts without ``at`` keep the order they came in.
        ordered = sorted(receipts, key=lambda r: now if r.at is None else r.at)
        with self._tx() as c:
            # Once per call, each through its index: receipts that waited too long.
            c.execute("DELETE FROM receipts_pending WHERE expires_at <= ?", (now,))
            c.execute("DELETE FROM receipts_pending WHERE received_at < ?", (now - ttl,))
            # Each sender belongs to one gateway: the one whose receipts came last for it.
            c.execute(
                "DELETE FROM receipt_senders WHERE gateway = ?"
                " AND sender NOT IN (SELECT value FROM json_each(?))",
                (gateway, _json.encode(sorted(ours))),
            )
            c.executemany(
                "INSERT INTO receipt_senders (sender, gateway) VALUES (?, ?)"
                " ON CONFLICT (sender) DO UPDATE SET gateway = excluded.gateway",
                [(s, gateway) for s in sorted(ours)],
            )
        total = [0, 0, 0, 0]
        for start in range(0, len(ordered), RECEIPT_CHUNK):
            if start:
                await anyio.lowlevel.checkpoint()  # let the loop breathe between chunks
            with self._tx() as c:
                counts = self._apply_chunk(
                    c, gateway, ordered[start:start + RECEIPT_CHUNK], ours, cap, ttl, now
                )
            total = [a + b for a, b in zip(total, counts, strict=True)]
        return ReceiptReport(*total)

    @staticmethod
    def _apply_chunk(
        c: sqlite3.Connection, gateway: str, chunk: Sequence[Receipt],
        ours: frozenset[str], cap: int, ttl: float, now: float,
    ) -> tuple[int, int, int, int]:
        """(matched, pending, ignored, dropped) of a chunk of ``apply_receipts``, in order,
        with one read of the recipients and of the kept receipts their ids name."""
        matched = pending = ignored = dropped = 0
        ids = _json.encode(list({r.provider_id for r in chunk}))
        # [run id, seq, state] of the gateway's recipients: another gateway's are not seen
        targets: dict[str, list[list[Any]]] = {}
        for pid, run_id, seq, state, sender in c.execute(
            "SELECT provider_id, run_id, seq, state, sender FROM recipients"
            " WHERE provider_id IN (SELECT value FROM json_each(?))", (ids,)
        ):
            if sender in ours:
                targets.setdefault(pid, []).append([run_id, seq, State(state)])
        kept: dict[str, State] = {
            pid: State(status) for pid, status in c.execute(
                "SELECT provider_id, status FROM receipts_pending WHERE gateway = ?"
                " AND provider_id IN (SELECT value FROM json_each(?))", (gateway, ids))
        }
        moves: dict[tuple[int, int], tuple[str, str | None, float]] = {}
        keep: dict[str, tuple[Any, ...]] = {}
        for r in chunk:
            new = State(r.status)
            found = targets.get(r.provider_id)
            if found is None:
                # Kept for its message; it replaces a receipt kept for the same id only
                # where a recipient in that receipt's state could move to this one's.
                old = kept.get(r.provider_id)
                if old is None or can_move(old, new):
                    kept[r.provider_id] = new
                    keep[r.provider_id] = (gateway, r.provider_id, r.status, r.error, r.at,
                                           now, now + ttl)
                    pending += 1
                else:
                    ignored += 1
                continue
            for target in found:
                if can_move(target[2], new):
                    # the error of the state reached: a delivery clears an earlier one
                    target[2] = new
                    moves[target[0], target[1]] = (r.status, r.error,
                                                   now if r.at is None else r.at)
                    matched += 1
                else:
                    ignored += 1
        c.executemany(
            "UPDATE recipients SET state = ?, error = ?, updated_at = ?"
            " WHERE run_id = ? AND seq = ?",
            [(*move, run_id, seq) for (run_id, seq), move in moves.items()],
        )
        if keep:
            c.executemany(
                "INSERT INTO receipts_pending (gateway, provider_id, status, error, at,"
                " received_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (gateway, provider_id) DO UPDATE SET status = excluded.status,"
                " error = excluded.error, at = excluded.at,"
                " received_at = excluded.received_at, expires_at = excluded.expires_at",
                keep.values(),
            )
            if cap:
                (n,) = c.execute(
                    "SELECT count(*) FROM receipts_pending WHERE gateway = ?", (gateway,)
                ).fetchone()
                if n > cap:
                    dropped = c.execute(
                        "DELETE FROM receipts_pending WHERE rowid IN (SELECT rowid FROM"
                        " receipts_pending WHERE gateway = ? ORDER BY received_at, rowid"
                        " LIMIT ?)", (gateway, n - cap),
                    ).rowcount
        return matched, pending, ignored, dropped

    def _apply_pending(
        self, c: sqlite3.Connection, sender: str, provider_ids: Sequence[str]
    ) -> None:
        """Receipts that arrived before their message was recorded by ``sender``: apply
        the ones its gateway sent that are not expired, as far as ``can_move`` allows, to
        that gateway's recipients only, and drop them all."""
        row = c.execute(
            "SELECT gateway FROM receipt_senders WHERE sender = ?", (sender,)
        ).fetchone()
        if row is None:  # no receipts ever came for this sender's gateway
            return
        (gateway,) = row
        if not c.execute(
            "SELECT EXISTS (SELECT 1 FROM receipts_pending WHERE gateway = ?)", (gateway,)
        ).fetchone()[0]:
            return
        ids = _json.encode(list(provider_ids))
        found = c.execute(
            "SELECT provider_id, status, error, at, received_at FROM receipts_pending"
            " WHERE gateway = ? AND provider_id IN (SELECT value FROM json_each(?))"
            " AND expires_at > ?",
            (gateway, ids, time.time()),
        ).fetchall()
        for provider_id, status, error, at, received in found:
            sources = [s.value for s in State if can_move(s, State(status))]
            c.execute(
                "UPDATE recipients SET state = ?, error = ?, updated_at = ?"
                " WHERE provider_id = ? AND state IN (SELECT value FROM json_each(?))"
                " AND sender IN (SELECT sender FROM receipt_senders WHERE gateway = ?)",
                (status, error, received if at is None else at, provider_id,
                 _json.encode(sources), gateway),
            )
        c.execute(
            "DELETE FROM receipts_pending WHERE gateway = ?"
            " AND provider_id IN (SELECT value FROM json_each(?))",
            (gateway, ids),
        )

    def _count_sent(
        self, c: sqlite3.Connection, run_id: int, sent: Sequence[tuple[int, str]]
    ) -> None:
        """Count (profile id, phone) messages in today's history, for sending policies.

        Counted when reserved, in the transaction that reserves them, so that a message
        still at its gateway counts too: a policy never lets one through twice. A message
        that then fails still counts (erring on the side of sending less)."""
        resource_id = self._run_resource.get(run_id)
        if resource_id is None:
            (name,) = c.execute(
                "SELECT m.resource FROM runs r JOIN mailings m ON m.id = r.mailing_id"
                " WHERE r.id = ?", (run_id,)).fetchone()
            resource_id = self._run_resource[run_id] = self.resource_id_sync(name)
        day = utc_day(time.time())
        # one statement per batch: binding a row at a time cost as much as the writes
        c.execute(
            f"INSERT INTO history_profile (profile_id, day, resource_id, n)"
            f" SELECT value, {day}, {int(resource_id)}, 1 FROM json_each(?) WHERE true"
            " ON CONFLICT DO UPDATE SET n = n + 1",
            (_json.encode([p for p, _ in sent]),),
        )
        c.execute(
            f"INSERT INTO history_contact (phone, day, n)"
            f" SELECT value, {day}, 1 FROM json_each(?) WHERE true"
            " ON CONFLICT DO UPDATE SET n = n + 1",
            (_json.encode([int(phone[1:]) for _, phone in sent]),),
        )

    async def policy_counts(
        self, policy: Policy, resource_id: int, keys: Sequence[int | str], now: float
    ) -> dict[int | str, int]:
        """Messages counted under ``policy`` in its window ending today, per profile id
        (or per E.164 phone for ``contact`` scope), for the keys that have any."""
        day = first_day(policy, now)
        if policy.key == "phone":
            rows = self.conn.execute(
                "SELECT phone, sum(n) FROM history_contact WHERE day >= ? AND phone IN"
                " (SELECT value FROM json_each(?)) GROUP BY phone",
                (day, _json.encode([int(str(k)[1:]) for k in keys])),
            )
            return {f"+{p}": int(n) for p, n in rows}
        resource = " AND resource_id = ?" if policy.scope == "profile_resource" else ""
        args: tuple[Any, ...] = (day, _json.encode(list(keys)))
        if resource:
            args += (resource_id,)
        rows = self.conn.execute(
            "SELECT profile_id, sum(n) FROM history_profile WHERE day >= ? AND profile_id IN"
            f" (SELECT value FROM json_each(?)){resource} GROUP BY profile_id",
            args,
        )
        return {int(p): int(n) for p, n in rows}

    async def journal(self, run_id: int) -> list[JournalBatch]:
        rows = self.conn.execute(
            "SELECT j.run_id, j.batch, j.sender, CASE WHEN s.batch IS NULL THEN 'reserved'"
            " ELSE 'sending' END, j.messages FROM journal j LEFT JOIN journal_sending s"
            " ON s.run_id = j.run_id AND s.batch = j.batch WHERE j.run_id = ? ORDER BY j.batch",
            (run_id,),
        ).fetchall()
        return [JournalBatch(r[0], r[1], r[2], r[3], _decode_entries(r[4])) for r in rows]

    async def recipient_phones(self, run_id: int, chunk: int = 5000) -> AsyncIterator[list[str]]:
        after = 0
        while True:
            rows = self.conn.execute(
                "SELECT seq, phone FROM recipients WHERE run_id = ? AND seq > ?"
                " AND state != 'skipped' ORDER BY seq LIMIT ?",
                (run_id, after, chunk),
            ).fetchall()
            if not rows:
                return
            after = rows[-1][0]
            yield [r[1] for r in rows]

    async def run_summary(self, run_id: int) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for state, reason, n in self.conn.execute(
            "SELECT state, coalesce(reason, ''), count(*) FROM recipients WHERE run_id = ?"
            " GROUP BY state, reason",
            (run_id,),
        ):
            out.setdefault(state, {})[reason] = n
        return out

    async def aclose(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
        self.conn.close()

    # -- inspection helpers (tests, CLI) -----------------------------------------------

    def recipients(self, run_id: int) -> list[tuple[Any, ...]]:
        """Every recipient row of a run as (seq, profile_id, phone, state, reason)."""
        return self.conn.execute(
            "SELECT seq, profile_id, phone, state, reason FROM recipients WHERE run_id = ?"
            " ORDER BY seq",
            (run_id,),
        ).fetchall()


def _sql_text(value: str) -> str:
    """A string as an SQL literal."""
    return "'" + value.replace("'", "''") + "'"


class _Transaction:
    """``with`` block around BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
