"""``herald demo``: generate an audience and send a mailing to two gateway simulators
(``--channel email``: an email mailing to an SMTP sink on loopback)."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from engine.backends import run as run_backend
from engine.cli.send import ProgressBar, positive, show_log
from engine.cli.templates import read_template
from engine.errors import InputError, NotFound
from engine.store.base import Store
from engine.store.models import AudienceSource
from engine.store.open import ENV, open_store

__all__ = ["add_demo_parser"]


#: Profiles a demo generates unless told (--profiles): the email demo's sink is in this
#: process, and each message is a few kilobytes.
PROFILES = {"sms": 100_000, "email": 20_000}


def cmd_demo(args: argparse.Namespace) -> int:
    if args.profiles is None:
        args.profiles = PROFILES[args.channel]
    if args.channel == "email":
        return cmd_email_demo(args)
    from engine.api.server import listen, serve
    from engine.demo import exercise_tracking, generate, write_workspace
    from engine.reports.output import table
    from engine.reports.tables import channel_report, undeliveries_report
    from engine.runner import Herald
    from engine.simulator import GatewaySimulator
    from engine.store.base import ReportFilter

    workspace = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="herald-demo-"))
    secret = "demo-" + os.urandom(12).hex()

    async def go() -> int:
        # before the simulators start: an error in their task group would come out wrapped
        url = os.environ.get(ENV) or args.database or str(workspace / "herald.db")
        store = await open_store(url)
        try:
            await _refuse_a_used_store(store)
        finally:
            await store.aclose()
        # the API (and so the tracking domain) on loopback, while the demo runs
        fd, port = listen("127.0.0.1", 0)
        api = f"http://127.0.0.1:{port}/api/v1"
        main_gw = GatewaySimulator(
            latency=0.01, error_rate=0.01, reject_rate=0.002, seed=1,
            receipt_url=f"{api}/dlr/main?secret={secret}", receipt_delay=0.2,
            undelivered_rate=0.04, undelivered_code="absent subscriber",
            inbound_url=f"{api}/inbound/main?secret={secret}")
        backup_gw = GatewaySimulator(
            latency=0.02, seed=2, receipt_url=f"{api}/dlr/backup?secret={secret}",
            receipt_delay=0.2, undelivered_rate=0.02, undelivered_code="expired")
        stopped = anyio.Event()
        async with main_gw, backup_gw:
            config_path = write_workspace(workspace, main_url=main_gw.send_url,
                                          backup_url=backup_gw.send_url,
                                          database=args.database or "herald.db",
                                          tracking=f"127.0.0.1:{port}", secret=secret)
            template = read_template(workspace / "template.txt")
            herald = await Herald.open(config_path)  # the new workspace, not --config's
            async with herald, anyio.create_task_group() as tg:
                tg.start_soon(partial(serve, herald, fd=fd, until=stopped.wait, quiet=True))
                t0 = time.perf_counter()
                plan = await generate(herald.store, profiles=args.profiles)
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
                          " passes its overflow to the other")
                    print(f"tracking domain: http://127.0.0.1:{port} (herald serve, on"
                          " loopback): links and unsubscribe pages per recipient\n")
                with ProgressBar(not args.json) as bar:
                    log = await herald.send(
                        resource="news", database="customers", template=template,
                        name="demo broadcast", progress=bar, handle_signals=True,
                    )
                where = ReportFilter(mailings=(log.mailing_id,))
                await _receipts_settle(herald.store, where, log.sent)
                done = await exercise_tracking(herald.store, log.run_id,
                                               f"http://127.0.0.1:{port}")
                stop = "no STOP reply was sent"
                if done.stop_phone is not None:
                    status = await main_gw.send_inbound(done.stop_phone, "stop")
                    subs = await herald.store.find_subscriptions(
                        await herald.store.resource_id("news"), phone=done.stop_phone)
                    gone = bool(subs) and all(sub.status != "subscribed" for sub in subs)
                    stop = (f"a STOP reply from {done.stop_phone} (answered {status})"
                            + (" unsubscribed it" if gone else " left it subscribed"))
                stopped.set()  # the server flushes its clicks as it stops
            stats = {"main": main_gw.statistics(), "backup": backup_gw.statistics()}
            async with await Herald.open(config_path) as herald:
                channel = await channel_report(herald.store, where, "sender")
                reasons = await undeliveries_report(herald.store, where)
        show_log(log, args.json)
        if not args.json:
            for name, st in stats.items():
                print(f"gateway {name}: {st.requests:,} requests, {st.accepted:,} accepted,"
                      f" {st.rejected:,} rejected, {st.errors:,} answered 500,"
                      f" {st.receipts_sent:,} receipts posted")
            print(f"tracking: {done.clicks} clicks by {done.clickers} recipients on their"
                  f" short links, {done.bot_clicks} by a link-preview bot (not counted);"
                  f" {stop}")
            print("\nchannel report (herald report channel --by sender):")
            print(table(channel))
            print("\nundeliveries (herald report undeliveries):")
            print(table(reasons))
            print(f"\nagain:    herald --config {config_path} log {log.run_id}")
            print(f"          herald --config {config_path} report channel"
                  f" --mailing {log.mailing_id}")
        return 0 if log.status == "finished" else 1

    return run_backend(go)


def cmd_email_demo(args: argparse.Namespace) -> int:
    """``herald demo --channel email``: an email mailing, DKIM-signed, to an SMTP sink on
    loopback (``engine.demo.MailSink``), with the log and the channel report."""
    from engine.api.server import listen, serve
    from engine.demo import (
        DEMO_DOMAIN,
        DEMO_SELECTOR,
        MailSink,
        check_sample,
        exercise_email_tracking,
        generate,
        write_email_workspace,
    )
    from engine.reports.output import table
    from engine.reports.tables import channel_report
    from engine.runner import Herald
    from engine.store.base import ReportFilter

    workspace = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="herald-demo-"))

    async def go() -> int:
        url = os.environ.get(ENV) or args.database or str(workspace / "herald.db")
        store = await open_store(url)
        try:
            await _refuse_a_used_store(store)
        finally:
            await store.aclose()
        fd, port = listen("127.0.0.1", 0)
        tracking = f"127.0.0.1:{port}"
        stopped = anyio.Event()
        with MailSink() as sink:
            config_path, txt = write_email_workspace(
                workspace, port=sink.port, database=args.database or "herald.db",
                tracking=tracking)
            template = read_template(workspace / "template.html")
            subject = read_template(workspace / "subject.txt")
            herald = await Herald.open(config_path)  # the new workspace, not --config's
            async with herald, anyio.create_task_group() as tg:
                tg.start_soon(partial(serve, herald, fd=fd, until=stopped.wait, quiet=True))
                t0 = time.perf_counter()
                plan = await generate(herald.store, profiles=args.profiles,
                                      resource="letters", channel="email")
                if not args.json:
                    print(f"workspace: {workspace}")
                    print(
                        f"generated {plan.profiles:,} profiles in"
                        f" {time.perf_counter() - t0:.1f}s: {plan.duplicates:,} duplicate"
                        f" addresses (the domain in another case), {plan.unsubscribed:,}"
                        f" unsubscribed, {plan.no_subscription:,} without a subscription,"
                        f" {plan.suppressed:,} suppressed (by address or by domain),"
                        f" {plan.rejected:,} malformed addresses refused by the import"
                    )
                    print(f"gateway: smtp to an SMTP sink (aiosmtpd) at 127.0.0.1:{sink.port},"
                          f" pipelined sessions, DKIM-signed ({DEMO_SELECTOR}._domainkey."
                          f"{DEMO_DOMAIN}, RSA 2048, a key made for this demo)")
                    print(f"tracking domain: http://{tracking} (herald serve, on loopback):"
                          " short links, open pixels, one-click unsubscribe per message\n")
                with ProgressBar(not args.json) as bar:
                    log = await herald.send(
                        resource="letters", database="customers", template=template,
                        subject=subject, name="demo email", progress=bar,
                        handle_signals=True,
                    )
                checked = await anyio.to_thread.run_sync(check_sample, sink, txt, tracking)
                done = await exercise_email_tracking(herald.store, sink)
                stopped.set()  # the server flushes its clicks and opens as it stops
            where = ReportFilter(mailings=(log.mailing_id,), channel="email")
            async with await Herald.open(config_path) as herald:
                channel = await channel_report(herald.store, where, "sender")
        show_log(log, args.json)
        said = sys.stderr if args.json else sys.stdout  # --json: stdout is the log's
        every = ("every one" if checked.checked == checked.taken else
                 f"a random {checked.checked:,} of them")
        print(f"SMTP sink: took {checked.taken:,} messages; of {every}:"
              f" {checked.dkim_ok:,} DKIM signatures verified (dkimpy),"
              f" {checked.both_parts:,} with a text and an HTML part,"
              f" {checked.short_links:,} with short links only, {checked.pixels:,}"
              f" with an open pixel, {checked.one_click:,} with one-click"
              " List-Unsubscribe", file=said)
        gone = (f"a one-click POST unsubscribed {done.unsubscribed}"
                if done.unsubscribed else "no one-click unsubscribe took effect")
        print(f"tracking: {done.opens} opens by {done.openers} readers (their pixels),"
              f" {done.clicks} clicks on their short links; {gone}", file=said)
        if not args.json:
            print("\nchannel report (herald report channel --channel email --by sender):")
            print(table(channel))
            print(f"\nagain:    herald --config {config_path} log {log.run_id}")
            print(f"          herald --config {config_path} report channel --channel email"
                  f" --mailing {log.mailing_id}")
        ok = log.status == "finished" and checked.dkim_ok == checked.checked
        return 0 if ok else 1

    return run_backend(go)


async def _receipts_settle(store: Store, where: Any, sent: int, within: float = 10.0) -> None:
    """Wait until the simulators' receipts for ``sent`` messages are in (or ``within`` s)."""
    with anyio.move_on_after(within):
        while True:
            rows = await store.report_channel(where, None)
            if rows and rows[0].delivered + rows[0].undelivered >= sent:
                return
            await anyio.sleep(0.1)


async def _refuse_a_used_store(store: Store) -> None:
    """The demo's audience goes into profile database ``customers``: InputError if that
    already has profiles (a second demo on one PostgreSQL database would mail both)."""
    try:
        database_id = await store.database_id("customers")
    except NotFound:
        return
    n = await store.count_audience(AudienceSource("list", database_id))
    if n:
        raise InputError(
            f"--database: profile database 'customers' of {store.url} already has {n:,}"
            " profiles; give the demo an empty database (e.g. createdb herald_demo2)"
        )


def add_demo_parser(sub: Any) -> None:
    """Register ``demo`` on the ``herald`` sub-command parsers."""
    p = sub.add_parser("demo", help="generate an audience and send a mailing end to end")
    p.add_argument("--channel", choices=["sms", "email"], default="sms",
                   help="sms: to two gateway simulators; email: DKIM-signed, to an SMTP"
                   " sink on loopback (aiosmtpd)")
    p.add_argument("--profiles", type=positive,
                   help=f"default {PROFILES['sms']:,} (email: {PROFILES['email']:,})")
    p.add_argument("--dir", help="workspace directory (default: a new temporary one)")
    p.add_argument("--database", metavar="URL",
                   help="the store: postgresql://USER@HOST/DB, or a SQLite path"
                        " (default: herald.db in the workspace; $HERALD_DATABASE overrides)")
    p.add_argument("--json", action="store_true", help="print the mailing log as JSON")
    p.set_defaults(func=cmd_demo)
