"""The gateway driver interface.

A driver is small: a config Struct, declared capabilities, one async method that submits a
batch and returns one result per message, and ``aclose()``. Retry, throttling and routing
policy live in the engine, never in a driver. Plugins hand driver classes to the engine
through the ``herald_drivers`` hook (see ``engine.hookspecs``).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import msgspec

from engine.errors import InputError

__all__ = [
    "Bounce",
    "Capabilities",
    "Driver",
    "DriverConfig",
    "Inbound",
    "Listener",
    "OutboundMessage",
    "Receipt",
    "SendResult",
    "SendStatus",
    "check_callback_size",
]

SendStatus = Literal["accepted", "rejected", "retry", "unknown"]


class OutboundMessage(msgspec.Struct, frozen=True, gc=False):
    """One message handed to a driver. ``id`` is stable across retries, failover and resume.

    An SMS: ``to`` is the E.164 phone, ``sender`` the caller id, ``text`` the rendered text.

    An email (``mime`` set): ``to`` is the normalised recipient address (the envelope's
    ``RCPT TO``), ``sender`` the envelope sender (the return path, a VERP address where
    the gateway takes bounces by mail), ``text`` the text version, and ``mime`` the whole
    RFC 5322 message the engine built (``engine.core.mime``): headers (From, To, Subject,
    Date, Message-ID, List-Unsubscribe, ...) and the multipart body, CRLF line ends. A
    driver that signs (DKIM) signs these bytes; it never rebuilds them.
    """

    id: str
    to: str
    sender: str
    text: str
    segments: int = 1
    mime: bytes | None = None


class SendResult(msgspec.Struct, frozen=True, gc=False):
    """What the gateway said about one message.

    ``accepted``: the gateway took it (``provider_id`` correlates delivery receipts).
    ``rejected``: refused for good (``error`` says why, in the provider's words or code).
    ``retry``: not taken this time; worth another try (``retry_after`` seconds if known).
    ``unknown``: the gateway may or may not have taken it (its request timed out, or the
    connection was lost before the answer); ``error`` starts with the reason, ``timeout``
    or ``connection_lost``. The sender's ``on_ambiguous`` decides: retry under the same id,
    or record it ``unknown``.
    """

    id: str
    status: SendStatus
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None


class Receipt(msgspec.Struct, frozen=True):
    """A delivery receipt, as a driver parsed it from its gateway's callback.

    ``provider_id`` correlates it with the message (``id`` too, when the gateway echoes it).
    """

    provider_id: str
    status: Literal["delivered", "undelivered"]
    id: str | None = None
    error: str | None = None
    #: When the gateway says it happened (seconds since the epoch), if it says.
    at: float | None = None


class Inbound(msgspec.Struct, frozen=True):
    """A message a recipient sent back (a reply), as a driver parsed it from its gateway's
    inbound callback. A STOP reply unsubscribes ``phone`` (``engine.tracking.inbound``)."""

    #: Who sent it: the recipient's phone, as the gateway wrote it (normalised by Herald).
    phone: str
    text: str
    #: The number or caller id the reply was sent to, if the gateway says.
    to: str | None = None
    #: When the gateway received it (seconds since the epoch), if it says.
    at: float | None = None


class Bounce(msgspec.Struct, frozen=True):
    """An email that came back, or a complaint about one, as a driver parsed it from its
    gateway's inbound route (``POST /api/v1/inbound/{gateway}``): an RFC 3464 DSN, an
    RFC 5965 ARF report, or the vendor's webhook.

    ``hard``: the address does not exist or refuses for good (5.x.x); the subscription
    becomes ``hardbounced`` (Altcraft's ``hbounce``). ``soft``: a temporary failure (4.x.x,
    a full mailbox; ``sbounce``). ``complaint``: the recipient marked it as spam
    (``complain``: ``complainer``, and the address is suppressed).
    """

    kind: Literal["hard", "soft", "complaint"]
    #: The recipient's address, as the report gives it (Herald normalises it).
    email: str
    #: Herald's message id, when the report carries it (VERP return path, or the
    #: original message's ``X-Herald-Id`` header).
    id: str | None = None
    #: The gateway's id of the message, for a vendor's webhook.
    provider_id: str | None = None
    #: The status and diagnostic, e.g. ``"5.1.1 smtp; 550 5.1.1 user unknown"``.
    error: str | None = None
    #: When it happened (seconds since the epoch), if the report says.
    at: float | None = None


class Capabilities(msgspec.Struct, frozen=True):
    """What a driver can do; the engine shapes batches and recovery around it.

    ``idempotent``: resubmitting a message under the same id never sends it twice (the
    gateway dedupes by id), so a message in flight at a crash is safely re-sent on resume.
    ``max_segments``: 0 means no cap.
    """

    max_batch: int = 500
    max_segments: int = 0
    supports_dlr: bool = False
    idempotent: bool = False
    #: What the driver carries: SMS (``to`` a phone) or email (``to`` an address, ``mime``
    #: the message). A resource's senders must be on gateways of its channel.
    channel: Literal["sms", "email"] = "sms"


class Listener(Protocol):
    """Where a driver that holds a session with its gateway (SMPP) hands what arrives on
    it: delivery receipts and inbound messages. The engine gives every driver it makes
    one, as ``driver.listener``, before the first ``send_batch``; drivers whose gateway
    calls back over HTTP (``POST /api/v1/dlr/{gateway}``) never use it.

    Each method returns once what it was given is stored (so a driver acknowledges it to
    the gateway only then), and raises if it could not be: the driver then leaves it
    unacknowledged, for the gateway to deliver again.
    """

    async def receipts(self, receipts: Sequence[Receipt]) -> None:
        """Apply ``receipts`` to their recipients (kept for later when not recorded yet)."""
        ...

    async def inbound(self, messages: Sequence[Inbound]) -> None:
        """Take recipients' replies (a STOP unsubscribes its sender)."""
        ...


#: Option names (and header names in a table of them) whose values are secrets.
_SECRET_NAME = re.compile(r"(?i)(pass|psw|secret|token|key|authorization|credential)")


class DriverConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every driver's options Struct (the keys of ``[gateways.NAME]`` but ``driver``).

    Its ``repr`` shows ``'***'`` for options whose name says they hold a secret
    (``password``, ``auth_token``, ``api_key``, ``psw``, ...), and for such keys of a table
    (``headers = { Authorization = ... }``), so a config in a log or a traceback gives none
    away.
    """

    def __repr__(self) -> str:
        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if _SECRET_NAME.search(name) and value:
                value = "***"
            elif isinstance(value, dict):
                value = {k: "***" if _SECRET_NAME.search(str(k)) else v
                         for k, v in value.items()}
            shown.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"


class Driver(abc.ABC):
    """Base class of gateway drivers.

    Subclasses set ``name`` (the value of ``driver = "..."`` in config) and ``Config`` (a
    ``DriverConfig`` subclass), and implement ``send_batch``.
    """

    name: ClassVar[str]
    Config: ClassVar[type[DriverConfig]] = DriverConfig
    capabilities: Capabilities = Capabilities()
    #: The gateway posts receipts and inbound messages to one address (SMSC.ru's status
    #: handler): the receipt route hands each callback to ``parse_inbound`` too.
    one_callback: ClassVar[bool] = False

    def __init__(self, config: Any, *, gateway: str = "", base_dir: Path | None = None) -> None:
        #: The driver's own options, an instance of ``Config``.
        self.config = config
        #: The name of the ``[gateways.NAME]`` table this instance serves.
        self.gateway = gateway
        #: The config file's directory: relative paths in options are relative to it.
        self.base_dir = base_dir or Path.cwd()
        #: Where receipts and inbound messages that arrive on a session go (set by the
        #: engine; None for a driver made only to parse callbacks).
        self.listener: Listener | None = None

    @abc.abstractmethod
    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        """Submit ``messages`` (at most ``capabilities.max_batch``); one result per message.

        Raise ``TransientGatewayError`` or ``PermanentGatewayError`` when the whole batch
        failed; report per-message outcomes in the results otherwise.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Release connections and files. Called once when the engine is done."""

    def parse_receipts(self, body: bytes, headers: dict[str, str]) -> list[Receipt]:
        """Parse a delivery-receipt callback of this driver's gateway (sans-I/O).

        Raise ``InputError`` naming the bad field for a malformed body. Drivers that
        declare ``supports_dlr`` implement it.
        """
        raise NotImplementedError(f"the {self.name} driver does not take delivery receipts")

    def parse_bounces(self, body: bytes, headers: dict[str, str]) -> list[Bounce]:
        """Parse what this email gateway posts to its inbound route (sans-I/O): DSNs,
        ARF complaints or the vendor's webhook. Raise ``InputError`` naming the bad field
        for a malformed body. Optional: an email driver overrides it (``takes_bounces``).
        """
        raise NotImplementedError(f"the {self.name} driver does not take bounces")

    def parse_inbound(self, body: bytes, headers: dict[str, str]) -> list[Inbound]:
        """Parse an inbound-message callback of this driver's gateway (sans-I/O): the
        replies recipients sent. Raise ``InputError`` naming the bad field for a malformed
        body. Optional: a driver that takes inbound messages overrides it
        (``takes_inbound``)."""
        raise NotImplementedError(f"the {self.name} driver does not take inbound messages")

    async def listen(self) -> None:  # noqa: B027 - optional, nothing to listen to by default
        """Stay bound to the gateway to take what it sends unasked (receipts, replies) and
        hand it to ``listener``, until cancelled; return at once if there is nothing to
        listen to. Optional: a driver with a session of its own (SMPP) overrides it, and
        ``herald serve`` and ``herald worker`` then keep it listening between runs
        (``engine.listening``). Raise ``GatewayError`` when the session cannot be held:
        the caller tries again later."""

    @classmethod
    def listens(cls) -> bool:
        """Whether the driver has a session to listen on (overrides ``listen``)."""
        return cls.listen is not Driver.listen

    @classmethod
    def takes_bounces(cls) -> bool:
        """Whether the driver parses bounces and complaints (overrides ``parse_bounces``)."""
        return cls.parse_bounces is not Driver.parse_bounces

    @classmethod
    def takes_inbound(cls) -> bool:
        """Whether the driver parses inbound messages (overrides ``parse_inbound``)."""
        return cls.parse_inbound is not Driver.parse_inbound


def check_callback_size(items: Sequence[Any], most: int | None, what: str) -> None:
    """InputError naming ``body`` when a gateway's callback parsed to more than ``most``
    ``what`` (receipts, inbound messages); called in the parsing thread, so what it
    parsed is freed there."""
    if most is not None and len(items) > most:
        raise InputError(f"body: {len(items)} {what} in one callback, at most {most}:"
                         " post them in parts")
