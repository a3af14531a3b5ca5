"""Hostile receipt callbacks on a real ``herald serve``: another gateway's secret, a flood.

Gateway ``a`` sends through sender ``sa``, gateway ``b`` through ``sb``; each has its own
receipt secret. Messages are recorded straight into the workspace's store, as a running
``herald send`` records them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from engine.api.receipts import MAX_RECEIPTS, MAX_RECEIPTS_BODY
from engine.core.prepare import Message
from engine.core.states import Outcome
from engine.store.models import AudienceSource
from engine.store.sqlite import SQLiteStore
from tests.security.harness import HostileApi, hostile_api

SECRETS = {"a": "secret-of-a-0123456789", "b": "secret-of-b-0123456789"}
CAP = 20_000

CONFIG = f"""\
[engine]
database = "herald.db"

[limits]
pending_receipts = {CAP}

[gateways.a]
driver = "fake"
receipt_secret = "{SECRETS["a"]}"

[gateways.b]
driver = "fake"
receipt_secret = "{SECRETS["b"]}"

[senders.sa]
gateway = "a"
caller_id = "ACME"

[senders.sb]
gateway = "b"
caller_id = "ACME"

[virtual_senders.v]
rules = [{{ senders = [{{ sender = "sa", percent = 50 }}, {{ sender = "sb", percent = 50 }}] }}]

[resources.news]
channel = "sms"
virtual_sender = "v"
"""


def body(receipts: list[dict[str, str]]) -> bytes:
    return json.dumps({"receipts": receipts}, separators=(",", ":")).encode()


def post(
    api: HostileApi, gateway: str, content: bytes, *, as_: str | None = None
) -> httpx.Response:
    return httpx.post(f"{api.base}/api/v1/dlr/{gateway}", content=content, timeout=60,
                      headers={"X-Herald-Secret": SECRETS[as_ or gateway]}, trust_env=False)


def record(db: Path, sender: str, provider_ids: list[str], *, first_seq: int = 1) -> None:
    """Record one sent message per provider id, through ``sender``, in a new run."""

    async def main() -> None:
        store = SQLiteStore.open(db)
        try:
            source = AudienceSource("list", store.database_id_sync("main", create=True))
            _, run = await store.create_run(name="t", resource="news", source=source,
                                            template="x", limit=None)
            messages = [Message(first_seq + i, f"r-{i}", i + 1, f"+44790{i:07d}", sender,
                                "x", 1) for i in range(len(provider_ids))]
            outcomes = [Outcome(m.seq, "sent", provider_id=p)
                        for m, p in zip(messages, provider_ids, strict=True)]
            await store.record(run.id, 1, sender, messages, outcomes)
        finally:
            await store.aclose()

    anyio.run(main)


def states(db: Path, sender: str) -> dict[str, str]:
    store = SQLiteStore.open(db)
    try:
        return dict(store.conn.execute(
            "SELECT provider_id, state FROM recipients WHERE sender = ?", (sender,)))
    finally:
        store.conn.close()


def kept(db: Path) -> dict[str, int]:
    store = SQLiteStore.open(db)
    try:
        return dict(store.conn.execute(
            "SELECT gateway, count(*) FROM receipts_pending GROUP BY gateway"))
    finally:
        store.conn.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[HostileApi]:
    config = tmp_path / "herald.toml"
    config.write_text(CONFIG, encoding="utf-8")
    with hostile_api(config) as served:
        yield served


def test_gateway_bs_secret_changes_nothing_of_gateway_as_messages(api: HostileApi) -> None:
    db = api.config.parent / "herald.db"
    ids = [f"p-{i}" for i in range(100)]
    record(db, "sa", ids)
    forged = body([{"provider_id": p, "status": "undelivered", "error": "absent"} for p in ids])
    # b's secret on b's route: a's messages are not b's to see
    r = post(api, "b", forged)
    assert r.status_code == 200, r.text
    assert r.json()["matched"] == 0
    # b's secret on a's route is no secret at all
    assert post(api, "a", forged, as_="b").status_code == 401
    # b's early receipt for an id a issues next is not applied to a's message
    assert post(api, "b", body([{"provider_id": "p-next", "status": "undelivered"}])).json() \
        == {"matched": 0, "pending": 1, "ignored": 0}
    record(db, "sa", ["p-next"], first_seq=1000)
    assert set(states(db, "sa").values()) == {"sent"}
    # a's own receipts still work
    r = post(api, "a", body([{"provider_id": "p-0", "status": "delivered"}]))
    assert r.json()["matched"] == 1
    assert states(db, "sa")["p-0"] == "delivered"


def test_200k_receipts_in_one_body_neither_stall_the_loop_nor_stay(api: HostileApi) -> None:
    db = api.config.parent / "herald.db"
    flood = body([{"provider_id": f"x-{i:07d}", "status": "delivered"} for i in range(200_000)])
    assert len(flood) > 9_000_000
    with api.watch() as watch:
        r = post(api, "a", flood)
    assert r.status_code == 413  # over MAX_RECEIPTS_BODY: refused unread
    assert watch.stall < 0.1
    assert watch.rss_growth < 50e6
    assert kept(db) == {}


def test_more_receipts_than_the_bound_in_a_small_body_are_refused(api: HostileApi) -> None:
    db = api.config.parent / "herald.db"
    # the shortest receipts that fit MAX_RECEIPTS_BODY: eight times the bound
    many = body([{"provider_id": f"{i}", "status": "delivered"} for i in range(80_000)])
    assert len(many) <= MAX_RECEIPTS_BODY
    with api.watch() as watch:
        r = post(api, "a", many)
    assert r.status_code == 400 and r.json()["field"] == "body"
    assert f"at most {MAX_RECEIPTS:,}".replace(",", "") in r.json()["error"]
    assert watch.stall < 0.1
    assert watch.rss_growth < 50e6
    assert kept(db) == {}


def test_a_flood_of_early_receipts_stays_under_the_cap(api: HostileApi) -> None:
    db = api.config.parent / "herald.db"
    assert post(api, "b", body([{"provider_id": "b-1", "status": "delivered"}])).status_code \
        == 200
    dropped = 0
    with api.watch() as watch:
        for n in range(5):  # 50k receipts for ids nobody issued, in bodies of the bound
            r = post(api, "a", body([{"provider_id": f"x-{n}-{i}", "status": "delivered"}
                                     for i in range(MAX_RECEIPTS)]))
            assert r.status_code == 200, r.text
            assert r.json()["pending"] == MAX_RECEIPTS
            dropped += r.json().get("dropped", 0)
    assert watch.stall < 0.1
    assert watch.rss_growth < 50e6
    assert dropped == 5 * MAX_RECEIPTS - CAP
    assert kept(db) == {"a": CAP, "b": 1}  # b's receipt survived a's flood
