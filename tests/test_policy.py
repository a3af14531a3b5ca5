"""Sending policies: at most N messages per D days, per profile, resource, channel or phone."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.core.policy import Policy, utc_day
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.store.base import ImportRecord
from engine.testing import FakeGateway

pytestmark = pytest.mark.anyio

CONFIG = """\
[engine]
database = "herald.db"
{engine_policy}
[gateways.gw]
driver = "fake"
[senders.s1]
gateway = "gw"
caller_id = "ACME"
[virtual_senders.v]
rules = [{{ senders = [{{ sender = "s1" }}] }}]
[resources.news]
virtual_sender = "v"
{news_policy}
[resources.alerts]
virtual_sender = "v"
"""


async def open_herald(tmp_path: Path, gateway: FakeGateway, *, engine_policy: str = "",
                      news_policy: str = "") -> Herald:
    path = tmp_path / "herald.toml"
    path.write_text(CONFIG.format(engine_policy=engine_policy, news_policy=news_policy),
                    encoding="utf-8")
    return await Herald.open(path, plugins=load_plugins(gateway.plugin()))


async def audience(herald: Herald, phones: list[str], database: str = "main") -> None:
    db = await herald.store.database_id(database, create=True)
    for resource in ("news", "alerts"):
        await herald.store.import_profiles(
            db, [ImportRecord(p, p, None, {}) for p in phones], matching="phone",
            resource_id=await herald.store.resource_id(resource),
        )


PHONES = [f"+4479110000{i:02d}" for i in range(10)]


async def test_account_policy_skips_the_second_mailing(tmp_path: Path) -> None:
    gateway = FakeGateway()
    async with await open_herald(tmp_path, gateway, engine_policy=(
            "policy = { max_messages = 1, period_days = 1 }")) as herald:
        await audience(herald, PHONES)
        first = await herald.send(resource="news", database="main", template="x")
        second = await herald.send(resource="news", database="main", template="x")
    assert (first.sent, first.policy) == (10, 0)
    assert (second.sent, second.policy) == (0, 10)
    assert len(gateway.accepted) == 10


async def test_resource_policy_wins_over_the_account_and_mailing_over_both(
    tmp_path: Path,
) -> None:
    gateway = FakeGateway()
    async with await open_herald(
        tmp_path, gateway,
        engine_policy="policy = { max_messages = 1, period_days = 1 }",
        news_policy="policy = { max_messages = 2, period_days = 7 }",
    ) as herald:
        await audience(herald, PHONES)
        logs = [await herald.send(resource="news", database="main", template="x")
                for _ in range(3)]
        fourth = await herald.send(resource="news", database="main", template="x",
                                   policy=Policy(max_messages=4, period_days=1))
    assert [log.sent for log in logs] == [10, 10, 0]
    assert fourth.sent == 10


async def test_profile_resource_scope_counts_only_that_resource(tmp_path: Path) -> None:
    gateway = FakeGateway()
    per_resource = Policy(max_messages=1, period_days=1, scope="profile_resource")
    per_profile = Policy(max_messages=1, period_days=1, scope="profile")
    async with await open_herald(tmp_path, gateway) as herald:
        await audience(herald, PHONES)
        await herald.send(resource="alerts", database="main", template="x")
        news = await herald.send(resource="news", database="main", template="x",
                                 policy=per_resource)
        again = await herald.send(resource="news", database="main", template="x",
                                  policy=per_profile)
    assert news.sent == 10  # the alerts do not count against news
    assert again.policy == 10  # but they all count for the profile


async def test_contact_scope_follows_the_phone_across_profiles(tmp_path: Path) -> None:
    gateway = FakeGateway()
    contact = Policy(max_messages=1, period_days=3, scope="contact")
    async with await open_herald(tmp_path, gateway) as herald:
        await audience(herald, PHONES[:5], database="a")
        await audience(herald, PHONES[3:], database="b")  # 3 and 4 are in both
        await herald.send(resource="news", database="a", template="x", policy=contact)
        b = await herald.send(resource="news", database="b", template="x", policy=contact)
    assert (b.sent, b.policy) == (5, 2)


async def test_only_the_window_counts(tmp_path: Path) -> None:
    gateway = FakeGateway()
    async with await open_herald(tmp_path, gateway) as herald:
        await audience(herald, PHONES[:1])
        store = herald.store
        (pid,) = (await store.find_profiles(await store.database_id("main"), "phone",
                                            PHONES[:1])).values()
        old = utc_day(time.time()) - 5
        store.conn.execute(  # type: ignore[attr-defined]
            "INSERT INTO history_profile VALUES (?, ?, ?, 3)",
            (pid, old, await store.resource_id("news")))
        inside = await herald.send(resource="news", database="main", template="x",
                                   policy=Policy(max_messages=3, period_days=6))
        outside = await herald.send(resource="news", database="main", template="x",
                                    policy=Policy(max_messages=3, period_days=5))
    assert inside.policy == 1 and outside.sent == 1


def test_cli_policy_option_is_checked(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "send", "--resource", "news", "--database", "m",
         "--template", "t", "--policy", "20/7"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert "expected MAX/DAYS[/SCOPE]" in proc.stderr and "<= 15" in proc.stderr
