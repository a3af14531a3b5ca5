"""An email mailing shared by two workers on PostgreSQL, to an SMTP sink on loopback
(``tests.fakes.smtp``).

The exact dedupe across workers holds for addresses as it does for phones: an address on
two profiles in different chunks (and in another case) gets one message, the log counts
the other as a duplicate, and every message is whole, with its sender's From.
"""

from __future__ import annotations

import email
import email.policy
from collections import Counter
from pathlib import Path

import anyio
import pytest

from engine.cluster.worker import Worker, send_on_cluster
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.store.base import ImportRecord
from tests.fakes.smtp import Sink

pytestmark = pytest.mark.anyio

CONFIG = """
[engine]
database = "{pg_url}"
batch_size = 20
shutdown_grace = 1

[gateways.mail]
driver = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"
connections = 2

[senders.news]
gateway = "mail"
from = "Herald News <news@example.com>"
rate = 250  # the run lasts seconds: the other worker's idle poll (0.3 s) finds chunks

[virtual_senders.letters]
rules = [{{ senders = [{{ sender = "news" }}] }}]

[resources.letters]
virtual_sender = "letters"
channel = "email"

[cluster]
lease_ttl = 2
chunk_profiles = 100
"""

PROFILES = 600
#: Profiles 0-39 have the addresses of profiles 300-339 again (other chunks, the
#: domain in capitals): 40 duplicates.
DUPLICATES = 40


def address(i: int) -> str:
    if i < DUPLICATES:
        return f"reader{i + 300}@EXAMPLE.org"
    return f"reader{i}@example.org"


async def test_two_workers_send_an_email_mailing_once_to_each_address(
    tmp_path: Path, pg_url: str,
) -> None:
    with Sink() as sink:
        config = tmp_path / "herald.toml"
        config.write_text(CONFIG.format(pg_url=pg_url, port=sink.port), encoding="utf-8")
        async with await Herald.open(config, plugins=load_plugins()) as herald:
            db = await herald.store.database_id("main", create=True)
            await herald.store.import_profiles(
                db, [ImportRecord(None, None, address(i), {"_fname": f"R{i}"})
                     for i in range(PROFILES)],
                matching="email", resource_id=await herald.store.resource_id("letters"),
                channel="email")
            other = Worker(herald, concurrency=2)
            async with anyio.create_task_group() as tg:
                tg.start_soon(other.run)
                log = await send_on_cluster(
                    herald, resource="letters", database="main",
                    template="<p>Hello {lead._fname}</p>", subject="Hi {lead._fname}")
                other.stop()
            chunks = await herald.store.chunks(log.run_id)
    assert {c.state for c in chunks} == {"done"} and len(chunks) == PROFILES // 100
    assert len({c.worker for c in chunks}) == 2, "the other worker did none of the chunks"
    received = Counter(r.rcpt_tos[0] for r in sink.received)
    assert len(received) == PROFILES - DUPLICATES
    assert set(received.values()) == {1}, "an address got two messages"
    assert (log.status, log.sent, log.duplicate_phones) == (
        "finished", PROFILES - DUPLICATES, DUPLICATES)
    for r in sink.received:
        msg = email.message_from_bytes(r.content, policy=email.policy.default)
        assert msg["From"] == "Herald News <news@example.com>"
        assert msg["Subject"].startswith("Hi R")
        body = msg.get_body(("html",))
        assert body is not None and "Hello R" in body.get_content()
