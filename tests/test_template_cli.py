"""Templates in use: the CLI, plugin functions, segment caps and recorded encodings."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from engine.hookspecs import hookimpl
from engine.plugins import load_plugins
from engine.runner import Herald
from engine.store.base import ImportRecord
from engine.testing import FakeGateway, write_config

SEED_EXAMPLE = ('{if lead._city equal "Moscow"} We invite you in Moscow on June 30!'
                "{else}We invite you in your city!{end}")


def herald(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True,
                          text=True, check=False, timeout=60)


def test_check_warns_of_an_emails_images_outside_the_gallery(tmp_path: Path) -> None:
    """An HTML template's images not served from the tracking domain (the gallery's) are
    named, with the command that copies them in."""
    (tmp_path / "herald.toml").write_text(
        '[tracking]\ndomain = "t.example.com"\n', encoding="utf-8")
    path = tmp_path / "body.html"
    path.write_text('<p>Hi {lead._fname}</p><img src="https://cdn.example.net/a.png">'
                    '<img src="https://t.example.com/1/2/ab/logo.png">', encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "--config",
                           str(tmp_path / "herald.toml"), "template", "check", str(path),
                           "--json"], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    (warning,) = json.loads(proc.stdout)["warnings"]
    assert "https://cdn.example.net/a.png" in warning and "logo.png" not in warning
    assert f"herald gallery localize {path}" in warning
    path.write_text('<img src="https://t.example.com/1/2/ab/logo.png">', encoding="utf-8")
    assert json.loads(herald("--config", str(tmp_path / "herald.toml"), "template", "check",
                             str(path), "--json").stdout)["warnings"] == []


def test_check_lists_variables_and_urls(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("Hi {lead._fname}, see https://shop.example/sale {json.code}",
                    encoding="utf-8")
    proc = herald("template", "check", str(path), "--json")
    assert proc.returncode == 0
    report = json.loads(proc.stdout)
    assert report["ok"] is True
    assert report["variables"] == ["json.code", "lead._fname"]
    assert report["urls"] == ["https://shop.example/sale"]


def test_check_reports_the_error_with_file_line_col_and_caret(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("Hello\nyes {else}no", encoding="utf-8")
    proc = herald("template", "check", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"{path}:2:5: ")
    assert "{else}" in lines[0]
    assert lines[1].strip() == "yes {else}no"
    assert lines[2] == " " * (lines[1].index("{")) + "^"


@pytest.mark.parametrize(("city", "text"), [
    ("Moscow", " We invite you in Moscow on June 30!"),
    ("Paris", "We invite you in your city!"),
])
def test_render_json_of_the_seed_example(tmp_path: Path, city: str, text: str) -> None:
    path = tmp_path / "t.txt"
    path.write_text(SEED_EXAMPLE, encoding="utf-8")
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"lead": {"_city": city}}), encoding="utf-8")
    proc = herald("template", "render", str(path), "--data", f"@{data}", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        "text": text, "encoding": "gsm7", "length": len(text), "segments": 1
    }


def test_render_counts_ucs2_segments(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("{lead._fname} " + "ж" * 100, encoding="utf-8")
    proc = herald("template", "render", str(path), "--data", '{"lead":{"_fname":"Ян"}}',
                  "--json")
    out = json.loads(proc.stdout)
    assert (out["encoding"], out["length"], out["segments"]) == ("ucs2", 103, 2)


def test_bad_data_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("x", encoding="utf-8")
    proc = herald("template", "render", str(path), "--data", "{nope")
    assert proc.returncode == 2 and "--data: not valid JSON" in proc.stderr


class _ShoutPlugin:
    @hookimpl
    def herald_template_functions(self) -> dict[str, Callable[..., Any]]:
        def shout(value: Any) -> str:
            return f"{value}!!!".upper()

        return {"shout": shout}


async def _open(tmp_path: Path, gateway: FakeGateway, extra: str = "") -> Herald:
    config = write_config(tmp_path, extra=extra)
    return await Herald.open(config, plugins=load_plugins(gateway.plugin(), _ShoutPlugin()))


async def _add(herald: Herald, phones: list[str], fields: dict[str, Any]) -> None:
    db = await herald.store.database_id("main", create=True)
    rid = await herald.store.resource_id("news")
    await herald.store.import_profiles(
        db, [ImportRecord(None, p, None, fields) for p in phones], matching="phone",
        resource_id=rid,
    )


@pytest.mark.anyio
async def test_plugin_template_function_in_a_mailing(tmp_path: Path) -> None:
    gateway = FakeGateway()
    async with await _open(tmp_path, gateway) as herald:
        await _add(herald, ["+447911123456"], {"_fname": "ada"})
        await herald.send(resource="news", database="main", template="{shout(lead._fname)}")
    assert [m.text for m in gateway.texts.values()] == ["ADA!!!"]


@pytest.mark.anyio
async def test_texts_over_the_sender_cap_are_skipped_and_encodings_recorded(
    tmp_path: Path,
) -> None:
    gateway = FakeGateway()
    path = write_config(tmp_path)
    text = path.read_text().replace('caller_id = "ACME"', 'caller_id = "ACME"\nmax_segments = 1')
    path.write_text(text)
    async with await Herald.open(path, plugins=load_plugins(gateway.plugin())) as herald:
        await _add(herald, ["+447911000001"], {"long": "x" * 200})
        await _add(herald, ["+447911000002"], {"long": "привет"})
        log = await herald.send(resource="news", database="main", template="{lead.long}")
        rows = herald.store.conn.execute(  # type: ignore[attr-defined]
            "SELECT phone, state, reason, segments, encoding FROM recipients ORDER BY seq"
        ).fetchall()
    assert log.too_long == 1 and log.sent == 1
    assert rows == [
        ("+447911000001", "skipped", "too_long", None, None),
        ("+447911000002", "sent", None, 1, "ucs2"),
    ]


@pytest.mark.parametrize("source", ["", "  \n", "{if lead.x}{end}\n"])
def test_check_and_render_refuse_a_template_that_can_only_render_empty(
    tmp_path: Path, source: str
) -> None:
    path = tmp_path / "t.txt"
    path.write_text(source, encoding="utf-8")
    for action in ("check", "render"):
        proc = herald("template", action, str(path))
        assert proc.returncode == 2, (action, proc.stdout, proc.stderr)
        assert proc.stderr.startswith(f"{path}:1:1: every message would be empty")
    proc = herald("template", "check", str(path), "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["errors"] == [{
        "line": 1, "col": 1, "message": "every message would be empty: the template holds"
        " only whitespace and tags that output nothing",
    }]


@pytest.mark.parametrize(("written", "rendered"), [
    ("Hi {lead._fname}\n", "Hi Ann"),
    ("Hi {lead._fname}\r\n", "Hi Ann"),
    ("Hi {lead._fname}", "Hi Ann"),
    ("Hi {lead._fname}\n\n", "Hi Ann\n"),  # one line break goes, not a blank last line
    ("Hi\r\n{lead._fname}\r\n", "Hi\nAnn"),
])
def test_a_template_files_final_line_break_is_not_part_of_the_text(
    tmp_path: Path, written: str, rendered: str
) -> None:
    path = tmp_path / "t.txt"
    path.write_bytes(written.encode())
    proc = herald("template", "render", str(path), "--data", '{"lead":{"_fname":"Ann"}}',
                  "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["text"] == rendered


def _file_workspace(tmp_path: Path) -> Path:
    """A workspace whose gateway writes each message to sent.jsonl, with two profiles."""
    config = write_config(tmp_path, driver="file")
    people = tmp_path / "people.csv"
    people.write_text("phone,_fname\n+447911123456,Ann\n+447911123457,Bob\n", encoding="utf-8")
    proc = herald("--config", str(config), "import", "profiles", str(people),
                  "--database", "main", "--resource", "news")
    assert proc.returncode == 0, proc.stderr
    return config


def _sent(tmp_path: Path) -> list[str]:
    sent = tmp_path / "sent.jsonl"
    if not sent.exists():
        return []
    return [json.loads(line)["text"] for line in sent.read_text().splitlines()]


def test_send_drops_the_template_files_final_newline(tmp_path: Path) -> None:
    config = _file_workspace(tmp_path)
    path = tmp_path / "sms.txt"
    path.write_text("Hi {lead._fname}\n", encoding="utf-8")
    proc = herald("--config", str(config), "send", "--resource", "news", "--database", "main",
                  "--template", str(path))
    assert proc.returncode == 0, proc.stderr
    assert sorted(_sent(tmp_path)) == ["Hi Ann", "Hi Bob"]


def test_send_refuses_a_template_that_can_only_render_empty_before_any_run(
    tmp_path: Path,
) -> None:
    config = _file_workspace(tmp_path)
    path = tmp_path / "sms.txt"
    path.write_text("{if lead.vip}{end}\n", encoding="utf-8")
    proc = herald("--config", str(config), "send", "--resource", "news", "--database", "main",
                  "--template", str(path))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"{path}:1:1: every message would be empty")
    assert _sent(tmp_path) == []
    runs = herald("--config", str(config), "runs", "--json")
    assert json.loads(runs.stdout) == {"runs": []}


def test_check_applies_the_workspace_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.cli import main

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv("HERALD_CONFIG", raising=False)
    config = write_config(tmp_path, extra="\n[limits]\ntemplate_path_depth = 3\n")
    template = tmp_path / "t.txt"
    template.write_text("Hi {lead.a.b.c.d}\n", encoding="utf-8")
    assert main(["template", "check", str(template)]) == 0  # no workspace: the defaults
    assert main(["--config", str(config), "template", "check", str(template)]) == 2
