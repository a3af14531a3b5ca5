"""The ``smtp`` driver against a real SMTP server (aiosmtpd, ``tests.fakes.smtp``) on
loopback, on asyncio and trio; its sans-I/O protocol and DKIM signer on their own."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dkim
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.mime import MimeBuilder
from engine.drivers import Bounce, OutboundMessage
from engine.errors import (
    ConfigError,
    InputError,
    PermanentGatewayError,
    TransientGatewayError,
)
from herald_smtp import SmtpConfig, SmtpDriver
from herald_smtp.protocol import (
    Envelope,
    Extensions,
    Reply,
    ReplyParser,
    SmtpProtocolError,
    Transactions,
    data_payload,
    normalise_line_ends,
    queue_id,
)
from herald_smtp.signing import DkimSigner, load_key
from tests.fakes.smtp import Sink, dkim_key, tls_files

pytestmark = pytest.mark.anyio

BUILDER = MimeBuilder(from_="ACME News <news@example.com>", domain="example.com")


def emails(n: int, *, start: int = 0, subject: str = "Hello 👋 there") -> list[OutboundMessage]:
    out = []
    for i in range(start, start + n):
        to = f"reader{i}@example.net"
        mime = BUILDER.build(
            to=to, subject=subject, html=f"<p>hello {i}</p>\n.a line with a dot\n.",
            text=f"hello {i}\n.\n..two dots", message_id=f"id-{i}",
            unsubscribe_url=f"https://t.example.com/u/{i}", now=1_765_000_000.0)
        out.append(OutboundMessage(f"id-{i}", to, f"bounce+{i}@example.com", "x", mime=mime))
    return out


def driver(sink: Sink, tmp_path: Path, **options: Any) -> SmtpDriver:
    base: dict[str, Any] = {"host": "127.0.0.1", "port": sink.port, "security": "none",
                            "timeout": 5.0}
    return SmtpDriver(msgspec.convert({**base, **options}, SmtpConfig), gateway="mx",
                      base_dir=tmp_path)


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        yield s


# --- what arrives ---------------------------------------------------------------------------


async def test_messages_arrive_intact_and_their_dkim_signature_verifies(
    sink: Sink, tmp_path: Path
) -> None:
    key, record = dkim_key(tmp_path)
    d = driver(sink, tmp_path, dkim_selector="news", dkim_key=key.name)
    batch = emails(5)
    results = await d.send_batch(batch)
    await d.aclose()
    assert [r.status for r in results] == ["accepted"] * 5
    assert len({r.provider_id for r in results}) == 5  # the sink's "queued as" ids
    assert all(r.provider_id and r.provider_id.startswith("Q") for r in results)
    looked_up: list[bytes] = []

    def dns(name: bytes, timeout: int = 5) -> bytes | None:
        looked_up.append(name)
        return record if name == b"news._domainkey.example.com." else None

    by_to = {r.rcpt_tos[0]: r for r in sink.received}
    for m in batch:
        got = by_to[m.to]
        assert (got.mail_from, got.rcpt_tos) == (m.sender, [m.to])
        assert m.mime is not None
        signature = got.content.partition(b"\r\nFrom:")[0]
        assert signature.startswith(b"DKIM-Signature:")
        assert got.content.endswith(m.mime)  # not a byte changed, dots and all
        assert dkim.verify(got.content, dnsfunc=dns)
        parsed = email.message_from_bytes(got.content, policy=email.policy.default)
        assert parsed["Subject"] == "Hello 👋 there"
        text = parsed.get_body(("plain",))
        assert text is not None and text.get_content().replace("\r\n", "\n").startswith(
            f"hello {m.id[3:]}\n.\n..two dots")
    assert set(looked_up) == {b"news._domainkey.example.com."}
    # A changed byte breaks it: the check can fail.
    tampered = sink.received[0].content.replace(b"hello", b"HELLO", 1)
    assert not dkim.verify(tampered, dnsfunc=dns)


async def test_dkim_covers_the_one_click_unsubscribe_headers(sink: Sink, tmp_path: Path) -> None:
    key, _ = dkim_key(tmp_path)
    d = driver(sink, tmp_path, dkim_selector="news", dkim_key=key.name)
    await d.send_batch(emails(1))
    await d.aclose()
    sig = email.message_from_bytes(sink.received[0].content)["DKIM-Signature"]
    tags = dict(t.strip().split("=", 1) for t in "".join(sig.split()).split(";") if t)
    signed = tags["h"].split(":")
    assert {"from", "to", "subject", "date", "message-id", "list-unsubscribe",
            "list-unsubscribe-post"} <= set(signed)
    assert (tags["d"], tags["s"], tags["a"]) == ("example.com", "news", "rsa-sha256")


async def test_pipelining_sends_the_envelope_and_the_next_one_in_one_write(
    sink: Sink, tmp_path: Path
) -> None:
    d = driver(sink, tmp_path, connections=1)
    await d.send_batch(emails(4))
    await d.aclose()
    grouped = [c for c in sink.chunks if b"MAIL FROM:" in c]
    assert grouped and all(b"RCPT TO:" in c and c.endswith(b"DATA\r\n") for c in grouped)
    # After the first, each group rides with the previous message's content.
    assert sum(1 for c in grouped if c.startswith(b"MAIL FROM:")) == 1
    assert sum(1 for c in grouped if b"\r\n.\r\nMAIL FROM:" in c) == 3


async def test_without_pipelining_one_command_per_write(tmp_path: Path) -> None:
    with Sink(pipelining=False) as sink:
        d = driver(sink, tmp_path, connections=1)
        results = await d.send_batch(emails(3))
        await d.aclose()
    assert {r.status for r in results} == {"accepted"}
    commands = [c for c in sink.chunks if c[:4] in (b"MAIL", b"RCPT", b"DATA")]
    assert len(commands) == 9 and all(c.count(b"\r\n") == 1 for c in commands)


async def test_messages_per_connection_quits_and_reconnects(sink: Sink, tmp_path: Path) -> None:
    d = driver(sink, tmp_path, connections=1, messages_per_connection=3)
    assert d.capabilities.max_batch == 3
    for start in (0, 3, 6):
        results = await d.send_batch(emails(3, start=start))
        assert {r.status for r in results} == {"accepted"}
    await d.aclose()
    assert sink.connections == 3 and d.statistics().connects == 3
    assert len(sink.received) == 9


async def test_sessions_are_kept_between_batches(sink: Sink, tmp_path: Path) -> None:
    d = driver(sink, tmp_path, connections=2)
    await d.send_batch(emails(4))
    await d.send_batch(emails(4, start=4))
    stats = d.statistics()
    await d.aclose()
    assert (stats.connects, stats.reuses, stats.idle) == (2, 2, 2)
    assert sink.connections == 2


async def test_a_kept_session_the_server_closed_is_replaced(sink: Sink, tmp_path: Path) -> None:
    d = driver(sink, tmp_path, connections=1)
    await d.send_batch(emails(1))
    with Sink() as other:  # nothing in common but the driver
        assert other.port
    for session in d._idle:  # the server goes away under an idle session
        await session.stream.aclose()
    results = await d.send_batch(emails(2, start=1))
    await d.aclose()
    assert {r.status for r in results} == {"accepted"}
    assert d.statistics().connects == 2


# --- answers --------------------------------------------------------------------------------


async def test_answers_map_to_results(sink: Sink, tmp_path: Path) -> None:
    sink.rcpt_answers.update({
        "reader1@example.net": "550 5.1.1 <reader1@example.net>: user unknown",
        "reader2@example.net": "450 4.2.1 mailbox busy",
        "reader3@example.net": "451 4.7.1 slow down",
        "reader4@example.net": "452 4.5.3 too many recipients",
    })
    sink.data_answers["reader5@example.net"] = "554 5.7.1 looks like spam"
    d = driver(sink, tmp_path, connections=1)
    results = {r.id: r for r in await d.send_batch(emails(7))}
    await d.aclose()
    assert results["id-0"].status == "accepted"
    assert (results["id-1"].status, results["id-1"].error) == (
        "rejected", "550 5.1.1 <reader1@example.net>: user unknown")
    assert (results["id-2"].status, results["id-2"].retry_after) == ("retry", None)
    assert (results["id-3"].status, results["id-3"].retry_after) == ("retry", 1.0)
    assert (results["id-4"].status, results["id-4"].retry_after) == ("retry", 1.0)
    assert (results["id-5"].status, results["id-5"].error) == (
        "rejected", "554 5.7.1 looks like spam")
    assert results["id-6"].status == "accepted"  # the session went on after RSET
    assert sorted(r.rcpt_tos[0] for r in sink.received) == [
        "reader0@example.net", "reader6@example.net"]


async def test_421_throttles_what_is_left_of_the_batch(
    sink: Sink, tmp_path: Path
) -> None:
    sink.rcpt_answers["reader1@example.net"] = "421 4.7.0 too fast, closing"
    d = driver(sink, tmp_path, connections=1)
    results = await d.send_batch(emails(4))
    await d.aclose()
    by_id = {r.id: r for r in results}
    assert by_id["id-0"].status == "accepted"
    assert (by_id["id-1"].status, by_id["id-1"].retry_after) == ("retry", 1.0)
    assert "421 4.7.0" in (by_id["id-1"].error or "")
    # What never reached the server's DATA is throttled too: not sent again in this batch.
    assert {by_id[i].status for i in ("id-2", "id-3")} == {"retry"}
    assert {by_id[i].retry_after for i in ("id-2", "id-3")} == {1.0}
    assert len(sink.received) == 1


async def test_a_server_that_hangs_up_mid_data_gives_unknown(sink: Sink, tmp_path: Path) -> None:
    batch = emails(3)
    batch[1] = OutboundMessage(batch[1].id, batch[1].to, batch[1].sender, "x",
                               mime=(batch[1].mime or b"").replace(b"hello 1", b"HANG-UP 1"))
    sink.hang_up_on = b"HANG-UP"
    d = driver(sink, tmp_path, connections=1)
    by_id = {r.id: r for r in await d.send_batch(batch)}
    await d.aclose()
    assert by_id["id-0"].status == "accepted"
    assert by_id["id-1"].status == "unknown"
    assert (by_id["id-1"].error or "").startswith("connection_lost: gateway 'mx' at 127.0.0.1")
    # Its content never went: another session sends it.
    assert by_id["id-2"].status == "accepted"


async def test_no_answer_to_the_content_within_the_timeout_gives_unknown(
    sink: Sink, tmp_path: Path
) -> None:
    sink.hang.add("reader0@example.net")
    d = driver(sink, tmp_path, connections=1, timeout=0.3)
    (result,) = await d.send_batch(emails(1))
    await d.aclose()
    assert result.status == "unknown"
    assert (result.error or "").startswith("timeout: gateway 'mx'")


async def test_connection_refused_fails_the_batch_unsent(tmp_path: Path) -> None:
    with Sink() as sink:
        port = sink.port
    d = SmtpDriver(SmtpConfig(host="127.0.0.1", port=port, security="none"), gateway="mx")
    with pytest.raises(TransientGatewayError, match="cannot connect") as caught:
        await d.send_batch(emails(3))
    assert caught.value.unsent and caught.value.ambiguous is None
    await d.aclose()


async def test_a_message_without_mime_is_rejected_unsent(sink: Sink, tmp_path: Path) -> None:
    d = driver(sink, tmp_path)
    sms = OutboundMessage("sms", "+15551234567", "ACME", "hi")
    results = await d.send_batch([sms, *emails(1)])
    await d.aclose()
    assert [r.status for r in results] == ["rejected", "accepted"]
    assert len(sink.received) == 1


async def test_a_message_over_the_servers_size_is_rejected_unsent(tmp_path: Path) -> None:
    with Sink(size=500) as sink:
        d = driver(sink, tmp_path)
        (result,) = await d.send_batch(emails(1))
        await d.aclose()
    assert result.status == "rejected" and "SIZE" in (result.error or "")
    assert sink.received == []


# --- TLS and AUTH ---------------------------------------------------------------------------


async def test_starttls_and_auth_with_a_self_signed_certificate(tmp_path: Path) -> None:
    server_tls, ca = tls_files(tmp_path)
    with Sink(tls_context=server_tls, require_starttls=True, auth=("u", "p4ss")) as sink:
        d = driver(sink, tmp_path, security="starttls", ca_file=ca.name,
                   username="u", password="p4ss", connections=1)
        results = await d.send_batch(emails(2))
        await d.aclose()
    assert {r.status for r in results} == {"accepted"}
    assert set(sink.auth_attempts) == {("PLAIN", b"u")}
    # Nothing but EHLO and STARTTLS went before TLS: the password never in the clear.
    assert not any(b"AUTH" in c or b"MAIL" in c for c in sink.chunks[:2])
    assert len(sink.ehlos) == 2  # EHLO again after STARTTLS (RFC 3207)


async def test_an_untrusted_certificate_fails_the_batch(tmp_path: Path) -> None:
    server_tls, _ = tls_files(tmp_path)
    with Sink(tls_context=server_tls) as sink:
        d = driver(sink, tmp_path, security="starttls")
        with pytest.raises(TransientGatewayError, match="TLS failed") as caught:
            await d.send_batch(emails(1))
        await d.aclose()
    assert caught.value.unsent and sink.received == []


async def test_starttls_required_but_not_offered_sends_nothing(
    sink: Sink, tmp_path: Path
) -> None:
    d = driver(sink, tmp_path, security="starttls")
    with pytest.raises(TransientGatewayError, match="does not offer STARTTLS"):
        await d.send_batch(emails(1))
    await d.aclose()
    assert not any(b"MAIL" in c for c in sink.chunks)


async def test_bad_credentials_are_permanent(tmp_path: Path) -> None:
    server_tls, ca = tls_files(tmp_path)
    with Sink(tls_context=server_tls, auth=("u", "right")) as sink:
        d = driver(sink, tmp_path, security="starttls", ca_file=ca.name,
                   username="u", password="wrong")
        with pytest.raises(PermanentGatewayError, match="AUTH refused: 535") as caught:
            await d.send_batch(emails(2))
        await d.aclose()
    assert caught.value.code == "535"
    assert sink.received == []


async def test_auth_in_plaintext_on_loopback(tmp_path: Path) -> None:
    with Sink(auth=("u", "p4ss"), auth_require_tls=False) as sink:
        d = driver(sink, tmp_path, username="u", password="p4ss")
        results = await d.send_batch(emails(1))
        await d.aclose()
    assert results[0].status == "accepted" and set(sink.auth_attempts) == {("PLAIN", b"u")}


def test_the_config_refuses_auth_in_plaintext_off_loopback() -> None:
    with pytest.raises(msgspec.ValidationError, match="password in the clear"):
        msgspec.convert({"host": "smtp.example.com", "security": "none", "username": "u",
                         "password": "p"}, SmtpConfig)
    ok = msgspec.convert({"host": "::1", "security": "none", "username": "u",
                          "password": "p"}, SmtpConfig)
    assert ok.security == "none"


def test_the_config_defaults() -> None:
    config = msgspec.convert({"host": "smtp.example.com"}, SmtpConfig)
    assert (config.port, config.security, config.connections,
            config.messages_per_connection) == (25, "starttls", 4, 100)
    assert msgspec.convert({"host": "h", "port": 465}, SmtpConfig).security == "tls"
    assert "***" in repr(msgspec.convert({"host": "h", "username": "u", "password": "sekrit"},
                                         SmtpConfig))
    with pytest.raises(msgspec.ValidationError, match="dkim_selector"):
        msgspec.convert({"host": "h", "dkim_key": "k.pem"}, SmtpConfig)


def test_a_missing_or_bad_key_is_a_config_error(tmp_path: Path) -> None:
    config = SmtpConfig(host="h", security="none", dkim_selector="s", dkim_key="nope.pem")
    with pytest.raises(ConfigError, match=r"gateways\.mx\.dkim_key.*cannot read"):
        SmtpDriver(config, gateway="mx", base_dir=tmp_path)
    (tmp_path / "bad.pem").write_text("not a key")
    config = SmtpConfig(host="h", security="none", dkim_selector="s", dkim_key="bad.pem")
    with pytest.raises(ConfigError, match="not a PEM private key"):
        SmtpDriver(config, gateway="mx", base_dir=tmp_path)


# --- the signer -----------------------------------------------------------------------------


def test_ed25519_signatures() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())
    signer = DkimSigner(selector="ed", key=load_key(pem, "k"))
    mime = emails(1)[0].mime
    assert mime is not None
    signed = signer.sign(mime, domain="example.com", now=1.0) + mime
    assert b"a=ed25519-sha256" in signed and b"t=1;" in signed
    pytest.importorskip("nacl", reason="dkimpy verifies ed25519 with PyNaCl")
    record = signer.public_key_record().encode()
    assert dkim.verify(signed, dnsfunc=lambda name, timeout=5: record)


def test_the_signer_refuses_what_rfc_6376_forbids() -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(InputError, match="must include From"):
        DkimSigner(selector="s", key=key, headers=["To"])
    with pytest.raises(InputError, match="received must not be signed"):
        DkimSigner(selector="s", key=key, headers=["From", "Received"])


# --- the protocol, sans I/O -----------------------------------------------------------------


def test_multi_line_replies_and_enhanced_codes() -> None:
    parser = ReplyParser()
    assert parser.feed(b"250-sink.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n") == []
    (ehlo,) = parser.feed(b"250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
    ext = Extensions.parse(ehlo)
    assert ext.pipelining and ext.eightbitmime and ext.size == 1000
    assert ext.auth == {"PLAIN", "LOGIN"} and not ext.starttls
    one, two = parser.feed(b"550 5.1.1 user unknown\r\n250\r\n")
    assert (one.code, one.enhanced, one.text, str(one)) == (
        550, "5.1.1", "user unknown", "550 5.1.1 user unknown")
    assert (two.code, two.enhanced, str(two)) == (250, "", "250")
    (split,) = parser.feed(b"25") or parser.feed(b"0 2.0.0 Ok: queued as 4XyZ\r\n")
    assert queue_id(split.text) == "4XyZ"


@pytest.mark.parametrize("line, why", [
    (b"hello\r\n", "expected a 3-digit code"),
    (b"650 no\r\n", "expected a 3-digit code"),
    (b"250x\r\n", "expected a 3-digit code"),
    (b"250-a\r\n354 b\r\n", "code 354 inside a reply of code 250"),
])
def test_bad_replies_name_the_line(line: bytes, why: str) -> None:
    with pytest.raises(SmtpProtocolError, match=why) as caught:
        ReplyParser().feed(line)
    assert "the server's reply line" in str(caught.value)


def test_an_endless_line_is_refused() -> None:
    with pytest.raises(SmtpProtocolError, match="longer than"):
        ReplyParser().feed(b"250-" + b"x" * 10_000)


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_fuzz_the_parser_gives_replies_or_input_error(chunks: list[bytes]) -> None:
    parser = ReplyParser()
    try:
        for chunk in chunks:
            for reply in parser.feed(chunk):
                assert 200 <= reply.code <= 599 and reply.lines
    except InputError as err:
        assert "the server's reply line" in str(err)


@given(st.lists(st.sampled_from([b"a", b".", b"\r\n", b"..", b" ", b"\n", b"\r"]), max_size=40))
def test_dot_stuffing_round_trips(parts: list[bytes]) -> None:
    message = normalise_line_ends(b"".join(parts))
    assert b"\n" not in message.replace(b"\r\n", b"") and b"\r" not in message.replace(
        b"\r\n", b"")
    wire = data_payload(message)
    body, end = wire[:-3], wire[-3:]
    assert end == b".\r\n" and body.endswith(b"\r\n")
    lines = body[:-2].split(b"\r\n")
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in lines)
    unstuffed = b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)
    assert unstuffed + b"\r\n" == (message if message.endswith(b"\r\n") else message + b"\r\n")


def _reply(text: str) -> Reply:
    (reply,) = ReplyParser().feed(text.encode() + b"\r\n")
    return reply


def test_transactions_pipeline_and_end_a_failed_one_with_rset() -> None:
    tx = Transactions(pipelining=True)
    for i in range(2):
        tx.add(Envelope("b@x", f"r{i}@y", f"m{i}\r\n.\r\n".encode()))
    assert tx.data_to_send() == b"MAIL FROM:<b@x>\r\nRCPT TO:<r0@y>\r\nDATA\r\n"
    tx.receive(_reply("250 ok"))
    tx.receive(_reply("550 5.1.1 no"))
    assert tx.data_to_send() == b""  # waits for DATA's answer
    tx.receive(_reply("554 5.5.1 no valid recipients"))
    assert tx.data_to_send() == b"RSET\r\nMAIL FROM:<b@x>\r\nRCPT TO:<r1@y>\r\nDATA\r\n"
    for text in ("250 reset", "250 ok", "250 ok", "354 go"):
        tx.receive(_reply(text))
    assert tx.data_to_send() == b"m1\r\n.\r\n"
    tx.receive(_reply("250 2.0.0 Ok: queued as AB12"))
    assert tx.done
    assert [o.kind if o else None for o in tx.outcomes] == ["rejected", "accepted"]
    assert tx.outcomes[0] is not None and str(tx.outcomes[0].reply) == "550 5.1.1 no"


def test_a_354_without_a_recipient_gets_an_empty_message() -> None:
    tx = Transactions(pipelining=True)
    tx.add(Envelope("b@x", "r@y", b"secret\r\n.\r\n"))
    tx.data_to_send()
    for text in ("250 ok", "550 no", "354 go anyway"):
        tx.receive(_reply(text))
    assert tx.data_to_send() == b".\r\n"
    tx.receive(_reply("554 no message"))
    assert tx.done and tx.outcomes[0] is not None and tx.outcomes[0].kind == "rejected"


def test_abandoned_transactions_tell_unknown_from_unsent() -> None:
    tx = Transactions(pipelining=True)
    for i in range(2):
        tx.add(Envelope("b@x", f"r{i}@y", b"m\r\n.\r\n"))
    tx.data_to_send()
    for text in ("250 ok", "250 ok", "354 go"):
        tx.receive(_reply(text))
    assert tx.data_to_send().startswith(b"m\r\n.\r\nMAIL FROM:")
    tx.abandon()  # the connection broke: the first's content was out, the second's not
    assert [o.kind if o else None for o in tx.outcomes] == ["unknown", "unsent"]


def test_a_reply_to_nothing_is_a_protocol_error() -> None:
    with pytest.raises(SmtpProtocolError, match="to nothing"):
        Transactions(pipelining=True).receive(_reply("250 ok"))


def test_commands_refuse_line_breaks() -> None:
    tx = Transactions(pipelining=True)
    with pytest.raises(SmtpProtocolError, match="line break"):
        tx.add(Envelope("b@x", "r@y\r\nRCPT TO:<evil@z>", b".\r\n"))


@pytest.mark.parametrize("text, expected", [
    ("2.0.0 Ok: queued as 4Bq3Xq1ZzQz9sWv", "4Bq3Xq1ZzQz9sWv"),
    ("OK id=1qAbCd-0001Xy-Ab", "1qAbCd-0001Xy-Ab"),
    ("Ok 0100018b2c3d4e5f-12345678-aaaa-bbbb-cccc-1234567890ab-000000",
     "0100018b2c3d4e5f-12345678-aaaa-bbbb-cccc-1234567890ab-000000"),
    ("2.0.0 OK", None),
])
def test_queue_ids(text: str, expected: str | None) -> None:
    reply = _reply(f"250 {text}")
    assert queue_id(reply.text) == expected


def test_a_bounce_fed_to_the_inbound_route_is_read_with_its_verp_address() -> None:
    """The bounce mailbox posts what came back to the return path; the address it was
    delivered to (``X-Original-To``) names the message."""
    raw = (Path(__file__).parent.parent / "fixtures" / "bounces"
           / "postfix_user_unknown.eml").read_bytes()
    driver = SmtpDriver(msgspec.convert({"host": "127.0.0.1", "security": "none"}, SmtpConfig))
    plain = driver.parse_bounces(raw, {})
    addressed = driver.parse_bounces(
        raw, {"X-Original-To": "bounce+r9-42@bounces.example.com"})
    assert [b.kind for b in plain] == ["hard"]
    assert isinstance(plain[0], Bounce) and plain[0].email
    assert addressed[0].id == "r9-42"
    assert driver.takes_bounces()
