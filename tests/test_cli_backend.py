"""Every ``herald`` command runs its event loop through ``engine.backends.run``, which
honours ``$HERALD_BACKEND`` (asyncio, the default, or trio)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import sniffio

from engine import backends
from engine.cli import build_parser, main
from engine.testing import write_config


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, "asyncio"), ("asyncio", "asyncio"), ("trio", "trio"), ("curio", "asyncio")],
)
def test_the_backend_comes_from_herald_backend(
    monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str
) -> None:
    if value is None:
        monkeypatch.delenv("HERALD_BACKEND", raising=False)
    else:
        monkeypatch.setenv("HERALD_BACKEND", value)
    assert backends.default_backend() == expected

    async def library() -> str:
        return sniffio.current_async_library()

    assert backends.run(library) == expected
    assert backends.run(library, "asyncio") == "asyncio"  # a command's --backend wins


def test_serve_and_simulate_default_to_herald_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HERALD_BACKEND", "trio")
    parser = build_parser()
    assert parser.parse_args(["serve"]).backend == "trio"
    assert parser.parse_args(["simulate"]).backend == "trio"
    assert parser.parse_args(["serve", "--backend", "asyncio"]).backend == "asyncio"


@pytest.mark.parametrize(
    "argv", [["runs", "--json"], ["token", "list", "--json"], ["suppression", "list", "--json"]]
)
def test_commands_run_on_trio_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    config = str(write_config(tmp_path, driver="null"))
    used: list[str] = []
    real_run = anyio.run

    def spy(fn: Callable[..., Any], *args: Any, backend: str = "asyncio", **kw: Any) -> Any:
        used.append(backend)
        return real_run(fn, *args, backend=backend, **kw)

    monkeypatch.setenv("HERALD_BACKEND", "trio")
    monkeypatch.setattr(backends.anyio, "run", spy)
    assert main(["--config", config, *argv]) == 0
    assert used == ["trio"]
    json.loads(capsys.readouterr().out)


def test_a_subprocess_under_trio_succeeds(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, driver="null"))
    env = {**os.environ, "HERALD_BACKEND": "trio"}
    for argv in (["runs", "--json"], ["token", "list", "--json"]):
        proc = subprocess.run(
            [sys.executable, "-m", "engine.cli", "--config", config, *argv],
            cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)
