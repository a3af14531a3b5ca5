"""Custom field types: declared per database, checked on import, stored typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.fields import FieldSpec, convert_value
from engine.store.sqlite import SQLiteStore
from engine.testing import write_config

FIELDS = """
[databases.main.fields]
age = "int"
score = "float"
birthday = "date"
vip = "bool"
plan = { type = "enum", values = ["free", "gold"] }
interests = "tags"
address = "object"
orders = "array"
"""


@pytest.mark.parametrize(("type_", "raw", "value"), [
    ("int", " 42 ", 42), ("int", -7, -7), ("float", "3,5", 3.5), ("float", 2, 2.0),
    ("date", "2026-11-23", "2026-11-23"),
    ("date", "2026-11-23T10:00:00Z", "2026-11-23T10:00:00+00:00"),
    ("bool", "Yes", True), ("bool", "0", False), ("bool", False, False),
    ("tags", "a, b;a , c", ["a", "b", "c"]), ("tags", ["x", " y"], ["x", "y"]),
    ("object", '{"city": "Kazan"}', {"city": "Kazan"}),
    ("array", '[{"sku": 1}]', [{"sku": 1}]), ("string", 5, "5"),
])
def test_values_convert(type_: Any, raw: Any, value: Any) -> None:
    assert convert_value(FieldSpec(type=type_), raw) == value


@pytest.mark.parametrize(("type_", "raw"), [
    ("int", "4.2"), ("int", True), ("float", "nan"), ("float", "many"), ("date", "23.11.2026"),
    ("bool", "maybe"), ("object", "[1]"), ("array", '[1, 2]'), ("array", "{"),
])
def test_bad_values_say_what_was_expected(type_: Any, raw: Any) -> None:
    with pytest.raises(ValueError, match="expected"):
        convert_value(FieldSpec(type=type_), raw)


def test_enum_values() -> None:
    spec = FieldSpec(type="enum", values=["free", "gold"])
    assert convert_value(spec, "gold") == "gold"
    with pytest.raises(ValueError, match="expected one of free, gold, not 'pro'"):
        convert_value(spec, "pro")


@given(st.sampled_from(["int", "float", "string", "date", "bool", "tags", "object", "array"]),
       st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.none(),
                 st.lists(st.integers(), max_size=3)))
def test_any_value_converts_or_raises_value_error(type_: Any, raw: Any) -> None:
    try:
        out = convert_value(FieldSpec(type=type_), raw)
    except ValueError:
        return
    msgspec.json.encode(out)  # whatever is stored is JSON


def run(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", "--config", str(ws / "herald.toml"), *args],
        capture_output=True, text=True, check=False, timeout=60,
    )


def test_import_checks_types_and_stores_them_typed(tmp_path: Path) -> None:
    write_config(tmp_path, driver="null", default_region="RU", extra=FIELDS)
    path = tmp_path / "p.csv"
    path.write_text(
        "phone;age;vip;plan;interests;birthday\n"
        "+79161234567;34;yes;gold;shoes, bags;1990-05-01\n"
        "+79161234568;old;no;free;;\n"
        "+79161234569;20;no;pro;;\n",
        encoding="utf-8",
    )
    proc = run(tmp_path, "import", "profiles", str(path), "--database", "main")
    assert proc.stdout.strip() == "added 1, updated 0, rejected 2"
    assert proc.stderr.splitlines() == [
        f"{path}:3: field age: expected a whole number, not 'old'",
        f"{path}:4: field plan: expected one of free, gold, not 'pro'",
    ]
    store = SQLiteStore.open(tmp_path / "herald.db")
    (fields,) = store.conn.execute("SELECT fields FROM profiles").fetchone()
    stored = msgspec.json.decode(fields)
    assert stored["age"] == 34 and stored["vip"] is True
    assert stored["interests"] == ["shoes", "bags"] and stored["birthday"] == "1990-05-01"


def test_config_names_bad_field_types(tmp_path: Path) -> None:
    write_config(tmp_path, driver="null", extra=(
        "[databases.main.fields]\nage = \"integer\"\nplan = { type = \"enum\" }\n"
        "phone = \"int\"\n"))
    proc = run(tmp_path, "check-config", str(tmp_path / "herald.toml"))
    assert proc.returncode == 2
    lines = [line.split(": ", 1)[1] for line in proc.stderr.splitlines()]
    assert lines == [
        "databases.main.fields.age.type: invalid enum value 'integer'",
        "databases.main.fields.plan.values: an enum needs its values",
        "databases.main.fields.phone: a built-in field; its type is fixed",
    ]
