"""``herald suppression import|attach|list``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.workspace import print_json, using

__all__ = ["add_suppression_parsers"]


def cmd_suppression_import(args: argparse.Namespace) -> int:
    from engine.core.phones import PhoneNormaliser
    from engine.suppression import import_suppressions

    report = using(args, lambda herald: import_suppressions(
        herald.store, args.file, list_name=args.list,
        is_global=True if args.is_global else None,
        normaliser=PhoneNormaliser(herald.config.engine.default_region),
    ))
    for e in report.errors:
        print(f"{report.file}:{e.line}: {e.reason}", file=sys.stderr)
    if args.json:
        print_json(report)
    else:
        print(report.summary())
    return 0


def cmd_suppression_attach(args: argparse.Namespace) -> int:
    async def attach(herald: Any) -> None:
        store = herald.store
        if args.database:
            db = await store.database_id(args.database)
            await store.attach_suppression_list(args.list, database_id=db)
        else:
            await store.get_mailing(args.mailing)
            await store.attach_suppression_list(args.list, mailing_id=args.mailing)

    using(args, attach)
    print("ok")
    return 0


def cmd_suppression_list(args: argparse.Namespace) -> int:
    lists: list[dict[str, Any]] = using(args, lambda herald: herald.store.suppression_lists())
    if args.json:
        print_json({"lists": lists})
        return 0
    for item in lists:
        counts = ", ".join(f"{n} {k}s" for k, n in sorted(item["counts"].items())) or "empty"
        where = "everywhere" if item["global"] else ", ".join(
            [f"database {d}" for d in item["databases"]]
            + [f"mailing {m}" for m in item["mailings"]]) or "nowhere yet"
        print(f"{item['name']}: {counts}; applies {where}")
    return 0


def add_suppression_parsers(sub: Any) -> None:
    p = sub.add_parser("suppression", help="suppression lists: phones, emails, domains")
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    pp = ssub.add_parser("import", help="add a file's values (one per line) to a list")
    pp.add_argument("file")
    pp.add_argument("--list", default="global", help="list name (default: global)")
    pp.add_argument("--global", dest="is_global", action="store_true",
                    help="a new list applies to every mailing (the list 'global' always does)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_suppression_import)
    pp = ssub.add_parser("attach", help="apply a list to a database's mailings or a mailing")
    pp.add_argument("list")
    target = pp.add_mutually_exclusive_group(required=True)
    target.add_argument("--database")
    target.add_argument("--mailing", type=int)
    pp.set_defaults(func=cmd_suppression_attach)
    pp = ssub.add_parser("list", help="the lists, their sizes and where they apply")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_suppression_list)

