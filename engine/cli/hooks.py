"""``herald hooks status [--json]`` and ``herald hooks replay NAME [--since TIME]``: the
action hooks' outbox (``engine.events``).

``status`` shows each configured hook: its cursor, how many events of the record lie
after it (counted up to 10,000), the process delivering it, its last error and since
when its batch fails, the events it delivered, and its dead letters. ``replay`` sends a
hook's dead letters again from this process, through the hook's transport, dropping
each one delivered; with ``--since`` also every event the hook takes since that time
(up to its cursor). A replay that fails exits 1, the letters not delivered kept.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import msgspec

from engine.cli.workspace import print_json, using
from engine.errors import InputError
from engine.events.messages import event_date
from engine.events.transports.base import DeliveryError
from engine.reports import parse_time

__all__ = ["add_hooks_parsers"]

#: ``behind`` counts events after the cursor up to this many (then says "more").
_BEHIND_CAP = 10_000


class DeadLetterOut(msgspec.Struct, kw_only=True):
    id: int
    #: The events in (after, upto] of the record ([txid, id] positions).
    after: tuple[int, int]
    upto: tuple[int, int]
    events: int
    error: str
    first_failed: str
    at: str


class HookStatus(msgspec.Struct, kw_only=True):
    name: str
    transport: str
    #: False before any process delivered it (it starts at the end of the record).
    seen: bool
    cursor: tuple[int, int] | None
    #: Events of the record after the cursor (before the hook's filters), counted up to
    #: 10,000; ``behind_more``: there are more.
    behind: int | None
    behind_more: bool
    #: The process holding the lease ("" when none holds it now).
    owner: str
    last_error: str
    failing_since: str | None
    delivered: int
    dead_letters: list[DeadLetterOut]
    dead_letter_events: int


async def hooks_status(herald: Any) -> list[HookStatus]:
    """The status of each configured hook, by name."""
    store = herald.store
    states = {s.name: s for s in await store.hook_states()}
    letters = await store.dead_letters()
    now = time.time()
    out = []
    for name, config in sorted(herald.config.hooks.items()):
        state = states.get(name)
        mine = [DeadLetterOut(id=d.id, after=tuple(d.after), upto=tuple(d.upto),
                              events=d.events, error=d.error,
                              first_failed=event_date(d.first_failed), at=event_date(d.at))
                for d in letters if d.hook == name]
        behind: int | None = None
        if state is not None:
            behind = len(await store.hook_events(state.cursor, _BEHIND_CAP + 1))
        out.append(HookStatus(
            name=name, transport=config.transport, seen=state is not None,
            cursor=tuple(state.cursor) if state is not None else None,
            behind=min(behind, _BEHIND_CAP) if behind is not None else None,
            behind_more=behind is not None and behind > _BEHIND_CAP,
            owner=state.owner if state is not None and state.lease_until > now else "",
            last_error=state.last_error if state is not None else "",
            failing_since=(event_date(state.failing_since)
                           if state is not None and state.failing_since is not None else None),
            delivered=state.delivered if state is not None else 0,
            dead_letters=mine, dead_letter_events=sum(d.events for d in mine),
        ))
    return out


def _position(p: tuple[int, int] | None) -> str:
    if p is None:
        return "-"
    return str(p[1]) if p[0] == 0 else f"{p[0]}:{p[1]}"


def _print_table(hooks: list[HookStatus]) -> None:
    if not hooks:
        print("no hooks configured ([hooks.NAME] in the config)")
    for h in hooks:
        behind = "-" if h.behind is None else f"{h.behind}{'+' if h.behind_more else ''}"
        print(f"{h.name} ({h.transport}): cursor {_position(h.cursor)}, {behind} event(s)"
              f" behind, {h.delivered} delivered"
              + ("" if h.seen else " (not delivered by any process yet)"))
        print(f"  owner: {h.owner or '(none)'}")
        if h.last_error:
            print(f"  failing since {h.failing_since}: {h.last_error}")
        if h.dead_letters:
            print(f"  dead letters: {len(h.dead_letters)} ({h.dead_letter_events} events)")
            for d in h.dead_letters:
                print(f"    #{d.id} events {_position(d.after)}..{_position(d.upto)}"
                      f" ({d.events}), failing {d.first_failed} to {d.at}: {d.error}")


def cmd_hooks_status(args: argparse.Namespace) -> int:
    hooks = using(args, hooks_status)
    if args.json:
        print_json(hooks)
    else:
        _print_table(hooks)
    return 0


def cmd_hooks_replay(args: argparse.Namespace) -> int:
    from engine.events.outbox import Replayed, replay
    from engine.events.transports import make_transport

    try:
        since = None if args.since is None else parse_time(args.since)
    except ValueError as err:
        raise InputError(f"--since: {err}") from None

    def say(done: Replayed) -> None:
        print(f"hook {args.name}: dead letter {done.letters} delivered", file=sys.stderr)

    async def action(herald: Any) -> Replayed | str:
        config = herald.config.hooks.get(args.name)
        if config is None:
            known = ", ".join(sorted(herald.config.hooks)) or "none"
            raise InputError(f"no hook named {args.name!r} (configured: {known})")
        try:
            transport = make_transport(args.name, config)
        except ValueError as err:
            raise InputError(f"hooks.{args.name}: {err}") from err
        try:
            return await replay(args.name, config, herald.store, transport,
                                account_id=herald.config.engine.account_id,
                                since=since, progress=say)
        except DeliveryError as err:
            return str(err)
        finally:
            await transport.aclose()

    result = using(args, action)
    if isinstance(result, str):
        print(f"herald: hook {args.name}: {result} (the dead letters not delivered are kept)",
              file=sys.stderr)
        return 1
    print(f"hook {args.name}: {result.letters} dead letter(s) delivered"
          f" ({result.letter_events} events)"
          + (f"; {result.since_events} event(s) since {args.since} delivered again"
             if since is not None else ""))
    return 0


def add_hooks_parsers(sub: Any) -> None:
    """Register ``hooks status`` and ``hooks replay`` on the ``herald`` sub-command
    parsers."""
    p = sub.add_parser("hooks", help="see the action hooks' outbox; replay dead letters")
    hooks = p.add_subparsers(dest="hooks_command", required=True, metavar="COMMAND")
    status = hooks.add_parser("status", help="each hook's cursor, lease, failure, dead"
                              " letters")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_hooks_status)
    replay = hooks.add_parser("replay", help="send a hook's dead letters again now (exit 1"
                              " if a delivery fails)")
    replay.add_argument("name", metavar="NAME", help="the hook ([hooks.NAME])")
    replay.add_argument("--since", metavar="TIME",
                        help="also every event of the hook since TIME (RFC 3339, or"
                        " YYYY-MM-DD: midnight UTC)")
    replay.set_defaults(func=cmd_hooks_replay)
