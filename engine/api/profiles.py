"""``POST /api/v1/profiles/import``: add or update profiles, each checked on its own.

A profile is a flat JSON object, like a row of a CSV import: ``phone``, ``email`` and ``id``
are matching keys (``phone`` also subscribes the profile to ``resource``), ``_fname``,
``_city``, ... standard fields, anything else a custom field; a null value is no value (an
update never erases one). A bad profile is reported as ``{"index", "field", "error"}`` and
the others still land, a thousand per transaction. A profile past ``[limits]
profile_fields`` or ``json_depth`` refuses the whole import (422/400) before anything lands.
Each call that imports adds an ``import_api`` event for the action hooks
(``engine.importing.events``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

import anyio.lowlevel
import anyio.to_thread
import msgspec
from litestar import post
from litestar.di import Provide
from msgspec import Meta

from engine.api.auth import guarded
from engine.api.bounds import deep_error, shape
from engine.api.errors import ApiError, decode_error
from engine.api.state import MAX_ID, Req, api_state
from engine.config import LimitsConfig
from engine.core.fields import FieldSpec, convert_value
from engine.errors import NotFound
from engine.importing.events import record_import
from engine.store.base import ImportRecord

__all__ = ["ROUTES", "ImportAnswer", "ImportBody", "ItemError"]

Name = Annotated[str, Meta(min_length=1, max_length=200)]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MODES = {"add": "add", "update": "update", "upsert": "add+update"}
#: Profiles written per transaction; other requests are served between chunks.
CHUNK = 1000


class ImportBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Profiles to import into ``database`` (created unless ``mode`` is ``update``)."""

    database: Name
    #: The key that finds a profile's existing record.
    matching: Literal["phone", "email", "id"]
    profiles: list[dict[str, Any]]
    #: Subscribe each profile to this resource: its phone, or its email for an email
    #: resource.
    resource: Name | None = None
    #: ``add``: profiles that match are skipped; ``update``: profiles that match nothing
    #: are rejected; ``upsert``: both.
    mode: Literal["add", "update", "upsert"] = "upsert"


class _ImportRaw(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``ImportBody`` with each profile raw: checked against ``[limits]`` before decoding."""

    database: Name
    matching: Literal["phone", "email", "id"]
    profiles: list[msgspec.Raw]
    resource: Name | None = None
    mode: Literal["add", "update", "upsert"] = "upsert"


_JSON_NAMES = {"list": "array", "str": "str", "int": "int", "float": "float",
               "bool": "bool", "NoneType": "null"}
_decode_body = msgspec.json.Decoder(_ImportRaw).decode
_decode_profile = msgspec.json.Decoder(dict[str, Any]).decode


def _decode(body: bytes, limits: LimitsConfig) -> _ImportRaw:
    if not body.strip():
        raise ApiError(400, "a JSON body is required")
    try:
        return _decode_body(body)
    except RecursionError:
        raise deep_error(limits) from None
    except msgspec.DecodeError as err:
        raise decode_error(err) from None


def _over_bounds(profiles: list[msgspec.Raw], limits: LimitsConfig) -> ApiError | None:
    """The first profile past ``profile_fields`` or ``json_depth``, as its answer (run in
    a worker thread: a scan in Python lets the loop have the GIL)."""
    for index, raw in enumerate(profiles):
        if not bytes(raw).startswith(b"{"):  # msgspec's own words, as Litestar's decode
            kind = msgspec.json.decode(raw).__class__.__name__
            return ApiError(400, f"Expected `object`, got `{_JSON_NAMES.get(kind, kind)}`",
                            f"profiles[{index}]")
        found = shape(bytes(raw), max_keys=limits.profile_fields,
                      max_depth=limits.json_depth)
        if found.depth > limits.json_depth:
            return deep_error(limits, f"profiles[{index}]")
        if found.keys > limits.profile_fields:
            return ApiError(422, f"profiles[{index}]: more than {limits.profile_fields:,}"
                            f" fields; [limits] profile_fields is {limits.profile_fields}",
                            f"profiles[{index}]")
    return None


class ItemError(msgspec.Struct):
    """A profile that was not imported: its index in ``profiles``, the field, why."""

    index: int
    field: str
    error: str


class ImportAnswer(msgspec.Struct):
    """Every profile is added, updated, skipped (it matched, in ``add`` mode) or rejected."""

    added: int
    updated: int
    skipped: int
    rejected: int
    errors: list[ItemError]


class _Bad(Exception):
    def __init__(self, field: str, error: str) -> None:
        self.field = field
        self.error = error


def profile_record(
    item: dict[str, Any], matching: str, normalise: Callable[[str], str | None],
    field_types: Mapping[str, FieldSpec] | None = None,
) -> ImportRecord:
    """The record a profile object stands for; ``_Bad`` names the faulty field."""
    fields: dict[str, Any] = {}
    phone = email = None
    pid: int | None = None
    for name, value in item.items():
        if value is None:
            continue
        if name == "phone":
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise _Bad(name, "expected a string")
            phone = normalise(value.strip()) if value.strip() else None
            if phone is None:
                raise _Bad(name, f"not a phone number: {value!r}")
            fields["phones"] = [phone]
        elif name == "email":
            if not isinstance(value, str) or not _EMAIL.match(value.strip()):
                raise _Bad(name, f"not an email address: {value!r}")
            email = value.strip().lower()
            fields["email"] = email
        elif name == "id":
            if isinstance(value, str) and value.isascii() and value.isdigit() \
                    and len(value) < 20:
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 0 < value <= MAX_ID:
                raise _Bad(name, f"expected a positive integer id, not {value!r}")
            pid = value
        elif not name or not name.isprintable() or len(name) > 200:
            raise _Bad(name, "a field name is 1 to 200 printable characters")
        elif field_types and name in field_types:
            try:
                fields[name] = convert_value(field_types[name], value)
            except ValueError as err:
                raise _Bad(name, str(err)) from None
        else:
            fields[name] = value
    key = {"phone": phone, "email": email, "id": pid}[matching]
    if key is None:
        raise _Bad(matching, f"missing: profiles are matched by {matching}")
    return ImportRecord(key, phone, email, fields)


async def _documented_body(data: ImportBody) -> None:
    """Never called (the route takes no ``_documented``): it hands the OpenAPI schema the
    body the route decodes itself."""


@post("/profiles/import", **guarded("sender", 400, 404, 413, 422), status_code=200,
      summary="Import profiles", tags=["profiles"],
      dependencies={"_documented": Provide(_documented_body)})
async def import_profiles(request: Req) -> ImportAnswer:
    """Add, update or upsert profiles; answers counts and each rejected profile."""
    state = api_state(request)
    store = state.herald.store
    limits = state.herald.config.limits
    # decoded here, not by Litestar: its profiles raw first (a 10 MB list of dicts would
    # hold the loop for half a second), each profile then checked, then decoded a chunk at
    # a time between the store's writes
    data = _decode(await request.body(), limits)
    if (refused := await anyio.to_thread.run_sync(_over_bounds, data.profiles, limits)):
        raise refused
    if data.resource is not None and data.resource not in state.herald.config.resources:
        raise ApiError(400, f"no resource {data.resource!r} in the config", "resource")
    try:
        database_id = await store.database_id(data.database, create=data.mode != "update")
    except NotFound as err:
        raise ApiError(404, str(err), "database") from None
    resource_id = await store.resource_id(data.resource) if data.resource else None
    # an email resource subscribes each profile's email, an SMS one its phone
    channel = state.herald.config.resources[data.resource].channel if data.resource \
        else "sms"
    normalise = state.normaliser.normalise
    field_types = state.herald.config.field_specs(data.database)
    answer = ImportAnswer(0, 0, 0, 0, [])
    records: list[ImportRecord] = []
    indexes: list[int] = []

    async def flush() -> None:
        result = await store.import_profiles(
            database_id, records, matching=data.matching, resource_id=resource_id,
            mode=_MODES[data.mode], channel=channel,
        )
        answer.added += result.added
        answer.updated += result.updated
        answer.skipped += result.skipped
        for i, reason in result.rejected:
            answer.errors.append(ItemError(indexes[i], data.matching, reason))
        records.clear()
        indexes.clear()
        await anyio.lowlevel.checkpoint()

    for index, raw in enumerate(data.profiles):
        try:
            item = _decode_profile(raw)
        except msgspec.ValidationError as err:
            raise ApiError(400, str(err).partition(" - at ")[0], f"profiles[{index}]") from None
        try:
            records.append(profile_record(item, data.matching, normalise, field_types))
        except _Bad as bad:
            answer.errors.append(ItemError(index, bad.field, bad.error))
            continue
        indexes.append(index)
        if len(records) >= CHUNK:
            await flush()
    if records:
        await flush()
    answer.errors.sort(key=lambda e: e.index)
    answer.rejected = len(answer.errors)
    await record_import(store, "import_api", database_id, answer,
                        source="/api/v1/profiles/import")
    return answer


ROUTES = [import_profiles]
