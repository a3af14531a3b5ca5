"""The herald-json gateway simulator, over real loopback HTTP, on asyncio and trio."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from engine.cli.simulate import add_simulate_parser, options_from_args
from engine.simulator import GatewaySimulator, ReceiptSink, SimOptions

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def batch(*ids: str, segments: int = 1) -> dict[str, Any]:
    return {
        "messages": [
            {"id": i, "to": "+15551234567", "from": "HERALD", "text": "hi", "segments": segments}
            for i in ids
        ]
    }


def loopback_client(timeout: float = 5.0) -> httpx.AsyncClient:
    """A client that talks to loopback directly, whatever proxy the environment names."""
    return httpx.AsyncClient(timeout=timeout, trust_env=False)


async def settle(condition: Callable[[], bool]) -> None:
    """Wait up to 5 s for ``condition``: the simulator counts a receipt POST after the answer."""
    for _ in range(500):
        if condition():
            return
        await anyio.sleep(0.01)
    raise AssertionError("condition never became true")


async def test_accepts_a_batch_and_answers_one_result_per_message_in_order() -> None:
    async with GatewaySimulator() as sim, loopback_client() as client:
        assert sim.url.startswith("http://127.0.0.1:") and sim.port > 0
        response = await client.post(sim.send_url, json=batch("m1", "m2", "m3"))
        assert response.status_code == 200
        results = response.json()["results"]
        assert [r["id"] for r in results] == ["m1", "m2", "m3"]
        assert {r["status"] for r in results} == {"accepted"}
        assert len({r["provider_id"] for r in results}) == 3
        assert all(r["error"] is None for r in results)
        assert sim.accepted_ids == {"m1": 1, "m2": 1, "m3": 1}
        stats = sim.statistics()
        assert (stats.requests, stats.messages, stats.accepted) == (1, 3, 3)


async def test_a_batch_of_500_over_keep_alive() -> None:
    ids = [f"m{i}" for i in range(500)]
    async with GatewaySimulator() as sim, loopback_client() as client:
        for _ in range(3):
            response = await client.post(sim.send_url, json=batch(*ids))
            assert len(response.json()["results"]) == 500
        stats = sim.statistics()
        assert (stats.requests, stats.accepted, stats.accepted_twice) == (3, 1500, 500)


async def test_rejects_and_retries_per_message() -> None:
    async with GatewaySimulator(reject_rate=1.0, reject_code="bad_number") as sim:
        async with loopback_client() as client:
            results = (await client.post(sim.send_url, json=batch("a", "b"))).json()["results"]
            assert [(r["status"], r["error"]) for r in results] == [("rejected", "bad_number")] * 2
            sim.configure(reject_rate=0.0, retry_rate=1.0)
            results = (await client.post(sim.send_url, json=batch("a"))).json()["results"]
            assert results[0]["status"] == "retry"
        assert not sim.accepted_ids
        assert (sim.statistics().rejected, sim.statistics().retried) == (2, 1)


async def test_rates_mix_outcomes_reproducibly_with_a_seed() -> None:
    outcomes: list[list[str]] = []
    for _ in range(2):
        async with GatewaySimulator(reject_rate=0.3, retry_rate=0.2, seed=11) as sim:
            async with loopback_client() as client:
                response = await client.post(sim.send_url, json=batch(*map(str, range(1000))))
        statuses = [r["status"] for r in response.json()["results"]]
        outcomes.append(statuses)
        assert statuses.count("rejected") == pytest.approx(300, abs=50)
        assert statuses.count("retry") == pytest.approx(200, abs=50)
    assert outcomes[0] == outcomes[1]


async def test_server_errors_and_throttling_refuse_the_whole_request() -> None:
    async with GatewaySimulator(error_rate=1.0) as sim, loopback_client() as client:
        assert (await client.post(sim.send_url, json=batch("a"))).status_code == 500
        sim.configure(error_rate=0.0, throttle_rate=1.0, retry_after=2.5)
        response = await client.post(sim.send_url, json=batch("a"))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "3"
        assert response.json() == {"error": "throttled", "retry_after": 2.5}
        sim.configure(throttle_rate=0.0)
        assert (await client.post(sim.send_url, json=batch("a"))).status_code == 200
        stats = sim.statistics()
        assert (stats.errors, stats.throttled, stats.accepted) == (1, 1, 1)
        assert sim.accepted_ids == {"a": 1}


async def test_over_max_throughput_answers_429_with_the_wait() -> None:
    async with GatewaySimulator(max_throughput=100, burst=100) as sim:
        async with loopback_client() as client:
            first = await client.post(sim.send_url, json=batch(*map(str, range(80))))
            second = await client.post(sim.send_url, json=batch(*map(str, range(80, 160))))
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.headers["retry-after"] == "1"
    assert 0.5 < second.json()["retry_after"] <= 0.61
    assert sim.statistics().accepted == 80


async def test_a_timeout_hangs_past_the_client_and_may_still_accept() -> None:
    async with GatewaySimulator(timeout_rate=1.0, hang_accepts=True) as sim:
        async with loopback_client(timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(sim.send_url, json=batch("m1"))
            sim.configure(timeout_rate=0.0)
            # The client retries: a non-idempotent gateway has now sent it twice.
            await client.post(sim.send_url, json=batch("m1"))
        assert sim.accepted_ids["m1"] == 2
        assert sim.statistics().accepted_twice == 1
        assert sim.statistics().timeouts == 1


async def test_an_idempotent_gateway_answers_a_resubmission_with_the_first_provider_id() -> None:
    async with GatewaySimulator(idempotent=True) as sim, loopback_client() as client:
        first = (await client.post(sim.send_url, json=batch("m1"))).json()["results"][0]
        again = (await client.post(sim.send_url, json=batch("m1"))).json()["results"][0]
        assert again == first
        assert sim.accepted_ids["m1"] == 1
        assert (sim.statistics().duplicates, sim.statistics().accepted_twice) == (1, 0)


async def test_latency_delays_the_answer() -> None:
    async with GatewaySimulator(latency=0.1, jitter=0.02) as sim, loopback_client() as client:
        started = anyio.current_time()
        await client.post(sim.send_url, json=batch("a"))
        assert anyio.current_time() - started >= 0.08


async def test_receipts_are_posted_to_the_callback_after_the_delay() -> None:
    async with ReceiptSink() as sink:
        options = SimOptions(receipt_url=sink.url, receipt_delay=0.05, undelivered_rate=0.5, seed=3)
        async with GatewaySimulator(options) as sim, loopback_client() as client:
            results = []
            for chunk in (["a", "b", "c"], ["d", "e"]):
                response = await client.post(sim.send_url, json=batch(*chunk))
                results += response.json()["results"]
            with anyio.fail_after(5):
                receipts = await sink.wait(5)
            await settle(lambda: sim.statistics().receipts_sent == 5)
    assert {(r.id, r.provider_id) for r in receipts} == {
        (r["id"], r["provider_id"]) for r in results
    }
    statuses = {r.status for r in receipts}
    assert statuses == {"delivered", "undelivered"}
    assert all((r.error is None) == (r.status == "delivered") for r in receipts)


async def test_receipts_that_cannot_be_delivered_are_counted() -> None:
    async with ReceiptSink(status=500) as sink:
        async with GatewaySimulator(receipt_url=sink.url) as sim, loopback_client() as client:
            await client.post(sim.send_url, json=batch("a", "b"))
            await settle(lambda: sim.statistics().receipts_failed == 2)
            assert sim.statistics().receipts_sent == 0


async def test_malformed_requests_get_400_and_stats_are_served() -> None:
    async with GatewaySimulator() as sim, loopback_client() as client:
        assert (await client.post(sim.send_url, content=b"{not json")).status_code == 400
        missing_from = {"messages": [{"id": "a", "to": "+1", "text": "x"}]}
        response = await client.post(sim.send_url, json=missing_from)
        assert response.status_code == 400
        assert "from" in response.json()["error"]
        assert (await client.get(f"{sim.url}/send")).status_code == 405
        stats = (await client.get(f"{sim.url}/stats")).json()
        assert stats["bad_requests"] == 2 and stats["accepted"] == 0


async def test_a_raw_client_can_pipeline_keep_alive_requests_and_close() -> None:
    body = msgspec.json.encode(batch("x"))
    request = b"POST /send HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    closing = request.replace(b"host: x", b"host: x\r\nconnection: close")
    async with GatewaySimulator() as sim:
        async with await anyio.connect_tcp("127.0.0.1", sim.port) as stream:
            await stream.send(request + closing)
            received = b""
            with anyio.fail_after(5):
                while True:
                    try:
                        received += await stream.receive()
                    except anyio.EndOfStream:
                        break
    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert b"connection: close" in received
    assert sim.accepted_ids["x"] == 2


async def test_chunked_bodies_are_refused_with_411() -> None:
    async with GatewaySimulator() as sim, loopback_client() as client:

        async def chunks() -> Any:
            yield msgspec.json.encode(batch("a"))

        response = await client.post(sim.send_url, content=chunks())
        assert response.status_code == 411


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="loopback"):
        SimOptions(receipt_url="http://example.com/dlr")
    with pytest.raises(ValueError, match="error_rate"):
        SimOptions(error_rate=1.5)
    with pytest.raises(ValueError, match="must not exceed 1"):
        SimOptions(error_rate=0.6, throttle_rate=0.6)
    with pytest.raises(TypeError):
        GatewaySimulator(latnecy=0.1)


@pytest.fixture
def cli_server() -> Iterator[str]:
    script = Path(__file__).resolve().parent.parent / "bench" / "gateway_sim.py"
    cmd = [sys.executable, str(script), "--port", "0", "--announce", "--reject-rate", "1"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            yield child.stdout.readline().strip()
        finally:
            child.terminate()


def test_runs_from_the_command_line(cli_server: str) -> None:
    assert cli_server.startswith("http://127.0.0.1:")
    deadline = time.monotonic() + 10
    with httpx.Client(trust_env=False) as client:
        while True:
            try:
                response = client.post(f"{cli_server}/send", json=batch("a"))
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
    assert response.json()["results"][0]["status"] == "rejected"


def test_the_bench_script_still_exports_the_simulator() -> None:
    import bench.gateway_sim
    import engine.simulator

    assert bench.gateway_sim.GatewaySimulator is engine.simulator.GatewaySimulator
    assert bench.gateway_sim.ReceiptSink is engine.simulator.ReceiptSink


def simulate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herald")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_simulate_flags_map_to_sim_options() -> None:
    parser = simulate_parser()
    args = parser.parse_args(["simulate"])
    assert (args.port, args.host, args.backend) == (8025, "127.0.0.1", "asyncio")
    assert options_from_args(args) == SimOptions()
    expected = SimOptions(
        latency=0.01, jitter=0.005, max_throughput=2000, burst=100, error_rate=0.1,
        timeout_rate=0.1, hang=2.5, hang_accepts=True, throttle_rate=0.1, retry_after=2,
        reject_rate=0.2, reject_code="bad_number", retry_rate=0.1, idempotent=True,
        receipt_url="http://127.0.0.1:9/dlr", receipt_delay=0.5, undelivered_rate=0.3,
        undelivered_code="gone", track_ids=False, seed=7,
        inbound_url="http://127.0.0.1:9/inbound",
    )
    # Every field is set: a new SimOptions field needs a flag here too.
    assert all(getattr(expected, f.name) != f.default for f in msgspec.structs.fields(SimOptions))
    args = parser.parse_args([
        "simulate", "--port", "0", "--host", "localhost", "--backend", "trio",
        "--latency", "0.01", "--jitter", "0.005", "--max-throughput", "2000", "--burst", "100",
        "--error-rate", "0.1", "--timeout-rate", "0.1", "--hang", "2.5", "--hang-accepts",
        "--throttle-rate", "0.1", "--retry-after", "2", "--reject-rate", "0.2",
        "--reject-code", "bad_number", "--retry-rate", "0.1", "--idempotent",
        "--receipt-url", "http://127.0.0.1:9/dlr", "--receipt-delay", "0.5",
        "--undelivered-rate", "0.3", "--undelivered-code", "gone", "--no-track-ids",
        "--seed", "7", "--inbound-url", "http://127.0.0.1:9/inbound",
    ])
    assert (args.port, args.host, args.backend) == (0, "127.0.0.1", "trio")
    assert options_from_args(args) == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["--host", "0.0.0.0"],
        ["--host", "example.com"],
        ["--port", "70000"],
        ["--backend", "uvloop"],
        ["--latency", "soon"],
    ],
)
def test_simulate_refuses_bad_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        simulate_parser().parse_args(["simulate", *argv])
    assert exit_.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_simulate_refuses_options_that_do_not_fit(capsys: pytest.CaptureFixture[str]) -> None:
    args = simulate_parser().parse_args(["simulate", "--port", "0", "--error-rate", "1.5"])
    assert args.func(args) == 2
    assert "error_rate must be between 0 and 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("backend", "stop"), [("asyncio", signal.SIGINT), ("trio", signal.SIGTERM)]
)
def test_simulate_serves_until_signalled_then_prints_its_statistics(
    backend: str, stop: signal.Signals
) -> None:
    code = "import sys; from engine.cli.simulate import main; sys.exit(main())"
    cmd = [sys.executable, "-c", code, "--port", "0", "--backend", backend, "--reject-rate", "1"]
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            url = child.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:"), url
            with httpx.Client(trust_env=False, timeout=5) as client:
                response = client.post(f"{url}/send", json=batch("a", "b"))
            assert [r["status"] for r in response.json()["results"]] == ["rejected"] * 2
            child.send_signal(stop)
            out, err = child.communicate(timeout=10)
        finally:
            child.kill()
    assert child.returncode == 0, err
    stats = msgspec.json.decode(out.strip().splitlines()[-1])
    assert (stats["requests"], stats["messages"], stats["rejected"]) == (1, 2, 2)
    assert f"POST {url}/send" in err


def test_simulate_says_when_the_port_is_taken(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = simulate_parser().parse_args(["simulate", "--port", str(port)])
        # Should it listen after all, stop it rather than hang the suite.
        stop = threading.Timer(5, os.kill, (os.getpid(), signal.SIGINT))
        stop.start()
        try:
            assert args.func(args) == 1
        finally:
            stop.cancel()
    assert f"cannot listen on 127.0.0.1 port {port}" in capsys.readouterr().err
