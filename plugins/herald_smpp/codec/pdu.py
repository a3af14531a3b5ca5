"""SMPP 3.4 PDUs, sans-I/O: ``encode`` one to bytes, ``Decoder.feed`` bytes to PDUs.

Every PDU is a 16-octet header (``command_length``, ``command_id``, ``command_status``,
``sequence_number``, big-endian) and a body of mandatory fields, then optional TLVs. The PDU
classes (:mod:`.commands`; import them from the package) carry the header as
``sequence`` and ``status`` and the body under the spec's field names; ``command_id`` is a
class attribute (for ``Bind`` and ``BindResp`` a property of their ``kind``).

Decoding is lenient where SMSCs are known to be sloppy and strict where a mistake would
corrupt the stream:

- C-octet strings are read up to their NUL whatever their length (a long ``message_id`` is
  not refused); a response with an empty body (SMPP 3.4 sends none with an error status)
  takes the default values; the last string of a response may lack its NUL; octets after
  the mandatory fields of a PDU without TLVs are ignored. Strings are Latin-1, so any octet
  decodes.
- A ``command_length`` under 16 or over ``max_length`` is **fatal**: the stream cannot be
  resynchronised, the session must be closed (after a ``generic_nack``).
- A body that does not parse inside a well-framed PDU (a string or ``short_message`` running
  past the end, a broken TLV) raises a non-fatal ``CodecError``; the decoder skips that PDU
  and goes on with the next.
- An unknown ``command_id`` is not an error here: it decodes as ``UnknownPdu``, which the
  session answers with ``generic_nack`` and ``ESME_RINVCMDID``.

Encoding is strict: a string longer than its field (``ValueError`` naming the field), an
integer out of range, a ``short_message`` over 254 octets.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgspec

from .commands import (
    _BIND_IDS,
    HEADER_LENGTH,
    SHORT_MESSAGE_MAX,
    Bind,
    BindResp,
    CodecError,
    CommandId,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Outbind,
    Pdu,
    QuerySm,
    QuerySmResp,
    SubmitSm,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    UnknownPdu,
)
from .status import ESME_RINVCMDLEN, ESME_RINVOPTPARSTREAM

__all__ = ["Decoder", "encode"]

# -- Layouts ----------------------------------------------------------------------------------
# A body is a sequence of fields (name, kind, size): a C-octet string of at most ``size``
# octets with its NUL, one integer octet, or sm_length + short_message. Then TLVs, if any.

_CSTR, _U8, _SM = 0, 1, 2
_Layout = tuple[tuple[str, int, int], ...]


def _c(name: str, size: int) -> tuple[str, int, int]:
    return (name, _CSTR, size)


def _b(name: str) -> tuple[str, int, int]:
    return (name, _U8, 1)


_SHORT_MESSAGE: Final[_Layout] = (
    _c("service_type", 6),
    _b("source_addr_ton"),
    _b("source_addr_npi"),
    _c("source_addr", 21),
    _b("dest_addr_ton"),
    _b("dest_addr_npi"),
    _c("destination_addr", 21),
    _b("esm_class"),
    _b("protocol_id"),
    _b("priority_flag"),
    _c("schedule_delivery_time", 17),
    _c("validity_period", 17),
    _b("registered_delivery"),
    _b("replace_if_present_flag"),
    _b("data_coding"),
    _b("sm_default_msg_id"),
    ("short_message", _SM, SHORT_MESSAGE_MAX),
)
_BIND: Final[_Layout] = (
    _c("system_id", 16),
    _c("password", 9),
    _c("system_type", 13),
    _b("interface_version"),
    _b("addr_ton"),
    _b("addr_npi"),
    _c("address_range", 41),
)
_DATA_SM: Final[_Layout] = (
    _c("service_type", 6),
    _b("source_addr_ton"),
    _b("source_addr_npi"),
    _c("source_addr", 65),
    _b("dest_addr_ton"),
    _b("dest_addr_npi"),
    _c("destination_addr", 65),
    _b("esm_class"),
    _b("registered_delivery"),
    _b("data_coding"),
)
_MESSAGE_ID: Final[_Layout] = (_c("message_id", 65),)


class _Kind(msgspec.Struct, frozen=True):
    cls: type[Any]
    layout: _Layout
    tlvs: bool
    extra: dict[str, str]


_KINDS: Final[dict[int, _Kind]] = {}


def _register(cid: int, cls: type[Any], layout: _Layout, tlvs: bool = False, **extra: str) -> None:
    _KINDS[cid] = _Kind(cls, layout, tlvs, extra)


for _kind, _cid in _BIND_IDS.items():
    _register(_cid, Bind, _BIND, kind=_kind)
    _register(_cid | 0x80000000, BindResp, (_c("system_id", 16),), True, kind=_kind)
_register(CommandId.OUTBIND, Outbind, (_c("system_id", 16), _c("password", 9)))
_register(CommandId.SUBMIT_SM, SubmitSm, _SHORT_MESSAGE, True)
_register(CommandId.SUBMIT_SM_RESP, SubmitSmResp, _MESSAGE_ID)
_register(CommandId.DELIVER_SM, DeliverSm, _SHORT_MESSAGE, True)
_register(CommandId.DELIVER_SM_RESP, DeliverSmResp, _MESSAGE_ID)
_register(CommandId.DATA_SM, DataSm, _DATA_SM, True)
_register(CommandId.DATA_SM_RESP, DataSmResp, _MESSAGE_ID, True)
_register(
    CommandId.QUERY_SM,
    QuerySm,
    (_c("message_id", 65), _b("source_addr_ton"), _b("source_addr_npi"), _c("source_addr", 21)),
)
_register(
    CommandId.QUERY_SM_RESP,
    QuerySmResp,
    (_c("message_id", 65), _c("final_date", 17), _b("message_state"), _b("error_code")),
)
for _cls in (EnquireLink, EnquireLinkResp, Unbind, UnbindResp, GenericNack):
    _register(_cls.command_id, _cls, ())

_LAYOUTS: Final[dict[type[Any], tuple[_Layout, bool]]] = {
    kind.cls: (kind.layout, kind.tlvs) for kind in _KINDS.values()
}

# -- Encoding ---------------------------------------------------------------------------------

_HEADER: Final = struct.Struct(">IIII")
_TLV_HEADER: Final = struct.Struct(">HH")


def encode(pdu: Pdu) -> bytes:
    """The whole PDU, header included (``ValueError`` naming the field that does not fit)."""
    if isinstance(pdu, UnknownPdu):
        body = pdu.body
    else:
        layout, has_tlvs = _LAYOUTS[type(pdu)]
        out: list[bytes] = []
        append = out.append
        for name, kind, size in layout:
            value = getattr(pdu, name)
            if kind == _CSTR:
                try:
                    raw = value.encode("latin-1")
                except UnicodeEncodeError:
                    raise ValueError(f"{name} must be Latin-1 text: {value!r}") from None
                if len(raw) >= size or b"\0" in raw:
                    if b"\0" in raw:
                        raise ValueError(f"{name} must not hold a NUL: {value!r}")
                    raise ValueError(
                        f"{name} is {len(raw)} octets long, at most {size - 1} allowed: {value!r}"
                    )
                append(raw)
                append(b"\0")
            elif kind == _U8:
                if not 0 <= value <= 0xFF:
                    raise ValueError(f"{name} must be 0-255, not {value}")
                append(_OCTETS[value])
            else:
                if len(value) > size:
                    raise ValueError(
                        f"{name} is {len(value)} octets long, at most {size} allowed "
                        "(send longer text in parts or in message_payload)"
                    )
                append(_OCTETS[len(value)])
                append(value)
        if has_tlvs:
            for tag, value in pdu.tlvs.items():  # type: ignore[union-attr]
                if not 0 <= tag <= 0xFFFF or len(value) > 0xFFFF:
                    raise ValueError(f"TLV 0x{tag:04X} of {len(value)} octets does not fit")
                append(_TLV_HEADER.pack(tag, len(value)))
                append(value)
        body = b"".join(out)
    try:
        header = _HEADER.pack(HEADER_LENGTH + len(body), pdu.command_id, pdu.status, pdu.sequence)
    except struct.error:
        raise ValueError(
            f"command_id, status and sequence must be 32-bit unsigned: "
            f"{pdu.command_id}, {pdu.status}, {pdu.sequence}"
        ) from None
    return header + body


_OCTETS: Final = tuple(bytes((i,)) for i in range(256))

# -- Decoding ---------------------------------------------------------------------------------


def _decode_tlvs(data: bytes, pos: int, end: int) -> dict[int, bytes]:
    tlvs: dict[int, bytes] = {}
    while pos < end:
        if end - pos < 4:
            raise _BodyError("a TLV header runs past the end of the PDU", ESME_RINVOPTPARSTREAM)
        tag, length = _TLV_HEADER.unpack_from(data, pos)
        pos += 4
        if pos + length > end:
            raise _BodyError(f"TLV 0x{tag:04X} runs past the end of the PDU", ESME_RINVOPTPARSTREAM)
        tlvs[tag] = data[pos : pos + length]
        pos += length
    return tlvs


class _BodyError(Exception):
    def __init__(self, message: str, status: int = ESME_RINVCMDLEN) -> None:
        super().__init__(message)
        self.status = status


def _decode_body(cid: int, status: int, sequence: int, data: bytes, pos: int, end: int) -> Pdu:
    spec = _KINDS.get(cid)
    if spec is None:
        return UnknownPdu(command_id=cid, status=status, sequence=sequence, body=data[pos:end])
    values: dict[str, Any] = dict(spec.extra)
    response = bool(cid & 0x80000000)
    if not (response and pos == end):  # an empty response body: all defaults
        layout = spec.layout
        last = len(layout) - 1
        for index, (name, kind, _size) in enumerate(layout):
            if kind == _CSTR:
                nul = data.find(0, pos, end)
                if nul < 0:
                    if response and index == last:  # a sloppy SMSC's final string
                        nul = end
                    else:
                        raise _BodyError(f"{name} has no NUL before the end of the PDU")
                values[name] = data[pos:nul].decode("latin-1")
                pos = nul + 1
            elif pos >= end:
                raise _BodyError(f"the PDU ends before {name}")
            elif kind == _U8:
                values[name] = data[pos]
                pos += 1
            else:
                length = data[pos]
                pos += 1
                if pos + length > end:
                    raise _BodyError(f"sm_length {length} runs past the end of the PDU")
                values[name] = data[pos : pos + length]
                pos += length
        if spec.tlvs and pos < end:
            values["tlvs"] = _decode_tlvs(data, pos, end)
    pdu: Pdu = spec.cls(sequence=sequence, status=status, **values)
    return pdu


class Decoder:
    """Bytes from the socket in, complete PDUs out; partial input is kept for the next call.

    ``feed`` raises ``CodecError`` for a malformed PDU.

    - ``err.fatal`` (a ``command_length`` under 16 or over ``max_length``): the stream is
      lost; answer ``generic_nack`` with ``err.status`` and close the session. PDUs that came
      before the bad header are returned first, and the next ``feed`` raises; so does every
      later one.
    - Otherwise only that PDU is skipped: answer it (``err.command_id``, ``err.sequence``,
      ``err.status``), then call ``feed(b"")``, which returns the PDUs that came before it in
      the same input (they are kept, not lost) and those that followed it. The error comes
      first so that no PDU waits for more input::

        while True:
            try:
                pdus = decoder.feed(data)
            except CodecError as err:
                if err.fatal: ...nack, close...
                ...answer err...
                data = b""
                continue
            ...handle pdus...
            break

    When ``feed`` returns without raising, every complete PDU received has been returned.
    """

    def __init__(self, max_length: int = 65536) -> None:
        self.max_length = max_length
        self._buffer = bytearray()
        self._need = HEADER_LENGTH
        self._ready: list[Pdu] = []  # decoded before a bad PDU, handed over next call
        self._broken: CodecError | None = None

    @property
    def buffered(self) -> int:
        """Octets received that are not yet returned as PDUs."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Pdu]:
        """Every complete PDU in what was buffered plus ``data``, in order."""
        if self._broken is not None:
            raise self._broken
        pdus, self._ready = self._ready, []
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return pdus
            data = bytes(buffer)
        elif len(data) < HEADER_LENGTH:
            buffer += data
            return pdus
        pos, size = 0, len(data)
        error: CodecError | None = None
        while size - pos >= HEADER_LENGTH:
            length, cid, status, sequence = _HEADER.unpack_from(data, pos)
            if length < HEADER_LENGTH or length > self.max_length:
                self._broken = CodecError(
                    f"command_length {length} is outside 16..{self.max_length} "
                    f"(command_id 0x{cid:08X}, sequence {sequence}): the stream cannot be "
                    "resynchronised",
                    command_id=cid,
                    sequence=sequence,
                    status=ESME_RINVCMDLEN,
                    fatal=True,
                )
                self._buffer = bytearray()
                if pdus:  # hand over what came before; the next call raises
                    return pdus
                raise self._broken
            end = pos + length
            if end > size:
                break
            try:
                pdus.append(_decode_body(cid, status, sequence, data, pos + HEADER_LENGTH, end))
            except _BodyError as exc:
                error = CodecError(
                    f"malformed PDU (command_id 0x{cid:08X}, sequence {sequence}): {exc}",
                    command_id=cid,
                    sequence=sequence,
                    status=exc.status,
                )
                self._ready = pdus
                pos = end
                break
            pos = end
        self._buffer = bytearray(data[pos:])
        self._need = (
            HEADER_LENGTH
            if size - pos < HEADER_LENGTH
            else max(HEADER_LENGTH, int.from_bytes(data[pos : pos + 4], "big"))
        )
        if error is not None:
            raise error
        return pdus
