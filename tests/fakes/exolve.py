"""A fake of MTS Exolve's SMS API (``POST /messaging/v1/SendSMS``) on loopback.

It speaks what ``https://docs.exolve.ru/docs/ru/api-reference/sms-api/sending-sms``
documents: ``Authorization: Bearer <api_key>`` (401 otherwise), ``{"number",
"destination", "text"}`` (``number`` the sender), one message per request, answered
``{"message_id": "..."}``. It rejects the destinations it is told to (``reject``: a 400)
answers what it is told to next (``answer_next``: a 429, a 500...), and hangs or hangs up
on an authorised request (``hang``, ``hang_up``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import msgspec

from tests.fakes.http import Answer, Request, VendorFake, gateway_on, json_answer

API_KEY = "exolve-key-0123456789"


class ExolveFake(VendorFake):
    """Exolve's ``SendSMS`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        #: Messages taken, as posted (dicts), in order.
        self.sent: list[dict[str, Any]] = []
        self.rejected: set[str] = set()
        self._next_id = 412000000000

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"api_key": API_KEY, "base_url": self.url, **extra}

    def reject(self, destination: str) -> None:
        self.rejected.add(destination)

    async def handle(self, request: Request) -> Answer | None:
        if request.method != "POST" or request.target != "/messaging/v1/SendSMS":
            return json_answer(404, {"error": {"code": 404, "message": "not found"}})
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return json_answer(401, {"error": {"code": 401, "message": "unauthorized"}})
        if await self.withhold():
            return None
        try:
            m = msgspec.json.decode(request.body)
            number, destination, text = m["number"], m["destination"], m["text"]
        except (msgspec.DecodeError, KeyError, TypeError):
            return json_answer(400, {"error": {"code": 400, "message": "bad request"}})
        if not number or not destination.isdigit() or not text:
            return json_answer(400, {"error": {"code": 400, "message": "bad parameters"}})
        if destination in self.rejected:
            return json_answer(400, {"error": {"code": 3, "message": "destination refused"}})
        self.sent.append(m)
        self._next_id += 1
        return json_answer(200, {"message_id": str(self._next_id)})


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[ExolveFake]:
    async with ExolveFake() as fake:
        yield fake


def gateway(tmp_path: Path) -> AbstractAsyncContextManager[dict[str, Any]]:
    """The ``[gateways.NAME]`` options of an ``exolve`` gateway on a running fake."""
    return gateway_on(ExolveFake())
