"""The ``smtp`` driver: email through an SMTP relay, MTA or provider, DKIM-signed.

Options (``[gateways.NAME]``)::

    driver = "smtp"
    host = "smtp.example.com"
    port = 25                          # 465 means TLS from the first byte
    security = "starttls"              # "starttls" (default; "tls" on port 465) | "tls" | "none"
    username = ""                      # AUTH PLAIN (else LOGIN), only ever over TLS or loopback
    password = ""
    helo = ""                          # default: this machine's FQDN (else its address literal)
    connections = 4                    # sessions open at once (the pool)
    messages_per_connection = 100      # then QUIT and a new session; 0 = no limit
    timeout = 30.0                     # seconds for connecting and for each reply; 0 = none
    ca_file = ""                       # PEM CAs that vouch for the server (a private CA)
    tls_verify = true                  # false: encrypt without checking the certificate
    dkim_selector = ""                 # with dkim_key: sign every message
    dkim_key = "dkim/news.pem"         # PEM private key (RSA >= 1024 bits, or Ed25519),
                                       #   relative to the config file's directory
    dkim_domain = ""                   # d=; default: the domain of each message's From
    dkim_headers = ["From", "Reply-To", "To", "Subject", "Date", "Message-ID",
                    "MIME-Version", "Content-Type", "List-Unsubscribe",
                    "List-Unsubscribe-Post"]
    dkim_canonicalization = "relaxed/relaxed"

**Security.** ``starttls`` requires the server to offer STARTTLS and upgrades before
anything else is said; a server that does not offer it gets nothing (a transient, unsent
error: a stripped STARTTLS is what an attacker on the way would do), so a plaintext relay
must be named with ``security = "none"``. ``tls`` is TLS from the first byte (SMTPS, port
465). Certificates are checked against the system's CAs (plus ``ca_file``) and the host
name, unless ``tls_verify = false``. A ``username`` with ``security = "none"`` is refused
by the config unless ``host`` is a loopback address: the password would travel in the
clear.

**Sending.** Each message's ``mime`` (the engine's RFC 5322 bytes) gets its line ends
checked (CRLF only), a ``DKIM-Signature`` field prepended when ``dkim_selector`` and
``dkim_key`` are set (``herald_smtp.signing``), and goes as ``MAIL FROM:<sender>`` (the
return path), ``RCPT TO:<to>``, ``DATA``: one recipient per transaction. With PIPELINING
(RFC 2920) the three commands go in one write, with the previous message's content: one
round trip per message. ``BODY=8BITMIME`` and ``SMTPUTF8`` are added when the message or
the addresses need them and the server offers them (a message that needs them where the
server does not is rejected without being sent), ``SIZE=`` when the server states a limit.
``connections`` sessions share a batch, each carrying ``messages_per_connection``
transactions before QUIT; idle sessions are kept for the next batch (10 s at most, and
dropped when the server has closed them). A batch is at most ``connections`` ×
``messages_per_connection`` messages (``max_batch``).

**Answers**::

    answer                                        result
    250 after the content                         accepted, provider_id = the queue id in
                                                    the text ("queued as X", "id=X"), if any
    5xx to MAIL, RCPT, DATA or the content        rejected, error = "550 5.1.1 ..." (the reply)
    421, 451, 452                                 retry, retry_after = 1 s (throttled: slows
                                                    the whole sender); 421 ends the session
    other 4xx                                     retry, error = the reply
    connection lost after the content was written unknown, error = "connection_lost: ..."
    no reply within timeout after the content     unknown, error = "timeout: ..."
    connection lost before the content            sent again on another session, once;
                                                    else retry
    no connection, TLS failure, 4xx greeting      TransientGatewayError (unsent) for the batch
    5xx greeting, 535 and other refused AUTH      PermanentGatewayError (code = the reply's)

SMTP has no idempotency key: the driver is not idempotent (``unknown`` messages may have
been taken).
"""

from __future__ import annotations

import email.utils
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Final, Literal

import anyio
import msgspec

from engine.drivers import (
    Bounce,
    Capabilities,
    Driver,
    DriverConfig,
    OutboundMessage,
    SendResult,
)
from engine.errors import (
    ConfigError,
    ConfigProblem,
    GatewayError,
    InputError,
    PermanentGatewayError,
    TransientGatewayError,
)
from engine.hookspecs import hookimpl
from herald_smtp.client import ConnectOptions, Lost, Session, open_session
from herald_smtp.protocol import (
    Envelope,
    Extensions,
    Outcome,
    SmtpProtocolError,
    Transactions,
    data_payload,
    mail_from,
    normalise_line_ends,
    queue_id,
    rcpt_to,
)
from herald_smtp.signing import DEFAULT_HEADERS, Canonicalization, DkimSigner, load_key

__all__ = ["SmtpConfig", "SmtpDriver", "SmtpStatistics"]

#: Seconds a throttling answer (421, 451, 452) asks the sender to wait.
THROTTLE: Final = 1.0
#: Seconds an idle session is kept for the next batch.
IDLE_EXPIRY: Final = 10.0
_SELECTOR: Final = r"^([A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*)?$"
_FROM: Final = re.compile(rb"(?im)^from:[ \t]*(.*(?:\r\n[ \t].*)*)")


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain") or host.lower().endswith(
            ".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class SmtpConfig(DriverConfig, kw_only=True):
    """Options of the ``smtp`` driver (see the module docstring)."""

    host: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^\s/]+$")]
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 25
    #: "starttls" by default, "tls" when ``port`` is 465.
    security: Literal["starttls", "tls", "none"] | None = None
    username: str = ""
    password: str = ""
    helo: Annotated[str, msgspec.Meta(pattern=r"^[^\s]*$")] = ""
    connections: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 4
    messages_per_connection: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 100
    timeout: Annotated[float, msgspec.Meta(ge=0, le=3600)] = 30.0
    ca_file: str = ""
    tls_verify: bool = True
    dkim_selector: Annotated[str, msgspec.Meta(pattern=_SELECTOR)] = ""
    dkim_domain: str = ""
    dkim_key: str = ""
    dkim_headers: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_HEADERS))
    dkim_canonicalization: Canonicalization = "relaxed/relaxed"

    def __post_init__(self) -> None:
        if self.security is None:
            self.security = "tls" if self.port == 465 else "starttls"
        if bool(self.username) != bool(self.password):
            raise ValueError("give both username and password, or neither")
        if self.username and self.security == "none" and not _is_loopback(self.host):
            raise ValueError(
                'username: AUTH with security = "none" would send the password in the'
                ' clear; use "starttls" or "tls" (plaintext AUTH is allowed on loopback only)')
        if bool(self.dkim_selector) != bool(self.dkim_key):
            raise ValueError("give both dkim_selector and dkim_key to sign, or neither")
        if self.dkim_domain:
            try:
                self.dkim_domain = self.dkim_domain.encode("idna").decode("ascii").lower()
            except UnicodeError:
                raise ValueError(f"dkim_domain: {self.dkim_domain!r} is not a domain") from None

    @property
    def tls_mode(self) -> Literal["starttls", "tls", "none"]:
        return self.security or "starttls"


class SmtpStatistics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot: sessions open and idle, connects, reuses, transactions answered, writes."""

    open: int
    idle: int
    connects: int
    reuses: int
    transactions: int
    writes: int


class _Cursor:
    """The messages of one batch, taken one at a time by the sessions that send them; a
    message whose content never left a session that broke is put back, once."""

    def __init__(self, n: int) -> None:
        self._next = 0
        self._n = n
        self._back: list[int] = []
        self._retaken: set[int] = set()

    def take(self) -> int | None:
        if self._back:
            return self._back.pop()
        if self._next < self._n:
            self._next += 1
            return self._next - 1
        return None

    def put_back(self, i: int, *, again: bool = False) -> bool:
        """Give ``i`` to the next session; False when it was given back before (unless
        ``again``: the session it went to was found closed before it could say a word)."""
        if i in self._retaken and not again:
            return False
        self._retaken.add(i)
        self._back.append(i)
        return True

    @property
    def empty(self) -> bool:
        return not self._back and self._next >= self._n


class SmtpDriver(Driver):
    """Sends email over SMTP sessions (see the module docstring)."""

    name = "smtp"
    Config = SmtpConfig
    capabilities = Capabilities(channel="email", max_batch=400)

    def __init__(
        self,
        config: SmtpConfig,
        *,
        gateway: str = "",
        base_dir: Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(config, gateway=gateway, base_dir=base_dir)
        self._config = config
        per = config.messages_per_connection
        self.capabilities = Capabilities(
            channel="email", max_batch=config.connections * (per or 100), idempotent=False)
        name = f"gateway {gateway!r}" if gateway else "the gateway"
        #: How errors name the gateway: ``gateway 'mx' at smtp.example.com:587``.
        self.where = f"{name} at {config.host}:{config.port}"
        security = config.tls_mode
        if security != "none" and ssl_context is None:
            ssl_context = self._ssl_context()
        self._options = ConnectOptions(
            host=config.host, port=config.port, security=security, ssl_context=ssl_context,
            helo=config.helo, username=config.username, password=config.password,
            timeout=config.timeout or None, where=self.where)
        self._helo_known = bool(config.helo)
        self._signer = self._make_signer() if config.dkim_key else None
        self._clock = clock
        self._from_domains: dict[bytes, str] = {}
        self._slots = anyio.Semaphore(config.connections, fast_acquire=True)
        self._idle: list[Session] = []
        self._open = 0
        self._connects = 0
        self._reuses = 0
        self._transactions = 0
        self._writes = 0
        self._closed = False

    # -- set-up --------------------------------------------------------------------------

    def _path(self, option: str, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def _problem(self, option: str, path: Path, message: str) -> ConfigError:
        where = f"gateways.{self.gateway}.{option}" if self.gateway else option
        return ConfigError([ConfigProblem(str(path), where, message)])

    def _ssl_context(self) -> ssl.SSLContext:
        config = self._config
        context = ssl.create_default_context()
        if config.ca_file:
            path = self._path("ca_file", config.ca_file)
            try:
                context.load_verify_locations(cafile=str(path))
            except (OSError, ssl.SSLError) as err:
                raise self._problem("ca_file", path, f"cannot load the CAs: {err}") from None
        if not config.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _make_signer(self) -> DkimSigner:
        config = self._config
        path = self._path("dkim_key", config.dkim_key)
        try:
            pem = path.read_bytes()
        except OSError as err:
            raise self._problem("dkim_key", path, f"cannot read the key: {err.strerror}"
                                ) from None
        try:
            key = load_key(pem, "dkim_key")
            return DkimSigner(selector=config.dkim_selector, key=key,
                              headers=config.dkim_headers,
                              canonicalization=config.dkim_canonicalization)
        except InputError as err:
            raise self._problem("dkim_key", path, str(err)) from None

    @property
    def signer(self) -> DkimSigner | None:
        """The DKIM signer (None when the gateway does not sign)."""
        return self._signer

    def statistics(self) -> SmtpStatistics:
        return SmtpStatistics(open=self._open, idle=len(self._idle), connects=self._connects,
                              reuses=self._reuses, transactions=self._transactions,
                              writes=self._writes)

    # -- sending -------------------------------------------------------------------------

    async def send_batch(self, messages: Sequence[OutboundMessage]) -> list[SendResult]:
        if not messages:
            return []
        if self._closed:
            raise TransientGatewayError(f"{self.where}: the driver is closed", unsent=True)
        if not self._helo_known:
            self._options.helo = await anyio.to_thread.run_sync(_fqdn)
            self._helo_known = True
        results: list[SendResult | None] = [None] * len(messages)
        cursor = _Cursor(len(messages))
        errors: list[GatewayError] = []
        now = self._clock()
        async with anyio.create_task_group() as tg:
            for _ in range(min(self._config.connections, len(messages))):
                tg.start_soon(self._worker, messages, cursor, results, errors, now)
        missing = [i for i, r in enumerate(results) if r is None]
        if missing:
            error = errors[0] if errors else TransientGatewayError(
                f"{self.where}: no session could send these messages", unsent=True)
            if len(missing) == len(messages):
                raise error
            for i in missing:
                results[i] = _from_error(messages[i].id, error)
        return [r for r in results if r is not None]

    async def _worker(
        self, messages: Sequence[OutboundMessage], cursor: _Cursor,
        results: list[SendResult | None], errors: list[GatewayError], now: float,
    ) -> None:
        limit = self._config.messages_per_connection
        async with self._slots:
            lost_before = False
            while not cursor.empty:
                try:
                    session, fresh = await self._checkout()
                except GatewayError as err:
                    errors.append(err)
                    return
                tx = Transactions(pipelining=session.extensions.pipelining)
                taken: list[int] = []
                budget = (limit - session.transactions) if limit else 1 << 62

                def refill(tx: Transactions, session: Session = session,
                           taken: list[int] = taken, budget: int = budget) -> None:
                    while tx.waiting == 0 and not tx.closing and len(taken) < budget:
                        i = cursor.take()
                        if i is None:
                            return
                        prepared = self._envelope(messages[i], session.extensions, now)
                        if isinstance(prepared, SendResult):
                            results[i] = prepared
                            continue
                        taken.append(i)
                        tx.add(prepared)

                lost: Lost | None = None
                writes = session.writes
                try:
                    await session.run(tx, refill)
                except Lost as err:
                    lost = err
                    tx.abandon()
                except BaseException:
                    self._writes += session.writes - writes
                    await self._discard(session)
                    raise
                self._writes += session.writes - writes
                answered = sum(1 for o in tx.outcomes if o is not None and o.reply is not None)
                session.transactions += len(taken)
                self._transactions += answered
                # A kept session the server had closed: nothing of this went, say again.
                stale = lost is not None and not fresh and answered == 0
                for k, i in enumerate(taken):
                    outcome = tx.outcomes[k]
                    assert outcome is not None
                    if outcome.kind == "unsent" and cursor.put_back(i, again=stale):
                        continue
                    results[i] = self._result(messages[i].id, outcome, lost)
                if lost is not None or tx.closing or not session.usable:
                    await self._discard(session, polite=tx.closing)
                    if tx.closing:  # the server asked us to slow down: no new session
                        errors.append(TransientGatewayError(
                            f"{self.where}: {tx.closing_reply}", retry_after=THROTTLE,
                            unsent=True))
                        return
                    if stale or not lost_before:  # one new session after a loss
                        lost_before = lost_before or not stale
                        continue
                    errors.append(TransientGatewayError(f"{self.where}: {lost}",
                                                        unsent=True))
                    return
                await self._checkin(session)

    def _envelope(
        self, m: OutboundMessage, ext: Extensions, now: float
    ) -> Envelope | SendResult:
        """The envelope of ``m`` (signed), or its result when it cannot be sent here."""
        if m.mime is None:
            return SendResult(m.id, "rejected", error="not an email: the smtp driver sends"
                              " messages with mime")
        try:
            message = normalise_line_ends(m.mime)
            signer = self._signer
            if signer is not None:
                domain = self._config.dkim_domain or self._from_domain(message)
                message = signer.sign(message, domain=domain, now=now) + message
            params: list[str] = []
            if not (m.to.isascii() and m.sender.isascii()):
                if not ext.smtputf8:
                    return SendResult(m.id, "rejected", error=(
                        "local: a non-ASCII address and the server does not offer SMTPUTF8"))
                params.append("SMTPUTF8")
            if not message.isascii():
                if not ext.eightbitmime:
                    return SendResult(m.id, "rejected", error=(
                        "local: 8-bit content and the server does not offer 8BITMIME"))
                params.append("BODY=8BITMIME")
            if ext.size:
                if len(message) > ext.size:
                    return SendResult(m.id, "rejected", error=(
                        f"local: {len(message)} octets, the server takes at most {ext.size}"
                        " (SIZE)"))
                params.append(f"SIZE={len(message)}")
            mail_from(m.sender)  # an address a command cannot carry: refused here
            rcpt_to(m.to)
            return Envelope(m.sender, m.to, data_payload(message), " ".join(params))
        except (InputError, SmtpProtocolError) as err:
            return SendResult(m.id, "rejected", error=f"local: {err}")

    def _from_domain(self, message: bytes) -> str:
        head = message[: message.find(b"\r\n\r\n") + 2]
        found = _FROM.search(head)
        if found is None:
            raise InputError("no From field to take the DKIM domain from; set dkim_domain")
        raw = found[1]
        domain = self._from_domains.get(raw)
        if domain is None:
            value = raw.replace(b"\r\n", b"").decode("ascii", "replace")
            address = email.utils.parseaddr(value)[1]
            domain = address.rpartition("@")[2].lower()
            if not domain or "@" not in address:
                raise InputError(f"From: {value!r}: no address domain to sign for;"
                                 " set dkim_domain")
            if len(self._from_domains) > 1000:
                self._from_domains.clear()
            self._from_domains[raw] = domain
        return domain

    def _result(self, id: str, outcome: Outcome, lost: Lost | None) -> SendResult:
        reply = outcome.reply
        kind = outcome.kind
        if kind == "accepted":
            assert reply is not None
            return SendResult(id, "accepted", provider_id=queue_id(reply.text))
        if kind == "rejected":
            return SendResult(id, "rejected", error=str(reply))
        if kind == "retry":
            return SendResult(id, "retry", error=str(reply))
        if kind == "throttled":
            return SendResult(id, "retry", error=str(reply), retry_after=THROTTLE)
        reason = "timeout" if lost is not None and lost.timeout else "connection_lost"
        detail = f"{self.where}: {lost}" if lost is not None else self.where
        if kind == "unknown":
            return SendResult(id, "unknown", error=f"{reason}: {detail}")
        return SendResult(id, "retry", error=f"{detail} (before the message was sent)")

    # -- the pool ------------------------------------------------------------------------

    async def _checkout(self) -> tuple[Session, bool]:
        idle = self._idle
        now = anyio.current_time()
        while idle:
            session = idle.pop()
            if now - session.idle_since > IDLE_EXPIRY:
                await self._discard(session, polite=True)
            elif session.closed_by_peer():
                await self._discard(session)
            else:
                self._reuses += 1
                return session, False
        if self._closed:
            raise TransientGatewayError(f"{self.where}: the driver is closed", unsent=True)
        session = await open_session(self._options)
        self._open += 1
        self._connects += 1
        return session, True

    async def _checkin(self, session: Session) -> None:
        limit = self._config.messages_per_connection
        if self._closed or not session.usable or (limit and session.transactions >= limit):
            await self._discard(session, polite=True)
            return
        session.idle_since = anyio.current_time()
        self._idle.append(session)

    async def _discard(self, session: Session, *, polite: bool = False) -> None:
        self._open -= 1
        if polite:
            await session.quit()
        else:
            await session.aclose()

    async def aclose(self) -> None:
        """QUIT the idle sessions (those in use end with their batch)."""
        self._closed = True
        idle, self._idle = self._idle, []
        for session in idle:
            await self._discard(session, polite=True)

    def parse_bounces(self, body: bytes, headers: dict[str, str]) -> list[Bounce]:
        """A mail that came back to the return path, fed to ``POST
        /api/v1/inbound/{gateway}`` by the bounce mailbox: an RFC 3464 DSN or an RFC 5965
        ARF complaint (``engine.tracking.bounces``). The address it was delivered to (the
        VERP return path, which names the message) is the request's ``X-Original-To``
        header, as Postfix and Dovecot write it, when the mailbox passes it on."""
        # imported here: the report parser takes 95 ms to import (the email package,
        # email-validator), and every herald command loads every driver
        from engine.tracking.bounces import ENVELOPE_HEADERS, parse_report

        wanted = {h.lower() for h in ENVELOPE_HEADERS}
        envelope = next((v for k, v in headers.items() if k.lower() in wanted), None)
        return parse_report(body, envelope_to=envelope)


def _from_error(id: str, error: GatewayError) -> SendResult:
    if isinstance(error, TransientGatewayError):
        return SendResult(id, "retry", error=str(error), retry_after=error.retry_after)
    code = error.code if isinstance(error, PermanentGatewayError) else None
    return SendResult(id, "rejected", error=code or str(error))


def _fqdn() -> str:
    """This machine's FQDN for EHLO; "" (the session then uses its address literal) when
    the name has no dot (servers refuse such a name)."""
    name = socket.getfqdn()
    return name if "." in name and not name.startswith("localhost") else ""


@hookimpl
def herald_drivers() -> list[type[Driver]]:
    return [SmtpDriver]
