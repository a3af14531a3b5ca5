"""What the simulated SMSC does (``SmppOptions``), what it saw (``Received``, ``Message``)
and what it has done (``SmppStats``)."""

from __future__ import annotations

import math
from typing import Literal

import msgspec

__all__ = ["Message", "Received", "SessionInfo", "SmppOptions", "SmppStats"]

IdFormat = Literal["hex", "decimal"]


class SmppOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the simulated SMSC behaves. Rates are probabilities in [0, 1]; times seconds.

    Binds must give ``system_id`` and ``password`` (ESME_RINVSYSID 0x0F, ESME_RINVPASWD 0x0E
    otherwise). Each submit_sm, in this order: over ``throttle_rate`` submits per second
    (0 = unlimited; ``throttle_burst`` at once, 0 = a tenth of a second's worth) it is
    answered ESME_RTHROTTLED 0x58; ``no_answer_rate`` never answers it (it is recorded, as
    an SMSC that took it and lost the answer would); ``error_rate`` answers ``error_status``
    (permanent, ESME_RINVDSTADR 0x0B by default); ``retry_error_rate`` answers ESME_RSYSERR
    0x08; the rest are accepted with a message id (``id_format``, zero-padded to
    ``id_width`` digits). Answers wait ``latency`` seconds. After ``unbind_after`` accepted
    submits (0 = never) the SMSC sends an unbind on that session, once; after
    ``drop_after`` submits it closes that socket without answering the last, once.

    Receipts (deliver_sm, esm_class 0x04), when the submit asked (``registered_delivery``),
    go ``receipt_delay`` seconds after acceptance to a transceiver or receiver session of
    the same system_id (before the submit_sm_resp with ``receipt_before_resp``), in
    ``receipt_form`` (TLVs, the text body, or both) with the id in ``receipt_id_format``
    (default: ``id_format``); ``undelivered_rate`` of them say UNDELIV with
    ``undelivered_err``. A deliver_sm answered with an error, or not answered within
    ``redeliver_after``, is sent again. ``enquire_link_answer=False`` stops answering
    enquire_link.
    """

    system_id: str = "herald"
    password: str = "secret"
    latency: float = 0.0
    throttle_rate: float = 0.0
    throttle_burst: int = 0
    no_answer_rate: float = 0.0
    error_rate: float = 0.0
    error_status: int = 0x0B
    retry_error_rate: float = 0.0
    id_format: IdFormat = "hex"
    id_width: int = 0
    unbind_after: int = 0
    drop_after: int = 0
    receipt_delay: float = 0.0
    receipt_form: Literal["tlv", "text", "both"] = "both"
    receipt_id_format: IdFormat | None = None
    undelivered_rate: float = 0.0
    undelivered_err: int = 1
    receipt_before_resp: bool = False
    redeliver_after: float = 5.0
    enquire_link_answer: bool = True
    #: Keep a ``Received`` per submit and reassemble messages (off for long benchmarks).
    record: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("no_answer_rate", "error_rate", "retry_error_rate", "undelivered_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.no_answer_rate + self.error_rate + self.retry_error_rate > 1.0:
            raise ValueError("no_answer_rate + error_rate + retry_error_rate must not exceed 1")
        for name in ("latency", "throttle_rate", "receipt_delay", "redeliver_after"):
            if not 0.0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name} must be a finite number >= 0")
        for name in ("throttle_burst", "id_width", "unbind_after", "drop_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if not 0 <= self.error_status <= 0xFFFFFFFF:
            raise ValueError("error_status must be a 32-bit command status")


class Received(msgspec.Struct, frozen=True, kw_only=True):
    """One submit_sm as the SMSC received it.

    ``status`` is the command status it answered (None: never answered), ``message_id``
    the id it gave (accepted only). ``udh`` and ``sar`` are (ref, total, seq) of a part of
    a concatenated message. ``text`` is this part's decoded text (of ``message_payload``
    when the message came that way). ``septets`` counts a GSM-7 part's septets;
    ``split_escape``/``split_surrogate`` say the part ends halfway through an escape pair
    or a surrogate pair (a segmentation bug). ``receipt`` is the receipt's stat it will get.
    """

    session: int
    sequence: int
    source: str
    destination: str
    source_ton: int
    source_npi: int
    dest_ton: int
    dest_npi: int
    esm_class: int
    data_coding: int
    registered_delivery: int
    udh: tuple[int, int, int] | None
    sar: tuple[int, int, int] | None
    payload: bytes | None
    body: bytes
    text: str
    septets: int | None
    split_escape: bool
    split_surrogate: bool
    status: int | None
    message_id: str | None
    receipt: str | None


class Message(msgspec.Struct, kw_only=True):
    """A whole message: one accepted submit, or every accepted part of a concatenated one.

    ``outcome`` is what its receipts say, "delivered" when every part's receipt does,
    "undelivered" when one does not (None: no receipts asked for).
    """

    source: str
    destination: str
    text: str
    parts: int
    data_coding: int
    #: "single", "udh", "sar" or "payload".
    via: str
    message_ids: list[str]
    outcome: str | None


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One bound session, as the SMSC saw it."""

    session: int
    system_id: str
    bind: Literal["transmitter", "receiver", "transceiver"]
    submits: int
    #: The most submits it had received and not answered yet, at once.
    max_in_flight: int
    open: bool


class SmppStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counters of the simulated SMSC.

    ``doubled``: whole messages (destination and text) received more than once, the number
    a "nothing sent twice" test wants at 0; ``duplicate_parts``: a part of a concatenated
    message received again; ``oversized_parts``: parts longer than GSM-7 (153/160 septets)
    or UCS-2 (134/140 octets) allow; ``split_pairs``: parts that split an escape or
    surrogate pair. ``max_in_flight`` is over every session.
    """

    connections: int
    binds: int
    binds_refused: int
    sessions_open: int
    submits: int
    accepted: int
    throttled: int
    errors: int
    retry_errors: int
    unanswered: int
    unbinds_sent: int
    drops: int
    enquire_links: int
    generic_nacks: int
    max_in_flight: int
    messages: int
    doubled: int
    duplicate_parts: int
    oversized_parts: int
    split_pairs: int
    receipts_sent: int
    receipts_acked: int
    redeliveries: int
    inbound_sent: int
    inbound_acked: int
