"""What the broker transports (``rabbitmq``, ``nats``) share: reading a message's
``event_type`` and ``event_id`` back from its bytes, the ``{event_type}`` placeholder, and
the URL's secrets to keep out of error messages."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import msgspec

from engine.errors import redact

__all__ = ["EVENT_TYPE", "describe", "head", "url_secrets"]

#: The placeholder of ``routing_key``, ``exchange`` and ``subject``.
EVENT_TYPE = "{event_type}"


class Head(msgspec.Struct):
    """The two fields of a message a broker transport needs (the rest is skipped)."""

    event_type: str = ""
    event_id: str | int | None = None


_decode_head = msgspec.json.Decoder(Head).decode


def head(message: bytes) -> Head:
    """``event_type`` and ``event_id`` of an encoded message (cheap: the decoder skips the
    other fields without building them)."""
    return _decode_head(message)


def url_secrets(url: str, *, token_user: bool = False) -> list[str]:
    """The password of ``url`` as written and percent-decoded; with ``token_user``, the
    user part of a URL without a password too (NATS's ``nats://TOKEN@host``)."""
    try:
        parts = urlsplit(url)
        found = [parts.password or (parts.username if token_user else None)]
    except ValueError:
        return []
    return [s for raw in found if raw for s in {raw, unquote(raw)}]


def describe(err: BaseException, secrets: list[str]) -> str:
    """A vendor exception as one line without secrets: its class and text."""
    text = str(err).strip() or repr(err)
    return redact(f"{type(err).__name__}: {text}", secrets)
