"""The http transport of action hooks against a loopback sink."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from engine.events.transports import make_transport
from engine.events.transports.base import DeliveryError
from engine.events.transports.http import HttpTransport
from tests.events.fakes import hook_config
from tests.events.sink import Request, Sink

pytestmark = pytest.mark.anyio

SECRET = "whsec-0123456789abcdef"
MESSAGES = [b'{"event_id":"1"}', b'{"event_id":"2"}']


def verify(secret: str, header: str, body: bytes) -> bool:
    """The five lines of docs/hooks.md."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body,
                        hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"])


def transport(url: str, **keys: Any) -> HttpTransport:
    made = make_transport("h", hook_config(url=url, **keys))
    assert isinstance(made, HttpTransport)
    return made


async def test_a_batch_is_one_post_of_a_json_array_with_the_hooks_headers() -> None:
    async with Sink() as sink:
        t = transport(sink.url, headers={"Authorization": "Bearer abc"})
        await t.send(MESSAGES)
        await t.send(MESSAGES[:1])
        await t.aclose()
    first, second = sink.requests
    assert first.target == "/hook"
    assert json.loads(first.body) == [{"event_id": "1"}, {"event_id": "2"}]
    assert json.loads(second.body) == [{"event_id": "1"}]
    assert first.headers["content-type"] == "application/json"
    assert first.headers["authorization"] == "Bearer abc"
    assert "x-herald-signature" not in first.headers


async def test_the_signature_verifies_with_the_secret_and_fails_without_it() -> None:
    async with Sink() as sink:
        t = transport(sink.url, secret=SECRET)
        await t.send(MESSAGES)
        await t.send(MESSAGES[1:])
        await t.aclose()
    for request in sink.requests:
        header = request.headers["x-herald-signature"]
        assert header.startswith("t=")
        assert verify(SECRET, header, request.body)
        assert not verify(SECRET + "x", header, request.body)
        assert not verify(SECRET, header, request.body + b" ")


async def test_the_signature_carries_the_time_of_sending() -> None:
    async with Sink() as sink:
        t = HttpTransport("h", hook_config(url=sink.url, secret=SECRET),
                          clock=lambda: 1_764_657_211.7)
        await t.send(MESSAGES)
        await t.aclose()
    assert sink.requests[0].headers["x-herald-signature"].startswith("t=1764657211,v1=")


async def test_an_answer_other_than_2xx_is_a_delivery_error_naming_the_status() -> None:
    async with Sink(lambda r: (500, b"database down", 0.0)) as sink:
        t = transport(sink.url)
        with pytest.raises(DeliveryError, match="HTTP 500: 'database down'"):
            await t.send(MESSAGES)
        await t.aclose()


async def test_success_regex_must_be_found_in_the_body() -> None:
    answers = iter([b'{"status":"error"}', b'{"status": "ok", "n": 2}'])

    def handler(_: Request) -> tuple[int, bytes, float]:
        return 200, next(answers), 0.0

    async with Sink(handler) as sink:
        t = transport(sink.url, success=r'"status":\s*"ok"')
        with pytest.raises(DeliveryError, match="does not match success"):
            await t.send(MESSAGES)
        await t.send(MESSAGES)  # found: delivered
        await t.aclose()


async def test_empty_success_takes_any_2xx() -> None:
    async with Sink(lambda r: (204, b"", 0.0)) as sink:
        t = transport(sink.url)
        await t.send(MESSAGES)
        await t.aclose()
    assert len(sink.requests) == 1


async def test_no_answer_within_timeout_is_a_delivery_error() -> None:
    async with Sink(lambda r: (200, b"OK", 5.0)) as sink:
        t = transport(sink.url, timeout=0.2)
        with pytest.raises(DeliveryError, match=r"no answer within 0\.2 s"):
            await t.send(MESSAGES)
        await t.aclose()


async def test_nobody_listening_is_a_delivery_error() -> None:
    t = transport("http://127.0.0.1:9/hook")
    with pytest.raises(DeliveryError, match="cannot connect"):
        await t.send(MESSAGES)
    await t.aclose()


def test_a_url_with_credentials_is_refused() -> None:
    with pytest.raises(ValueError, match="credentials"):
        transport("http://user:pw@127.0.0.1:9/hook")


DOCS = (Path(__file__).resolve().parents[2] / "docs" / "hooks.md").read_text(encoding="utf-8")


async def test_the_verification_example_of_the_docs_verifies_a_real_request() -> None:
    section = DOCS.split("## Verifying the signature", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    # "a five-line verification example"
    assert len([line for line in code.splitlines() if line.strip()]) == 5
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    async with Sink() as sink:
        t = transport(sink.url, secret=SECRET)
        await t.send(MESSAGES)
        await t.aclose()
    (request,) = sink.requests
    header = request.headers["x-herald-signature"]
    assert namespace["verify"](SECRET, header, request.body)
    assert not namespace["verify"](SECRET, header, request.body.replace(b"1", b"3"))
    assert not namespace["verify"]("another-secret-0123", header, request.body)
