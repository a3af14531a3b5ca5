"""``herald report channel|undeliveries|clicks``: the channel's reports, from the store's
counters (fast on any mailing size).

Each takes ``--mailing ID`` (repeatable), ``--resource R``, ``--channel sms|email`` (the
mailings'), ``--since DATE`` and ``--until DATE`` (``YYYY-MM-DD`` or an ISO datetime, UTC
unless it has an offset; until exclusive), ``--format table|json|csv|xlsx`` and ``--output
FILE``; ``channel`` also ``--by day|hour|mailing|resource|sender|variant``. The channel
report of email (``--channel email``, or ``--resource`` of an email resource) has the
email counts too: opens, unique_opens, hard_bounced, soft_bounced, complaints, open_rate
and ctor. Without ``--format`` the format follows ``--output``'s
suffix (``.json``, ``.csv``, ``.xlsx``), else it is a table. A bad date, an unknown
mailing or resource exits 2, saying which option is wrong.

The store keeps its counters by the UTC hour, so ``--since``/``--until`` count whole hours
(every hour with a part in the range): exact for dates and whole hours.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from engine.cli.workspace import using
from engine.errors import InputError
from engine.reports import (
    CHANNELS,
    FORMATS,
    GROUPINGS,
    Format,
    Report,
    channel_report,
    clicks_report,
    is_email,
    parse_time,
    render,
    report_filter,
    table,
    undeliveries_report,
    unknown_name,
)
from engine.store.base import ReportFilter

__all__ = ["add_report_parsers"]

_SUFFIXES: dict[str, Format] = {".json": "json", ".csv": "csv", ".xlsx": "xlsx"}


def _time(text: str) -> float:
    try:
        return parse_time(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _mailing_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a mailing id: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a mailing id: {text!r}")
    return value


def _filter(args: argparse.Namespace) -> ReportFilter:
    try:
        return report_filter(mailings=args.mailings or (), resource=args.resource,
                             since=args.since, until=args.until, channel=args.channel)
    except ValueError as err:  # the range
        raise InputError(f"--until: {err}".replace("than since", "than --since")) from None


def _format(args: argparse.Namespace) -> Format:
    fmt: Format = args.format or "table"
    if args.format is None and args.output is not None:
        fmt = _SUFFIXES.get(Path(args.output).suffix.lower(), "table")
    if fmt == "xlsx" and args.output is None and sys.stdout.isatty():
        raise InputError("--format xlsx writes a binary file: give --output FILE"
                         " (or redirect stdout)")
    return fmt


def _report(args: argparse.Namespace) -> Report:
    where = _filter(args)

    async def action(herald: Any) -> Report:
        unknown = await unknown_name(herald.store, herald.config.resources, where)
        if unknown is not None:
            raise InputError(f"--{unknown[0]}: {unknown[1]}")
        if args.report == "channel":
            return await channel_report(herald.store, where, args.by,
                                        email=is_email(where, herald.config.resources))
        if args.report == "undeliveries":
            return await undeliveries_report(herald.store, where)
        return await clicks_report(herald.store, where)

    return using(args, action)


def _write(report: Report, fmt: Format, output: str | None) -> None:
    data = table(report).encode() if fmt == "table" else render(report, fmt)
    if output is not None:
        try:
            Path(output).write_bytes(data)
        except OSError as err:
            raise InputError(f"--output: cannot write {output}: {err.strerror}") from None
        print(f"wrote the {report.name} report ({len(report.rows)} rows) to {output}",
              file=sys.stderr)
    elif fmt == "xlsx":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        sys.stdout.write(data.decode())


def cmd_report(args: argparse.Namespace) -> int:
    fmt = _format(args)  # first: a wrong destination is known before the work
    _write(_report(args), fmt, args.output)
    return 0


def _filters() -> argparse.ArgumentParser:
    """The options every report takes."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--mailing", dest="mailings", action="append", type=_mailing_id,
                   metavar="ID", help="only this mailing (repeat for several; default all)")
    p.add_argument("--resource", metavar="R", help="only this resource's mailings")
    p.add_argument("--channel", choices=CHANNELS,
                   help="only the mailings of this channel (sms or email); the channel"
                        " report of email has its opens, bounces and complaints")
    p.add_argument("--since", type=_time, metavar="DATE",
                   help="from this moment: YYYY-MM-DD (midnight UTC) or an ISO datetime"
                        " (UTC unless it has an offset)")
    p.add_argument("--until", type=_time, metavar="DATE",
                   help="up to this moment, excluded (same forms as --since); both count"
                        " whole UTC hours, as the counters are kept")
    p.add_argument("--format", choices=FORMATS,
                   help="table (the default), json, csv or xlsx (xlsx needs --output or a"
                        " redirect); without it, --output's suffix decides")
    p.add_argument("--output", metavar="FILE", help="write to FILE instead of stdout")
    return p


def add_report_parsers(sub: Any) -> None:
    """Register ``report channel``, ``report undeliveries`` and ``report clicks`` on the
    ``herald`` command's sub-parsers."""
    p = sub.add_parser("report", help="channel, undeliveries and clicks reports",
                       description="Reports of the SMS and email channels, from the store's"
                                   " counters.")
    p.set_defaults(func=lambda _: (p.print_help(), 0)[1])
    reports = p.add_subparsers(dest="report", metavar="REPORT")
    common = _filters()

    pp = reports.add_parser(
        "channel", parents=[common], help="recipients, sent, delivered, clicks... and rates",
        description="Per key of --by (or in all): recipients, sent, delivered, undelivered,"
                    " failed, unknown, segments, clicks, unique_clicks, unsubscribed,"
                    " delivery_rate (delivered / sent) and ctr (unique clicks / delivered);"
                    " for email also opens, unique_opens, hard_bounced, soft_bounced,"
                    " complaints, open_rate (unique opens / delivered) and ctor (unique"
                    " clicks / unique opens).")
    pp.add_argument("--by", choices=GROUPINGS, help="group by day, hour (UTC), mailing,"
                    " resource, sender or variant (a multivariate mailing's template,"
                    " 1-based) (default: one row for it all)")
    pp.set_defaults(func=cmd_report)

    pp = reports.add_parser(
        "undeliveries", parents=[common], help="undeliveries by the provider's reason",
        description="Undeliveries by reason (the provider's, normalised; 'undefined' when"
                    " the gateway gave none), with each reason's share.")
    pp.set_defaults(func=cmd_report, by=None)

    pp = reports.add_parser(
        "clicks", parents=[common], help="the click map: clicks per URL",
        description="People's clicks per URL (bots left out): clicks, unique_clicks and"
                    " share (unique clickers / recipients).")
    pp.set_defaults(func=cmd_report, by=None)
