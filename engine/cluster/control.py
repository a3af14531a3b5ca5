"""Control messages that reach every worker at once: pause, resume, cancel and start.

The service (``engine.service``) first sets the run's status in the store, then calls
``notify``: a PostgreSQL ``NOTIFY herald_control`` whose payload is a small JSON object,
``{"run": 12, "action": "pause"}``. Every worker runs ``listen`` as a task, on a
connection of its own that LISTENs on that channel::

    service:  set_run_status(run, "interrupted") ─▶ notify(store, run, "pause")
    worker:   listen(store, handle) ─▶ handle(Control(run, "pause"))
              pause, cancel: that run's chunks stop now (as the heartbeat would stop them)
              start, resume: the idle slots look for a chunk now

NOTIFY is not queued for listeners that are not connected at that moment, so a message
may be lost (a listener reconnecting, a database restart). The heartbeat's look at each
held run's status stays as the fallback: a lost pause is seen within ``[cluster]
heartbeat``, a lost start within the slots' idle poll. After a reconnection ``handle`` is
called with ``None`` (anything may have been missed meanwhile).

A store without ``notify_control``/``listen_control`` (SQLite: no cluster) makes
``notify`` a no-op and ``listen`` return at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal

import anyio
import anyio.abc
import msgspec

from engine.errors import InputError

__all__ = ["ACTIONS", "Action", "Control", "listen", "notify"]

logger = logging.getLogger("herald.cluster")

Action = Literal["pause", "resume", "cancel", "start"]
ACTIONS: tuple[Action, ...] = ("pause", "resume", "cancel", "start")

#: Seconds between two attempts to (re)connect a broken listener (doubling to the second).
RECONNECT = (0.5, 10.0)


class Control(msgspec.Struct, frozen=True, forbid_unknown_fields=False):
    """One control message: ``action`` on run ``run``."""

    run: int
    action: Action


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Control).decode


async def notify(store: Any, run_id: int, action: Action) -> bool:
    """Tell every listening worker that run ``run_id`` was paused, resumed, cancelled or
    started (after its status was set). False if it could not be said (no such channel
    in this store, or the database refused): the workers' heartbeat sees it anyway."""
    if action not in ACTIONS:
        raise InputError(f"control action: one of {', '.join(ACTIONS)}, not {action!r}")
    send = getattr(store, "notify_control", None)
    if send is None:
        return False
    try:
        await send(_encode(Control(run_id, action)).decode())
    except Exception as err:  # a lost notification: the heartbeat is the fallback
        logger.warning("control: could not notify %s of run %s (%s: %s); workers see it"
                       " at their next heartbeat", action, run_id, type(err).__name__, err)
        return False
    return True


async def listen(
    store: Any,
    handle: Callable[[Control | None], None],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Until cancelled: ``handle(control)`` for each control message; ``handle(None)``
    after a reconnection. ``task_status.started()`` once listening (or once the first
    attempt failed: it keeps trying meanwhile)."""
    open_listener = getattr(store, "listen_control", None)
    if open_listener is None:
        task_status.started()
        return
    started = False
    backoff = RECONNECT[0]
    while True:
        try:
            async with open_listener() as messages:
                if started:
                    handle(None)  # messages may have been missed while away
                else:
                    started = True
                    task_status.started()
                backoff = RECONNECT[0]
                async for payload in messages:
                    try:
                        control = _decode(payload)
                    except msgspec.DecodeError as err:
                        logger.warning("control: ignored %r (%s)", payload, err)
                        continue
                    handle(control)
        except Exception as err:  # the database away: the heartbeat covers meanwhile
            logger.warning("control: listener lost (%s: %s); again in %.1f s",
                           type(err).__name__, err, backoff)
        if not started:
            started = True
            task_status.started()
        await anyio.sleep(backoff)
        backoff = min(backoff * 2, RECONNECT[1])
