"""Trigger a mailing for one profile or a batch, as Altcraft's ``triggers/start`` and
``start_batch``: the answer carries the message ids at once, the sending happens in the
background, and an idempotency key already used answers with its first message id
(``duplicate: true``) without sending again.

``POST /api/v1/mailings/{id}/trigger``: one ``{"profile_id"|"phone"|"email", "content",
"idempotency_key", "custom_data"}``; the key may come as an ``Idempotency-Key`` header instead.
``POST /api/v1/mailings/{id}/trigger/batch``: ``{"items": [...]}``, an answer per item.
``content`` is what the template reaches as ``{apicontent.*}``; ``custom_data`` (a JSON
object) is handed to the action hooks with each event of the message.
"""

from __future__ import annotations

from typing import Annotated, Any

import anyio
import anyio.lowlevel
import msgspec
from litestar import post
from litestar.di import Provide
from litestar.params import HeaderParameter, JSONBody
from msgspec import Meta

from engine.api.auth import guarded
from engine.api.bounds import deep_error
from engine.api.errors import ApiError, decode_error, field_of
from engine.api.mailings import MailingId
from engine.api.state import MAX_ID, Req, api_state, service_of
from engine.config import LimitsConfig
from engine.errors import HeraldError
from engine.service import TriggerAccepted, TriggerRequest

__all__ = ["ROUTES", "TriggerAnswer", "TriggerBatch", "TriggerBatchAnswer", "TriggerBody"]

Key = Annotated[str, Meta(min_length=1, max_length=200)]
#: Items per batch call.
MAX_BATCH = 10_000
_WHO = ("profile_id", "phone", "email")


class TriggerBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One message: to a profile given by exactly one of ``profile_id``, ``phone`` or
    ``email`` (found in the mailing's database)."""

    profile_id: Annotated[int, Meta(ge=1, le=MAX_ID)] | None = None
    phone: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    email: Annotated[str, Meta(min_length=1, max_length=320)] | None = None
    #: Rendered as ``{apicontent.*}``.
    content: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The same key never sends twice.
    idempotency_key: Key | None = None
    #: Handed to the action hooks with each event of this message (Altcraft's
    #: ``custom_data``); never rendered.
    custom_data: dict[str, Any] | None = None


class TriggerBatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    items: Annotated[list[TriggerBody], Meta(min_length=1, max_length=MAX_BATCH)]


class TriggerAnswer(msgspec.Struct, kw_only=True):
    """A message id, or why the item was refused (and the field at fault)."""

    message_id: str | None = None
    #: The idempotency key was used before: ``message_id`` is the first call's.
    duplicate: bool = False
    error: str | None = None
    field: str | None = None


class TriggerBatchAnswer(msgspec.Struct, kw_only=True):
    items: list[TriggerAnswer]
    accepted: int
    refused: int


def _who(body: TriggerBody) -> str | None:
    """Why the item does not name exactly one profile (as "field: why"), or None."""
    given = [k for k in _WHO if getattr(body, k) is not None]
    if not given:
        return "profile_id: give one of profile_id, phone or email"
    if len(given) > 1:
        return f"{given[1]}: give only one of profile_id, phone or email"
    return None


def _request(body: TriggerBody, key: str | None = None) -> TriggerRequest:
    return TriggerRequest(profile_id=body.profile_id, phone=body.phone, email=body.email,
                          content=body.content, idempotency_key=key or body.idempotency_key,
                          custom_data=body.custom_data)


def _answer(accepted: TriggerAccepted) -> TriggerAnswer:
    if accepted.error is None:
        return TriggerAnswer(message_id=accepted.message_id, duplicate=accepted.duplicate)
    field, error = field_of(accepted.error)
    return TriggerAnswer(error=error, field=field)


@post("/mailings/{mailing_id:int}/trigger", **guarded("sender", 400, 404, 409, 413, 422, 503),
      status_code=202, tags=["triggers"], summary="Trigger a mailing for one profile")
async def trigger(
    request: Req,
    mailing_id: MailingId,
    data: JSONBody[TriggerBody],
    idempotency_key: Annotated[
        str | None,
        HeaderParameter(name="Idempotency-Key", min_length=1, max_length=200,
                        required=False),
    ] = None,
) -> TriggerAnswer:
    """Queue one message and answer its id; refused: 422 naming the field."""
    if problem := _who(data):
        field, error = field_of(problem)
        raise ApiError(400, error, field)
    if idempotency_key and data.idempotency_key and idempotency_key != data.idempotency_key:
        raise ApiError(400, "differs from the Idempotency-Key header", "idempotency_key")
    [accepted] = await service_of(request).trigger(
        mailing_id, [_request(data, idempotency_key)]
    )
    answer = _answer(accepted)
    if answer.error is not None:
        raise ApiError(422, answer.error, answer.field)
    return answer


class _BatchRaw(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``TriggerBatch`` with each item raw: decoded one at a time, the loop going on."""

    items: Annotated[list[msgspec.Raw], Meta(min_length=1, max_length=MAX_BATCH)]


_decode_batch = msgspec.json.Decoder(_BatchRaw).decode
_decode_item = msgspec.json.Decoder(TriggerBody).decode
#: Items decoded (and queued) between two checkpoints of the event loop.
_ITEMS_PER_STEP = 64


async def _batch_items(body: bytes, limits: LimitsConfig) -> list[TriggerBody]:
    """The items of a batch body. Decoded here, not by Litestar: a 10 MB batch decoded at
    once would hold the event loop for a fifth of a second; its raw items are found in
    about a millisecond per MB, then decoded a few hundred at a time."""
    if not body.strip():
        raise ApiError(400, "a JSON body is required")
    try:
        raw = _decode_batch(body)
    except RecursionError:
        raise deep_error(limits) from None
    except msgspec.DecodeError as err:
        raise decode_error(err) from None
    items: list[TriggerBody] = []
    for i, item in enumerate(raw.items):
        try:
            items.append(_decode_item(item))
        except RecursionError:
            raise deep_error(limits, f"items[{i}]") from None
        except msgspec.DecodeError as err:
            text = str(err)
            text = (text.replace("at `$", f"at `$.items[{i}]", 1) if "at `$" in text
                    else f"{text} - at `$.items[{i}]`")
            raise decode_error(type(err)(text)) from None
        if i % _ITEMS_PER_STEP == _ITEMS_PER_STEP - 1:
            await anyio.lowlevel.checkpoint()
    return items


async def _documented_batch(data: TriggerBatch) -> None:
    """Never called (the route takes no ``_documented``): it hands the OpenAPI schema the
    body the route decodes itself."""


@post("/mailings/{mailing_id:int}/trigger/batch", **guarded("sender", 400, 404, 409, 413, 503),
      status_code=202, tags=["triggers"],
      summary="Trigger a mailing for a batch of profiles",
      dependencies={"_documented": Provide(_documented_batch)})
async def trigger_batch(request: Req, mailing_id: MailingId) -> TriggerBatchAnswer:
    """Queue a message per item; each item is answered in place, accepted or refused."""
    limits = api_state(request).herald.config.limits
    batch = await _batch_items(await request.body(), limits)
    answers: list[TriggerAnswer | None] = [None] * len(batch)
    requests: list[TriggerRequest] = []
    positions: list[int] = []
    for i, item in enumerate(batch):
        if problem := _who(item):
            field, error = field_of(problem)
            answers[i] = TriggerAnswer(error=error, field=field)
        else:
            requests.append(_request(item))
            positions.append(i)
    service = service_of(request)
    if requests:
        # queued a slice at a time: one transaction for 10k items with big contents
        # would hold the event loop while it encodes and writes them all
        accepted: list[TriggerAccepted] = []
        for start in range(0, len(requests), _ITEMS_PER_STEP):
            try:
                accepted += await service.trigger(
                    mailing_id, requests[start : start + _ITEMS_PER_STEP])
            except HeraldError as err:
                if not accepted:
                    raise  # nothing queued yet: the whole call is refused, as before
                # the mailing was paused or cancelled meanwhile: what is queued stays
                # answered with its ids (a retry must not send it twice); the rest refused
                accepted += [TriggerAccepted(error=str(err))] * (len(requests) - len(accepted))
                break
        for i, a in zip(positions, accepted, strict=True):
            answers[i] = _answer(a)
    else:
        await service.status(mailing_id)  # a 404 for no such mailing, as with good items
    items = [a or TriggerAnswer(error="not processed") for a in answers]
    refused = sum(1 for a in items if a.error is not None)
    return TriggerBatchAnswer(items=items, accepted=len(items) - refused, refused=refused)


ROUTES = [trigger, trigger_batch]
