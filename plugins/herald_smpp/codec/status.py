"""SMPP 3.4 ``command_status`` values: their names and what a sender should do about each.

A kind says what the driver does with a submit answered with that status:

- ``ok``: accepted;
- ``throttled``: the SMSC wants the whole sender to slow down, as an HTTP 429 does; the
  message is not failed, it is sent again later;
- ``retry``: a transient fault; send the message again (the engine's retry policy bounds it);
- ``permanent``: the SMSC will refuse this message however often it is sent.

======  ========================  ===========  ==================================================
status  name                      kind         why
======  ========================  ===========  ==================================================
0x00    ESME_ROK                  ok
0x01    ESME_RINVMSGLEN           permanent    the message is too long for this SMSC
0x02    ESME_RINVCMDLEN           permanent    our PDU is malformed: sending it again won't help
0x03    ESME_RINVCMDID            permanent    the SMSC does not know the command
0x04    ESME_RINVBNDSTS           retry        the session was not bound for this: rebind, resend
0x05    ESME_RALYBND              retry        bind state confusion; a new session fixes it
0x06    ESME_RINVPRTFLG           permanent    configuration (priority_flag)
0x07    ESME_RINVREGDLVFLG        permanent    configuration (registered_delivery)
0x08    ESME_RSYSERR              retry        the SMSC's own fault, usually passing
0x0A    ESME_RINVSRCADR           permanent    bad sender (address or not allowed)
0x0B    ESME_RINVDSTADR           permanent    bad recipient
0x0C    ESME_RINVMSGID            permanent
0x0D    ESME_RBINDFAIL            permanent    a bind refused: configuration error
0x0E    ESME_RINVPASWD            permanent    a bind refused: configuration error
0x0F    ESME_RINVSYSID            permanent    a bind refused: configuration error
0x11    ESME_RCANCELFAIL          permanent
0x13    ESME_RREPLACEFAIL         permanent
0x14    ESME_RMSGQFUL             throttled    the SMSC's queue is full: slow down
0x15    ESME_RINVSERTYP           permanent    configuration (service_type)
0x33    ESME_RINVNUMDESTS         permanent
0x34    ESME_RINVDLNAME           permanent
0x40    ESME_RINVDESTFLAG         permanent
0x42    ESME_RINVSUBREP           permanent
0x43    ESME_RINVESMCLASS         permanent
0x44    ESME_RCNTSUBDL            permanent
0x45    ESME_RSUBMITFAIL          retry        unspecific; SMSCs use it for passing faults too
0x48    ESME_RINVSRCTON           permanent    configuration (source_ton)
0x49    ESME_RINVSRCNPI           permanent    configuration (source_npi)
0x50    ESME_RINVDSTTON           permanent    configuration (dest_ton)
0x51    ESME_RINVDSTNPI           permanent    configuration (dest_npi)
0x53    ESME_RINVSYSTYP           permanent    configuration (system_type)
0x54    ESME_RINVREPFLAG          permanent
0x55    ESME_RINVNUMMSGS          permanent
0x58    ESME_RTHROTTLED           throttled    over the SMSC's rate: slow down
0x61    ESME_RINVSCHED            permanent
0x62    ESME_RINVEXPIRY           permanent
0x63    ESME_RINVDFTMSGID         permanent
0x64    ESME_RX_T_APPN            retry        the receiving application's temporary error
0x65    ESME_RX_P_APPN            permanent    the receiving application's permanent error
0x66    ESME_RX_R_APPN            permanent    the receiving application rejects the message
0x67    ESME_RQUERYFAIL           retry        a failed query may succeed later
0xC0    ESME_RINVOPTPARSTREAM     permanent    our optional parameters are malformed
0xC1    ESME_ROPTPARNOTALLWD      permanent    e.g. SAR or message_payload not allowed here
0xC2    ESME_RINVPARLEN           permanent
0xC3    ESME_RMISSINGOPTPARAM     permanent
0xC4    ESME_RINVOPTPARAMVAL      permanent
0xFE    ESME_RDELIVERYFAILURE     retry        data_sm delivery failed for now
0xFF    ESME_RUNKNOWNERR          retry        unknown: see below
other   (reserved, 0x400-0x4FF    retry        see below
        vendor-specific)
======  ========================  ===========  ==================================================

Codes the table lacks (reserved values, and the 0x400-0x4FF range SMSC vendors give their own
meanings: no credit, blacklisted, route down, throttled...) are ``retry``. A refused
``submit_sm`` was not accepted, so sending it again can never duplicate an SMS; the engine's
retry limit bounds the cost of a code that is in truth permanent, while calling a passing
fault permanent would lose the message for good. A driver option can name vendor codes
otherwise.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "BIND_CREDENTIAL_ERRORS",
    "ESME_RINVCMDID",
    "ESME_RINVCMDLEN",
    "ESME_RINVOPTPARSTREAM",
    "ESME_RMSGQFUL",
    "ESME_ROK",
    "ESME_RSYSERR",
    "ESME_RTHROTTLED",
    "ESME_RUNKNOWNERR",
    "STATUS",
    "Kind",
    "describe",
    "kind",
]

Kind = Literal["ok", "throttled", "retry", "permanent"]

ESME_ROK: Final = 0x00
ESME_RINVCMDLEN: Final = 0x02
ESME_RINVCMDID: Final = 0x03
ESME_RINVBNDSTS: Final = 0x04
ESME_RSYSERR: Final = 0x08
ESME_RMSGQFUL: Final = 0x14
ESME_RTHROTTLED: Final = 0x58
ESME_RINVOPTPARSTREAM: Final = 0xC0
ESME_RUNKNOWNERR: Final = 0xFF

STATUS: Final[dict[int, tuple[str, Kind]]] = {
    0x00: ("ESME_ROK", "ok"),
    0x01: ("ESME_RINVMSGLEN", "permanent"),
    0x02: ("ESME_RINVCMDLEN", "permanent"),
    0x03: ("ESME_RINVCMDID", "permanent"),
    0x04: ("ESME_RINVBNDSTS", "retry"),
    0x05: ("ESME_RALYBND", "retry"),
    0x06: ("ESME_RINVPRTFLG", "permanent"),
    0x07: ("ESME_RINVREGDLVFLG", "permanent"),
    0x08: ("ESME_RSYSERR", "retry"),
    0x0A: ("ESME_RINVSRCADR", "permanent"),
    0x0B: ("ESME_RINVDSTADR", "permanent"),
    0x0C: ("ESME_RINVMSGID", "permanent"),
    0x0D: ("ESME_RBINDFAIL", "permanent"),
    0x0E: ("ESME_RINVPASWD", "permanent"),
    0x0F: ("ESME_RINVSYSID", "permanent"),
    0x11: ("ESME_RCANCELFAIL", "permanent"),
    0x13: ("ESME_RREPLACEFAIL", "permanent"),
    0x14: ("ESME_RMSGQFUL", "throttled"),
    0x15: ("ESME_RINVSERTYP", "permanent"),
    0x33: ("ESME_RINVNUMDESTS", "permanent"),
    0x34: ("ESME_RINVDLNAME", "permanent"),
    0x40: ("ESME_RINVDESTFLAG", "permanent"),
    0x42: ("ESME_RINVSUBREP", "permanent"),
    0x43: ("ESME_RINVESMCLASS", "permanent"),
    0x44: ("ESME_RCNTSUBDL", "permanent"),
    0x45: ("ESME_RSUBMITFAIL", "retry"),
    0x48: ("ESME_RINVSRCTON", "permanent"),
    0x49: ("ESME_RINVSRCNPI", "permanent"),
    0x50: ("ESME_RINVDSTTON", "permanent"),
    0x51: ("ESME_RINVDSTNPI", "permanent"),
    0x53: ("ESME_RINVSYSTYP", "permanent"),
    0x54: ("ESME_RINVREPFLAG", "permanent"),
    0x55: ("ESME_RINVNUMMSGS", "permanent"),
    0x58: ("ESME_RTHROTTLED", "throttled"),
    0x61: ("ESME_RINVSCHED", "permanent"),
    0x62: ("ESME_RINVEXPIRY", "permanent"),
    0x63: ("ESME_RINVDFTMSGID", "permanent"),
    0x64: ("ESME_RX_T_APPN", "retry"),
    0x65: ("ESME_RX_P_APPN", "permanent"),
    0x66: ("ESME_RX_R_APPN", "permanent"),
    0x67: ("ESME_RQUERYFAIL", "retry"),
    0xC0: ("ESME_RINVOPTPARSTREAM", "permanent"),
    0xC1: ("ESME_ROPTPARNOTALLWD", "permanent"),
    0xC2: ("ESME_RINVPARLEN", "permanent"),
    0xC3: ("ESME_RMISSINGOPTPARAM", "permanent"),
    0xC4: ("ESME_RINVOPTPARAMVAL", "permanent"),
    0xFE: ("ESME_RDELIVERYFAILURE", "retry"),
    0xFF: ("ESME_RUNKNOWNERR", "retry"),
}
"""command_status -> (spec name, kind); the module docstring's table."""

BIND_CREDENTIAL_ERRORS: Final = frozenset({0x0D, 0x0E, 0x0F})
"""A bind refused with one of these is a configuration error, not something to retry."""


def _name(status: int) -> str:
    entry = STATUS.get(status)
    if entry is not None:
        return entry[0]
    if 0x400 <= status <= 0x4FF:
        return "vendor-specific error"
    return "reserved error"


def describe(status: int) -> str:
    """``"ESME_RTHROTTLED (0x00000058)"``: the name and the code, for messages and logs."""
    return f"{_name(status)} (0x{status:08X})"


def kind(status: int) -> Kind:
    """What a sender should do about ``status`` (codes the table lacks are ``retry``)."""
    entry = STATUS.get(status)
    return "retry" if entry is None else entry[1]
