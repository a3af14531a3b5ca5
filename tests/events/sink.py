"""An HTTP sink for hooks' tests: an h11 server on anyio (asyncio or trio) that keeps every
request and answers as its ``handler`` says."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

import anyio
import anyio.abc
import h11


class Request(NamedTuple):
    target: str
    headers: dict[str, str]
    body: bytes


#: (status, body, seconds to wait before answering) for a request.
Handler = Callable[[Request], tuple[int, bytes, float]]


def ok(_: Request) -> tuple[int, bytes, float]:
    return 200, b"OK", 0.0


class Sink:
    """``async with Sink(handler) as sink``: serving on ``sink.url`` in the block."""

    def __init__(self, handler: Handler = ok) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.url = ""
        self._tg: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Sink:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        self.url = f"http://127.0.0.1:{port}/hook"
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(listener.serve, self._serve)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                head: h11.Request | None = None
                body = b""
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        try:
                            conn.receive_data(await stream.receive(65536))
                        except (anyio.EndOfStream, anyio.BrokenResourceError):
                            return
                    elif isinstance(event, h11.Request):
                        head = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                assert head is not None
                request = Request(head.target.decode(),
                                  {k.decode().lower(): v.decode() for k, v in head.headers},
                                  body)
                self.requests.append(request)
                status, answer, delay = self.handler(request)
                if delay:
                    await anyio.sleep(delay)
                data = conn.send(h11.Response(status_code=status, headers=[
                    (b"content-length", b"%d" % len(answer)),
                    (b"content-type", b"text/plain")])) or b""
                data += conn.send(h11.Data(data=answer)) or b""
                data += conn.send(h11.EndOfMessage()) or b""
                try:
                    await stream.send(data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()


class ThreadSink:
    """The same in a thread of its own (``http.server``), for tests whose loop is busy
    elsewhere (``herald`` commands run in-process, a ``herald serve`` subprocess):
    ``with ThreadSink(handler) as sink``."""

    def __init__(self, handler: Handler = ok) -> None:
        import threading

        self.handler = handler
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.url = ""

    def __enter__(self) -> ThreadSink:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self

        class Handle(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                request = Request(self.path, {k.lower(): v for k, v in self.headers.items()},
                                  body)
                with sink.lock:
                    sink.requests.append(request)
                status, answer, delay = sink.handler(request)
                if delay:
                    time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def taken(self) -> list[Request]:
        with self.lock:
            return list(self.requests)
