"""The ``herald`` command line.

Exit codes: 0 success; 1 a run or an operation failed; 2 bad usage, config or input.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import msgspec

from engine.api.cli import add_api_parsers
from engine.config import load_config
from engine.errors import ConfigError, HeraldError, InputError, TemplateError
from engine.mailing_log import MailingLog, format_log
from engine.pipeline import PipelineStats
from engine.plugins import load_plugins
from engine.segments import add_segment_parsers
from engine.simulator.cli import add_simulate_parser

__all__ = ["main"]

_json = msgspec.json.Encoder()


def _print_json(obj: Any) -> None:
    sys.stdout.write(msgspec.json.format(_json.encode(obj)).decode() + "\n")


def _run_async(fn: Callable[[], Awaitable[int]]) -> int:
    """Run on asyncio with uvloop when available (the default backend), else plain."""
    backend = os.environ.get("HERALD_BACKEND", "asyncio")
    options: dict[str, Any] = {}
    if backend == "asyncio":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            pass
        else:
            options["use_uvloop"] = True
    return anyio.run(fn, backend=backend, backend_options=options)


class _ProgressBar:
    """A rich progress bar fed with pipeline statistics; silent when not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
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
                transient=False,
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
        _print_json(log)
        return
    print(format_log(log))
    if log.status == "interrupted":
        print(f"\ninterrupted: finish it with  herald resume {log.run_id}", file=sys.stderr)


async def _open(args: argparse.Namespace) -> Any:
    from engine.runner import Herald

    return await Herald.open(getattr(args, "config", None))


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
        _print_json({
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
        herald = await _open(args)
        async with herald:
            if args.resource and args.resource not in herald.config.resources:
                raise InputError(f"no resource {args.resource!r} in the config")
            report = await import_file(
                herald.store, args.file, database=args.database, resource=args.resource,
                matching=args.matching, mode=args.mode, encoding=args.encoding,
                normaliser=PhoneNormaliser(herald.config.engine.default_region),
                field_types=herald.config.field_specs(args.database),
            )
        for e in report.errors:
            print(e, file=sys.stderr)
        if report.rejected > len(report.errors):
            print(f"... and {report.rejected - len(report.errors)} more rejected rows",
                  file=sys.stderr)
        if args.json:
            _print_json(report)
        else:
            print(report.summary())
        return 0

    return _run_async(go)


def cmd_send(args: argparse.Namespace) -> int:
    template = _read_template(args.template)

    async def go() -> int:
        herald = await _open(args)
        async with herald:
            with _ProgressBar(not args.json) as bar:
                log = await herald.send(
                    resource=args.resource, database=args.database, segment=args.segment,
                    template=template, limit=args.limit, name=args.name, progress=bar,
                    handle_signals=True, policy=args.policy,
                )
        _show_log(log, args.json)
        return 0 if log.status == "finished" else 1

    return _run_async(go)


def cmd_resume(args: argparse.Namespace) -> int:
    async def go() -> int:
        herald = await _open(args)
        async with herald:
            with _ProgressBar(not args.json) as bar:
                log = await herald.resume(args.run_id, progress=bar, handle_signals=True)
        _show_log(log, args.json)
        return 0 if log.status == "finished" else 1

    return _run_async(go)


def cmd_runs(args: argparse.Namespace) -> int:
    async def go() -> int:
        herald = await _open(args)
        async with herald:
            runs = await herald.runs(args.limit)
        rows = [
            {"run_id": r.id, "mailing_id": m.id, "mailing": m.name, "status": r.status,
             "started": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.started_at)),
             "recipients": r.counts.get("reserved", 0)}
            for m, r in runs
        ]
        if args.json:
            _print_json({"runs": rows})
            return 0
        if not rows:
            print("no runs yet")
            return 0
        print(f"{'RUN':>5}  {'STATUS':<12} {'STARTED':<19}  {'RECIPIENTS':>10}  MAILING")
        for r in rows:
            print(f"{r['run_id']:>5}  {r['status']:<12} {r['started']:<19}  "
                  f"{r['recipients']:>10,}  {r['mailing']}")
        return 0

    return _run_async(go)


def cmd_log(args: argparse.Namespace) -> int:
    async def go() -> int:
        herald = await _open(args)
        async with herald:
            log = await herald.log(args.run_id)
        _show_log(log, args.json)
        return 0

    return _run_async(go)


def cmd_suppression_import(args: argparse.Namespace) -> int:
    from engine.core.phones import PhoneNormaliser
    from engine.suppression import import_suppressions

    async def go() -> int:
        herald = await _open(args)
        async with herald:
            report = await import_suppressions(
                herald.store, args.file, list_name=args.list,
                is_global=True if args.is_global else None,
                normaliser=PhoneNormaliser(herald.config.engine.default_region),
            )
        for e in report.errors:
            print(f"{report.file}:{e.line}: {e.reason}", file=sys.stderr)
        if args.json:
            _print_json(report)
        else:
            print(report.summary())
        return 0

    return _run_async(go)


def cmd_suppression_attach(args: argparse.Namespace) -> int:
    async def go() -> int:
        herald = await _open(args)
        async with herald:
            if args.database:
                db = await herald.store.database_id(args.database)
                await herald.store.attach_suppression_list(args.list, database_id=db)
            else:
                await herald.store.get_mailing(args.mailing)
                await herald.store.attach_suppression_list(args.list, mailing_id=args.mailing)
        print("ok")
        return 0

    return _run_async(go)


def cmd_suppression_list(args: argparse.Namespace) -> int:
    async def go() -> int:
        herald = await _open(args)
        async with herald:
            lists = await herald.store.suppression_lists()
        if args.json:
            _print_json({"lists": lists})
            return 0
        for item in lists:
            counts = ", ".join(f"{n} {k}s" for k, n in sorted(item["counts"].items())) or "empty"
            where = "everywhere" if item["global"] else ", ".join(
                [f"database {d}" for d in item["databases"]]
                + [f"mailing {m}" for m in item["mailings"]]) or "nowhere yet"
            print(f"{item['name']}: {counts}; applies {where}")
        return 0

    return _run_async(go)


def _read_template(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise InputError(f"{path}: cannot read the template ({err.strerror})") from err
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not UTF-8 text ({err.reason})") from err


def _functions(args: argparse.Namespace) -> dict[str, Any]:
    return load_plugins().template_functions()


def cmd_template_check(args: argparse.Namespace) -> int:
    from engine.core.templates import check_template

    report = check_template(_read_template(args.file), functions=_functions(args))
    if args.json:
        _print_json({
            "ok": not report.errors,
            "errors": [{"line": e.line, "col": e.col, "message": e.message}
                       for e in report.errors],
            "warnings": report.warnings,
            "variables": report.variables,
            "urls": report.urls,
        })
        return 2 if report.errors else 0
    for err in report.errors:
        print(f"{args.file}:{err}", file=sys.stderr)
    for warning in report.warnings:
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    if not report.errors:
        print("ok")
    if report.variables:
        print("variables: " + ", ".join(report.variables))
    if report.urls:
        print("urls: " + ", ".join(report.urls))
    return 2 if report.errors else 0


def _load_data(spec: str) -> dict[str, Any]:
    if spec.startswith("@"):
        try:
            raw = Path(spec[1:]).read_bytes()
        except OSError as err:
            raise InputError(f"{spec[1:]}: cannot read --data ({err.strerror})") from err
        where = spec[1:]
    else:
        raw, where = spec.encode(), "--data"
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object like "
                         '{"lead": {...}, "subscription": {...}, "json": {...}}')
    return data


def cmd_template_render(args: argparse.Namespace) -> int:
    from engine.core.sms import measure
    from engine.core.templates import compile_template

    template = compile_template(_read_template(args.file), functions=_functions(args),
                                name=args.file)
    text = template.render(_load_data(args.data) if args.data else {})
    info = measure(text)
    if args.json:
        _print_json({"text": text, "encoding": info.encoding, "length": info.length,
                     "segments": info.segments})
    else:
        print(text)
        print(f"-- {info.encoding}, {info.length} characters, {info.segments} segment"
              f"{'s' if info.segments != 1 else ''}", file=sys.stderr)
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
            template = (workspace / "template.txt").read_text(encoding="utf-8")
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
                    print(f"gateways: simulators at {main_gw.url} (70%, a little faulty)"
                          f" and {backup_gw.url} (30%)\n")
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

    return _run_async(go)


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

    p = sub.add_parser("template", help="check or render a message template")
    tsub = p.add_subparsers(dest="what", required=True, metavar="ACTION")
    pp = tsub.add_parser("check", help="list a template's problems and the variables it uses")
    pp.add_argument("file")
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_template_check)
    pp = tsub.add_parser("render", help="render a template with sample data")
    pp.add_argument("file")
    pp.add_argument("--data", metavar="JSON|@FILE",
                    help='{"lead":{...},"subscription":{...},"apicontent":{...},"json":{...}}')
    pp.add_argument("--json", action="store_true")
    pp.set_defaults(func=cmd_template_render)

    add_simulate_parser(sub)
    add_api_parsers(sub)
    add_segment_parsers(sub)

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
    except InputError as err:
        print(f"herald: {err}", file=sys.stderr)
        return 2
    except HeraldError as err:
        print(f"herald: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("herald: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
