"""``profiles/import`` and ``import_batch``: Altcraft's profile imports, through the same
machinery as ``/api/v1/profiles/import`` (``profile_record``, ``Store.import_profiles``,
``[limits]`` checks on the raw profiles).

A profile's ``data`` holds its fields (``phone``, ``email``, ``_fname``..., custom ones)
and its ``subscriptions``; ``matching`` finds the profile it updates (else it is added).
Each subscription (``resource_id``, ``channel``, ``phone`` or ``email``, ``status``,
``priority``) subscribes the address (its own, else the profile's: the phone for ``sms``,
the email for ``email``, which must be the resource's channel) to the resource, or, with a
status other than ``subscribed``, sets the status of the profile's subscriptions to the
resource. ``priority`` is not kept (the store has no way to set it).
Every call records an ``import_api`` event for the action hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, NamedTuple

import anyio.lowlevel
import anyio.to_thread
import msgspec
from msgspec import Meta

from engine.api.altcraft.bodies import (
    Email,
    FieldValue,
    IdOrName,
    ImportAnswer,
    ImportBatchAnswer,
    ImportBatchRaw,
    ImportItemAnswer,
    ImportRaw,
    Phone,
    ProfileId,
)
from engine.api.altcraft.envelope import OK, Refused, decode, from_api_error
from engine.api.altcraft.matching import Resources, Who, database_of, resource_in, resources, who
from engine.api.bounds import deep_error, shape
from engine.api.profiles import _EMAIL, CHUNK, _Bad, profile_record
from engine.api.state import ApiState, Req
from engine.config import LimitsConfig
from engine.core.fields import FieldSpec
from engine.errors import InputError
from engine.importing.events import record_import
from engine.store.base import ImportRecord

__all__ = ["import_batch", "import_profile"]

Status = Literal["subscribed", "unsubscribed", "suspended", "invalid"]


class _Subscription(msgspec.Struct, kw_only=True):
    """A subscription of a profile's ``data``; Altcraft's other keys (``cc_data``,
    ``custom_fields``, ``date``...) are ignored."""

    resource_id: IdOrName
    channel: Annotated[str, Meta(max_length=40)] = "sms"
    phone: Phone | None = None
    email: Annotated[str, Meta(max_length=320)] | None = None
    status: Status = "subscribed"
    #: Accepted, not kept.
    priority: int = 0


class _Top(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A batch item in the wrapped form: the matching value beside the profile's data."""

    matching: str | None = None
    email: Email | None = None
    phone: Phone | None = None
    profile_id: ProfileId | None = None
    field_value: FieldValue | None = None
    data: dict[str, Any]


class _Sub(NamedTuple):
    resource_id: int
    #: The address (a phone, an email) subscribed; None with a status other than
    #: subscribed (it applies to every address).
    phone: str | None
    status: str


class _Item(NamedTuple):
    """A profile ready to import: its record (keyed by ``matching``) and subscriptions."""

    record: ImportRecord
    subscriptions: list[_Sub]


class _Call(NamedTuple):
    """What every profile of a call shares."""

    state: ApiState
    matching: str
    field_name: str | None
    field_types: Mapping[str, FieldSpec]
    resources: Resources
    skip_invalid: bool

    @property
    def normalise(self) -> Callable[[str], str | None]:
        return self.state.normaliser.normalise


_decode_one = msgspec.json.Decoder(ImportRaw).decode
_decode_batch = msgspec.json.Decoder(ImportBatchRaw).decode
_decode_profile = msgspec.json.Decoder(dict[str, Any]).decode
_WRAPPED = frozenset(_Top.__struct_fields__)


def _fields(data: dict[str, Any], call: _Call, where: str) -> ImportRecord:
    """The record of a profile's fields, keyed by none yet."""
    # profile_record wants the key it matches on: "id", which Altcraft's data never
    # holds (its profile_id is taken out before), is given one, then dropped
    probe = {k: v for k, v in data.items() if k != "id"}
    probe["id"] = 1
    try:
        record = profile_record(probe, "id", call.normalise, call.field_types)
    except _Bad as bad:
        raise Refused(400, f"{where}{bad.field}: {bad.error}") from None
    return record._replace(key=None)


def _keyed(record: ImportRecord, target: Who) -> ImportRecord:
    """The record keyed by ``target``, the matching value kept in the profile (a new one
    has it: it is found by it)."""
    record = record._replace(key=target.value)
    value = target.value
    if target.key == "email" and record.email is None:
        assert isinstance(value, str)
        if not _EMAIL.match(value):
            raise Refused(400, f"{target.field}: not an email address: {value!r}")
        return record._replace(email=value, fields={**record.fields, "email": value})
    if target.key == "phone" and record.phone is None:
        assert isinstance(value, str)
        return record._replace(phone=value, fields={**record.fields, "phones": [value]})
    name = target.key.removeprefix("field:")
    if target.key.startswith("field:") and name not in record.fields:
        return record._replace(fields={**record.fields, name: value})
    return record


def _target(call: _Call, record: ImportRecord, data: dict[str, Any],
            profile_id: Any, top: _Top | None, where: str, top_where: str) -> Who:
    """Who the profile is: by the values beside its data, else those in it."""
    if top is not None and any(v is not None for v in (
            top.email, top.phone, top.profile_id, top.field_value)):
        return who(call.matching, call.normalise, where=top_where, email=top.email,
                   phone=top.phone, profile_id=top.profile_id, field_name=call.field_name,
                   field_value=top.field_value)
    if profile_id is not None and (isinstance(profile_id, bool) or not (
            isinstance(profile_id, int)
            or (isinstance(profile_id, str) and profile_id.isascii()
                and profile_id.isdigit() and len(profile_id) < 20))):
        raise Refused(400, f"{where}profile_id: not a profile id: {profile_id!r}")
    value = data.get(call.field_name) if call.field_name else None
    if value is not None and not isinstance(value, str | int | float):
        raise Refused(400, f"{where}{call.field_name}: a matching value is a string or a"
                      " number")
    return who(call.matching, call.normalise, where=where, email=record.email,
               phone=record.phone, profile_id=profile_id, field_name=call.field_name,
               field_value=value)


def _subscriptions(call: _Call, raw: Any, phone: str | None, where: str,
                   email: str | None = None) -> list[_Sub]:
    """The profile's subscriptions to apply (invalid ones refused, or left out when the
    call says ``skip_invalid_subscriptions``)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise Refused(400, f"{where}subscriptions: Expected `array`")
    out = []
    for i, item in enumerate(raw):
        at = f"{where}subscriptions[{i}]"
        try:
            try:
                sub = msgspec.convert(item, _Subscription)
            except msgspec.ValidationError as err:
                message, _, path = str(err).partition(" - at `$")
                raise Refused(400, f"{at}{path.rstrip('`')}: {message}") from None
            if sub.channel not in ("sms", "email"):
                raise Refused(400, f"{at}.channel: Herald has the sms and email channels,"
                              f" not {sub.channel!r}")
            resource_id, name = resource_in(call.resources, sub.resource_id,
                                            f"{at}.resource_id")
            resource = call.state.herald.config.resources.get(name)
            channel = resource.channel if resource is not None else "sms"
            if sub.channel != channel:
                raise Refused(400, f"{at}.channel: resource {name!r} sends {channel},"
                              f" not {sub.channel}")
            if channel == "email":
                out.append(_Sub(resource_id, _email_of(sub, email, at), sub.status))
                continue
            to = call.normalise(sub.phone.strip()) if sub.phone is not None else phone
            if to is None and (sub.phone is not None or sub.status == "subscribed"):
                raise Refused(400, f"{at}.phone: " + (
                    f"not a phone number: {sub.phone!r}" if sub.phone is not None
                    else "required when the profile's data has no phone"))
        except Refused:
            if call.skip_invalid:
                continue
            raise
        out.append(_Sub(resource_id, to, sub.status))
    return out


def _item(call: _Call, data: dict[str, Any], top: _Top | None, where: str,
          top_where: str = "") -> _Item:
    """A profile's data (and the values beside it), checked."""
    data = dict(data)
    raw_subs = data.pop("subscriptions", None)
    profile_id = data.pop("profile_id", None)  # Altcraft's id, not a field
    record = _fields(data, call, where)
    target = _target(call, record, data, profile_id, top, where, top_where)
    record = _keyed(record, target)
    return _Item(record, _subscriptions(call, raw_subs, record.phone, where, record.email))


def _email_of(sub: _Subscription, email: str | None, at: str) -> str | None:
    """The normalised address an email subscription subscribes (its own, else the
    profile's); None for a status other than subscribed with neither."""
    from engine.core.emails import normalise_email

    raw = sub.email if sub.email is not None else email
    if raw is None:
        if sub.status == "subscribed":
            raise Refused(400, f"{at}.email: required when the profile's data has no email")
        return None
    try:
        return normalise_email(raw)
    except InputError as err:
        raise Refused(400, f"{at}.email: {err}") from None


async def _profile_ids(call: _Call, database_id: int, key: str,
                       records: Sequence[ImportRecord]) -> list[int | None]:
    if key == "id":
        return [r.key if isinstance(r.key, int) else None for r in records]
    found = await call.state.store.find_profiles(
        database_id, key, list({str(r.key) for r in records}))
    return [found.get(str(r.key)) for r in records]


async def _subscribe(call: _Call, database_id: int,
                     done: Sequence[tuple[_Item, int]]) -> None:
    """Apply the subscriptions of the imported profiles ``(item, profile id)``."""
    store = call.state.store
    # the profile's own phone, per resource: one import in "update" mode subscribes them
    # all in a transaction (it leaves their fields alone)
    own: dict[int, list[ImportRecord]] = {}
    statuses: dict[tuple[int, str], list[int]] = {}
    for item, pid in done:
        for sub in item.subscriptions:
            if sub.status != "subscribed":
                statuses.setdefault((sub.resource_id, sub.status), []).append(pid)
            elif sub.phone is None:
                continue  # never: a subscribed one has an address
            elif "@" in sub.phone:  # an email subscription (subscribe reads its channel)
                await store.subscribe(sub.resource_id, pid, sub.phone)
            elif sub.phone == item.record.phone:
                own.setdefault(sub.resource_id, []).append(
                    ImportRecord(pid, sub.phone, None, {}))
            else:
                await store.subscribe(sub.resource_id, pid, sub.phone)
    for resource_id, records in own.items():
        await store.import_profiles(database_id, records, matching="id",
                                    resource_id=resource_id, mode="update")
    for (resource_id, status), pids in statuses.items():
        await store.set_subscription_status(resource_id, pids, status)


class _Counts(NamedTuple):
    added: int
    updated: int
    rejected: int


async def _import(call: _Call, database_id: int,
                  items: Sequence[_Item | Refused]) -> tuple[list[ImportItemAnswer], _Counts]:
    """Import the profiles (the refused ones answered as they are), a chunk per
    transaction; each answered with its profile id, or why not."""
    store = call.state.store
    answers: list[ImportItemAnswer] = [
        ImportItemAnswer(error=i.error, error_text=i.error_text) if isinstance(i, Refused)
        else ImportItemAnswer(error=0, error_text=OK) for i in items]
    added = updated = 0
    good = [(n, i) for n, i in enumerate(items) if isinstance(i, _Item)]
    for start in range(0, len(good), CHUNK):
        chunk = good[start : start + CHUNK]
        key = _store_key(call)
        records = [i.record for _, i in chunk]
        result = await store.import_profiles(database_id, records, matching=key,
                                             resource_id=None, mode="add+update")
        added += result.added
        updated += result.updated
        rejected = dict(result.rejected)
        pids = await _profile_ids(call, database_id, key, records)
        done = []
        for at, ((n, item), pid) in enumerate(zip(chunk, pids, strict=True)):
            if at in rejected or pid is None:
                answers[n] = ImportItemAnswer(error=400, error_text=rejected.get(
                    at, "not imported"))
            else:
                answers[n].profile_id = pid
                done.append((item, pid))
        await _subscribe(call, database_id, done)
        await anyio.lowlevel.checkpoint()
    return answers, _Counts(added, updated, sum(1 for a in answers if a.error))


def _store_key(call: _Call) -> str:
    return {"email": "email", "phone": "phone", "profile_id": "id"}.get(
        call.matching, f"field:{call.field_name}")


def _bounded(raw: bytes, limits: LimitsConfig, where: str) -> Refused | None:
    """The refusal of a profile past ``profile_fields`` or ``json_depth``, or None."""
    found = shape(raw, max_keys=limits.profile_fields, max_depth=limits.json_depth)
    if found.depth > limits.json_depth:
        return from_api_error(deep_error(limits, where))
    if found.keys > limits.profile_fields:
        return Refused(422, f"{where}: more than {limits.profile_fields:,} fields; [limits]"
                       f" profile_fields is {limits.profile_fields}")
    return None


def _over_bounds(raws: Sequence[msgspec.Raw], limits: LimitsConfig,
                 where: Callable[[int], str]) -> Refused | None:
    """The first profile past its bounds (run in a worker thread: the scan is Python)."""
    for n, raw in enumerate(raws):
        if not bytes(raw).lstrip().startswith(b"{"):
            return Refused(400, f"{where(n)}: Expected `object`")
        if refused := _bounded(bytes(raw), limits, where(n)):
            return refused
    return None


async def _call(state: ApiState, db_id: int | str, matching: str, field_name: str | None,
                skip_invalid: bool) -> tuple[_Call, int]:
    if matching == "custom" and field_name is None:
        raise Refused(400, "field_name: required with matching custom")
    database_id, name = await database_of(state, db_id)
    field_types = state.herald.config.field_specs(name)
    return _Call(state, matching, field_name, field_types, await resources(state),
                 skip_invalid), database_id


async def import_profile(request: Req, state: ApiState, body: bytes) -> ImportAnswer:
    """``profiles/import``: one profile; answers its id."""
    limits = state.herald.config.limits
    data: ImportRaw = decode(_decode_one, body, limits)
    if refused := await anyio.to_thread.run_sync(
            _over_bounds, [data.data], limits, lambda _: "data"):
        raise refused
    call, database_id = await _call(state, data.db_id, data.matching, data.field_name,
                                    data.skip_invalid_subscriptions)
    top = _Top(email=data.email, phone=data.phone, profile_id=data.profile_id,
               field_value=data.field_value, data={})
    item = _item(call, _decode_profile(data.data), top, "data.")
    [answer], counts = await _import(call, database_id, [item])
    await record_import(state.store, "import_api", database_id, counts._asdict(),
                        source="/api/v1.1/profiles/import")
    if answer.error:
        raise Refused(answer.error, answer.error_text)
    return ImportAnswer(error=0, error_text=OK, profile_id=answer.profile_id)


def _batch_item(call: _Call, raw: msgspec.Raw, n: int) -> _Item | Refused:
    where = f"data[{n}]"
    value = _decode_profile(raw)
    top = None
    if isinstance(value.get("data"), dict) and set(value) <= _WRAPPED:
        try:
            top = msgspec.convert(value, _Top)
        except msgspec.ValidationError as err:
            message, _, path = str(err).partition(" - at `$")
            return Refused(400, f"{where}{path.rstrip('`')}: {message}")
        if top.matching not in (None, call.matching):
            return Refused(400, f"{where}.matching: every profile of a batch is matched"
                           f" as the call's {call.matching!r}")
        value = top.data
    try:
        return _item(call, value, top, f"{where}.data." if top else f"{where}.",
                           f"{where}.")
    except Refused as refused:
        return refused


async def import_batch(request: Req, state: ApiState, body: bytes) -> ImportBatchAnswer:
    """``profiles/import_batch``: up to 10,000 profiles, each answered in place."""
    limits = state.herald.config.limits
    data: ImportBatchRaw = decode(_decode_batch, body, limits)
    if refused := await anyio.to_thread.run_sync(
            _over_bounds, data.data, limits, lambda n: f"data[{n}]"):
        raise refused
    call, database_id = await _call(state, data.db_id, data.matching, data.field_name,
                                    data.skip_invalid_subscriptions)
    items: list[_Item | Refused] = []
    for n, raw in enumerate(data.data):
        items.append(_batch_item(call, raw, n))
        if n % 64 == 63:
            await anyio.lowlevel.checkpoint()
    answers, counts = await _import(call, database_id, items)
    await record_import(state.store, "import_api", database_id, counts._asdict(),
                        source="/api/v1.1/profiles/import_batch")
    return ImportBatchAnswer(error=0, error_text=OK, result=answers)
