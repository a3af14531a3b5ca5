"""The ``exolve`` driver: MTS Exolve's SMS API on the shared HTTP stack (``herald_http.api``).

Options (``[gateways.NAME]``)::

    driver = "exolve"
    api_key = "..."                  # the application's API key, sent as "Bearer <api_key>"
    base_url = "https://api.exolve.ru"
    max_connections = 16             # single-message requests in flight at once
    timeout = 10.0

**Sending** (``https://docs.exolve.ru/docs/ru/api-reference/sms-api/sending-sms``): one
message per request, ``POST {base_url}/messaging/v1/SendSMS`` with ``Authorization: Bearer
<api_key>`` and ``{"number", "destination", "text"}``. Exolve's ``number`` is the
*sender*: the sender's caller id (an approved alpha name, or a mobile number of the
account); ``destination`` is the recipient's digits without ``+``. The answer is
``{"message_id": "..."}``. Capabilities: ``max_batch = max_connections``,
``supports_dlr``, not ``idempotent`` (Exolve takes no client reference to dedupe by).

**Answers**::

    answer                          outcome
    2xx {"message_id": ...}         accepted; provider_id = message_id
    2xx without a message_id        no result: the engine records the message unknown
    HTTP 429, 503                   throttled (Retry-After), unsent (``raise_for_status``)
    HTTP 408, 425, other 5xx        TransientGatewayError (``raise_for_status``)
    HTTP 400, 401, 403, other 4xx   PermanentGatewayError, code = the body's error code,
                                    else the status

**Callbacks.** Exolve posts an application's SMS events (delivery statuses and incoming
messages) as JSON to the address set for the application; it does not sign them, so
Herald's gateway secret in that address (``?secret=``) is what authenticates them,
checked by the API route before the driver parses. The stored copy of Exolve's docs did
not show these bodies, so the parsers take a JSON object (or a list of them) with the
fields Exolve's SMS API names elsewhere: ``message_id``, ``status``, ``sender``,
``receiver``, ``text``, ``date``; check them against a real callback. Receipts::

    status (a name, any case)                                 receipt
    DELIVERED                                                 delivered
    UNDELIVERED, UNDELIVERABLE, EXPIRED, REJECTED, FAILED     undelivered, error = status
    anything else (QUEUED, SENT, ...), or none                dropped

An event with ``text`` and ``sender`` and no ``status`` is an incoming message:
``parse_inbound`` reads it (``sender`` the phone that wrote, ``receiver`` the number it was
sent to), and ``parse_receipts`` gives none for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from engine.drivers import Driver, Inbound, OutboundMessage, Receipt, SendResult
from engine.errors import InputError, redact
from engine.hookspecs import hookimpl
from herald_http.api import ApiDriver, ApiOptions, raise_for_status, snippet
from herald_http.http1 import Response
from herald_http.pool import Transport

__all__ = ["ExolveConfig", "ExolveDriver"]

logger = logging.getLogger("herald_exolve")

_UNDELIVERED = frozenset({"UNDELIVERED", "UNDELIVERABLE", "EXPIRED", "REJECTED", "FAILED"})


class ExolveConfig(ApiOptions):
    """Options of the ``exolve`` driver (see the module docstring)."""

    base_url: str = "https://api.exolve.ru"
    #: The application's API key (Authorization: Bearer ...).
    api_key: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.api_key.strip():
            raise ValueError("api_key is required")


class _Send(msgspec.Struct):
    number: str
    destination: str
    text: str


class _Answer(msgspec.Struct):
    message_id: str | int | None = None


class _ErrorBody(msgspec.Struct):
    error: Any = None
    message: str | None = None
    code: str | int | None = None


class _Event(msgspec.Struct):
    message_id: str | int | None = None
    status: str | None = None
    sender: str | None = None
    receiver: str | None = None
    text: str | None = None
    date: str | float | None = None
    error: str | None = None


_encode = msgspec.json.Encoder().encode
_decode_answer = msgspec.json.Decoder(_Answer).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode
_decode_any = msgspec.json.Decoder().decode


class ExolveDriver(ApiDriver):
    """Submits messages to Exolve's ``SendSMS``, one per request (see the module docstring)."""

    name = "exolve"
    Config = ExolveConfig

    def __init__(
        self,
        config: ExolveConfig,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            config, gateway=gateway, base_dir=base_dir,
            url=config.base_url.rstrip("/") + "/messaging/v1/SendSMS",
            headers={"Authorization": f"Bearer {config.api_key}",
                     "Content-Type": "application/json", "Accept": "application/json"},
            batch_size=1, max_connections=config.max_connections, timeout=config.timeout,
            idempotent=False, transport=transport,
        )
        self._secrets = [config.api_key]

    def encode(self, messages: Sequence[OutboundMessage]) -> bytes:
        [m] = messages
        return _encode(_Send(m.sender, m.to.removeprefix("+"), m.text))

    def decode(
        self, response: Response, messages: Sequence[OutboundMessage], *, now: float
    ) -> list[SendResult]:
        [m] = messages
        if not 200 <= response.status < 300:
            detail, code = self._error(response.body)
            raise_for_status(response, where=self.where, now=now, detail=detail, code=code)
        try:
            answer = _decode_answer(response.body)
        except msgspec.DecodeError:
            answer = _Answer()
        if answer.message_id in (None, ""):
            logger.warning("%s answered 2xx without a message_id: %s; recorded unknown",
                           self.where, redact(snippet(response.body), self._secrets))
            return []
        return [SendResult(m.id, "accepted", provider_id=str(answer.message_id))]

    def _error(self, body: bytes) -> tuple[str, str | None]:
        """The words and the code of an error answer, for the exception."""
        try:
            error = _decode_error(body)
        except msgspec.DecodeError:
            return redact(snippet(body), self._secrets), None
        words, code = error.message, error.code
        if isinstance(error.error, dict):
            words = words or _str(error.error.get("message"))
            code = code if code is not None else error.error.get("code")
        elif isinstance(error.error, str):
            words = words or error.error
        return (redact(words or snippet(body), self._secrets),
                None if code in (None, "") else str(code))

    def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
        """The final statuses of an Exolve SMS callback (see the module docstring)."""
        receipts: list[Receipt] = []
        for where, event in _events(body):
            if event.status is None:
                if event.text is not None and event.sender:  # an incoming message
                    continue
                raise InputError(f"{where}.status: required field missing")
            if event.message_id in (None, ""):
                raise InputError(f"{where}.message_id: required field missing")
            status = event.status.upper()
            if status == "DELIVERED":
                receipts.append(Receipt(str(event.message_id), "delivered",
                                        at=_when(event.date)))
            elif status in _UNDELIVERED:
                receipts.append(Receipt(str(event.message_id), "undelivered",
                                        error=event.error or status, at=_when(event.date)))
        return receipts

    def parse_inbound(self, body: bytes, headers: dict[str, str]) -> list[Inbound]:
        """The incoming messages of an Exolve SMS callback (see the module docstring)."""
        messages: list[Inbound] = []
        for where, event in _events(body):
            if event.status is not None and event.text is None:  # a delivery status
                continue
            if not event.sender:
                raise InputError(f"{where}.sender: required field missing")
            messages.append(Inbound(event.sender, event.text or "", event.receiver or None,
                                    _when(event.date)))
        return messages


def _events(body: bytes) -> list[tuple[str, _Event]]:
    """The events of a callback, each with where it is (``body`` or ``body[i]``)."""
    if not body.strip():
        raise InputError("body: empty")
    try:
        raw = _decode_any(body)
    except msgspec.DecodeError as err:
        raise InputError(f"body: not JSON ({err})") from None
    if isinstance(raw, dict):
        items, named = [raw], False
    elif isinstance(raw, list):
        items, named = raw, True
    else:
        raise InputError("body: expected a JSON object or list")
    events = []
    for i, item in enumerate(items):
        where = f"body[{i}]" if named else "body"
        try:
            events.append((where, msgspec.convert(item, _Event)))
        except msgspec.ValidationError as err:
            what, _, path = str(err).rpartition(" - at `")
            path = path.rstrip("`").removeprefix("$")
            raise InputError(f"{where}{path}: {what or err}") from None
    return events


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _when(date: str | float | None) -> float | None:
    """Seconds since the epoch from a number or an ISO 8601 time with its offset."""
    if date is None:
        return None
    if isinstance(date, int | float):
        return date / 1000 if date > 1e11 else float(date)
    try:
        when = datetime.fromisoformat(date.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() if when.tzinfo is not None else None


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [ExolveDriver]
