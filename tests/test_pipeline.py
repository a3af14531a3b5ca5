"""The streaming core end to end, in process, on both anyio backends."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from engine.demo import generate
from engine.drivers import OutboundMessage, SendResult
from engine.errors import InputError, PermanentGatewayError
from engine.runner import Herald
from engine.store.base import ImportRecord, TriggerRow
from engine.testing import FakeGateway

pytestmark = pytest.mark.anyio


async def add_profiles(
    herald: Herald,
    phones: Sequence[str | None],
    *,
    database: str = "main",
    unsubscribed: Sequence[int] = (),
    fields: dict[str, Any] | None = None,
) -> list[int]:
    """Insert one profile per phone (None: no subscription); return their ids."""
    store = herald.store
    db = await store.database_id(database, create=True)
    rid = await store.resource_id("news")
    ids = []
    for i, phone in enumerate(phones):
        f = {"_fname": f"P{i}", **(fields or {})}
        await store.import_profiles(
            db,
            [ImportRecord(None, phone, None, f)],
            matching="phone",
            resource_id=rid if phone is not None else None,
        )
    rows = herald.store.conn.execute(  # type: ignore[attr-defined]
        "SELECT id FROM profiles WHERE database_id = ? ORDER BY id", (db,)
    ).fetchall()
    ids = [r[0] for r in rows][-len(phones) :]
    if unsubscribed:
        await store.set_subscription_status(rid, [ids[i] for i in unsubscribed], "unsubscribed")
    return ids


def phones(n: int, start: int = 0) -> list[str]:
    return [f"+7916{start + i:07d}" for i in range(n)]


async def test_every_recipient_ends_recorded_once(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway(latency=0.001)
    async with await open_herald(gateway, chunk_size=50, batch_size=20) as herald:
        audience = phones(300)
        # the same numbers again, written differently, plus junk and an unsubscribed one
        audience += ["8 (916) 000-00-01", "+7 916 000 00 02", "not a phone", None]
        await add_profiles(herald, audience, unsubscribed=[5])
        log = await herald.send(resource="news", database="main", template="Hi {lead._fname}")
    assert log.status == "finished"
    assert log.subscribers_received == 304
    assert log.subscribers_found == 302  # one unsubscribed, one without a subscription
    # no default_region: "8 (916) ..." cannot be read, like "not a phone"
    assert log.invalid_phones == 2
    assert log.duplicate_phones == 1  # "+7 916 000 00 02" is profile 2's number
    assert log.recipients == 299 == len(gateway.accepted) == log.sent
    assert set(gateway.submitted.values()) == {1}
    assert log.pending == log.unknown == log.failed == 0


async def test_duplicates_suppressed_and_invalid_are_counted(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway()
    async with await open_herald(
        gateway, default_region="RU", chunk_size=64, batch_size=32
    ) as herald:
        plan = await generate(herald.store, profiles=3000, database="main")
        log = await herald.send(resource="news", database="main", template="Hi {lead._fname}")
    assert log.subscribers_received == plan.profiles
    assert log.subscribers_found == plan.subscribed
    assert log.duplicate_phones == plan.duplicates
    assert log.suppressed == plan.suppressed
    assert log.invalid_phones == plan.invalid
    assert log.recipients == plan.unique == len(gateway.accepted)
    assert set(Counter(m.to for m in gateway.texts.values()).values()) == {1}


async def test_template_renders_profile_fields(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        await add_profiles(herald, ["+447911123456"], fields={"_city": "Leeds"})
        await herald.send(
            resource="news", database="main", template="Hello {lead._fname} from {lead._city}!"
        )
    (message,) = gateway.texts.values()
    assert message.text == "Hello P0 from Leeds!"
    assert message.to == "+447911123456"
    assert message.sender == "ACME"


FAST_RETRIES = """
[senders.s1.retry.transient]
attempts = 4
base = 0.001
[senders.s1.retry.message]
attempts = 4
base = 0.001
"""


async def test_transient_failures_are_retried_and_nothing_is_lost(
    open_herald: Callable[..., Any],
) -> None:
    gateway = FakeGateway(fail_rate=0.3, retry_rate=0.1, seed=3)
    async with await open_herald(gateway, batch_size=10, extra=FAST_RETRIES) as herald:
        await add_profiles(herald, phones(200))
        log = await herald.send(resource="news", database="main", template="x")
    assert log.recipients == 200
    assert log.sent + log.failed == 200
    assert log.sent == len(gateway.accepted)
    assert max(gateway.accepted.values()) == 1
    # anything not sent says why
    assert sum(log.failed_reasons.values()) == log.failed
    assert set(log.failed_reasons) <= {"retries_exhausted"}


async def test_rejections_keep_the_provider_error(open_herald: Callable[..., Any]) -> None:
    bad = "+79160000003"
    gateway = FakeGateway(reject=[bad])
    async with await open_herald(gateway) as herald:
        await add_profiles(herald, phones(5))
        log = await herald.send(resource="news", database="main", template="x")
        rows = {r[2]: r for r in herald.store.recipients(log.run_id)}  # type: ignore[attr-defined]
        error = herald.store.conn.execute(  # type: ignore[attr-defined]
            "SELECT error FROM recipients WHERE phone = ?", (bad,)
        ).fetchone()[0]
    assert log.failed == 1 and log.failed_reasons == {"rejected": 1}
    assert rows[bad][3] == "failed"
    assert error == "E42 blocked number"


async def test_a_gateway_that_refuses_everything_fails_the_batch_not_the_run(
    open_herald: Callable[..., Any],
) -> None:
    def handler(messages: Sequence[OutboundMessage]) -> list[SendResult]:
        raise PermanentGatewayError("account suspended", code="403")

    async with await open_herald(FakeGateway(handler=handler)) as herald:
        await add_profiles(herald, phones(3))
        log = await herald.send(resource="news", database="main", template="x")
    assert log.status == "finished"
    assert log.failed_reasons == {"rejected: 403": 3}


async def test_limit_stops_after_n_recipients(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway, chunk_size=7) as herald:
        await add_profiles(herald, phones(50))
        log = await herald.send(resource="news", database="main", template="x", limit=12)
    assert log.limit == 12
    assert log.recipients == 12 == len(gateway.accepted)


async def test_segment_audience(open_herald: Callable[..., Any]) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        ids = await add_profiles(herald, phones(10))
        db = await herald.store.database_id("main")
        await herald.store.create_segment("vip", db, profile_ids=ids[2:5])
        log = await herald.send(resource="news", segment="vip", template="x")
    assert log.audience_source == "segment"
    assert log.subscribers_received == 3
    assert sorted(m.to for m in gateway.texts.values()) == phones(3, start=2)


async def test_unknown_resource_and_database_are_input_errors(
    open_herald: Callable[..., Any],
) -> None:
    async with await open_herald() as herald:
        with pytest.raises(InputError, match="no resource 'nope'"):
            await herald.send(resource="nope", database="main", template="x")
        with pytest.raises(Exception, match="no profile database named 'ghost'"):
            await herald.send(resource="news", database="ghost", template="x")


async def test_dynamic_segment_audience(open_herald: Callable[..., Any]) -> None:
    from engine.segments import create_segment

    gateway = FakeGateway()
    async with await open_herald(gateway, chunk_size=3) as herald:
        await add_profiles(herald, phones(10), fields={"_city": "Paris"})
        await add_profiles(herald, phones(10, start=10), fields={"_city": "Lyon"})
        await create_segment(herald.store, "lyon", "main",
                             'lead._city equal "Lyon" and lead._fname not equal "P3"')
        log = await herald.send(resource="news", segment="lyon", template="x")
    assert log.audience_source == "segment"
    assert log.subscribers_received == 9  # the segment's members only, recounted now
    assert sorted(m.to for m in gateway.texts.values()) == sorted(
        p for i, p in enumerate(phones(10, start=10)) if i != 3)


async def test_a_text_that_renders_blank_is_skipped_as_empty(
    open_herald: Callable[..., Any],
) -> None:
    from engine.mailing_log import format_log

    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        for phone, note in [("+447911000001", "see you"), ("+447911000002", ""),
                            ("+447911000003", " \n\t"), ("+447911000004", None)]:
            await add_profiles(herald, [phone], fields={} if note is None else {"note": note})
        log = await herald.send(resource="news", database="main", template="{lead.note}")
        rows = herald.store.conn.execute(  # type: ignore[attr-defined]
            "SELECT phone, state, reason FROM recipients ORDER BY seq"
        ).fetchall()
    assert [m.text for m in gateway.texts.values()] == ["see you"]
    assert (log.empty, log.sent, log.too_long) == (3, 1, 0)
    assert rows == [("+447911000001", "sent", None), ("+447911000002", "skipped", "empty"),
                    ("+447911000003", "skipped", "empty"), ("+447911000004", "skipped", "empty")]
    assert "Empty text (empty)" in format_log(log)


def test_the_preparer_counts_blank_texts_as_empty_for_broadcasts_and_triggers() -> None:
    from engine.core.dedupe import Dedupe
    from engine.core.phones import PhoneNormaliser
    from engine.core.policy import Policy
    from engine.core.prepare import AudienceRow, Preparer
    from engine.core.sms import measure
    from engine.core.templates import compile_template

    prep = Preparer(
        run_uid="r", normaliser=PhoneNormaliser("GB"), dedupe=Dedupe(10),
        template=compile_template("{lead.a}{apicontent.b}"), measure=measure,
        route=lambda phone, now: "s1", max_segments={}, context={},
    )
    rows = [AudienceRow(1, b'{"a": "hi"}', "+447911000001"),
            AudienceRow(2, b'{"a": "  "}', "+447911000002")]
    plan = prep.screen(rows)
    batch = prep.finish(plan, set(), set(), now=0.0)
    assert [m.text for m in batch.messages] == ["hi"]
    assert [(s.profile_id, s.reason) for s in batch.skipped] == [(2, "empty")]
    assert batch.counts["empty"] == 1 and batch.counts["too_long"] == 0

    # one message a day: the blank trigger sent nothing, so it does not use the allowance
    prep.policy = Policy(max_messages=1, period_days=1)
    triggers = [TriggerRow(1, 7, 2, b"{}", "+447911000002", None, b'{"b": "\\n"}'),
                TriggerRow(2, 8, 2, b"{}", "+447911000002", None, b'{"b": "yo"}'),
                TriggerRow(3, 9, 2, b"{}", "+447911000002", None, b'{"b": "again"}')]
    batch = prep.finish_triggers(triggers, ["+447911000002"] * 3, set(), now=0.0,
                                 policy_counts={})
    assert [(m.seq, m.text) for m in batch.messages] == [(8, "yo")]
    assert [(s.seq, s.reason) for s in batch.skipped] == [(7, "empty"), (9, "policy")]
    assert batch.counts["empty"] == 1
