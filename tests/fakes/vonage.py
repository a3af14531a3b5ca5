"""A fake of Vonage's SMS API, from its documented wire format, on loopback.

``POST /sms/json``, form-encoded ``api_key``, ``api_secret``, ``from``, ``to``, ``text``,
``type``, ``client-ref``, ``callback``: HTTP 200 and ``{"message-count", "messages": [...]}``
with one entry per part of the text (``message-id``, ``status`` "0"), or an entry with a
non-zero ``status`` and ``error-text``
(https://developer.vonage.com/messaging/sms/guides/troubleshooting-sms). It can be told to
throttle (status 1), fail (status 5, or HTTP 500), refuse a number with a status, refuse a
number's second part only, hang or hang up. ``received`` records every request;
``receipt`` and ``inbound`` build the webhooks Vonage would post (signed when the fake has
a signature secret).
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from engine.core.sms import measure
from herald_vonage import SignatureMethod, signature
from tests.fakes.http import Answer, Request, VendorFake, gateway_on, json_answer

__all__ = ["API_KEY", "API_SECRET", "FakeVonage", "gateway", "serve"]

API_KEY = "abcd1234"
API_SECRET = "fake-vonage-secret"
CALLBACK = "https://herald.example.com/api/v1/dlr/vonage?secret=s3cret-s3cret-s3cret"


def _answer(*parts: dict[str, str]) -> Answer:
    return json_answer(200, {"message-count": str(len(parts)), "messages": list(parts)})


def _error(status: int, text: str) -> Answer:
    return _answer({"status": str(status), "error-text": text})


class FakeVonage(VendorFake):
    """Vonage's SMS API for one account (see the module docstring)."""

    def __init__(self, api_key: str = API_KEY, api_secret: str = API_SECRET, *,
                 signature_secret: str = "", signature_method: SignatureMethod = "md5hash",
                 port: int = 0) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.api_secret = api_secret
        self.signature_secret = signature_secret
        self.signature_method: SignatureMethod = signature_method
        #: message-id -> the form of the message it is a part of.
        self.parts: dict[str, dict[str, str]] = {}
        #: Answer the next so many requests with status 1 / status 5 / HTTP ``http_status``.
        self.throttle = 0
        self.fail = 0
        self.http_fail = 0
        self.http_status = 500
        #: ``to`` -> the status a message to it gets; ``partial``: only its second part.
        self.reject: dict[str, int] = {}
        self.partial: dict[str, int] = {}

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"api_key": self.api_key, "api_secret": self.api_secret, "base_url": self.url,
                "callback": CALLBACK, **extra}

    async def handle(self, request: Request) -> Answer | None:
        if request.target.partition("?")[0] != "/sms/json":
            return json_answer(404, {"error": "not found"})
        if request.method != "POST":
            return json_answer(405, {"error": "method not allowed"})
        if await self.withhold():
            return None
        if self.http_fail:
            self.http_fail -= 1
            return json_answer(self.http_status, {"error": "unavailable"})
        form = request.form
        for name in ("api_key", "api_secret", "from", "to", "text"):
            if not form.get(name):
                return _error(2, f"Missing {name} param")
        if (form["api_key"], form["api_secret"]) != (self.api_key, self.api_secret):
            return _error(4, "Bad Credentials")
        if self.throttle:
            self.throttle -= 1
            return _error(1, "Throughput Rate Exceeded - please wait [ 10 ] and retry")
        if self.fail:
            self.fail -= 1
            return _error(5, "Internal Error")
        to = form["to"]
        if not to.isdigit():
            return _error(3, "Invalid to param")
        if to in self.reject:
            return _error(self.reject[to], "Refused")
        unicode = form.get("type") == "unicode"
        info = measure(form["text"])
        if info.encoding == "ucs2" and not unicode:
            return _error(3, "Text is not GSM: send type=unicode")
        parts: list[dict[str, str]] = []
        for i in range(info.segments):
            if i == 1 and to in self.partial:
                parts.append({"status": str(self.partial[to]), "error-text": "Refused"})
                continue
            message_id = secrets.token_hex(8).upper()
            self.parts[message_id] = form
            part = {"to": to, "message-id": message_id, "status": "0",
                    "remaining-balance": "3.14159265", "message-price": "0.03330000",
                    "network": "23410"}
            if "client-ref" in form:
                part["client-ref"] = form["client-ref"]
            parts.append(part)
        return _answer(*parts)

    # -- webhooks Vonage would post -----------------------------------------------------

    def receipt(self, message_id: str, status: str, err_code: str = "0", *,
                as_json: bool = True) -> bytes:
        """The body of the delivery receipt of part ``message_id``."""
        form = self.parts.get(message_id, {})
        params = {
            "msisdn": form.get("to", "447700900000"), "to": form.get("from", "AcmeInc"),
            "network-code": "23410", "messageId": message_id, "price": "0.03330000",
            "status": status, "scts": "2001011400", "err-code": err_code,
            "api-key": self.api_key, "message-timestamp": "2020-01-01 14:00:00",
        }
        if "client-ref" in form:
            params["client-ref"] = form["client-ref"]
        return self._body(params, as_json)

    def inbound(self, msisdn: str, text: str, to: str, *, as_json: bool = True) -> bytes:
        """The body of the webhook of a message ``msisdn`` sent to ``to``."""
        params = {"msisdn": msisdn, "to": to, "messageId": secrets.token_hex(8).upper(),
                  "text": text, "type": "text", "keyword": text.split(" ")[0].upper(),
                  "api-key": self.api_key, "message-timestamp": "2020-01-01 12:00:00"}
        return self._body(params, as_json)

    def _body(self, params: dict[str, str], as_json: bool) -> bytes:
        if self.signature_secret:
            params["timestamp"] = "1577887200"
            params["nonce"] = secrets.token_hex(8)
            params["sig"] = signature(self.signature_secret, self.signature_method, params)
        return json.dumps(params).encode() if as_json else urlencode(params).encode()


@contextlib.asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[FakeVonage]:
    """A running fake Vonage."""
    async with FakeVonage(**options) as fake:
        yield fake


def gateway(tmp_path: Path) -> AbstractAsyncContextManager[dict[str, Any]]:
    """The ``[gateways.NAME]`` options of a ``vonage`` gateway on a running fake."""
    return gateway_on(FakeVonage())
