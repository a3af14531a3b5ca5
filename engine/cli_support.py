"""Helpers shared by the ``herald`` sub-commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from engine.backends import run as run_backend

__all__ = ["open_herald", "print_json", "using"]

T = TypeVar("T")
_json = msgspec.json.Encoder()


def print_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.format(_json.encode(obj)).decode() + "\n")


async def open_herald(args: argparse.Namespace) -> Any:
    """The workspace of ``--config`` (or $HERALD_CONFIG, or ./herald.toml)."""
    from engine.runner import Herald

    return await Herald.open(getattr(args, "config", None))


def using(args: argparse.Namespace, action: Callable[[Any], Awaitable[T]]) -> T:
    """Open the workspace of ``--config``, await ``action(herald)`` in it, close it."""

    async def go() -> T:
        async with await open_herald(args) as herald:
            return await action(herald)

    return run_backend(go)


