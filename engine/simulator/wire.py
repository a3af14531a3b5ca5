"""The herald-json bodies the simulator reads and writes, with their codecs built once."""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = [
    "InboundBatch",
    "InboundMessage",
    "Receipt",
    "ReceiptBatch",
    "SendRequest",
    "SendResponse",
    "WireMessage",
    "WireResult",
    "decode_inbound",
    "decode_receipts",
    "decode_send",
    "encode",
]


class WireMessage(msgspec.Struct):
    """One message of a send request."""

    id: str
    to: str
    from_: str = msgspec.field(name="from")
    text: str = ""
    segments: int = 1


class SendRequest(msgspec.Struct):
    """The body of ``POST /send``."""

    messages: list[WireMessage]


class WireResult(msgspec.Struct):
    """The gateway's answer for one message, in request order."""

    id: str
    status: Literal["accepted", "rejected", "retry"]
    provider_id: str | None = None
    error: str | None = None


class SendResponse(msgspec.Struct):
    """The body of a ``200`` answer to a send."""

    results: list[WireResult]


class Receipt(msgspec.Struct, frozen=True):
    """One delivery receipt as POSTed to ``receipt_url``."""

    provider_id: str
    id: str
    status: Literal["delivered", "undelivered"]
    error: str | None = None


class ReceiptBatch(msgspec.Struct):
    """The body of one receipt callback: many receipts per request."""

    receipts: list[Receipt]


class InboundMessage(msgspec.Struct, frozen=True, omit_defaults=True):
    """A recipient's reply, as POSTed to ``inbound_url``."""

    from_: str = msgspec.field(name="from")
    text: str = ""
    to: str | None = None
    at: float | None = None


class InboundBatch(msgspec.Struct):
    """The body of one inbound callback (and of the simulator's ``POST /inbound``)."""

    inbound: list[InboundMessage]


encode = msgspec.json.Encoder().encode
decode_send = msgspec.json.Decoder(SendRequest).decode
decode_receipts = msgspec.json.Decoder(ReceiptBatch).decode
decode_inbound = msgspec.json.Decoder(InboundBatch).decode
