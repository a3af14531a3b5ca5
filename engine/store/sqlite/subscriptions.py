"""Subscriptions one at a time, for the API (SubscriptionStore).

A resource has one channel, so these read and change a resource's subscriptions whatever
their channel; a new subscription's channel is its address's (``channel_of_address``:
an email address for an email resource, an E.164 phone for an SMS one)."""

from __future__ import annotations

import time
from typing import Any

from engine.store import base
from engine.store.sqlite.connection import SQLiteBase, channel_of_address

__all__ = ["SQLiteSubscriptions"]

_SELECT = (
    "SELECT s.profile_id, d.name, s.phone, s.channel, s.status, s.priority, s.created_at,"
    " s.updated_at FROM subscriptions s JOIN profiles p ON p.id = s.profile_id"
    " JOIN databases d ON d.id = p.database_id WHERE s.resource_id = ?"
)


class SQLiteSubscriptions(SQLiteBase, base.SubscriptionStore):
    async def find_subscriptions(
        self, resource_id: int, *, profile_id: int | None = None, phone: str | None = None,
        database_id: int | None = None, limit: int = 1000,
    ) -> list[base.SubscriptionRow]:
        sql = _SELECT
        args: list[Any] = [resource_id]
        if profile_id is not None:
            sql += " AND s.profile_id = ?"
            args.append(profile_id)
        if phone is not None:
            sql += " AND s.phone = ?"
            args.append(phone)
        if database_id is not None:
            sql += " AND p.database_id = ?"
            args.append(database_id)
        sql += " ORDER BY s.profile_id, s.priority DESC, s.id LIMIT ?"
        args.append(limit)
        return [base.SubscriptionRow(*row) for row in self.conn.execute(sql, args)]

    async def profile_phone(self, profile_id: int) -> tuple[int, str | None] | None:
        row = self.conn.execute(
            "SELECT database_id, phone FROM profiles WHERE id = ?", (profile_id,)
        ).fetchone()
        return None if row is None else (int(row[0]), row[1])

    async def subscribe(self, resource_id: int, profile_id: int, phone: str) -> int:
        now = time.time()
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO subscriptions (profile_id, resource_id, channel, phone, status,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, 'subscribed', ?, ?)"
                " ON CONFLICT (profile_id, resource_id, channel, phone) DO UPDATE"
                " SET status = 'subscribed', updated_at = excluded.updated_at"
                " WHERE status != 'subscribed'",
                (profile_id, resource_id, channel_of_address(phone), phone, now, now),
            )
            return cur.rowcount

    async def unsubscribe_phone(
        self, resource_id: int, phone: str, *, profile_id: int | None = None,
        database_id: int | None = None,
    ) -> int:
        sql = ("UPDATE subscriptions SET status = 'unsubscribed', updated_at = ?"
               " WHERE resource_id = ? AND phone = ?"
               " AND status != 'unsubscribed'")
        args: list[Any] = [time.time(), resource_id, phone]
        if profile_id is not None:
            sql += " AND profile_id = ?"
            args.append(profile_id)
        if database_id is not None:
            sql += " AND profile_id IN (SELECT id FROM profiles WHERE database_id = ?)"
            args.append(database_id)
        with self._tx() as c:
            return c.execute(sql, args).rowcount
