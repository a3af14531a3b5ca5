"""Resources and their subscriptions: read, subscribe, unsubscribe.

``GET /api/v1/resources``,
``GET /api/v1/resources/{name}/subscriptions?profile_id=|phone=|email=``,
``POST /api/v1/resources/{name}/subscribe`` and ``.../unsubscribe``.

A subscription belongs to a profile and carries the address messages go to: a phone for an
SMS resource, an email address (``email``, lowercased and normalised, as an import does)
for an email resource; the other channel's key is refused, naming it. Subscribing a
profile (``profile_id``) uses its phone (email) unless one is given; subscribing a
``phone`` (``email``) in a ``database`` finds the profile with it there, or creates it.
Unsubscribing by address touches only that address's subscriptions. The routes read and
write through the store's ``SubscriptionStore`` role.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import get, post
from litestar.params import FromPath, JSONBody, QueryParameter
from msgspec import Meta

from engine.api.auth import guarded
from engine.api.errors import ApiError
from engine.api.state import MAX_ID, ApiState, Req, api_state
from engine.errors import InputError, NotFound
from engine.store.base import ImportRecord, SubscriptionRow

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
Email = Annotated[str, Meta(min_length=1, max_length=320)]


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
    """``profile_id`` (with its own phone, or ``phone``), or ``phone`` and ``database``;
    ``email`` in place of ``phone`` for an email resource."""

    profile_id: Id | None = None
    phone: Phone | None = None
    email: Email | None = None
    database: Name | None = None


class UnsubscribeBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A profile's subscriptions (only ``phone``'s, if given), or every subscription of
    ``phone`` (in ``database``, if given); ``email`` in place of ``phone`` for an email
    resource."""

    profile_id: Id | None = None
    phone: Phone | None = None
    email: Email | None = None
    database: Name | None = None


def _rows(rows: list[SubscriptionRow]) -> list[Subscription]:
    return [Subscription(*row) for row in rows]


def _resource(state: ApiState, name: str) -> None:
    if name not in state.herald.config.resources:
        raise ApiError(404, f"no resource {name!r} in the config", "name")


def _address(state: ApiState, name: str, phone: str | None, email: str | None) -> str | None:
    """The normalised address a call gives for resource ``name``: its ``phone`` (SMS) or
    its ``email`` (email); the other channel's key is a 400 naming it."""
    if state.herald.config.resources[name].channel == "email":
        if phone is not None:
            raise ApiError(400, f"resource {name!r} sends email: give email, not phone",
                           "phone")
        if email is None:
            return None
        from engine.core.emails import normalise_email

        try:  # lowercased first, as imports do: profiles are matched by email so
            return normalise_email(email.lower())
        except InputError as err:
            raise ApiError(400, str(err), "email") from None
    if email is not None:
        raise ApiError(400, f"resource {name!r} sends SMS: give phone, not email", "email")
    return _phone(state, phone)


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
    email: Annotated[str | None, QueryParameter(min_length=1, max_length=320)] = None,
) -> SubscriptionList:
    """A profile's subscriptions to the resource, or an address's (give one or both)."""
    state = api_state(request)
    _resource(state, name)
    if profile_id is None and phone is None and email is None:
        raise ApiError(400, "give profile_id, or the address (phone; email for an email"
                       " resource)", "profile_id")
    e164 = _address(state, name, phone, email)
    store = state.store
    rid = await store.resource_id(name)
    found = await store.find_subscriptions(rid, profile_id=profile_id, phone=e164)
    return SubscriptionList(name, _rows(found))


@post("/resources/{name:str}/subscribe", **guarded("sender", 400, 404, 413),
      tags=["resources"], summary="Subscribe", status_code=200)
async def subscribe(
    request: Req, name: FromPath[str], data: JSONBody[SubscribeBody]
) -> SubscriptionList:
    """Subscribe a profile, or a phone in a database (its profile is created if need be)."""
    state = api_state(request)
    _resource(state, name)
    store = state.store
    rid = await store.resource_id(name)
    email = state.herald.config.resources[name].channel == "email"
    key = "email" if email else "phone"
    phone = _address(state, name, data.phone, data.email)
    database_id = await _database(state, data.database)
    if data.profile_id is not None:
        profile = await store.profile_phone(data.profile_id)
        if profile is None:
            raise ApiError(404, f"no profile with id {data.profile_id}", "profile_id")
        if database_id is not None and profile[0] != database_id:
            raise ApiError(400, f"profile {data.profile_id} is not in database"
                           f" {data.database!r}", "database")
        if phone is None:
            phone = await _profile_email(state, profile[0], data.profile_id) if email \
                else profile[1]
        if phone is None:
            raise ApiError(400, f"profile {data.profile_id} has no {key}: give one", key)
        pid = data.profile_id
    elif phone is not None:
        if database_id is None:
            raise ApiError(400, f"give the database to find (or create) the {key}'s profile"
                           " in", "database")
        lookup = phone
        found = await store.find_profiles(database_id, key, [lookup])
        if lookup not in found:
            record = ImportRecord(lookup, None, lookup, {"email": lookup}) if email else \
                ImportRecord(phone, phone, None, {"phones": [phone]})
            await store.import_profiles(database_id, [record], matching=key,
                                        resource_id=None, mode="add")
            found = await store.find_profiles(database_id, key, [lookup])
        pid = found[lookup]
    else:
        raise ApiError(400, f"give profile_id, or {key} and database", "profile_id")
    changed = await store.subscribe(rid, pid, phone)
    return SubscriptionList(name, _rows(await store.find_subscriptions(rid, profile_id=pid)),
                            changed)


@post("/resources/{name:str}/unsubscribe", **guarded("sender", 400, 404, 413),
      tags=["resources"], summary="Unsubscribe", status_code=200)
async def unsubscribe(
    request: Req, name: FromPath[str], data: JSONBody[UnsubscribeBody]
) -> SubscriptionList:
    """Unsubscribe a profile (all its phones, or ``phone``), or a phone everywhere."""
    state = api_state(request)
    _resource(state, name)
    store = state.store
    rid = await store.resource_id(name)
    phone = _address(state, name, data.phone, data.email)
    database_id = await _database(state, data.database)
    if data.profile_id is not None and phone is None:
        if await store.profile_phone(data.profile_id) is None:
            raise ApiError(404, f"no profile with id {data.profile_id}", "profile_id")
        changed = await store.set_subscription_status(rid, [data.profile_id], "unsubscribed")
    elif phone is not None:
        changed = await store.unsubscribe_phone(rid, phone, profile_id=data.profile_id,
                                                database_id=database_id)
    else:
        raise ApiError(400, "give profile_id or phone", "profile_id")
    found = await store.find_subscriptions(rid, profile_id=data.profile_id, phone=phone,
                                           database_id=database_id)
    return SubscriptionList(name, _rows(found), changed)


async def _profile_email(state: ApiState, database_id: int, profile_id: int) -> str | None:
    """The email of profile ``profile_id`` (of ``database_id``), normalised."""
    from engine.core.emails import normalise_email

    rows = await state.store.profile_page(database_id, profile_id - 1, 1)
    if not rows or rows[0].id != profile_id or not rows[0].email:
        return None
    try:
        return normalise_email(rows[0].email)
    except InputError:
        return None


ROUTES = [list_resources, read_subscriptions, subscribe, unsubscribe]
