"""The DKIM signer's own canonicalisation (``herald_smtp.signing``) against dkimpy's, byte for
byte, on arbitrary bodies, header blocks and messages; its signatures against
``dkim.verify``."""

from __future__ import annotations

import base64
import hashlib
from typing import Any, get_args

import dkim
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.errors import InputError
from herald_smtp import signing
from herald_smtp.signing import DEFAULT_HEADERS, Canonicalization, DkimSigner

MODES: tuple[Canonicalization, ...] = get_args(Canonicalization)
RELAXED = CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
SIMPLE = CanonicalizationPolicy.from_c_value(b"simple/simple")
# One key of each kind for the whole module: an RSA key takes a while to make.
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ED_KEY = ed25519.Ed25519PrivateKey.generate()

# --- what messages are made of --------------------------------------------------------------

# Whitespace and line-end bytes come often, the rest (8-bit ones too) less so.
_TRICKY = st.sampled_from([b" ", b"  ", b"\t", b" \t ", b"\r", b"\n", b"\r\n", b"\r\n\r\n",
                           b"\x0b", b"\x0c", b"\xc3\xa9", b"\xff", b"a", b"b=", b":"])
_BYTES = st.lists(st.one_of(_TRICKY, st.binary(max_size=12)), max_size=30).map(b"".join)
_LONG = st.builds(lambda c, n: c * n, st.sampled_from([b" ", b"\t", b"x", b"\r\n", b" \r\n"]),
                  st.integers(0, 3000))
_ANY = st.one_of(_BYTES, st.lists(st.one_of(_BYTES, _LONG), max_size=5).map(b"".join))

# Text without CR or LF, whitespace-heavy, with 8-bit bytes and the odd very long run.
_TEXT_BYTES = st.sampled_from([b" ", b"  ", b"\t", b" \t", b"x", b"Hello", b"=?utf-8?q?",
                               b"\xc3\xa9", b"\xf0\x9f\x8e\x89", b"\xff", b";", b":", b"\x0b",
                               b"\x0c", b"\r"])
_TEXT = st.one_of(
    st.lists(_TEXT_BYTES, max_size=20).map(b"".join),
    st.builds(lambda c, n: c * n, st.sampled_from([b" ", b"\t", b"y"]), st.integers(0, 2000)),
)
_NAMES = st.one_of(
    st.sampled_from([*DEFAULT_HEADERS, "X-Herald-Id", "Received", "Content-Transfer-Encoding"])
    .flatmap(lambda n: st.sampled_from([n, n.lower(), n.upper()])),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
            min_size=1, max_size=10),
).map(lambda n: n.encode("ascii"))


@st.composite
def _field(draw: st.DrawFn, names: st.SearchStrategy[bytes] = _NAMES) -> bytes:
    """``Name:value`` folded onto lines that start with SP or HTAB, CRLF-ended."""
    value = draw(_TEXT)
    for _ in range(draw(st.integers(0, 3))):
        value += b"\r\n" + draw(st.sampled_from([b" ", b"\t", b"  ", b" \t"])) + draw(_TEXT)
    return draw(names) + b":" + value + b"\r\n"


def _head(names: st.SearchStrategy[bytes] = _NAMES) -> st.SearchStrategy[bytes]:
    return st.lists(_field(names), max_size=12).map(
        lambda fs: b"From: A <a@example.com>\r\n" + b"".join(fs))


_HEAD = _head()
#: dkim.verify fails a message with two From fields whatever its signature (it signs the
#: field once more than h= says, against one added on the way)
_HEAD_ONE_FROM = _head(_NAMES.filter(lambda n: n.lower() != b"from"))
_LINE = st.one_of(_TEXT, st.sampled_from([b"", b" ", b"\t", b"   ", b".", b"\r", b"x\r"]))
#: Lines joined with CRLF; with or without a CRLF at the end, or a run of empty lines.
_BODY = st.builds(lambda lines, end: b"\r\n".join(lines) + end, st.lists(_LINE, max_size=12),
                  st.sampled_from([b"", b"\r\n", b"\r\n\r\n", b"\r\n \r\n\t\r\n", b" ",
                                   b"\r\n" * 50]))


def _head_and_body(message: bytes) -> tuple[bytes, bytes]:
    end = message.find(b"\r\n\r\n")
    return (message, b"") if end < 0 else (message[: end + 2], message[end + 4 :])


class _Recorder:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def update(self, data: bytes) -> None:
        self.parts.append(data)


def _dkimpy_hashed(signer: DkimSigner, head: bytes, value: bytes, mode: str) -> bytes:
    """What dkimpy hashes for the header fields of ``head`` and the signature ``value``."""
    policy = CanonicalizationPolicy.from_c_value(mode.encode())
    fields, _ = dkim.rfc822_parse(head + b"\r\n")
    recorder = _Recorder()
    include = [h.lower().encode() for h in signer_headers(signer)]
    dkim.hash_headers(recorder, policy, policy.canonicalize_headers(fields), include,
                      (b"DKIM-Signature", value), None)
    return b"".join(recorder.parts)


def signer_headers(signer: DkimSigner) -> list[str]:
    return [h.decode() for h in signer._include]


def _verifies(signature: bytes, message: bytes, signer: DkimSigner) -> bool:
    record = signer.public_key_record().encode()
    result: Any = dkim.verify(signature + message, dnsfunc=lambda name, timeout=5: record)
    return bool(result)


# --- canonical bytes ------------------------------------------------------------------------


@given(_ANY)
@example(b"")
@example(b"\r\n")
@example(b" ")
@example(b" \r\n")
@example(b"a \t \r\n\r\n \r\n")
@example(b"a\r\r\n\r\n")
@example(b"a\n\r\n\r\n")
@example(b"\r\n\n\r\n")
@example(b"x  ")
@example(b" " * 5000 + b"\r\n" * 5000)
@settings(max_examples=800, deadline=None)
def test_body_canonicalisation_is_dkimpys(body: bytes) -> None:
    assert signing._relaxed_body(body) == RELAXED.canonicalize_body(body)
    assert signing._simple_body(body) == SIMPLE.canonicalize_body(body)


@given(_ANY)
@example(b" a\r\n\tb  \r\n")
@example(b"\r\r\n\n")
@example(b"\x0c x \x0b")
@settings(max_examples=500, deadline=None)
def test_header_value_canonicalisation_is_dkimpys(value: bytes) -> None:
    ((_, expected),) = RELAXED.canonicalize_headers([(b"X", value)])
    assert signing._relaxed_value(value) == expected


@given(st.one_of(_HEAD, _ANY.map(lambda b: b"From: x\r\n" + b)))
@example(b"From: x\r\nFrom y\r\nTo: z\r\n")  # an mbox separator line
@example(b"From: x\r\n\r\nTo: z\r\n")
@example(b"From: x\nTo: y\r\n")
@settings(max_examples=500, deadline=None)
def test_header_splitting_is_dkimpys_or_left_to_it(head: bytes) -> None:
    ours = signing._split_fields(head)
    try:
        theirs, _ = dkim.rfc822_parse(head + b"\r\n")
    except dkim.MessageFormatError:
        assert ours is None
        return
    if ours is None:  # left to dkimpy: a bare LF in the block, a line starting with ":"
        assert head.count(b"\n") != head.count(b"\r\n") or any(
            line.startswith(b":") for line in head.split(b"\r\n"))
    else:
        assert ours == theirs


@given(_HEAD, st.sampled_from(MODES),
       st.lists(st.sampled_from(["To", "Subject", "to", "From", "X-Herald-Id", "Date", "b=x"]),
                max_size=8))
@settings(max_examples=300, deadline=None)
def test_the_header_hash_covers_what_dkimpys_does(head: bytes, mode: Canonicalization,
                                                 extra: list[str]) -> None:
    signer = DkimSigner(selector="s", key=ED_KEY, headers=["From", *extra], canonicalization=mode)
    static, dkimpy = signer._static_part("example.com")
    # dkimpy only when a folded h= puts " b=x" at a line's start
    assert dkimpy == (b"\r\n b=x" in static)
    value = b"%s\r\n t=1; bh=abc=;\r\n b=" % static
    fields = signing._split_fields(head)
    assert fields is not None
    expected = _dkimpy_hashed(signer, head, value, mode)
    assert signer._hashed(fields, value, dkimpy) == expected
    assert signer._hashed(fields, value, dkimpy=True) == expected


def test_a_b_tag_in_the_fixed_tags_is_left_to_dkimpy() -> None:
    signer = DkimSigner(selector="s", key=ED_KEY)
    static, dkimpy = signer._static_part("example.com; b=AAAA")
    assert dkimpy
    head = b"From: a@example.com\r\nTo: b@example.net\r\n"
    value = b"%s\r\n t=1; bh=abc=;\r\n b=" % static
    fields = signing._split_fields(head)
    assert fields is not None
    assert signer._hashed(fields, value, dkimpy=True) == _dkimpy_hashed(
        signer, head, value, "relaxed/relaxed")


# --- whole signatures -----------------------------------------------------------------------


@given(_HEAD_ONE_FROM, _BODY, st.sampled_from(MODES), st.booleans())
@example(b"From: a@example.com\r\n", b"", "relaxed/relaxed", False)
@example(b"From: a@example.com\r\n", b"no final CRLF  ", "relaxed/relaxed", False)
@example(b"From:\ta@example.com \r\n\t \r\nSubject: \xc3\xa9t\xc3\xa9\t \r\n",
         b" \r\n\t\r\n", "relaxed/simple", False)
@settings(max_examples=200, deadline=None)
def test_signatures_verify_and_carry_dkimpys_body_hash(
    head: bytes, body: bytes, mode: Canonicalization, with_rsa: bool
) -> None:
    signer = DkimSigner(selector="s", key=RSA_KEY if with_rsa else ED_KEY,
                        canonicalization=mode)
    message = head + b"\r\n" + body
    signature = signer.sign(message, domain="example.com", now=1.0)
    tags = dict(t.strip().split(b"=", 1) for t in b"".join(signature.split()).split(b";") if t)
    _, parsed_body = _head_and_body(message)
    policy = CanonicalizationPolicy.from_c_value(mode.encode())
    assert tags[b"bh"] == base64.b64encode(
        hashlib.sha256(policy.canonicalize_body(parsed_body)).digest())
    if not with_rsa:
        pytest.importorskip("nacl", reason="dkimpy verifies ed25519 with PyNaCl")
    assert _verifies(signature, message, signer)
    # and a changed byte in what is signed breaks it
    tampered = head + b"\r\nX" + body
    assert not _verifies(signature, tampered, signer)


def test_a_header_block_only_dkimpy_splits_still_signs() -> None:
    signer = DkimSigner(selector="s", key=ED_KEY)
    message = b"From: a@example.com\r\nSubject: one\n two\r\n\r\nbody\r\n"
    signature = signer.sign(message, domain="example.com", now=1.0)
    pytest.importorskip("nacl", reason="dkimpy verifies ed25519 with PyNaCl")
    # dkimpy reads the bare LF as a CRLF; so does the signer, through dkimpy
    assert _verifies(signature, message, signer)


@pytest.mark.parametrize("head, why", [
    (b"From: a\r\nnot a field\r\n", "Unexpected characters in RFC822 header"),
    (b" folded: first\r\nFrom: a\r\n", "a folded line before the first header field"),
])
def test_header_blocks_nobody_can_split_are_refused(head: bytes, why: str) -> None:
    signer = DkimSigner(selector="s", key=ED_KEY)
    with pytest.raises(InputError, match=why):
        signer.sign(head + b"\r\nbody\r\n", domain="example.com", now=1.0)


def test_the_driver_module_does_not_import_dkimpy() -> None:
    import os
    import subprocess
    import sys

    code = ("import sys; import herald_smtp.signing, herald_smtp;"
            " print('dkim' in sys.modules, 'dns' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.split() == ["False", "False"]
