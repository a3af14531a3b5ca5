"""``campaigns/triggers/start`` and ``start_batch``: Altcraft's trigger calls on Herald's
trigger mailings (``MailingService.trigger``, as ``/api/v1/mailings/{id}/trigger``).

The profile is found here, by ``matching`` in the mailing's database, and the service is
handed its id: so the answer says which profile each message goes to (``start_batch``'s
``result``). ``content`` feeds ``{apicontent.*}``; ``custom_data`` goes with the message
to the action hooks. An idempotency key (``idempotency_key``, or the ``Idempotency-Key``
header for ``start``) already used answers the first message id, ``duplicate: true``,
without sending again.
"""

from __future__ import annotations

import anyio.lowlevel
import msgspec

from engine.api.altcraft.bodies import (
    BatchItem,
    BatchItemAnswer,
    StartAnswer,
    StartBatchAnswer,
    StartBatchRaw,
    StartBody,
    StartData,
    SubscriptionFilter,
)
from engine.api.altcraft.envelope import OK, Refused, decode, from_api_error, item_error
from engine.api.altcraft.matching import Who, find_profiles, resource_in, resources, who
from engine.api.bounds import deep_error
from engine.api.state import ApiState, Req, service_of
from engine.config import LimitsConfig
from engine.errors import HeraldError, NotFound
from engine.service import TriggerAccepted, TriggerRequest
from engine.store.models import Mailing

__all__ = ["start", "start_batch"]

_decode_start = msgspec.json.Decoder(StartBody).decode
_decode_batch = msgspec.json.Decoder(StartBatchRaw).decode
_decode_item = msgspec.json.Decoder(BatchItem).decode
#: Items decoded, or queued, between two checkpoints of the event loop.
_STEP = 64


async def _trigger_mailing(state: ApiState, mailing_id: int, field: str) -> Mailing:
    try:
        mailing = await state.store.get_mailing(mailing_id)
    except NotFound:
        raise Refused(404, f"{field}: no mailing with id {mailing_id}") from None
    if mailing.kind != "trigger":
        raise Refused(400, f"{field}: mailing {mailing_id} is a {mailing.kind}, not a"
                      " trigger")
    return mailing


def _refusal(accepted: TriggerAccepted) -> Refused:
    """A message the service refused: no such profile is a 404, anything else a 400."""
    text = accepted.error or "not processed"
    return Refused(404 if "no such profile" in text else 400, text)


async def _check_filter(state: ApiState, mailing: Mailing, profile_id: int,
                        wanted: SubscriptionFilter) -> None:
    """Refuse the call unless the subscription the message goes to matches the filter
    (or nothing matches and the filter is ``not_strict``)."""
    if wanted.phone is None and wanted.channel is None:
        return
    phone = None
    if wanted.phone is not None:
        phone = state.normaliser.normalise(wanted.phone.strip())
        if phone is None:
            raise Refused(400, "subscription_filter.phone: not a phone number:"
                          f" {wanted.phone!r}")
    resource_id = await state.store.resource_id(mailing.resource)
    rows = await state.store.find_subscriptions(resource_id, profile_id=profile_id,
                                                limit=100)
    active = [r for r in rows if r.status == "subscribed"]
    if wanted.channel not in (None, mailing.source.channel) or not any(
            phone is None or r.phone == phone for r in active):
        if wanted.not_strict:
            return
        raise Refused(404, "subscription_filter: the profile has no active subscription"
                      f" to resource {mailing.resource!r} that matches")
    if phone is not None and active[0].phone != phone and not wanted.not_strict:
        raise Refused(400, "subscription_filter.phone: Herald sends to the profile's"
                      f" highest-priority subscription to {mailing.resource!r}, which is"
                      " another phone's (not_strict: send there anyway)")


async def _check_resource(state: ApiState, mailing: Mailing,
                          resource_id: int | str | None) -> None:
    if resource_id is None:
        return
    _, name = resource_in(await resources(state), resource_id, "resource_id")
    if name != mailing.resource:
        raise Refused(400, f"resource_id: mailing {mailing.id} sends on resource"
                      f" {mailing.resource!r}, not {name!r}")


async def start(request: Req, state: ApiState, body: bytes) -> StartAnswer:
    """``campaigns/triggers/start``: queue the message, answer its id."""
    data: StartBody = decode(_decode_start, body, state.herald.config.limits)
    header = request.headers.get("idempotency-key")
    if header is not None and not 0 < len(header) <= 200:
        raise Refused(400, "Idempotency-Key: 1 to 200 characters")
    if header and data.idempotency_key and header != data.idempotency_key:
        raise Refused(400, "idempotency_key: differs from the Idempotency-Key header")
    mailing = await _trigger_mailing(state, data.id, "id")
    await _check_resource(state, mailing, data.resource_id)
    target = who(data.matching, state.normaliser.normalise, email=data.email,
                 phone=data.phone, profile_id=data.profile_id, field_name=data.field_name,
                 field_value=data.field_value)
    [profile_id] = await find_profiles(state.store, mailing.source.database_id, [target])
    if profile_id is None:
        raise Refused(404, f"{target.field}: no such profile in the mailing's database")
    if data.subscription_filter is not None:
        await _check_filter(state, mailing, profile_id, data.subscription_filter)
    [accepted] = await service_of(request).trigger(mailing.id, [TriggerRequest(
        profile_id=profile_id, content=data.content, custom_data=data.custom_data,
        idempotency_key=header or data.idempotency_key)])
    if accepted.message_id is None:
        raise _refusal(accepted)
    return StartAnswer(error=0, error_text=OK, data=StartData(
        message_id=accepted.message_id, profile_id=profile_id,
        duplicate=accepted.duplicate))


async def _items(raw: StartBatchRaw, limits: LimitsConfig) -> list[BatchItem]:
    """The raw items decoded, a few at a time: a 10 MB batch decoded at once would hold
    the event loop for a fifth of a second."""
    items = []
    for i, item in enumerate(raw.data):
        try:
            items.append(_decode_item(item))
        except RecursionError:
            raise from_api_error(deep_error(limits, f"data[{i}]")) from None
        except msgspec.DecodeError as err:
            raise item_error(err, f"data[{i}]") from None
        if i % _STEP == _STEP - 1:
            await anyio.lowlevel.checkpoint()
    return items


async def start_batch(request: Req, state: ApiState, body: bytes) -> StartBatchAnswer:
    """``campaigns/triggers/start_batch``: a message per item, each answered in place."""
    limits = state.herald.config.limits
    raw: StartBatchRaw = decode(_decode_batch, body, limits)
    items = await _items(raw, limits)
    mailing = await _trigger_mailing(state, raw.trigger_id, "trigger_id")
    answers: list[BatchItemAnswer | None] = [None] * len(items)
    targets: list[Who | None] = []
    for i, item in enumerate(items):
        try:
            targets.append(who(
                raw.matching, state.normaliser.normalise, where=f"data[{i}].",
                email=item.email, phone=item.phone, profile_id=item.profile_id,
                field_name=item.field_name or raw.field_name, field_value=item.field_value))
        except Refused as bad:
            answers[i] = BatchItemAnswer(error=bad.error, error_text=bad.error_text)
            targets.append(None)
    profiles = await find_profiles(state.store, mailing.source.database_id, targets)
    requests: list[TriggerRequest] = []
    positions: list[int] = []
    for i, (item, target, pid) in enumerate(zip(items, targets, profiles, strict=True)):
        if target is None:
            continue
        if pid is None:
            answers[i] = BatchItemAnswer(
                error=404, error_text=f"{target.field}: no such profile in the mailing's"
                " database")
            continue
        custom = raw.custom_data if item.custom_data is None else \
            {**(raw.custom_data or {}), **item.custom_data}
        requests.append(TriggerRequest(
            profile_id=pid, content={**raw.content, **(item.content or {})},
            custom_data=custom, idempotency_key=item.idempotency_key))
        positions.append(i)
    service = service_of(request)
    accepted: list[TriggerAccepted] = []
    # queued a slice at a time, as /api/v1's batch: one transaction of 10k items with
    # big contents would hold the event loop while it encodes and writes them all
    for at in range(0, len(requests), _STEP):
        try:
            accepted += await service.trigger(mailing.id, requests[at : at + _STEP])
        except HeraldError as err:
            if not accepted:
                raise  # nothing queued yet: the whole call is refused
            # paused or cancelled meanwhile: what is queued keeps its ids (a retry must
            # not send it twice), the rest is refused
            accepted += [TriggerAccepted(error=str(err))] * (len(requests) - len(accepted))
            break
    for i, request_, a in zip(positions, requests, accepted, strict=True):
        if a.message_id is None:
            refused = _refusal(a)
            answers[i] = BatchItemAnswer(error=refused.error, error_text=refused.error_text)
        else:
            answers[i] = BatchItemAnswer(error=0, error_text=OK,
                                         profile_id=request_.profile_id,
                                         message_id=a.message_id, duplicate=a.duplicate)
    done = [a or BatchItemAnswer(error=400, error_text="not processed") for a in answers]
    return StartBatchAnswer(error=0, error_text=OK, result=[a.profile_id for a in done],
                            items=done)
