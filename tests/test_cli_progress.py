"""`herald send > log.txt`: stdout holds the log alone; the progress bar is drawn on stderr,
and only when stderr is a terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from engine.testing import write_config


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    write_config(tmp_path, driver="file")
    (tmp_path / "people.csv").write_text(
        "phone,_fname\n+447911123456,Ann\n+447911123457,Bob\n", encoding="utf-8")
    (tmp_path / "t.txt").write_text("Hi {lead._fname}", encoding="utf-8")
    subprocess.run(
        [sys.executable, "-m", "engine.cli", "import", "profiles", "people.csv", "--database",
         "main", "--resource", "news"], cwd=tmp_path, check=True, capture_output=True,
        timeout=60,
    )
    return tmp_path


SEND = [sys.executable, "-m", "engine.cli", "send", "--resource", "news", "--database", "main",
        "--template", "t.txt"]


def _only_the_log(out: str) -> None:
    assert out.startswith("Mailing log: run 1, mailing 1")
    assert "\x1b" not in out and "\r" not in out
    assert not any(line.startswith("sending") for line in out.splitlines())
    assert "━" not in out
    assert "Sent (sent)" in out


def test_send_to_files_writes_the_log_alone_and_no_bar(ws: Path) -> None:
    with (ws / "log.txt").open("w") as out, (ws / "err.txt").open("w") as err:
        proc = subprocess.run(SEND, cwd=ws, stdout=out, stderr=err, timeout=60, check=False)
    assert proc.returncode == 0, (ws / "err.txt").read_text()
    _only_the_log((ws / "log.txt").read_text())
    assert (ws / "err.txt").read_text() == ""


def test_the_bar_goes_to_a_terminal_on_stderr_not_to_the_log_file(ws: Path) -> None:
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    env.pop("NO_COLOR", None)
    with (ws / "log.txt").open("w") as out:
        proc = subprocess.Popen(SEND, cwd=ws, stdout=out, stderr=follower, env=env)
        os.close(follower)
        drawn = b""
        while True:
            ready, _, _ = select.select([leader], [], [], 60)
            assert ready, "no output from herald send"
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            drawn += chunk
        assert proc.wait(timeout=60) == 0
    os.close(leader)
    _only_the_log((ws / "log.txt").read_text())
    assert b"sending" in drawn and b"2/2" in drawn
