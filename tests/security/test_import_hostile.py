"""Hostile import files: zip and tar.gz bombs are refused by ``[limits]
import_compression_ratio`` before anything is stored, and blank lines by the million cost
next to nothing."""

from __future__ import annotations

import io
import tarfile
import time
import zipfile
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.config import LimitsConfig
from engine.errors import InputError
from engine.importing import ImportReport, import_file
from engine.store.sqlite import SQLiteStore

BLANK_MB = 50  # 50 MB of newlines: ~50 KB deflated, a ratio near 1000


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SQLiteStore.open(tmp_path / "herald.db")
    yield s
    s.conn.close()


def load(store: SQLiteStore, path: Path, **options: Any) -> ImportReport:
    return anyio.run(partial(import_file, store, path, database="main", **options))


def stored(store: SQLiteStore) -> int:
    count: int = store.conn.execute("SELECT count(*) FROM profiles").fetchone()[0]
    return count


def zip_bomb(path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("people.csv", "w") as member:
            member.write(b"phone\n+79161234567\n")
            for _ in range(BLANK_MB):
                member.write(b"\n" * 2**20)
    return path


def tar_bomb(path: Path) -> Path:
    size = 20 + BLANK_MB * 2**20

    class Blank(io.RawIOBase):  # the member's bytes, made as tarfile reads them
        sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            head = b"phone\n+79161234567\n\n"
            n = min(len(buffer), size - self.sent)
            chunk = (head + b"\n" * n)[self.sent:self.sent + n] if self.sent < 20 else b"\n" * n
            buffer[:n] = chunk
            self.sent += n
            return n

    with tarfile.open(path, "w:gz", compresslevel=9) as archive:
        info = tarfile.TarInfo("people.csv")
        info.size = size
        archive.addfile(info, io.BufferedReader(Blank()))
    return path


@pytest.mark.parametrize("make", [zip_bomb, tar_bomb], ids=["zip", "tar.gz"])
def test_a_bomb_is_refused_at_once_naming_the_member_and_the_bound(
    tmp_path: Path, store: SQLiteStore, make: Any
) -> None:
    path = make(tmp_path / f"bomb.{'zip' if make is zip_bomb else 'tar.gz'}")
    assert path.stat().st_size * 100 < BLANK_MB * 2**20
    started = time.perf_counter()
    with pytest.raises(InputError) as info:
        load(store, path)
    assert time.perf_counter() - started < 1
    assert str(info.value) == (
        f"{path}: member people.csv expands more than 100 times its compressed size;"
        " [limits] import_compression_ratio is 100"
    )
    assert stored(store) == 0


def test_the_bound_is_the_limits_default_and_a_higher_one_lets_it_through(
    tmp_path: Path, store: SQLiteStore
) -> None:
    assert LimitsConfig().import_compression_ratio == 100
    path = zip_bomb(tmp_path / "bomb.zip")
    report = load(store, path, max_ratio=10_000)  # blank lines are skipped cheaply
    assert (report.added, report.rows) == (1, 1)


def test_an_ordinary_archive_below_the_ratio_still_imports(
    tmp_path: Path, store: SQLiteStore
) -> None:
    rows = "".join(f"+7916{n:07d},Name{n}\n" for n in range(0, 5_000_000, 997))
    path = tmp_path / "people.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("people.csv", "phone,_fname\n" + rows)
    assert load(store, path).added == rows.count("\n")
    assert stored(store) == rows.count("\n")


def test_a_million_blank_lines_in_a_plain_file_take_well_under_a_second(
    tmp_path: Path, store: SQLiteStore
) -> None:
    path = tmp_path / "blank.csv"
    path.write_bytes(b"phone\n\n\r\n" + b"\n" * 3_000_000 + b"+79161234567\n\r\n\n")
    started = time.perf_counter()
    report = load(store, path)
    assert time.perf_counter() - started < 1
    assert (report.added, report.rows) == (1, 1)


def test_line_numbers_count_the_skipped_blank_lines(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "gaps.csv"
    path.write_bytes(b"phone\n\n\r\n\r+79161234567\n\n\nnot a phone\n")
    report = load(store, path)
    assert report.added == 1
    assert [(e.line, e.reason) for e in report.errors] == [(8, "invalid phone 'not a phone'")]
