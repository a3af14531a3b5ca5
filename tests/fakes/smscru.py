"""A fake of SMSC.ru's HTTP API (``/sys/send.php``, ``fmt=3`` answers) on loopback.

It speaks what ``https://smsc.ru/api/http/send/sms/sms_answer/`` documents: a form-encoded
POST with ``login``/``psw`` or ``apikey``, ``phones``, ``mes``, ``id``, ``sender``,
``fmt=3``, ``charset``; HTTP 200 with ``{"id", "cnt"}`` or ``{"error", "error_code"}``.
It checks the credentials (error 2), refuses a request identical to one it took (error 9,
as SMSC.ru does within a minute: this fake has no clock, so any repeat), rejects the
numbers it is told to (``reject``), answers what it is told to next (``answer_next``), and
hangs or hangs up on a request with good credentials (``hang``, ``hang_up``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, NamedTuple

from tests.fakes.http import Answer, Request, VendorFake, gateway_on, json_answer

LOGIN = "herald"
PSW = "s3cret-psw-0001"
APIKEY = "apikey-0123456789abcdef"


class SmscMessage(NamedTuple):
    id: int
    phone: str
    text: str
    sender: str | None


class SmscFake(VendorFake):
    """SMSC.ru's ``/sys/send.php`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        #: Messages taken, in order.
        self.sent: list[SmscMessage] = []
        #: Phone (as sent in ``phones``) -> the error code to refuse it with (6, 7, 8).
        self.rejected: dict[str, int] = {}
        self._seen: set[bytes] = set()
        self._next_id = 1000

    def options(self, **extra: Any) -> dict[str, Any]:
        return {"login": LOGIN, "psw": PSW, "base_url": self.url, **extra}

    def reject(self, phone: str, code: int = 7) -> None:
        self.rejected[phone] = code

    @staticmethod
    def error(code: int, words: str = "error", **extra: Any) -> Answer:
        return json_answer(200, {"error": words, "error_code": code, **extra})

    async def handle(self, request: Request) -> Answer | None:
        if request.method != "POST" or request.target != "/sys/send.php":
            return Answer(404, b"not found", content_type="text/plain")
        form = request.form
        if not (form.get("apikey") == APIKEY
                or (form.get("login") == LOGIN and form.get("psw") == PSW)):
            return self.error(2, "authorise error")
        if await self.withhold():
            return None
        if form.get("fmt") != "3" or form.get("charset") != "utf-8":
            return self.error(1, "parameters error")
        phone, text = form.get("phones", ""), form.get("mes", "")
        if not phone or not text:
            return self.error(1, "parameters error")
        if request.body in self._seen:
            return self.error(9, "duplicate request, wait a minute")
        message_id = int(form["id"]) if form.get("id") else self._next_id
        self._next_id += 1
        if phone in self.rejected:
            return self.error(self.rejected[phone], "cannot send", id=message_id)
        self._seen.add(request.body)
        self.sent.append(SmscMessage(message_id, phone, text, form.get("sender")))
        return json_answer(200, {"id": message_id, "cnt": 1})


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[SmscFake]:
    async with SmscFake() as fake:
        yield fake


def gateway(tmp_path: Path) -> AbstractAsyncContextManager[dict[str, Any]]:
    """The ``[gateways.NAME]`` options of an ``smscru`` gateway on a running fake."""
    return gateway_on(SmscFake())
