"""``herald segment create|count|show``: the command line of segments.

Handlers raise Herald's errors and let ``engine.cli.main`` turn them into messages and exit
codes (2 for a bad condition or input, 1 for an unknown segment or database).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import msgspec

from engine.errors import StoreError
from engine.segments.ops import (
    SegmentInfo,
    count_segment,
    create_segment,
    read_profile_ids,
    show_segment,
)
from engine.store.sqlite import SQLiteStore

__all__ = ["add_segment_parsers"]

_json = msgspec.json.Encoder()

Action = Callable[[SQLiteStore, dict[str, Callable[..., Any]]], Any]


def _print_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.format(_json.encode(obj)).decode() + "\n")


def _with_store(args: argparse.Namespace, action: Action) -> Any:
    """Open the workspace of ``args.config`` and run ``action(store, functions)`` in it."""

    async def go() -> Any:
        from engine.runner import Herald

        herald = await Herald.open(args.config)
        async with herald:
            if not isinstance(herald.store, SQLiteStore):
                raise StoreError("segments need the SQLite store")
            return action(herald.store, herald.plugins.template_functions())

    return anyio.run(go)


def cmd_segment_create(args: argparse.Namespace) -> int:
    ids = read_profile_ids(args.ids) if args.ids is not None else None

    def create(store: SQLiteStore, functions: dict[str, Callable[..., Any]]) -> Any:
        return create_segment(store, args.name, args.database, args.where,
                              profile_ids=ids, functions=functions)

    segment = _with_store(args, create)
    if args.json:
        _print_json(segment)
    else:
        size = "" if ids is None else f" of {len(ids):,} profiles"
        print(f"created {segment.kind} segment {segment.name!r}{size}"
              f" on database {segment.database!r}")
    return 0


def cmd_segment_count(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    count = _with_store(
        args, lambda store, functions: count_segment(store, args.name, now,
                                                     functions=functions))
    if args.json:
        _print_json({"segment": args.name, "count": count, "at": now.isoformat()})
    else:
        print(count)
    return 0


def cmd_segment_show(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    info: SegmentInfo = _with_store(
        args, lambda store, functions: show_segment(store, args.name, now, sample=args.sample,
                                                    functions=functions))
    if args.json:
        _print_json(info)
        return 0
    print(f"segment   {info.name}")
    print(f"kind      {info.kind}")
    print(f"database  {info.database}")
    if info.condition is not None:
        print(f"where     {info.condition}")
        for part in info.python_only:  # the rest is judged in SQL
            print(f"python    {part}")
    print(f"count     {info.count:,}")
    for number, member in enumerate(info.sample):
        label = "sample" if number == 0 else ""
        contact = "  ".join(x for x in (member.phone, member.email) if x)
        print(f"{label:<9} {member.id}  {contact}".rstrip())
    return 0


def _sample_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1000: {text!r}")
    return value


def add_segment_parsers(subparsers: Any) -> None:
    """Register ``segment create``, ``segment count`` and ``segment show`` on the
    ``herald`` sub-command parsers."""
    p = subparsers.add_parser("segment", help="create, count or show profile segments")
    sub = p.add_subparsers(dest="what", required=True, metavar="ACTION")

    pp = sub.add_parser(
        "create", help="create a dynamic segment from a condition, or a static one from ids")
    pp.add_argument("name")
    pp.add_argument("--database", required=True)
    source = pp.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--where", metavar="EXPR",
        help='a condition in the template syntax: lead._city equal "Paris" and lead.age'
             " greater 18 (re-evaluated at every launch)")
    source.add_argument(
        "--ids", metavar="FILE",
        help="a static segment: a file of profile ids (one per line, or comma-separated)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_segment_create)

    pp = sub.add_parser("count", help="count a segment's profiles now")
    pp.add_argument("name")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_segment_count)

    pp = sub.add_parser("show", help="show a segment, its count and a sample of its profiles")
    pp.add_argument("name")
    pp.add_argument("--sample", type=_sample_size, default=10, metavar="N",
                    help="how many profiles to list (default 10)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_segment_show)
