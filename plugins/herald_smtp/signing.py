"""DKIM signatures (RFC 6376) over the messages the engine built (sans-I/O).

:class:`DkimSigner` is made once per gateway with the selector, the key and the headers to
sign; :meth:`~DkimSigner.sign` returns the ``DKIM-Signature`` header field for one message
(prepend it to the message), with ``t=`` from the ``now`` it is given.

Canonicalisation (RFC 6376 3.4) and the header block's splitting into fields are done here
with bytes methods (``split``, ``replace``, ``strip``), giving exactly the bytes dkimpy's
``dkim.rfc822_parse``, ``dkim.canonicalization`` and ``dkim.hash_headers`` give (its
per-line regexes took 230 of the 280 µs an Ed25519 signature cost):
``tests/drivers/test_dkim_canon.py`` holds them to that on arbitrary messages. dkimpy
still splits a header block with a bare LF in it (its parser makes it a CRLF), reports the
header lines it refuses, and hashes the signature field when a selector, domain or signed
name would put a `` b=`` tag in its fixed part; ``dkim.verify`` is the tests' judge. The
signature itself is made by the ``cryptography`` package (OpenSSL) with the key parsed
once: ``dkim.sign`` parses the PEM key again for every message (about 0.37 ms) and signs
RSA with Python integers (11.5 ms for a 2048-bit key, where OpenSSL takes 1.06 ms); it
also reads the clock and re-folds the whole field each time (``bench/email_smtp.py
--sign-only`` prints both).

Keys: a PEM private key, RSA (``a=rsa-sha256``; 1024 bits at least, RFC 8301) or Ed25519
(``a=ed25519-sha256``, RFC 8463: the signature is over the SHA-256 digest of the
canonicalised header fields). The key's type picks the algorithm.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from engine.errors import InputError

__all__ = ["DEFAULT_HEADERS", "Canonicalization", "DkimSigner", "load_key"]

Canonicalization = Literal["relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"]

#: What a signature covers unless the config says otherwise: every header the engine
#: writes that a receiver shows or acts on; RFC 8058 asks that both List-Unsubscribe
#: fields are signed. A field the message lacks is signed as absent (nobody can add it
#: on the way without breaking the signature).
DEFAULT_HEADERS: Final = (
    "From", "Reply-To", "To", "Subject", "Date", "Message-ID", "MIME-Version",
    "Content-Type", "List-Unsubscribe", "List-Unsubscribe-Post",
)
#: Fields RFC 6376 5.4 says not to sign (changed on the way).
_UNSIGNABLE: Final = frozenset({"return-path", "received", "dkim-signature", "bcc", "resent-bcc"})
_FIELD: Final = b"DKIM-Signature"
_B64_LINE: Final = 72
_PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def _fold_names(names: Sequence[bytes]) -> bytes:
    """``h=a:b:...;`` with a line break (FWS, allowed after a colon) before a name that
    would pass column 72."""
    lines = [b"h="]
    for i, name in enumerate(names):
        piece = name + (b":" if i < len(names) - 1 else b";")
        if len(lines[-1]) + len(piece) > _B64_LINE and len(lines[-1]) > 2:
            lines.append(b"")
        lines[-1] += piece
    return b"\r\n ".join(lines)


_CRLF: Final = b"\r\n"
#: The bytes of a header field name (RFC 5322 ftext and the ``:`` rfc822_parse stops at).
_NAME_BYTES: Final = bytes(range(0x21, 0x7F))
_Field = list[bytes]  # [name, value]: the value as it stands after the colon, CRLFs and all


def _compress(data: bytes) -> bytes:
    """Each run of SP and HTAB in ``data`` as one SP."""
    if b"\t" in data:
        data = data.replace(b"\t", b" ")
    while True:  # each pass halves the runs
        shorter = data.replace(b"  ", b" ")
        if len(shorter) == len(data):
            return data
        data = shorter


def _crlf_tail(data: bytes) -> int:
    """The length of the longest suffix of ``data`` made of CRLFs (an even number)."""
    tail = data[len(data.rstrip(b"\r\n")) :]
    if not tail.endswith(b"\n"):
        return 0
    # The CRs and LFs after the last pair of equal ones alternate, ending with LF.
    n = len(tail) - 1 - max(tail.rfind(b"\r\r"), tail.rfind(b"\n\n"))
    return n - (n & 1)


def _simple_body(body: bytes) -> bytes:
    """``simple`` body canonicalisation (RFC 6376 3.4.3): the empty lines at the end
    dropped, one CRLF ending it (added when it has none, or the body is empty)."""
    tail = _crlf_tail(body)
    if tail == 2:
        return body
    return body + _CRLF if tail == 0 else body[: len(body) - tail + 2]


def _relaxed_body(body: bytes) -> bytes:
    """``relaxed`` body canonicalisation (RFC 6376 3.4.4), as dkimpy does it: the SP and
    HTAB before each CRLF removed, the other runs of them made one SP, then as ``simple``
    but an empty body stays empty. (A last line without CRLF keeps its trailing space,
    as with dkimpy.)"""
    body = _compress(body)
    if b" \r\n" in body:  # after _compress, one SP stands for the run before a CRLF
        body = body.replace(b" \r\n", b"\r\n")
    body = _simple_body(body)
    return b"" if body == _CRLF else body


def _relaxed_value(value: bytes) -> bytes:
    """``relaxed`` canonicalisation of a header field value (RFC 6376 3.4.2): unfolded
    (CRLF and bare LF removed), runs of SP and HTAB as one SP, whitespace at either end
    removed, CRLF ending it."""
    value = value.replace(b"\r\n", b"")
    if b"\n" in value:
        value = value.replace(b"\n", b"")
    return _compress(value).strip() + _CRLF


def _split_fields(head: bytes) -> list[_Field] | None:
    """The header fields of ``head`` (CRLF-ended lines, up to an empty one) as
    ``dkim.rfc822_parse`` gives them; None when it has a bare LF, a folded line before
    the first field, a line starting with a colon or one that is not a field (dkimpy's
    parser decides then)."""
    if head.count(b"\n") != head.count(b"\r\n"):
        return None
    fields: list[_Field] = []
    for line in head.split(b"\r\n"):
        if not line:
            break
        if line[0] in (0x09, 0x20):
            if not fields:
                return None
            fields[-1][1] += line + _CRLF
            continue
        colon = line.find(b":")
        if colon > 0 and not line[:colon].translate(None, _NAME_BYTES):
            fields.append([line[:colon], line[colon + 1 :] + _CRLF])
        elif not line.startswith(b"From "):  # an mbox separator, skipped as dkimpy does
            return None
    return fields


def _select(fields: Sequence[_Field], include: Sequence[bytes],
            wanted: frozenset[bytes]) -> list[_Field]:
    """The fields signed, in the order of ``include`` (lowercase names; ``wanted``: the
    same as a set): for each name the last instance not yet taken, none when they are all
    taken (``dkim.select_headers``)."""
    instances: dict[bytes, list[_Field]] = {}
    for field in fields:
        name = field[0].lower()
        if name in wanted:
            instances.setdefault(name, []).append(field)
    signed = []
    for name in include:
        left = instances.get(name)
        if left:
            signed.append(left.pop())
    return signed


def load_key(pem: bytes, where: str) -> _PrivateKey:
    """The private key in ``pem``; InputError naming ``where`` when it is not an RSA key of
    at least 1024 bits or an Ed25519 key, or is protected by a passphrase."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise InputError(f"{where}: the key is encrypted: give an unencrypted PEM key"
                         " (keep the file readable only by Herald)") from None
    except ValueError as err:
        raise InputError(f"{where}: not a PEM private key ({err})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise InputError(f"{where}: an RSA key of {key.key_size} bits: receivers ignore"
                             " signatures by keys under 1024 bits (RFC 8301); use 2048")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise InputError(f"{where}: a {type(key).__name__}: DKIM signs with RSA or Ed25519 keys")


class DkimSigner:
    """Signs messages for one selector of one domain (see the module docstring).

    ``headers``: the header fields to sign, in order (a name given twice signs a second,
    absent instance: "oversigning", so none can be added). ``canonicalization``: header
    and body algorithms; ``relaxed/relaxed`` survives the re-folding and trailing-space
    changes relays make.
    """

    def __init__(
        self,
        *,
        selector: str,
        key: _PrivateKey,
        headers: Sequence[str] = DEFAULT_HEADERS,
        canonicalization: Canonicalization = "relaxed/relaxed",
    ) -> None:
        names = tuple(h.strip().lower() for h in headers)
        if "from" not in names:
            raise InputError("dkim_headers: must include From (RFC 6376 5.4)")
        for name in names:
            if name in _UNSIGNABLE:
                raise InputError(f"dkim_headers: {name} must not be signed (RFC 6376 5.4)")
            if not name or not all(33 <= ord(c) <= 126 and c != ":" for c in name):
                raise InputError(f"dkim_headers: {name!r} is not a header field name")
        self.selector = selector
        self._key = key
        self._rsa = isinstance(key, rsa.RSAPrivateKey)
        self.algorithm = "rsa-sha256" if self._rsa else "ed25519-sha256"
        self._include = tuple(n.encode("ascii") for n in names)
        self._wanted = frozenset(self._include)
        # imported here, not with the driver: dkimpy imports dnspython (90 ms), and every
        # herald command loads every driver
        import dkim
        from dkim.canonicalization import CanonicalizationPolicy

        self._dkim: Any = dkim
        self._policy = CanonicalizationPolicy.from_c_value(canonicalization.encode("ascii"))
        self._canonicalization = canonicalization.encode("ascii")
        header_c, _, body_c = canonicalization.partition("/")
        self._relaxed_headers = header_c == "relaxed"
        self._relaxed_body = body_c == "relaxed"
        #: per domain: the tags every signature shares, folded; whether dkimpy must hash the
        #: signature field (one of them holds what its ``b=`` regex would take for the tag)
        self._static: dict[str, tuple[bytes, bool]] = {}

    def public_key_record(self) -> str:
        """The DNS TXT record to publish at ``{selector}._domainkey.{domain}``."""
        public = self._key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            der = public.public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
            return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"

    def sign(self, message: bytes, *, domain: str, now: float) -> bytes:
        """The ``DKIM-Signature`` field (ending CRLF) of ``message`` (CRLF line ends) for
        ``d=domain``, timestamped ``now``. InputError when the message has no header block."""
        end = message.find(b"\r\n\r\n")
        if end < 0:
            if not message.endswith(b"\r\n"):
                raise InputError("message: no blank line after the header fields")
            head, body = message, b""
        else:
            head, body = message[: end + 2], message[end + 4 :]
        fields = _split_fields(head)
        if fields is None:
            fields = self._parse(head)
        canonical = _relaxed_body(body) if self._relaxed_body else _simple_body(body)
        bh = base64.b64encode(hashlib.sha256(canonical).digest())
        static, dkimpy = self._static_part(domain)
        value = b"%s\r\n t=%d; bh=%s;\r\n b=" % (static, int(now), bh)
        digest = hashlib.sha256(self._hashed(fields, value, dkimpy)).digest()
        if isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(digest, padding.PKCS1v15(),
                                       utils.Prehashed(hashes.SHA256()))
        else:
            signature = self._key.sign(digest)
        b64 = base64.b64encode(signature)
        folded = b"\r\n  ".join(b64[i : i + _B64_LINE] for i in range(0, len(b64), _B64_LINE))
        return b"%s:%s%s\r\n" % (_FIELD, value, folded)

    def _parse(self, head: bytes) -> list[_Field]:
        """The fields of a header block :func:`_split_fields` leaves to dkimpy."""
        try:
            fields: list[_Field] = self._dkim.rfc822_parse(head + b"\r\n")[0]
        except self._dkim.MessageFormatError as err:
            raise InputError(f"message: {err}") from None
        except IndexError:  # dkimpy appends a folded line to the field before it
            raise InputError("message: a folded line before the first header field") from None
        return fields

    def _hashed(self, fields: Sequence[_Field], value: bytes, dkimpy: bool = False) -> bytes:
        """What the signature's header hash covers (RFC 6376 3.7): the signed ``fields``,
        then this signature field (``value``, its ``b=`` empty) without its CRLF, all
        canonicalised; the bytes ``dkim.hash_headers`` feeds its hasher."""
        if dkimpy:
            parts: list[bytes] = []
            policy = self._policy
            # Only the fields signed are canonicalised (hash_headers picks the same ones
            # again from them: the order, so which instance of a repeated field, is kept).
            wanted = [f for f in fields if f[0].lower() in self._wanted]
            self._dkim.hash_headers(_Recorder(parts), policy, policy.canonicalize_headers(wanted),
                                    self._include, (_FIELD, value), None)
            return b"".join(parts)
        signed = _select(fields, self._include, self._wanted)
        if self._relaxed_headers:
            parts = [f[0].lower() + b":" + _relaxed_value(f[1]) for f in signed]
            parts.append(b"dkim-signature:" + _relaxed_value(value).rstrip())
        else:
            parts = [f[0] + b":" + f[1] for f in signed]
            parts.append(_FIELD + b":" + value.rstrip())
        return b"".join(parts)

    def _static_part(self, domain: str) -> tuple[bytes, bool]:
        """The tags every signature for ``domain`` shares, folded once (`` v=1; ...; h=...;``),
        and whether dkimpy must hash the field (:meth:`_hashed`)."""
        cached = self._static.get(domain)
        if cached is None:
            if len(self._static) > 1000:
                self._static.clear()
            tags = b"v=1; a=%s; c=%s; d=%s; s=%s;" % (
                self.algorithm.encode(), self._canonicalization, domain.encode("ascii"),
                self.selector.encode("ascii"))
            static = b" " + tags + b"\r\n " + _fold_names(self._include)
            sample = static + b"\r\n t=0; bh=;\r\n b="
            cached = static, self._dkim.RE_BTAG.sub(rb"\1", sample) != sample
            self._static[domain] = cached
        return cached


class _Recorder:
    """A hasher that keeps what it is fed (for ``dkim.hash_headers``)."""

    def __init__(self, parts: list[bytes]) -> None:
        self.update = parts.append
