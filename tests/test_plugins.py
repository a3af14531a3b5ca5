"""Plugins: a separately packaged driver is found through its entry point and used."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from engine.plugins import load_plugins
from engine.store.sqlite import SQLiteStore

PLUGIN_DIR = Path(__file__).parent / "fixtures" / "ledger_plugin"
README = Path(__file__).resolve().parents[1] / "README.md"


def herald(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PLUGIN_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "--config", str(ws / "herald.toml"), *args],
        cwd=ws,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_bundled_drivers_register_through_entry_points() -> None:
    plugins = load_plugins()
    assert {"null", "file"} <= set(plugins.drivers)
    names = {i.name: i for i in plugins.describe()}
    assert names["file"].drivers == ("file",)
    assert names["file"].distribution == "herald"


def test_third_party_driver_is_listed_and_used(tmp_path: Path) -> None:
    (tmp_path / "herald.toml").write_text(
        "[gateways.g]\ndriver = 'ledger'\npath = 'ledger.jsonl'\n"
        "[senders.s]\ngateway = 'g'\ncaller_id = 'X'\n"
        "[virtual_senders.v]\nrules = [{ senders = [{ sender = 's' }] }]\n"
        "[resources.news]\nvirtual_sender = 'v'\n",
        encoding="utf-8",
    )
    listing = herald(tmp_path, "plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    plugins = {p["name"]: p for p in json.loads(listing.stdout)["plugins"]}
    assert plugins["ledger"]["distribution"] == "herald-ledger"
    assert plugins["ledger"]["drivers"] == ["ledger"]

    store = SQLiteStore.open(tmp_path / "herald.db")
    db = store.database_id_sync("main", create=True)
    rid = store.resource_id_sync("news")
    store.conn.execute(
        "INSERT INTO profiles (id, database_id, fields, created_at, updated_at)"
        " VALUES (1, ?, '{}', 0, 0)",
        (db,),
    )
    store.conn.execute(
        "INSERT INTO subscriptions (profile_id, resource_id, phone, created_at,"
        " updated_at) VALUES (1, ?, '+447911123456', 0, 0)",
        (rid,),
    )
    store.conn.close()
    (tmp_path / "t.txt").write_text("hello", encoding="utf-8")
    sent = herald(
        tmp_path,
        "send",
        "--resource",
        "news",
        "--database",
        "main",
        "--template",
        "t.txt",
        "--json",
    )
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["sent"] == 1
    (line,) = (tmp_path / "ledger.jsonl").read_text().splitlines()
    assert json.loads(line)["to"] == "+447911123456"


def test_every_hook_is_documented() -> None:
    """Each hookspec has a docstring saying when it is called and how results combine."""
    import engine.hookspecs as hs

    hooks = [name for name in dir(hs) if name.startswith("herald_")]
    assert hooks
    for name in hooks:
        doc = getattr(hs, name).__doc__ or ""
        assert "Called" in doc, f"{name} does not say when it is called"
        assert "results" in doc or "first" in doc, f"{name} does not say how results combine"
        assert name in README.read_text(encoding="utf-8"), f"{name} is not in the README"
