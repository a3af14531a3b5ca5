"""Phone normalisation to E.164.

A number is accepted when it is *possible* (its country calling code exists and its
national number has one of the lengths that country uses), not when it is known to be
assigned: whether a number is live is the gateway's business, and the full check costs ten
times more. Clean ``+<digits>`` input takes a fast path that checks exactly that with two
dict lookups; anything else (spaces, brackets, a national trunk prefix such as Russia's
``8``) goes through ``phonenumbers`` and its answer is cached.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

__all__ = ["PhoneNormaliser"]


def _lengths_of(cc: str) -> frozenset[int]:
    """National number lengths of country calling code ``cc`` (a digit string); empty
    when no country has that code. Loads the metadata of its regions only: loading every
    region's took 120 ms, before a run's first message."""
    lengths: set[int] = set()
    regions = COUNTRY_CODE_TO_REGION_CODE.get(int(cc)) if cc.isdigit() and cc[:1] != "0" \
        else None
    for region in regions or ():
        if region == "001":
            md = PhoneMetadata.metadata_for_nongeo_region(int(cc))
        else:
            md = PhoneMetadata.metadata_for_region(region)
        if md is not None and md.general_desc is not None:
            lengths.update(md.general_desc.possible_length or ())
    return frozenset(lengths)


_FORMATTING = re.compile(r"[\s().\-]+")
#: National number lengths by country calling code prefix, learnt as numbers come (an
#: empty set: no such code), shared by every normaliser.
_LENGTHS: dict[str, frozenset[int]] = {}


class PhoneNormaliser:
    """Turns phone numbers as people write them into E.164, or None when impossible.

    ``default_region`` (ISO 3166 alpha-2) reads numbers written without a country code as
    that country's national numbers; without it, bare digits are read as international.
    """

    def __init__(self, default_region: str | None = None, *, cache_size: int = 65536) -> None:
        self._lengths = _LENGTHS
        self.default_region = default_region
        self._slow = lru_cache(maxsize=cache_size)(self._parse)

    def normalise(self, raw: str) -> str | None:
        """E.164 form of ``raw`` (``+79161234567``), or None if it cannot be a phone."""
        if raw.isascii():
            if raw[:1] == "+" and raw[1:].isdigit():
                e164 = raw
            elif raw.isdigit() and self.default_region is None:
                e164 = "+" + raw
            else:
                return self._slow(raw)
            fast = self._possible(e164)
            if fast is not None:
                return e164 if fast else None
        return self._slow(raw)

    def _possible(self, e164: str) -> bool | None:
        """Whether a clean ``+digits`` string is possible; None: ask phonenumbers."""
        if len(e164) > 16:  # E.164 has at most 15 digits
            return False
        lengths = self._lengths
        for i in (2, 3, 4):  # country codes are 1 to 3 digits and prefix-free
            national = lengths.get(e164[1:i])
            if national is None:
                national = lengths[e164[1:i]] = _lengths_of(e164[1:i])
            if national:
                if e164[i : i + 1] == "0":
                    return None  # a leading zero is a trunk prefix, or Italian: slow path
                return len(e164) - i in national
        return False

    def _parse(self, raw: str) -> str | None:
        if len(raw) > 64:  # phonenumbers refuses longer input; so do we, cheaply
            return None
        bare = _FORMATTING.sub("", raw)
        if bare[:1] == "+" and bare[1:].isdigit() and bare.isascii():
            # "+7 (916) 123-45-67": only spaces and punctuation stood in the way
            fast = self._possible(bare)
            if fast is not None:
                return bare if fast else None
        if self.default_region is None and bare.isdigit() and bare.isascii():
            raw = "+" + bare
        try:
            number = phonenumbers.parse(raw, self.default_region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_possible_number(number):
            return None
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        possible = self._possible(e164)
        if possible is None:  # a national number starting with 0: only if really valid
            possible = phonenumbers.is_valid_number(number)
        return e164 if possible else None
