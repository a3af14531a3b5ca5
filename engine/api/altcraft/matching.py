"""Altcraft's ids and matching, in Herald's terms.

``db_id`` and ``resource_id`` are the numeric ids ``/api/v1`` lists (or the names);
``matching`` (``email``, ``phone``, ``profile_id``, ``custom`` with ``field_name`` and
``field_value``) becomes the store's key (``email``, ``phone``, ``id``, ``field:NAME``) and
a normalised value, and a batch of them is looked up with one query per key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import msgspec

from engine.api.altcraft.envelope import Refused
from engine.api.state import MAX_ID, ApiState
from engine.errors import NotFound
from engine.store.base import Store

__all__ = ["Resources", "Who", "database_of", "find_profiles", "resource_in", "resources",
           "text_of", "who"]


class Who(NamedTuple):
    """How a call names its profile: the store's key and the value, normalised."""

    key: str
    value: str | int
    #: The body's field that gave it (for the error of a profile not found).
    field: str


def text_of(value: str | int | float | bool) -> str:
    """A custom field's value as the store compares it: a string as is, else its JSON."""
    return value if isinstance(value, str) else msgspec.json.encode(value).decode()


def who(
    matching: str, normalise: Callable[[str], str | None], *, where: str = "",
    email: str | None = None, phone: str | None = None, profile_id: int | str | None = None,
    field_name: str | None = None, field_value: str | int | float | bool | None = None,
) -> Who:
    """The profile ``matching`` names with these values; a 400 naming the field at fault
    (prefixed by ``where``, e.g. ``data[3].``) when its value is missing or wrong."""
    if matching == "email":
        if email is None:
            raise Refused(400, f"{where}email: required with matching email")
        return Who("email", email.strip().lower(), f"{where}email")
    if matching == "phone":
        if phone is None:
            raise Refused(400, f"{where}phone: required with matching phone")
        e164 = normalise(phone.strip())
        if e164 is None:
            raise Refused(400, f"{where}phone: not a phone number: {phone!r}")
        return Who("phone", e164, f"{where}phone")
    if matching == "profile_id":
        if profile_id is None:
            raise Refused(400, f"{where}profile_id: required with matching profile_id")
        pid = int(profile_id)
        if not 0 < pid <= MAX_ID:
            raise Refused(400, f"{where}profile_id: not a profile id: {profile_id!r}")
        return Who("id", pid, f"{where}profile_id")
    if field_name is None:
        raise Refused(400, f"{where}field_name: required with matching custom")
    if '"' in field_name or not field_name.isprintable():
        raise Refused(400, f"{where}field_name: printable characters but a double quote")
    if field_value is None:
        raise Refused(400, f"{where}field_value: required with matching custom")
    return Who(f"field:{field_name}", text_of(field_value), f"{where}field_value")


async def find_profiles(
    store: Store, database_id: int, whos: Sequence[Who | None]
) -> list[int | None]:
    """The profile of the database each ``Who`` names (None: none, or no ``Who``); the
    oldest one when several match."""
    by_key: dict[str, set[str | int]] = {}
    for w in whos:
        if w is not None:
            by_key.setdefault(w.key, set()).add(w.value)
    found: dict[tuple[str, str | int], int] = {}
    for key, values in by_key.items():
        if key == "id":
            ids = [v for v in values if isinstance(v, int)]
            found.update((("id", i), i) for i in await store.profile_ids_in(database_id, ids))
        else:
            hits = await store.find_profiles(database_id, key, [str(v) for v in values])
            found.update(((key, v), pid) for v, pid in hits.items())
    return [None if w is None else found.get((w.key, w.value)) for w in whos]


#: Each resource of the config by its id and by its name: (id, name).
Resources = dict[int | str, tuple[int, str]]


async def resources(state: ApiState) -> Resources:
    """The config's resources, by id and name (a query each: read once per call)."""
    out: Resources = {}
    for name in state.herald.config.resources:
        rid = await state.store.resource_id(name)
        out[rid] = out[name] = (rid, name)
    return out


def resource_in(table: Resources, value: int | str, field: str) -> tuple[int, str]:
    """(id, name) of the resource a ``resource_id`` names; a 404 naming ``field``."""
    found = table.get(value)
    if found is None:
        shown = repr(value) if isinstance(value, str) else f"with id {value}"
        raise Refused(404, f"{field}: no resource {shown} in the config")
    return found


async def database_of(state: ApiState, value: int | str) -> tuple[int, str]:
    """(id, name) of the database a ``db_id`` names: a name is created on its first
    import, as ``/api/v1/profiles/import`` does; an id must be a database's."""
    store = state.store
    if isinstance(value, str):
        return await store.database_id(value, create=True), value
    try:
        return value, await store.database_name(value)
    except NotFound:
        raise Refused(404, f"db_id: no database with id {value}") from None
