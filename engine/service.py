"""Herald as a long-running service: mailings that run in the background of one process.

The HTTP API (``herald serve``) and embedding applications drive mailings through a
``MailingService`` that owns a task group: broadcasts run as background tasks that can be
paused, resumed and cancelled, and each trigger mailing has a queue that a background
pipeline drains, so a trigger call answers with message ids at once.

::

    async with MailingService.running(herald) as service:
        mailing = await service.create(MailingSpec(name="welcome", kind="trigger", ...))
        ids = await service.trigger(mailing.id, [TriggerRequest(profile_id=7, content={...})])
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = ["MailingSpec", "MailingStatus", "TriggerAccepted", "TriggerRequest"]


class MailingSpec(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """What a new mailing is: ``broadcast`` (to an audience, when started) or ``trigger``
    (one message per trigger call)."""

    name: str
    kind: Literal["broadcast", "trigger"]
    resource: str
    template: str
    database: str | None = None
    segment: str | None = None
    limit: int | None = None
    #: The JSON document templates reach as ``{json.*}``.
    document: dict[str, Any] = msgspec.field(default_factory=dict)


class MailingStatus(msgspec.Struct, kw_only=True):
    """A mailing and the progress of its latest run."""

    id: int
    name: str
    kind: str
    resource: str
    status: Literal["draft", "running", "paused", "finished", "cancelled", "failed"]
    run_id: int | None = None
    total: int = 0
    received: int = 0
    reserved: int = 0
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    in_flight: int = 0


class TriggerRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One message of a trigger mailing: to a profile (by id, or found by phone/email in
    the mailing's database), with ``content`` rendered as ``{apicontent.*}``."""

    profile_id: int | None = None
    phone: str | None = None
    email: str | None = None
    content: dict[str, Any] = msgspec.field(default_factory=dict)
    #: The same key never sends twice: a repeated call answers with the first message id.
    idempotency_key: str | None = None


class TriggerAccepted(msgspec.Struct, kw_only=True):
    """The answer to one trigger request: its message id, or why it was refused."""

    message_id: str | None = None
    duplicate: bool = False
    error: str | None = None
