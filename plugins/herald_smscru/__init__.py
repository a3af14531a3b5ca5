"""The ``smscru`` driver: SMSC.ru's HTTP API on the shared HTTP stack (``herald_http.api``).

Options (``[gateways.NAME]``)::

    driver = "smscru"
    login = "mylogin"        # with psw; or apikey instead of both
    psw = "..."
    # apikey = "..."
    base_url = "https://smsc.ru"   # the backup server is https://www2.smsc.ru
    max_connections = 8      # SMSC.ru answers error 9 to too many concurrent requests
    timeout = 10.0

**Sending.** One message per request (SMSC.ru sends one text per request; Herald's
messages are per recipient): ``POST {base_url}/sys/send.php``, form-encoded, with
``login`` and ``psw`` (or ``apikey``), ``phones`` (the E.164 number with its ``+``, which
turns SMSC.ru's number auto-correction off), ``mes``, ``sender`` (the sender's caller id),
``id``, ``fmt=3`` (JSON answers) and ``charset=utf-8`` (any text, Cyrillic and emoji too).
``id`` is a number from 1 to 2147483647 that SMSC.ru keeps with the message; Herald derives
it from the message id (``smsc_id``), so an attempt repeated under the same message id is
the same request. Capabilities: ``max_batch = max_connections`` (that many single-message
requests at once), ``supports_dlr``, not ``idempotent``: SMSC.ru does not document that it
drops an id it has seen. It refuses the same request twice within a minute (error 9), which
is no promise for a repeat after that.

**Answers** (``https://smsc.ru/api/http/send/sms/sms_answer/``, read through its mirror
``http://s1.sm-s.ru/api/http/send/sms/sms_answer/``; an answer is HTTP 200 with
``{"id": N, "cnt": N}`` or ``{"error": "...", "error_code": N}``)::

    answer                       outcome
    {"id": ..., "cnt": ...}      accepted; provider_id "<id>-<phone digits>"
    error 1 (bad parameters)     rejected, error "1"
    error 5 (bad date)           rejected, error "5"
    error 6 (message forbidden)  rejected, error "6"
    error 7 (bad phone number)   rejected, error "7"
    error 8 (cannot be delivered) rejected, error "8"
    error 2 (bad login/password) PermanentGatewayError, code "2" (the whole batch)
    error 3 (no funds)           PermanentGatewayError, code "3" (the whole batch)
    error 4 (IP blocked a while) throttled: TransientGatewayError, retry_after 60 s, unsent
    error 9 (repeat, too many)   throttled: TransientGatewayError, retry_after 60 s
    another error code           rejected, error "<code>"
    HTTP 429, 503                throttled (Retry-After), unsent (``raise_for_status``)
    HTTP 408, 425, other 5xx     TransientGatewayError (``raise_for_status``)
    another HTTP 4xx             PermanentGatewayError, code "<status>"
    2xx that is not the above    no result: the engine records the message unknown

Error 9 is not ``unsent``: it is also SMSC.ru's answer to a repeat of a request it may have
taken, so the batch is not moved to another gateway on it. Errors 2 and 3 are the
account's, not the message's: every message of the call would get them.

**Receipts.** SMSC.ru posts each status change to the handler address set in the
account's settings ("Настройки" → the status handler URL), one status per form-encoded
POST: ``id``, ``phone``, ``status``, ``err`` and the time. Set the address to
``https://HERALD/api/v1/dlr/NAME?secret=SECRET&charset=utf-8``: Herald's gateway secret in
``?secret=`` is what authenticates the callback (the API route checks it before the driver
parses). SMSC.ru can add a checksum (``md5``, ``sha1`` or ``crc32`` in the handler
address, ``https://smscentre.com/api/http/miscellaneous/callback/``); this driver does not
check it, as the stored copy of the docs does not say over what it is computed. Statuses
(``https://smsc.ru/api/http/status_messages/``)::

    status                               receipt
    -3 not found, -1 queued, 0 sent to operator, other codes   dropped (not final)
    1 delivered, 2 read, 4 link opened   delivered
    3 expired                            undelivered, error "3 expired"
    20 cannot be delivered               undelivered, error "20 undeliverable"
    22 invalid number                    undelivered, error "22 invalid number"
    23 prohibited                        undelivered, error "23 prohibited"
    24 insufficient funds                undelivered, error "24 no funds"
    25 unavailable number                undelivered, error "25 unavailable number"

(``err``, when not 0, is appended: ``"20 undeliverable (err 1)"``.) A body without
``status`` but with ``mes`` is an incoming message (SMSC.ru posts both to one address): it
gives no receipts. ``parse_inbound`` reads those (``phone``, ``mes``, ``to``), and as the
driver declares ``one_callback``, Herald's receipt route hands every callback to both
parsers: a STOP sent to the handler address unsubscribes its sender. The handler's
default charset is windows-1251; a body that is not UTF-8 is read as that.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

import msgspec

from engine.drivers import Driver, Inbound, OutboundMessage, Receipt, SendResult
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError, redact
from engine.hookspecs import hookimpl
from herald_http.api import ApiDriver, ApiOptions, raise_for_status, snippet
from herald_http.http1 import Response
from herald_http.pool import Transport

__all__ = ["SmscConfig", "SmscDriver", "provider_id", "smsc_id"]

logger = logging.getLogger("herald_smscru")

#: Seconds to wait after error 4 or 9 (SMSC.ru counts both over a minute).
THROTTLE_WAIT = 60.0
#: Errors that refuse the account rather than the message.
_ACCOUNT_ERRORS = frozenset({2, 3})

#: Final statuses: what they mean and the words kept as the receipt's error.
_DELIVERED = frozenset({1, 2, 4})
_UNDELIVERED = {
    3: "expired",
    20: "undeliverable",
    22: "invalid number",
    23: "prohibited",
    24: "no funds",
    25: "unavailable number",
}


class SmscConfig(ApiOptions):
    """Options of the ``smscru`` driver (see the module docstring)."""

    base_url: str = "https://smsc.ru"
    #: Requests in flight at once (each carries one message).
    max_connections: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 8
    #: The account's login, with ``psw``.
    login: str = ""
    #: The account's password (or an API password made for it), with ``login``.
    psw: str = ""
    #: An API key, instead of ``login`` and ``psw``.
    apikey: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.apikey and (self.login or self.psw):
            raise ValueError("give either apikey, or login and psw, not both")
        if not self.apikey and not (self.login and self.psw):
            raise ValueError("give apikey, or both login and psw")


class _Answer(msgspec.Struct):
    id: int | str | None = None
    cnt: int | None = None
    error: str | None = None
    error_code: int | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode
_decode_object = msgspec.json.Decoder(dict[str, Any]).decode


def smsc_id(message_id: str) -> int:
    """The ``id`` SMSC.ru keeps for a message: a number from 1 to 2**31 - 1 derived from
    Herald's message id, the same on every attempt."""
    digest = hashlib.blake2b(message_id.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF or 1


def provider_id(smsc_message_id: object, phone: str) -> str:
    """How receipts find a message: SMSC.ru names one by its id and phone together."""
    return f"{smsc_message_id}-{''.join(c for c in phone if c.isdigit())}"


class SmscDriver(ApiDriver):
    """Submits messages to SMSC.ru, one per request (see the module docstring)."""

    name = "smscru"
    Config = SmscConfig
    one_callback = True  # statuses and incoming messages come to one handler address

    def __init__(
        self,
        config: SmscConfig,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            config, gateway=gateway, base_dir=base_dir,
            url=config.base_url.rstrip("/") + "/sys/send.php",
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                     "Accept": "application/json"},
            batch_size=1, max_connections=config.max_connections, timeout=config.timeout,
            idempotent=False, transport=transport,
        )
        if config.apikey:
            self._auth = [("apikey", config.apikey)]
        else:
            self._auth = [("login", config.login), ("psw", config.psw)]
        self._secrets = [s for s in (config.psw, config.apikey) if s]

    def encode(self, messages: Sequence[OutboundMessage]) -> bytes:
        [m] = messages
        fields = [*self._auth, ("phones", m.to), ("mes", m.text)]
        if m.sender:
            fields.append(("sender", m.sender))
        fields += [("id", str(smsc_id(m.id))), ("fmt", "3"), ("charset", "utf-8")]
        return urlencode(fields, encoding="utf-8").encode("ascii")

    def decode(
        self, response: Response, messages: Sequence[OutboundMessage], *, now: float
    ) -> list[SendResult]:
        [m] = messages
        raise_for_status(response, where=self.where, now=now,
                         detail=redact(snippet(response.body), self._secrets))
        try:
            answer = _decode_answer(response.body)
        except msgspec.DecodeError:
            answer = _Answer()
        code = answer.error_code
        if code is None:
            if answer.id is None:
                logger.warning("%s answered without an id or an error: %s; recorded unknown",
                               self.where, redact(snippet(response.body), self._secrets))
                return []
            return [SendResult(m.id, "accepted", provider_id=provider_id(answer.id, m.to))]
        words = redact(answer.error or "", self._secrets)
        detail = f"{self.where} answered error {code}" + (f" ({words})" if words else "")
        if code == 4:
            raise TransientGatewayError(detail, retry_after=THROTTLE_WAIT, unsent=True)
        if code == 9:
            raise TransientGatewayError(detail, retry_after=THROTTLE_WAIT)
        if code in _ACCOUNT_ERRORS:
            raise PermanentGatewayError(detail, code=str(code))
        return [SendResult(m.id, "rejected", error=str(code))]

    def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
        """The receipt of one SMSC.ru status callback (none for a status not final)."""
        fields = _callback(body, headers)
        if "status" not in fields:
            if "mes" in fields:  # an incoming message, posted to the same address
                return []
            raise InputError("body.status: required field missing")
        status = _integer(fields, "status")
        message_id = _required(fields, "id")
        phone = _required(fields, "phone")
        pid, at = provider_id(message_id, phone), _when(fields)
        if status in _DELIVERED:
            return [Receipt(pid, "delivered", at=at)]
        if status not in _UNDELIVERED:
            return []
        error = f"{status} {_UNDELIVERED[status]}"
        err = fields.get("err", "").strip()
        if err and err != "0":
            error += f" (err {err})"
        return [Receipt(pid, "undelivered", error=error, at=at)]

    def parse_inbound(self, body: bytes, headers: dict[str, str]) -> list[Inbound]:
        """The incoming message of one SMSC.ru callback (``phone``, ``mes``, ``to``)."""
        fields = _callback(body, headers)
        if "status" in fields and "mes" not in fields:  # a status, posted to the same address
            return []
        phone = _required(fields, "phone")
        if "mes" not in fields:
            raise InputError("body.mes: required field missing")
        return [Inbound(phone, fields["mes"], fields.get("to") or None, _when(fields))]


def _callback(body: bytes, headers: dict[str, str]) -> dict[str, str]:
    """The fields of a callback: form-encoded (UTF-8, else windows-1251), or a JSON object
    (a handler address with ``fmt=3``)."""
    if body.lstrip()[:1] == b"{":
        try:
            raw = _decode_object(body)
        except msgspec.DecodeError as err:
            raise InputError(f"body: not a JSON object ({err})") from None
        return {k: "" if v is None else str(v) for k, v in raw.items()}
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise InputError("body: not a form-encoded callback (bytes that are not ASCII)"
                         ) from None
    if not text.strip() or any(c < " " and c not in "\r\n" for c in text):
        raise InputError("body: not a form-encoded callback")
    charset = "utf-8"
    content_type = headers.get("content-type", "")
    if "charset=" in content_type:
        charset = content_type.split("charset=", 1)[1].split(";")[0].strip().strip('"')
    for encoding in dict.fromkeys((charset, "utf-8", "cp1251")):
        try:
            pairs = parse_qsl(text, keep_blank_values=True, encoding=encoding,
                              errors="strict")
        except (UnicodeDecodeError, LookupError):
            continue
        return dict(pairs)
    raise InputError("body: not a form-encoded callback in a known charset")


def _required(fields: dict[str, str], name: str) -> str:
    value = fields.get(name, "").strip()
    if not value:
        raise InputError(f"body.{name}: required field missing")
    return value


def _integer(fields: dict[str, str], name: str) -> int:
    value = _required(fields, name)
    try:
        return int(value)
    except ValueError:
        raise InputError(f"body.{name}: expected a number, got {value[:20]!r}") from None


def _when(fields: dict[str, str]) -> float | None:
    """When the status came: ``ts`` or ``time`` as seconds since the epoch, or
    ``time`` as ``DD.MM.YYYY hh:mm:ss`` (taken as UTC+3, Moscow, SMSC.ru's clock)."""
    for name in ("ts", "time"):
        value = fields.get(name, "").strip()
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            try:
                local = datetime.strptime(value, "%d.%m.%Y %H:%M:%S").replace(tzinfo=UTC)
            except ValueError:
                continue
            return local.timestamp() - 3 * 3600
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    return None


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [SmscDriver]
