"""``herald simulate``: run the herald-json gateway simulator until SIGINT or SIGTERM.

Output: the base URL as the first line on stdout once it listens (how to use it goes to
stderr) and, on stop, its ``SimStats`` as one JSON line on stdout. Exit codes: 0 stopped by a
signal; 1 could not listen; 2 bad options.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any, TypeVar

import anyio
import msgspec

from engine.backends import BACKENDS, default_backend
from engine.backends import run as run_backend
from engine.errors import HeraldError
from engine.simulator.http import DEFAULT_HOST, loopback_host
from engine.simulator.options import SimOptions, SimStats
from engine.simulator.server import GatewaySimulator

__all__ = [
    "DEFAULT_PORT",
    "add_option_arguments",
    "add_simulate_parser",
    "cmd_simulate",
    "main",
    "options_from_args",
    "serve",
]

DEFAULT_PORT = 8025
_DESCRIPTION = (
    "Run a fake SMS gateway speaking herald-json on loopback until Ctrl-C or SIGTERM. "
    "Prints its URL first and its statistics (JSON) when it stops."
)
_FLAG_TYPES: dict[Any, type] = {float: float, int: int, int | None: int}
_HELP = {
    "latency": "seconds before each answer",
    "jitter": "vary the latency by up to this many seconds either way",
    "max_throughput": "messages per second before answering 429 (0 = unlimited)",
    "burst": "messages at once under --max-throughput (0 = one second's worth)",
    "error_rate": "share of requests answered 500",
    "timeout_rate": "share of requests never answered",
    "hang": "seconds an unanswered request keeps its connection",
    "hang_accepts": "process the messages of an unanswered request anyway",
    "throttle_rate": "share of requests answered 429",
    "retry_after": "seconds a random 429 asks the client to wait",
    "reject_rate": "share of messages rejected",
    "reject_code": "error code of a rejected message",
    "retry_rate": "share of messages answered 'retry'",
    "idempotent": "answer a resubmitted accepted id with its first provider id",
    "receipt_url": "POST delivery receipts here (http:// on loopback)",
    "receipt_delay": "seconds from acceptance to receipt",
    "inbound_url": "POST recipients' replies here (POST /inbound relays them; http:// on"
                   " loopback)",
    "undelivered_rate": "share of receipts that say 'undelivered'",
    "undelivered_code": "error code of an undelivered receipt",
    "track_ids": "count acceptances per message id (memory grows with the ids)",
    "seed": "random seed, for reproducible outcomes",
}

T = TypeVar("T")


def add_simulate_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``simulate`` command on ``subparsers`` (``parser.add_subparsers()``).

    Its arguments carry ``func=cmd_simulate``: ``args.func(args)`` runs it, returning the
    exit code.
    """
    parser = subparsers.add_parser(
        "simulate", help="run a fake herald-json SMS gateway on loopback",
        description=_DESCRIPTION,
    )
    _add_arguments(parser)


def add_option_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per ``SimOptions`` field: ``--reject-rate``, ``--[no-]track-ids``, ..."""
    group = parser.add_argument_group("gateway behaviour")
    for field in msgspec.structs.fields(SimOptions):
        flag = "--" + field.name.replace("_", "-")
        text = _HELP.get(field.name)
        if field.type is bool:
            action = argparse.BooleanOptionalAction
            group.add_argument(flag, action=action, default=field.default, dest=field.name,
                               help=text)
        else:
            kind = _FLAG_TYPES.get(field.type, str)
            group.add_argument(flag, type=kind, default=field.default, dest=field.name,
                               help=text)


def options_from_args(args: argparse.Namespace) -> SimOptions:
    """The ``SimOptions`` that the flags of ``add_option_arguments`` ask for.

    Raises ``ValueError`` when they do not fit together (a rate over 1, say).
    """
    return SimOptions(**{f.name: getattr(args, f.name) for f in msgspec.structs.fields(SimOptions)})


async def serve(
    options: SimOptions, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> SimStats:
    """Run a simulator until SIGINT or SIGTERM; return its statistics as it stops.

    Prints the base URL as the first line on stdout once it listens. Raises ``HeraldError``
    when it cannot listen on ``host:port``.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with contextlib.AsyncExitStack() as stack:
            simulator = GatewaySimulator(options, host=host, port=port)
            try:
                sim = await stack.enter_async_context(simulator)
            except OSError as err:
                raise HeraldError(
                    f"cannot listen on {host} port {port}: {err.strerror or err};"
                    " pick another --port (0 = any free one)"
                ) from err
            print(sim.url, flush=True)
            print(f"herald-json gateway simulator: POST {sim.send_url}, GET {sim.url}/stats;"
                  " Ctrl-C stops it", file=sys.stderr, flush=True)
            async for _ in signals:
                break
    return simulator.statistics()


def cmd_simulate(args: argparse.Namespace) -> int:
    """``herald simulate``: serve until SIGINT or SIGTERM, then print the statistics."""
    try:
        options = options_from_args(args)
    except ValueError as err:
        print(f"herald simulate: {err}", file=sys.stderr)
        return 2
    try:
        stats = run_backend(partial(serve, options, host=args.host, port=args.port), args.backend)
    except HeraldError as err:
        print(f"herald simulate: {err}", file=sys.stderr)
        return 1
    print(msgspec.json.encode(stats).decode(), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``herald simulate`` on its own; returns the exit code."""
    parser = argparse.ArgumentParser(prog="herald simulate", description=_DESCRIPTION)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--host", type=_host, default=DEFAULT_HOST,
                        help=f"loopback address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--backend", choices=BACKENDS, default=default_backend(),
                        help="async backend (default: $HERALD_BACKEND, else asyncio;"
                        " asyncio uses uvloop when installed)")
    add_option_arguments(parser)
    parser.set_defaults(func=cmd_simulate)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port (0-65535): {text!r}")
    return port


def _host(text: str) -> str:
    try:
        return loopback_host(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


if __name__ == "__main__":
    sys.exit(main())
