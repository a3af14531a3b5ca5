"""``Driver.listener``: receipts and inbound messages that arrive on a driver's own session
(SMPP's ``deliver_sm``) are stored as an HTTP callback's are, before the call returns."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import pytest

from engine import listening
from engine.drivers import Capabilities, Driver, Inbound, OutboundMessage, Receipt, SendResult
from engine.errors import TransientGatewayError
from engine.hookspecs import hookimpl
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.service import MailingService
from engine.testing import FakeConfig, write_config
from tests.test_pipeline import add_profiles, phones

pytestmark = pytest.mark.anyio


class SessionDriver(Driver):
    """A gateway that answers on its session: a receipt for every message at once (before
    the engine has recorded it), undelivered for the odd ones, and a STOP from the first
    recipient."""

    name = "session"
    Config = FakeConfig
    capabilities = Capabilities(max_batch=50, supports_dlr=True)
    #: What the listener's calls returned into, in order (a call returns once stored).
    calls: list[str] = []  # noqa: RUF012 - one test at a time reads it

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        assert self.listener is not None, "the engine gives every driver a listener"
        results = [SendResult(m.id, "accepted", provider_id=f"p-{m.id}") for m in messages]
        receipts = [
            Receipt(f"p-{m.id}", "undelivered" if i % 2 else "delivered", error="absent")
            for i, m in enumerate(messages)
        ]
        await self.listener.receipts(receipts)
        self.calls.append(f"receipts {len(receipts)}")
        if messages and not self.calls[:-1]:
            await self.listener.inbound([Inbound(messages[0].to, " stop ")])
            self.calls.append("inbound")
        return results


class Plugin:
    @hookimpl
    def herald_drivers(self) -> list[type[Driver]]:
        return [SessionDriver]


async def test_receipts_and_stops_from_a_session_reach_the_store(tmp_path: Path) -> None:
    SessionDriver.calls = []
    config = write_config(tmp_path, driver="session", chunk_size=10, batch_size=10)
    async with await Herald.open(config, plugins=load_plugins(Plugin())) as herald:
        ids = await add_profiles(herald, phones(20))
        log = await herald.send(resource="news", database="main", template="Hi")
        assert log.sent == 20  # every one taken by the gateway ...
        # ... and settled by receipts that came before their messages were recorded
        assert (log.delivered, log.undelivered) == (10, 10)
        rid = await herald.store.resource_id("news")
        rows: Any = herald.store.conn.execute(  # type: ignore[attr-defined]
            "SELECT profile_id, status FROM subscriptions WHERE resource_id = ?"
            " ORDER BY profile_id", (rid,)).fetchall()
    statuses = dict(rows)
    assert statuses[ids[0]] == "unsubscribed"  # its STOP reply
    assert [s for p, s in statuses.items() if p != ids[0]] == ["subscribed"] * 19
    assert SessionDriver.calls[:2] == ["receipts 10", "inbound"]


class ListeningDriver(Driver):
    """A gateway whose session fails once, then, bound, hands over a STOP reply and a
    receipt for a message nobody has recorded yet, and stays bound."""

    name = "listening"
    Config = FakeConfig
    capabilities = Capabilities(supports_dlr=True)
    sessions = 0
    closed = 0
    bound: anyio.Event

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        return [SendResult(m.id, "accepted", provider_id=m.id) for m in messages]

    async def listen(self) -> None:
        assert self.listener is not None
        type(self).sessions += 1
        if self.sessions == 1:
            raise TransientGatewayError("connection refused", unsent=True)
        await self.listener.inbound([Inbound(PHONE, "STOP")])
        await self.listener.receipts([Receipt("p-early", "delivered")])
        self.bound.set()
        await anyio.sleep_forever()

    async def aclose(self) -> None:
        type(self).closed += 1


PHONE = "+79160000000"


async def test_serve_keeps_a_listening_gateway_bound_between_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listening, "FIRST_PAUSE", 0.01)
    ListeningDriver.sessions = ListeningDriver.closed = 0
    ListeningDriver.bound = anyio.Event()

    class Plugin:
        @hookimpl
        def herald_drivers(self) -> list[type[Driver]]:
            return [ListeningDriver]

    config = write_config(tmp_path, driver="listening")
    async with await Herald.open(config, plugins=load_plugins(Plugin())) as herald:
        assert listening.listening_gateways(herald) == ["gw"]
        ids = await add_profiles(herald, [PHONE])
        async with MailingService.running(herald):
            with anyio.fail_after(10):
                await ListeningDriver.bound.wait()
            rid = await herald.store.resource_id("news")
            row = herald.store.conn.execute(  # type: ignore[attr-defined]
                "SELECT status FROM subscriptions WHERE resource_id = ? AND profile_id = ?",
                (rid, ids[0])).fetchone()
            assert row[0] == "unsubscribed"
            pending = herald.store.conn.execute(  # type: ignore[attr-defined]
                "SELECT provider_id FROM receipts_pending").fetchall()
            assert pending == [("p-early",)]  # kept until its message is recorded
    # the failed session was opened again; both were closed, the last when serve stopped
    assert ListeningDriver.sessions == 2
    assert ListeningDriver.closed == 2


def test_drivers_without_a_session_do_not_listen() -> None:
    drivers = load_plugins().drivers
    assert not drivers["http"].listens() and not drivers["null"].listens()
    assert ListeningDriver.listens()


async def test_a_gateway_posting_replies_to_its_receipt_address_has_its_stops_taken(
    tmp_path: Path,
) -> None:
    """SMSC.ru posts statuses and incoming messages to one handler (``one_callback``): a
    STOP that arrives at the receipt route unsubscribes its sender, and a status there is
    a receipt as before."""
    config = write_config(tmp_path, driver="smscru", extra="")
    text = config.read_text(encoding="utf-8").replace(
        'driver = "smscru"\n', 'driver = "smscru"\nlogin = "acme"\npsw = "secret-password"\n')
    config.write_text(text, encoding="utf-8")
    async with await Herald.open(config) as herald:
        ids = await add_profiles(herald, [PHONE])
        assert herald.plugins.drivers["smscru"].one_callback
        body = urlencode({"phone": PHONE[1:], "mes": "Стоп", "to": "ACME"}).encode()
        report = await herald.receipts("gw", body, {
            "content-type": "application/x-www-form-urlencoded"})
        assert (report.matched, report.pending) == (0, 0)
        rid = await herald.store.resource_id("news")
        row = herald.store.conn.execute(  # type: ignore[attr-defined]
            "SELECT status FROM subscriptions WHERE resource_id = ? AND profile_id = ?",
            (rid, ids[0])).fetchone()
        assert row[0] == "unsubscribed"
        status = urlencode({"id": "7", "phone": PHONE[1:], "status": "1"}).encode()
        report = await herald.receipts("gw", status, {
            "content-type": "application/x-www-form-urlencoded"})
        assert report.pending == 1  # a receipt, kept for a message not recorded yet


def test_a_driver_config_shows_no_secret() -> None:
    import msgspec

    drivers = load_plugins().drivers
    twilio = msgspec.convert({"account_sid": "AC" + "0" * 32, "auth_token": "tok-123456",
                              "status_callback": "https://h.example/api/v1/dlr/t"},
                             drivers["twilio"].Config)
    http = msgspec.convert({"url": "https://g.example/send",
                            "headers": {"Authorization": "Bearer abcdef", "X-Tag": "a"}},
                           drivers["http"].Config)
    assert "tok-123456" not in repr(twilio) and "AC000" in repr(twilio)
    assert "abcdef" not in repr(http) and "'X-Tag': 'a'" in repr(http)
    assert "auth_token='***'" in repr(twilio)
