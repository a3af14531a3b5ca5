"""The ``infobip`` driver: Infobip's SMS API v3, on the shared HTTP stack.

Options (``[gateways.NAME]``)::

    driver = "infobip"
    api_key = "..."
    base_url = "https://xxxxx.api.infobip.com"   # the account's own (portal homepage)
    notify_url = "https://herald.example.com/api/v1/dlr/infobip?secret=..."   # optional
    batch_size = 100           # messages per request
    max_connections = 16       # requests in flight at once
    timeout = 10.0
    idempotent = false         # true only once Infobip has enabled idempotency for you

**Sending.** ``POST {base_url}/sms/3/messages`` with ``Authorization: App <api_key>`` and
JSON ``{"messages": [{"sender", "destinations": [{"to", "messageId"}], "content":
{"text"}, "webhooks": {"delivery": {"url"}, "contentType"}}]}``: one message object per
Herald message (each has its own text), ``batch_size`` of them per request, so
``max_batch`` = ``batch_size * max_connections``. ``to`` is E.164 without ``+``;
``messageId`` is Herald's message id, so the answer, the delivery reports and Infobip's
logs all carry it, and it is the ``provider_id``. ``webhooks`` is sent only with
``notify_url`` (else the account's subscription decides where reports go). Infobip drops
a resent ``messageId`` within its grace period only where it has enabled idempotency for
the account (https://www.infobip.com/docs/developer-resources/api-fundamentals/
idempotent-message-sending), hence ``idempotent`` is an option, off by default.

**Answers** (https://www.infobip.com/docs/essentials/api-essentials/response-status-and-
error-codes). A 2xx answer has ``messages[]`` with each one's ``status``::

    answer                                       result
    2xx, status group PENDING (1) / OK (0)       accepted, provider_id = messageId
    2xx, group REJECTED (5), UNDELIVERABLE (2),
      EXPIRED (4)                                rejected, error = the status name
                                                   (REJECTED_DESTINATION, ...)
    2xx, a message missing from the answer       unknown (the engine's "no result")
    429 (TOO_MANY_REQUESTS)                      retry, retry_after = Retry-After or 1 s
    5xx                                          retry (transient)
    401 / 403 (E401, UNAUTHORIZED), 400 (E400,
      BAD_REQUEST), other 4xx                    permanent for the request's messages,
                                                   code = errorCode / messageId of the body
    no answer, connection lost                   as the shared stack says (unknown)

**Delivery reports** (``parse_receipts``): ``{"results": [{"messageId", "status":
{"groupId", "groupName", "id", "name"}, "error": {"id", "name", "permanent"}, "doneAt"}]}``.
Group DELIVERED (3) is delivered; UNDELIVERABLE (2), EXPIRED (4) and REJECTED (5) are
undelivered with ``error`` = the error's name (else the status name); PENDING (1) is not
final and is dropped. The driver asks for no intermediate reports, so a DELIVERED report
(``DELIVERED_TO_HANDSET``, or ``DELIVERED_TO_OPERATOR`` where the network confirms no
further) is the final word. ``doneAt`` is the receipt's ``at``. Where idempotency is on, a
resend Infobip dropped may get a REJECTED report of its own; a later report of the first
send still moves the recipient up to delivered.

**Inbound messages** (``parse_inbound``): the forwarded-SMS webhook ``{"results": [{"from",
"to", "text", "receivedAt"}]}``.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec

from engine.drivers import Driver, Inbound, OutboundMessage, Receipt, SendResult
from engine.errors import InputError
from engine.hookspecs import hookimpl
from herald_http.api import ApiDriver, ApiOptions, field_path, raise_for_status
from herald_http.http1 import Response, split_url
from herald_http.pool import Transport
from herald_http.wire import retry_after as header_wait

__all__ = ["InfobipConfig", "InfobipDriver"]

#: Seconds to wait after a 429 that gives no ``Retry-After``.
DEFAULT_THROTTLE = 1.0
#: Status groups by id, for an answer that gives only the id.
GROUPS = {0: "OK", 1: "PENDING", 2: "UNDELIVERABLE", 3: "DELIVERED", 4: "EXPIRED",
          5: "REJECTED"}
TAKEN = frozenset({"OK", "ACCEPTED", "PENDING", "DELIVERED"})
UNDELIVERED = frozenset({"UNDELIVERABLE", "EXPIRED", "REJECTED"})


class InfobipConfig(ApiOptions, kw_only=True):
    """Options of the ``infobip`` driver (see the module docstring)."""

    #: An API key with the ``sms:message:send`` scope, sent as ``Authorization: App ...``.
    api_key: Annotated[str, msgspec.Meta(min_length=1)]
    #: The account's own base URL (``https://xxxxx.api.infobip.com``, on the portal's
    #: homepage); the shared host is the default.
    base_url: str = "https://api.infobip.com"
    #: The public URL of ``POST /api/v1/dlr/{gateway}?secret=...`` for delivery reports;
    #: "" leaves them to the account's subscription.
    notify_url: str = ""
    #: Messages per request.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100
    #: Infobip has enabled idempotency (dedupe by messageId) for the account.
    idempotent: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.notify_url:
            split_url(self.notify_url)


class _Status(msgspec.Struct, rename="camel"):
    group_id: int | None = None
    group_name: str | None = None
    id: int | None = None
    name: str | None = None

    @property
    def group(self) -> str:
        name = (self.group_name or "").upper()
        return name or GROUPS.get(self.group_id if self.group_id is not None else -1, "")


class _Sent(msgspec.Struct, rename="camel"):
    status: _Status
    message_id: str | None = None


class _Answer(msgspec.Struct, rename="camel"):
    messages: list[_Sent] = msgspec.field(default_factory=list)


class _Violation(msgspec.Struct, rename="camel"):
    property: str | None = None
    violation: str | None = None


class _ServiceException(msgspec.Struct, rename="camel"):
    message_id: str | None = None
    text: str | None = None


class _RequestError(msgspec.Struct, rename="camel"):
    service_exception: _ServiceException | None = None


class _ErrorAnswer(msgspec.Struct, rename="camel"):
    """Both shapes of Infobip's error body: v3's and the older ``requestError``."""

    error_code: str | None = None
    description: str | None = None
    violations: list[_Violation] = msgspec.field(default_factory=list)
    request_error: _RequestError | None = None


class _Error(msgspec.Struct, rename="camel"):
    id: int | None = None
    name: str | None = None
    permanent: bool | None = None


class _Report(msgspec.Struct, rename="camel"):
    message_id: str
    status: _Status
    error: _Error | None = None
    done_at: str | None = None


class _Reports(msgspec.Struct, rename="camel"):
    results: list[_Report]


class _Received(msgspec.Struct, rename="camel"):
    from_: str = msgspec.field(name="from")
    text: str = ""
    to: str | None = None
    received_at: str | None = None


class _Inbound(msgspec.Struct, rename="camel"):
    results: list[_Received]


_encode = msgspec.json.Encoder().encode
_decode_answer = msgspec.json.Decoder(_Answer)
_decode_error = msgspec.json.Decoder(_ErrorAnswer)
_decode_reports = msgspec.json.Decoder(_Reports)
_decode_inbound = msgspec.json.Decoder(_Inbound)


class InfobipDriver(ApiDriver):
    """Sends batches of messages to the SMS API v3 (see the module docstring)."""

    name = "infobip"
    Config = InfobipConfig

    def __init__(
        self,
        config: InfobipConfig,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            config, gateway=gateway, base_dir=base_dir,
            url=f"{config.base_url.rstrip('/')}/sms/3/messages",
            headers={"Authorization": f"App {config.api_key}",
                     "Content-Type": "application/json", "Accept": "application/json"},
            batch_size=config.batch_size, max_connections=config.max_connections,
            timeout=config.timeout, idempotent=config.idempotent, transport=transport,
        )
        webhooks: dict[str, Any] = {}
        if config.notify_url:
            webhooks = {"webhooks": {"delivery": {"url": config.notify_url},
                                     "contentType": "application/json"}}
        self._webhooks = webhooks

    def encode(self, messages: Sequence[OutboundMessage]) -> bytes:
        webhooks = self._webhooks
        return _encode({"messages": [
            {"sender": m.sender,
             "destinations": [{"to": m.to.removeprefix("+"), "messageId": m.id}],
             "content": {"text": m.text}, **webhooks}
            for m in messages
        ]})

    def decode(
        self, response: Response, messages: Sequence[OutboundMessage], *, now: float
    ) -> list[SendResult]:
        if not 200 <= response.status < 300:
            self._raise(response, now)
        try:
            answers = _decode_answer.decode(response.body).messages
        except (msgspec.DecodeError, msgspec.ValidationError):
            answers = []
        by_id = {a.message_id: a for a in answers if a.message_id}
        # Infobip echoes the messageId it was given; if it did not, the order must do.
        positional = len(answers) == len(messages) and not any(m.id in by_id for m in messages)
        results = []
        for i, m in enumerate(messages):
            answer = answers[i] if positional else by_id.get(m.id)
            if answer is None:
                continue  # the engine records it unknown: the answer does not say
            status = answer.status
            if status.group in UNDELIVERED:
                error = status.name or str(status.id if status.id is not None else status.group)
                results.append(SendResult(m.id, "rejected", error=error))
            else:
                results.append(SendResult(m.id, "accepted", provider_id=answer.message_id or m.id))
        return results

    def _raise(self, response: Response, now: float) -> None:
        """Raise what a non-2xx answer means, in Infobip's words."""
        try:
            error = _decode_error.decode(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            error = _ErrorAnswer()
        code, text = error.error_code, error.description
        if error.request_error and error.request_error.service_exception:
            exception = error.request_error.service_exception
            code, text = code or exception.message_id, text or exception.text
        problems = "; ".join(f"{v.property}: {v.violation}" for v in error.violations)
        detail = " - ".join(t for t in (code, text, problems) if t) or None
        wait = None
        if response.status == 429:
            wait = header_wait(response.headers.get("retry-after"), now)
            wait = DEFAULT_THROTTLE if wait is None else wait
        raise_for_status(response, where=self.where, now=now, detail=detail, code=code,
                         retry_after=wait)

    # -- callbacks ---------------------------------------------------------------------

    def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
        """The final reports of a delivery-report webhook."""
        reports = _decode(_decode_reports, body, "delivery reports").results
        receipts = []
        for r in reports:
            group = r.status.group
            at = _time(r.done_at)
            if group == "DELIVERED":
                receipts.append(Receipt(r.message_id, "delivered", at=at))
            elif group in UNDELIVERED:
                error = r.error.name if r.error and r.error.id else None
                receipts.append(Receipt(r.message_id, "undelivered",
                                        error=error or r.status.name or group, at=at))
        return receipts

    def parse_inbound(self, body: bytes, headers: dict[str, str]) -> list[Inbound]:
        """The messages of a forwarded-SMS webhook."""
        received = _decode(_decode_inbound, body, "inbound messages").results
        return [Inbound(m.from_, m.text, m.to, _time(m.received_at)) for m in received]


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes, what: str) -> Any:
    """``body`` decoded; ``InputError`` naming the field when it is not what it should be."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as err:
        raise InputError(f"{field_path(str(err))} (Infobip {what})") from None
    except msgspec.DecodeError as err:
        raise InputError(f"body: Infobip {what} are not JSON: {err}") from None


def _time(value: str | None) -> float | None:
    """Infobip's ``2019-11-09T16:00:00.000+0000`` as seconds since the epoch."""
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return None


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [InfobipDriver]
