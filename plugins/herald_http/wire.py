"""The herald-json wire format, sans-I/O: request bodies, what an answer means, receipts,
inbound messages.

``docs/wire-format.md`` is the specification; this module is its executable form. Nothing
here does I/O or reads a clock: ``read_answer`` takes the HTTP status, headers and body of
one answer and returns the per-message results or raises the gateway error it amounts to.
"""

from __future__ import annotations

import email.utils
import logging
import math
from collections.abc import Sequence

import msgspec

from engine.drivers import Inbound, OutboundMessage, Receipt, SendResult
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError

__all__ = ["encode_messages", "parse_inbound", "parse_receipts", "read_answer", "retry_after"]

logger = logging.getLogger("herald_http")


class _WireMessage(msgspec.Struct):
    id: str
    to: str
    from_: str = msgspec.field(name="from")
    text: str = ""
    segments: int = 1


class _SendRequest(msgspec.Struct):
    messages: list[_WireMessage]


class _SendResponse(msgspec.Struct):
    # The wire result has SendResult's very fields (retry_after optional), so the decoder
    # builds the engine's objects directly: no second object per message.
    results: list[SendResult]


class _LooseResponse(msgspec.Struct):
    results: list[msgspec.Raw]


class _ErrorBody(msgspec.Struct):
    error: str | None = None
    retry_after: float | None = None


class _ReceiptBatch(msgspec.Struct):
    receipts: list[Receipt]


class _WireInbound(msgspec.Struct):
    from_: str = msgspec.field(name="from")
    text: str = ""
    to: str | None = None
    at: float | None = None


class _InboundBatch(msgspec.Struct):
    inbound: list[_WireInbound]


_encode = msgspec.json.Encoder().encode
_decode_answer = msgspec.json.Decoder(_SendResponse).decode
_decode_loose = msgspec.json.Decoder(_LooseResponse).decode
_decode_result = msgspec.json.Decoder(SendResult).decode
_decode_error = msgspec.json.Decoder(_ErrorBody).decode
_decode_receipts = msgspec.json.Decoder(_ReceiptBatch).decode
_decode_inbound = msgspec.json.Decoder(_InboundBatch).decode

_TRANSIENT_4XX = frozenset({408, 425, 429})


def encode_messages(messages: Sequence[OutboundMessage]) -> bytes:
    """The JSON body of a send request."""
    wire = [_WireMessage(m.id, m.to, m.sender, m.text, m.segments) for m in messages]
    return _encode(_SendRequest(wire))


def read_answer(
    status: int,
    headers: dict[str, str],
    body: bytes,
    messages: Sequence[OutboundMessage],
    *,
    idempotent: bool,
    now: float,
    where: str = "the gateway",
) -> list[SendResult]:
    """What the answer to a send request of ``messages`` means, per message.

    A 2xx answer gives results: one per message the body names (in the request's order;
    ids it does not name are left out, and the engine records them as unknown). Raises
    ``TransientGatewayError`` for 408, 425, 429 and 5xx (with ``retry_after`` from the body
    or the ``Retry-After`` header; ``now`` is the wall-clock time for an HTTP-date there)
    and ``PermanentGatewayError`` for any other status, with the body's ``error`` as code
    or else the status.
    """
    if 200 <= status < 300:
        return _results(body, messages, idempotent=idempotent, where=where)
    error = _error_body(body)
    detail = error.error if error is not None and error.error else _snippet(body)
    message = f"{where} answered HTTP {status}" + (f": {detail}" if detail else "")
    if status in _TRANSIENT_4XX or 500 <= status < 600:
        wait = error.retry_after if error is not None else None
        if wait is None or not 0.0 <= wait < math.inf:
            wait = retry_after(headers.get("retry-after"), now)
        # 429 and 503 say the request was not processed; other 5xx may have been half way
        raise TransientGatewayError(message, retry_after=wait, unsent=status in (429, 503))
    code = error.error if error is not None and error.error else str(status)
    raise PermanentGatewayError(message, code=code)


def _results(
    body: bytes, messages: Sequence[OutboundMessage], *, idempotent: bool, where: str
) -> list[SendResult]:
    try:
        results = _decode_answer(body).results
    except msgspec.DecodeError as err:
        salvaged = _salvage(body)
        if salvaged is None:
            # The gateway said 2xx: it may well have taken the messages. Claiming they
            # were rejected would be wrong, and sending them again may send them twice,
            # unless the gateway dedupes by id.
            if idempotent:
                raise TransientGatewayError(
                    f"{where} answered 2xx with a body that is not herald-json ({err});"
                    " sending again, which is safe as it dedupes by message id"
                ) from None
            logger.warning(
                "%s answered 2xx with a body that is not herald-json (%s): %s; the %d"
                " messages are recorded as unknown", where, err, _snippet(body), len(messages),
            )
            return []
        results = salvaged
    if len(results) == len(messages) and all(
        r.id == m.id for r, m in zip(results, messages, strict=True)
    ):
        return results
    by_id: dict[str, SendResult] = {}
    for r in results:
        by_id.setdefault(r.id, r)
    return [by_id[m.id] for m in messages if m.id in by_id]


def _salvage(body: bytes) -> list[SendResult] | None:
    """The well-formed results of an answer some of whose results are malformed."""
    try:
        raw = _decode_loose(body).results
    except msgspec.DecodeError:
        return None
    results = []
    for item in raw:
        try:
            results.append(_decode_result(item))
        except msgspec.DecodeError:
            continue
    return results


def _error_body(body: bytes) -> _ErrorBody | None:
    try:
        return _decode_error(body)
    except msgspec.DecodeError:
        return None


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text + "..." if len(body) > limit else text


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP-date."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an HTTP-date is always GMT
            return None
        return max(0.0, when.timestamp() - now)
    return seconds if 0.0 <= seconds < math.inf else None


def parse_receipts(body: bytes) -> list[Receipt]:
    """The receipts of a herald-json callback; ``InputError`` names what is wrong and where."""
    if not body.strip():
        raise InputError("delivery receipts: the body is empty")
    try:
        return _decode_receipts(body).receipts
    except msgspec.ValidationError as err:
        raise InputError(f"malformed delivery receipts: {_where(str(err))}") from None
    except msgspec.DecodeError as err:
        raise InputError(f"delivery receipts are not JSON: {err}") from None


def parse_inbound(body: bytes) -> list[Inbound]:
    """The messages of a herald-json inbound callback: what recipients sent back.

    ``{"inbound": [{"from": "+447911000001", "text": "STOP", "to": "ACME", "at":
    1760000000}]}``: ``from`` (the sender, required), ``text`` (default empty), ``to`` (the
    number or caller id replied to) and ``at`` (seconds since the epoch) optional; other
    keys are ignored. ``InputError`` names what is wrong and where, as for receipts.
    """
    if not body.strip():
        raise InputError("inbound messages: the body is empty")
    try:
        wire = _decode_inbound(body).inbound
    except msgspec.ValidationError as err:
        raise InputError(f"malformed inbound messages: {_where(str(err))}") from None
    except msgspec.DecodeError as err:
        raise InputError(f"inbound messages are not JSON: {err}") from None
    return [Inbound(m.from_, m.text, m.to, m.at) for m in wire]


def _where(message: str) -> str:
    """msgspec's "what - at `$.path`" as "$.path: what", a missing field named in the path."""
    what, sep, path = message.rpartition(" - at `")
    if sep:
        path = path.rstrip("`")
    else:
        what, path = message, "$"
    missing = "Object missing required field `"
    if what.startswith(missing):
        return f"{path}.{what[len(missing):].rstrip('`')}: required field missing"
    return f"{path}: {what}"
