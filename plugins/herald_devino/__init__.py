"""The ``devino`` driver: Devino Telecom's SMS API (devino.online) on the shared HTTP stack.

Options (``[gateways.NAME]``)::

    driver = "devino"
    api_key = "..."                  # sent as "Authorization: Key <api_key>"
    callback_url = "https://HERALD/api/v1/dlr/NAME?secret=SECRET"   # status callbacks
    base_url = "https://api.devino.online"
    batch_size = 100                 # messages per request (Devino takes up to 32000)
    max_connections = 16
    timeout = 10.0
    # validity = 3600                # seconds the message may wait for the phone (0-259200)
    # priority = "HIGH"              # LOW, MEDIUM, HIGH or REALTIME

**Sending** (``https://docs.devino.online/en/http/sms/``): ``POST {base_url}/sms/messages``
with ``{"messages": [{"from", "to", "text", "validity", "priority", "callbackUrl",
"options"}]}``, many messages per request. ``to`` is the number's digits without ``+``,
as in Devino's examples; ``from`` the sender's caller id (a name Devino approved);
``options`` carries ``{"heraldId": <message id>}``, which Devino hands back in each status
callback of the message. The answer has one ``result`` per message, in order: ``{"code":
"OK", "messageId": "..."}`` or ``{"code": "REJECTED", "description": ..., "reasons":
[{"key": ..., "ref": ...}]}``. Capabilities: ``max_batch = batch_size *
max_connections``, ``supports_dlr``, not ``idempotent`` (Devino documents no dedupe by a
client's id).

**Answers**::

    answer                         outcome
    result code "OK"               accepted; provider_id = messageId
    result code "REJECTED"         rejected, error = the reasons' keys ("," between them),
                                   else the description, else "REJECTED"
    another result code            no result: the engine records the message unknown
    fewer results than messages    those left out: unknown
    HTTP 429, 503                  throttled (Retry-After), unsent (``raise_for_status``)
    HTTP 408, 425, other 5xx       TransientGatewayError (``raise_for_status``)
    HTTP 401, 403, other 4xx       PermanentGatewayError, code = the body's "code", else
                                   the status
    2xx that is not JSON results   no results: every message unknown

**Receipts.** Devino posts each status change of a message sent with ``callbackUrl`` to
that URL as JSON. Devino does not sign them: Herald's gateway secret in the URL
(``?secret=``) is what authenticates them, checked by the API route before the driver
parses. The stored copy of Devino's docs did not show a callback body, so the parser takes
the shapes Devino's API uses elsewhere: an object ``{"result": [...]}``, a list, or one
item, each item ``{"messageId", "status", "ts", "options", ...}`` (``description`` or
``reason``, when present, is kept as the error; ``options.heraldId`` as the receipt's
``id``)::

    status                                                    receipt
    DELIVERED                                                 delivered
    UNDELIVERED, EXPIRED, REJECTED, DELETED, FAILED           undelivered, error = status
    anything else (ACCEPTED, ENQUEUED, SENT, SCHEDULED, CLICKED, ...)   dropped
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from engine.drivers import Driver, OutboundMessage, Receipt, SendResult
from engine.errors import InputError, redact
from engine.hookspecs import hookimpl
from herald_http.api import ApiDriver, ApiOptions, raise_for_status, snippet
from herald_http.http1 import Response, split_url
from herald_http.pool import Transport

__all__ = ["DevinoConfig", "DevinoDriver"]

logger = logging.getLogger("herald_devino")

_UNDELIVERED = frozenset({"UNDELIVERED", "EXPIRED", "REJECTED", "DELETED", "FAILED"})


class DevinoConfig(ApiOptions):
    """Options of the ``devino`` driver (see the module docstring)."""

    base_url: str = "https://api.devino.online"
    #: The API key (Authorization: Key ...).
    api_key: str = ""
    #: Where Devino posts the messages' status changes (Herald's receipt route).
    callback_url: str | None = None
    #: Messages per request.
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=32_000)] = 100
    #: Seconds a message may wait for the phone; unset: Devino's default.
    validity: Annotated[int, msgspec.Meta(ge=0, le=259_200)] | None = None
    #: Devino's priority: LOW and MEDIUM for promotions, HIGH for service, REALTIME for
    #: transactions.
    priority: Literal["LOW", "MEDIUM", "HIGH", "REALTIME"] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.api_key.strip():
            raise ValueError("api_key is required")
        if self.callback_url:
            split_url(self.callback_url)


class _WireMessage(msgspec.Struct, omit_defaults=True):
    from_: str = msgspec.field(name="from")
    to: str = ""
    text: str = ""
    validity: int | None = None
    priority: str | None = None
    callbackUrl: str | None = None
    options: dict[str, str] | None = None


class _Request(msgspec.Struct):
    messages: list[_WireMessage]


class _Reason(msgspec.Struct):
    key: str | None = None
    ref: str | None = None


class _Result(msgspec.Struct):
    code: str | None = None
    messageId: str | int | None = None
    description: str | None = None
    reasons: list[_Reason] | None = None


class _Answer(msgspec.Struct):
    result: list[_Result]


class _ErrorBody(msgspec.Struct):
    code: str | int | None = None
    description: str | None = None
    message: str | None = None


class _Callback(msgspec.Struct):
    messageId: str | int
    status: str
    ts: str | float | None = None
    options: dict[str, Any] | None = None
    description: str | None = None
    reason: str | None = None


_encode = msgspec.json.Encoder().encode
_decode_answer = msgspec.json.Decoder(_Answer).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode
_decode_any = msgspec.json.Decoder().decode


class DevinoDriver(ApiDriver):
    """Submits batches to Devino's ``/sms/messages`` (see the module docstring)."""

    name = "devino"
    Config = DevinoConfig

    def __init__(
        self,
        config: DevinoConfig,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            config, gateway=gateway, base_dir=base_dir,
            url=config.base_url.rstrip("/") + "/sms/messages",
            headers={"Authorization": f"Key {config.api_key}",
                     "Content-Type": "application/json", "Accept": "application/json"},
            batch_size=config.batch_size, max_connections=config.max_connections,
            timeout=config.timeout, idempotent=False, transport=transport,
        )
        self._options = config
        self._secrets = [config.api_key]

    def encode(self, messages: Sequence[OutboundMessage]) -> bytes:
        o = self._options
        wire = [
            _WireMessage(m.sender, m.to.removeprefix("+"), m.text, o.validity, o.priority,
                         o.callback_url, {"heraldId": m.id})
            for m in messages
        ]
        return _encode(_Request(wire))

    def decode(
        self, response: Response, messages: Sequence[OutboundMessage], *, now: float
    ) -> list[SendResult]:
        if not 200 <= response.status < 300:
            detail, code = self._error(response.body)
            raise_for_status(response, where=self.where, now=now, detail=detail, code=code)
        try:
            results = _decode_answer(response.body).result
        except msgspec.DecodeError:
            logger.warning("%s answered 2xx with a body that is not Devino's results: %s;"
                           " the %d messages are recorded unknown", self.where,
                           redact(snippet(response.body), self._secrets), len(messages))
            return []
        out: list[SendResult] = []
        for m, r in zip(messages, results, strict=False):
            if r.code == "OK" and r.messageId is not None:
                out.append(SendResult(m.id, "accepted", provider_id=str(r.messageId)))
            elif r.code == "REJECTED":
                keys = [x.key for x in r.reasons or () if x.key]
                out.append(SendResult(m.id, "rejected",
                                      error=",".join(keys) or r.description or "REJECTED"))
        return out

    def _error(self, body: bytes) -> tuple[str, str | None]:
        """The words and the code of an error answer, for the exception."""
        try:
            error = _decode_error(body)
        except msgspec.DecodeError:
            return redact(snippet(body), self._secrets), None
        words = error.description or error.message or snippet(body)
        return redact(words, self._secrets), None if error.code is None else str(error.code)

    def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
        """The final statuses of a Devino status callback (see the module docstring)."""
        if not body.strip():
            raise InputError("body: empty")
        try:
            raw = _decode_any(body)
        except msgspec.DecodeError as err:
            raise InputError(f"body: not JSON ({err})") from None
        if isinstance(raw, dict) and "result" in raw:
            raw, where = raw["result"], "body.result"
            if not isinstance(raw, list):
                raise InputError("body.result: expected a list")
        elif isinstance(raw, dict):
            raw, where = [raw], ""
        elif isinstance(raw, list):
            where = "body"
        else:
            raise InputError("body: expected a JSON object or list")
        items: list[_Callback] = []
        for i, item in enumerate(raw):
            try:
                items.append(msgspec.convert(item, _Callback))
            except msgspec.ValidationError as err:
                at = f"{where}[{i}]" if where else "body"
                raise InputError(f"{at}{_path(str(err))}") from None
        receipts: list[Receipt] = []
        for item in items:
            status = item.status.upper()
            if status == "DELIVERED":
                state: Literal["delivered", "undelivered"] = "delivered"
                error = None
            elif status in _UNDELIVERED:
                state, error = "undelivered", item.description or item.reason or status
            else:
                continue
            herald_id = (item.options or {}).get("heraldId")
            receipts.append(Receipt(
                str(item.messageId), state, id=herald_id if isinstance(herald_id, str) else None,
                error=error, at=_when(item.ts),
            ))
        return receipts


def _path(message: str) -> str:
    """msgspec's "what - at `$.x`" as ".x: what" (the field named first, for the API)."""
    what, sep, path = message.rpartition(" - at `")
    if not sep:
        what, path = message, ""
    path = path.rstrip("`").removeprefix("$")
    missing = "Object missing required field `"
    if what.startswith(missing):
        return f"{path}.{what[len(missing):].rstrip('`')}: required field missing"
    return f"{path}: {what}"


def _when(ts: str | float | None) -> float | None:
    """Seconds since the epoch from a number (seconds, or milliseconds past 1e11) or an
    ISO 8601 time."""
    if ts is None:
        return None
    if isinstance(ts, int | float):
        return ts / 1000 if ts > 1e11 else float(ts)
    try:
        when = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [DevinoDriver]
