"""``herald serve``: the HTTP API on the workspace of ``--config``."""

from __future__ import annotations

import argparse
from typing import Any

from engine.backends import BACKENDS, default_backend
from engine.backends import run as run_backend
from engine.cli.workspace import open_herald

__all__ = ["add_serve_parser"]


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.api.server import serve

    async def go() -> int:
        async with await open_herald(args) as herald:
            await serve(herald, host=args.host, port=args.port)
        return 0

    return run_backend(go, args.backend)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {value}")
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
    p.set_defaults(func=cmd_serve)
