"""The fault matrix: mailings through the ``http`` driver to gateways that misbehave.

Each case runs a mailing in-process (``Herald`` on a TOML config in ``tmp_path``, as
``test_e2e_simulator.py`` does) against either the gateway simulator or a scripted stdlib
threaded server (``tests.torture.sink.Sink``), with one request per message
(``batch_size = 1``) and in batches, on asyncio and trio, and ends with the same
accounting (``tests.torture.accounting.account``): every recipient in exactly one final
state, no id accepted twice by a gateway that does not dedupe, ``unknown`` only after an
ambiguous attempt and only for what the gateway saw, sent == accepted. Then each case
states what a user would expect of that fault (everything sent, or unknown only where the
gateway may have the message).

Faults are seeded (the script's or the simulator's ``random.Random``), so a failure
replays; times are short (timeouts of tenths of a second) and every server is on
127.0.0.1.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.mailing_log import MailingLog
from engine.runner import Herald
from engine.simulator import GatewaySimulator
from engine.store.base import ImportRecord
from tests.torture.accounting import Accounting, account
from tests.torture.sink import ANSWER, Action, Script, Sink
from tests.torture.workspace import http_config

pytestmark = pytest.mark.anyio


@dataclass(frozen=True)
class Mode:
    """How messages go to the gateway: one per request, or in batches."""

    name: str
    batch: int
    connections: int
    concurrency: int
    messages: int


SINGLE = Mode("single", batch=1, connections=8, concurrency=8, messages=80)
BATCH = Mode("batch", batch=20, connections=4, concurrency=2, messages=200)
MODES = [pytest.param(SINGLE, id="single"), pytest.param(BATCH, id="batch")]
GATEWAYS = [pytest.param(True, id="idempotent"), pytest.param(False, id="not-idempotent")]
#: Whether a gateway that gives no answer took the messages first (the second half slow).
TAKEN = [pytest.param(True, id="taken"),
         pytest.param(False, id="not-taken", marks=pytest.mark.slow)]


async def mail(
    tmp_path: Path, url: str, mode: Mode, *, idempotent: bool, answer_within: float = 0.3,
    rate: float = 0, burst: int = 0, messages: int | None = None,
) -> tuple[MailingLog, Path]:
    """Send one mailing to ``messages`` recipients through ``url``; its log and db."""
    path = tmp_path / "herald.toml"
    path.write_text(http_config(
        url, batch=mode.batch, connections=mode.connections, timeout=answer_within,
        idempotent=idempotent, rate=rate, burst=burst, concurrency=mode.concurrency,
        retry_base=0.02, retry_max=0.1,
    ), encoding="utf-8")
    async with await Herald.open(path) as herald:
        db = await herald.store.database_id("main", create=True)
        rid = await herald.store.resource_id("news")
        n = messages or mode.messages
        await herald.store.import_profiles(
            db, [ImportRecord(None, f"+4479{i:08d}", None, {}) for i in range(n)],
            matching="phone", resource_id=rid,
        )
        log = await herald.send(resource="news", database="main", template="hello")
    return log, tmp_path / "herald.db"


def check_sink(
    log: MailingLog, db: Path, sink: Sink, *, expected: int,
    unseen_may_be: tuple[str, ...] = (),
) -> Accounting:
    ledger = sink.ledger
    return account(db, log.run_id, seen=ledger.seen, accepted=ledger.accepted,
                   gateway_idempotent=sink.idempotent, recipients=expected,
                   phones=ledger.phones, unseen_may_be=unseen_may_be)


def every_sent(result: Accounting, expected: int) -> None:
    assert result.states["sent"] == expected, dict(result.states)


def scripted(seed: int, fault: Action, rate: float, *, first: int = 1) -> Script:
    """``fault`` for a seeded ``rate`` of requests (and always for request ``first``)."""
    rng = random.Random(seed)

    def script(n: int, messages: Sequence[dict[str, Any]]) -> Action:
        return fault if n == first or rng.random() < rate else ANSWER

    return script


# -- the scripted stdlib server ------------------------------------------------------------


@pytest.mark.parametrize("idempotent", GATEWAYS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("accept", TAKEN)
async def test_stalls_past_the_timeout(
    tmp_path: Path, mode: Mode, idempotent: bool, accept: bool
) -> None:
    fault = Action("stall", accept=accept, delay=1.0)
    with Sink(idempotent=idempotent, script=scripted(1, fault, 0.1)) as sink:
        log, db = await mail(tmp_path, sink.url, mode, idempotent=idempotent, answer_within=0.3)
        result = check_sink(log, db, sink, expected=mode.messages)
    if idempotent:  # retried under the same ids: the gateway dedupes
        every_sent(result, mode.messages)
    else:  # the request was written, no answer came: unknown, never re-sent
        assert result.states["unknown"] > 0
        assert set(result.unknown_reasons) == {"timeout"}
        assert result.states["sent"] + result.states["unknown"] == mode.messages


@pytest.mark.parametrize("idempotent", GATEWAYS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("accept", TAKEN)
async def test_reset_before_answering(
    tmp_path: Path, mode: Mode, idempotent: bool, accept: bool
) -> None:
    fault = Action("reset_before", accept=accept)
    with Sink(idempotent=idempotent, script=scripted(2, fault, 0.1)) as sink:
        log, db = await mail(tmp_path, sink.url, mode, idempotent=idempotent)
        result = check_sink(log, db, sink, expected=mode.messages)
    if idempotent:
        every_sent(result, mode.messages)
    else:
        assert result.states["unknown"] > 0
        # the reset is what makes them unknown; on a loaded machine another answer may
        # also come too late (0.3 s), and a timeout is then as correct
        assert "connection_lost" in result.unknown_reasons
        assert set(result.unknown_reasons) <= {"connection_lost", "timeout"}
        assert result.states["sent"] + result.states["unknown"] == mode.messages


@pytest.mark.parametrize("idempotent", GATEWAYS)
@pytest.mark.parametrize("mode", MODES)
async def test_reset_right_after_answering(tmp_path: Path, mode: Mode, idempotent: bool) -> None:
    # a RST that follows the answer at once can destroy it in the client's socket, and the
    # next request may already be on that connection: both may have reached the gateway.
    # The client cannot tell a request the server never read from one it read and lost
    # the answer of, so an unread one is rightly unknown (connection_lost), never re-sent.
    with Sink(idempotent=idempotent, script=scripted(3, Action("reset_after"), 0.2)) as sink:
        log, db = await mail(tmp_path, sink.url, mode, idempotent=idempotent)
        result = check_sink(log, db, sink, expected=mode.messages,
                            unseen_may_be=("connection_lost",))
    if idempotent:
        every_sent(result, mode.messages)
    else:
        assert set(result.unknown_reasons) <= {"connection_lost"}
        assert result.states["sent"] + result.states["unknown"] == mode.messages


@pytest.mark.slow
@pytest.mark.parametrize("idempotent", GATEWAYS)
@pytest.mark.parametrize("mode", MODES)
async def test_reset_of_an_idle_connection(tmp_path: Path, mode: Mode, idempotent: bool) -> None:
    # paced so that the RST (30 ms after the answer, time for the client to read it) comes
    # while the connection is idle: the next request must not be written onto it
    fault = Action("reset_after", linger=0.03)
    # (a paced batch goes in parts of burst / 2 segments: 20 here, every 100 ms)
    rate, burst, n = (15, 0, 30) if mode is SINGLE else (200, 40, 200)
    with Sink(idempotent=idempotent, script=scripted(3, fault, 0.3)) as sink:
        log, db = await mail(tmp_path, sink.url, mode, idempotent=idempotent, rate=rate,
                             burst=burst, messages=n)
        result = check_sink(log, db, sink, expected=n)
    assert result.states["unknown"] == 0, dict(result.unknown_reasons)
    every_sent(result, n)


@pytest.mark.parametrize("mode", MODES)
async def test_server_errors_are_retried(tmp_path: Path, mode: Mode) -> None:
    rng = random.Random(4)

    def script(n: int, messages: Sequence[dict[str, Any]]) -> Action:
        if n == 0 or rng.random() < 0.25:
            return Action("status", status=rng.choice([500, 502, 503]))
        return ANSWER

    with Sink(script=script) as sink:
        log, db = await mail(tmp_path, sink.url, mode, idempotent=False)
        result = check_sink(log, db, sink, expected=mode.messages)
    every_sent(result, mode.messages)
    assert sink.ledger.requests > log.sent // mode.batch  # the errors did happen


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_bursts_of_429_with_retry_after(tmp_path: Path, mode: Mode) -> None:
    throttled = Action("status", status=429, retry_after_header="1", retry_after_body=0.1)

    def script(n: int, messages: Sequence[dict[str, Any]]) -> Action:
        return throttled if n % 15 < 5 else ANSWER  # bursts of five 429s

    with Sink(script=script) as sink:
        log, db = await mail(tmp_path, sink.url, mode, idempotent=False)
        result = check_sink(log, db, sink, expected=mode.messages)
    every_sent(result, mode.messages)
    assert result.states["failed"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_a_listen_backlog_of_one(tmp_path: Path, mode: Mode) -> None:
    # every answer closes its connection, so each request connects anew into a queue of
    # one: connects wait for SYN retransmits, some past the timeout. A request that timed
    # out while connecting was never written, so none may end unknown.
    closing = Action(close=True)
    with Sink(backlog=1, script=lambda n, m: closing) as sink:
        log, db = await mail(tmp_path, sink.url, mode, idempotent=False, answer_within=0.5)
        result = check_sink(log, db, sink, expected=mode.messages)
    assert result.states["unknown"] == 0, dict(result.unknown_reasons)
    every_sent(result, mode.messages)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_slow_answers_under_the_timeout(tmp_path: Path, mode: Mode) -> None:
    rng = random.Random(6)

    def script(n: int, messages: Sequence[dict[str, Any]]) -> Action:
        return Action(delay=rng.uniform(0.02, 0.15))

    with Sink(script=script) as sink:
        log, db = await mail(tmp_path, sink.url, mode, idempotent=False, answer_within=0.6)
        result = check_sink(log, db, sink, expected=mode.messages)
    every_sent(result, mode.messages)
    assert set(sink.ledger.seen.values()) == {1}  # no request written twice


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_a_gateway_that_closes_idle_connections(tmp_path: Path, mode: Mode) -> None:
    # paced so that each connection sits idle longer than the gateway keeps it: the next
    # request meets a closed connection, which the gateway never read from
    rate, burst = (25, 0) if mode is SINGLE else (100, 40)  # batches: 20 every 200 ms
    with Sink(idle_close=0.02) as sink:
        log, db = await mail(tmp_path, sink.url, mode, idempotent=False, rate=rate,
                             burst=burst, messages=40 if mode is SINGLE else 100)
        expected = 40 if mode is SINGLE else 100
        result = check_sink(log, db, sink, expected=expected)
    assert result.states["unknown"] == 0, dict(result.unknown_reasons)
    every_sent(result, expected)
    assert sink.ledger.connections > 2  # the gateway did close them


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
async def test_every_second_at_the_gateway_holds_at_most_rate_plus_burst(
    tmp_path: Path, mode: Mode
) -> None:
    rate, burst = 100, 10
    rng = random.Random(7)

    def script(n: int, messages: Sequence[dict[str, Any]]) -> Action:
        if rng.random() < 0.1:
            return Action("status", status=503)  # retries are paced too
        return Action(delay=rng.uniform(0.0, 0.05))

    with Sink(script=script) as sink:
        log, db = await mail(tmp_path, sink.url, mode, idempotent=False, answer_within=1.0,
                             rate=rate, burst=burst, messages=250)
        check_sink(log, db, sink, expected=250)
    arrivals = sorted(sink.ledger.arrivals)
    # windows of 1 s less 20 ms: the server timestamps on arrival, a little after release
    worst = max(
        sum(seg for t, seg in arrivals[i:] if t < t0 + 0.98) for i, (t0, _) in enumerate(arrivals)
    )
    assert worst <= rate + burst, f"{worst} segments within one second"


# -- the gateway simulator -----------------------------------------------------------------


def rate_for(mode: Mode) -> float:
    """A fault rate that hits a few of the mode's requests (batches are few)."""
    return 0.1 if mode is SINGLE else 0.3


class SeeingSimulator(GatewaySimulator):
    """The simulator, also noting the ids of every request that reached it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.seen: set[str] = set()

    async def _answer(self, method: bytes, target: bytes, body: bytes) -> bytes | None:
        if method == b"POST" and target != b"/stats":
            try:
                self.seen.update(m["id"] for m in json.loads(body)["messages"])
            except (ValueError, KeyError, TypeError):
                pass
        return await super()._answer(method, target, body)


async def simulate(tmp_path: Path, mode: Mode, *, answer_within: float = 0.3,
                   **options: Any) -> tuple[Accounting, MailingLog, SeeingSimulator]:
    idempotent = bool(options.get("idempotent", False))
    async with SeeingSimulator(**options) as sim:
        log, db = await mail(tmp_path, sim.send_url, mode, idempotent=idempotent,
                             answer_within=answer_within)
    result = account(db, log.run_id, seen=sim.seen, accepted=sim.accepted_ids,
                     gateway_idempotent=idempotent, recipients=mode.messages)
    return result, log, sim


@pytest.mark.parametrize("idempotent", GATEWAYS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("hang_accepts", TAKEN)
async def test_simulator_timeouts(
    tmp_path: Path, mode: Mode, idempotent: bool, hang_accepts: bool
) -> None:
    result, _, sim = await simulate(tmp_path, mode, timeout_rate=rate_for(mode), hang=1.0,
                                    hang_accepts=hang_accepts, idempotent=idempotent, seed=8)
    assert sim.statistics().timeouts > 0
    if idempotent:
        every_sent(result, mode.messages)
    else:
        assert set(result.unknown_reasons) == {"timeout"}
        assert result.states["sent"] + result.states["unknown"] == mode.messages


@pytest.mark.parametrize("mode", MODES)
async def test_simulator_errors_throttling_and_slow_answers(tmp_path: Path, mode: Mode) -> None:
    result, _, sim = await simulate(tmp_path, mode, answer_within=0.5, error_rate=rate_for(mode),
                                    throttle_rate=rate_for(mode), retry_after=0.05, latency=0.01,
                                    jitter=0.01, seed=9)
    stats = sim.statistics()
    assert stats.errors > 0 and stats.throttled > 0
    every_sent(result, mode.messages)


@pytest.mark.parametrize("mode", MODES)
async def test_simulator_over_its_throughput(tmp_path: Path, mode: Mode) -> None:
    result, _, sim = await simulate(tmp_path, mode, max_throughput=400, burst=20, seed=10)
    assert sim.statistics().throttled > 0
    every_sent(result, mode.messages)
