"""Running Herald's async code: asyncio with uvloop by default, or trio.

``HERALD_BACKEND=trio`` (or a command's ``--backend``) picks trio; on asyncio, uvloop is
used when it is installed. Every ``herald`` command runs its event loop through :func:`run`.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = ["BACKENDS", "default_backend", "run"]

T = TypeVar("T")

BACKENDS = ("asyncio", "trio")


def default_backend() -> str:
    """``$HERALD_BACKEND`` when it names a backend (asyncio or trio), else asyncio."""
    backend = os.environ.get("HERALD_BACKEND", "asyncio")
    return backend if backend in BACKENDS else "asyncio"


def run(fn: Callable[[], Awaitable[T]], backend: str | None = None) -> T:
    """``fn()`` on ``backend`` (default: ``$HERALD_BACKEND``, else asyncio + uvloop)."""
    backend = backend or default_backend()
    options: dict[str, Any] = {}
    if backend == "asyncio":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            pass
        else:
            options["use_uvloop"] = True
    return anyio.run(fn, backend=backend, backend_options=options)
