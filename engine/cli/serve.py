"""``herald serve [--workers N]``: the HTTP API on the workspace of ``--config``.

With ``--workers N`` (N > 1, on a ``[cluster]`` only) the parent binds the socket once, then
runs N processes (``python -m engine.cli serve --fd FD``) that each open the workspace and
accept on that socket; any of them answers for any mailing, since the mailings live in
PostgreSQL. The parent passes SIGTERM and SIGINT on to them, waits for them and exits with
the worst of their exit codes; it restarts none, and when one exits it stops the others.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from engine.backends import BACKENDS, default_backend
from engine.backends import run as run_backend
from engine.cli.workspace import open_herald
from engine.errors import InputError

__all__ = ["add_serve_parser"]

#: Seconds between the parent's looks at its workers.
_POLL = 0.1
#: What the parent passes on to its workers.
_FORWARDED = (signal.SIGTERM, signal.SIGINT)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.workers > 1 and args.fd is None:
        return _serve_workers(args)
    from engine.api.server import serve

    async def go() -> int:
        async with await open_herald(args) as herald:
            await serve(herald, host=args.host, port=args.port, fd=args.fd)
        return 0

    return run_backend(go, args.backend)


def _check_workers(args: argparse.Namespace) -> None:
    """InputError unless the config of ``--config`` has a ``[cluster]`` table and an
    ``[api] server`` that runs on ``--backend``: refused once, before any worker starts."""
    from engine.api.server import server_for
    from engine.config import load_config
    from engine.plugins import load_plugins

    config = load_config(args.config, drivers=load_plugins().drivers)
    if config.cluster is None:
        raise InputError(f"--workers {args.workers} needs a [cluster] (the processes share"
                         " their mailings through PostgreSQL)")
    server_for(config.api, args.backend)


def _exit_code(returncode: int) -> int:
    """A child's exit code as a shell shows it: killed by signal S is 128 + S."""
    return 128 - returncode if returncode < 0 else returncode


def _worker_start(parent: int) -> Callable[[], None]:
    """A worker's ``preexec_fn``: it takes SIGTERM and SIGINT again (the parent blocks them
    while it starts the workers), and on Linux gets SIGTERM when ``parent`` dies (even by
    SIGKILL), so that no worker outlives the parent that waits for it."""
    prctl: Any = None
    if sys.platform.startswith("linux"):
        import ctypes

        prctl = ctypes.CDLL(None).prctl  # looked up before the fork: the child only calls it
    pr_set_pdeathsig = 1

    def start() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        if prctl is not None:
            prctl(pr_set_pdeathsig, signal.SIGTERM)
            if os.getppid() != parent:  # it died before the line above
                os._exit(1)

    return start


def _serve_workers(args: argparse.Namespace) -> int:
    from engine.api.server import bind_address, listen_or_refuse

    _check_workers(args)
    fd, port = listen_or_refuse(args.host, args.port)
    listener = socket.socket(fileno=fd)
    listener.listen(1024)  # connections wait in the backlog while the workers start
    command = [sys.executable, "-m", "engine.cli"]
    if args.config:
        command += ["--config", args.config]
    command += ["serve", "--fd", str(fd), "--backend", args.backend]
    children: list[subprocess.Popen[bytes]] = []
    forwarded: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        forwarded.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in _FORWARDED}
    start = _worker_start(os.getpid())
    try:
        print(f"herald: {args.workers} workers on http://{bind_address(args.host, port)}",
              file=sys.stderr, flush=True)
        # A signal while they start waits until all are started, then reaches all once.
        signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
        try:
            for _ in range(args.workers):
                # Each in its own process group: Ctrl-C reaches the parent only, which
                # passes it on once.
                children.append(subprocess.Popen(command, pass_fds=(fd,), process_group=0,
                                                 preexec_fn=start))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
        listener.close()  # the workers hold it now
        stopping = False
        while [child.poll() for child in children].count(None):  # polls every one
            stopping = stopping or bool(forwarded)  # passed on already: not a second time
            if not stopping and any(child.returncode is not None for child in children):
                stopping = True  # one ended: the service is down, stop the others
                for child in children:
                    if child.poll() is None:
                        child.send_signal(signal.SIGTERM)
            time.sleep(_POLL)
    finally:
        listener.close()
        for child in children:  # only if the parent itself failed: leave no orphans
            if child.poll() is None:
                child.kill()
                child.wait()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return max((_exit_code(child.returncode) for child in children), default=0)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {value}")
    return value


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of workers: {text!r}") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError(f"workers are 1 to 256, not {value}")
    return value


def add_serve_parser(subparsers: Any) -> None:
    """Register ``serve`` on the ``herald`` command's sub-parsers."""
    p = subparsers.add_parser("serve", help="serve the HTTP API (Ctrl-C or SIGTERM stops it)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=_port, default=8080, help="default: %(default)s")
    p.add_argument(
        "--backend", choices=BACKENDS, default=default_backend(),
        help="event loop: asyncio (with uvloop) or trio (default: $HERALD_BACKEND, else asyncio)",
    )
    p.add_argument(
        "--workers", type=_workers, default=1, metavar="N",
        help="N processes on one socket, each answering for any mailing; needs a [cluster]"
             " (they share the mailings through PostgreSQL). SIGTERM and Ctrl-C reach them"
             " all; when one exits the others are stopped, and none is restarted: leave"
             " that to your supervisor (default: %(default)s, this process)",
    )
    # One of the --workers processes: serve on the socket its parent bound.
    p.add_argument("--fd", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)
