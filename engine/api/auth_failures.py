"""Failed authentications per client address: counted, logged once a minute, then refused.

Sans-I/O: every method takes ``now`` (monotonic seconds) and the caller logs and answers.
An address gets a one-minute window from its first failure; once it failed ``per_minute``
times in that window, its next requests are refused for ``BLOCK`` seconds (429 with Retry-After),
whatever token it sends meanwhile, so a blocked client cannot go on guessing.

    failures = AuthFailures(per_minute=30)
    if (wait := failures.blocked(address, now)) is not None: ...  # 429, Retry-After: wait
    ...
    if failures.failed(address, now): ...  # the first failure this minute: log it
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BLOCK", "WINDOW", "AuthFailures"]

#: Seconds of one counting window, and of a block.
WINDOW = 60.0
BLOCK = 60.0


@dataclass
class _Address:
    start: float
    count: int = 0
    blocked_until: float = 0.0


class AuthFailures:
    """The failure counts of the addresses seen lately (at most ``max_addresses``)."""

    def __init__(self, per_minute: int, *, max_addresses: int = 100_000) -> None:
        self.per_minute = per_minute
        self.max_addresses = max_addresses
        #: Failed authentications since the start, every address.
        self.total = 0
        #: Requests refused (429) because their address was blocked.
        self.refused = 0
        self._addresses: dict[str, _Address] = {}

    def blocked(self, address: str, now: float) -> float | None:
        """Seconds ``address`` stays blocked (the request is refused and counted), or None."""
        seen = self._addresses.get(address)
        if seen is None or seen.blocked_until <= now:
            return None
        self.refused += 1
        return seen.blocked_until - now

    def failed(self, address: str, now: float) -> bool:
        """Count a failed authentication; True when it is the address's first this window
        (the one to log)."""
        self.total += 1
        seen = self._addresses.get(address)
        first = seen is None or now - seen.start >= WINDOW
        if seen is None or first:
            if seen is None and len(self._addresses) >= self.max_addresses:
                self._forget(now)
            seen = self._addresses[address] = _Address(start=now)
        seen.count += 1
        if seen.count >= self.per_minute:  # the next request is the one too many
            seen.blocked_until = now + BLOCK
        return first

    def _forget(self, now: float) -> None:
        """Make room: drop addresses whose window and block are over (or the older half)."""
        self._addresses = {a: s for a, s in self._addresses.items()
                           if now - s.start < WINDOW or s.blocked_until > now}
        if len(self._addresses) >= self.max_addresses:
            keep = list(self._addresses.items())[len(self._addresses) // 2:]
            self._addresses = dict(keep)
