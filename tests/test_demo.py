"""The demo: what the generator planted is what the mailing log counts."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import anyio
import pytest


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_demo_log_matches_the_planted_audience(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    database = request.getfixturevalue("pg_url") if store == "postgres" else "herald.db"
    proc = demo("--profiles", "5000", "--dir", str(tmp_path), "--database", database,
                "--json")
    assert proc.returncode == 0, proc.stderr
    log = json.loads(proc.stdout)
    from engine.demo import generate
    from engine.store.sqlite import SQLiteStore

    # the generator is deterministic: plant the same audience again to know the plan
    again = SQLiteStore.open(tmp_path / "again.db")
    plan = anyio.run(functools.partial(generate, again, profiles=5000))
    assert log["status"] == "finished"
    assert log["subscribers_received"] == plan.profiles
    assert log["subscribers_found"] == plan.subscribed
    assert log["duplicate_phones"] == plan.duplicates > 0
    assert log["suppressed"] == plan.suppressed > 0
    assert log["invalid_phones"] == plan.invalid > 0
    assert log["recipients"] == plan.unique
    # the simulated gateway rejects a few numbers: they fail with its code, none is lost
    assert log["sent"] + log["failed"] == plan.unique and log["unknown"] == 0
    assert set(log["failed_reasons"]) <= {"rejected"}


def test_a_second_demo_on_one_database_is_refused(tmp_path: Path, pg_url: str) -> None:
    assert demo("--profiles", "50", "--dir", str(tmp_path / "a"), "--database", pg_url,
                "--json").returncode == 0
    again = demo("--profiles", "50", "--dir", str(tmp_path / "b"), "--database", pg_url)
    assert again.returncode == 2
    assert "already has 50 profiles; give the demo an empty database" in again.stderr
