"""``herald mailing create|list|show|start|pause|resume|cancel|test|pick``: mailings of
every kind from the command line, as ``/api/v1/mailings`` has them.

``create`` stores a mailing (``engine.mailings.create_mailing`` checks it); ``start`` runs
one launch of it in the foreground, to its end, and prints its mailing log(s) as
``herald send`` does. ``pause``, ``resume`` and ``cancel`` act on its runs where they are:

- a run of this machine whose process is gone is settled here (``resume`` carries it on
  in the foreground, as ``herald resume`` does);
- on a cluster, a run in progress is the workers': its status moves in the store and the
  workers hear of it at once (``engine.cluster.control``), as ``herald serve`` does it;
- on one machine, a run live in another process (``herald serve``, another ``start``) is
  that process's to stop: an error (exit 2) says so, and nothing changes.

A scheduled mailing paused goes back to ``draft`` (it launches by hand only) and
``resume`` schedules it again from now; ``cancel`` stops its launches for good.

:class:`engine.mailing_view.MailingView` (``mailing show --json``) is also the body of
``GET /api/v1/mailings/{id}``'s runs, so the two always agree.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any

import anyio
import msgspec

from engine.backends import run as run_backend
from engine.cli.send import ProgressBar, positive, show_log
from engine.cli.templates import read_template
from engine.cli.workspace import open_herald, print_json, using
from engine.errors import InputError, StoreError, TemplateError
from engine.mailing_log import MailingLog
from engine.mailing_view import (
    MailingView,
    RunView,
    TrialRun,
    describe,
    local_time,
    trial_runs,
    zone_of,
)
from engine.store.models import Mailing, Run, run_is_live

__all__ = ["add_mailing_parsers", "duration"]

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", re.I)


def duration(text: str) -> float:
    """Seconds of ``90``, ``5s``, ``90m``, ``2h`` or ``1d`` (an argparse type)."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 90, 5s, 90m, 2h or 1d, not {text!r}")
    return float(match[1]) * _UNITS[match[2].lower()]


def _percent(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"a percent from 0 to 100, not {text!r}")
    return value


# -- what show and the API list -----------------------------------------------------------


def _spec_fields(args: argparse.Namespace, templates: list[str],
                 text: str | None = None) -> dict[str, Any]:
    """The MailingSpec of ``create``'s options: only those given, so the spec's own
    defaults (``[engine] timezone``...) apply to the rest. ``text``: the ``--text``
    file's content."""
    fields: dict[str, Any] = {"name": args.name, "kind": args.kind, "resource": args.resource}
    if args.kind == "multivariate":
        fields["templates"] = templates
    else:
        fields["template"] = templates[0]
    if text is not None:
        fields["text"] = text
    for key in ("database", "segment", "limit", "policy", "at", "schedule", "timezone",
                "until", "late", "test_share", "winner", "wait", "control", "subject"):
        value = getattr(args, key)
        if value is not None:
            fields[key] = value
    for flag in ("local_time", "ignore_global_control", "quiet_hours"):
        if getattr(args, flag):
            fields[flag] = True
    return fields


def cmd_create(args: argparse.Namespace) -> int:
    from engine.mailings import MailingSpec, compile_mailing, create_mailing

    paths: list[str] = args.templates
    if len(paths) > 1 and args.kind != "multivariate":
        raise InputError(f"--template: {len(paths)} templates given; several are for"
                         " --kind multivariate only")
    templates = [read_template(path) for path in paths]  # InputError names a missing file
    text = None if args.text is None else read_template(args.text)
    try:
        spec = msgspec.convert(_spec_fields(args, templates, text), MailingSpec)
    except msgspec.ValidationError as err:
        raise InputError(_option_error(err)) from err

    async def go(herald: Any) -> MailingView:
        for path, body in zip(paths, templates, strict=True):
            try:  # the file at fault named, before anything is stored
                await compile_mailing(herald, spec.resource, body, subject=spec.subject,
                                      text=spec.text)
            except TemplateError as err:
                raise _FileError(_file_error(err, path, args.text)) from err
            except InputError as err:  # the engine's "subject:" is the option --subject
                raise InputError(_option_named(str(err))) from None
        if spec.kind == "trigger":
            mailing = await _create_trigger(herald, spec)
        else:
            mailing = await create_mailing(herald, spec)
        return await describe(herald, mailing)

    try:
        view = using(args, go)
    except _FileError as err:
        print(err, file=sys.stderr)
        return 2
    if args.kind == "trigger":
        print(f"trigger mailing {view.id} takes calls in `herald serve` (on a cluster: the"
              " workers); a `herald serve` already running takes them after"
              f" POST /api/v1/mailings/{view.id}/resume", file=sys.stderr)
    if args.json:
        print_json(view)
    else:
        print(view.id)
    return 0


async def _create_trigger(herald: Any, spec: Any) -> Mailing:
    """A trigger mailing and its run, which this process does not run: on a cluster the
    service's way (its chunk, for the workers, who hear of it at once); on one machine
    the run is left interrupted, so that ``herald serve`` takes it up as it starts (or on
    ``resume``)."""
    from engine.mailings import create_mailing

    if herald.config.cluster is not None:
        from engine.service import MailingService

        async with anyio.create_task_group() as tg:  # a service of no run: only its store
            status = await MailingService(herald, tg).create(spec)
        mailing: Mailing = await herald.store.get_mailing(status.id)
        return mailing
    mailing = await create_mailing(herald, spec)
    run = await herald.store.start_run(mailing.id)
    await herald.store.set_run_status(run.id, "interrupted")
    return mailing


def _option_error(err: msgspec.ValidationError) -> str:
    """``Expected ... - at `$.test_share``` as ``--test-share: Expected ...``."""
    text, _, where = str(err).partition(" - at `$.")
    key = where.split("`")[0].split(".")[0].split("[")[0]
    return f"--{key.replace('_', '-')}: {text}" if key else text


def _file_error(err: TemplateError, template: str, text: str | None) -> str:
    """A template error of ``create`` starting with where it is: the ``--template`` file,
    the ``--text`` file, or ``--subject``."""
    from engine.mailings import template_part

    part, rest = template_part(err)
    where = TemplateError(rest, line=err.line, col=err.col, source_line=err.source_line)
    if part == "subject":
        return f"--subject: {where}"
    return f"{text if part == 'text' and text else template}:{where}"


def _option_named(message: str) -> str:
    """``subject: ...`` (the engine's field) as ``--subject: ...`` (this command's)."""
    key, sep, rest = message.partition(": ")
    if sep and key in ("subject", "text"):
        return f"--{key}: {rest}"
    return message


class _FileError(Exception):
    """A template file that does not compile: its message starts with the file's name."""


# -- list, show --------------------------------------------------------------------------


def _when(view: MailingView) -> str:
    local = local_time(view.next_launch, view.timezone)
    return local.strftime("%Y-%m-%d %H:%M %Z") if local else "-"


def cmd_list(args: argparse.Namespace) -> int:
    async def go(herald: Any) -> list[dict[str, Any]]:
        rows = []
        for mailing in await herald.store.list_mailings(documents=False):
            run = await herald.store.latest_run(mailing.id)
            zone = zone_of(herald, mailing)
            local = local_time(mailing.next_launch, zone)
            rows.append({
                "id": mailing.id, "name": mailing.name, "kind": mailing.kind,
                "state": mailing.state, "next_launch": mailing.next_launch,
                "next_launch_at": local.isoformat(timespec="seconds") if local else None,
                "timezone": zone,
                "next": local.strftime("%Y-%m-%d %H:%M %Z") if local else "-",
                "run_id": run.id if run else None,
                "run_status": run.status if run else None,
            })
        return rows

    rows = using(args, go)
    if args.json:
        print_json({"mailings": [{k: v for k, v in r.items() if k != "next"} for r in rows]})
        return 0
    if not rows:
        print("no mailings yet")
        return 0
    print(f"{'ID':>5}  {'KIND':<12} {'STATE':<9} {'NEXT LAUNCH':<24} {'LATEST RUN':<16}  NAME")
    for r in rows:
        latest = f"{r['run_id']} {r['run_status']}" if r["run_id"] else "-"
        print(f"{r['id']:>5}  {r['kind']:<12} {r['state']:<9} {r['next']:<24}"
              f" {latest:<16}  {r['name']}")
    return 0


def _options_line(view: MailingView) -> list[str]:
    o = view.options
    lines = []
    if o.schedule is not None:
        s = o.schedule
        when = f"at {s.at}" if s.at else f"cron {s.cron!r}"
        until = f" until {s.until}" if s.until else ""
        local = ", at each recipient's local time (not implemented yet)" if s.local_time else ""
        lines.append(f"schedule   {when} in {s.timezone}{until}{local}")
    lines.append(f"next       {_when(view)}")
    if view.variants:
        if o.test_share == 100:
            share = "100% (a plain split, no winner)"
        elif o.winner == "manual":
            share = f"{o.test_share:g}% tested, the winner picked by hand (mailing pick)"
        else:
            share = f"{o.test_share:g}% tested, the winner by {o.winner} after {o.wait or 0:g} s"
        lines.append(f"variants   {view.variants}, {share}")
    extra = []
    if o.control:
        extra.append(f"control {o.control:g}%")
    if o.ignore_global_control:
        extra.append("ignores the global control group")
    if o.quiet_hours:
        extra.append("quiet hours (not implemented yet)")
    if extra:
        lines.append("options    " + ", ".join(extra))
    return lines


def _run_line(run: RunView, zone: str) -> str:
    started = local_time(run.started_at, zone)
    assert started is not None
    variant = "-" if run.variant is None else str(run.variant)
    return (f"{run.id:>6}  {run.phase:<7} {variant:>7}  {run.status:<11}"
            f" {started:%Y-%m-%d %H:%M:%S}  {run.recipients:>9,} {run.sent:>9,}"
            f" {run.delivered:>9,} {run.failed:>7,} {run.control:>7,}")


def _excerpt(text: str, width: int = 70) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


_RUN_HEAD = (f"{'RUN':>6}  {'PHASE':<7} {'VARIANT':>7}  {'STATUS':<11} {'STARTED':<19}"
             f"  {'RECIPIENTS':>9} {'SENT':>9} {'DELIVERED':>9} {'FAILED':>7} {'CONTROL':>7}")


def _print_view(view: MailingView) -> None:
    print(f"mailing {view.id} {view.name!r}: {view.kind}, {view.state}")
    print(f"resource   {view.resource}, {view.audience}")
    for line in _options_line(view):
        print(line)
    for k, text in enumerate(view.templates, 1):
        label = f"variant {k}" if view.variants else "template"
        print(f"{label:<10} {_excerpt(text)}")
    newest = f", the newest {len(view.launches)}" \
        if len(view.launches) < view.launches_total else ""
    print(f"\nruns ({view.launches_total}{newest}):")
    if view.launches:
        print(_RUN_HEAD)
        for run in view.launches:
            print(_run_line(run, view.timezone))
            if run.missed:
                print(f"{'':8}stood for {run.missed} earlier launch(es) missed while"
                      " nothing ran")
    else:
        print("  none yet")
    if view.winner is not None:
        decided = next((r.decided for r in reversed(view.launches)
                        if r.phase == "winner"), {})
        figures = ", ".join(f"{k}: {v:g}" for k, v in decided.items())
        print(f"\nwinner: variant {view.winner}" + (f" ({figures})" if figures else ""))
    if view.tests:
        print("\ntests (mailing test; in no report):")
        for run in view.tests:
            started = local_time(run.started_at, view.timezone)
            variant = "" if run.variant is None else f" variant {run.variant}"
            print(f"{run.id:>6}  {started:%Y-%m-%d %H:%M:%S}  {run.status:<11}{variant}"
                  f"  to {', '.join(run.phones)}: sent {run.sent}, failed {run.failed}")


def cmd_show(args: argparse.Namespace) -> int:
    async def go(herald: Any) -> MailingView:
        return await describe(herald, await herald.store.get_mailing(args.mailing_id))

    view = using(args, go)
    if args.json:
        print_json(view)
    else:
        _print_view(view)
    return 0


# -- start, pause, resume, cancel --------------------------------------------------------


def _show_logs(logs: list[MailingLog], as_json: bool) -> int:
    if as_json:
        print_json(logs)
    else:
        for i, log in enumerate(logs):
            if i:
                print()
            show_log(log, False)
    return 0 if logs and all(log.status == "finished" for log in logs) else 1


def cmd_start(args: argparse.Namespace) -> int:
    from engine.mailings import launch

    async def go() -> tuple[list[MailingLog], Mailing]:
        herald = await open_herald(args)
        async with herald:
            store = herald.store
            mailing = await store.get_mailing(args.mailing_id)
            if mailing.kind == "trigger":
                raise InputError(
                    f"mailing {mailing.id} is a trigger mailing: it sends one message per"
                    " trigger call (POST /api/v1/mailings/ID/trigger on `herald serve`),"
                    " there is nothing to start")
            if mailing.state == "cancelled":
                raise StoreError(f"mailing {mailing.id} is cancelled")
            await _refuse_unfinished(herald, mailing)
            with ProgressBar(not args.json) as bar:
                logs = await launch(herald, mailing, progress=bar, handle_signals=True)
            return logs, await store.get_mailing(mailing.id)

    logs, mailing = run_backend(go)
    code = _show_logs(logs, args.json)
    if mailing.state == "waiting" and mailing.next_launch is None:
        print(f"\nthe tests are done: pick the winner with  herald mailing pick {mailing.id}"
              " --variant N", file=sys.stderr)
    return code


async def _refuse_unfinished(herald: Any, mailing: Mailing) -> None:
    """StoreError if a launch of the mailing did not finish: resume or cancel it first."""
    for run in await herald.store.mailing_runs(mailing.id):
        if not run.spec.is_test and run.status not in ("finished", "cancelled"):
            where = " (live in another process)" if run_is_live(run) else ""
            raise StoreError(
                f"mailing {mailing.id} has a {run.status} run {run.id}{where}; resume it"
                f" (herald mailing resume {mailing.id}) or cancel it")


def _unfinished(runs: list[Run]) -> list[Run]:
    return [r for r in runs if r.status not in ("finished", "cancelled")]


def _elsewhere(mailing: Mailing, run: Run, action: str) -> StoreError:
    where = f"process {run.pid} on {run.host}" if run.pid else "another process"
    return StoreError(
        f"mailing {mailing.id}'s run {run.id} is live in {where}; {action} it there: through"
        f" its API (POST /api/v1/mailings/{mailing.id}/{action}) if it is `herald serve`, or"
        " with Ctrl-C if it is a `herald mailing start` or `herald send`")


async def _on_cluster(herald: Any, action: str, mailing_id: int) -> None:
    """``action`` through the service's cluster path: the run's status moved in the
    store, then the workers told (``engine.cluster.control``)."""
    from engine.service import MailingService

    async with anyio.create_task_group() as tg:  # a service of no run: only its store
        service = MailingService(herald, tg)
        await getattr(service, action)(mailing_id)


def cmd_pause(args: argparse.Namespace) -> int:
    async def go(herald: Any) -> str:
        store = herald.store
        mailing = await store.get_mailing(args.mailing_id)
        running = [r for r in await store.mailing_runs(mailing.id) if r.status == "running"]
        if running and herald.config.cluster is not None:
            await _on_cluster(herald, "pause", mailing.id)
            return f"mailing {mailing.id}: run {running[-1].id} paused on the cluster"
        for run in running:
            if run_is_live(run) and run.pid != os.getpid():
                raise _elsewhere(mailing, run, "pause")
        said = []
        for run in running:  # its process is gone: left as it was, resumable
            await store.set_run_status(run.id, "interrupted")
            said.append(f"run {run.id} (its process is gone) marked interrupted")
        if mailing.state == "scheduled":
            await store.set_mailing_state(mailing.id, "draft")
            said.append(f"no more launches until  herald mailing resume {mailing.id}")
        elif mailing.state == "waiting" and not said:
            raise StoreError(f"mailing {mailing.id} is waiting for its winner; pick it"
                             f" (herald mailing pick {mailing.id} --variant N) or cancel it")
        if not said:
            raise StoreError(f"mailing {mailing.id} is not running")
        return f"mailing {mailing.id} paused: " + "; ".join(said)

    print(using(args, go))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    async def go() -> tuple[str, list[MailingLog]]:
        herald = await open_herald(args)
        async with herald:
            store = herald.store
            mailing = await store.get_mailing(args.mailing_id)
            if mailing.state == "cancelled":
                raise StoreError(f"mailing {mailing.id} is cancelled")
            said = await _reschedule(herald, mailing)
            runs = _unfinished(await store.mailing_runs(mailing.id))
            if not runs:
                if said:
                    return said, []
                raise StoreError(f"mailing {mailing.id} has nothing to resume")
            run = runs[-1]
            if herald.config.cluster is not None:
                await _on_cluster(herald, "resume", mailing.id)
                return f"mailing {mailing.id}: run {run.id} resumed on the cluster's" \
                    " workers", []
            if run_is_live(run):
                raise _elsewhere(mailing, run, "resume")
            with ProgressBar(not args.json) as bar:
                log = await herald.resume(run.id, progress=bar, handle_signals=True)
            return said, [log]

    said, logs = run_backend(go)
    if said:
        print(said, file=sys.stderr if logs else sys.stdout)
    return _show_logs(logs, args.json) if logs else 0


async def _reschedule(herald: Any, mailing: Mailing) -> str:
    """A paused scheduled mailing (a draft with a schedule) scheduled again from now."""
    import time

    from engine.mailings import next_launch

    schedule = mailing.options.schedule
    if mailing.state != "draft" or schedule is None or (schedule.at is None
                                                        and schedule.cron is None):
        return ""
    default = str(getattr(herald.config.engine, "timezone", None) or "UTC")
    when = next_launch(schedule, time.time(), default)
    if when is None:
        raise InputError(f"mailing {mailing.id}'s schedule has no launch left; start it"
                         f" now with  herald mailing start {mailing.id}")
    if not await herald.store.set_launch(mailing.id, expect=mailing.next_launch,
                                         next_launch=when, state="scheduled"):
        raise StoreError(f"mailing {mailing.id} changed meanwhile; try again")
    local = local_time(when, zone_of(herald, mailing))
    assert local is not None
    return f"mailing {mailing.id} scheduled again: next launch {local:%Y-%m-%d %H:%M %Z}"


def cmd_cancel(args: argparse.Namespace) -> int:
    async def go(herald: Any) -> str:
        store = herald.store
        mailing = await store.get_mailing(args.mailing_id)
        runs = _unfinished(await store.mailing_runs(mailing.id))
        clustered = herald.config.cluster is not None
        if not clustered:  # before anything changes
            for run in runs:
                if run_is_live(run) and run.pid != os.getpid():
                    raise _elsewhere(mailing, run, "cancel")
        if not runs and mailing.state in ("cancelled", "done"):
            raise StoreError(f"mailing {mailing.id} is {mailing.state}; nothing to cancel")
        await store.set_mailing_state(mailing.id, "cancelled")  # no launch from now on
        said = ["no more launches"]
        for run in runs:
            if clustered and run is runs[-1]:
                await _on_cluster(herald, "cancel", mailing.id)
            else:
                if run.status == "running":  # its process is gone
                    await store.set_run_status(run.id, "interrupted")
                await store.cancel_run(run.id)
            said.append(f"run {run.id} cancelled")
        return f"mailing {mailing.id} cancelled: " + ", ".join(said)

    print(using(args, go))
    return 0


# -- test, pick --------------------------------------------------------------------------


def cmd_test(args: argparse.Namespace) -> int:
    from engine.mailings import test_mailing

    async def go(herald: Any) -> list[TrialRun]:
        logs = await test_mailing(herald, args.mailing_id, args.to, args.profile)
        return await trial_runs(herald, logs)

    runs = using(args, go)
    if args.json:
        print_json({"runs": runs})
    else:
        for run in runs:
            variant = "" if run.variant is None else f"variant {run.variant}  "
            for m in run.messages:
                reason = f" ({m.reason})" if m.reason else ""
                print(f"run {run.run_id}  {variant}{m.phone}  {m.state}{reason}")
    ok = all(r.status == "finished" for r in runs)
    return 0 if ok else 1


def cmd_pick(args: argparse.Namespace) -> int:
    from engine.mailings import pick

    async def go(herald: Any) -> MailingLog:
        with ProgressBar(not args.json) as bar:
            log: MailingLog = await pick(herald, args.mailing_id, args.variant,
                                         progress=bar, handle_signals=True)
        return log

    return _show_logs([using(args, go)], args.json)


# -- parsers -----------------------------------------------------------------------------


def _add_create(sub: Any) -> None:
    from engine.cli.send import _policy

    p = sub.add_parser(
        "create", help="create a mailing and print its id",
        description="Create a mailing; a scheduled one (--at, --schedule) launches in"
        " `herald serve` or a `herald worker`, a draft waits for `herald mailing start`.")
    p.add_argument("--name", required=True)
    p.add_argument("--kind", required=True,
                   choices=["broadcast", "regular", "multivariate", "trigger"])
    p.add_argument("--resource", required=True)
    audience = p.add_mutually_exclusive_group(required=True)
    audience.add_argument("--database")
    audience.add_argument("--segment")
    p.add_argument("--template", dest="templates", action="append", required=True,
                   metavar="FILE", help="the template (UTF-8 text; an email resource's"
                   " HTML body); 2 to 8 of them, one per variant, for --kind multivariate")
    p.add_argument("--subject", metavar="TEXT",
                   help="an email resource's subject (a template too; Emoji welcome);"
                   " the variants share it")
    p.add_argument("--text", metavar="FILE",
                   help="an email's text version (default: made from each HTML body)")
    p.add_argument("--limit", type=positive)
    p.add_argument("--policy", type=_policy, metavar="MAX/DAYS[/SCOPE]",
                   help="this mailing's sending policy, e.g. 3/7 or 1/1/contact")
    when = p.add_argument_group("schedule")
    when.add_argument("--at", metavar="TIME", help="launch once, e.g. 2026-12-24T10:00")
    when.add_argument("--schedule", metavar="CRON",
                      help='five cron fields, e.g. "0 10 * * MON#1" (first Monday, 10:00)')
    when.add_argument("--timezone", metavar="ZONE",
                      help="of --at, --schedule and --until (default [engine] timezone)")
    when.add_argument("--until", metavar="TIME", help="no launch after this time")
    when.add_argument("--local-time", action="store_true",
                      help="at the schedule's time in each profile's _tz (else the mailing's)")
    when.add_argument("--late", choices=["now", "next"],
                      help="with --local-time: whose time has passed get it now or next day")
    ab = p.add_argument_group("multivariate")
    ab.add_argument("--test-share", type=_percent, metavar="P",
                    help="percent of the audience in the test (100: a plain split)")
    ab.add_argument("--winner", choices=["clicks", "unique_clicks", "delivered", "manual"])
    ab.add_argument("--wait", type=duration, metavar="DURATION",
                    help="between the test and the winner: 90, 5s, 90m, 2h, 1d")
    p.add_argument("--control", type=_percent, metavar="P",
                   help="percent of the audience held out (reason control)")
    p.add_argument("--ignore-global-control", action="store_true",
                   help="send to the database's global control group too")
    p.add_argument("--quiet-hours", action="store_true",
                   help="a trigger mailing obeys its resource's quiet_hours")
    p.add_argument("--json", action="store_true", help="print the mailing as JSON")
    p.set_defaults(func=cmd_create)


def add_mailing_parsers(subparsers: Any) -> None:
    """Register ``mailing create|list|show|start|pause|resume|cancel|test|pick``."""
    p = subparsers.add_parser("mailing", help="create, schedule, start, test mailings")
    sub = p.add_subparsers(dest="mailing_command", required=True, metavar="COMMAND")
    _add_create(sub)

    q = sub.add_parser("list", help="mailings with their state, next launch, latest run")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)

    for name, func, text in (
        ("show", cmd_show, "a mailing, its options and its runs with their counts"),
        ("start", cmd_start, "launch it now, in the foreground, and print its log(s)"),
        ("pause", cmd_pause, "stop its run (resumable) or its scheduled launches"),
        ("resume", cmd_resume, "carry on its interrupted run, or schedule it again"),
        ("cancel", cmd_cancel, "stop it for good: no launch, its run cancelled"),
    ):
        q = sub.add_parser(name, help=text)
        q.add_argument("mailing_id", type=int, metavar="ID")
        if name in ("show", "start", "resume"):
            q.add_argument("--json", action="store_true")
        q.set_defaults(func=func)

    q = sub.add_parser("test", help="send every variant to test phones (is_test: in no"
                       " report, no dedupe, no policy)")
    q.add_argument("mailing_id", type=int, metavar="ID")
    q.add_argument("--to", action="append", required=True, metavar="PHONE",
                   help="a phone to send to (an email mailing's: an email address)")
    q.add_argument("--profile", type=int, metavar="ID",
                   help="whose data renders (default: the audience's first profile)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_test)

    q = sub.add_parser("pick", help="choose a multivariate mailing's winner (--winner manual)")
    q.add_argument("mailing_id", type=int, metavar="ID")
    q.add_argument("--variant", type=int, required=True, metavar="N", help="from 1")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_pick)
