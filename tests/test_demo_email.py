"""``herald demo --channel email``: the mailing log counts what the generator planted, the
SMTP sink took every recipient's message, and every signature verified with dkimpy."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from engine.demo import AudiencePlan, generate
from engine.plugins import load_plugins
from engine.runner import Herald

PROFILES = 400


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "demo", "--channel", "email", *args],
        capture_output=True, text=True, check=False, timeout=180,
    )


async def _plan(config: Path) -> AudiencePlan:
    """The same audience planted again in a store of its own (the generator is
    deterministic)."""
    async with await Herald.open(config, plugins=load_plugins()) as herald:
        return await generate(herald.store, profiles=PROFILES, resource="letters",
                              channel="email")


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_email_demo_log_matches_the_planted_audience_and_dkim_verifies(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    database = request.getfixturevalue("pg_url") if store == "postgres" else "herald.db"
    proc = demo("--profiles", str(PROFILES), "--dir", str(tmp_path / "ws"), "--database",
                database, "--json")
    assert proc.returncode == 0, proc.stderr
    log = json.loads(proc.stdout)
    again = tmp_path / "again"
    again.mkdir()
    config = (tmp_path / "ws" / "herald.toml").read_text(encoding="utf-8")
    (again / "herald.toml").write_text(
        re.sub(r"(?m)^database = .*$", 'database = "again.db"', config), encoding="utf-8")
    (again / "dkim.pem").write_bytes((tmp_path / "ws" / "dkim.pem").read_bytes())
    plan = anyio.run(functools.partial(_plan, again / "herald.toml"))
    assert log["status"] == "finished" and log["channel"] == "email"
    assert log["subscribers_received"] == plan.stored == plan.profiles - plan.rejected
    assert plan.rejected == plan.invalid > 0  # malformed addresses: refused by the import
    assert log["subscribers_found"] == plan.subscribed
    assert log["duplicate_phones"] == plan.duplicates > 0
    assert log["suppressed"] == plan.suppressed > 0
    assert log["recipients"] == plan.unique
    assert (log["sent"], log["failed"], log["unknown"]) == (plan.unique, 0, 0)
    n = f"{plan.unique:,}"
    assert (f"SMTP sink: took {n} messages; of every one: {n} DKIM signatures verified"
            f" (dkimpy), {n} with a text and an HTML part, {n} with short links only, {n}"
            f" with an open pixel, {n} with one-click List-Unsubscribe") in proc.stderr
    assert "a one-click POST unsubscribed " in proc.stderr, proc.stderr


def test_email_demo_prints_the_log_and_the_email_channel_report(tmp_path: Path) -> None:
    proc = demo("--profiles", "60", "--dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Mailing log: run 1, mailing 1 'demo email' (finished)" in out
    assert "channel report (herald report channel --channel email --by sender):" in out
    header = next(line for line in out.splitlines() if line.startswith("SENDER"))
    assert {"OPENS", "UNIQUE_OPENS", "HARD_BOUNCED", "COMPLAINTS"} <= set(header.split())
    assert re.search(r"SMTP sink: took (\d+) messages; of every one: \1 DKIM signatures"
                     r" verified", out), out
    assert "DKIM-signed (demo._domainkey.herald-demo.example" in out
