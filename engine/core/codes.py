"""Short codes of the tracking domain: two numbers in ten base62 characters, keyed.

A code stands for a pair ``(a, b)`` of 29-bit numbers: a short link's or an unsubscribe
link's ``(link id, seq - seq_base)`` (``engine.store.base.LinkRow``). It is two halves of
five characters (``62**5`` = 916,132,832 values each, of which the 2**29 = 536,870,912
below are used):

- the first half is ``a`` through a keyed permutation (four rounds), the same for every
  code of that ``a``, so a shortener computes it once per link;
- the second half is ``b`` through a permutation keyed by the secret *and* ``a`` (two
  rounds, a few integer operations: the per-message cost of a template link).

Nothing is written per code: a code is derived, and ``decode`` inverts it. Neighbouring
seqs give unrelated codes, and one code tells nothing of another's. How unguessable: a
random code is valid only if both halves decode to live values, so with ``N`` live links
(``link, seq`` pairs that exist) the chance is at most ``N / 62**10``: about 1.2e-11 for
10M live links, far under the one in a million the tracking domain promises.

The permutations are multiply-xorshift rounds on 29 bits (odd multipliers and xorshifts
are invertible modulo 2**29), keyed by BLAKE2b of the store's tracking secret. They make
codes unpredictable to a recipient, not secret against cryptanalysis: a code authorises
nothing but a redirect or an unsubscribe page that asks to confirm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache

__all__ = ["ALPHABET", "CODE_LENGTH", "MAX_VALUE", "Codec", "Suffix", "is_code"]

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
#: Characters of every code.
CODE_LENGTH = 10
_BITS = 29
_MASK = (1 << _BITS) - 1
#: Both numbers of a code are below this.
MAX_VALUE = 1 << _BITS
_SHIFT = 14
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_PAIRS = [a + b for a in ALPHABET for b in ALPHABET]  # 3,844 two-character strings


def is_code(text: str) -> bool:
    """Whether ``text`` has a code's shape (ten base62 characters); not whether it is live."""
    return len(text) == CODE_LENGTH and all(c in _INDEX for c in text)


def _enc5(value: int) -> str:
    hi, rest = divmod(value, 14_776_336)  # 62**4
    mid, lo = divmod(rest, 3_844)
    return ALPHABET[hi] + _PAIRS[mid] + _PAIRS[lo]


def _dec5(text: str) -> int:
    value = 0
    for c in text:
        value = value * 62 + _INDEX[c]
    return value


def _unshift(y: int) -> int:
    """Inverse of ``x ^ (x >> 14)`` on 29 bits."""
    return y ^ (y >> _SHIFT) ^ (y >> (2 * _SHIFT))


class _Rounds:
    """A keyed permutation of 29-bit numbers: per round, multiply by an odd number, add a
    key, xorshift."""

    __slots__ = ("inverse", "keys", "mults")

    def __init__(self, seed: bytes, rounds: int) -> None:
        digest = hashlib.blake2b(seed, digest_size=8 * rounds).digest()
        mults: list[int] = []
        keys: list[int] = []
        for r in range(rounds):
            word = int.from_bytes(digest[8 * r : 8 * r + 8], "little")
            mults.append((word & _MASK) | 1)
            keys.append((word >> 32) & _MASK)
        self.mults = tuple(mults)
        self.keys = tuple(keys)
        self.inverse = tuple(pow(m, -1, MAX_VALUE) for m in mults)

    def forward(self, x: int) -> int:
        for m, k in zip(self.mults, self.keys, strict=True):
            x = ((x * m + k) & _MASK)
            x ^= x >> _SHIFT
        return x

    def backward(self, y: int) -> int:
        for inv, k in zip(reversed(self.inverse), reversed(self.keys), strict=True):
            y = _unshift(y)
            y = ((y - k) * inv) & _MASK
        return y


class Codec:
    """Codes under one secret and one purpose (``b"link"``, ``b"unsubscribe"``).

    ``encode(a, b)`` and ``decode(code)`` are exact inverses for ``0 <= a, b < 2**29``;
    ``decode`` answers None for anything else. For the hot path, ``prefix(a)`` once and
    then ``suffix(a)(b)`` per message: ``prefix(a) + suffix(a)(b) == encode(a, b)``.
    """

    __slots__ = ("_first", "_purpose", "_rounds", "_secret", "_suffix")

    def __init__(self, secret: bytes, purpose: bytes = b"link") -> None:
        if len(secret) < 16:
            raise ValueError("the tracking secret must have at least 16 bytes")
        self._secret = secret
        self._purpose = purpose
        self._first = _Rounds(b"first\0" + purpose + b"\0" + secret, 4)
        self._suffix = lru_cache(maxsize=4096)(self._make_suffix)
        # decode's second half: a redirect decodes a code per request
        self._rounds = lru_cache(maxsize=65_536)(self._second)

    def _second(self, a: int) -> _Rounds:
        return _Rounds(b"second\0" + self._purpose + b"\0" + self._secret
                       + a.to_bytes(4, "little"), 2)

    def _make_suffix(self, a: int) -> Suffix:
        return _suffix_of(self._second(a))

    def prefix(self, a: int) -> str:
        """The first five characters of every code of ``a``."""
        if not 0 <= a < MAX_VALUE:
            raise ValueError(f"{a} is out of a code's range (0 to {MAX_VALUE - 1})")
        return _enc5(self._first.forward(a))

    def suffix(self, a: int) -> Suffix:
        """A callable giving the last five characters of the code of ``(a, b)`` for ``b``."""
        return self._suffix(a)

    def encode(self, a: int, b: int) -> str:
        if not 0 <= b < MAX_VALUE:
            raise ValueError(f"{b} is out of a code's range (0 to {MAX_VALUE - 1})")
        return self.prefix(a) + self.suffix(a)(b)

    def decode(self, code: str) -> tuple[int, int] | None:
        """``(a, b)`` of a well-formed code, else None (wrong length, alphabet or range)."""
        if not is_code(code):
            return None
        first, second = _dec5(code[:5]), _dec5(code[5:])
        if first >= MAX_VALUE or second >= MAX_VALUE:
            return None
        a = self._first.backward(first)
        return a, self._rounds(a).backward(second)


#: ``b`` -> the second half of a code, for one ``a``.
Suffix = Callable[[int], str]


def _suffix_of(rounds: _Rounds) -> Suffix:
    """The second half's two rounds, inlined in a closure over their constants.

    This is the per-message cost of a template link: a closure reading its constants from
    cells took 300 ns where a ``__call__`` reading them from slots took 420 ns
    (``bench/pipeline.py --links``)."""
    (m1, m2), (k1, k2) = rounds.mults, rounds.keys
    mask, shift, alphabet, pairs = _MASK, _SHIFT, ALPHABET, _PAIRS

    def suffix(b: int) -> str:
        x = (b * m1 + k1) & mask
        x ^= x >> shift
        x = (x * m2 + k2) & mask
        x ^= x >> shift
        return alphabet[x // 14_776_336] + pairs[x // 3_844 % 3_844] + pairs[x % 3_844]

    return suffix
