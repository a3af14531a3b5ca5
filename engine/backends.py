"""Running Herald's async code: asyncio with uvloop by default, or trio.

``HERALD_BACKEND=trio`` (or a command's ``--backend``) picks trio; on asyncio, uvloop is
used when it is installed.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

__all__ = ["default_backend", "run"]

T = TypeVar("T")


def default_backend() -> str:
    return os.environ.get("HERALD_BACKEND", "asyncio")


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
