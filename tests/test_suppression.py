"""Suppression lists: import, global and attached lists, counted in the mailing log."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.core.phones import PhoneNormaliser
from engine.store.base import ImportRecord
from engine.suppression import classify, import_suppressions
from engine.testing import FakeGateway, write_config


@pytest.mark.parametrize(("value", "expected"), [
    ("someone@Example.com", ("email", "someone@example.com")),
    ("@example.com", ("domain", "example.com")),
    ("mail.example.co.uk", ("domain", "mail.example.co.uk")),
    ("+7 916 123-45-67", ("phone", "+79161234567")),
    ("8 (916) 123-45-67", ("phone", "+79161234567")),
    ("12.34", None),
    ("nonsense", None),
])
def test_classify(value: str, expected: tuple[str, str] | None) -> None:
    assert classify(value, PhoneNormaliser("RU")) == expected


def test_import_reports_bad_lines_and_counts(tmp_path: Path) -> None:
    write_config(tmp_path, driver="null", default_region="RU")
    path = tmp_path / "stop.txt"
    path.write_text("phone\n+79161234567\n8 916 123 45 67\nbad value\n@spam.example\n"
                    "a@b.example\n# comment\n\n", encoding="utf-8")
    run = [sys.executable, "-m", "engine.cli", "--config", str(tmp_path / "herald.toml")]
    proc = subprocess.run([*run, "suppression", "import", str(path)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        "list global: added 1 domains, 1 emails, 1 phones; 1 already there, 1 rejected")
    assert proc.stderr.strip() == f"{path}:4: not a phone, an email or a domain: 'bad value'"
    listing = subprocess.run([*run, "suppression", "list", "--json"], capture_output=True,
                             text=True, check=True)
    (only,) = json.loads(listing.stdout)["lists"]
    assert only["global"] is True and only["counts"] == {"phone": 1, "email": 1, "domain": 1}


@pytest.mark.anyio
async def test_attached_lists_apply_only_where_attached(
    open_herald: Callable[..., Any], tmp_path: Path
) -> None:
    gateway = FakeGateway()
    async with await open_herald(gateway) as herald:
        store = herald.store
        rid = await store.resource_id("news")
        for db in ("a", "b"):
            dbid = await store.database_id(db, create=True)
            await store.import_profiles(
                dbid, [ImportRecord("+447911000001", "+447911000001", None, {}),
                       ImportRecord("+447911000002", "+447911000002", None, {})],
                matching="phone", resource_id=rid,
            )
        stop = tmp_path / "vip.txt"
        stop.write_text("+447911000001\n", encoding="utf-8")
        await import_suppressions(store, stop, list_name="vip-only")
        await store.attach_suppression_list("vip-only", database_id=await store.database_id("a"))
        log_a = await herald.send(resource="news", database="a", template="x")
        log_b = await herald.send(resource="news", database="b", template="x")
    assert (log_a.suppressed, log_a.sent) == (1, 1)
    assert (log_b.suppressed, log_b.sent) == (0, 2)
