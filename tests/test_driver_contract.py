"""What every bundled gateway driver promises the engine, checked on each of them.

The ``bundled`` fixture yields a ready driver, found by name in the plugin registry the
engine uses, for each of ``null``, ``file`` and ``http`` (against the gateway simulator),
and every driver of a real gateway against the fake of its API in ``tests/fakes/NAME.py``,
on asyncio and trio. A new bundled driver joins the suite by joining ``BUNDLED`` (and
``FAKED``, with its fake).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest

from engine.core.mime import MimeBuilder
from engine.drivers import Capabilities, Driver, OutboundMessage
from engine.errors import InputError
from engine.plugins import load_plugins
from engine.simulator import GatewaySimulator

pytestmark = pytest.mark.anyio

#: Drivers of real gateways, each tested against ``tests.fakes.<name>.gateway``.
FAKED = ["smpp", "twilio", "vonage", "infobip", "smscru", "devino", "exolve", "mailgun",
         "smtp"]
BUNDLED = ["null", "file", "http", *FAKED]


def registry() -> dict[str, type[Driver]]:
    """The drivers the engine finds through the ``herald`` entry points."""
    return load_plugins().drivers


class Bundled(NamedTuple):
    name: str
    #: The options it was configured with, as a ``[gateways.NAME]`` table would give them.
    options: dict[str, Any]
    driver: Driver


@pytest.fixture(params=BUNDLED)
async def bundled(
    request: pytest.FixtureRequest, tmp_path: Path, anyio_backend: str
) -> AsyncIterator[Bundled]:
    name: str = request.param
    cls = registry()[name]
    async with contextlib.AsyncExitStack() as stack:
        options: dict[str, Any] = {}
        if name == "file":
            options = {"path": "out/sent.jsonl"}
        elif name == "http":
            sim = await stack.enter_async_context(GatewaySimulator())
            options = {"url": sim.send_url}
        elif name in FAKED:
            fake = importlib.import_module(f"tests.fakes.{name}")
            options = await stack.enter_async_context(fake.gateway(tmp_path))
        driver = cls(msgspec.convert(options, cls.Config), gateway="gw", base_dir=tmp_path)
        stack.push_async_callback(driver.aclose)
        yield Bundled(name, options, driver)


def messages(n: int, channel: str = "sms") -> list[OutboundMessage]:
    """``n`` messages of ``channel``: SMS to one phone, or emails built as the engine
    builds them (``engine.core.mime``)."""
    if channel == "email":
        b = MimeBuilder(from_="ACME <news@example.com>", domain="example.com")
        return [OutboundMessage(
            f"id-{i}", "reader@example.net", "bounce@example.com", f"hello {i}",
            mime=b.build(to="reader@example.net", subject="hi", html=f"<p>hello {i}</p>",
                         text=f"hello {i}", message_id=f"id-{i}", unsubscribe_url=None,
                         now=0.0))
            for i in range(n)]
    return [OutboundMessage(f"id-{i}", "+15551234567", "ACME", f"hello {i}", 1) for i in range(n)]


def messages_for(bundled: Bundled, n: int) -> list[OutboundMessage]:
    return messages(n, bundled.driver.capabilities.channel)


async def test_one_result_per_message_with_matching_ids(bundled: Bundled) -> None:
    batch = messages_for(bundled, 7)
    results = await bundled.driver.send_batch(batch)
    assert [r.id for r in results] == [m.id for m in batch]
    assert {r.status for r in results} == {"accepted"}  # a healthy gateway takes them all


async def test_an_empty_batch_gives_no_results(bundled: Bundled) -> None:
    assert await bundled.driver.send_batch([]) == []


async def test_a_batch_of_exactly_max_batch_works(bundled: Bundled) -> None:
    caps = bundled.driver.capabilities
    assert isinstance(caps, Capabilities) and caps.max_batch >= 1
    batch = messages_for(bundled, caps.max_batch)
    results = await bundled.driver.send_batch(batch)
    assert [r.id for r in results] == [m.id for m in batch]


async def test_aclose_twice_is_harmless(bundled: Bundled) -> None:
    await bundled.driver.send_batch(messages_for(bundled, 2))
    await bundled.driver.aclose()
    await bundled.driver.aclose()


async def test_the_config_rejects_an_unknown_option(bundled: Bundled) -> None:
    config_type = type(bundled.driver).Config
    with pytest.raises(msgspec.ValidationError, match="no_such_option"):
        msgspec.convert({**bundled.options, "no_such_option": 1}, config_type)


async def test_the_driver_registers_through_the_plugin_registry(bundled: Bundled) -> None:
    cls = registry()[bundled.name]
    assert type(bundled.driver) is cls
    assert issubclass(cls, Driver) and cls.name == bundled.name


async def test_receipts_are_parsed_only_by_drivers_that_declare_them(bundled: Bundled) -> None:
    driver = bundled.driver
    if driver.capabilities.supports_dlr:
        with pytest.raises(InputError):
            driver.parse_receipts(b"\x00 not a receipt", {})
    else:
        with pytest.raises(NotImplementedError):
            driver.parse_receipts(b"{}", {})
