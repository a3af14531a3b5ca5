"""``herald demo``: generate an audience and send a mailing to two gateway simulators."""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.backends import run as run_backend
from engine.cli.send import ProgressBar, positive, show_log
from engine.cli.templates import read_template
from engine.errors import InputError, NotFound
from engine.store.base import Store
from engine.store.models import AudienceSource
from engine.store.open import ENV, open_store

__all__ = ["add_demo_parser"]


def cmd_demo(args: argparse.Namespace) -> int:
    from engine.demo import generate, write_workspace
    from engine.runner import Herald
    from engine.simulator import GatewaySimulator

    workspace = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="herald-demo-"))

    async def go() -> int:
        # before the simulators start: an error in their task group would come out wrapped
        url = os.environ.get(ENV) or args.database or str(workspace / "herald.db")
        store = await open_store(url)
        try:
            await _refuse_a_used_store(store)
        finally:
            await store.aclose()
        main_gw = GatewaySimulator(latency=0.01, error_rate=0.01, reject_rate=0.002, seed=1)
        backup_gw = GatewaySimulator(latency=0.02, seed=2)
        async with main_gw, backup_gw:
            config_path = write_workspace(workspace, main_url=main_gw.send_url,
                                          backup_url=backup_gw.send_url,
                                          database=args.database or "herald.db")
            template = read_template(workspace / "template.txt")
            herald = await Herald.open(config_path)  # the new workspace, not --config's
            async with herald:
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
                          " passes its overflow to the other\n")
                with ProgressBar(not args.json) as bar:
                    log = await herald.send(
                        resource="news", database="customers", template=template,
                        name="demo broadcast", progress=bar, handle_signals=True,
                    )
            stats = {"main": main_gw.statistics(), "backup": backup_gw.statistics()}
        show_log(log, args.json)
        if not args.json:
            for name, st in stats.items():
                print(f"gateway {name}: {st.requests:,} requests, {st.accepted:,} accepted,"
                      f" {st.rejected:,} rejected, {st.errors:,} answered 500")
            print(f"\nagain:    herald --config {config_path} log {log.run_id}")
        return 0 if log.status == "finished" else 1

    return run_backend(go)


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
    p.add_argument("--profiles", type=positive, default=100_000)
    p.add_argument("--dir", help="workspace directory (default: a new temporary one)")
    p.add_argument("--database", metavar="URL",
                   help="the store: postgresql://USER@HOST/DB, or a SQLite path"
                        " (default: herald.db in the workspace; $HERALD_DATABASE overrides)")
    p.add_argument("--json", action="store_true", help="print the mailing log as JSON")
    p.set_defaults(func=cmd_demo)
