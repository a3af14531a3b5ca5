"""Hook specifications of the ``herald`` plugin system.

Hooks register and configure: each is called once at start-up and hands back classes or
callables; none sits on the per-message path. Call them with keyword arguments only.
A plugin is any module registered under the ``herald`` entry-point group; the bundled
drivers (``herald_null``, ``herald_file``) register the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from engine.drivers import Driver

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("herald")
hookimpl = pluggy.HookimplMarker("herald")


@hookspec
def herald_drivers() -> list[type[Driver]]:  # type: ignore[empty-body]
    """Return gateway driver classes. Called once at start-up; all results are collected."""


@hookspec
def herald_template_functions() -> dict[str, Callable[..., Any]]:  # type: ignore[empty-body]
    """Return template functions by name. Called once per compile; all results are merged."""
