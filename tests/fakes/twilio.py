"""A fake of Twilio's Messages API, from its documented wire format, on loopback.

``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded ``To``, ``From`` or
``MessagingServiceSid``, ``Body``, ``StatusCallback``, with HTTP Basic auth (account SID,
auth token): 201 and a Message resource (``sid`` ``SM...``, ``status`` ``queued``), or
Twilio's error object ``{"code", "message", "more_info", "status"}``
(https://www.twilio.com/docs/usage/twilios-response). It can be told to throttle (429,
code 20429, optional ``Retry-After``), fail (500, 20500), reject a number with a code
(21211...), hang without answering, or hang up. ``received`` records every request;
``status_callback`` and ``incoming`` build the webhooks Twilio would post, signed.
"""

from __future__ import annotations

import base64
import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from herald_twilio import signature
from tests.fakes.http import Answer, Request, VendorFake, gateway_on, json_answer

__all__ = [
    "ACCOUNT_SID", "AUTH_TOKEN", "STATUS_CALLBACK", "FakeTwilio", "Request", "gateway", "serve",
]

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-twilio-auth-token"
STATUS_CALLBACK = "https://herald.example.com/api/v1/dlr/twilio?secret=s3cret-s3cret-s3cret"
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


def _error(status: int, code: int, message: str, retry_after: str | None = None) -> Answer:
    body = {"code": code, "message": message, "status": status,
            "more_info": f"https://www.twilio.com/docs/errors/{code}"}
    return json_answer(status, body, [("retry-after", retry_after)] if retry_after else None)


class FakeTwilio(VendorFake):
    """Twilio's Messages API for one account (see the module docstring)."""

    def __init__(self, account_sid: str = ACCOUNT_SID, auth_token: str = AUTH_TOKEN,
                 port: int = 0) -> None:
        super().__init__(port)
        self.account_sid = account_sid
        self.auth_token = auth_token
        #: sid -> the form of each message taken.
        self.messages: dict[str, dict[str, str]] = {}
        #: Answer the next so many requests 429 (code 20429), with ``retry_after`` if set.
        self.throttle = 0
        self.retry_after: str | None = None
        #: Answer the next so many requests 500 (code 20500).
        self.fail = 0
        #: ``To`` number -> the Twilio error code a request to it gets (HTTP 400).
        self.reject: dict[str, int] = {}

    @property
    def path(self) -> str:
        return f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"account_sid": self.account_sid, "auth_token": self.auth_token,
                "base_url": self.url, "status_callback": STATUS_CALLBACK, **extra}

    # -- the API -----------------------------------------------------------------------

    async def handle(self, request: Request) -> Answer | None:
        if request.target != self.path:
            return _error(404, 20404, "The requested resource was not found")
        if request.method != "POST":
            return _error(405, 20004, "Method not allowed")
        expected = base64.b64encode(f"{self.account_sid}:{self.auth_token}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return _error(401, 20003, "Authenticate")
        if await self.withhold():
            return None
        if self.throttle:
            self.throttle -= 1
            return _error(429, 20429, "Too Many Requests", self.retry_after)
        if self.fail:
            self.fail -= 1
            return _error(500, 20500, "Internal Server Error")
        if not request.headers.get("content-type", "").startswith(
                "application/x-www-form-urlencoded"):
            return _error(400, 21601, "Content-Type must be application/x-www-form-urlencoded")
        form = request.form
        to = form.get("To", "")
        if not to:
            return _error(400, 21604, "A 'To' phone number is required.")
        if not form.get("Body"):
            return _error(400, 21602, "Message body is required.")
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _error(400, 21603, "A 'From' phone number is required.")
        if to in self.reject:
            return _error(400, self.reject[to], f"The 'To' number {to} was refused.")
        if not _E164.fullmatch(to):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        sid = "SM" + secrets.token_hex(16)
        self.messages[sid] = form
        resource = {
            "sid": sid, "account_sid": self.account_sid, "to": to,
            "from": form.get("From"), "messaging_service_sid": form.get("MessagingServiceSid"),
            "body": form["Body"], "status": "queued", "num_segments": "1",
            "direction": "outbound-api", "api_version": "2010-04-01",
            "error_code": None, "error_message": None,
            "uri": f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        return json_answer(201, resource)

    # -- webhooks Twilio would post -----------------------------------------------------

    def status_callback(
        self, sid: str, status: str, error_code: str | None = None,
        url: str = STATUS_CALLBACK,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the status callback of message ``sid``."""
        form = self.messages.get(sid, {})
        params = {
            "AccountSid": self.account_sid, "ApiVersion": "2010-04-01",
            "From": form.get("From", "+15017122661"), "MessageSid": sid,
            "MessageStatus": status, "SmsSid": sid, "SmsStatus": status,
            "To": form.get("To", "+15558675310"),
        }
        if error_code is not None:
            params["ErrorCode"] = error_code
        return self.signed(url, params)

    def incoming(self, sender: str, text: str, to: str, url: str) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the webhook of a message ``sender`` sent to ``to``."""
        params = {
            "AccountSid": self.account_sid, "ApiVersion": "2010-04-01", "Body": text,
            "From": sender, "MessageSid": "SM" + secrets.token_hex(16), "NumMedia": "0",
            "NumSegments": "1", "SmsStatus": "received", "To": to,
        }
        return self.signed(url, params)

    def signed(self, url: str, params: dict[str, str]) -> tuple[bytes, dict[str, str]]:
        """``params`` form-encoded, with Twilio's headers (lower-cased, as Herald's API
        hands them to drivers) and the signature of a POST to ``url``."""
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": signature(self.auth_token, url, list(params.items())),
        }
        return urlencode(params).encode(), headers


@contextlib.asynccontextmanager
async def serve() -> AsyncIterator[FakeTwilio]:
    """A running fake Twilio."""
    async with FakeTwilio() as fake:
        yield fake


def gateway(tmp_path: Path) -> AbstractAsyncContextManager[dict[str, Any]]:
    """The ``[gateways.NAME]`` options of a ``twilio`` gateway on a running fake."""
    return gateway_on(FakeTwilio())
