"""The ``mailgun`` driver: Mailgun's Messages API (email), on the shared HTTP stack.

Options (``[gateways.NAME]``)::

    driver = "mailgun"
    domain = "mg.example.com"          # the sending domain, as set up in Mailgun
    api_key = "..."                    # a sending or account API key
    webhook_signing_key = "..."        # Sending > Webhooks > HTTP webhook signing key
    webhook_max_age = 32400.0          # seconds a webhook's signature stays good; 0 = any
    base_url = "https://api.mailgun.net"   # EU domains: "https://api.eu.mailgun.net"
    vendor_tracking = false            # let Mailgun rewrite links / add its pixel too
    max_connections = 16
    timeout = 10.0

**Sending.** One ``POST {base_url}/v3/{domain}/messages.mime`` per message (each Herald
message is its own MIME document, and the call takes one), ``multipart/form-data`` with
``to`` (the envelope recipient), ``message`` (the file: ``OutboundMessage.mime``, the
whole RFC 5322 message the engine built, sent unchanged so a DKIM signature over it
holds), ``v:herald-id`` (Herald's message id, which Mailgun hands back in every webhook
as ``user-variables``) and, unless ``vendor_tracking``, ``o:tracking=no`` (Herald rewrites
links and adds its own pixel; Mailgun's would count every click twice). HTTP Basic auth
``api:{api_key}``. So ``batch_size`` is 1 and ``max_batch`` = ``max_connections``. The
envelope sender is Mailgun's (its bounces come back as webhooks): ``OutboundMessage.sender``
is not sent. Mailgun has no idempotency key: the driver is not idempotent. A message
without ``mime`` (an SMS) is rejected, as is one whose bytes hold the form's boundary
(random per driver: it cannot happen by chance).

**Answers** (https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses)::

    answer                                       result
    200 {"id": "<...>", "message": "Queued..."}  accepted, provider_id = id without <>
    200 without an id                            unknown (taken, most likely; nothing to
                                                   correlate it by)
    429                                          retry, retry_after = Retry-After or 1 s
                                                   (throttled: slows the whole sender)
    5xx, 408, 425                                retry (transient)
    401, 403 (key), 404 (no such domain)         permanent for the whole call
    400 (a bad address...), 413, other 4xx       rejected, error = Mailgun's "message"
    no answer, connection lost                   as the shared stack says (unknown)

**Webhooks.** Mailgun posts one event per request, JSON ``{"signature": {"timestamp",
"token", "signature"}, "event-data": {...}}``. The signature is the hex HMAC-SHA256 of
``timestamp`` followed by ``token``, keyed by ``webhook_signing_key``; a subaccount's
events carry ``parent-signature`` too, which is accepted as well (the key may be the
primary account's). A missing or wrong signature, or one signed more than
``webhook_max_age`` seconds ago (or more than 5 minutes in the future) is an
``InputError`` naming the field. The default age is 9 hours because Mailgun retries a
webhook for 8 hours and does not say that it signs a retry again; a replay inside it can
only repeat what Mailgun said (a bounce applied twice is applied once). The signature
covers the timestamp and the token, not the event: so a token seen once is remembered
(the last ``MAX_TOKENS``, per driver instance) with a digest of its event, and the same
token with another event is refused (``signature.token``) as a forgery riding on a
captured signature; the same token with the same event (a redelivery) is taken.

- ``parse_bounces`` (the route ``POST /api/v1/inbound/{gateway}``, for the ``failed`` and
  ``complained`` webhooks): ``failed`` with ``severity`` ``permanent`` is a ``hard``
  bounce, ``temporary`` a ``soft`` one, ``complained`` a ``complaint``; ``email`` is
  ``event-data.recipient``, ``provider_id`` the ``message.headers.message-id``, ``id`` the
  ``herald-id`` user variable, ``error`` the reason and ``delivery-status`` (``"bounce:
  550 5.1.1 The email account that you tried to reach does not exist"``), ``at`` the
  event's ``timestamp``. Other events give nothing.
- ``parse_receipts`` (``POST /api/v1/dlr/{gateway}``, for the ``delivered`` and
  ``failed`` webhooks): ``delivered`` is delivered, a permanent ``failed`` undelivered;
  a temporary failure is not final and gives nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from engine.drivers import Bounce, Capabilities, Driver, OutboundMessage, Receipt, SendResult
from engine.errors import InputError, TransientGatewayError
from engine.hookspecs import hookimpl
from engine.tracking.lru import Lru
from herald_http.api import (
    TRANSIENT_4XX,
    ApiDriver,
    ApiOptions,
    field_path,
    raise_for_status,
    snippet,
)
from herald_http.http1 import Response
from herald_http.pool import Transport
from herald_http.wire import retry_after as header_wait

__all__ = ["MailgunConfig", "MailgunDriver", "signature"]

#: Seconds to wait after a 429 that gives no ``Retry-After``.
DEFAULT_THROTTLE = 1.0
#: How far in the future a webhook's timestamp may be (the two clocks differ).
MAX_SKEW = 300.0
#: Webhook tokens remembered against replays with another event.
MAX_TOKENS = 100_000
#: The user variable that carries Herald's message id.
ID_VARIABLE = "herald-id"


class MailgunConfig(ApiOptions, kw_only=True):
    """Options of the ``mailgun`` driver (see the module docstring)."""

    #: The sending domain (``mg.example.com``), as it is set up in Mailgun.
    domain: Annotated[str, msgspec.Meta(min_length=1)]
    #: An API key that may send for ``domain``: the Basic auth password (user ``api``).
    api_key: Annotated[str, msgspec.Meta(min_length=1)]
    #: The HTTP webhook signing key that checks the webhooks; "" takes none.
    webhook_signing_key: str = ""
    #: Seconds after its signing a webhook is still taken; 0 takes any age.
    webhook_max_age: Annotated[float, msgspec.Meta(ge=0, le=30 * 86_400)] = 9 * 3600.0
    #: Let Mailgun track opens and clicks too (``o:tracking``); Herald tracks its own.
    vendor_tracking: bool = False
    base_url: str = "https://api.mailgun.net"

    def __post_init__(self) -> None:
        super().__post_init__()
        try:
            # imported here: email-validator takes 80 ms to import, and every herald
            # command loads every driver
            from engine.core.emails import normalise_domain

            normal = normalise_domain(self.domain)
        except InputError as err:
            raise ValueError(str(err)) from None
        self.domain = normal  # an IDN domain goes into the URL path as its A-labels


class _Answer(msgspec.Struct):
    id: str | None = None
    message: str | None = None


class _Signature(msgspec.Struct, frozen=True):
    timestamp: str | int
    token: str
    signature: str
    parent_signature: str | None = msgspec.field(default=None, name="parent-signature")


class _Headers(msgspec.Struct, frozen=True):
    message_id: str | None = msgspec.field(default=None, name="message-id")


class _Message(msgspec.Struct, frozen=True):
    headers: _Headers = _Headers()


class _DeliveryStatus(msgspec.Struct, frozen=True):
    code: int | str | None = None
    message: str | None = None
    description: str | None = None


class _EventData(msgspec.Struct, frozen=True):
    event: str
    recipient: str | None = None
    severity: str | None = None
    reason: str | None = None
    timestamp: float | None = None
    message: _Message = _Message()
    user_variables: dict[str, Any] = msgspec.field(default_factory=dict, name="user-variables")
    delivery_status: _DeliveryStatus | None = msgspec.field(default=None, name="delivery-status")


class _Webhook(msgspec.Struct, frozen=True):
    signature: _Signature
    event_data: _EventData = msgspec.field(name="event-data")


_decode_answer = msgspec.json.Decoder(_Answer)
_decode_json = msgspec.json.Decoder()
_encode_sorted = msgspec.json.Encoder(order="sorted")


class MailgunDriver(ApiDriver):
    """Sends each message as one ``messages.mime`` request (see the module docstring)."""

    name = "mailgun"
    Config = MailgunConfig
    capabilities = Capabilities(supports_dlr=True, channel="email")

    def __init__(
        self,
        config: MailgunConfig,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        transport: Transport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        #: Splits the form's fields; random, so no message holds it but by design.
        self.boundary = "herald-" + secrets.token_hex(16)
        credentials = base64.b64encode(f"api:{config.api_key}".encode()).decode()
        super().__init__(
            config, gateway=gateway, base_dir=base_dir,
            url=f"{config.base_url.rstrip('/')}/v3/{config.domain}/messages.mime",
            headers={
                "Authorization": f"Basic {credentials}",
                "Content-Type": f"multipart/form-data; boundary={self.boundary}",
                "Accept": "application/json",
            },
            batch_size=1, max_connections=config.max_connections, timeout=config.timeout,
            idempotent=False, transport=transport,
        )
        self.capabilities = msgspec.structs.replace(self.capabilities, channel="email")
        self._config = config
        #: The wall clock webhooks' signing times are checked against.
        self.clock = clock
        self._delimiter = f"--{self.boundary}".encode()
        self._tokens: Lru[str, bytes] = Lru(MAX_TOKENS)
        self._tokens_lock = threading.Lock()  # webhooks are parsed in worker threads
        options = [] if config.vendor_tracking else [("o:tracking", b"no")]
        self._options = b"".join(self._field(name, value) for name, value in options)

    # -- sending -----------------------------------------------------------------------

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        bad = {m.id: error for m in messages if (error := self._unsendable(m))}
        if not bad:
            return await super().send_batch(messages)
        sent = iter(await super().send_batch([m for m in messages if m.id not in bad]))
        return [SendResult(m.id, "rejected", error=bad[m.id]) if m.id in bad else next(sent)
                for m in messages]

    def _unsendable(self, m: OutboundMessage) -> str | None:
        """Why ``m`` cannot go out through Mailgun, if it cannot."""
        if m.mime is None:
            return "no MIME message: the mailgun driver sends email only"
        if any(self._delimiter in part for part in (m.mime, m.to.encode(), m.id.encode())):
            return "the message holds the form's boundary"
        return None

    def encode(self, messages: Sequence[OutboundMessage]) -> bytes:
        (m,) = messages
        assert m.mime is not None  # send_batch rejected it otherwise
        return b"".join((
            self._field("to", m.to.encode()),
            self._field(f"v:{ID_VARIABLE}", m.id.encode()),
            self._options,
            self._delimiter,
            b'\r\nContent-Disposition: form-data; name="message"; filename="message.mime"'
            b"\r\nContent-Type: message/rfc822\r\n\r\n",
            m.mime,
            b"\r\n", self._delimiter, b"--\r\n",
        ))

    def _field(self, name: str, value: bytes) -> bytes:
        return b"%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (
            self._delimiter, name.encode(), value)

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
            provider_id = (answer.id or "").strip().strip("<>")
            if not provider_id:
                return [SendResult(m.id, "unknown", error=(
                    f"connection_lost: {self.where} answered HTTP {status} without a"
                    f" message id: {snippet(response.body)}"))]
            return [SendResult(m.id, "accepted", provider_id=provider_id)]
        detail = answer.message.strip() if answer.message else None
        if status == 429:
            wait = header_wait(response.headers.get("retry-after"), now)
            raise TransientGatewayError(
                f"{self.where} is throttling (HTTP 429" + (f", {detail})" if detail else ")"),
                retry_after=wait if wait is not None else DEFAULT_THROTTLE, unsent=True,
            )
        if status in (401, 403, 404) or status in TRANSIENT_4XX or not 400 <= status < 500:
            raise_for_status(response, where=self.where, now=now, detail=detail)
        return [SendResult(m.id, "rejected", error=f"{status}: {detail or snippet(response.body)}")]

    # -- webhooks ----------------------------------------------------------------------

    def parse_bounces(self, body: bytes, headers: dict[str, str]) -> list[Bounce]:
        """The bounce or complaint of a ``failed`` or ``complained`` webhook (none for the
        other events)."""
        event = self._signed_event(body)
        kind: Literal["hard", "soft", "complaint"]
        if event.event == "failed":
            kind = _severity(event)
        elif event.event == "complained":
            kind = "complaint"
        else:
            return []
        if not event.recipient:
            raise InputError(f"event-data.recipient: required field missing from a Mailgun"
                             f" {event.event} event")
        error = _error(event) if kind != "complaint" else "complained"
        return [Bounce(kind, event.recipient, id=_herald_id(event),
                       provider_id=_provider_id(event), error=error, at=_at(event))]

    def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
        """The receipt of a ``delivered`` or permanently ``failed`` webhook (none for a
        temporary failure or another event)."""
        event = self._signed_event(body)
        if event.event == "delivered":
            status: Literal["delivered", "undelivered"] = "delivered"
        elif event.event == "failed" and _severity(event) == "hard":
            status = "undelivered"
        else:
            return []
        provider_id = _provider_id(event)
        if provider_id is None:
            raise InputError("event-data.message.headers.message-id: required field missing"
                             f" from a Mailgun {event.event} event")
        error = _error(event) if status == "undelivered" else None
        return [Receipt(provider_id, status, id=_herald_id(event), error=error,
                        at=_at(event))]

    def _signed_event(self, body: bytes) -> _EventData:
        """The event of a webhook whose signature is right and recent enough."""
        try:
            raw = _decode_json.decode(body)
            hook = msgspec.convert(raw, _Webhook)
        except msgspec.ValidationError as err:
            raise InputError(f"{field_path(str(err))} (Mailgun webhook)") from None
        except msgspec.DecodeError as err:
            raise InputError(f"body: not a Mailgun webhook (JSON): {err}") from None
        key = self._config.webhook_signing_key
        if not key:
            raise InputError("signature: cannot be checked: set the gateway's"
                             " webhook_signing_key (Mailgun's HTTP webhook signing key)")
        sig = hook.signature
        expected = signature(key, sig.timestamp, sig.token)
        given = [s.strip().lower().encode() for s in (sig.signature, sig.parent_signature)
                 if s is not None]
        if not any(hmac.compare_digest(s, expected.encode()) for s in given):
            raise InputError("signature.signature: wrong signature: the body is not one"
                             " Mailgun signed, or webhook_signing_key differs")
        try:
            signed = float(sig.timestamp)
        except ValueError:
            signed = math.nan
        if not math.isfinite(signed):
            raise InputError(f"signature.timestamp: {str(sig.timestamp)[:40]!r} is not"
                             " seconds since the epoch")
        now = self.clock()
        max_age = self._config.webhook_max_age
        if max_age and now - signed > max_age:
            raise InputError(f"signature.timestamp: signed {now - signed:.0f} s ago, more"
                             f" than webhook_max_age ({max_age:g} s): an old webhook"
                             " replayed, or a clock far off")
        if signed - now > MAX_SKEW:
            raise InputError(f"signature.timestamp: {signed - now:.0f} s in the future:"
                             " a clock far off")
        digest = hashlib.sha256(_encode_sorted.encode(raw["event-data"])).digest()
        with self._tokens_lock:
            seen = self._tokens.get(sig.token)
            if seen is None:
                self._tokens.put(sig.token, digest)
        if seen is not None and seen != digest:
            raise InputError("signature.token: already signed another event: a captured"
                             " signature replayed with a forged event")
        return hook.event_data


def signature(key: str, timestamp: str | int, token: str) -> str:
    """Mailgun's webhook signature: hex HMAC-SHA256 of ``timestamp`` + ``token``."""
    data = f"{timestamp}{token}".encode()
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest()


def _severity(event: _EventData) -> Literal["hard", "soft"]:
    if event.severity == "permanent":
        return "hard"
    if event.severity == "temporary":
        return "soft"
    raise InputError(f"event-data.severity: {event.severity!r} is neither permanent nor"
                     " temporary (Mailgun failed event)")


def _error(event: _EventData) -> str:
    """``"bounce: 550 5.1.1 The email account ..."``: why it failed, in Mailgun's words."""
    status = event.delivery_status
    words: list[str] = []
    if status is not None:
        if status.code not in (None, "", 0):
            words.append(str(status.code))
        text = status.message or status.description
        if text:
            words.append(" ".join(text.split()))
    detail = " ".join(words)
    if event.reason:
        return f"{event.reason}: {detail}" if detail else event.reason
    return detail or event.event


def _herald_id(event: _EventData) -> str | None:
    value = event.user_variables.get(ID_VARIABLE)
    return value if isinstance(value, str) and value else None


def _provider_id(event: _EventData) -> str | None:
    value = event.message.headers.message_id
    value = value.strip().strip("<>") if value else ""
    return value or None


def _at(event: _EventData) -> float | None:
    at = event.timestamp
    return at if at is not None and math.isfinite(at) else None


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [MailgunDriver]
