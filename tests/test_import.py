"""`herald import profiles`: good rows land, bad rows are reported with their line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from openpyxl import Workbook

from engine.store.sqlite import SQLiteStore
from engine.testing import write_config

CSV = """\
phone,email,_fname,_city,plan
+79161234567,anna@example.com,Anna,Moscow,gold
8 (916) 765-43-21,,Boris,Kazan,
not a phone,x@example.com,Bad,Nowhere,
+447911123456,not-an-email,Chloe,Leeds,
"+44 7911 654321",chloe@example.com,"Chloé, Jr.",London,silver
only,two
"""


def run(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "--config", str(ws / "herald.toml"), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    write_config(tmp_path, driver="null", default_region="RU")
    return tmp_path


def test_import_reports_bad_rows_and_keeps_good_ones(ws: Path) -> None:
    path = ws / "people.csv"
    path.write_text(CSV, encoding="utf-8")
    proc = run(ws, "import", "profiles", str(path), "--database", "main", "--resource", "news")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "added 3, updated 0, rejected 3"
    assert proc.stderr.splitlines() == [
        f"{path}:4: invalid phone 'not a phone'",
        f"{path}:5: invalid email 'not-an-email'",
        f"{path}:7: expected 5 columns, got 2",
    ]
    store = SQLiteStore.open(ws / "herald.db")
    rows = store.conn.execute(
        "SELECT p.phone, p.email, json_extract(p.fields, '$._fname'), s.status FROM profiles p"
        " JOIN subscriptions s ON s.profile_id = p.id ORDER BY p.id"
    ).fetchall()
    assert rows == [
        ("+79161234567", "anna@example.com", "Anna", "subscribed"),
        ("+79167654321", None, "Boris", "subscribed"),
        ("+447911654321", "chloe@example.com", "Chloé, Jr.", "subscribed"),
    ]


def test_an_unclosed_quote_costs_its_row_not_the_rows_after_it(ws: Path) -> None:
    path = ws / "people.csv"
    path.write_text('phone,_fname\n+79161234567,Anna\n+79167654321,"Boris\n'
                    '+79160000003,Chloe\n+79160000004,"Dee"\n', encoding="utf-8")
    proc = run(ws, "import", "profiles", str(path), "--database", "main")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "added 3, updated 0, rejected 1"
    assert proc.stderr.splitlines() == [f"{path}:3: unclosed quote"]


def test_matching_rows_update_existing_profiles(ws: Path) -> None:
    first = ws / "a.csv"
    first.write_text("phone,_fname,plan\n+79161234567,Anna,gold\n", encoding="utf-8")
    second = ws / "b.csv"
    second.write_text("\ufeffphone,_city\n8 916 123 45 67,Sochi\n+79160000000,\n", encoding="utf-8")
    assert run(ws, "import", "profiles", str(first), "--database", "main").returncode == 0
    proc = run(ws, "import", "profiles", str(second), "--database", "main")
    assert proc.stdout.strip() == "added 1, updated 1, rejected 0"
    store = SQLiteStore.open(ws / "herald.db")
    (fields,) = store.conn.execute(
        "SELECT fields FROM profiles WHERE phone = '+79161234567'"
    ).fetchone()
    assert '"_fname":"Anna"' in fields and '"_city":"Sochi"' in fields and '"plan":"gold"' in fields


def test_header_problems_are_fatal_and_name_the_file(ws: Path) -> None:
    path = ws / "bad.csv"
    path.write_text("email,_fname\nx@example.com,X\n", encoding="utf-8")
    proc = run(ws, "import", "profiles", str(path), "--database", "main")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"herald: {path}:1: --matching phone needs a 'phone' column in the header"
    )
    path.write_text("phone,phone\n", encoding="utf-8")
    proc = run(ws, "import", "profiles", str(path), "--database", "main")
    assert "column 'phone' appears twice" in proc.stderr
    path.write_bytes(b"phone\n\xff\xfe\n")
    proc = run(ws, "import", "profiles", str(path), "--database", "main")
    assert proc.returncode == 2 and "not UTF-8" in proc.stderr


def test_xlsx_import_from_the_command_line(ws: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in [["phone", "_fname"], [79161234567, "Anna"], ["junk", "Bad"]]:
        sheet.append(row)
    path = ws / "people.xlsx"
    book.save(path)
    proc = run(ws, "import", "profiles", str(path), "--database", "main")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "added 1, updated 0, rejected 1"
    assert proc.stderr.splitlines() == [f"{path}:3: invalid phone 'junk'"]
