"""What the simulated SMSC keeps of each submit_sm: a ``Received`` per submit, and whole
``Message``s once every part of a concatenated one (UDH or SAR) has come."""

from __future__ import annotations

from collections import Counter

from engine.simulator import smpp_wire as w
from engine.simulator.smpp_options import Message, Received

__all__ = ["Recorder"]


class Recorder:
    """Every submit_sm received (``received``), whole messages (``messages``) and how often
    each (destination, text) came (``counts``); problems go to the ``stats`` counter."""

    def __init__(self, stats: Counter[str]) -> None:
        self.received: list[Received] = []
        self.messages: list[Message] = []
        self.counts: Counter[tuple[str, str]] = Counter()
        self._counts = stats
        self._parts: dict[tuple[str, str, str, int, int], dict[int, Received]] = {}

    def record(self, session: int, seq: int, sm: w.Short, status: int | None,
               message_id: str | None, receipt: str | None) -> Received:
        """Keep one submit_sm (``status`` None: never answered); reassemble it with the
        other parts of its message once accepted."""
        content = sm.short_message
        udh_len = 0
        udh: tuple[int, int, int] | None = None
        if sm.esm_class & 0x40 and content:
            udh_len = content[0] + 1
            try:
                found, content = w.split_udh(content)
            except ValueError:
                found = None
            if found is not None:
                udh = (found.ref, found.total, found.seq)
        tlvs = sm.tlvs
        sar = None
        if w.TAG_SAR_MSG_REF_NUM in tlvs:
            sar = (int.from_bytes(tlvs[w.TAG_SAR_MSG_REF_NUM], "big"),
                   int.from_bytes(tlvs.get(w.TAG_SAR_TOTAL_SEGMENTS, b"\1"), "big"),
                   int.from_bytes(tlvs.get(w.TAG_SAR_SEGMENT_SEQNUM, b"\1"), "big"))
        payload = tlvs.get(w.TAG_MESSAGE_PAYLOAD)
        if payload is not None and not sm.short_message:
            content = payload
        coding = sm.data_coding
        gsm = coding in (0, 1)
        septets = len(content) if gsm else None
        trailing = len(content) - len(content.rstrip(b"\x1b")) if gsm else 0
        split_escape = trailing % 2 == 1
        split_surrogate = (coding == 8 and len(content) >= 2
                           and 0xD8 <= content[-2] <= 0xDB)
        if payload is None or sm.short_message:
            room = 140 - udh_len
            too_long = (septets > room * 8 // 7) if septets is not None else len(content) > room
            if too_long:
                self._counts["oversized_parts"] += 1
        if split_escape or split_surrogate:
            self._counts["split_pairs"] += 1
        received = Received(
            session=session, sequence=seq, source=sm.source, destination=sm.destination,
            source_ton=sm.source_ton, source_npi=sm.source_npi, dest_ton=sm.dest_ton,
            dest_npi=sm.dest_npi, esm_class=sm.esm_class, data_coding=coding,
            registered_delivery=sm.registered_delivery, udh=udh, sar=sar, payload=payload,
            body=content, text=w.decode_text(coding, content), septets=septets,
            split_escape=split_escape, split_surrogate=split_surrogate, status=status,
            message_id=message_id, receipt=receipt,
        )
        self.received.append(received)
        if status == 0:
            self._reassemble(received)
        return received

    def _reassemble(self, r: Received) -> None:
        if r.udh is not None or r.sar is not None:
            via = "udh" if r.udh is not None else "sar"
            ref, total, seq = r.udh or r.sar  # type: ignore[misc]
            key = (via, r.source, r.destination, ref, total)
            parts = self._parts.setdefault(key, {})
            if seq in parts:
                self._counts["duplicate_parts"] += 1
                return
            parts[seq] = r
            if len(parts) < total:
                return
            del self._parts[key]
            ordered = [parts[i] for i in sorted(parts)]
        else:
            via = "payload" if r.payload is not None and r.body == r.payload else "single"
            ordered = [r]
        coding = r.data_coding
        text = w.decode_text(coding, b"".join(p.body for p in ordered))
        stats = [p.receipt for p in ordered]
        outcome = None
        if any(stats):
            outcome = "undelivered" if "UNDELIV" in stats else "delivered"
        self.messages.append(Message(
            source=r.source, destination=r.destination, text=text, parts=len(ordered),
            data_coding=coding, via=via, message_ids=[p.message_id or "" for p in ordered],
            outcome=outcome))
        self.counts[(r.destination, text)] += 1
        self._counts["messages"] += 1
