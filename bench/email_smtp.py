"""Messages per second handed to a loopback SMTP sink by the ``smtp`` driver, DKIM-signed.

The sink (aiosmtpd, offering PIPELINING) runs in another process, so only the driver's
work is counted in this one: messages already built by ``engine.core.mime`` are sent in
batches of ``max_batch`` over ``--connections`` pipelined sessions of
``--per-connection`` messages each. Printed: messages/s (wall clock), the driver
process's CPU µs per message, and that split into DKIM signing (the same messages signed
again alone, timed the same way) and the rest (the SMTP exchange: envelopes, dot-stuffing,
writes, replies). ``--sign-only`` compares the driver's signer with ``dkim.sign``.

    python bench/email_smtp.py [-n 4000] [--key rsa|rsa1024|ed25519|none] [--backend trio]
                               [--sink-kind aiosmtpd|raw]
    python bench/email_smtp.py --sign-only
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

from engine.core.mime import MimeBuilder  # noqa: E402
from engine.drivers import OutboundMessage  # noqa: E402


class _RawSink(asyncio.Protocol):
    """A minimal SMTP server (EHLO, MAIL, RCPT, DATA, RSET, QUIT; PIPELINING): answers all
    the commands one read brought in one write, so the sink costs little CPU of its own."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""
        self.in_data = False
        self.n = 0
        transport.write(b"220 sink ESMTP\r\n")

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        out: list[bytes] = []
        while True:
            if self.in_data:
                if buffer.startswith(b".\r\n"):
                    end = 0
                else:
                    end = buffer.find(b"\r\n.\r\n")
                    if end < 0:
                        break
                    end += 2
                buffer = buffer[end + 3 :]
                self.in_data = False
                self.n += 1
                out.append(b"250 2.0.0 Ok: queued as R%d\r\n" % self.n)
                continue
            end = buffer.find(b"\r\n")
            if end < 0:
                break
            verb = buffer[:4].upper()
            buffer = buffer[end + 2 :]
            if verb == b"EHLO":
                out.append(b"250-sink\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                out.append(b"354 go\r\n")
                self.in_data = True
            elif verb == b"QUIT":
                out.append(b"221 bye\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            else:
                out.append(b"250 ok\r\n")
        self.buffer = buffer
        if out:
            self.transport.write(b"".join(out))


def sink(kind: str) -> None:
    """Run the sink: print its port, take mail until stdin closes."""
    from aiosmtpd.smtp import SMTP

    class Handler:
        n = 0

        async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
            session.host_name = hostname
            responses.insert(-1, "250-PIPELINING")
            return responses

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            Handler.n += 1
            return f"250 2.0.0 Ok: queued as B{Handler.n}"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            _RawSink if kind == "raw" else lambda: SMTP(Handler(), hostname="sink",
                                                        decode_data=False),
            "127.0.0.1", 0)
        print(server.sockets[0].getsockname()[1], flush=True)
        await loop.run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


def key_file(kind: str, directory: Path) -> Path | None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if kind == "none":
        return None
    key = (ed25519.Ed25519PrivateKey.generate() if kind == "ed25519"
           else rsa.generate_private_key(public_exponent=65537,
                                         key_size=1024 if kind == "rsa1024" else 2048))
    path = directory / f"{kind}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def build(n: int) -> list[OutboundMessage]:
    b = MimeBuilder(from_="ACME News <news@example.com>", domain="example.com")
    html = "<p>Hello {i}, here is <a href='https://t.example.com/abc{i}'>your offer</a>.</p>" * 8
    return [OutboundMessage(
        f"id-{i}", f"reader{i}@example.net", f"bounce+{i}@example.com", "",
        mime=b.build(to=f"reader{i}@example.net", subject=f"Offer {i} 🎉",
                     html=html.format(i=i), text=f"Hello {i}, your offer: https://t.example.com",
                     message_id=f"id-{i}", unsubscribe_url=f"https://t.example.com/u/{i}",
                     now=1_765_000_000.0))
        for i in range(n)]


def sign_only(n: int) -> None:
    import dkim
    from cryptography.hazmat.primitives import serialization

    from herald_smtp.signing import DkimSigner, load_key

    messages = [m.mime or b"" for m in build(n)]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("rsa", "rsa1024", "ed25519"):
            path = key_file(kind, Path(tmp))
            assert path is not None
            key = load_key(path.read_bytes(), kind)
            signer = DkimSigner(selector="s", key=key)
            t = time.process_time()
            for m in messages:
                signer.sign(m, domain="example.com", now=0.0)
            ours = (time.process_time() - t) / n * 1e6
            line = f"{kind:8} herald_smtp.signing {ours:8.0f} µs/message"
            if kind.startswith("rsa"):
                pem = key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.TraditionalOpenSSL,
                                        serialization.NoEncryption())
                few = messages[: max(20, n // 50)]
                t = time.process_time()
                for m in few:
                    dkim.sign(m, b"s", b"example.com", pem)
                theirs = (time.process_time() - t) / len(few) * 1e6
                line += f"   dkim.sign {theirs:8.0f} µs/message"
            print(line)


async def run(n: int, kind: str, connections: int, per: int, sink_kind: str,
              port: int) -> None:
    from herald_smtp import SmtpConfig, SmtpDriver

    messages = build(n)
    with tempfile.TemporaryDirectory() as tmp:
        key = key_file(kind, Path(tmp))
        options = {"host": "127.0.0.1", "port": port, "security": "none",
                   "connections": connections, "messages_per_connection": per}
        if key is not None:
            options |= {"dkim_selector": "s", "dkim_key": str(key)}
        driver = SmtpDriver(msgspec.convert(options, SmtpConfig), base_dir=Path(tmp))
        size = driver.capabilities.max_batch
        await driver.send_batch(messages[:size])  # warm up: sessions, caches
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        wall, cpu = time.perf_counter(), time.process_time()
        accepted = 0
        for i in range(0, n, size):
            results = await driver.send_batch(messages[i : i + size])
            accepted += sum(r.status == "accepted" for r in results)
        cpu = time.process_time() - cpu
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        user, system = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
        wall = time.perf_counter() - wall
        stats = driver.statistics()
        await driver.aclose()
        signing = 0.0
        if driver.signer is not None:
            t = time.process_time()
            for m in messages:
                driver.signer.sign(m.mime or b"", domain="example.com", now=0.0)
            signing = time.process_time() - t
    assert accepted == n, f"only {accepted} of {n} accepted"
    per_msg = cpu / n * 1e6
    print(f"key {kind}, {sink_kind} sink: {n} messages, {connections} sessions x {per}:"
          f" {n / wall:,.0f} msg/s (wall), {per_msg:.0f} µs CPU per message in the driver's"
          " process ="
          f" {signing / n * 1e6:.0f} signing + {per_msg - signing / n * 1e6:.0f} SMTP exchange;"
          f" {1e6 / per_msg:,.0f} msg/s per core; {stats.writes / n:.2f} writes per message;"
          f" user {user / n * 1e6:.0f} + system {system / n * 1e6:.0f} µs per message")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=4000)
    parser.add_argument("--key", choices=["rsa", "rsa1024", "ed25519", "none"], default="rsa")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--per-connection", type=int, default=100)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--sign-only", action="store_true")
    parser.add_argument("--sink-kind", choices=["aiosmtpd", "raw"], default="aiosmtpd",
                        help="the sink process: aiosmtpd, or a minimal one that costs less")
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink:
        sink(args.sink)
    elif args.sign_only:
        sign_only(args.n)
    else:
        proc = subprocess.Popen([sys.executable, __file__, "--sink", args.sink_kind],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            anyio.run(run, args.n, args.key, args.connections, args.per_connection,
                      args.sink_kind, port, backend=args.backend)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(10)


if __name__ == "__main__":
    main()
