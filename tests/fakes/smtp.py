"""An SMTP sink on loopback: aiosmtpd, in a thread with its own asyncio loop, on a random port.

:class:`Sink` takes what a client sends and records it (``received``: the envelope and the
content exactly as aiosmtpd un-stuffed it; ``chunks``: the raw bytes as each read brought
them, to see which commands came in one write). It offers PIPELINING when told (aiosmtpd
reads pipelined commands but does not say so), STARTTLS with a given certificate, and AUTH
PLAIN/LOGIN for one user. It can be told to answer given recipients' RCPT or content with a
given reply (``rcpt_answers``, ``data_answers``: a 421 also closes the session, as servers
do), to hang up when the bytes it reads hold a marker (``hang_up_on``: mid-DATA), or never
to answer a recipient's content (``hang``). Nothing of the driver's code is used here.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.tls import self_signed

__all__ = ["Received", "Sink", "dkim_key", "gateway", "running", "tls_files"]


@dataclass
class Received:
    """One message the sink took."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    mail_options: list[str]


class _Handler:
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        self.sink.ehlos.append(hostname)
        session.host_name = hostname
        if self.sink.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, mail_options: list[str]) -> str:
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        answer = self.sink.rcpt_answers.get(address)
        if answer is not None:
            return self._answer(server, answer)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        sink = self.sink
        rcpt = envelope.rcpt_tos[0] if envelope.rcpt_tos else ""
        if rcpt in sink.hang:
            await asyncio.sleep(3600)
        answer = sink.data_answers.get(rcpt)
        if answer is not None:
            return self._answer(server, answer)
        content = envelope.original_content or b""
        with sink.lock:
            sink.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos),
                                          content, list(envelope.mail_options)))
            n = len(sink.received)
        return f"250 2.0.0 Ok: queued as Q{n:06d}"

    @staticmethod
    def _answer(server: SMTP, answer: str) -> str:
        if answer.startswith("421"):
            asyncio.get_running_loop().call_soon(server.transport.close)  # type: ignore[union-attr]
        return answer


class Sink:
    """See the module docstring. Start it with ``with Sink(...) as sink:``."""

    def __init__(
        self,
        *,
        pipelining: bool = True,
        tls_context: ssl.SSLContext | None = None,
        require_starttls: bool = False,
        auth: tuple[str, str] | None = None,
        auth_require_tls: bool = True,
        size: int = 0,
    ) -> None:
        self.pipelining = pipelining
        self.tls_context = tls_context
        self.require_starttls = require_starttls
        self.auth = auth
        self.auth_require_tls = auth_require_tls
        self.size = size
        self.received: list[Received] = []
        self.chunks: list[bytes] = []
        self.ehlos: list[str] = []
        self.auth_attempts: list[tuple[str, bytes]] = []
        self.rcpt_answers: dict[str, str] = {}
        self.data_answers: dict[str, str] = {}
        self.hang: set[str] = set()
        self.hang_up_on: bytes | None = None
        self.connections = 0
        self.lock = threading.Lock()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def __enter__(self) -> Sink:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(self._protocol, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        assert isinstance(auth_data, LoginPassword)
        self.auth_attempts.append((mechanism, auth_data.login))
        ok = self.auth is not None and (auth_data.login, auth_data.password) == (
            self.auth[0].encode(), self.auth[1].encode())
        return AuthResult(success=ok, handled=False)  # a failure answers 535

    def _protocol(self) -> SMTP:
        sink = self
        self.connections += 1

        class Server(SMTP):
            def data_received(self, data: bytes) -> None:
                sink.chunks.append(data)
                if sink.hang_up_on is not None and sink.hang_up_on in data:
                    assert self.transport is not None
                    self.transport.abort()
                    return
                super().data_received(data)

        kwargs: dict[str, Any] = {}
        if self.auth is not None:
            kwargs["authenticator"] = self._authenticate
        if self.size:
            kwargs["data_size_limit"] = self.size
        return Server(_Handler(self), hostname="sink.test", tls_context=self.tls_context,
                      require_starttls=self.require_starttls,
                      auth_require_tls=self.auth_require_tls, enable_SMTPUTF8=True,
                      decode_data=False, **kwargs)


def tls_files(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """(the server's context, the CA file a client trusts) for a self-signed certificate
    of 127.0.0.1, written in ``directory``."""
    cert_pem, key_pem = self_signed("herald smtp test")
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    return server, cert_path


def dkim_key(directory: Path) -> tuple[Path, bytes]:
    """(a 2048-bit RSA key's PEM file in ``directory``, its DNS TXT record)."""
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = directory / "dkim.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@contextlib.contextmanager
def running(**options: Any) -> Iterator[Sink]:
    with Sink(**options) as sink:
        yield sink


@contextlib.asynccontextmanager
async def gateway(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """The ``[gateways.NAME]`` options of an ``smtp`` gateway on a running sink (plaintext
    on loopback, pipelining, DKIM-signing with a fresh key)."""
    key, _ = dkim_key(tmp_path)
    with Sink() as sink:
        yield {"host": "127.0.0.1", "port": sink.port, "security": "none",
               "dkim_selector": "test", "dkim_key": key.name, "timeout": 10.0}

