"""The SMPP 3.4 PDUs as classes: one per command, the header as ``sequence`` and ``status``,
the body under the spec's field names. Their wire form is :mod:`.pdu`'s business.

Every class has ``command_id`` (a class attribute; for ``Bind`` and ``BindResp`` a property
of their ``kind``). Constructors take keywords, every field defaulting to 0, ``""`` or
``b""``. ``tlvs`` holds optional parameters as ``{tag: raw value}``.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Final, Literal

import msgspec

from .status import ESME_RSYSERR

__all__ = [
    "DATA_CODING_DEFAULT",
    "DATA_CODING_UCS2",
    "ESM_INTERMEDIATE",
    "ESM_RECEIPT",
    "ESM_RECEIPT_MASK",
    "ESM_SME_ACK",
    "ESM_UDHI",
    "HEADER_LENGTH",
    "SHORT_MESSAGE_MAX",
    "Bind",
    "BindKind",
    "BindResp",
    "CodecError",
    "CommandId",
    "DataSm",
    "DataSmResp",
    "DeliverSm",
    "DeliverSmResp",
    "EnquireLink",
    "EnquireLinkResp",
    "GenericNack",
    "Outbind",
    "Pdu",
    "QuerySm",
    "QuerySmResp",
    "SubmitSm",
    "SubmitSmResp",
    "Unbind",
    "UnbindResp",
    "UnknownPdu",
    "is_response",
]

HEADER_LENGTH: Final = 16
SHORT_MESSAGE_MAX: Final = 254
"""``sm_length`` is one octet and SMPP 3.4 caps ``short_message`` at 254 octets."""

ESM_UDHI: Final = 0x40
"""esm_class: ``short_message`` starts with a user data header (concatenation)."""
ESM_RECEIPT_MASK: Final = 0x3C
"""esm_class bits 2-5: the message type of a ``deliver_sm``."""
ESM_RECEIPT: Final = 0x04
"""esm_class message type: an SMSC delivery receipt."""
ESM_SME_ACK: Final = 0x08
"""esm_class message type: an SME delivery acknowledgement."""
ESM_INTERMEDIATE: Final = 0x20
"""esm_class message type: an intermediate delivery notification."""

DATA_CODING_DEFAULT: Final = 0x00
"""data_coding: the SMSC default alphabet (GSM 03.38 for Herald)."""
DATA_CODING_UCS2: Final = 0x08
"""data_coding: UCS-2 (UTF-16-BE)."""


class CommandId(enum.IntEnum):
    """SMPP 3.4 ``command_id`` values Herald speaks (a response is its request | 0x80000000)."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


def is_response(command_id: int) -> bool:
    """Whether ``command_id`` is a response (``generic_nack`` included)."""
    return bool(command_id & 0x80000000)


class CodecError(ValueError):
    """Bytes that are not a valid PDU.

    ``status`` is the command_status to answer with (in the PDU's response, or a
    ``generic_nack`` when the header itself is bad); ``command_id`` and ``sequence`` are the
    offending PDU's, when its header could be read. ``fatal`` means the stream cannot be
    resynchronised: the session must be closed.
    """

    def __init__(
        self,
        message: str,
        *,
        command_id: int | None = None,
        sequence: int | None = None,
        status: int = ESME_RSYSERR,
        fatal: bool = False,
    ) -> None:
        super().__init__(message)
        self.command_id = command_id
        self.sequence = sequence
        self.status = status
        self.fatal = fatal


BindKind = Literal["transceiver", "transmitter", "receiver"]

_BIND_IDS: Final[dict[str, CommandId]] = {
    "transceiver": CommandId.BIND_TRANSCEIVER,
    "transmitter": CommandId.BIND_TRANSMITTER,
    "receiver": CommandId.BIND_RECEIVER,
}
_BIND_RESP_IDS: Final[dict[str, CommandId]] = {
    kind: CommandId(cid | 0x80000000) for kind, cid in _BIND_IDS.items()
}


class _Base(msgspec.Struct, kw_only=True):
    sequence: int = 0
    status: int = 0


class Bind(_Base, kw_only=True):
    """``bind_transceiver`` / ``bind_transmitter`` / ``bind_receiver``, by ``kind``."""

    kind: BindKind = "transceiver"
    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""

    @property
    def command_id(self) -> CommandId:
        try:
            return _BIND_IDS[self.kind]
        except KeyError:
            raise ValueError(f"kind must be {' or '.join(_BIND_IDS)}, not {self.kind!r}") from None


class BindResp(_Base, kw_only=True):
    """The answer to a bind; ``tlvs`` may hold ``sc_interface_version``."""

    kind: BindKind = "transceiver"
    system_id: str = ""
    tlvs: dict[int, bytes] = msgspec.field(default_factory=dict)

    @property
    def command_id(self) -> CommandId:
        try:
            return _BIND_RESP_IDS[self.kind]
        except KeyError:
            raise ValueError(f"kind must be {' or '.join(_BIND_IDS)}, not {self.kind!r}") from None


class Outbind(_Base, kw_only=True):
    """The SMSC asks the ESME to bind as a receiver."""

    command_id: ClassVar[CommandId] = CommandId.OUTBIND
    system_id: str = ""
    password: str = ""


class _ShortMessage(_Base, kw_only=True):
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: dict[int, bytes] = msgspec.field(default_factory=dict)


class SubmitSm(_ShortMessage, kw_only=True):
    """A message to send (``submit_sm``)."""

    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM


class DeliverSm(_ShortMessage, kw_only=True):
    """A message from the SMSC: a delivery receipt or an inbound SMS (``deliver_sm``)."""

    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM


class SubmitSmResp(_Base, kw_only=True):
    """The answer to ``submit_sm``: the SMSC's id for the message (empty on error)."""

    command_id: ClassVar[CommandId] = CommandId.SUBMIT_SM_RESP
    message_id: str = ""


class DeliverSmResp(_Base, kw_only=True):
    """The answer to ``deliver_sm`` (``message_id`` unused, empty)."""

    command_id: ClassVar[CommandId] = CommandId.DELIVER_SM_RESP
    message_id: str = ""


class DataSm(_Base, kw_only=True):
    """``data_sm``: a message (or a receipt) with its text in ``message_payload``."""

    command_id: ClassVar[CommandId] = CommandId.DATA_SM
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    tlvs: dict[int, bytes] = msgspec.field(default_factory=dict)


class DataSmResp(_Base, kw_only=True):
    """The answer to ``data_sm``."""

    command_id: ClassVar[CommandId] = CommandId.DATA_SM_RESP
    message_id: str = ""
    tlvs: dict[int, bytes] = msgspec.field(default_factory=dict)


class QuerySm(_Base, kw_only=True):
    """Ask the SMSC for a message's state."""

    command_id: ClassVar[CommandId] = CommandId.QUERY_SM
    message_id: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""


class QuerySmResp(_Base, kw_only=True):
    """A message's state (``message_state`` as in the ``message_state`` TLV)."""

    command_id: ClassVar[CommandId] = CommandId.QUERY_SM_RESP
    message_id: str = ""
    final_date: str = ""
    message_state: int = 0
    error_code: int = 0


class EnquireLink(_Base, kw_only=True):
    """Keep-alive request."""

    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK


class EnquireLinkResp(_Base, kw_only=True):
    """Keep-alive answer."""

    command_id: ClassVar[CommandId] = CommandId.ENQUIRE_LINK_RESP


class Unbind(_Base, kw_only=True):
    """End of session request."""

    command_id: ClassVar[CommandId] = CommandId.UNBIND


class UnbindResp(_Base, kw_only=True):
    """End of session answer."""

    command_id: ClassVar[CommandId] = CommandId.UNBIND_RESP


class GenericNack(_Base, kw_only=True):
    """A PDU the peer could not take (bad length, unknown command); ``status`` says why."""

    command_id: ClassVar[CommandId] = CommandId.GENERIC_NACK


class UnknownPdu(_Base, kw_only=True):
    """A PDU whose ``command_id`` this codec does not know, body kept raw."""

    command_id: int = 0
    body: bytes = b""


Pdu = (
    Bind
    | BindResp
    | Outbind
    | SubmitSm
    | SubmitSmResp
    | DeliverSm
    | DeliverSmResp
    | DataSm
    | DataSmResp
    | QuerySm
    | QuerySmResp
    | EnquireLink
    | EnquireLinkResp
    | Unbind
    | UnbindResp
    | GenericNack
    | UnknownPdu
)
