"""A fake of Mailgun's Messages API (MIME sending) and its webhooks, on loopback.

``POST /v3/{domain}/messages.mime``, ``multipart/form-data`` with ``to`` and the
``message`` file (plus ``v:`` user variables and ``o:`` options), HTTP Basic auth
``api:{api_key}``: 200 and ``{"id": "<message-id>", "message": "Queued. Thank you."}``
(the id is the MIME's own ``Message-ID``, as Mailgun keeps it), or Mailgun's error
``{"message": "..."}``: 400 for a missing or bad ``to`` (``to parameter is not a valid
address. please check documentation``), a missing ``message`` or a MIME without ``From``,
404 for another domain, 401 ``Forbidden`` (plain text) for a wrong key
(https://documentation.mailgun.com/docs/mailgun/quickstart-guide/responses). The form's
parts and names are read with the stdlib's MIME parser, not the driver's code; a file's
bytes are taken as they came, so a test sees what Mailgun would get. It can be told to throttle
(429, optional ``Retry-After``), fail (500), refuse an address (400 with Mailgun's words),
hang or hang up. ``received`` records every request, ``messages`` what it took;
``webhook`` builds the signed event Mailgun would post
(https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/webhook-payloads).
"""

from __future__ import annotations

import base64
import contextlib
import email
import email.message
import email.policy
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from herald_mailgun import signature
from tests.fakes.http import Answer, Request, VendorFake, gateway_on, json_answer

__all__ = ["API_KEY", "DOMAIN", "SIGNING_KEY", "FakeMailgun", "Sent", "gateway", "serve"]

API_KEY = "fake-mailgun-api-key-0123456789abcdef"
DOMAIN = "mg.example.com"
SIGNING_KEY = "fake-mailgun-webhook-signing-key"
_ADDRESS = re.compile(r"[^@\s<>\",;]+@[^@\s<>\",;]+\.[^@\s<>\",;.]+")


@dataclass
class Sent:
    """One message the fake took."""

    to: str
    mime: bytes
    #: ``v:`` fields without the prefix.
    variables: dict[str, str] = field(default_factory=dict)
    #: ``o:`` fields without the prefix.
    options: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str, retry_after: str | None = None) -> Answer:
    return json_answer(status, {"message": message},
                       [("retry-after", retry_after)] if retry_after else None)


class FakeMailgun(VendorFake):
    """Mailgun's ``messages.mime`` for one domain (see the module docstring)."""

    def __init__(self, domain: str = DOMAIN, api_key: str = API_KEY,
                 signing_key: str = SIGNING_KEY, port: int = 0) -> None:
        super().__init__(port)
        self.domain = domain
        self.api_key = api_key
        self.signing_key = signing_key
        #: message id (no angle brackets) -> what was sent.
        self.messages: dict[str, Sent] = {}
        #: Answer the next so many requests 429, with ``retry_after`` if set.
        self.throttle = 0
        self.retry_after: str | None = None
        #: Answer the next so many requests 500.
        self.fail = 0
        #: Address -> the words of the 400 a message to it gets.
        self.reject: dict[str, str] = {}

    @property
    def path(self) -> str:
        return f"/v3/{self.domain}/messages.mime"

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"domain": self.domain, "api_key": self.api_key, "base_url": self.url,
                "webhook_signing_key": self.signing_key, **extra}

    # -- the API -----------------------------------------------------------------------

    async def handle(self, request: Request) -> Answer | None:
        if not request.target.startswith("/v3/"):
            return Answer(404, b"404 page not found", content_type="text/plain")
        if request.target != self.path:
            return _error(404, f"Domain not found: {request.target.split('/')[2]}")
        if request.method != "POST":
            return _error(405, "Method Not Allowed")
        expected = base64.b64encode(f"api:{self.api_key}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return Answer(401, b"Forbidden", content_type="text/plain")
        if await self.withhold():
            return None
        if self.throttle:
            self.throttle -= 1
            return _error(429, "Too many requests", self.retry_after)
        if self.fail:
            self.fail -= 1
            return _error(500, "Internal Server Error")
        form = _form(request)
        if form is None:
            return _error(400, "Content-Type must be multipart/form-data")
        fields, files = form
        to = fields.get("to", "")
        if not to:
            return _error(400, "to parameter is missing")
        if "message" not in files:
            return _error(400, "Need at least one of 'message' parameter")
        if to in self.reject:
            return _error(400, self.reject[to])
        if not _ADDRESS.fullmatch(to):
            return _error(400, "to parameter is not a valid address. please check"
                               " documentation")
        mime = files["message"]
        parsed = email.message_from_bytes(mime, policy=email.policy.default)
        if parsed.get("From") is None:
            return _error(400, "'from' parameter is missing")
        given = str(parsed.get("Message-ID", "")).strip().strip("<>")
        message_id = given or f"{time.strftime('%Y%m%d%H%M%S')}.{secrets.token_hex(8)}" \
                              f"@{self.domain}"
        self.messages[message_id] = Sent(
            to, mime,
            {k[2:]: v for k, v in fields.items() if k.startswith("v:")},
            {k[2:]: v for k, v in fields.items() if k.startswith("o:")},
        )
        return json_answer(200, {"id": f"<{message_id}>", "message": "Queued. Thank you."})

    # -- webhooks Mailgun would post ------------------------------------------------------

    def webhook(self, event: str, message_id: str, *, severity: str | None = None,
                code: int = 550, text: str = "5.1.1 The email account that you tried to"
                " reach does not exist.", reason: str = "bounce", at: float | None = None,
                signed_at: float | None = None, key: str | None = None,
                recipient: str | None = None) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the ``event`` webhook (``delivered``, ``failed``,
        ``complained``, ``opened``...) of the message Mailgun answered ``message_id`` to,
        signed with ``key`` (the fake's signing key) at ``signed_at`` (``at``, else now)."""
        sent = self.messages.get(message_id)
        at = time.time() if at is None else at
        data: dict[str, Any] = {
            "event": event, "id": secrets.token_urlsafe(16), "timestamp": at,
            "log-level": "error" if event == "failed" else "info",
            "recipient": recipient or (sent.to if sent else "someone@example.com"),
            "recipient-domain": (recipient or (sent.to if sent else "x@example.com"))
            .rpartition("@")[2],
            "envelope": {"sender": f"postmaster@{self.domain}", "transport": "smtp",
                         "targets": sent.to if sent else ""},
            "message": {"headers": {"to": sent.to if sent else "", "message-id": message_id,
                                    "from": f"news@{self.domain}", "subject": "news"},
                        "attachments": [], "size": len(sent.mime) if sent else 0},
            "user-variables": dict(sent.variables) if sent else {},
            "flags": {"is-authenticated": True, "is-test-mode": False},
            "tags": [], "campaigns": [],
        }
        if event == "failed":
            data["severity"] = severity or "permanent"
            data["reason"] = reason
            data["delivery-status"] = {
                "attempt-no": 1, "code": code, "message": text, "description": "",
                "mx-host": "mx.example.net", "session-seconds": 0.5, "tls": True,
            }
        elif event == "delivered":
            data["delivery-status"] = {"attempt-no": 1, "code": 250, "message": "OK",
                                       "description": "", "tls": True}
        token = secrets.token_hex(25)
        stamp = str(int(at if signed_at is None else signed_at))
        body = {"signature": {"timestamp": stamp, "token": token,
                              "signature": signature(key or self.signing_key, stamp, token)},
                "event-data": data}
        return msgspec.json.encode(body), {"content-type": "application/json"}


def _form(request: Request) -> tuple[dict[str, str], dict[str, bytes]] | None:
    """The fields and files of a ``multipart/form-data`` body (None for another body)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return None
    head = f"MIME-Version: 1.0\r\nContent-Type: {content_type}\r\n\r\n".encode()
    parsed = email.message_from_bytes(head + request.body, policy=email.policy.default)
    if not isinstance(parsed, email.message.EmailMessage) or not parsed.is_multipart():
        return None
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in parsed.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            return None
        # a message/rfc822 part is parsed as a message: take its bytes as they came
        content = _raw_content(request.body, part)
        if part.get_param("filename", header="content-disposition") is not None:
            files[name] = content
        else:
            fields[name] = content.decode()
    return fields, files


def _raw_content(body: bytes, part: email.message.Message) -> bytes:
    """The content of ``part`` exactly as in ``body`` (the parser would rewrite a
    ``message/rfc822`` part's line ends and headers)."""
    boundary = body.split(b"\r\n", 1)[0]
    name = part.get_param("name", header="content-disposition")
    for chunk in body.split(boundary)[1:]:
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if sep and f'name="{name}"'.encode() in head:
            return content.removesuffix(b"\r\n")
    return b""


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[FakeMailgun]:
    """A running fake Mailgun."""
    async with FakeMailgun() as fake:
        yield fake


def gateway(tmp_path: Path) -> AbstractAsyncContextManager[dict[str, Any]]:
    """The ``[gateways.NAME]`` options of a ``mailgun`` gateway on a running fake."""
    return gateway_on(FakeMailgun())
