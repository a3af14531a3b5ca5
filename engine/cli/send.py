"""``herald send``, ``herald resume``, ``herald runs`` and ``herald log``, and the progress
bar of a run."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import msgspec

from engine.backends import run as run_backend
from engine.cli.templates import read_template
from engine.cli.workspace import open_herald, print_json, using
from engine.errors import InputError
from engine.mailing_log import MailingLog, format_log
from engine.pipeline import PipelineStats

__all__ = ["ProgressBar", "add_run_parsers", "add_send_parser", "positive", "show_log"]


class ProgressBar:
    """A rich progress bar fed with pipeline statistics, drawn on stderr and only when
    stderr is a terminal: stdout keeps the log alone (``herald send > log.txt``)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]sending"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False,
            )
            self._progress.__enter__()
            self._task = self._progress.add_task("send", total=None, detail="")
        return self

    def __call__(self, stats: PipelineStats) -> None:
        if self._progress is None:
            return
        self._progress.update(
            self._task, total=stats.total or None, completed=stats.received,
            detail=f"sent {stats.sent:,}  failed {stats.failed:,}  in flight {stats.in_flight:,}",
        )

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)


def show_log(log: MailingLog, as_json: bool) -> None:
    if as_json:
        print_json(log)
        return
    print(format_log(log))
    if log.status == "interrupted":
        print(f"\ninterrupted: finish it with  herald resume {log.run_id}", file=sys.stderr)


def cmd_send(args: argparse.Namespace) -> int:
    template = read_template(args.template)
    text = read_template(args.text) if args.text is not None else None

    async def go() -> int:
        herald = await open_herald(args)
        async with herald:
            # before a run exists, like a typo: a blank SMS, an email with no subject
            herald.compile_for(args.resource, template, subject=args.subject, text=text)
            if herald.config.cluster is not None:
                log = await _send_on_cluster(herald, args, template, text)
                show_log(log, args.json)
                return 0 if log.status == "finished" else 1
            with ProgressBar(not args.json) as bar:
                log = await herald.send(
                    resource=args.resource, database=args.database, segment=args.segment,
                    template=template, limit=args.limit, name=args.name, progress=bar,
                    handle_signals=True, policy=args.policy, subject=args.subject,
                    text=text,
                )
        show_log(log, args.json)
        return 0 if log.status == "finished" else 1

    return run_backend(go)


async def _send_on_cluster(herald: Any, args: argparse.Namespace, template: str,
                           text: str | None) -> MailingLog:
    """``herald send`` on a cluster: the run is cut into chunks that this process works
    on with every ``herald worker``; the log once every chunk is done."""
    from engine.cluster.worker import send_on_cluster

    log: MailingLog = await send_on_cluster(
        herald, resource=args.resource, database=args.database, segment=args.segment,
        template=template, limit=args.limit, name=args.name, policy=args.policy,
        handle_signals=True, subject=args.subject, text=text,
    )
    return log


def cmd_resume(args: argparse.Namespace) -> int:
    async def go() -> int:
        herald = await open_herald(args)
        async with herald:
            mailing, _ = await herald.store.get_run(args.run_id)
            if mailing.kind == "trigger":  # its queue never ends: resume would never return
                raise InputError(
                    f"run {args.run_id} belongs to trigger mailing {mailing.id}"
                    f" ({mailing.name!r}); trigger runs are resumed by `herald serve`,"
                    " which takes up their queued calls when it starts"
                )
            with ProgressBar(not args.json) as bar:
                log = await herald.resume(args.run_id, progress=bar, handle_signals=True)
        show_log(log, args.json)
        return 0 if log.status == "finished" else 1

    return run_backend(go)


def cmd_runs(args: argparse.Namespace) -> int:
    runs = using(args, lambda herald: herald.runs(args.limit))
    rows = [
        {"run_id": r.id, "mailing_id": m.id, "mailing": m.name, "status": r.status,
         "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at)),
         "recipients": r.counts.get("reserved", 0)}
        for m, r in runs
    ]
    if args.json:
        print_json({"runs": rows})
        return 0
    if not rows:
        print("no runs yet")
        return 0
    print(f"{'RUN':>5}  {'STATUS':<12} {'STARTED':<19}  {'RECIPIENTS':>10}  MAILING")
    for r in rows:
        print(f"{r['run_id']:>5}  {r['status']:<12} {r['started']:<19}  "
              f"{r['recipients']:>10,}  {r['mailing']}")
    return 0


def cmd_log(args: argparse.Namespace) -> int:
    show_log(using(args, lambda herald: herald.log(args.run_id)), args.json)
    return 0


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _policy(text: str) -> Any:
    from engine.core.policy import Policy

    parts = text.split("/")
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        fields: dict[str, Any] = {"max_messages": int(parts[0]), "period_days": int(parts[1])}
        if len(parts) == 3:
            fields["scope"] = parts[2]
        return msgspec.convert(fields, Policy)
    except (ValueError, msgspec.ValidationError) as err:
        why = f": {err}" if isinstance(err, msgspec.ValidationError) else ""
        raise argparse.ArgumentTypeError(
            f"expected MAX/DAYS[/SCOPE] (MAX 1-15, DAYS 1-16, SCOPE profile, profile_resource,"
            f" profile_channel or contact), not {text!r}{why}") from None


def add_send_parser(sub: Any) -> None:
    """Register ``send`` on the ``herald`` sub-command parsers."""
    p = sub.add_parser("send", help="run a broadcast mailing now and print its log")
    p.add_argument("--resource", required=True)
    audience = p.add_mutually_exclusive_group(required=True)
    audience.add_argument("--database")
    audience.add_argument("--segment")
    p.add_argument("--template", required=True, metavar="FILE",
                   help="the SMS text; an email resource's HTML body")
    p.add_argument("--subject", metavar="TEXT",
                   help="an email resource's subject (a template too; Emoji welcome)")
    p.add_argument("--text", metavar="FILE",
                   help="an email's text version (default: made from the HTML)")
    p.add_argument("--limit", type=positive)
    p.add_argument("--name", help="the mailing's name")
    p.add_argument("--policy", type=_policy, metavar="MAX/DAYS[/SCOPE]",
                   help="this mailing's sending policy, e.g. 3/7 or 1/1/contact")
    p.add_argument("--json", action="store_true", help="print the mailing log as JSON")
    p.set_defaults(func=cmd_send)


def add_run_parsers(sub: Any) -> None:
    """Register ``resume``, ``runs`` and ``log`` on the ``herald`` sub-command parsers."""
    p = sub.add_parser("resume", help="finish an interrupted run")
    p.add_argument("run_id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_resume)

    p = sub.add_parser("runs", help="list runs")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("log", help="print a run's mailing log")
    p.add_argument("run_id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_log)
