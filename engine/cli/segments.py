"""``herald segment create|count|show``: the command line of segments.

Handlers raise Herald's errors and let ``engine.cli.workspace.run_command`` turn them into
messages and exit codes (2 for a bad condition or input, 1 for an unknown segment or
database). Conditions compile with the workspace's template functions (its plugins').
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from engine.cli.workspace import print_json, using
from engine.segments import (
    SegmentInfo,
    count_segment,
    create_segment,
    read_profile_ids,
    show_segment,
)

__all__ = ["add_segment_parsers"]


def cmd_segment_create(args: argparse.Namespace) -> int:
    ids = read_profile_ids(args.ids) if args.ids is not None else None
    segment = using(args, lambda herald: create_segment(
        herald.store, args.name, args.database, args.where, profile_ids=ids,
        functions=herald.plugins.template_functions()))
    if args.json:
        print_json(segment._asdict())
    else:
        size = "" if ids is None else f" of {len(ids):,} profiles"
        print(f"created {segment.kind} segment {segment.name!r}{size}"
              f" on database {segment.database!r}")
    return 0


def cmd_segment_count(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    count = using(args, lambda herald: count_segment(
        herald.store, args.name, now, functions=herald.plugins.template_functions()))
    if args.json:
        print_json({"segment": args.name, "count": count, "at": now.isoformat()})
    else:
        print(count)
    return 0


def _info_json(info: SegmentInfo) -> dict[str, Any]:
    return {
        "name": info.name, "kind": info.kind, "database": info.database,
        "condition": info.condition, "count": info.count,
        "sample": [m._asdict() for m in info.sample],
        "decided_in_sql": info.decided_in_sql, "python_only": info.python_only,
    }


def cmd_segment_show(args: argparse.Namespace) -> int:
    now = datetime.now(UTC)
    info: SegmentInfo = using(args, lambda herald: show_segment(
        herald.store, args.name, now, sample=args.sample,
        functions=herald.plugins.template_functions()))
    if args.json:
        print_json(_info_json(info))
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
