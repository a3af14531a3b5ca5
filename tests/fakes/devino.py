"""A fake of Devino's SMS API (``POST /sms/messages``) on loopback.

It speaks what ``https://docs.devino.online/en/http/sms/`` documents: ``Authorization: Key
<api_key>`` (401 otherwise), ``{"messages": [{"from", "to", "text", ...}]}``, and one
``result`` per message: ``{"code": "OK", "messageId"}`` or ``{"code": "REJECTED",
"description", "reasons": [{"key", "ref"}]}``. It rejects the numbers it is told to
(``reject``), answers what it is told to next (``answer_next``: a 429, a 500...), and hangs
or hangs up on an authorised request (``hang``, ``hang_up``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import msgspec

from tests.fakes.http import Answer, Request, VendorFake, gateway_on, json_answer

API_KEY = "devino-key-0123456789"


class DevinoFake(VendorFake):
    """Devino's ``/sms/messages`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        #: Messages taken, as posted (dicts), in order.
        self.sent: list[dict[str, Any]] = []
        #: Number (``to``, as posted) -> the reason key to reject it with.
        self.rejected: dict[str, str] = {}
        self._next_id = 3482512350952730368

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"api_key": API_KEY, "base_url": self.url, **extra}

    def reject(self, to: str, key: str = "INVALID_PHONE") -> None:
        self.rejected[to] = key

    async def handle(self, request: Request) -> Answer | None:
        if request.method != "POST" or request.target != "/sms/messages":
            return json_answer(404, {"code": "NOT_FOUND", "description": "no such method"})
        if request.headers.get("authorization") != f"Key {API_KEY}":
            return json_answer(401, {"code": "UNAUTHORIZED", "description": "bad API key"})
        if await self.withhold():
            return None
        if not request.headers.get("content-type", "").startswith("application/json"):
            return json_answer(415, {"code": "UNSUPPORTED_MEDIA_TYPE"})
        try:
            messages = msgspec.json.decode(request.body)["messages"]
        except (msgspec.DecodeError, KeyError, TypeError):
            return json_answer(400, {"code": "BAD_REQUEST", "description": "no messages"})
        results = []
        for m in messages:
            to = m.get("to", "")
            if not m.get("from") or not to.isdigit() or not m.get("text"):
                results.append({"code": "REJECTED", "description": "validation error",
                                "reasons": [{"key": "VALIDATION_ERROR", "ref": "to"}]})
            elif to in self.rejected:
                results.append({"code": "REJECTED", "description": "rejected",
                                "reasons": [{"key": self.rejected[to], "ref": "to"}]})
            else:
                self.sent.append(m)
                results.append({"code": "OK", "messageId": str(self._next_id)})
                self._next_id += 1
        return json_answer(200, {"result": results})


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[DevinoFake]:
    async with DevinoFake() as fake:
        yield fake


def gateway(tmp_path: Path) -> AbstractAsyncContextManager[dict[str, Any]]:
    """The ``[gateways.NAME]`` options of a ``devino`` gateway on a running fake."""
    return gateway_on(DevinoFake())
