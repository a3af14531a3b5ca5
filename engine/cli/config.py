"""``herald check-config`` and ``herald plugins``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import msgspec

from engine.backends import default_backend
from engine.cli.workspace import print_json
from engine.config import Config, load_config
from engine.errors import ConfigError
from engine.plugins import load_plugins

__all__ = ["add_config_parsers"]


def cmd_check_config(args: argparse.Namespace) -> int:
    path = args.path or args.config
    try:
        config = load_config(path, drivers=load_plugins().drivers)
    except ConfigError as err:
        for problem in err.problems:
            print(problem, file=sys.stderr)
        return 2
    for note in _backend_notes(config):
        print(note, file=sys.stderr)
    print("ok")
    return 0


def _backend_notes(config: Config) -> list[str]:
    """What the config does differently on this backend ($HERALD_BACKEND): a hook whose
    broker client runs only on asyncio gets an asyncio loop in a thread of its own on trio."""
    from engine.events.transports import transport_class

    backend = default_backend()
    if backend != "trio":
        return []
    return [f"note: hooks.{name}: the {hook.transport} client runs only on asyncio; on trio"
            " (HERALD_BACKEND) it runs on an asyncio event loop in a thread of its own"
            for name, hook in config.hooks.items()
            if transport_class(hook.transport).asyncio_only]


class _PluginOut(msgspec.Struct):
    name: str
    distribution: str
    version: str
    drivers: list[str]


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


def add_config_parsers(sub: Any) -> None:
    """Register ``check-config`` and ``plugins`` on the ``herald`` sub-command parsers."""
    p = sub.add_parser("check-config", help="check a config file; print ok or its problems")
    p.add_argument("path", nargs="?")
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("plugins", help="list installed plugins and drivers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)
