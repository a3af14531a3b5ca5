"""Profile databases, resources, profiles and their subscriptions (ProfileStore)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from engine.core.emails import normalise_email
from engine.errors import InputError, NotFound
from engine.store.base import DatabaseRow, ImportRecord, ImportResult, ProfileRow
from engine.store.sqlite.connection import CHANNELS, SQLiteBase, sql_text

__all__ = ["SQLiteProfiles"]

_json = msgspec.json.Encoder()
_decode_dict = msgspec.json.Decoder(dict[str, Any]).decode
_sql_text = sql_text


def _key_column(matching: str) -> str:
    """The SQL expression profiles are matched on by ``matching`` (in ``profiles``)."""
    if matching in ("phone", "email", "id"):
        return matching
    if matching.startswith("field:") and len(matching) > 6 and '"' not in matching:
        # A custom field's value, as text (a number stored by the API matches too).
        path = _sql_text(f'$."{matching[6:]}"')
        return f"CAST(json_extract(fields, {path}) AS TEXT)"
    raise InputError(f"matching must be phone, email, id or field:NAME, not {matching!r}")


class SQLiteProfiles(SQLiteBase):
    async def database_id(self, name: str, *, create: bool = False) -> int:
        return self._database_id(name, create=create)

    def _database_id(self, name: str, *, create: bool = False) -> int:
        row = self.conn.execute("SELECT id FROM databases WHERE name = ?", (name,)).fetchone()
        if row:
            return int(row[0])
        if not create:
            raise NotFound(f"no profile database named {name!r}")
        cur = self.conn.execute(
            "INSERT INTO databases (name, created_at) VALUES (?, ?)", (name, time.time())
        )
        return int(cur.lastrowid or 0)

    async def database_name(self, database_id: int) -> str:
        row = self.conn.execute("SELECT name FROM databases WHERE id = ?",
                                (database_id,)).fetchone()
        if row is None:
            raise NotFound(f"no profile database with id {database_id}")
        return str(row[0])

    async def resource_id(self, name: str) -> int:
        return self._resource_id(name)

    # Synchronous forms, for the tests and scripts that predate the async protocol.
    database_id_sync = _database_id

    def resource_id_sync(self, name: str) -> int:
        return self._resource_id(name)

    async def import_profiles(
        self,
        database_id: int,
        records: Sequence[ImportRecord],
        *,
        matching: str,
        resource_id: int | None,
        mode: str = "add+update",
        channel: Literal["sms", "email"] = "sms",
    ) -> ImportResult:
        if mode not in ("add+update", "add", "update"):
            raise InputError(f"mode must be add+update, add or update, not {mode!r}")
        if channel not in CHANNELS:
            raise InputError(f"channel must be sms or email, not {channel!r}")
        by_email = channel == "email" and resource_id is not None
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
                # the address subscribed: the phone, or the email normalised; a bad email
                # rejects its record, as the importer rejects a bad phone
                address = rec.phone
                if by_email:
                    try:
                        address = normalise_email(rec.email) if rec.email else None
                    except InputError as err:
                        rejected.append((index, str(err)))
                        continue
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
                if resource_id is not None and address:
                    subscribe.append((pid, resource_id, address, now, now))
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
                f" created_at, updated_at) VALUES (?, ?, '{channel}', ?, 'subscribed', ?, ?)"
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
        column = _key_column(matching)
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
                " AND resource_id = ?",
                [(status, time.time(), p, resource_id) for p in profile_ids],
            )
            return c.total_changes - before

    async def find_profiles(
        self, database_id: int, key: str, values: Sequence[str]
    ) -> dict[str, int]:
        if key not in ("phone", "email") and not key.startswith("field:"):
            raise InputError(f"profiles are found by phone, email or field:NAME, not {key!r}")
        column = _key_column(key)
        found: dict[str, int] = {}
        for value, pid in self.conn.execute(
            f"SELECT {column} AS k, min(id) FROM profiles WHERE database_id = ? AND k IN"
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

    async def database_rows(self) -> list[DatabaseRow]:
        return [DatabaseRow(int(i), name, int(n)) for i, name, n in self.conn.execute(
            "SELECT d.id, d.name, (SELECT count(*) FROM profiles p WHERE p.database_id = d.id)"
            " FROM databases d ORDER BY d.name"
        )]

    async def profile_page(
        self, database_id: int, after_id: int, limit: int
    ) -> list[ProfileRow]:
        return [ProfileRow(int(i), phone, email, _decode_dict(fields) if fields else {})
                for i, phone, email, fields in self.conn.execute(
                    "SELECT id, phone, email, fields FROM profiles WHERE database_id = ?"
                    " AND id > ? ORDER BY id LIMIT ?", (database_id, after_id, limit))]
