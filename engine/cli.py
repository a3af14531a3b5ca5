"""The ``herald`` command line.

Exit codes (also in ``herald --help``): 0 success; 1 the work failed (a run that did not
finish, an internal error); 2 bad usage or input (an unknown name, a bad file, config or
template). Output meant for files and pipes goes to stdout; progress and problems to stderr.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from engine.api.cli import add_api_parsers
from engine.backends import run as run_backend
from engine.cli_support import open_herald, print_json, using
from engine.commands.suppression import add_suppression_parsers
from engine.commands.templates import add_template_parsers, read_template
from engine.config import load_config
from engine.errors import ConfigError, HeraldError, InputError, StoreError, TemplateError
from engine.gallery.cli import add_gallery_parsers
from engine.mailing_log import MailingLog, format_log
from engine.pipeline import PipelineStats
from engine.plugins import load_plugins
from engine.segments import add_segment_parsers
from engine.simulator.cli import add_simulate_parser

__all__ = ["EXIT_CODES", "main"]

EXIT_CODES = """\
exit codes:
  0  success (a run that finished, even if the gateway refused some messages:
     its log counts them)
  1  the work failed: a run that did not finish (interrupted, failed), an internal error
  2  bad usage or input: an unknown name (database, segment, resource, run...), a file
     that cannot be read or is wrong, a bad config, a template error
"""


class _ProgressBar:
    """A rich progress bar fed with pipeline statistics, drawn on stderr and only when
    stderr is a terminal: stdout keeps the log alone (``herald send > log.txt``)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _ProgressBar:
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


def _show_log(log: MailingLog, as_json: bool) -> None:
    if as_json:
        print_json(log)
        return
    print(format_log(log))
    if log.status == "interrupted":
        print(f"\ninterrupted: finish it with  herald resume {log.run_id}", file=sys.stderr)




# -- commands ----------------------------------------------------------------------------


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.path or args.config
    try:
        load_config(path, drivers=load_plugins().drivers)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    print("ok")
    return 0


def cmd_plugins(args: argparse.Namespace) -> int:
    plugins = load_plugins()
    infos = plugins.describe()
    if args.json:
        print_json({
            "plugins": [msgspec.structs.asdict(_PluginOut(i.name, i.distribution, i.version,
                                                          list(i.drivers))) for i in infos],
            "drivers": sorted(plugins.drivers),
        })
        return 0
    for info in infos:
        dist = f" ({info.distribution} {info.version})" if info.distribution else ""
        drivers = f"  drivers: {', '.join(info.drivers)}" if info.drivers else ""
        print(f"{info.name}{dist}{drivers}")
    return 0


class _PluginOut(msgspec.Struct):
    name: str
    distribution: str
    version: str
    drivers: list[str]


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


def cmd_send(args: argparse.Namespace) -> int:
    from engine.core.templates import refuse_blank

    template = read_template(args.template)

    async def go() -> int:
        herald = await open_herald(args)
        async with herald:
            refuse_blank(herald.compile(template))  # before a run exists, like a typo
            with _ProgressBar(not args.json) as bar:
                log = await herald.send(
                    resource=args.resource, database=args.database, segment=args.segment,
                    template=template, limit=args.limit, name=args.name, progress=bar,
                    handle_signals=True, policy=args.policy,
                )
        _show_log(log, args.json)
        return 0 if log.status == "finished" else 1

    return run_backend(go)


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
            with _ProgressBar(not args.json) as bar:
                log = await herald.resume(args.run_id, progress=bar, handle_signals=True)
        _show_log(log, args.json)
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
    _show_log(using(args, lambda herald: herald.log(args.run_id)), args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import generate, write_workspace
    from engine.runner import Herald
    from engine.simulator import GatewaySimulator

    workspace = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="herald-demo-"))

    async def go() -> int:
        main_gw = GatewaySimulator(latency=0.01, error_rate=0.01, reject_rate=0.002, seed=1)
        backup_gw = GatewaySimulator(latency=0.02, seed=2)
        async with main_gw, backup_gw:
            config_path = write_workspace(workspace, main_url=main_gw.send_url,
                                          backup_url=backup_gw.send_url)
            template = read_template(workspace / "template.txt")
            herald = await Herald.open(config_path)
            async with herald:
                t0 = time.perf_counter()
                plan = generate(herald.store, profiles=args.profiles)  # type: ignore[arg-type]
                if not args.json:
                    print(f"workspace: {workspace}")
                    print(
                        f"generated {plan.profiles:,} profiles in"
                        f" {time.perf_counter() - t0:.1f}s: {plan.duplicates:,} duplicate"
                        f" phones in other formats, {plan.unsubscribed:,} unsubscribed,"
                        f" {plan.no_subscription:,} without a subscription,"
                        f" {plan.suppressed:,} suppressed, {plan.invalid:,} malformed numbers"
                    )
                    print(f"gateways: simulators at {main_gw.url} (weight 70, a little faulty)"
                          f" and {backup_gw.url} (weight 30); a sender whose queue is full"
                          " passes its overflow to the other\n")
                with _ProgressBar(not args.json) as bar:
                    log = await herald.send(
                        resource="news", database="customers", template=template,
                        name="demo broadcast", progress=bar, handle_signals=True,
                    )
            stats = {"main": main_gw.statistics(), "backup": backup_gw.statistics()}
        _show_log(log, args.json)
        if not args.json:
            for name, st in stats.items():
                print(f"gateway {name}: {st.requests:,} requests, {st.accepted:,} accepted,"
                      f" {st.rejected:,} rejected, {st.errors:,} answered 500")
            print(f"\nagain:    herald --config {config_path} log {log.run_id}")
        return 0 if log.status == "finished" else 1

    return run_backend(go)


# -- parser ------------------------------------------------------------------------------


def _positive(text: str) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="herald", description="High-throughput SMS mailings.",
        epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", metavar="PATH",
        help="config file (default: $HERALD_CONFIG, else ./herald.toml)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", help="generate an audience and send a mailing end to end")
    p.add_argument("--profiles", type=_positive, default=100_000)
    p.add_argument("--dir", help="workspace directory (default: a new temporary one)")
    p.add_argument("--json", action="store_true", help="print the mailing log as JSON")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("check-config", help="check a config file; print ok or its problems")
    p.add_argument("path", nargs="?")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("plugins", help="list installed plugins and drivers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("import", help="import data")
    isub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    pp = isub.add_parser(
        "profiles", help="import profiles from csv/txt, xlsx, or a zip/tar.gz of those")
    pp.add_argument("file")
    pp.add_argument("--database", required=True)
    pp.add_argument("--resource", help="subscribe each row's phone to this resource")
    pp.add_argument("--matching", default="phone", metavar="phone|email|id|field:NAME",
                    help="how a row finds the profile it updates (default: phone)")
    pp.add_argument("--mode", choices=["add+update", "add", "update"], default="add+update",
                    help="add new profiles, update matched ones, or both (default)")
    pp.add_argument("--encoding", help="of csv/txt files (default: BOM, UTF-8 or cp1251)")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_import_profiles)

    add_suppression_parsers(sub)

    p = sub.add_parser("send", help="run a broadcast mailing now and print its log")
    p.add_argument("--resource", required=True)
    audience = p.add_mutually_exclusive_group(required=True)
    audience.add_argument("--database")
    audience.add_argument("--segment")
    p.add_argument("--template", required=True, metavar="FILE")
    p.add_argument("--limit", type=_positive)
    p.add_argument("--name", help="the mailing's name")
    p.add_argument("--policy", type=_policy, metavar="MAX/DAYS[/SCOPE]",
                   help="this mailing's sending policy, e.g. 3/7 or 1/1/contact")
    p.add_argument("--json", action="store_true", help="print the mailing log as JSON")
    p.set_defaults(func=cmd_send)

    add_template_parsers(sub)
    add_simulate_parser(sub)
    add_api_parsers(sub)
    add_segment_parsers(sub)
    add_gallery_parsers(sub)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    raise SystemExit(main())
