"""``herald simulate``: run the herald-json gateway simulator until SIGINT or SIGTERM.

Output: the base URL as the first line on stdout once it listens (how to use it goes to
stderr) and, on stop, its ``SimStats`` as one JSON line on stdout. Exit codes: 0 stopped by a
signal; 1 could not listen; 2 bad options.

``herald simulate --smpp`` runs the SMPP 3.4 SMSC simulator instead
(``engine.simulator.smpp``, port 2775 by default): its first line is
``smpp://HOST:PORT``, its statistics on stop an ``SmppStats`` JSON line. Besides its own
flags (``--system-id``, ``--password``, ``--no-answer-rate``, ``--unbind-after``, ...), it
reads ``--latency``, ``--error-rate``, ``--throttle-rate`` (there: submits per second above
which submit_sm is answered ESME_RTHROTTLED), ``--receipt-delay``, ``--undelivered-rate``
and ``--seed``.
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
from engine.simulator.smpp import DEFAULT_PORT as SMPP_PORT
from engine.simulator.smpp import SmppOptions, SmppSimulator, SmppStats

__all__ = [
    "DEFAULT_PORT",
    "add_option_arguments",
    "add_simulate_parser",
    "cmd_simulate",
    "main",
    "options_from_args",
    "serve",
    "serve_smpp",
    "smpp_options_from_args",
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

# SMPP-only flags (``SmppOptions`` fields the HTTP simulator does not have).
_SMPP_HELP = {
    "system_id": "the system_id a bind must give (default herald)",
    "password": "the password a bind must give (default secret)",
    "no_answer_rate": "share of submit_sm never answered",
    "retry_error_rate": "share of submit_sm answered ESME_RSYSERR (retryable)",
    "error_status": "command status of --error-rate answers (default 11, ESME_RINVDSTADR)",
    "throttle_burst": "submits at once under --throttle-rate (0 = a tenth of a second's)",
    "id_format": "message ids in submit_sm_resp: hex or decimal",
    "id_width": "zero-pad message ids to this many digits (0 = none)",
    "unbind_after": "send an unbind after this many accepted submits, once (0 = never)",
    "drop_after": "close the socket at this submit, unanswered, once (0 = never)",
    "receipt_form": "receipts as tlv, text, or both",
    "receipt_id_format": "ids in receipts: hex or decimal (default: --id-format)",
    "undelivered_err": "err of an UNDELIV receipt",
    "receipt_before_resp": "send the receipt before the submit_sm_resp",
    "redeliver_after": "seconds before an unanswered deliver_sm is sent again",
    "enquire_link_answer": "answer enquire_link",
    "record": "keep every submit and reassemble messages (memory grows)",
}
_SMPP_SHARED = ("latency", "error_rate", "throttle_rate", "receipt_delay", "undelivered_rate",
                "seed")
_SMPP_TYPES: dict[Any, type] = {**_FLAG_TYPES, str | None: str}

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


def add_smpp_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--smpp`` and the flags of the SMPP mode that the HTTP mode does not have."""
    group = parser.add_argument_group(
        "SMPP mode", "With --smpp, --latency, --error-rate, --throttle-rate (submits per"
        " second above which submit_sm is answered ESME_RTHROTTLED), --receipt-delay,"
        " --undelivered-rate and --seed apply too.")
    group.add_argument("--smpp", action="store_true",
                       help=f"run an SMPP 3.4 SMSC instead (default port {SMPP_PORT})")
    fields = {f.name: f for f in msgspec.structs.fields(SmppOptions)}
    for name, text in _SMPP_HELP.items():
        field = fields[name]
        flag = "--" + name.replace("_", "-")
        if field.type is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction,
                               default=field.default, dest=name, help=text)
        elif name in ("id_format", "receipt_id_format"):
            group.add_argument(flag, choices=["hex", "decimal"], default=field.default,
                               dest=name, help=text)
        elif name == "receipt_form":
            group.add_argument(flag, choices=["tlv", "text", "both"], default=field.default,
                               dest=name, help=text)
        else:
            group.add_argument(flag, type=_SMPP_TYPES.get(field.type, str),
                               default=field.default, dest=name, help=text)


def smpp_options_from_args(args: argparse.Namespace) -> SmppOptions:
    """The ``SmppOptions`` the flags ask for (``ValueError`` when they do not fit)."""
    names = (*_SMPP_HELP, *_SMPP_SHARED)
    return SmppOptions(**{name: getattr(args, name) for name in names})


async def serve_smpp(
    options: SmppOptions, *, host: str = DEFAULT_HOST, port: int = SMPP_PORT
) -> SmppStats:
    """Run the SMSC simulator until SIGINT or SIGTERM; return its statistics as it stops.

    Prints ``smpp://HOST:PORT`` as the first line on stdout once it listens. Raises
    ``HeraldError`` when it cannot listen on ``host:port``.
    """
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with contextlib.AsyncExitStack() as stack:
            simulator = SmppSimulator(options, host=host, port=port)
            try:
                sim = await stack.enter_async_context(simulator)
            except OSError as err:
                raise HeraldError(
                    f"cannot listen on {host} port {port}: {err.strerror or err};"
                    " pick another --port (0 = any free one)"
                ) from err
            print(f"smpp://{sim.address}", flush=True)
            print(f"SMPP 3.4 SMSC simulator on {sim.address}: bind with system_id"
                  f" {options.system_id!r}, password {options.password!r}; Ctrl-C stops it",
                  file=sys.stderr, flush=True)
            async for _ in signals:
                break
    return simulator.statistics()


def _cmd_smpp(args: argparse.Namespace) -> int:
    try:
        options = smpp_options_from_args(args)
    except ValueError as err:
        print(f"herald simulate: {err}", file=sys.stderr)
        return 2
    port = args.port if args.port_given else SMPP_PORT
    try:
        stats = run_backend(partial(serve_smpp, options, host=args.host, port=port),
                            args.backend)
    except HeraldError as err:
        print(f"herald simulate: {err}", file=sys.stderr)
        return 1
    print(msgspec.json.encode(stats).decode(), flush=True)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    """``herald simulate``: serve until SIGINT or SIGTERM, then print the statistics."""
    if getattr(args, "smpp", False):
        return _cmd_smpp(args)
    defaults = {f.name: f.default for f in msgspec.structs.fields(SmppOptions)}
    extra = [name for name in _SMPP_HELP if getattr(args, name, defaults[name]) !=
             defaults[name]]
    if extra:
        flags = ", ".join("--" + name.replace("_", "-") for name in extra)
        print(f"herald simulate: {flags} only with --smpp", file=sys.stderr)
        return 2
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
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, action=_PortAction,
                        help=f"TCP port (default {DEFAULT_PORT}, {SMPP_PORT} with --smpp;"
                        " 0 picks a free one)")
    parser.add_argument("--host", type=_host, default=DEFAULT_HOST,
                        help=f"loopback address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--backend", choices=BACKENDS, default=default_backend(),
                        help="async backend (default: $HERALD_BACKEND, else asyncio;"
                        " asyncio uses uvloop when installed)")
    add_option_arguments(parser)
    add_smpp_arguments(parser)
    parser.set_defaults(func=cmd_simulate, port_given=False)


class _PortAction(argparse.Action):
    """Store ``--port`` and note that it was given (``--smpp`` has another default)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.port_given = True


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
