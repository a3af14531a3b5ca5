"""DKIM signatures (RFC 6376) over the messages the engine built (sans-I/O).

:class:`DkimSigner` is made once per gateway with the selector, the key and the headers to
sign; :meth:`~DkimSigner.sign` returns the ``DKIM-Signature`` header field for one message
(prepend it to the message), with ``t=`` from the ``now`` it is given.

dkimpy does the parts where interoperability lives: the header block is split into fields
by ``dkim.rfc822_parse``, body and headers are canonicalised by
``dkim.canonicalization``, the signed header fields are chosen and hashed (with the
signature field and its empty ``b=``) by ``dkim.hash_headers``, and ``dkim.verify`` is
the tests' judge. The signature itself is made by the ``cryptography`` package (OpenSSL)
with the key parsed once: ``dkim.sign`` parses the PEM key again for every message (about
0.37 ms) and signs RSA with Python integers (11.5 ms for a 2048-bit key, where OpenSSL
takes 1.06 ms); it also reads the clock and re-folds the whole field each time
(``bench/email_smtp.py --sign-only`` prints both).

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
        self._static: dict[str, bytes] = {}

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
        try:
            fields, _ = self._dkim.rfc822_parse(head + b"\r\n")
        except self._dkim.MessageFormatError as err:
            raise InputError(f"message: {err}") from None
        policy = self._policy
        bh = base64.b64encode(hashlib.sha256(policy.canonicalize_body(body)).digest())
        value = b"%s\r\n t=%d; bh=%s;\r\n b=" % (self._static_part(domain), int(now), bh)
        hasher = hashlib.sha256()
        # Only the fields signed are canonicalised (hash_headers picks the same ones again
        # from them: the order, so which instance of a repeated field, is kept).
        wanted = self._wanted
        signed = [f for f in fields if f[0].lower() in wanted]
        self._dkim.hash_headers(hasher, policy, policy.canonicalize_headers(signed), self._include,
                          (_FIELD, value), None)
        digest = hasher.digest()
        if isinstance(self._key, rsa.RSAPrivateKey):
            signature = self._key.sign(digest, padding.PKCS1v15(),
                                       utils.Prehashed(hashes.SHA256()))
        else:
            signature = self._key.sign(digest)
        b64 = base64.b64encode(signature)
        folded = b"\r\n  ".join(b64[i : i + _B64_LINE] for i in range(0, len(b64), _B64_LINE))
        return b"%s:%s%s\r\n" % (_FIELD, value, folded)

    def _static_part(self, domain: str) -> bytes:
        """The tags every signature for ``domain`` shares, folded once (`` v=1; ...; h=...;``)."""
        static = self._static.get(domain)
        if static is None:
            if len(self._static) > 1000:
                self._static.clear()
            tags = b"v=1; a=%s; c=%s; d=%s; s=%s;" % (
                self.algorithm.encode(), self._canonicalization, domain.encode("ascii"),
                self.selector.encode("ascii"))
            static = b" " + tags + b"\r\n " + _fold_names(self._include)
            self._static[domain] = static
        return static
