"""The demo: what the generator planted is what the mailing log counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_demo_log_matches_the_planted_audience(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "demo",
            "--profiles",
            "5000",
            "--dir",
            str(tmp_path),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    log = json.loads(proc.stdout)
    from engine.demo import generate
    from engine.store.sqlite import SQLiteStore

    # the generator is deterministic: plant the same audience again to know the plan
    plan = generate(SQLiteStore.open(tmp_path / "again.db"), profiles=5000)
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
