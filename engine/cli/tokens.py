"""``herald token create|list|revoke``: the API's tokens, straight on the workspace's store."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from engine.api.tokens import ROLES, Token, TokenStore
from engine.cli.workspace import print_json, using

__all__ = ["add_token_parsers"]


def _with_tokens(
    args: argparse.Namespace, action: Callable[[TokenStore], Awaitable[int]]
) -> int:
    return using(args, lambda herald: action(TokenStore(herald.store)))


def cmd_token_create(args: argparse.Namespace) -> int:
    async def create(tokens: TokenStore) -> int:
        token, secret = await tokens.create(args.role, name=args.name, group=args.group)
        print("keep this token: it is shown only once", file=sys.stderr)
        print(f"token {token.id} ({_describe(token)}): {secret}")
        return 0

    return _with_tokens(args, create)


def cmd_token_list(args: argparse.Namespace) -> int:
    async def show(tokens: TokenStore) -> int:
        found = await tokens.list()
        if args.json:
            print_json({"tokens": found})
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
    async def revoke(tokens: TokenStore) -> int:
        token = await tokens.revoke(args.id)
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


def add_token_parsers(subparsers: Any) -> None:
    """Register ``token create|list|revoke`` on the ``herald`` command's sub-parsers."""
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
