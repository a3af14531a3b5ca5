"""Loading plugins: the pluggy manager and the registries built from its hooks.

Plugins are modules registered under the ``herald`` entry-point group. The bundled drivers
are plugins too: ``pyproject.toml`` registers ``herald_null`` and ``herald_file`` exactly as
a third-party package registers its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from engine import hookspecs
from engine.drivers import Driver
from engine.errors import PluginError

__all__ = ["PluginInfo", "Plugins", "load_plugins"]

ENTRY_POINT_GROUP = "herald"


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    drivers: tuple[str, ...]


@dataclass
class Plugins:
    """What the installed plugins provide, collected once at start-up."""

    manager: pluggy.PluginManager
    drivers: dict[str, type[Driver]] = field(default_factory=dict)

    def template_functions(self) -> dict[str, Callable[..., Any]]:
        functions: dict[str, Callable[..., Any]] = {}
        for result in self.manager.hook.herald_template_functions():
            functions.update(result)
        return functions

    def describe(self) -> list[PluginInfo]:
        dists = {id(p): d for p, d in self.manager.list_plugin_distinfo()}
        infos = []
        for name, plugin in self.manager.list_name_plugin():
            if plugin is None:
                continue
            dist = dists.get(id(plugin))
            drivers = tuple(
                sorted(
                    n for n, cls in self.drivers.items() if cls.__module__.startswith(
                        getattr(plugin, "__name__", "\0")
                    )
                )
            )
            infos.append(
                PluginInfo(
                    name=name,
                    distribution=dist.project_name if dist else "",
                    version=dist.version if dist else "",
                    drivers=drivers,
                )
            )
        return sorted(infos, key=lambda i: i.name)


def load_plugins(*extra: object) -> Plugins:
    """Load every ``herald`` entry point (plus ``extra`` plugin objects, for tests)."""
    pm = pluggy.PluginManager("herald")
    pm.add_hookspecs(hookspecs)
    for plugin in extra:
        pm.register(plugin)
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as err:  # a broken third-party plugin must say who it is
        raise PluginError(f"could not load a herald plugin: {err!r}") from err
    pm.check_pending()
    plugins = Plugins(pm)
    for found in pm.hook.herald_drivers():
        for cls in found:
            name = getattr(cls, "name", None)
            if not isinstance(name, str) or not name:
                raise PluginError(f"driver class {cls.__qualname__} has no name")
            if name in plugins.drivers and plugins.drivers[name] is not cls:
                other = plugins.drivers[name]
                raise PluginError(
                    f"two drivers are named {name!r}: {other.__module__}.{other.__qualname__}"
                    f" and {cls.__module__}.{cls.__qualname__}"
                )
            plugins.drivers[name] = cls
    return plugins
