"""What every ``herald`` sub-command shares: the one way to open the workspace of
``--config``, JSON output, and Herald's errors turned into messages and exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from engine.backends import run as run_backend
from engine.errors import ConfigError, HeraldError, InputError, StoreError, TemplateError

__all__ = ["open_herald", "print_json", "run_command", "using"]

T = TypeVar("T")
_json = msgspec.json.Encoder()


def print_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.format(_json.encode(obj)).decode() + "\n")


async def open_herald(args: argparse.Namespace) -> Any:
    """The workspace of ``--config`` (or $HERALD_CONFIG, or ./herald.toml)."""
    from engine.runner import Herald

    return await Herald.open(getattr(args, "config", None))


def using(args: argparse.Namespace, action: Callable[[Any], Awaitable[T]]) -> T:
    """Open the workspace of ``--config``, await ``action(herald)`` in it, close it; on the
    backend of ``$HERALD_BACKEND``."""

    async def go() -> T:
        async with await open_herald(args) as herald:
            return await action(herald)

    return run_backend(go)


def run_command(args: argparse.Namespace) -> int:
    """``args.func(args)``'s exit code, Herald's errors printed on stderr and mapped to
    theirs: 2 bad usage or input, 1 the work failed, 130 interrupted."""
    try:
        code: int = args.func(args)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    except TemplateError as err:
        where = getattr(args, "template", None) or getattr(args, "file", None)
        print(f"{where}:{err}" if where else f"herald: {err}", file=sys.stderr)
        return 2
    except (InputError, StoreError) as err:  # StoreError: an unknown name, a refused request
        print(f"herald: {err}", file=sys.stderr)
        return 2
    except HeraldError as err:  # a plugin or a gateway could not do its part
        print(f"herald: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("herald: interrupted", file=sys.stderr)
        return 130
    return code
