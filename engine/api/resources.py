"""Resources and their SMS subscriptions: read, subscribe, unsubscribe.

``GET /api/v1/resources``, ``GET /api/v1/resources/{name}/subscriptions?profile_id=|phone=``,
``POST /api/v1/resources/{name}/subscribe`` and ``.../unsubscribe``.

A subscription belongs to a profile and carries the phone messages go to. Subscribing a
profile (``profile_id``) uses its phone unless one is given; subscribing a ``phone`` in a
``database`` finds the profile with that phone there, or creates it. Unsubscribing by
``phone`` touches only that phone's subscriptions.

The queries that the ``Store`` interface lacks are here, over the SQLite connection (see
``_Subscriptions``), until they move into the store.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Annotated, Any

import msgspec
from litestar import get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import Meta

from engine.api.auth import guarded
from engine.api.errors import ApiError
from engine.api.state import MAX_ID, ApiState, Req, api_state
from engine.errors import NotFound
from engine.store.base import ImportRecord

__all__ = [
    "ROUTES",
    "Resource",
    "ResourceList",
    "SubscribeBody",
    "Subscription",
    "SubscriptionList",
    "UnsubscribeBody",
]

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Id = Annotated[int, Meta(ge=1, le=MAX_ID)]
Phone = Annotated[str, Meta(min_length=1, max_length=64)]


class Resource(msgspec.Struct):
    id: int
    name: str
    channel: str
    virtual_sender: str
    #: The profile databases the resource is limited to (empty: any).
    databases: list[str]
    unsubscribe_url: str | None


class ResourceList(msgspec.Struct):
    resources: list[Resource]


class Subscription(msgspec.Struct):
    profile_id: int
    database: str
    phone: str
    channel: str
    #: subscribed, unsubscribed, suspended or invalid.
    status: str
    priority: int
    created_at: float
    updated_at: float


class SubscriptionList(msgspec.Struct):
    resource: str
    subscriptions: list[Subscription]
    #: Subscriptions a subscribe or unsubscribe call changed.
    changed: int = 0


class SubscribeBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``profile_id`` (with its own phone, or ``phone``), or ``phone`` and ``database``."""

    profile_id: Id | None = None
    phone: Phone | None = None
    database: Name | None = None


class UnsubscribeBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A profile's subscriptions (only ``phone``'s, if given), or every subscription of
    ``phone`` (in ``database``, if given)."""

    profile_id: Id | None = None
    phone: Phone | None = None
    database: Name | None = None


_SELECT = (
    "SELECT s.profile_id, d.name, s.phone, s.channel, s.status, s.priority, s.created_at,"
    " s.updated_at FROM subscriptions s JOIN profiles p ON p.id = s.profile_id"
    " JOIN databases d ON d.id = p.database_id WHERE s.resource_id = ? AND s.channel = 'sms'"
)


class _Subscriptions:
    """SQL the Store interface does not have yet. Each method is one short statement."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def find(self, resource_id: int, *, profile_id: int | None = None,
             phone: str | None = None, database_id: int | None = None) -> list[Subscription]:
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
        sql += " ORDER BY s.profile_id, s.priority DESC, s.id LIMIT 1000"
        return [Subscription(*row) for row in self.conn.execute(sql, args)]

    def profile(self, profile_id: int) -> tuple[int, str | None] | None:
        """(database id, phone) of a profile."""
        row = self.conn.execute(
            "SELECT database_id, phone FROM profiles WHERE id = ?", (profile_id,)
        ).fetchone()
        return None if row is None else (int(row[0]), row[1])

    def subscribe(self, resource_id: int, profile_id: int, phone: str) -> int:
        now = time.time()
        cur = self.conn.execute(
            "INSERT INTO subscriptions (profile_id, resource_id, channel, phone, status,"
            " created_at, updated_at) VALUES (?, ?, 'sms', ?, 'subscribed', ?, ?)"
            " ON CONFLICT (profile_id, resource_id, channel, phone) DO UPDATE"
            " SET status = 'subscribed', updated_at = excluded.updated_at"
            " WHERE status != 'subscribed'",
            (profile_id, resource_id, phone, now, now),
        )
        return cur.rowcount

    def unsubscribe_phone(self, resource_id: int, phone: str, *,
                          profile_id: int | None, database_id: int | None) -> int:
        sql = ("UPDATE subscriptions SET status = 'unsubscribed', updated_at = ?"
               " WHERE resource_id = ? AND channel = 'sms' AND phone = ?"
               " AND status != 'unsubscribed'")
        args: list[Any] = [time.time(), resource_id, phone]
        if profile_id is not None:
            sql += " AND profile_id = ?"
            args.append(profile_id)
        if database_id is not None:
            sql += " AND profile_id IN (SELECT id FROM profiles WHERE database_id = ?)"
            args.append(database_id)
        return self.conn.execute(sql, args).rowcount


def _resource(state: ApiState, name: str) -> None:
    if name not in state.herald.config.resources:
        raise ApiError(404, f"no resource {name!r} in the config", "name")


def _phone(state: ApiState, raw: str | None) -> str | None:
    if raw is None:
        return None
    e164 = state.normaliser.normalise(raw.strip())
    if e164 is None:
        raise ApiError(400, f"not a phone number: {raw!r}", "phone")
    return e164


async def _database(state: ApiState, name: str | None) -> int | None:
    if name is None:
        return None
    try:
        return await state.herald.store.database_id(name)
    except NotFound as err:
        raise ApiError(404, str(err), "database") from None


@get("/resources", **guarded("viewer"), tags=["resources"],
     summary="List resources")
async def list_resources(request: Req) -> ResourceList:
    """The resources of the config, with their ids."""
    state = api_state(request)
    out = []
    for name, res in sorted(state.herald.config.resources.items()):
        out.append(Resource(
            id=await state.herald.store.resource_id(name), name=name, channel=res.channel,
            virtual_sender=res.virtual_sender, databases=list(res.databases),
            unsubscribe_url=res.unsubscribe_url,
        ))
    return ResourceList(out)


@get("/resources/{name:str}/subscriptions", **guarded("viewer", 400, 404),
     tags=["resources"], summary="Read subscriptions")
async def read_subscriptions(
    request: Req,
    name: FromPath[str],
    profile_id: Annotated[int | None, QueryParameter(ge=1, le=MAX_ID)] = None,
    phone: Annotated[str | None, QueryParameter(min_length=1, max_length=64)] = None,
) -> SubscriptionList:
    """A profile's subscriptions to the resource, or a phone's (give one or both)."""
    state = api_state(request)
    _resource(state, name)
    if profile_id is None and phone is None:
        raise ApiError(400, "give profile_id or phone", "profile_id")
    e164 = _phone(state, phone)
    rid = await state.herald.store.resource_id(name)
    found = _Subscriptions(state.store.conn).find(rid, profile_id=profile_id, phone=e164)
    return SubscriptionList(name, found)


@post("/resources/{name:str}/subscribe", **guarded("sender", 400, 404, 413),
      tags=["resources"], summary="Subscribe", status_code=200)
async def subscribe(
    request: Req, name: FromPath[str], data: JSONBody[SubscribeBody]
) -> SubscriptionList:
    """Subscribe a profile, or a phone in a database (its profile is created if need be)."""
    state = api_state(request)
    _resource(state, name)
    sql = _Subscriptions(state.store.conn)
    store = state.herald.store
    rid = await store.resource_id(name)
    phone = _phone(state, data.phone)
    database_id = await _database(state, data.database)
    if data.profile_id is not None:
        profile = sql.profile(data.profile_id)
        if profile is None:
            raise ApiError(404, f"no profile with id {data.profile_id}", "profile_id")
        if database_id is not None and profile[0] != database_id:
            raise ApiError(400, f"profile {data.profile_id} is not in database"
                           f" {data.database!r}", "database")
        phone = phone or profile[1]
        if phone is None:
            raise ApiError(400, f"profile {data.profile_id} has no phone: give one", "phone")
        pid = data.profile_id
    elif phone is not None:
        if database_id is None:
            raise ApiError(400, "give the database to find (or create) the phone's profile in",
                           "database")
        found = await store.find_profiles(database_id, "phone", [phone])
        if phone not in found:
            await store.import_profiles(
                database_id, [ImportRecord(phone, phone, None, {"phones": [phone]})],
                matching="phone", resource_id=None, mode="add",
            )
            found = await store.find_profiles(database_id, "phone", [phone])
        pid = found[phone]
    else:
        raise ApiError(400, "give profile_id, or phone and database", "profile_id")
    changed = sql.subscribe(rid, pid, phone)
    return SubscriptionList(name, sql.find(rid, profile_id=pid), changed)


@post("/resources/{name:str}/unsubscribe", **guarded("sender", 400, 404, 413),
      tags=["resources"], summary="Unsubscribe", status_code=200)
async def unsubscribe(
    request: Req, name: FromPath[str], data: JSONBody[UnsubscribeBody]
) -> SubscriptionList:
    """Unsubscribe a profile (all its phones, or ``phone``), or a phone everywhere."""
    state = api_state(request)
    _resource(state, name)
    sql = _Subscriptions(state.store.conn)
    rid = await state.herald.store.resource_id(name)
    phone = _phone(state, data.phone)
    database_id = await _database(state, data.database)
    if data.profile_id is not None and phone is None:
        if sql.profile(data.profile_id) is None:
            raise ApiError(404, f"no profile with id {data.profile_id}", "profile_id")
        changed = await state.herald.store.set_subscription_status(
            rid, [data.profile_id], "unsubscribed"
        )
    elif phone is not None:
        changed = sql.unsubscribe_phone(rid, phone, profile_id=data.profile_id,
                                        database_id=database_id)
    else:
        raise ApiError(400, "give profile_id or phone", "profile_id")
    found = sql.find(rid, profile_id=data.profile_id, phone=phone, database_id=database_id)
    return SubscriptionList(name, found, changed)


ROUTES = [list_resources, read_subscriptions, subscribe, unsubscribe]
