"""A herald-json gateway on 127.0.0.1 in a thread of the test process, scripted per request.

``Sink`` is a stdlib ``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1
keep-alive) that keeps a ledger of what it saw and accepted, so that it outlives the
``herald`` processes a test kills and can say afterwards what really reached the gateway:

- ``seen``: ids of every request that arrived whole (a body cut short is not seen);
- ``accepted``: acceptances per id. Idempotent, an id already accepted is answered
  ``accepted`` again with its first provider id and not counted again (``duplicates``
  counts those); not idempotent, every acceptance counts, so a count of 2 is an SMS sent
  twice;
- ``phones``: the phone of each accepted id; ``arrivals``: (monotonic time, segments) of
  each whole request, whatever its answer, for rate checks.

A ``script(n, messages)`` (``n`` counts requests from 0) returns the ``Action`` for each
request: answer (after ``delay``), answer a ``status`` (5xx, 429 with ``retry_after``),
``stall`` past the client's timeout, ``reset`` the connection (RST, ``SO_LINGER`` 0)
before or after answering (``linger`` seconds after; whatever the client wrote meanwhile
counts as seen, since a gateway may have read it). ``accept`` says whether the messages
are taken first, as a gateway that processes on arrival does. ``idle_close`` closes a
kept-alive connection that waited that long for its next request; ``backlog`` is the listen
queue (``request_queue_size``). Use as ``with Sink(...) as sink: ... sink.url ...``.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self

__all__ = ["ANSWER", "Action", "Script", "Sink"]


@dataclass(frozen=True)
class Action:
    """What the sink does with one request."""

    kind: Literal["answer", "status", "stall", "reset_before", "reset_after"] = "answer"
    #: Take (accept) the messages before doing the rest.
    accept: bool = True
    #: Seconds to wait before answering (``answer``, ``status``) or hanging up (``stall``).
    delay: float = 0.0
    #: For ``status``: the HTTP status, and the Retry-After header / body ``retry_after``.
    status: int = 500
    retry_after_header: str | None = None
    retry_after_body: float | None = None
    #: Answer with ``Connection: close`` and hang up (the next request needs a new one).
    close: bool = False
    #: For ``reset_after``: seconds between the answer and the reset.
    linger: float = 0.0


ANSWER = Action()
_IDS = re.compile(rb'"id"\s*:\s*"([^"]+)"')
Script = Callable[[int, Sequence[dict[str, Any]]], Action]


def _always_answer(n: int, messages: Sequence[dict[str, Any]]) -> Action:
    return ANSWER


@dataclass
class Ledger:
    seen: Counter[str] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)
    phones: dict[str, str] = field(default_factory=dict)
    provider_ids: dict[str, str] = field(default_factory=dict)
    arrivals: list[tuple[float, int]] = field(default_factory=list)
    duplicates: int = 0
    requests: int = 0
    connections: int = 0


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    sink: Sink

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients killed with -9 reset their connections: that is the point


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        sink = self.server.sink
        # a socket timeout on the wait for the next request = closing idle connections
        self.timeout = sink.idle_close
        with sink.lock:
            sink.ledger.connections += 1
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def log_error(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        sink = self.server.sink
        # when the request came, before its body is read and parsed: a handler thread that
        # waits for the GIL must not make requests look bunched that were not
        arrived = time.monotonic()
        try:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
        except (OSError, ValueError):
            self.close_connection = True
            return
        if len(body) < length:  # the client went away mid-request: nothing seen
            self.close_connection = True
            return
        try:
            messages = json.loads(body)["messages"]
        except (ValueError, KeyError, TypeError):
            self._send(400, {"error": "not herald-json"})
            return
        action, results = sink.take(messages, arrived)
        if action.kind in ("reset_before", "stall"):
            if action.kind == "stall":
                sink.stopping.wait(action.delay)
            self._reset()
            return
        if action.delay:
            sink.stopping.wait(action.delay)
        if action.close:
            self.close_connection = True
        if action.kind == "status":
            headers = {}
            if action.retry_after_header is not None:
                headers["Retry-After"] = action.retry_after_header
            payload: dict[str, Any] = {"error": "scripted"}
            if action.retry_after_body is not None:
                payload["retry_after"] = action.retry_after_body
            self._send(action.status, payload, headers)
        else:
            self._send(200, {"results": results})
        if action.kind == "reset_after":
            if action.linger:
                sink.stopping.wait(action.linger)
            sink.saw(self._pending())
            self._reset()

    def _pending(self) -> bytes:
        """What the client wrote meanwhile: it reached the gateway, so it may have been read."""
        data = b""
        with contextlib.suppress(OSError, ValueError, TypeError):
            self.connection.setblocking(False)
            data += self.rfile.read1(1 << 20) or b""
        with contextlib.suppress(OSError):
            data += self.connection.recv(1 << 20)
        return data

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        """Hang up with a RST (SO_LINGER 0), not a FIN."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.connection.close()


class Sink:
    """The scripted herald-json gateway (see the module docstring)."""

    def __init__(
        self,
        *,
        idempotent: bool = False,
        script: Script = _always_answer,
        idle_close: float | None = None,
        backlog: int = 128,
        log_path: Path | None = None,
    ) -> None:
        self.idempotent = idempotent
        self.script = script
        self.idle_close = idle_close
        self.backlog = backlog
        self.log_path = log_path
        self.ledger = Ledger()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._log: Any = None
        self._serial = 0

    @property
    def url(self) -> str:
        assert self._server is not None, "start the sink first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/send"

    def __enter__(self) -> Self:
        server_class = type("_Sized", (_Server,), {"request_queue_size": self.backlog})
        self._server = server_class(("127.0.0.1", 0), _Handler)
        self._server.sink = self
        if self.log_path is not None:
            self._log = self.log_path.open("a", encoding="utf-8")
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._log is not None:
            self._log.close()

    def saw(self, data: bytes) -> None:
        """Count as seen the ids in bytes that reached the gateway but were never read."""
        ids = _IDS.findall(data)
        with self.lock:
            for mid in ids:
                self.ledger.seen[mid.decode()] += 1

    def take(
        self, messages: Sequence[dict[str, Any]], arrived: float | None = None
    ) -> tuple[Action, list[dict[str, Any]]]:
        """Log a whole request (``arrived``: when it came, monotonic), decide its fate and,
        if it is taken, its results."""
        with self.lock:
            ledger = self.ledger
            n = ledger.requests
            ledger.requests += 1
            for m in messages:
                ledger.seen[m["id"]] += 1
            ledger.arrivals.append((time.monotonic() if arrived is None else arrived,
                                    sum(m["segments"] for m in messages)))
            action = self.script(n, messages)
            results: list[dict[str, Any]] = []
            if not action.accept or action.kind == "status":
                return action, results
            for m in messages:
                mid = m["id"]
                if self.idempotent and mid in ledger.provider_ids:
                    ledger.duplicates += 1
                    provider_id = ledger.provider_ids[mid]
                else:
                    self._serial += 1
                    provider_id = f"sink-{self._serial}"
                    ledger.provider_ids.setdefault(mid, provider_id)
                    ledger.accepted[mid] += 1
                    ledger.phones[mid] = m["to"]
                    if self._log is not None:
                        self._log.write(f"{mid}\t{m['to']}\n")
                        self._log.flush()
                results.append({"id": mid, "status": "accepted", "provider_id": provider_id,
                                "error": None})
            return action, results
