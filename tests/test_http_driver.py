"""The ``http`` driver against real loopback servers, on asyncio and trio.

Most tests talk to the gateway simulator (``bench/gateway_sim.py``). ``RawServer`` plays a
gateway byte for byte where the simulator cannot: chunked answers, connections dropped at
chosen moments, answers per message, request headers.
"""

from __future__ import annotations

import contextlib
import datetime
import email.utils
import ipaddress
import itertools
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NamedTuple, Self

import anyio
import msgspec
import pytest
from anyio.abc import ByteStream, Listener, SocketAttribute
from anyio.streams.tls import TLSListener
from hypothesis import given
from hypothesis import strategies as st

from engine.drivers import OutboundMessage, Receipt, SendResult
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError
from engine.simulator import GatewaySimulator
from engine.simulator import Receipt as SimReceipt
from herald_http import HttpConfig, HttpDriver
from herald_http.http1 import ProtocolError, Response, ResponseParser, split_url
from herald_http.pool import ConnectionPool
from herald_http.wire import read_answer, retry_after

pytestmark = pytest.mark.anyio


def messages(n: int, prefix: str = "m", to: str = "+15551234567") -> list[OutboundMessage]:
    return [OutboundMessage(f"{prefix}{i}", to, "ACME", "Your code is 1234", 1) for i in range(n)]


@contextlib.asynccontextmanager
async def http_driver(url: str, **options: Any) -> AsyncIterator[HttpDriver]:
    config = msgspec.convert({"url": url, **options}, HttpConfig)
    driver = HttpDriver(config, gateway="gw")
    try:
        yield driver
    finally:
        await driver.aclose()


def pool_of(driver: HttpDriver) -> Any:
    stats = driver.statistics().pool
    assert stats is not None
    return stats


# --- a gateway byte for byte ---------------------------------------------------------------


class Request(NamedTuple):
    method: bytes
    target: bytes
    headers: dict[str, str]
    body: bytes

    def messages(self) -> list[dict[str, Any]]:
        return list(msgspec.json.decode(self.body)["messages"])


class Reply(NamedTuple):
    """Bytes to send (None: hang up without answering); ``close``: hang up after them."""

    data: bytes | None
    close: bool = False


def reply(status: int, body: bytes = b"", *, extra: bytes = b"", close: bool = False) -> Reply:
    head = b"HTTP/1.1 %d Whatever\r\ncontent-length: %d\r\n%s\r\n" % (status, len(body), extra)
    return Reply(head + body, close)


def results_body(request: Request, status: str = "accepted") -> bytes:
    results = [{"id": m["id"], "status": status, "provider_id": f"p-{m['id']}"}
               for m in request.messages()]
    return msgspec.json.encode({"results": results})


def accept_all(request: Request) -> Reply:
    return reply(200, results_body(request))


class RawServer:
    """HTTP/1.1 on 127.0.0.1 answering each request with ``handler(request)`` (``tls``: https)."""

    def __init__(
        self, handler: Callable[[Request], Reply] = accept_all, *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.requests: list[Request] = []
        self.connections = 0
        self.closed = 0
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Self:
        tcp = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = tcp.extra(SocketAttribute.local_port)
        listener: Listener[Any] = tcp if self.tls is None else TLSListener(
            tcp, self.tls, standard_compatible=False
        )
        await self._stack.enter_async_context(listener)
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/send"
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(tg.cancel_scope.cancel)
        tg.start_soon(listener.serve, self._serve)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def _serve(self, stream: ByteStream) -> None:
        self.connections += 1
        buffer = bytearray()
        try:
            async with stream:
                while True:
                    while (end := buffer.find(b"\r\n\r\n")) < 0:
                        buffer += await stream.receive()
                    lines = bytes(buffer[:end]).split(b"\r\n")
                    del buffer[: end + 4]
                    method, target, _ = lines[0].split(b" ", 2)
                    headers = {}
                    for line in lines[1:]:
                        name, _, value = line.partition(b":")
                        headers[name.strip().lower().decode()] = value.strip().decode()
                    length = int(headers.get("content-length", "0"))
                    while len(buffer) < length:
                        buffer += await stream.receive()
                    request = Request(method, target, headers, bytes(buffer[:length]))
                    del buffer[:length]
                    self.requests.append(request)
                    answer = self.handler(request)
                    if answer.data is None:
                        return
                    await stream.send(answer.data)
                    if answer.close:
                        return
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        finally:
            self.closed += 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- sending ---------------------------------------------------------------------------------


async def test_batch_mode_sends_one_request_per_call_over_one_kept_alive_connection() -> None:
    async with GatewaySimulator() as sim, http_driver(sim.send_url, batch_size=500) as driver:
        batch = messages(250)
        for _ in range(3):
            results = await driver.send_batch(batch)
            assert [r.id for r in results] == [m.id for m in batch]
            assert {r.status for r in results} == {"accepted"}
        assert len({r.provider_id for r in results}) == 250
        assert sim.statistics().requests == 3
        assert sim.accepted_ids == {m.id: 3 for m in batch}
        assert (pool_of(driver).connects, pool_of(driver).reuses) == (1, 2)


async def test_a_call_larger_than_batch_size_is_split_into_requests() -> None:
    async with GatewaySimulator() as sim, http_driver(sim.send_url, batch_size=4) as driver:
        batch = messages(10)
        results = await driver.send_batch(batch)
        assert [r.id for r in results] == [m.id for m in batch]
        assert sim.statistics().requests == 3


async def test_single_mode_sends_concurrent_requests_bounded_by_max_connections() -> None:
    async with GatewaySimulator() as sim, http_driver(
        sim.send_url, batch_size=1, max_connections=3
    ) as driver:
        assert driver.capabilities.max_batch == 3
        batch = messages(10)
        results = await driver.send_batch(batch)
        assert [r.id for r in results] == [m.id for m in batch]
        assert {r.status for r in results} == {"accepted"}
        assert sim.statistics().requests == 10
        # Three at a time: three connections, each carrying requests one after another.
        assert (pool_of(driver).connects, pool_of(driver).reuses) == (3, 7)


async def test_rejected_and_retry_results_carry_the_gateways_codes() -> None:
    async with GatewaySimulator(reject_rate=1.0, reject_code="invalid_number") as sim:
        async with http_driver(sim.send_url) as driver:
            results = await driver.send_batch(messages(2))
            assert [(r.status, r.error) for r in results] == [("rejected", "invalid_number")] * 2
            sim.configure(reject_rate=0.0, retry_rate=1.0)
            results = await driver.send_batch(messages(1))
            assert [(r.status, r.error) for r in results] == [("retry", "busy")]


async def test_throttling_raises_transient_with_the_gateways_retry_after() -> None:
    async with GatewaySimulator(throttle_rate=1.0, retry_after=2.5) as sim:
        async with http_driver(sim.send_url) as driver:
            with pytest.raises(TransientGatewayError, match="HTTP 429") as caught:
                await driver.send_batch(messages(3))
            assert caught.value.retry_after == 2.5
        # Every request of a single-mode call throttled: the call raises, like one request.
        async with http_driver(sim.send_url, batch_size=1) as driver:
            with pytest.raises(TransientGatewayError) as caught:
                await driver.send_batch(messages(3))
            assert caught.value.retry_after == 2.5
        assert not sim.accepted_ids


async def test_server_errors_are_transient() -> None:
    async with GatewaySimulator(error_rate=1.0) as sim, http_driver(sim.send_url) as driver:
        with pytest.raises(TransientGatewayError, match="HTTP 500: simulated server error") as e:
            await driver.send_batch(messages(2))
        assert e.value.retry_after is None


async def test_a_hung_request_times_out_as_transient_and_its_connection_is_dropped() -> None:
    async with GatewaySimulator(timeout_rate=1.0) as sim, http_driver(
        sim.send_url, timeout=0.2
    ) as driver:
        with pytest.raises(TransientGatewayError, match=r"no answer within 0\.2 s"):
            await driver.send_batch(messages(2))
        assert pool_of(driver).open == 0
        sim.configure(timeout_rate=0.0)
        results = await driver.send_batch(messages(2))
        assert {r.status for r in results} == {"accepted"}
        assert driver.statistics().timeouts == 1


async def test_cancellation_passes_through_and_drops_the_connection() -> None:
    async with GatewaySimulator(timeout_rate=1.0) as sim, http_driver(sim.send_url) as driver:
        with anyio.move_on_after(0.1) as scope:
            await driver.send_batch(messages(1))
        assert scope.cancelled_caught
        assert pool_of(driver).open == 0


async def test_4xx_is_permanent_with_the_bodys_code_or_the_status() -> None:
    answers = iter([
        reply(400, b'{"error":"invalid_sender"}'),
        reply(401, b"<html>Unauthorized</html>"),
        reply(301, extra=b"location: https://elsewhere/\r\n"),
    ])
    async with RawServer(lambda request: next(answers)) as server:
        async with http_driver(server.url) as driver:
            with pytest.raises(PermanentGatewayError) as caught:
                await driver.send_batch(messages(2))
            assert caught.value.code == "invalid_sender"
            with pytest.raises(PermanentGatewayError, match="HTTP 401: <html>Unauth") as caught:
                await driver.send_batch(messages(2))
            assert caught.value.code == "401"
            with pytest.raises(PermanentGatewayError) as caught:
                await driver.send_batch(messages(2))
            assert caught.value.code == "301"


async def test_single_mode_reports_each_requests_outcome_for_its_message() -> None:
    def by_recipient(request: Request) -> Reply:
        to = request.messages()[0]["to"]
        if to == "+10000000000":
            return reply(400, b'{"error":"invalid_number"}')
        if to == "+20000000000":
            return reply(503, extra=b"retry-after: 7\r\n")
        return accept_all(request)

    batch = [*messages(1, "ok"), *messages(1, "bad", "+10000000000"),
             *messages(1, "busy", "+20000000000")]
    async with RawServer(by_recipient) as server, http_driver(server.url, batch_size=1) as d:
        results = await d.send_batch(batch)
    assert [(r.id, r.status) for r in results] == [
        ("ok0", "accepted"), ("bad0", "rejected"), ("busy0", "retry")
    ]
    assert results[1].error == "invalid_number"
    assert results[2].retry_after == 7.0 and "HTTP 503" in (results[2].error or "")


async def test_connection_refused_is_transient() -> None:
    refused = r"127\.0\.0\.1:\d+: cannot connect: connection refused"
    async with http_driver(f"http://127.0.0.1:{closed_port()}/send") as driver:
        with pytest.raises(TransientGatewayError, match=refused):
            await driver.send_batch(messages(1))
    async with http_driver(f"http://127.0.0.1:{closed_port()}/send", batch_size=1) as driver:
        with pytest.raises(TransientGatewayError, match="other 2 requests"):
            await driver.send_batch(messages(3))


async def test_the_headers_option_is_sent_with_every_request() -> None:
    headers = {"Authorization": "Bearer s3cret", "X-Api-Key": "k%d1"}
    async with RawServer() as server, http_driver(server.url, headers=headers) as driver:
        await driver.send_batch(messages(1))
        await driver.send_batch(messages(1))
    for request in server.requests:
        assert request.method == b"POST" and request.target == b"/send"
        assert request.headers["authorization"] == "Bearer s3cret"
        assert request.headers["x-api-key"] == "k%d1"
        assert request.headers["content-type"] == "application/json"
        assert request.headers["host"] == server.url.split("/")[2]


async def test_chunked_and_read_until_close_answers_are_understood() -> None:
    def chunked(request: Request) -> Reply:
        body = results_body(request)
        head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                          for i in range(0, len(body), 7))
        return Reply(head + chunks + b"0\r\nx-trailer: 1\r\n\r\n")

    def until_close(request: Request) -> Reply:
        return Reply(b"HTTP/1.0 200 OK\r\n\r\n" + results_body(request), close=True)

    for handler, connections in ((chunked, 1), (until_close, 3)):
        async with RawServer(handler) as server, http_driver(server.url) as driver:
            for _ in range(3):
                results = await driver.send_batch(messages(5))
                assert [r.provider_id for r in results] == [f"p-m{i}" for i in range(5)]
        assert server.connections == connections


async def test_a_kept_alive_connection_the_server_closed_is_replaced_without_a_retry() -> None:
    def answer_then_hang_up(request: Request) -> Reply:
        return Reply(accept_all(request).data, close=True)  # and no `connection: close`

    async with RawServer(answer_then_hang_up) as server, http_driver(server.url) as driver:
        for _ in range(3):
            results = await driver.send_batch(messages(2))
            assert {r.status for r in results} == {"accepted"}
        assert pool_of(driver).stale_retries == 2
    assert len(server.requests) == 3  # each request reached the gateway once


async def test_a_connection_dropped_in_the_middle_of_the_answer_is_transient() -> None:
    def half(request: Request) -> Reply:
        return Reply(b'HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{"resu', close=True)

    async with RawServer(half) as server, http_driver(server.url) as driver:
        with pytest.raises(TransientGatewayError, match="in the middle of its answer"):
            await driver.send_batch(messages(2))
    assert len(server.requests) == 1  # not sent again: the gateway had read it


async def test_a_2xx_answer_that_is_not_herald_json_is_not_claimed_rejected() -> None:
    async with RawServer(lambda request: reply(200, b"<html>OK</html>")) as server:
        async with http_driver(server.url) as driver:
            assert await driver.send_batch(messages(3)) == []  # all unknown
        async with http_driver(server.url, idempotent=True) as driver:
            assert driver.capabilities.idempotent
            with pytest.raises(TransientGatewayError, match="dedupes"):
                await driver.send_batch(messages(3))


async def test_idle_connections_expire_by_the_clock() -> None:
    now = [0.0]
    async with GatewaySimulator() as sim:
        pool = ConnectionPool(split_url(sim.send_url), {}, keepalive_expiry=4.0,
                              clock=lambda: now[0])
        driver = HttpDriver(HttpConfig(url=sim.send_url), transport=pool)
        await driver.send_batch(messages(1))
        now[0] = 3.9
        await driver.send_batch(messages(1))
        assert (pool.statistics().connects, pool.statistics().reuses) == (1, 1)
        now[0] = 8.0
        await driver.send_batch(messages(1))
        assert pool.statistics().connects == 2
        await driver.aclose()
        await driver.aclose()
        assert pool.statistics().open == 0
        with pytest.raises(TransientGatewayError, match="closed"):
            await driver.send_batch(messages(1))


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a self-signed certificate of 127.0.0.1."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "herald test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "cert.pem").write_bytes(cert_pem)
        (Path(tmp) / "key.pem").write_bytes(key_pem)
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(Path(tmp) / "cert.pem", Path(tmp) / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


async def test_https_with_certificate_verification() -> None:
    server_context, client_context = tls_contexts()
    async with RawServer(tls=server_context) as server:
        pool = ConnectionPool(split_url(server.url), {}, ssl_context=client_context)
        driver = HttpDriver(HttpConfig(url=server.url), transport=pool)
        for _ in range(2):
            results = await driver.send_batch(messages(2))
            assert {r.status for r in results} == {"accepted"}
        assert pool.statistics().connects == 1
        await driver.aclose()
        # The system's CAs do not vouch for a self-signed certificate: no connection.
        async with http_driver(server.url) as untrusting:
            with pytest.raises(TransientGatewayError, match="cannot connect"):
                await untrusting.send_batch(messages(1))


# --- what answers mean (sans-I/O) ------------------------------------------------------------


def answer(body: dict[str, Any] | bytes, *, idempotent: bool = False, n: int = 3) -> Any:
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return read_answer(200, {}, raw, messages(n), idempotent=idempotent, now=0.0)


def test_results_are_matched_to_messages_by_id() -> None:
    shuffled = {"results": [
        {"id": "m2", "status": "rejected", "error": "blocked"},
        {"id": "zz", "status": "accepted"},  # not ours: ignored
        {"id": "m0", "status": "accepted", "provider_id": "p0"},
        {"id": "m0", "status": "rejected"},  # a second answer for m0: the first counts
    ]}
    assert answer(shuffled) == [
        SendResult("m0", "accepted", provider_id="p0"),
        SendResult("m2", "rejected", error="blocked"),  # m1 has none: unknown
    ]


def test_a_malformed_result_leaves_only_its_message_unknown() -> None:
    body = {"results": [
        {"id": "m0", "status": "accepted"},
        {"id": "m1", "status": "sent"},
        {"id": 2, "status": "accepted"},
        {"id": "m2", "status": "retry", "retry_after": 1.5},
    ]}
    assert answer(body) == [
        SendResult("m0", "accepted"), SendResult("m2", "retry", retry_after=1.5)
    ]


def test_a_2xx_without_results_gives_none_or_a_retry_when_idempotent() -> None:
    for body in (b"", b"{}", b'{"results": 3}', b"not json"):
        assert answer(body) == []
        with pytest.raises(TransientGatewayError):
            answer(body, idempotent=True)


def test_retry_after_comes_from_the_body_or_the_header_in_seconds_or_as_a_date() -> None:
    def wait(headers: dict[str, str], body: bytes = b"") -> float | None:
        with pytest.raises(TransientGatewayError) as caught:
            read_answer(429, headers, body, messages(1), idempotent=False, now=1_000_000.0)
        return caught.value.retry_after

    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert wait({"retry-after": "3"}, b'{"retry_after": 2.25}') == 2.25
    assert wait({"retry-after": "3"}, b'{"retry_after": -1}') == 3.0
    assert wait({"retry-after": date}) == 30.0
    assert wait({"retry-after": "soon"}) is None
    assert wait({}) is None
    assert retry_after(email.utils.formatdate(999_000, usegmt=True), 1_000_000.0) == 0.0


# --- receipts ---------------------------------------------------------------------------------


def test_receipts_as_the_simulator_posts_them_are_parsed() -> None:
    body = msgspec.json.encode({"receipts": [
        SimReceipt("sim-1", "m1", "delivered"),
        SimReceipt("sim-2", "m2", "undelivered", "expired"),
    ]})
    driver = HttpDriver(HttpConfig(url="http://127.0.0.1:9/send"))
    assert driver.parse_receipts(body, {"content-type": "application/json"}) == [
        Receipt("sim-1", "delivered", id="m1"),
        Receipt("sim-2", "undelivered", id="m2", error="expired"),
    ]
    extended = b'{"receipts":[{"provider_id":"p","status":"delivered","at":1.5,"x":1}]}'
    assert driver.parse_receipts(extended, {}) == [Receipt("p", "delivered", at=1.5)]


@pytest.mark.parametrize(("body", "where"), [
    (b'{"receipts":[{"provider_id":"p1","status":"read"}]}', "$.receipts[0].status"),
    (b'{"receipts":[{"provider_id":"p","status":"delivered"},{"status":"delivered"}]}',
     "$.receipts[1].provider_id: required field missing"),
    (b'{"receipts":[{"provider_id":7,"status":"delivered"}]}', "$.receipts[0].provider_id"),
    (b'{"receipt":[]}', "$.receipts: required field missing"),
    (b'[]', "$: Expected `object`"),
    (b'{"receipts":[', "not JSON"),
    (b"", "empty"),
])
def test_malformed_receipts_name_the_field(body: bytes, where: str) -> None:
    driver = HttpDriver(HttpConfig(url="http://127.0.0.1:9/send"))
    with pytest.raises(InputError) as caught:
        driver.parse_receipts(body, {})
    assert where in str(caught.value)


# --- options ----------------------------------------------------------------------------------


def test_options_decide_the_capabilities() -> None:
    driver = HttpDriver(HttpConfig(url="https://sms.example.com/v1/send?account=7",
                                   batch_size=1, max_connections=16, idempotent=True))
    caps = driver.capabilities
    assert (caps.max_batch, caps.supports_dlr, caps.idempotent) == (16, True, True)
    assert driver.origin.target == "/v1/send?account=7" and driver.origin.port == 443
    caps = HttpDriver(HttpConfig(url="http://gw:8080")).capabilities
    assert (caps.max_batch, caps.idempotent) == (100 * 64, False)


@pytest.mark.parametrize(("options", "message"), [
    ({}, "missing required field `url`"),
    ({"url": "ftp://example.com"}, "http:// or https://"),
    ({"url": "https://user:pw@example.com"}, "credentials"),
    ({"url": "http://gw", "batch_size": 0}, "`$.batch_size`"),
    ({"url": "http://gw", "timeout": -1}, "`$.timeout`"),
    ({"url": "http://gw", "headers": {"Content-Length": "3"}}, "set by the driver"),
    ({"url": "http://gw", "headers": {"X-A": "1\r\nX-B: 2"}}, "line break"),
    ({"url": "http://gw", "headers": {"Bad Name": "1"}}, "not an HTTP token"),
    ({"url": "http://gw", "retries": 3}, "unknown field `retries`"),
])
def test_bad_options_are_refused_with_the_reason(options: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(options, HttpConfig)
    assert message in str(caught.value)


# --- the HTTP/1.1 response parser (sans-I/O) ---------------------------------------------------


def parse(*pieces: bytes) -> Response:
    parser = ResponseParser()
    for piece in pieces:
        response = parser.feed(piece)
        if response is not None:
            return response
    raise AssertionError("incomplete")


BODY = b'{"results":[{"id":"m0","status":"accepted"}]}'
WIRE = [
    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\n%s\r\n%x\r\n%s\r\n0\r\nX-T: 1\r\n\r\n" % (BODY[:5], len(BODY) - 5, BODY[5:]),
]


@given(st.sampled_from(WIRE), st.lists(st.integers(0, 200), max_size=6))
def test_a_response_parses_the_same_however_it_is_split(wire: bytes, cuts: list[int]) -> None:
    bounds = sorted({min(c, len(wire)) for c in cuts} | {0, len(wire)})
    pieces = [wire[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    response = parse(*pieces)
    assert (response.status, response.body, response.keep_alive) == (200, BODY, True)


def test_framing_and_keep_alive_follow_rfc_9112() -> None:
    closing = parse(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
    assert (closing.body, closing.keep_alive) == (b"{}", False)
    assert parse(b"HTTP/1.1 204 No Content\r\n\r\n").body == b""
    parser = ResponseParser()
    assert parser.feed(b"HTTP/1.0 200 OK\r\n\r\n{") is None
    assert parser.feed(b"}") is None
    assert parser.feed(b"") == Response(200, {}, b"{}", keep_alive=False)
    headers = parse(
        b"HTTP/1.1 429 X\r\nRetry-After: 3\r\nA: 1\r\nA: 2\r\nContent-Length: 0\r\n\r\n"
    )
    assert headers.headers == {"retry-after": "3", "a": "1, 2", "content-length": "0"}


@pytest.mark.parametrize("wire", [
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded: header\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}XX",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",  # then the server hangs up
    b"",
])
def test_malformed_or_cut_responses_are_protocol_errors(wire: bytes) -> None:
    parser = ResponseParser()
    with pytest.raises(ProtocolError):
        if parser.feed(wire) is None:
            parser.feed(b"")
