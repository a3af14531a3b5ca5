"""MimeBuilder: every message parses back with the stdlib to what went in."""

from __future__ import annotations

import email.policy
import email.utils
import re
from email.message import EmailMessage
from email.parser import BytesParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.mime import MAX_LINE, MimeBuilder
from engine.errors import InputError

PARSER = BytesParser(policy=email.policy.default)
NOW = 1_700_000_000.25
HTML = '<html><body><p>Hello, Ivan!</p><a href="https://t.example.com/abc">Go</a></body></html>'
TEXT = "Hello, Ivan!\nGo (https://t.example.com/abc)"


def builder(**kw: object) -> MimeBuilder:
    args: dict[str, object] = {"from_": "News <news@example.com>", "domain": "example.com"}
    args.update(kw)
    return MimeBuilder(**args)  # type: ignore[arg-type]


def build(b: MimeBuilder | None = None, **kw: object) -> bytes:
    args: dict[str, object] = {
        "to": "ivan@example.com", "subject": "Hello", "html": HTML, "text": TEXT,
        "message_id": "r1-42", "unsubscribe_url": "https://t.example.com/u/xyz", "now": NOW,
    }
    args.update(kw)
    return (b or builder()).build(**args)  # type: ignore[arg-type]


def parse(data: bytes) -> EmailMessage:
    msg = PARSER.parsebytes(data)
    assert isinstance(msg, EmailMessage)
    return msg


def lines(data: bytes) -> list[bytes]:
    assert data.endswith(b"\r\n")
    assert re.search(rb"(?<!\r)\n|\r(?!\n)", data) is None, "a bare CR or LF"
    return data[:-2].split(b"\r\n")


def parts(msg: EmailMessage) -> tuple[EmailMessage, EmailMessage]:
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = list(msg.iter_parts())
    assert isinstance(plain, EmailMessage) and isinstance(html, EmailMessage)
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    return plain, html


def body(part: EmailMessage) -> str:
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def test_headers_and_parts_parse_back() -> None:
    data = build(builder(reply_to="Support <help@example.com>"))
    msg = parse(data)
    assert not msg.defects
    assert msg["From"] == "News <news@example.com>"
    assert msg["Reply-To"] == "Support <help@example.com>"
    assert msg["To"] == "ivan@example.com"
    assert msg["Subject"] == "Hello"
    assert email.utils.parsedate_to_datetime(msg["Date"]).timestamp() == int(NOW)
    assert msg["Date"].endswith("+0000")
    assert msg["Message-ID"] == "<r1-42@example.com>"
    assert msg["X-Herald-Id"] == "r1-42"
    assert msg["MIME-Version"] == "1.0"
    assert msg["List-Unsubscribe"] == "<https://t.example.com/u/xyz>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    plain, html = parts(msg)
    assert body(plain) == TEXT and body(html) == HTML
    assert plain["Content-Transfer-Encoding"] == "7bit"
    assert plain.get_content_charset() == "utf-8"
    head = data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in head.split(b"\r\n"))


def test_same_as_the_stdlib_builds() -> None:
    """The stdlib's EmailMessage + BytesGenerator is the reference: both messages read back
    the same, header by header and part by part."""
    subject = "Скидки 🎉 до 50% — only today, for you and your family and friends too"
    text = "Привет!\n" + "длинная строка " * 100 + "\n.точка\nend "
    html = "<p>Привет</p>\n" + "<b>x</b>" * 200
    ours = parse(build(subject=subject, text=text, html=html))

    ref = EmailMessage(policy=email.policy.SMTP)
    ref["From"] = "News <news@example.com>"
    ref["To"] = "ivan@example.com"
    ref["Subject"] = subject
    ref["Date"] = email.utils.formatdate(NOW)
    ref["Message-ID"] = "<r1-42@example.com>"
    ref["X-Herald-Id"] = "r1-42"
    ref["List-Unsubscribe"] = "<https://t.example.com/u/xyz>"
    ref["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    ref.set_content(text)
    ref.add_alternative(html, subtype="html")
    theirs = parse(ref.as_bytes())

    for name in ("From", "To", "Subject", "Message-ID", "X-Herald-Id", "List-Unsubscribe",
                 "List-Unsubscribe-Post", "MIME-Version"):
        assert ours[name] == theirs[name], name
    assert email.utils.parsedate_to_datetime(ours["Date"]).timestamp() == int(NOW)
    assert email.utils.parsedate_to_datetime(theirs["Date"]).timestamp() == int(NOW)
    for mine, reference in zip(parts(ours), parts(theirs), strict=True):
        assert body(mine).rstrip("\n") == body(reference).rstrip("\n")  # stdlib adds a \n
        assert mine["Content-Transfer-Encoding"] == "quoted-printable"


def test_emoji_subject_is_rfc2047_and_round_trips() -> None:
    subject = "🎉🔥 Распродажа! " * 6
    data = build(subject=subject)
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")  # headers are all ASCII
    subject_lines = re.search(r"^Subject:.*?(?=^\S)", head, re.M | re.S)
    assert subject_lines is not None
    assert "=?utf-8?b?" in subject_lines.group()
    assert all(len(line) <= 76 for line in subject_lines.group().split("\r\n"))
    assert parse(data)["Subject"] == subject


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("two\nlines", "two lines"),
        ("crlf\r\nand\rcr", "crlf and cr"),
        ("  padded  ", "  padded  "),
        ("looks =?utf-8?q?encoded?=", "looks =?utf-8?q?encoded?="),
        ("", ""),
        ("a  b\ttab", "a  b\ttab"),
        ("word " * 40, "word " * 40),
        ("x" * 2000, "x" * 2000),
    ],
)
def test_subject_edge_cases(subject: str, expected: str) -> None:
    data = build(subject=subject)
    assert parse(data)["Subject"] == expected
    assert all(len(line) <= MAX_LINE for line in lines(data))


def test_long_ascii_subject_folds_at_spaces() -> None:
    subject = " ".join(f"word{i}" for i in range(40))
    data = build(subject=subject)
    assert b"=?" not in data.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in lines(data)[:10])
    assert parse(data)["Subject"] == subject


def test_parts_pick_their_encoding() -> None:
    def cte(text: str) -> str:
        plain, _ = parts(parse(build(text=text)))
        assert body(plain) == re.sub(r"\r\n?", "\n", text)
        return str(plain["Content-Transfer-Encoding"])

    assert cte("plain ascii\nlines\n") == "7bit"
    assert cte(".leading dot\nFrom me\n") == "7bit"  # dot-stuffing is SMTP's job
    assert cte("Привет") == "quoted-printable"
    assert cte("x" * 999) == "quoted-printable"
    assert cte("x" * 998 + "\n" + "y" * 998) == "7bit"
    assert cte("trailing space \nend ") == "7bit"
    assert cte("nul\x00byte") == "quoted-printable"
    assert cte("old mac\rline ends\r\n") == "7bit"


def test_a_part_holding_the_boundary_goes_quoted_printable() -> None:
    first = build()
    boundary = re.search(rb'boundary="([^"]+)"', first)
    assert boundary is not None
    text = f"--{boundary.group(1).decode()}\nsneaky"
    plain, html = parts(parse(build(text=text)))
    assert body(plain) == text and body(html) == HTML
    assert plain["Content-Transfer-Encoding"] == "quoted-printable"


def test_list_unsubscribe_only_when_wanted() -> None:
    assert b"List-Unsubscribe" not in build(unsubscribe_url=None)
    assert b"List-Unsubscribe" not in build(builder(list_unsubscribe=False))


def test_non_ascii_from_and_idn_domain() -> None:
    domain = "Магазин.РФ".lower().encode("idna").decode()
    b = builder(from_="Новости Магазина <Shop@Магазин.РФ>", domain="Магазин.РФ")
    assert b.from_address == f"Shop@{domain}"
    msg = parse(build(b))
    assert msg["From"] == f"Новости Магазина <Shop@{domain}>"
    assert msg["Message-ID"] == f"<r1-42@{domain}>"


def test_extra_headers() -> None:
    msg = parse(build(extra_headers=[("X-Campaign", "Весна 🌸"), ("X-Plain", "spring")]))
    assert msg["X-Campaign"] == "Весна 🌸"
    assert msg["X-Plain"] == "spring"
    for name in ("Subject", "from", "Bad Name", "Colon:", ""):
        with pytest.raises(InputError):
            build(extra_headers=[(name, "x")])


@pytest.mark.parametrize(
    "kw",
    [
        {"to": "ivan@example.com\r\nBcc: x@y.com"},
        {"to": "no-at-sign"},
        {"message_id": "has space"},
        {"message_id": "x>\r\nBcc: a@b.c"},
        {"message_id": ""},
        {"unsubscribe_url": "https://x.com/u>\r\nBcc: a@b.c"},
        {"unsubscribe_url": "https://x.com/" + "a" * 1000},
    ],
)
def test_unsafe_values_are_refused(kw: dict[str, str]) -> None:
    with pytest.raises(InputError):
        build(**kw)


@pytest.mark.parametrize(
    "from_", ["", "not an address", "a@b.com, c@d.com", "News <news@localhost>"]
)
def test_bad_from_is_refused(from_: str) -> None:
    with pytest.raises(InputError):
        builder(from_=from_)


def test_same_input_same_bytes() -> None:
    """A retry under the same id sends the same message (and the same DKIM body hash)."""
    b = builder()
    assert build(b) == build(b) == build(builder())
    assert build(b) != build(b, message_id="r1-43")


_TEXTS = st.text(max_size=3000) | st.lists(
    st.sampled_from(["\n", "\r", "\r\n", ".", "From ", " ", "=", "x" * 80, "🎉", "й", "\t"]),
    max_size=200,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(subject=st.text(max_size=300), text=_TEXTS, html=_TEXTS)
def test_any_unicode_round_trips(subject: str, text: str, html: str) -> None:
    data = build(subject=subject, text=text, html=html)
    assert all(len(line) <= MAX_LINE for line in lines(data))
    msg = parse(data)
    assert msg["Subject"] == re.sub(r"\r\n?|\n", " ", subject)
    plain, rich = parts(msg)
    assert body(plain) == re.sub(r"\r\n?", "\n", text)
    assert body(rich) == re.sub(r"\r\n?", "\n", html)
