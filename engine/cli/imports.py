"""``herald import profiles``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.backends import run as run_backend
from engine.cli.workspace import open_herald, print_json
from engine.errors import InputError

__all__ = ["add_import_parsers"]


def cmd_import_profiles(args: argparse.Namespace) -> int:
    from engine.core.phones import PhoneNormaliser
    from engine.importing import import_file

    async def go() -> int:
        herald = await open_herald(args)
        async with herald:
            if args.resource and args.resource not in herald.config.resources:
                raise InputError(f"no resource {args.resource!r} in the config")
            report = await import_file(
                herald.store, args.file, database=args.database, resource=args.resource,
                matching=args.matching, mode=args.mode, encoding=args.encoding,
                normaliser=PhoneNormaliser(herald.config.engine.default_region),
                field_types=herald.config.field_specs(args.database),
                max_ratio=herald.config.limits.import_compression_ratio,
                channel=(herald.config.resources[args.resource].channel if args.resource
                         else "sms"),
            )
        for e in report.errors:
            print(e, file=sys.stderr)
        if report.rejected > len(report.errors):
            print(f"... and {report.rejected - len(report.errors)} more rejected rows",
                  file=sys.stderr)
        if args.json:
            print_json(report)
        else:
            print(report.summary())
        return 0

    return run_backend(go)


def add_import_parsers(sub: Any) -> None:
    """Register ``import profiles`` on the ``herald`` sub-command parsers."""
    p = sub.add_parser("import", help="import data")
    isub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    pp = isub.add_parser(
        "profiles", help="import profiles from csv/txt, xlsx, or a zip/tar.gz of those")
    pp.add_argument("file")
    pp.add_argument("--database", required=True)
    pp.add_argument("--resource", help="subscribe each row's phone (its email, for an"
                    " email resource) to this resource")
    pp.add_argument("--matching", default="phone", metavar="phone|email|id|field:NAME",
                    help="how a row finds the profile it updates (default: phone)")
    pp.add_argument("--mode", choices=["add+update", "add", "update"], default="add+update",
                    help="add new profiles, update matched ones, or both (default)")
    pp.add_argument("--encoding", help="of csv/txt files (default: BOM, UTF-8 or cp1251)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_import_profiles)
