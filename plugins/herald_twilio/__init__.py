"""The ``twilio`` driver: Twilio's Programmable Messaging REST API, on the shared HTTP stack.

Options (``[gateways.NAME]``)::

    driver = "twilio"
    account_sid = "ACxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    auth_token = "..."                 # Basic auth password; also keys the callbacks' signature
    status_callback = "https://herald.example.com/api/v1/dlr/twilio?secret=..."
    inbound_url = ""                   # default: status_callback with /dlr/ -> /inbound/
    messaging_service_sid = ""         # MGxxx: send through a Messaging Service instead of From
    base_url = "https://api.twilio.com"
    max_connections = 16               # concurrent requests (Twilio takes one message each)
    timeout = 10.0

**Sending.** One ``POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json`` per
message (the API has no batch call), form-encoded UTF-8 ``To``, ``From`` (the sender's caller
id; left out with ``messaging_service_sid``, which sends ``MessagingServiceSid``), ``Body``
and ``StatusCallback``, with HTTP Basic auth (account SID, auth token). So ``batch_size`` is
1 and concurrency is ``max_connections``: ``max_batch`` = ``max_connections``. The answer
to a taken message is 201 with the Message resource; its ``sid`` (``SM...``) is the
``provider_id`` that status callbacks carry as ``MessageSid``. Twilio has no idempotency
key on Messages, so the driver is not idempotent: a request that timed out may have sent.

**Answers** (https://www.twilio.com/docs/api/errors)::

    answer                                       result
    201 / 200, status not failed                 accepted, provider_id = sid
    201 / 200, status failed                     rejected, error = error_code
    429, or code 20429 (too many requests),
      or 14107 (SMS send rate limit exceeded)    retry, retry_after = Retry-After or 1 s
                                                   (throttled: slows the whole sender)
    5xx, or code 20500 / 20503                   retry (transient)
    401 / 20003 (authenticate), 403, 404         permanent for the whole call (code)
    other 4xx: 21211 invalid To, 21408 region
      not enabled, 21610 unsubscribed (STOP),
      21612 cannot route, 21614 not a mobile,
      21606 / 21659 bad From, 21617 too long...  rejected, error = the Twilio code
    no answer, connection lost                   as the shared stack says (unknown)

**Status callbacks** (``parse_receipts``): Twilio POSTs form-encoded ``MessageSid``,
``MessageStatus`` and, for a failure, ``ErrorCode`` to ``status_callback``, signed with
``X-Twilio-Signature``: base64 HMAC-SHA1, keyed by the auth token, of the callback URL
exactly as given to Twilio followed by every POST parameter's name and value, sorted by
name. A missing or wrong signature is an ``InputError`` naming the header (the secret in
the URL authenticates too; the signature also proves the body is Twilio's). ``delivered``
and ``read`` are delivered; ``undelivered``, ``failed`` and ``canceled`` are undelivered
(``error`` = ``ErrorCode``); the others (``queued``, ``sending``, ``sent``, ``accepted``,
``scheduled``...) are not final and are dropped.

**Incoming messages** (``parse_inbound``): Twilio's incoming-message webhook (form
``From``, ``To``, ``Body``), signed the same way over ``inbound_url``, which must be the
URL configured on the number or Messaging Service.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

import msgspec

from engine.drivers import Driver, Inbound, OutboundMessage, Receipt, SendResult
from engine.errors import InputError, TransientGatewayError
from engine.hookspecs import hookimpl
from herald_http.api import TRANSIENT_4XX, ApiDriver, ApiOptions, raise_for_status, snippet
from herald_http.http1 import Response, split_url
from herald_http.pool import Transport
from herald_http.wire import retry_after as header_wait

__all__ = ["TwilioConfig", "TwilioDriver", "signature"]

#: Seconds to wait after a throttling answer that gives no ``Retry-After``.
DEFAULT_THROTTLE = 1.0
#: Twilio error codes that mean "slow down" / "try again" whatever the HTTP status.
THROTTLED_CODES = frozenset({20429, 14107})
RETRYABLE_CODES = frozenset({20500, 20503})
#: Statuses that end a message's life (the others are dropped by ``parse_receipts``).
DELIVERED = frozenset({"delivered", "read"})
UNDELIVERED = frozenset({"undelivered", "failed", "canceled"})
SIGNATURE_HEADER = "x-twilio-signature"


class TwilioConfig(ApiOptions, kw_only=True):
    """Options of the ``twilio`` driver (see the module docstring)."""

    #: The account's SID (``AC`` and 32 hex digits): the Basic auth user and the URL path.
    account_sid: Annotated[str, msgspec.Meta(pattern="^AC[0-9a-fA-F]{32}$")]
    #: The account's auth token: the Basic auth password and the callbacks' signing key.
    auth_token: Annotated[str, msgspec.Meta(min_length=1)]
    #: The public URL of Herald's ``POST /api/v1/dlr/{gateway}?secret=...``, sent as
    #: ``StatusCallback`` with every message; "" sends none (Twilio then calls the
    #: Messaging Service's URL, if any, and receipts cannot be checked).
    status_callback: str = ""
    #: The public URL of ``POST /api/v1/inbound/{gateway}?secret=...`` configured on the
    #: number; "" means ``status_callback`` with ``/api/v1/dlr/`` as ``/api/v1/inbound/``.
    inbound_url: str = ""
    #: Send through this Messaging Service (``MG...``) instead of a ``From`` number.
    messaging_service_sid: Annotated[str, msgspec.Meta(pattern="^(MG[0-9a-fA-F]{32})?$")] = ""
    base_url: str = "https://api.twilio.com"

    def __post_init__(self) -> None:
        super().__post_init__()
        for url in (self.status_callback, self.inbound_url):
            if url:
                split_url(url)


class _Answer(msgspec.Struct):
    """The parts of Twilio's answer (a Message resource, or an error) the driver reads."""

    sid: str | None = None
    #: The message's status (a string) in a Message resource, the HTTP status in an error.
    status: str | int | None = None
    error_code: int | None = None
    code: int | None = None
    message: str | None = None


_decode_answer = msgspec.json.Decoder(_Answer)


class TwilioDriver(ApiDriver):
    """Sends each message as one Messages request (see the module docstring)."""

    name = "twilio"
    Config = TwilioConfig

    def __init__(
        self,
        config: TwilioConfig,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        transport: Transport | None = None,
    ) -> None:
        credentials = f"{config.account_sid}:{config.auth_token}".encode()
        super().__init__(
            config, gateway=gateway, base_dir=base_dir,
            url=f"{config.base_url.rstrip('/')}/2010-04-01/Accounts/{config.account_sid}"
                "/Messages.json",
            headers={
                "Authorization": "Basic " + base64.b64encode(credentials).decode(),
                "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                "Accept": "application/json",
            },
            batch_size=1, max_connections=config.max_connections, timeout=config.timeout,
            idempotent=False, transport=transport,
        )
        self._config = config

    def encode(self, messages: Sequence[OutboundMessage]) -> bytes:
        (m,) = messages
        config = self._config
        fields = {"To": m.to, "Body": m.text}
        if config.messaging_service_sid:
            fields["MessagingServiceSid"] = config.messaging_service_sid
        else:
            fields["From"] = m.sender
        if config.status_callback:
            fields["StatusCallback"] = config.status_callback
        return urlencode(fields).encode()

    def decode(
        self, response: Response, messages: Sequence[OutboundMessage], *, now: float
    ) -> list[SendResult]:
        (m,) = messages
        try:
            answer = _decode_answer.decode(response.body)
        except (msgspec.DecodeError, msgspec.ValidationError):
            answer = _Answer()
        status = response.status
        if 200 <= status < 300:
            if answer.sid is None:  # taken, most likely, but nothing to correlate it by
                return [SendResult(m.id, "unknown", error=(
                    f"connection_lost: {self.where} answered HTTP {status} without a"
                    f" message sid: {snippet(response.body)}"))]
            if answer.status == "failed":
                return [SendResult(m.id, "rejected", provider_id=answer.sid,
                                   error=str(answer.error_code or "failed"))]
            return [SendResult(m.id, "accepted", provider_id=answer.sid)]
        code = answer.code
        detail = f"{code}: {answer.message}" if code and answer.message else None
        if status == 429 or code in THROTTLED_CODES:
            wait = header_wait(response.headers.get("retry-after"), now)
            raise TransientGatewayError(
                f"{self.where} is throttling (HTTP {status}"
                + (f", {detail})" if detail else ")"),
                retry_after=wait if wait is not None else DEFAULT_THROTTLE, unsent=True,
            )
        if code in RETRYABLE_CODES and status < 500:
            raise TransientGatewayError(f"{self.where} answered HTTP {status}: {detail}")
        if status in (401, 403, 404) or status in TRANSIENT_4XX or not 400 <= status < 500:
            raise_for_status(response, where=self.where, now=now, detail=detail,
                             code=str(code) if code else None)
        return [SendResult(m.id, "rejected", error=str(code or status))]

    # -- callbacks ---------------------------------------------------------------------

    def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
        """The receipt of a status callback (none when its status is not final)."""
        params = self._signed_params(body, headers, self._config.status_callback,
                                     "status_callback")
        sid = _field(params, "MessageSid")
        status = _field(params, "MessageStatus")
        if status in DELIVERED:
            return [Receipt(sid, "delivered")]
        if status in UNDELIVERED:
            code = params.get("ErrorCode") or None
            return [Receipt(sid, "undelivered", error=code or status)]
        return []

    def parse_inbound(self, body: bytes, headers: dict[str, str]) -> list[Inbound]:
        """The message of an incoming-message webhook."""
        url = self._config.inbound_url or self._config.status_callback.replace(
            "/api/v1/dlr/", "/api/v1/inbound/", 1)
        params = self._signed_params(body, headers, url, "inbound_url")
        return [Inbound(_field(params, "From"), params.get("Body", ""),
                        params.get("To") or None)]

    def _signed_params(
        self, body: bytes, headers: dict[str, str], url: str, option: str
    ) -> dict[str, str]:
        """The form parameters of a Twilio webhook whose ``X-Twilio-Signature`` is right."""
        given = next((v for k, v in headers.items() if k.lower() == SIGNATURE_HEADER), None)
        if not given:
            raise InputError("X-Twilio-Signature: header missing: not a request from Twilio")
        if not url:
            raise InputError(f"X-Twilio-Signature: cannot be checked: set the gateway's"
                             f" {option} to the URL Twilio calls")
        try:
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True,
                              errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise InputError(f"body: not a form-encoded Twilio webhook:"
                             f" {snippet(body, 60)!r}") from None
        expected = signature(self._config.auth_token, url, pairs)
        if not hmac.compare_digest(given.strip().encode(), expected.encode()):
            raise InputError("X-Twilio-Signature: wrong signature: the body or URL is not"
                             " the one Twilio signed, or the auth token differs")
        return dict(pairs)


def signature(auth_token: str, url: str, params: Sequence[tuple[str, str]]) -> str:
    """Twilio's ``X-Twilio-Signature`` of a POST to ``url`` with form ``params``."""
    data = url + "".join(k + v for k, v in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _field(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise InputError(f"{name}: required field missing from the Twilio webhook")
    return value


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [TwilioDriver]
