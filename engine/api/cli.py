"""``herald serve`` and ``herald token create|list|revoke``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from engine.api.tokens import ROLES, Token, TokenStore
from engine.backends import run as run_backend

__all__ = ["add_api_parsers"]


def _with_tokens(args: argparse.Namespace, action: Callable[[TokenStore], int]) -> int:
    from engine.runner import Herald

    async def go() -> int:
        async with await Herald.open(args.config) as herald:
            return action(TokenStore(herald.store.conn))  # type: ignore[attr-defined]

    return run_backend(go)


def cmd_serve(args: argparse.Namespace) -> int:
    from engine.api.server import serve
    from engine.runner import Herald

    async def go() -> int:
        async with await Herald.open(args.config) as herald:
            await serve(herald, host=args.host, port=args.port)
        return 0

    return run_backend(go, args.backend)


def cmd_token_create(args: argparse.Namespace) -> int:
    def create(tokens: TokenStore) -> int:
        token, secret = tokens.create(args.role, name=args.name, group=args.group)
        print("keep this token: it is shown only once", file=sys.stderr)
        print(f"token {token.id} ({_describe(token)}): {secret}")
        return 0

    return _with_tokens(args, create)


def cmd_token_list(args: argparse.Namespace) -> int:
    def show(tokens: TokenStore) -> int:
        found = tokens.list()
        if args.json:
            out = msgspec.json.format(msgspec.json.encode({"tokens": found})).decode()
            sys.stdout.write(out + "\n")
            return 0
        if not found:
            print("no tokens yet: herald token create --role ROLE")
            return 0
        print(f"{'ID':>4}  {'ROLE':<7} {'GROUP':<12} {'CREATED':<19}  {'REVOKED':<19}  NAME")
        for t in found:
            print(f"{t.id:>4}  {t.role:<7} {t.group or '':<12} {_when(t.created_at):<19}  "
                  f"{_when(t.revoked_at):<19}  {t.name or ''}")
        return 0

    return _with_tokens(args, show)


def cmd_token_revoke(args: argparse.Namespace) -> int:
    def revoke(tokens: TokenStore) -> int:
        token = tokens.revoke(args.id)
        print(f"revoked token {token.id} ({_describe(token)}); a running server stops"
              f" taking it within {tokens.ttl:g} seconds")
        return 0

    return _with_tokens(args, revoke)


def _describe(token: Token) -> str:
    parts = [f"role {token.role}"]
    if token.group:
        parts.append(f"group {token.group}")
    if token.name:
        parts.append(f"name {token.name}")
    return ", ".join(parts)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0 to 65535, not {value}")
    return value


def add_api_parsers(subparsers: Any) -> None:
    """Register ``serve`` and ``token`` on the ``herald`` command's sub-parsers."""
    p = subparsers.add_parser("serve", help="serve the HTTP API (Ctrl-C or SIGTERM stops it)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=_port, default=8080, help="default: %(default)s")
    p.add_argument(
        "--backend", choices=["asyncio", "trio"],
        default=os.environ.get("HERALD_BACKEND") if os.environ.get("HERALD_BACKEND") == "trio"
        else "asyncio",
        help="event loop: asyncio (with uvloop) or trio (default: $HERALD_BACKEND, else asyncio)",
    )
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("token", help="create, list or revoke API tokens")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    pp = tsub.add_parser("create", help="create a token and print it (its last word)")
    pp.add_argument("--role", required=True, choices=ROLES,
                    help="viewer: read; sender: also import and send; admin: everything")
    pp.add_argument("--name", help="what the token is for")
    pp.add_argument("--group", help="uploads made with the token are tagged group-GROUP")
    pp.set_defaults(func=cmd_token_create)
    pp = tsub.add_parser("list", help="list tokens (never the tokens themselves)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_token_list)
    pp = tsub.add_parser("revoke", help="revoke a token")
    pp.add_argument("id", type=int, help="the token's id (herald token list)")
    pp.set_defaults(func=cmd_token_revoke)
