"""The ``http`` driver against real loopback servers, on asyncio and trio.

Most tests talk to the gateway simulator (``bench/gateway_sim.py``). ``RawServer`` plays a
gateway byte for byte where the simulator cannot: chunked answers, connections dropped or
reset at chosen moments, answers per message, request headers. ``Sink`` is a plain
threaded stdlib server (``http.server``) that counts the message ids it accepted: the
check that a message is never submitted twice.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.server
import json
import socket
import ssl
import struct
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Self

import anyio
import msgspec
import pytest
from anyio.abc import ByteStream, Listener, SocketAttribute
from anyio.streams.tls import TLSListener

from engine.drivers import OutboundMessage, Receipt, SendResult
from engine.errors import InputError, PermanentGatewayError, TransientGatewayError
from engine.simulator import GatewaySimulator
from engine.simulator import Receipt as SimReceipt
from herald_http import HttpConfig, HttpDriver, Progress
from herald_http.http1 import split_url
from herald_http.pool import ConnectionPool, TransportError
from herald_http.wire import read_answer, retry_after
from tests.tls import self_signed

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


async def wait_until(condition: Callable[[], bool]) -> None:
    """Until ``condition()`` holds (a server's thread or task caught up), at most 5 s."""
    with anyio.fail_after(5):
        while not condition():  # noqa: ASYNC110 - Sink's threads cannot set an anyio Event
            await anyio.sleep(0.002)


# --- a gateway byte for byte ---------------------------------------------------------------


class Request(NamedTuple):
    method: bytes
    target: bytes
    headers: dict[str, str]
    body: bytes

    def messages(self) -> list[dict[str, Any]]:
        return list(msgspec.json.decode(self.body)["messages"])


class Reply(NamedTuple):
    """What the server does with a request: send ``data`` (if any), then one of: go on,
    ``close`` (hang up), ``reset`` (hang up with a TCP RST), ``hang`` (wait forever)."""

    data: bytes | None
    close: bool = False
    reset: bool = False
    hang: bool = False


HANG_UP = Reply(None, close=True)
RESET = Reply(None, reset=True)
HANG = Reply(None, hang=True)


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
                    if answer.data is not None:
                        await stream.send(answer.data)
                    if answer.hang:
                        await anyio.sleep_forever()
                    if answer.reset:  # linger 0: close() sends a RST, not a FIN
                        sock = stream.extra(SocketAttribute.raw_socket)
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
                        return
                    if answer.close:
                        return
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        finally:
            self.closed += 1


LINGER_0 = struct.pack("ii", 1, 0)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a stdlib threaded server that counts what it accepted ----------------------------------


class Sink(http.server.ThreadingHTTPServer):
    """``http.server`` with ``ThreadingMixIn``, HTTP/1.1 keep-alive, counting accepted ids.

    ``close_every``: every so many answers say ``Connection: close`` and hang up;
    ``idle_timeout``: a connection idle that long after an answer is dropped (a socket
    timeout set once it answered, so never on one whose first request is on its way);
    ``request_queue_size``: the listen backlog.
    """

    daemon_threads = True

    def __init__(
        self, *, close_every: int = 0, idle_timeout: float | None = None,
        request_queue_size: int = 5,
    ) -> None:
        self.request_queue_size = request_queue_size  # read by server_activate: set it first
        self.close_every = close_every
        self.accepted: Counter[str] = Counter()
        self.requests = self.connections = self.closed = 0
        self.lock = threading.Lock()
        handler = type("Handler", (SinkHandler,), {"idle_timeout": idle_timeout})
        super().__init__(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/send"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.lock:
            self.connections += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self.lock:
            self.closed += 1

    @contextlib.contextmanager
    def running(self) -> Iterator[Self]:
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            yield self
        finally:
            self.shutdown()
            thread.join()
            self.server_close()


class SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    idle_timeout: float | None = None
    server: Sink

    def do_POST(self) -> None:
        sink = self.server
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        ids = [m["id"] for m in body["messages"]]
        with sink.lock:
            sink.accepted.update(ids)
            sink.requests += 1
            close = bool(sink.close_every) and sink.requests % sink.close_every == 0
        answer = json.dumps({"results": [{"id": i, "status": "accepted"} for i in ids]})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        if close:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(answer.encode())
        if self.idle_timeout:
            self.connection.settimeout(self.idle_timeout)

    def log_message(self, format: str, *args: Any) -> None:
        pass


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
            assert (caught.value.unsent, caught.value.ambiguous) == (True, None)
        # Every request of a single-mode call throttled: the call raises, like one request.
        async with http_driver(sim.send_url, batch_size=1) as driver:
            with pytest.raises(TransientGatewayError) as caught:
                await driver.send_batch(messages(3))
            assert caught.value.retry_after == 2.5
            assert caught.value.ambiguous is None
        assert not sim.accepted_ids


async def test_server_errors_are_transient() -> None:
    async with GatewaySimulator(error_rate=1.0) as sim, http_driver(sim.send_url) as driver:
        with pytest.raises(TransientGatewayError, match="HTTP 500: simulated server error") as e:
            await driver.send_batch(messages(2))
        assert (e.value.retry_after, e.value.unsent, e.value.ambiguous) == (None, False, None)


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


async def test_the_headers_option_is_sent_with_every_request() -> None:
    headers = {"Authorization": "Bearer s3cret", "X-Api-Key": "k%d1", "User-Agent": "acme/2"}
    async with RawServer() as server, http_driver(server.url, headers=headers) as driver:
        await driver.send_batch(messages(1))
        await driver.send_batch(messages(1))
    for request in server.requests:
        assert request.method == b"POST" and request.target == b"/send"
        assert request.headers["authorization"] == "Bearer s3cret"
        assert request.headers["x-api-key"] == "k%d1"
        assert request.headers["user-agent"] == "acme/2"  # replaces the driver's own
        assert request.headers["content-type"] == "application/json"
        assert request.headers["host"] == server.url.split("/")[2]
        assert request.headers["content-length"] == str(len(request.body))


async def test_chunked_interim_and_read_until_close_answers_are_understood() -> None:
    def chunked(request: Request) -> Reply:
        body = results_body(request)
        head = (b"HTTP/1.1 100 Continue\r\n\r\n"
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                          for i in range(0, len(body), 7))
        return Reply(head + chunks + b"0\r\nx-trailer: 1\r\n\r\n")

    def until_close(request: Request) -> Reply:
        return Reply(b"HTTP/1.0 200 OK\r\n\r\n" + results_body(request), close=True)

    def connection_close(request: Request) -> Reply:
        return reply(200, results_body(request), extra=b"connection: close\r\n")

    for handler, connections in ((chunked, 1), (until_close, 3), (connection_close, 3)):
        async with RawServer(handler) as server, http_driver(server.url) as driver:
            for _ in range(3):
                results = await driver.send_batch(messages(5))
                assert [r.provider_id for r in results] == [f"p-m{i}" for i in range(5)]
            assert pool_of(driver).stale == 0  # none reused after it closed
        assert server.connections == connections


async def test_repeated_response_headers_are_joined() -> None:
    async with RawServer(lambda r: reply(429, extra=b"A: 1\r\nA: 2\r\nRetry-After: 3\r\n")) as s:
        pool = ConnectionPool(split_url(s.url), {})
        response = await pool.post(b"{}")
        await pool.aclose()
    assert response.status == 429 and response.keep_alive
    assert response.headers == {"content-length": "0", "a": "1, 2", "retry-after": "3"}


async def test_https_with_certificate_verification() -> None:
    server_context, client_context = tls_contexts()
    async with RawServer(tls=server_context) as server:
        pool = ConnectionPool(split_url(server.url), {}, ssl_context=client_context)
        driver = HttpDriver(HttpConfig(url=server.url), transport=pool)
        for _ in range(2):
            results = await driver.send_batch(messages(2))
            assert {r.status for r in results} == {"accepted"}
        assert (pool.statistics().connects, pool.statistics().reuses) == (1, 1)
        await driver.aclose()
        # The system's CAs do not vouch for a self-signed certificate: no connection.
        async with http_driver(server.url) as untrusting:
            with pytest.raises(TransientGatewayError, match="cannot connect") as caught:
                await untrusting.send_batch(messages(1))
            assert caught.value.unsent


# --- failures: sent, not sent, or maybe ------------------------------------------------------


async def test_connection_refused_is_unsent() -> None:
    refused = r"127\.0\.0\.1:\d+: cannot connect: connection refused"
    async with http_driver(f"http://127.0.0.1:{closed_port()}/send") as driver:
        with pytest.raises(TransientGatewayError, match=refused) as caught:
            await driver.send_batch(messages(1))
        assert (caught.value.unsent, caught.value.ambiguous) == (True, None)
    async with http_driver(f"http://127.0.0.1:{closed_port()}/send", batch_size=1) as driver:
        with pytest.raises(TransientGatewayError, match="other 2 requests") as caught:
            await driver.send_batch(messages(3))
        assert (caught.value.unsent, caught.value.ambiguous) == (True, None)


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs when full")
async def test_a_timeout_while_connecting_is_unsent() -> None:
    # A listener that never accepts, its backlog full: the next connect hangs.
    with socket.socket() as listener, socket.socket() as first:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        first.connect(listener.getsockname())
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/send"
        async with http_driver(url, timeout=0.2) as driver:
            with pytest.raises(TransientGatewayError, match=r"could not send within 0\.2 s") as e:
                await driver.send_batch(messages(1))
            assert (e.value.unsent, e.value.ambiguous) == (True, None)
            assert pool_of(driver).open == 0


async def test_a_timeout_while_the_request_is_being_written_is_unsent() -> None:
    # The server never reads: a 20 MB request fills both socket buffers and stops half way.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/send"
        big = [OutboundMessage(f"m{i}", "+15551234567", "ACME", "x" * 2000) for i in range(10_000)]
        async with http_driver(url, timeout=0.3, batch_size=10_000) as driver:
            with pytest.raises(TransientGatewayError, match=r"could not send within 0\.3 s") as e:
                await driver.send_batch(big)
            assert (e.value.unsent, e.value.ambiguous) == (True, None)
            assert pool_of(driver).open == 0


async def test_a_timeout_after_the_request_was_written_is_ambiguous() -> None:
    async with GatewaySimulator(timeout_rate=1.0) as sim, http_driver(
        sim.send_url, timeout=0.2
    ) as driver:
        with pytest.raises(TransientGatewayError, match=r"no answer within 0\.2 s") as caught:
            await driver.send_batch(messages(2))
        assert (caught.value.unsent, caught.value.ambiguous) == (False, "timeout")
        assert sim.statistics().requests == 1  # written once, never again
        assert pool_of(driver).open == 0  # its connection is dropped: the answer may come late
        sim.configure(timeout_rate=0.0)
        results = await driver.send_batch(messages(2))
        assert {r.status for r in results} == {"accepted"}
        assert driver.statistics().timeouts == 1


async def test_the_pool_tells_how_far_a_cancelled_request_got() -> None:
    async with RawServer(lambda request: HANG) as server:
        pool = ConnectionPool(split_url(server.url), {})
        progress = Progress()
        with anyio.move_on_after(0.1) as scope:
            await pool.post(b"{}", progress)
        assert scope.cancelled_caught and progress.written is True
        await wait_until(lambda: len(server.requests) == 1)
        assert pool.statistics().open == 0
        await pool.aclose()
        progress = Progress()
        with pytest.raises(TransportError, match="closed") as caught:
            await pool.post(b"{}", progress)
        assert progress.written is False and not caught.value.sent


async def test_cancellation_passes_through_and_drops_the_connection() -> None:
    async with GatewaySimulator(timeout_rate=1.0) as sim, http_driver(sim.send_url) as driver:
        with anyio.move_on_after(0.1) as scope:
            await driver.send_batch(messages(1))
        assert scope.cancelled_caught
        assert pool_of(driver).open == 0


@pytest.mark.parametrize("hang_up", [HANG_UP, RESET], ids=["fin", "rst"])
async def test_a_connection_lost_after_the_request_was_read_is_ambiguous_and_not_resent(
    hang_up: Reply,
) -> None:
    answers = iter([accept_all, lambda request: hang_up, accept_all])
    async with RawServer(lambda request: next(answers)(request)) as server:
        async with http_driver(server.url) as driver:
            assert {r.status for r in await driver.send_batch(messages(2))} == {"accepted"}
            # The kept-alive connection carries the next request; the server reads it all,
            # then hangs up without a word: the gateway may have it.
            with pytest.raises(TransientGatewayError) as caught:
                await driver.send_batch(messages(2))
            assert (caught.value.unsent, caught.value.ambiguous) == (False, "connection_lost")
            assert "gateway 'gw' at http://127.0.0.1:" in str(caught.value)
            if hang_up is HANG_UP:
                assert "closed the connection without answering" in str(caught.value)
            assert len(server.requests) == 2  # not sent again, on this or another connection
            assert (pool_of(driver).connects, pool_of(driver).reuses) == (1, 1)
            assert {r.status for r in await driver.send_batch(messages(2))} == {"accepted"}
            assert driver.statistics().transport_errors == 1


async def test_a_connection_dropped_in_the_middle_of_the_answer_is_ambiguous() -> None:
    def half(request: Request) -> Reply:
        return Reply(b'HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{"resu', close=True)

    async with RawServer(half) as server, http_driver(server.url) as driver:
        with pytest.raises(TransientGatewayError, match="in the middle of its answer") as caught:
            await driver.send_batch(messages(2))
        assert caught.value.ambiguous == "connection_lost"
    assert len(server.requests) == 1  # not sent again: the gateway had read it


@pytest.mark.parametrize("wire", [
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n{}",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded: header\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
])
async def test_an_answer_that_is_not_http_is_ambiguous(wire: bytes) -> None:
    async with RawServer(lambda request: Reply(wire)) as server:
        async with http_driver(server.url) as driver:
            with pytest.raises(TransientGatewayError, match=r"not an HTTP/1\.1 answer") as caught:
                await driver.send_batch(messages(1))
            assert caught.value.ambiguous == "connection_lost"
            assert pool_of(driver).open == 0
    assert len(server.requests) == 1


async def test_failed_requests_of_a_call_leave_their_messages_unknown_or_retry() -> None:
    def by_recipient(request: Request) -> Reply:
        return {"+1": HANG, "+2": HANG_UP, "+3": reply(503)}.get(
            request.messages()[0]["to"], accept_all(request)
        )

    batch = [*messages(1, "ok"), *messages(1, "slow", "+1"), *messages(1, "lost", "+2"),
             *messages(1, "busy", "+3")]
    async with RawServer(by_recipient) as server:
        async with http_driver(server.url, batch_size=1, timeout=0.3) as driver:
            results = await driver.send_batch(batch)
    assert [(r.id, r.status) for r in results] == [
        ("ok0", "accepted"), ("slow0", "unknown"), ("lost0", "unknown"), ("busy0", "retry")
    ]
    slow, lost = results[1].error or "", results[2].error or ""
    assert slow.startswith("timeout: gateway 'gw' at http://") and "within 0.3 s" in slow
    assert lost.startswith("connection_lost: gateway 'gw' at http://")
    assert len(server.requests) == 4


async def test_a_call_whose_requests_all_failed_the_same_ambiguous_way_raises_it() -> None:
    async with RawServer(lambda request: HANG_UP) as server:
        async with http_driver(server.url, batch_size=1) as driver:
            with pytest.raises(TransientGatewayError, match="other 2 requests") as caught:
                await driver.send_batch(messages(3))
            assert (caught.value.unsent, caught.value.ambiguous) == (False, "connection_lost")
    # Two ways (a timeout, a lost connection): no single error; each message says its own.
    answers = iter([HANG, HANG_UP])
    async with RawServer(lambda request: next(answers)) as server:
        async with http_driver(server.url, batch_size=1, timeout=0.3) as driver:
            results = await driver.send_batch(messages(2))
    assert {r.status for r in results} == {"unknown"}
    assert sorted((r.error or "").split(":")[0] for r in results) == ["connection_lost", "timeout"]


# --- keep-alive: reuse only what is sure to work ---------------------------------------------


async def test_a_kept_alive_connection_the_server_closed_is_replaced_before_writing() -> None:
    def answer_then_hang_up(request: Request) -> Reply:
        return Reply(accept_all(request).data, close=True)  # and no `connection: close`

    async with RawServer(answer_then_hang_up) as server, http_driver(server.url) as driver:
        for n in range(1, 4):
            results = await driver.send_batch(messages(2))
            assert {r.status for r in results} == {"accepted"}
            await wait_until(lambda n=n: server.closed == n)
        stats = pool_of(driver)
        assert (stats.connects, stats.reuses, stats.stale) == (3, 0, 2)
    assert len(server.requests) == 3  # each request reached the gateway once


async def test_bytes_past_the_answer_or_both_framings_close_the_connection() -> None:
    def junk_after(request: Request) -> Reply:
        return Reply((accept_all(request).data or b"") + b"HTTP/1.1 200 OK\r\n")

    def chunked_and_length(request: Request) -> Reply:
        # h11 reads it as chunked (RFC 9112: Transfer-Encoding wins) and would keep the
        # connection; a sign of request smuggling: the driver drops it.
        body = results_body(request)
        return Reply(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n"
                     b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))

    for handler in (junk_after, chunked_and_length):
        async with RawServer(handler) as server, http_driver(server.url) as driver:
            for _ in range(2):
                results = await driver.send_batch(messages(3))
                assert [r.provider_id for r in results] == ["p-m0", "p-m1", "p-m2"]
            stats = pool_of(driver)
            assert (stats.connects, stats.reuses, stats.open) == (2, 0, 0)
        assert server.connections == 2


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
        with pytest.raises(TransientGatewayError, match="closed") as caught:
            await driver.send_batch(messages(1))
        assert caught.value.unsent


# --- none submitted twice: 3,000 single-message requests to a stdlib threaded server ---------


# A backlog of 128 takes the opening burst of 64 connections; see the backlog-1 test below.
SINK_CASES = {
    "keep-alive": {},
    "connection-close-sometimes": {"close_every": 7},
}


@pytest.mark.parametrize("case", list(SINK_CASES))
async def test_every_message_is_accepted_exactly_once_by_a_threaded_stdlib_server(
    case: str,
) -> None:
    with Sink(request_queue_size=128, **SINK_CASES[case]).running() as sink:
        async with http_driver(sink.url, batch_size=1, max_connections=64) as driver:
            batch = messages(3000)
            results = await driver.send_batch(batch)
            assert [r.id for r in results] == [m.id for m in batch]
            assert {r.status for r in results} == {"accepted"}
            stats = pool_of(driver)
    assert sink.accepted == dict.fromkeys((m.id for m in batch), 1)
    assert sink.requests == 3000
    assert stats.stale == 0
    assert stats.connects <= 64 + sink.requests // SINK_CASES[case].get("close_every", 10**9)


@pytest.mark.slow
async def test_a_listen_backlog_of_one_loses_no_message_silently_and_sends_none_twice() -> None:
    # 64 connections at once into a backlog of 1: the kernel drops handshakes, and some
    # connections the client sees open the server never accepts (Linux, SYN cookies): a
    # request written there gets no answer, and may not be sent again. Each message is
    # accepted once, reported unknown (written, no answer: the gateway may have it), or
    # retry (never written: the gateway has not).
    with Sink(request_queue_size=1, close_every=50).running() as sink:
        async with http_driver(sink.url, batch_size=1, max_connections=64, timeout=2) as d:
            batch = messages(3000)
            results = await d.send_batch(batch)
    assert [r.id for r in results] == [m.id for m in batch]
    by_status: dict[str, set[str]] = {}
    for r in results:
        by_status.setdefault(r.status, set()).add(r.id)
    assert by_status.keys() <= {"accepted", "unknown", "retry"}
    assert set(sink.accepted.values()) == {1}  # none twice
    accepted = by_status.get("accepted", set())
    assert accepted <= sink.accepted.keys() <= accepted | by_status.get("unknown", set())
    assert len(accepted) > 2000
    assert all((r.error or "").startswith("timeout: ") for r in results if r.status == "unknown")


@pytest.mark.slow
async def test_connections_the_server_dropped_while_idle_are_never_written_to() -> None:
    # The server drops a connection idle for 50 ms. The engine's way (calls of
    # max_connections messages), with a pause after each call that outlasts it: every
    # kept-alive connection is found closed when next taken, and a new one carries the request.
    with Sink(idle_timeout=0.05, request_queue_size=128).running() as sink:
        async with http_driver(sink.url, batch_size=1, max_connections=64) as driver:
            batch = messages(3000)
            results: list[SendResult] = []
            for start in range(0, len(batch), 64):
                results += await driver.send_batch(batch[start : start + 64])
                await wait_until(lambda: sink.closed == sink.connections)
            assert {r.status for r in results} == {"accepted"}
            stats = pool_of(driver)
    assert sink.accepted == dict.fromkeys((m.id for m in batch), 1)
    assert stats.connects + stats.reuses == 3000
    assert stats.stale > 2000  # about 64 per pause


# --- TLS ---------------------------------------------------------------------------------------


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for a self-signed certificate of 127.0.0.1."""
    pytest.importorskip("cryptography.x509")
    cert_pem, key_pem = self_signed("herald test")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "cert.pem").write_bytes(cert_pem)
        (Path(tmp) / "key.pem").write_bytes(key_pem)
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(Path(tmp) / "cert.pem", Path(tmp) / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client


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
    ({"url": "http://gw", "headers": {"X-A": "1\x01"}}, "control character"),
    ({"url": "http://gw", "headers": {"X-A": "é"}}, "non-ASCII"),
    ({"url": "http://gw", "headers": {"X-A": " 1"}}, "leading or trailing spaces"),
    ({"url": "http://gw", "headers": {"Bad Name": "1"}}, "not an HTTP token"),
    ({"url": "http://gw", "retries": 3}, "unknown field `retries`"),
])
def test_bad_options_are_refused_with_the_reason(options: dict[str, Any], message: str) -> None:
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(options, HttpConfig)
    assert message in str(caught.value)
