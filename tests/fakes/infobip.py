"""A fake of Infobip's SMS API v3, from its documented wire format, on loopback.

``POST /sms/3/messages`` with ``Authorization: App <key>`` and JSON ``{"messages":
[{"sender", "destinations": [{"to", "messageId"}], "content": {"text"}, "webhooks"}]}``:
200 and ``{"bulkId", "messages": [{"messageId", "status", "destination", "details"}]}``,
one entry per destination, status ``PENDING_ACCEPTED`` (group PENDING) or, for a number
it was told to refuse, a REJECTED status; errors as v3's ``{"errorCode", "description",
"action", "violations", "resources"}``. It can be told to throttle (429), fail (500),
hang or hang up, and to drop resent message ids (Infobip's idempotency, when enabled).
``received`` records every request, ``sent`` every message it took (a dropped resend
excluded); ``report`` and ``inbound`` build the webhooks Infobip would post.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from engine.core.sms import measure
from tests.fakes.http import Answer, Request, VendorFake, gateway_on, json_answer

__all__ = ["API_KEY", "NOTIFY_URL", "FakeInfobip", "gateway", "serve"]

API_KEY = "fake-infobip-api-key"
NOTIFY_URL = "https://herald.example.com/api/v1/dlr/infobip?secret=s3cret-s3cret-s3cret"

PENDING = {"groupId": 1, "groupName": "PENDING", "id": 26, "name": "PENDING_ACCEPTED",
           "description": "Message sent to next instance"}
#: Report statuses by group (https://www.infobip.com/docs/essentials/api-essentials/
#: response-status-and-error-codes).
STATUSES = {
    "DELIVERED": {"groupId": 3, "groupName": "DELIVERED", "id": 5,
                  "name": "DELIVERED_TO_HANDSET", "description": "Message delivered to handset"},
    "UNDELIVERABLE": {"groupId": 2, "groupName": "UNDELIVERABLE", "id": 9,
                      "name": "UNDELIVERABLE_NOT_DELIVERED",
                      "description": "Message sent not delivered"},
    "EXPIRED": {"groupId": 4, "groupName": "EXPIRED", "id": 15, "name": "EXPIRED_EXPIRED",
                "description": "Message expired"},
    "REJECTED": {"groupId": 5, "groupName": "REJECTED", "id": 51,
                 "name": "REJECTED_DESTINATION", "description": "Destination rejected"},
    "PENDING": {"groupId": 1, "groupName": "PENDING", "id": 3,
                "name": "PENDING_WAITING_DELIVERY", "description": "Message sent, waiting"},
}
NO_ERROR = {"groupId": 0, "groupName": "OK", "id": 0, "name": "NO_ERROR",
            "description": "No Error", "permanent": False}


def _error(status: int, code: str, description: str, violations: list[dict[str, str]] | None
           = None, retry_after: str | None = None) -> Answer:
    body = {"errorCode": code, "description": description, "action": "Check the request.",
            "violations": violations or [], "resources": []}
    return json_answer(status, body, [("retry-after", retry_after)] if retry_after else None)


class FakeInfobip(VendorFake):
    """Infobip's SMS API v3 for one API key (see the module docstring)."""

    def __init__(self, api_key: str = API_KEY, *, dedupe: bool = False, port: int = 0) -> None:
        super().__init__(port)
        self.api_key = api_key
        self.dedupe = dedupe
        #: Every message taken, as the request gave it (with its ``messageId``).
        self.sent: list[dict[str, Any]] = []
        self.throttle = 0
        self.retry_after: str | None = None
        self.fail = 0
        #: ``to`` -> the REJECTED status name a message to it gets.
        self.reject: dict[str, str] = {}
        self._seen: set[str] = set()

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"api_key": self.api_key, "base_url": self.url, "notify_url": NOTIFY_URL,
                "batch_size": 10, "max_connections": 4, **extra}

    async def handle(self, request: Request) -> Answer | None:
        if request.target != "/sms/3/messages":
            return _error(404, "E404", "Resource not found")
        if request.method != "POST":
            return _error(405, "E405", "Method not allowed")
        if request.headers.get("authorization") != f"App {self.api_key}":
            return _error(401, "E401", "Invalid login details")
        if await self.withhold():
            return None
        if self.throttle:
            self.throttle -= 1
            return _error(429, "E429", "Too many requests", retry_after=self.retry_after)
        if self.fail:
            self.fail -= 1
            return _error(500, "E500", "Something went wrong")
        try:
            body = json.loads(request.body)
            messages = body["messages"]
            assert isinstance(messages, list) and messages
        except (ValueError, KeyError, TypeError, AssertionError):
            return _error(400, "E400", "Request cannot be processed.",
                          [{"property": "messages", "violation": "must not be empty"}])
        violations = []
        for i, m in enumerate(messages):
            if not m.get("sender"):
                violations.append({"property": f"messages[{i}].sender",
                                   "violation": "must not be blank"})
            if not m.get("destinations") or not all(d.get("to") for d in m["destinations"]):
                violations.append({"property": f"messages[{i}].destinations",
                                   "violation": "must not be empty"})
            if not isinstance(m.get("content"), dict) or "text" not in m["content"]:
                violations.append({"property": f"messages[{i}].content.text",
                                   "violation": "must not be null"})
        if violations:
            return _error(400, "E400", "Request cannot be processed.", violations)
        answers = []
        for m in messages:
            for d in m["destinations"]:
                message_id = d.get("messageId") or secrets.token_hex(12)
                status = PENDING
                if d["to"] in self.reject:
                    status = {**STATUSES["REJECTED"], "name": self.reject[d["to"]]}
                elif not (self.dedupe and message_id in self._seen):
                    self._seen.add(message_id)
                    self.sent.append({**m, "destinations": [{**d, "messageId": message_id}]})
                answers.append({"messageId": message_id, "status": status,
                                "destination": d["to"],
                                "details": {"messageCount": measure(m["content"]["text"])
                                            .segments}})
        return json_answer(200, {"bulkId": secrets.token_hex(8), "messages": answers})

    # -- webhooks Infobip would post -----------------------------------------------------

    def report(self, *reports: tuple[str, str]) -> bytes:
        """The body of a delivery-report webhook: (messageId, status group) each."""
        results = []
        for message_id, group in reports:
            status = STATUSES[group]
            error = NO_ERROR if group in ("DELIVERED", "PENDING") else {
                "groupId": 1, "groupName": "HANDSET_ERRORS", "id": 27,
                "name": "EC_ABSENT_SUBSCRIBER", "description": "Absent Subscriber",
                "permanent": False}
            results.append({
                "bulkId": "BULK-ID-123-xyz", "messageId": message_id, "to": "41793026727",
                "sentAt": "2019-11-09T16:00:00.000+0000",
                "doneAt": "2019-11-09T16:00:00.000+0000", "messageCount": 1,
                "price": {"pricePerMessage": 0.01, "currency": "EUR"},
                "status": status, "error": error,
            })
        return json.dumps({"results": results}).encode()

    def inbound(self, sender: str, text: str, to: str) -> bytes:
        """The body of the forwarded-SMS webhook of a message ``sender`` sent to ``to``."""
        result = {"messageId": secrets.token_hex(12), "from": sender, "to": to, "text": text,
                  "cleanText": text, "keyword": text.split(" ")[0].upper(),
                  "receivedAt": "2019-11-09T16:00:00.000+0000", "smsCount": 1,
                  "price": {"pricePerMessage": 0, "currency": "EUR"}, "callbackData": None}
        return json.dumps({"results": [result], "messageCount": 1,
                           "pendingMessageCount": 0}).encode()


@contextlib.asynccontextmanager
async def serve(**options: Any) -> AsyncIterator[FakeInfobip]:
    """A running fake Infobip."""
    async with FakeInfobip(**options) as fake:
        yield fake


def gateway(tmp_path: Path) -> AbstractAsyncContextManager[dict[str, Any]]:
    """The ``[gateways.NAME]`` options of an ``infobip`` gateway on a running fake."""
    return gateway_on(FakeInfobip())
