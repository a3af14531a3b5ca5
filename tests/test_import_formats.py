"""Importing profiles from every format: CSV/TXT in any delimiter and encoding, XLSX, and
ZIP or TAR.GZ archives of them; the three modes and four ways of matching."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import sqlite3
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook

from engine.errors import InputError
from engine.importing import MODES, ImportReport, import_file
from engine.importing.text import read_text
from engine.store.base import ImportRecord
from engine.store.sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore.open(tmp_path / "herald.db")
    yield s
    s.conn.close()


def load(store: SQLiteStore, path: Path, **options: Any) -> ImportReport:
    options.setdefault("database", "main")
    return anyio.run(partial(import_file, store, path, **options))


def profiles(store: SQLiteStore) -> list[tuple[Any, ...]]:
    """(phone, email, fields) of every profile, oldest first."""
    return [
        (phone, email, json.loads(fields))
        for phone, email, fields in store.conn.execute(
            "SELECT phone, email, fields FROM profiles ORDER BY id"
        )
    ]


def names(store: SQLiteStore) -> list[str]:
    return [fields.get("_fname") for _, _, fields in profiles(store)]


def errors(report: ImportReport) -> list[str]:
    return [str(e) for e in report.errors]


def seed(store: SQLiteStore, *records: ImportRecord, database: str = "main") -> None:
    db = store.database_id_sync(database, create=True)
    anyio.run(partial(store.import_profiles, db, records, matching="phone", resource_id=None))


# -- CSV and TXT ----------------------------------------------------------------------


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter_is_sniffed(tmp_path: Path, store: SQLiteStore, delimiter: str) -> None:
    path = tmp_path / "people.txt"
    rows = [["phone", "_fname", "note"], ["+79161234567", "Anna", "likes, commas"],
            ["+79167654321", "Boris", "a;b|c"], ["bad", "Chloe", ""]]
    with path.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out, delimiter=delimiter).writerows(rows)
    report = load(store, path)
    assert report.summary() == "added 2, updated 0, rejected 1"
    assert errors(report) == [f"{path}:4: invalid phone 'bad'"]
    assert [fields["note"] for _, _, fields in profiles(store)] == ["likes, commas", "a;b|c"]


def test_single_column_file(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "phones.csv"
    path.write_text("phone\n+79161234567\n\n+7 916 765-43-21\n", encoding="utf-8")
    assert load(store, path).summary() == "added 2, updated 0, rejected 0"
    assert [p for p, _, _ in profiles(store)] == ["+79161234567", "+79167654321"]


def test_cp1251_file_with_cyrillic_names(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "excel-export.csv"
    path.write_bytes(
        "phone;_fname;_city\n+79161234567;Анна;Москва\n+79167654321;Ёжиков Пётр;Казань\n"
        .encode("cp1251")
    )
    assert load(store, path).added == 2
    assert [(f["_fname"], f["_city"]) for _, _, f in profiles(store)] == [
        ("Анна", "Москва"), ("Ёжиков Пётр", "Казань")
    ]


def test_utf8_with_and_without_bom(tmp_path: Path, store: SQLiteStore) -> None:
    with_bom = tmp_path / "bom.csv"
    with_bom.write_bytes("\ufeffphone,_fname\n+79161234567,Zoë\n".encode())
    without = tmp_path / "plain.csv"
    without.write_bytes("phone,_fname\n+79167654321,Анна\n".encode())
    assert load(store, with_bom).added == 1
    assert load(store, without).added == 1
    assert names(store) == ["Zoë", "Анна"]


def test_latin1_file_is_refused_not_misread_as_cp1251(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "west.csv"
    path.write_bytes("phone,_fname\n+79161234567,Müller\n".encode("cp1252"))
    with pytest.raises(InputError, match=r"west.csv:2: not UTF-8 text \(byte 0xFC\)"):
        load(store, path)
    assert profiles(store) == []
    assert load(store, path, encoding="cp1252").added == 1
    assert names(store) == ["Müller"]


def test_undecodable_row_past_the_sample_is_rejected_alone(
    tmp_path: Path, store: SQLiteStore
) -> None:
    path = tmp_path / "big.csv"
    lines = [f"+7916{i:07d},Row{i}" for i in range(20_000)]  # > 256 KiB of plain ASCII
    lines[19_000] = "+79169999999,Ren\xe9e"
    path.write_bytes(("phone,_fname\n" + "\n".join(lines) + "\n").encode("latin-1"))
    report = load(store, path)
    assert report.summary() == "added 19999, updated 0, rejected 1"
    assert errors(report) == [
        f"{path}:19002: not UTF-8 text (byte 0xE9); give the file's encoding"
    ]


def test_utf16_text_from_excel(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "unicode.txt"
    path.write_bytes("phone\t_fname\r\n+79161234567\tАнна\r\n".encode("utf-16"))
    assert load(store, path).added == 1
    assert names(store) == ["Анна"]


def test_a_file_without_line_breaks_is_refused_early(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "blob.csv"
    path.write_bytes(b"phone\n+79161234567\n" + b"x" * (3 * 1024 * 1024))
    with pytest.raises(InputError, match=r"blob\.csv:3: a line longer than 1048576 bytes"):
        load(store, path)


def read_records(text: str) -> list[tuple[int, list[str] | str]]:
    return list(read_text(io.BytesIO(text.encode()), "f.csv"))


def test_an_unclosed_quote_is_reported_where_its_field_began_and_reading_goes_on() -> None:
    assert read_records('a,b\n1,"abc\n2,x\n3,"q"\n4,y\n') == [
        (1, ["a", "b"]), (2, "unclosed quote"), (3, ["2", "x"]), (4, ["3", "q"]),
        (5, ["4", "y"]),
    ]
    # the field that never closes began on the record's second line
    assert read_records('a,b\n1,"x\ny",c,"d\n3,z\n') == [
        (1, ["a", "b"]), (3, "unclosed quote"), (4, ["3", "z"])
    ]
    # a quote closed by a quote followed by text, after swallowing a line: not closed
    assert read_records('a,b\n1,"abc\n2,"x" y\n') == [
        (1, ["a", "b"]), (2, "unclosed quote"), (3, ["2", "x y"])
    ]


def test_quoted_fields_may_hold_line_breaks_and_one_line_quotes_stay_lenient() -> None:
    assert read_records('a,b\r\n1,"Flat 3\r\nLondon"\r\n2,"say ""hi""\n"\r\n3,"ab"c\r\n') == [
        (1, ["a", "b"]), (2, ["1", "Flat 3\r\nLondon"]), (4, ["2", 'say "hi"\n']),
        (6, ["3", "abc"]),
    ]


def test_an_unclosed_quote_far_from_the_end_loses_only_its_row(
    tmp_path: Path, store: SQLiteStore
) -> None:
    path = tmp_path / "big.csv"
    lines = [f"+7916{i:07d},Row{i}" for i in range(30_000)]  # more than a field may hold
    lines[5] = '+79169999999,"Broken'
    path.write_text("phone,_fname\n" + "\n".join(lines) + "\n", encoding="utf-8")
    report = load(store, path)
    assert report.summary() == "added 29999, updated 0, rejected 1"
    assert errors(report) == [f"{path}:7: unclosed quote"]


def test_a_header_with_an_unclosed_quote_is_refused(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "a.csv"
    path.write_text('phone,"name\n+79161234567,Anna\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"a\.csv:1: the header is unreadable: unclosed quote"):
        load(store, path)


def test_unknown_encoding_is_an_input_error(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "a.csv"
    path.write_text("phone\n+79161234567\n")
    with pytest.raises(InputError, match="unknown encoding 'klingon'"):
        load(store, path, encoding="klingon")


# -- XLSX -----------------------------------------------------------------------------


def workbook(path: Path, rows: list[list[Any]]) -> Path:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.title = "Profiles"
    for row in rows:
        sheet.append(row)
    book.create_sheet("Other").append(["phone", "ignored"])
    book.save(path)
    return path


XLSX_ROWS: list[list[Any]] = [
    ["phone", "email", "_fname", "born", "score", "vip", "visits"],
    [79161234567, "anna@example.com", "Anna", dt.datetime(1990, 5, 17), 2.5, True, 3],
    ["+7 916 765-43-21", None, "Boris", dt.date(2001, 1, 2), 0.1 + 0.2, False, 12.0],
    [],
    ["12", "x@example.com", "Bad"],
    ["+447911123456", None, "Chloe", dt.datetime(2020, 2, 29, 13, 45)],
]


def test_xlsx_first_sheet_with_cells_as_text(tmp_path: Path, store: SQLiteStore) -> None:
    path = workbook(tmp_path / "people.xlsx", XLSX_ROWS)
    report = load(store, path)
    assert report.summary() == "added 3, updated 0, rejected 1"
    assert errors(report) == [f"{path}:5: invalid phone '12'"]  # the row Excel shows
    (anna, boris, chloe) = profiles(store)
    assert anna[0] == "+79161234567" and anna[2]["born"] == "1990-05-17"
    assert (anna[2]["score"], anna[2]["vip"], anna[2]["visits"]) == ("2.5", "TRUE", "3")
    assert (boris[2]["score"], boris[2]["vip"], boris[2]["visits"]) == ("0.3", "FALSE", "12")
    assert boris[2]["born"] == "2001-01-02"
    assert chloe[2]["born"] == "2020-02-29T13:45:00" and "score" not in chloe[2]


def test_xlsx_is_recognised_without_its_extension(tmp_path: Path, store: SQLiteStore) -> None:
    path = workbook(tmp_path / "export", [["phone"], ["+79161234567"]])
    assert load(store, path).added == 1


def test_broken_xlsx_is_an_input_error(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "broken.xlsx"
    path.write_bytes(b"PK\x03\x04 this is not a workbook")
    with pytest.raises(InputError, match=r"broken\.xlsx: not a readable xlsx"):
        load(store, path)


def test_old_xls_is_refused_with_advice(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "old.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(100))
    with pytest.raises(InputError, match=r"old.xls: an old .xls workbook; save it as .xlsx"):
        load(store, path)


# -- archives -------------------------------------------------------------------------


def xlsx_bytes(rows: list[list[Any]]) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return workbook(Path(tmp) / "w.xlsx", rows).read_bytes()


MEMBERS = {
    "b.csv": b"phone,_fname\n+79160000003,Bea\nnope,Bad\n",
    "a.xlsx": xlsx_bytes([["phone", "_fname"], ["+79160000001", "Ann"], ["+79160000002", "Al"]]),
    "sub/c.txt": "phone\t_fname\n+79160000004\tЦезарь\n".encode("cp1251"),
    "__MACOSX/._b.csv": b"\x00\x05\x16\x07 resource fork",
    ".DS_Store": b"\x00\x00\x00\x01Bud1",
}


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes], kinds: dict[str, bytes] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for name, kind in (kinds or {}).items():
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = "/etc/passwd"
            t.addfile(info)
    return path


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_members_import_in_name_order(
    tmp_path: Path, store: SQLiteStore, kind: str
) -> None:
    path = tmp_path / f"upload.{kind}"
    (make_zip if kind == "zip" else make_tar)(path, MEMBERS)
    report = load(store, path)
    assert report.summary() == "added 4, updated 0, rejected 1"
    assert errors(report) == [f"{path}:b.csv:3: invalid phone 'nope'"]
    assert names(store) == ["Ann", "Al", "Bea", "Цезарь"]


def test_archive_recognised_by_its_bytes(tmp_path: Path, store: SQLiteStore) -> None:
    make_zip(tmp_path / "upload", {"a.csv": b"phone\n+79161234567\n"})
    make_tar(tmp_path / "upload2", {"./a.csv": b"phone\n+79167654321\n"})
    assert load(store, tmp_path / "upload").added == 1
    assert load(store, tmp_path / "upload2").added == 1


@pytest.mark.parametrize("member", ["../../evil.csv", "/etc/evil.csv", "ok/../../evil.csv"])
def test_zip_slip_member_refuses_the_archive(
    tmp_path: Path, store: SQLiteStore, member: str
) -> None:
    path = make_zip(tmp_path / "evil.zip", {"a.csv": b"phone\n+79161234567\n",
                                            member: b"phone\n+79167654321\n"})
    refusal = re.escape(f"evil.zip:{member}: the member's path is absolute")
    with pytest.raises(InputError, match=refusal):
        load(store, path)
    assert profiles(store) == []


def test_tar_with_a_link_is_refused(tmp_path: Path, store: SQLiteStore) -> None:
    path = make_tar(tmp_path / "links.tgz", {"a.csv": b"phone\n+79161234567\n"},
                    {"b.csv": tarfile.SYMTYPE})
    with pytest.raises(InputError, match=r"links\.tgz:b\.csv: a link or special file"):
        load(store, path)
    assert profiles(store) == []


def test_nested_archive_is_refused(tmp_path: Path, store: SQLiteStore) -> None:
    inner = make_zip(tmp_path / "inner.zip", {"a.csv": b"phone\n+79161234567\n"}).read_bytes()
    path = make_zip(tmp_path / "outer.zip", {"a.csv": b"phone\n+79161234567\n",
                                             "more": inner})
    with pytest.raises(InputError, match=r"outer\.zip:more: an archive inside the archive"):
        load(store, path)
    assert profiles(store) == []


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_archive_unpacking_past_the_limit_is_refused(
    tmp_path: Path, store: SQLiteStore, kind: str
) -> None:
    data = b"phone\n" + b"+79161234567\n" * 1000  # 13 KB of text, squeezes to little
    path = tmp_path / f"bomb.{kind}"
    (make_zip if kind == "zip" else make_tar)(path, {"a.csv": data})
    squeezed = {"max_ratio": 10_000}  # far over the default ratio: this is about the size
    with pytest.raises(InputError, match=r"limit on unpacked data.*zip bombs"):
        load(store, path, max_unpacked=10_000, **squeezed)
    assert profiles(store) == []
    assert load(store, path, max_unpacked=20_000, **squeezed).updated == 999  # under it


def test_bad_header_in_a_later_member_imports_nothing(tmp_path: Path, store: SQLiteStore) -> None:
    path = make_zip(tmp_path / "two.zip", {"a.csv": b"phone\n+79161234567\n",
                                           "b.csv": b"email\nx@example.com\n"})
    with pytest.raises(InputError, match=r"two.zip:b.csv:1: --matching phone needs a 'phone'"):
        load(store, path)
    assert profiles(store) == []


# -- modes and matching ---------------------------------------------------------------


def test_add_mode_skips_rows_that_match(tmp_path: Path, store: SQLiteStore) -> None:
    seed(store, ImportRecord("+79161234567", "+79161234567", None, {"_fname": "Old"}))
    path = tmp_path / "a.csv"
    path.write_text("phone,_fname\n+79161234567,New\n+79167654321,Boris\n+79167654321,Dup\n")
    report = load(store, path, mode="add")
    assert report.summary() == "added 1, updated 0, rejected 0, skipped 2"
    assert report.errors == []
    assert names(store) == ["Old", "Boris"]


def test_update_mode_rejects_rows_that_match_nothing(tmp_path: Path, store: SQLiteStore) -> None:
    seed(store, ImportRecord("+79161234567", "+79161234567", None, {"_fname": "Anna"}))
    path = tmp_path / "a.csv"
    path.write_text("phone,_city\n+79167654321,Kazan\n8 916 123 45 67,Sochi\n")
    report = load(store, path, mode="update")
    assert report.summary() == "added 0, updated 0, rejected 2"
    assert errors(report) == [
        f"{path}:2: no profile matches", f"{path}:3: invalid phone '8 916 123 45 67'"
    ]
    path.write_text("phone,_city\n+79167654321,Kazan\n+79161234567,Sochi\n")
    report = load(store, path, mode="update", chunk=1)
    assert report.summary() == "added 0, updated 1, rejected 1"
    assert errors(report) == [f"{path}:2: no profile matches"]
    assert profiles(store) == [
        ("+79161234567", None, {"_fname": "Anna", "phones": ["+79161234567"], "_city": "Sochi"})
    ]


def test_add_update_merges_fields_and_keeps_values_left_empty(
    tmp_path: Path, store: SQLiteStore
) -> None:
    path = tmp_path / "a.csv"
    path.write_text("phone,email,_fname,plan\n+79161234567,a@example.com,Anna,gold\n"
                    "+79161234567,,,silver\n")  # the same person twice in one chunk
    assert load(store, path).summary() == "added 1, updated 1, rejected 0"
    assert profiles(store) == [("+79161234567", "a@example.com", {
        "phones": ["+79161234567"], "email": "a@example.com", "_fname": "Anna",
        "plan": "silver"})]


def test_matching_by_email_ignores_case(tmp_path: Path, store: SQLiteStore) -> None:
    seed(store, ImportRecord("+79161234567", "+79161234567", "anna@example.com", {}))
    path = tmp_path / "a.csv"
    path.write_text("email,_fname\nAnna@Example.COM,Anna\nnew@example.com,New\n")
    assert load(store, path, matching="email").summary() == "added 1, updated 1, rejected 0"
    assert [(p, e, f.get("_fname")) for p, e, f in profiles(store)] == [
        ("+79161234567", "anna@example.com", "Anna"), (None, "new@example.com", "New")
    ]


def test_matching_by_id(tmp_path: Path, store: SQLiteStore) -> None:
    seed(store, ImportRecord(None, "+79161234567", None, {}), database="other")
    seed(store, ImportRecord(None, "+79167654321", None, {}))  # id 2 in main
    path = tmp_path / "a.csv"
    path.write_text("id,_fname\n2,Boris\n1,Thief\n40,Forty\nx,Bad\n")
    report = load(store, path, matching="id")
    assert report.summary() == "added 1, updated 1, rejected 2"
    assert errors(report) == [
        f"{path}:3: id 1 belongs to a profile of another database",
        f"{path}:5: id must be a positive integer, not 'x'",
    ]
    rows = store.conn.execute(
        "SELECT id, database_id, json_extract(fields, '$._fname') FROM profiles ORDER BY id"
    ).fetchall()
    assert rows == [(1, 1, None), (2, 2, "Boris"), (40, 2, "Forty")]


def test_matching_by_custom_field(tmp_path: Path, store: SQLiteStore) -> None:
    seed(store, ImportRecord("+79161234567", "+79161234567", None, {"crm id": "A-1"}),
         ImportRecord("+79167654321", "+79167654321", None, {"crm id": 7}))  # stored by the API
    path = tmp_path / "a.csv"
    path.write_text("crm id,_fname,phone\nA-1,Anna,\n7,Seven,\nB-2,Bea,+79160000000\n,NoKey,\n")
    report = load(store, path, matching="field:crm id")
    assert report.summary() == "added 1, updated 2, rejected 1"
    assert errors(report) == [f"{path}:5: no crm id to match on"]
    assert [(p, f["crm id"], f.get("_fname")) for p, _, f in profiles(store)] == [
        ("+79161234567", "A-1", "Anna"), ("+79167654321", "7", "Seven"),
        ("+79160000000", "B-2", "Bea"),
    ]
    report = load(store, path, matching="field:crm id", mode="update")
    assert report.summary() == "added 0, updated 3, rejected 1"


def test_matching_and_mode_are_checked(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "a.csv"
    path.write_text("phone\n+79161234567\n")
    with pytest.raises(InputError, match="--matching must be phone, email, id or field:NAME"):
        load(store, path, matching="name")
    with pytest.raises(InputError, match="--matching field:plan needs a 'plan' column"):
        load(store, path, matching="field:plan")
    with pytest.raises(InputError, match="--mode must be one of add\\+update, add, update"):
        load(store, path, mode="upsert")


# -- errors and atomicity -------------------------------------------------------------


def test_a_failing_chunk_lands_whole_or_not_at_all(tmp_path: Path, store: SQLiteStore) -> None:
    path = tmp_path / "a.csv"
    path.write_text("phone\n" + "".join(f"+791600000{i:02d}\n" for i in range(1, 10)))
    store.conn.execute(
        "CREATE TEMP TRIGGER boom BEFORE INSERT ON subscriptions"
        " WHEN NEW.phone = '+79160000005' BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="disk on fire"):
        load(store, path, chunk=3, resource="news")
    assert [p for p, _, _ in profiles(store)] == ["+79160000001", "+79160000002", "+79160000003"]
    (subscribed,) = store.conn.execute("SELECT count(*) FROM subscriptions").fetchone()
    assert subscribed == 3


def test_first_thousand_errors_are_kept_all_are_counted(
    tmp_path: Path, store: SQLiteStore
) -> None:
    path = tmp_path / "a.csv"
    path.write_text("phone\n" + "bad\n" * 1500 + "+79161234567\n")
    report = load(store, path)
    assert (report.rejected, report.added, len(report.errors)) == (1500, 1, 1000)
    assert report.errors[-1].line == 1001


# -- fuzz -----------------------------------------------------------------------------

CELLS = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=10),
    st.sampled_from(["+79161234567", "8 916 765 43 21", "+447911123456", "a@b.co", "", '"',
                     "Анна", "x,y", "1", "0"]),
)
PHONES = st.sampled_from(["+79161234567", "+7 916 765-43-21", "+447911123456", "+79160000000"])


@st.composite
def csv_like(draw: st.DrawFn) -> bytes:
    """Mostly a plausible file (a phone column, rows of the header's width), not always."""
    header = draw(st.one_of(
        st.lists(st.sampled_from(["email", "_fname", "id", "plan"]), unique=True, max_size=3)
        .map(lambda names: ["phone", *names]),
        st.lists(st.sampled_from(["phone", "email", "_fname", "id", "plan", ""]), min_size=1,
                 max_size=4),
    ))
    rows = draw(st.lists(st.one_of(
        st.lists(CELLS, min_size=len(header) - 1, max_size=len(header) - 1)
        .flatmap(lambda cells: PHONES.map(lambda phone: [phone, *cells])),
        st.lists(CELLS, max_size=5),
    ), max_size=8))
    out = io.StringIO()
    csv.writer(out, delimiter=draw(st.sampled_from(",;\t|"))).writerows([header, *rows])
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "cp1251", "utf-16"]))
    return out.getvalue().encode(encoding, errors="replace")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(st.sampled_from('ab1 ,;\t|"\n\r'), max_size=80), st.text(max_size=80)))
def test_any_text_is_read_without_crashing_and_lines_only_go_forward(text: str) -> None:
    try:
        records = read_records(text)
    except InputError:
        return
    lines = [line for line, _ in records]
    assert lines == sorted(set(lines))
    assert all(1 <= line <= len(re.split(r"\r\n|\r|\n", text)) for line in lines)


WORDS = st.text(st.sampled_from("abcxyz019 +Жж"), min_size=1, max_size=6).filter(
    lambda w: w.strip() == w and w.strip())


@st.composite
def csv_with_broken_quotes(draw: st.DrawFn) -> tuple[str, str, list[tuple[int, Any]]]:
    """A file of well-formed rows and broken ones (a field opened by a quote and never
    closed), with what reading it must give. A well-formed cell is plain, or quoted with a
    letter first: a quote followed by a delimiter or a line break could close a field of an
    earlier line, which is a valid reading of the file that no reader can rule out."""
    delimiter = draw(st.sampled_from(",;\t|"))
    width = draw(st.integers(2, 4))
    quoted = WORDS.flatmap(lambda first: st.lists(
        st.sampled_from(["a", " ", delimiter, '""', "ж"]), max_size=4
    ).map(lambda rest: first + "".join(rest)))

    def render(cell: tuple[bool, str]) -> str:
        return f'"{cell[1]}"' if cell[0] else cell[1]

    cells = st.tuples(st.booleans(), st.just("")).flatmap(
        lambda c: (quoted if c[0] else WORDS).map(lambda v: (c[0], v)))
    good = st.lists(cells, min_size=width, max_size=width)
    broken = st.lists(WORDS, min_size=width - 1, max_size=width - 1).flatmap(
        lambda head: quoted.filter(lambda q: '"' not in q).map(
            lambda tail: delimiter.join([*head, '"' + tail])))
    header = delimiter.join(f"c{i}" for i in range(width))
    lines, expected = [header], [(1, [f"c{i}" for i in range(width)])]
    for number, row in enumerate(draw(st.lists(st.one_of(good, broken), max_size=10)), 2):
        if isinstance(row, str):
            lines.append(row)
            expected.append((number, "unclosed quote"))
        else:
            lines.append(delimiter.join(map(render, row)))
            expected.append((number, [v.replace('""', '"') if q else v for q, v in row]))
    end = draw(st.sampled_from(["\n", "\r\n"]))
    return end.join(lines) + draw(st.sampled_from(["", end])), delimiter, expected


@settings(max_examples=300, deadline=None)
@given(csv_with_broken_quotes())
def test_every_well_formed_row_after_a_broken_one_is_read(
    case: tuple[str, str, list[tuple[int, Any]]],
) -> None:
    text, _, expected = case
    assert read_records(text) == expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(csv_like(), st.binary(max_size=300)), mode=st.sampled_from(MODES))
def test_any_bytes_import_or_fail_cleanly(data: bytes, mode: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.csv"
        path.write_bytes(data)
        store = SQLiteStore.open(Path(tmp) / "h.db")
        try:
            try:
                first = load(store, path, mode=mode, chunk=2)
            except InputError:
                # refused, or stopped by an unreadable stretch: what landed is whole
                assert store.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert all(phone for phone, _, _ in profiles(store))
                return
            assert first.added + first.updated + first.skipped + first.rejected == first.rows
            assert len(profiles(store)) == first.added
            assert len(first.errors) == first.rejected
            # the same file again: every row it took now matches a profile
            again = load(store, path, mode=mode, chunk=3)
            accepted = first.rows - first.rejected
            assert (again.added, again.rejected, again.rows) == (0, first.rejected, first.rows)
            if mode == "add+update":
                assert again.updated == accepted
            elif mode == "add":
                assert again.skipped == accepted
            assert len(profiles(store)) == first.added
        finally:
            store.conn.close()
