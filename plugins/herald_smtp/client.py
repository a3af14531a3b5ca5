"""One SMTP session on anyio streams (asyncio and trio): the I/O around ``protocol``.

:func:`open_session` connects (TLS at once for ``security = "tls"``), reads the greeting,
says EHLO (HELO when EHLO is refused), upgrades with STARTTLS (``security = "starttls"``,
then EHLO again: RFC 3207 says to forget what was offered before), and authenticates
(AUTH PLAIN, else LOGIN). What goes wrong there is a ``GatewayError``: transient (and
``unsent``) for no connection, a TLS failure, a 4xx; permanent for a 5xx greeting or
refused credentials. :meth:`Session.run` then drives a ``protocol.Transactions``.

Time: every wait (connecting, a reply, a write) is bounded by ``timeout`` seconds, in a
cancel scope here, the one place that reads the clock; a session that timed out or broke
is closed, never reused (its replies would be out of step).
"""

from __future__ import annotations

import base64
import math
import select
import socket
import ssl
from collections import deque
from collections.abc import Callable
from typing import Literal

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSStream

from engine.errors import PermanentGatewayError, TransientGatewayError
from herald_smtp.protocol import (
    Extensions,
    Reply,
    ReplyParser,
    SmtpProtocolError,
    Transactions,
    auth_plain,
    command,
)

__all__ = ["ConnectOptions", "Lost", "Session", "open_session"]

_READ_SIZE = 65536
#: Seconds the server's answer to QUIT is waited for.
_QUIT_WAIT = 1.0
_FAILURES = (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError, ssl.SSLError)
Security = Literal["starttls", "tls", "none"]


class Lost(Exception):
    """The session ended under the client: the server hung up, the connection broke, a
    reply did not come within the timeout (``timeout`` True) or was not SMTP."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        self.timeout = timeout
        super().__init__(message)


class ConnectOptions:
    """How to reach and greet the server (made once per driver from its options)."""

    __slots__ = ("helo", "host", "password", "port", "security", "ssl_context", "timeout",
                 "username", "where")

    def __init__(
        self, *, host: str, port: int, security: Security, ssl_context: ssl.SSLContext | None,
        helo: str, username: str, password: str, timeout: float | None, where: str,
    ) -> None:
        self.host = host
        self.port = port
        self.security = security
        self.ssl_context = ssl_context
        self.helo = helo
        self.username = username
        self.password = password
        self.timeout = timeout
        #: How errors name the gateway: ``gateway 'mx' at smtp.example.com:587``.
        self.where = where


class Session:
    """An open, greeted (and authenticated) SMTP session."""

    def __init__(self, stream: ByteStream, options: ConnectOptions) -> None:
        self.stream = stream
        self.options = options
        self.parser = ReplyParser()
        self.extensions = Extensions()
        self._replies: deque[Reply] = deque()
        self._socket: socket.socket | None = stream.extra(SocketAttribute.raw_socket, None)
        #: Transactions that ended with the server's answer on this session.
        self.transactions = 0
        #: When it went back to the pool (``anyio.current_time``).
        self.idle_since = 0.0
        #: It can carry more (not broken, not closed by the server).
        self.usable = True
        self.writes = 0
        self._scope: anyio.CancelScope | None = None
        self._timeout = options.timeout if options.timeout else math.inf
        self._doing = "reply"

    # -- replies and writes ------------------------------------------------------------

    async def reply(self) -> Reply:
        """The next reply. Raises ``Lost``."""
        replies = self._replies
        while not replies:
            self._doing = "reply"
            try:
                scope = self._scope
                if scope is not None:  # inside run(): one scope, its deadline moved on
                    scope.deadline = anyio.current_time() + self._timeout
                    data = await self.stream.receive(_READ_SIZE)
                else:
                    with anyio.fail_after(self.options.timeout):
                        data = await self.stream.receive(_READ_SIZE)
            except TimeoutError:
                raise self._timed_out() from None
            except anyio.EndOfStream:
                self.usable = False
                raise Lost("the server closed the connection") from None
            except _FAILURES as err:
                self.usable = False
                raise Lost(describe(err)) from err
            try:
                replies.extend(self.parser.feed(data))
            except SmtpProtocolError as err:
                self.usable = False
                raise Lost(str(err)) from err
        return replies.popleft()

    async def send(self, data: bytes) -> None:
        """Write ``data``. Raises ``Lost``."""
        self.writes += 1
        self._doing = "write"
        try:
            scope = self._scope
            if scope is not None:
                scope.deadline = anyio.current_time() + self._timeout
                await self.stream.send(data)
            else:
                with anyio.fail_after(self.options.timeout):
                    await self.stream.send(data)
        except TimeoutError:
            raise self._timed_out() from None
        except _FAILURES as err:
            self.usable = False
            raise Lost(describe(err)) from err

    def _timed_out(self) -> Lost:
        self.usable = False
        if self._doing == "write":
            return Lost(f"could not write within {self.options.timeout:g} s", timeout=True)
        return Lost(f"no reply within {self.options.timeout:g} s", timeout=True)

    async def ask(self, data: bytes) -> Reply:
        await self.send(data)
        return await self.reply()

    # -- transactions --------------------------------------------------------------------

    async def run(self, tx: Transactions, refill: Callable[[Transactions], None]) -> None:
        """Drive ``tx`` until it is done; ``refill(tx)`` is called before each write to add
        the next envelopes (so one is always ready to go with the previous content).
        Raises ``Lost`` (``tx`` keeps how far it got: call ``tx.abandon()``)."""
        # One cancel scope for the whole run, its deadline moved before each wait: a scope
        # per read and write cost about 20 µs a message.
        with anyio.CancelScope() as scope:
            self._scope = scope
            try:
                await self._run(tx, refill)
            finally:
                self._scope = None
        if scope.cancelled_caught:
            raise self._timed_out()
        if tx.closing:
            self.usable = False

    async def _run(self, tx: Transactions, refill: Callable[[Transactions], None]) -> None:
        while True:
            refill(tx)
            if tx.done:
                break
            out = tx.data_to_send()
            if out:
                await self.send(out)
            if tx.expecting:
                tx.receive(await self.reply())
            elif not out:
                break

    def closed_by_peer(self) -> bool:
        """The socket is readable while nothing is owed: the server closed it (an idle
        timeout, often with a 421 first), or sent bytes nobody asked for."""
        if self._replies or self.parser.pending:
            return True
        sock = self._socket
        if sock is None:
            return False
        fd = sock.fileno()
        if fd < 0:
            return True
        poll = getattr(select, "poll", None)
        if poll is not None:
            poller = poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])

    async def quit(self) -> None:
        """Say QUIT (waiting a moment for the 221) and close."""
        try:
            if self.usable:
                with anyio.move_on_after(min(self.options.timeout or _QUIT_WAIT, _QUIT_WAIT)):
                    await self.ask(b"QUIT\r\n")
        except Lost:
            pass
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        self.usable = False
        await anyio.aclose_forcefully(self.stream)


async def open_session(options: ConnectOptions) -> Session:
    """A session ready for transactions (see the module docstring)."""
    where = options.where
    tls_now = options.security == "tls"
    context = options.ssl_context
    try:
        with anyio.fail_after(options.timeout):
            if tls_now:
                assert context is not None
                stream: ByteStream = await anyio.connect_tcp(
                    options.host, options.port, tls=True, ssl_context=context,
                    tls_hostname=options.host, tls_standard_compatible=False)
            else:
                stream = await anyio.connect_tcp(options.host, options.port)
    except TimeoutError:
        raise TransientGatewayError(
            f"{where}: cannot connect within {options.timeout:g} s", unsent=True) from None
    except _FAILURES as err:
        what = "TLS failed" if _is_tls(err) else "cannot connect"
        raise TransientGatewayError(f"{where}: {what}: {describe(err)}", unsent=True) from err
    session = Session(stream, options)
    try:
        await _greet(session, tls_now)
    except BaseException:
        await session.aclose()
        raise
    return session


async def _greet(session: Session, tls: bool) -> None:
    options = session.options
    where = options.where
    try:
        greeting = await session.reply()
        _expect(greeting, 220, where, "greeting")
        await _hello(session)
        if options.security == "starttls":
            if not session.extensions.starttls:
                raise TransientGatewayError(
                    f"{where}: the server does not offer STARTTLS (a misconfigured server, or"
                    " someone on the way removing it): nothing sent in plaintext; set"
                    ' security = "none" to send without TLS', unsent=True)
            _expect(await session.ask(b"STARTTLS\r\n"), 220, where, "STARTTLS")
            if session.parser.pending or session._replies:
                # Bytes sent before the TLS handshake must not count as after it.
                raise TransientGatewayError(f"{where}: the server sent data after its 220 to"
                                            " STARTTLS", unsent=True)
            assert options.ssl_context is not None
            try:
                with anyio.fail_after(options.timeout):
                    session.stream = await TLSStream.wrap(
                        session.stream, hostname=options.host, ssl_context=options.ssl_context,
                        standard_compatible=False)
            except TimeoutError:
                raise TransientGatewayError(
                    f"{where}: TLS failed: no handshake within {options.timeout:g} s",
                    unsent=True) from None
            except _FAILURES as err:
                raise TransientGatewayError(f"{where}: TLS failed: {describe(err)}",
                                            unsent=True) from err
            session.parser = ReplyParser()
            await _hello(session)
        if options.username:
            await _authenticate(session)
    except Lost as err:
        raise TransientGatewayError(f"{where}: {err}", unsent=True) from err


def _address_literal(session: Session) -> str:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]``: this end's address, for EHLO when the
    machine has no FQDN (RFC 5321 4.1.4)."""
    address = session.stream.extra(SocketAttribute.local_address, None)
    host = str(address[0]) if isinstance(address, tuple) else "127.0.0.1"
    return f"[IPv6:{host}]" if ":" in host else f"[{host}]"


async def _hello(session: Session) -> None:
    options = session.options
    name = options.helo or _address_literal(session)
    reply = await session.ask(command("EHLO", name))
    if reply.code == 250:
        session.extensions = Extensions.parse(reply)
        return
    if reply.code in (500, 502):  # an old server: HELO, without extensions
        reply = await session.ask(command("HELO", name))
        session.extensions = Extensions()
    _expect(reply, 250, options.where, "EHLO")


async def _authenticate(session: Session) -> None:
    options = session.options
    where = options.where
    offered = session.extensions.auth
    if "PLAIN" in offered:
        reply = await session.ask(auth_plain(options.username, options.password))
    elif "LOGIN" in offered:
        reply = await session.ask(b"AUTH LOGIN\r\n")
        for secret in (options.username, options.password):
            if reply.code != 334:
                break
            reply = await session.ask(base64.b64encode(secret.encode()) + b"\r\n")
    else:
        shown = " ".join(sorted(offered)) or "none"
        raise PermanentGatewayError(
            f"{where}: the server offers no AUTH PLAIN or LOGIN (offers: {shown}); a"
            " username is set", code="auth")
    if reply.code == 235:
        return
    if 400 <= reply.code < 500:
        raise TransientGatewayError(f"{where}: AUTH: {reply}", unsent=True,
                                    retry_after=1.0 if reply.code == 421 else None)
    raise PermanentGatewayError(f"{where}: AUTH refused: {reply}", code=str(reply.code))


def _expect(reply: Reply, code: int, where: str, what: str) -> None:
    if reply.code == code:
        return
    if reply.code < 500:
        raise TransientGatewayError(f"{where}: {what}: {reply}", unsent=True,
                                    retry_after=1.0 if reply.code == 421 else None)
    raise PermanentGatewayError(f"{where}: {what}: {reply}", code=str(reply.code))


def _is_tls(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, ssl.SSLError):
            return True
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return False


def describe(err: BaseException) -> str:
    """A short account of a transport failure (the OS's words for the errno)."""
    cause = err.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        cause = cause.exceptions[0]
    if isinstance(err, anyio.BrokenResourceError) and cause is not None:
        err = cause
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {err.verify_message}"
    if isinstance(err, ssl.SSLError):
        return err.reason or str(err)
    if isinstance(err, anyio.BrokenResourceError):
        return "the connection broke"
    if isinstance(err, anyio.ClosedResourceError):
        return "the connection was closed"
    if isinstance(err, OSError):
        if isinstance(cause, OSError) and err.errno is None:
            err = cause
        text = err.strerror if isinstance(err, socket.gaierror) else None
        if text is None and isinstance(err, OSError) and isinstance(err.errno, int) \
                and err.errno > 0:
            import os

            text = os.strerror(err.errno)
        text = text or str(err) or type(err).__name__
        return text[:1].lower() + text[1:]
    return str(err) or type(err).__name__
