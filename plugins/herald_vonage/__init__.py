"""The ``vonage`` driver: Vonage's (Nexmo's) SMS API, on the shared HTTP stack.

Options (``[gateways.NAME]``)::

    driver = "vonage"
    api_key = "abcd1234"
    api_secret = "..."
    callback = "https://herald.example.com/api/v1/dlr/vonage?secret=..."   # optional
    signature_secret = ""            # set to check the ``sig`` of signed webhooks
    signature_method = "md5hash"     # or md5, sha1, sha256, sha512 (HMAC), as in the dashboard
    base_url = "https://rest.nexmo.com"
    max_connections = 16
    timeout = 10.0

**Sending.** One form-encoded ``POST {base_url}/sms/json`` per message (the SMS API takes
one recipient per request): ``api_key``, ``api_secret``, ``from`` (the sender's caller id),
``to`` (E.164 without ``+``), ``text``, ``type`` (``unicode`` when the text is not GSM-7,
else ``text``), ``client-ref`` (the message id, when it fits the 40 characters the API
allows) and ``callback`` (the delivery-receipt webhook, when set; else the account's).
``max_batch`` = ``max_connections``. ``client-ref`` is only echoed back, never used to
drop a resent message, so the driver is not idempotent.

**Answers** (https://developer.vonage.com/messaging/sms/guides/troubleshooting-sms). The API
answers HTTP 200 with ``messages[]``, one per part of a long text, each with a ``status``::

    status                                        result
    all parts 0 (success)                         accepted, provider_id = first part's id
    1 throttled                                   retry, retry_after = 1 s (slows the sender)
    5 internal error, 10 too many binds           retry (transient)
    4 invalid credentials, 8 account barred,
      11 not enabled for HTTP, 14 invalid
      signature, 32 signature and secret          permanent for the whole call (the code)
    2, 3, 6 invalid message, 7 number barred,
      9 quota (no credit), 12 too long,
      15 invalid sender, 22, 23, 29, 33, others   rejected, error = the status code
    some parts 0, others not                      rejected (part of it went out: sending
                                                    it again would repeat those parts),
                                                    error = the failing part's code
    HTTP 429 / 5xx / other non-2xx                as ``raise_for_status`` (429: 1 s if no
                                                    Retry-After)

**Delivery receipts** (``parse_receipts``): the DLR webhook, JSON or form-encoded POST
(set the dashboard's webhook method to POST), ``messageId``, ``status``, ``err-code``,
``scts`` (``YYMMDDHHMM``, UTC: the receipt's ``at``), ``client-ref`` (the receipt's
``id``). ``delivered`` is delivered; ``failed``, ``rejected`` and ``expired`` are
undelivered (``error`` = ``err-code``); ``accepted``, ``buffered`` and ``unknown`` are not
final and are dropped. Each part of a long text gets its own DLR under its own message id:
a receipt is returned for each, and since ``provider_id`` is the first part's id, the
first part's DLR is the one that settles the message (the others find no message and wait
in the pending receipts until ``receipt_ttl`` drops them). When ``signature_secret`` is set
a webhook without the right ``sig`` is refused (``InputError`` naming ``sig``): the
parameters but ``sig`` sorted by name, each as ``&name=value`` with ``&`` and ``=`` in
values as ``_``, then MD5 of that and the secret (``md5hash``) or its HMAC keyed by it.

**Inbound messages** (``parse_inbound``): the inbound-SMS webhook, ``msisdn`` (the
sender), ``to``, ``text``, ``message-timestamp``; the parts of a long reply arrive as
separate webhooks and are taken one by one.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode

import msgspec

from engine.core.sms import measure
from engine.drivers import Driver, Inbound, OutboundMessage, Receipt, SendResult
from engine.errors import InputError, PermanentGatewayError
from engine.hookspecs import hookimpl
from herald_http.api import ApiDriver, ApiOptions, raise_for_status, snippet
from herald_http.http1 import Response, split_url
from herald_http.pool import Transport
from herald_http.wire import retry_after as header_wait

__all__ = ["SignatureMethod", "VonageConfig", "VonageDriver", "signature"]

#: Seconds to wait after a throttling answer (status 1 gives no time).
DEFAULT_THROTTLE = 1.0
THROTTLED = "1"
RETRYABLE = frozenset({"5", "10"})
#: Statuses about the account, not the message: the whole call fails with them.
ACCOUNT_ERRORS = frozenset({"4", "8", "11", "14", "32"})
#: What ``client-ref`` may hold.
MAX_CLIENT_REF = 40
DELIVERED = frozenset({"delivered"})
UNDELIVERED = frozenset({"failed", "rejected", "expired"})
SignatureMethod = Literal["md5hash", "md5", "sha1", "sha256", "sha512"]


class VonageConfig(ApiOptions, kw_only=True):
    """Options of the ``vonage`` driver (see the module docstring)."""

    #: The account's API key and secret (sent in each request's body, as documented).
    api_key: Annotated[str, msgspec.Meta(min_length=1)]
    api_secret: Annotated[str, msgspec.Meta(min_length=1)]
    #: The public URL of ``POST /api/v1/dlr/{gateway}?secret=...``, sent as ``callback``
    #: with every message; "" leaves the account's default delivery-receipt webhook.
    callback: str = ""
    #: The account's signature secret: set, every webhook must carry a valid ``sig``.
    signature_secret: str = ""
    signature_method: SignatureMethod = "md5hash"
    base_url: str = "https://rest.nexmo.com"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.callback:
            split_url(self.callback)


class _Part(msgspec.Struct):
    status: str
    message_id: str | None = msgspec.field(default=None, name="message-id")
    error_text: str | None = msgspec.field(default=None, name="error-text")


class _Answer(msgspec.Struct):
    messages: list[_Part] = msgspec.field(default_factory=list)


_decode_answer = msgspec.json.Decoder(_Answer)
_decode_object = msgspec.json.Decoder(dict[str, str | int | float | bool | None])


class VonageDriver(ApiDriver):
    """Sends each message as one SMS API request (see the module docstring)."""

    name = "vonage"
    Config = VonageConfig

    def __init__(
        self,
        config: VonageConfig,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        transport: Transport | None = None,
    ) -> None:
        super().__init__(
            config, gateway=gateway, base_dir=base_dir,
            url=f"{config.base_url.rstrip('/')}/sms/json",
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
                     "Accept": "application/json"},
            batch_size=1, max_connections=config.max_connections, timeout=config.timeout,
            idempotent=False, transport=transport,
        )
        self._config = config

    def encode(self, messages: Sequence[OutboundMessage]) -> bytes:
        (m,) = messages
        config = self._config
        fields = {
            "api_key": config.api_key, "api_secret": config.api_secret,
            "from": m.sender, "to": m.to.removeprefix("+"), "text": m.text,
            "type": "unicode" if measure(m.text).encoding == "ucs2" else "text",
        }
        if len(m.id) <= MAX_CLIENT_REF:
            fields["client-ref"] = m.id
        if config.callback:
            fields["callback"] = config.callback
        return urlencode(fields).encode()

    def decode(
        self, response: Response, messages: Sequence[OutboundMessage], *, now: float
    ) -> list[SendResult]:
        (m,) = messages
        if response.status == 429:
            wait = header_wait(response.headers.get("retry-after"), now)
            raise_for_status(response, where=self.where, now=now,
                             retry_after=DEFAULT_THROTTLE if wait is None else wait)
        raise_for_status(response, where=self.where, now=now)
        try:
            parts = _decode_answer.decode(response.body).messages
        except (msgspec.DecodeError, msgspec.ValidationError):
            parts = []
        if not parts:  # a 2xx that says nothing: it may have been taken
            return [SendResult(m.id, "unknown", error=(
                f"connection_lost: {self.where} answered HTTP {response.status} without"
                f" messages: {snippet(response.body)}"))]
        taken = [p.message_id for p in parts if p.status == "0" and p.message_id]
        failed = next((p for p in parts if p.status != "0"), None)
        if failed is None:
            return [SendResult(m.id, "accepted", provider_id=taken[0] if taken else None)]
        code = failed.status
        if taken:
            return [SendResult(m.id, "rejected", provider_id=taken[0], error=code)]
        if code in ACCOUNT_ERRORS:
            raise PermanentGatewayError(
                f"{self.where} refused the account: status {code}"
                + (f" ({failed.error_text})" if failed.error_text else ""), code=code)
        if code == THROTTLED:
            return [SendResult(m.id, "retry", error=f"{code}: {failed.error_text or 'throttled'}",
                               retry_after=DEFAULT_THROTTLE)]
        if code in RETRYABLE:
            return [SendResult(m.id, "retry", error=f"{code}: {failed.error_text or ''}")]
        return [SendResult(m.id, "rejected", error=code)]

    # -- callbacks ---------------------------------------------------------------------

    def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
        """The receipt of one DLR webhook (none when its status is not final)."""
        params = self._params(body)
        message_id = _field(params, "messageId")
        status = _field(params, "status")
        client_ref = params.get("client-ref") or None
        at = _scts(params.get("scts", ""))
        if status in DELIVERED:
            return [Receipt(message_id, "delivered", id=client_ref, at=at)]
        if status in UNDELIVERED:
            code = params.get("err-code") or status
            return [Receipt(message_id, "undelivered", id=client_ref, error=code, at=at)]
        return []

    def parse_inbound(self, body: bytes, headers: dict[str, str]) -> list[Inbound]:
        """The message of one inbound-SMS webhook."""
        params = self._params(body)
        sender = _field(params, "msisdn")
        at = _timestamp(params.get("message-timestamp", ""))
        return [Inbound(sender, params.get("text", ""), params.get("to") or None, at)]

    def _params(self, body: bytes) -> dict[str, str]:
        """A webhook's parameters (JSON or form), its ``sig`` checked when configured."""
        params = _webhook_params(body)
        secret = self._config.signature_secret
        if secret:
            given = params.get("sig", "")
            if not given:
                raise InputError("sig: missing: the gateway requires signed webhooks")
            expected = signature(secret, self._config.signature_method, params)
            if not hmac.compare_digest(given.lower().encode(), expected.encode()):
                raise InputError("sig: wrong signature: not signed with the signature secret")
        return params


def signature(secret: str, method: SignatureMethod, params: Mapping[str, str]) -> str:
    """The ``sig`` Vonage gives a request with ``params`` (lower-case hex)."""
    payload = "".join(f"&{k}={v.replace('&', '_').replace('=', '_')}"
                      for k, v in sorted(params.items()) if k != "sig").encode()
    if method == "md5hash":
        return hashlib.md5(payload + secret.encode()).hexdigest()
    return hmac.new(secret.encode(), payload, method).hexdigest()


def _webhook_params(body: bytes) -> dict[str, str]:
    if body.lstrip()[:1] == b"{":
        try:
            raw = _decode_object.decode(body)
        except msgspec.ValidationError as err:
            raise InputError(f"body: not a Vonage webhook: {err}") from None
        except msgspec.DecodeError as err:
            raise InputError(f"body: not JSON: {err}") from None
        return {k: _text(v) for k, v in raw.items() if v is not None}
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=True,
                              errors="strict"))
    except (UnicodeDecodeError, ValueError):
        raise InputError(f"body: neither JSON nor a form: {snippet(body, 60)!r}") from None


def _text(value: str | int | float | bool) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _field(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise InputError(f"{name}: required field missing from the Vonage webhook")
    return value


def _scts(value: str) -> float | None:
    """``YYMMDDHHMM`` (UTC) as seconds since the epoch; None if it is not that."""
    try:
        return float(calendar.timegm(time.strptime(value, "%y%m%d%H%M")))
    except ValueError:
        return None


def _timestamp(value: str) -> float | None:
    """``YYYY-MM-DD HH:MM:SS`` (UTC) as seconds since the epoch; None if it is not that."""
    try:
        return float(calendar.timegm(time.strptime(value, "%Y-%m-%d %H:%M:%S")))
    except ValueError:
        return None


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [VonageDriver]
