"""Subscriptions one at a time, for the API (SubscriptionStore).

A resource has one channel, so its subscriptions are all of that channel: these read and
unsubscribe a resource's whatever it is, and ``subscribe`` gives a new one the channel of
its address (an email address has an ``@``, an E.164 phone never)."""

from __future__ import annotations

import time
from typing import Any, Final

import psycopg

from engine.errors import NotFound
from engine.store.base import SubscriptionRow, SubscriptionStore
from engine.store.postgres.connection import PgBase

__all__ = ["DDL", "PgSubscriptions"]

#: This role's tables, in the first migration (``schema.py``).
DDL = """
CREATE TABLE subscriptions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    profile_id bigint NOT NULL REFERENCES profiles(id) ON DELETE CASCADE,
    resource_id bigint NOT NULL REFERENCES resources(id),
    channel text NOT NULL DEFAULT 'sms',
    phone text NOT NULL,
    status text NOT NULL DEFAULT 'subscribed',
    priority integer NOT NULL DEFAULT 0,
    fields jsonb,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    UNIQUE (profile_id, resource_id, channel, phone)
);
CREATE INDEX subscriptions_pick
    ON subscriptions(profile_id, resource_id, channel, status, priority DESC);
CREATE INDEX subscriptions_phone ON subscriptions(phone, resource_id);
"""


_SELECT: Final = (
    "SELECT s.profile_id, d.name, s.phone, s.channel, s.status, s.priority, s.created_at,"
    " s.updated_at FROM subscriptions s JOIN profiles p ON p.id = s.profile_id"
    " JOIN databases d ON d.id = p.database_id"
    " WHERE s.resource_id = %s"
)
_BIGINT: Final = range(-(2**63), 2**63)


class PgSubscriptions(PgBase, SubscriptionStore):
    async def find_subscriptions(
        self, resource_id: int, *, profile_id: int | None = None, phone: str | None = None,
        database_id: int | None = None, limit: int = 1000,
    ) -> list[SubscriptionRow]:
        if any(i is not None and i not in _BIGINT for i in (profile_id, database_id)):
            return []
        sql = _SELECT
        args: list[Any] = [resource_id]
        if profile_id is not None:
            sql += " AND s.profile_id = %s"
            args.append(profile_id)
        if phone is not None:
            sql += " AND s.phone = %s"
            args.append(phone)
        if database_id is not None:
            sql += " AND p.database_id = %s"
            args.append(database_id)
        sql += " ORDER BY s.profile_id, s.priority DESC, s.id LIMIT %s"
        args.append(limit)
        rows = await self.db.fetchall(sql, args)
        return [SubscriptionRow(int(r[0]), r[1], r[2], r[3], r[4], int(r[5]), float(r[6]),
                                float(r[7])) for r in rows]

    async def profile_phone(self, profile_id: int) -> tuple[int, str | None] | None:
        if profile_id not in _BIGINT:
            return None
        row = await self.db.fetchone(
            "SELECT database_id, phone FROM profiles WHERE id = %s", (profile_id,))
        return None if row is None else (int(row[0]), row[1])

    async def subscribe(self, resource_id: int, profile_id: int, phone: str) -> int:
        now = time.time()
        try:
            return await self.db.execute(
                "INSERT INTO subscriptions (profile_id, resource_id, channel, phone, status,"
                " created_at, updated_at) VALUES (%s, %s, %s, %s, 'subscribed', %s, %s)"
                " ON CONFLICT (profile_id, resource_id, channel, phone) DO UPDATE"
                " SET status = 'subscribed', updated_at = excluded.updated_at"
                " WHERE subscriptions.status <> 'subscribed'",
                (profile_id, resource_id, "email" if "@" in phone else "sms", phone, now,
                 now),
            )
        except psycopg.errors.ForeignKeyViolation:
            raise NotFound(f"no profile with id {profile_id}") from None

    async def unsubscribe_phone(
        self, resource_id: int, phone: str, *, profile_id: int | None = None,
        database_id: int | None = None,
    ) -> int:
        if any(i is not None and i not in _BIGINT for i in (profile_id, database_id)):
            return 0
        sql = ("UPDATE subscriptions SET status = 'unsubscribed', updated_at = %s"
               " WHERE resource_id = %s AND phone = %s"
               " AND status <> 'unsubscribed'")
        args: list[Any] = [time.time(), resource_id, phone]
        if profile_id is not None:
            sql += " AND profile_id = %s"
            args.append(profile_id)
        if database_id is not None:
            sql += " AND profile_id IN (SELECT id FROM profiles WHERE database_id = %s)"
            args.append(database_id)
        return await self.db.execute(sql, args)
