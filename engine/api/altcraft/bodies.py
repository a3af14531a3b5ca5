"""The bodies of the ``/api/v1.1`` calls and of their answers, under Altcraft's names.

Bodies refuse fields they do not know (a typo is a 400 naming it), except Altcraft's
``subscription_filter``, whose keys beyond ``phone``, ``channel`` and ``not_strict`` are
accepted and ignored. ``token`` and ``format`` (only ``json``) may come in any of them.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from engine.api.altcraft.envelope import Envelope
from engine.api.state import MAX_ID

__all__ = [
    "MAX_BATCH",
    "BatchItem",
    "BatchItemAnswer",
    "ImportAnswer",
    "ImportBatchAnswer",
    "ImportBatchBody",
    "ImportBatchRaw",
    "ImportBody",
    "ImportItemAnswer",
    "ImportRaw",
    "LogAnswer",
    "LogBody",
    "LogRow",
    "MatchingValue",
    "StartAnswer",
    "StartBatchAnswer",
    "StartBatchBody",
    "StartBatchRaw",
    "StartBody",
    "StartData",
    "SubscriptionFilter",
]

#: Items of a ``start_batch`` or ``import_batch`` call.
MAX_BATCH = 10_000

Id = Annotated[int, Meta(ge=1, le=MAX_ID)]
Name = Annotated[str, Meta(min_length=1, max_length=200)]
#: A numeric id as ``/api/v1`` lists it, or the name.
IdOrName = Id | Name
Token = Annotated[str, Meta(min_length=1, max_length=200)]
Format = Literal["json"]
#: How a profile is found: ``custom`` is by the custom field ``field_name``.
Matching = Literal["email", "phone", "profile_id", "custom"]
Email = Annotated[str, Meta(min_length=1, max_length=320)]
Phone = Annotated[str, Meta(min_length=1, max_length=64)]
#: Herald's profile ids are numbers; Altcraft clients may send them as strings.
ProfileId = Id | Annotated[str, Meta(pattern=r"^[0-9]{1,19}$")]
FieldName = Annotated[str, Meta(min_length=1, max_length=200)]
#: A custom field's value, compared as text (a number as its JSON text).
FieldValue = Annotated[str, Meta(min_length=1, max_length=1000)] | int | float | bool
Key = Annotated[str, Meta(min_length=1, max_length=200)]


class SubscriptionFilter(msgspec.Struct, kw_only=True):
    """Which subscription of the profile to send to. Herald sends a trigger to the
    profile's highest-priority active subscription to the mailing's resource: ``phone``
    must be that subscription's (else the call is refused, unless ``not_strict``); a
    ``channel`` other than the resource's (``sms``, ``email``) matches nothing. Other keys
    (``email``, ``provider``, ``subscription_id``, ``cc_data``...) are ignored."""

    phone: Phone | None = None
    channel: Annotated[str, Meta(max_length=40)] | None = None
    #: When nothing matches, send to the profile's usual subscription instead.
    not_strict: bool = False


class MatchingValue(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The matching value: in the field ``matching`` names (``custom``: ``field_name``
    with ``field_value``)."""

    email: Email | None = None
    phone: Phone | None = None
    profile_id: ProfileId | None = None
    field_name: FieldName | None = None
    field_value: FieldValue | None = None


class StartBody(MatchingValue, kw_only=True, forbid_unknown_fields=True):
    """``campaigns/triggers/start``: one message of trigger mailing ``id`` to the profile
    ``matching`` finds by the field of that name (``custom``: ``field_name`` with
    ``field_value``), in the mailing's database."""

    token: Token | None = None
    format: Format | None = None
    id: Id
    matching: Matching = "email"
    #: Rendered as ``{apicontent.*}``.
    content: dict[str, Any] = msgspec.field(default_factory=dict)
    #: Handed to the action hooks with each event of the message; never rendered.
    custom_data: dict[str, Any] | None = None
    #: The mailing's resource (its id or name), if given: anything else is refused.
    resource_id: IdOrName | None = None
    subscription_filter: SubscriptionFilter | None = None
    #: Accepted and ignored: an SMS has no attachments.
    attach: list[Any] | None = None
    #: Accepted and ignored: nothing in Herald is triggered by a trigger call.
    skip_triggers: bool = False
    #: Herald's: the same key never sends twice (also as an ``Idempotency-Key`` header).
    idempotency_key: Key | None = None


class StartData(msgspec.Struct, kw_only=True):
    """The queued message: its id (the one receipts, the log and the hooks give), the
    profile it goes to, and whether the idempotency key was used before (the first
    call's message, not sent again)."""

    message_id: str
    profile_id: int
    duplicate: bool = False


class StartAnswer(Envelope, kw_only=True):
    data: StartData | None = None


class BatchItem(MatchingValue, kw_only=True, forbid_unknown_fields=True):
    """One profile of ``start_batch``, by the field ``matching`` names; ``content`` and
    ``custom_data`` given here are merged over the call's."""

    content: dict[str, Any] | None = None
    custom_data: dict[str, Any] | None = None
    idempotency_key: Key | None = None


class _StartBatchHead(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: Token | None = None
    format: Format | None = None
    trigger_id: Id
    matching: Matching = "email"
    field_name: FieldName | None = None
    content: dict[str, Any] = msgspec.field(default_factory=dict)
    custom_data: dict[str, Any] | None = None
    attach: list[Any] | None = None
    skip_triggers: bool = False


class StartBatchBody(_StartBatchHead, kw_only=True):
    """``campaigns/triggers/start_batch``: a message of trigger mailing ``trigger_id``
    to each profile of ``data`` (``custom``: the item's ``field_value`` of the call's
    ``field_name``)."""

    data: Annotated[list[BatchItem], Meta(min_length=1, max_length=MAX_BATCH)]


class StartBatchRaw(_StartBatchHead, kw_only=True):
    """``StartBatchBody`` with its items raw: decoded a few at a time, the loop going on."""

    data: Annotated[list[msgspec.Raw], Meta(min_length=1, max_length=MAX_BATCH)]


class BatchItemAnswer(msgspec.Struct, kw_only=True):
    """An item of ``start_batch``: its message, or why it was refused (``error`` as the
    envelope's)."""

    error: int
    error_text: str
    profile_id: int | None = None
    message_id: str | None = None
    duplicate: bool = False


class StartBatchAnswer(Envelope, kw_only=True):
    #: The profile id of each item, in order; null for an item refused.
    result: list[int | None] | None = None
    #: Each item's message id, or why it was refused.
    items: list[BatchItemAnswer] | None = None


class _ImportHead(MatchingValue, kw_only=True, forbid_unknown_fields=True):
    token: Token | None = None
    format: Format | None = None
    db_id: IdOrName
    matching: Matching = "email"
    #: Accepted: nothing in Herald is triggered by an import.
    skip_triggers: bool = False
    #: Leave out subscriptions that cannot be applied (another channel, an unknown
    #: resource) instead of refusing the profile.
    skip_invalid_subscriptions: bool = False


class ImportBody(_ImportHead, kw_only=True):
    """``profiles/import``: one profile into database ``db_id``. ``data`` holds its
    fields (``email``, ``phone``, ``_fname``..., custom ones) and ``subscriptions``
    (``[{"resource_id", "channel": "sms", "phone", "status", "priority"}]``). The
    matching value is the body's field of that name, else ``data``'s."""

    data: dict[str, Any]


class ImportRaw(_ImportHead, kw_only=True):
    """``ImportBody`` with its profile raw: checked against ``[limits]`` first."""

    data: msgspec.Raw


class ImportAnswer(Envelope, kw_only=True):
    profile_id: int | None = None


class _ImportBatchHead(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    token: Token | None = None
    format: Format | None = None
    db_id: IdOrName
    matching: Matching = "email"
    field_name: FieldName | None = None
    skip_triggers: bool = False
    skip_invalid_subscriptions: bool = False


class ImportBatchBody(_ImportBatchHead, kw_only=True):
    """``profiles/import_batch``: each item of ``data`` is a profile as ``profiles/
    import``'s ``data`` (its matching value in it), or ``{"email"|"phone"|"profile_id"|
    "field_value": ..., "data": {...}}``."""

    data: Annotated[list[dict[str, Any]], Meta(min_length=1, max_length=MAX_BATCH)]


class ImportBatchRaw(_ImportBatchHead, kw_only=True):
    """``ImportBatchBody`` with its profiles raw: checked against ``[limits]`` first."""

    data: Annotated[list[msgspec.Raw], Meta(min_length=1, max_length=MAX_BATCH)]


class ImportItemAnswer(msgspec.Struct, kw_only=True):
    error: int
    error_text: str
    profile_id: int | None = None


class ImportBatchAnswer(Envelope, kw_only=True):
    #: One per item of ``data``, in order.
    result: list[ImportItemAnswer] | None = None


class LogBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``campaigns/log_v2``: the log of mailing ``id`` from ``from_time`` (RFC 3339;
    without an offset, UTC), at most ``limit`` rows."""

    token: Token | None = None
    format: Format | None = None
    id: Id
    from_time: dt.datetime | None = None
    limit: Annotated[int, Meta(ge=1, le=MAX_BATCH)] = 1000


class LogRow(msgspec.Struct, kw_only=True):
    """One line of a run's log: ``time`` (RFC 3339), ``level`` (info, warning, error),
    ``message`` (what it is), ``state`` (the run's status, or ``started``) and
    ``value`` (a count, the run id, seconds, or an error's text)."""

    level: Literal["info", "warning", "error"]
    message: str
    state: str
    time: str
    value: float | str | None = None


class LogAnswer(Envelope, kw_only=True):
    data: list[LogRow] | None = None
    #: Rows from ``from_time``, before ``limit`` cut them.
    total_count: int | None = None
