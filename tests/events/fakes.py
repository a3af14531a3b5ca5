"""Fakes for the outbox's tests: an in-memory ``HookStore``, a fake clock, fake transports."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from engine.config import HookConfig
from engine.events.transports.base import DeliveryError, Transport
from engine.store.base import ORIGIN, DeadLetter, EventPosition, HookEvent, HookState, HookStore


async def eventually(condition: Callable[[], bool]) -> None:
    """Return once ``condition()`` holds, looking every millisecond (real time); fail
    after 10 s."""
    with anyio.fail_after(10):
        while True:
            if condition():
                return
            await anyio.sleep(0.001)


class FakeClock:
    """Seconds that pass only when a task sleeps: ``sleep(d)`` moves time on by ``d``
    and lets the other tasks run. One per deliverer (each its own time line)."""

    def __init__(self, now: float = 1_764_657_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.0)
        await anyio.lowlevel.checkpoint()


def event(i: int, kind: str = "send_sms", **fields: Any) -> HookEvent:
    """Event ``i`` of the record (position (0, i), at 1000 + i seconds)."""
    base: dict[str, Any] = dict(
        position=EventPosition(0, i), kind=kind, at=1_764_657_000.0 + i, is_test=False,
        mailing_id=12, run_id=40, seq=i, message_id=f"r5x-{i}", profile_id=100 + i,
        database_id=1, database="main", resource_id=3, resource="news",
        phone=f"+4479110{i:05d}", sender="ACME", error=None, url=None, custom_data=None,
        data=None)
    base.update(fields)
    return HookEvent(**base)


class MemoryHookStore(HookStore):
    """``HookStore`` in memory, on ``clock``: what the deliverer needs of the real ones."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.events: list[HookEvent] = []
        self.rows: dict[str, HookState] = {}
        self.letters: list[DeadLetter] = []
        self.fail_reads = False
        self.calls: list[str] = []

    def add(self, *events: HookEvent) -> None:
        self.events.extend(events)

    def end(self) -> EventPosition:
        return self.events[-1].position if self.events else ORIGIN

    async def record_import_event(self, kind: str, at: float, database_id: int,
                                  data: bytes) -> None:
        self.add(event(len(self.events) + 1, kind, at=at, database_id=database_id,
                       data=data, mailing_id=None, run_id=None, seq=None, message_id=None,
                       resource_id=None, resource=None, phone="", sender=None))

    async def hook_events(self, after: EventPosition, limit: int, *,
                          upto: EventPosition | None = None) -> list[HookEvent]:
        await anyio.lowlevel.checkpoint()
        if self.fail_reads:
            raise OSError("the database is away")
        out = [e for e in self.events if e.position > after
               and (upto is None or e.position <= upto)]
        return out[:limit]

    async def events_at(self, since: float) -> EventPosition:
        before = ORIGIN
        for e in self.events:
            if e.at >= since:
                break
            before = e.position
        return before

    def _held(self, name: str, owner: str) -> bool:
        row = self.rows.get(name)
        return row is not None and row.owner == owner and row.lease_until > self.clock()

    async def claim_hook(self, name: str, owner: str, ttl: float) -> HookState | None:
        self.calls.append(f"claim {owner}")
        now = self.clock()
        row = self.rows.get(name)
        if row is None:
            row = HookState(name, self.end(), "", 0.0, "", None, 0)
        elif row.owner and row.owner != owner and row.lease_until > now:
            return None
        row = row._replace(owner=owner, lease_until=now + ttl)
        self.rows[name] = row
        return row

    async def advance_hook(self, name: str, owner: str, cursor: EventPosition,
                           delivered: int) -> bool:
        if not self._held(name, owner):
            return False
        row = self.rows[name]
        self.rows[name] = row._replace(cursor=max(cursor, row.cursor), last_error="",
                                       failing_since=None, delivered=row.delivered + delivered)
        return True

    async def fail_hook(self, name: str, owner: str, error: str, first_failed: float) -> bool:
        if not self._held(name, owner):
            return False
        self.rows[name] = self.rows[name]._replace(last_error=error,
                                                   failing_since=first_failed)
        return True

    async def release_hook(self, name: str, owner: str) -> None:
        if name in self.rows and self.rows[name].owner == owner:
            self.rows[name] = self.rows[name]._replace(owner="", lease_until=0.0)

    async def hook_states(self) -> list[HookState]:
        return sorted(self.rows.values())

    async def dead_letter(self, name: str, owner: str, letter: DeadLetter) -> bool:
        if not self._held(name, owner):
            return False
        self.letters.append(letter._replace(id=len(self.letters) + 1))
        row = self.rows[name]
        self.rows[name] = row._replace(cursor=max(letter.upto, row.cursor), last_error="",
                                       failing_since=None)
        return True

    async def dead_letters(self, name: str | None = None) -> list[DeadLetter]:
        return [d for d in self.letters if name is None or d.hook == name]

    async def drop_dead_letters(self, ids: Sequence[int]) -> None:
        self.letters = [d for d in self.letters if d.id not in ids]


class RecordingTransport(Transport):
    """Takes every batch (or fails while ``failing``), and keeps them."""

    def __init__(self, name: str = "h", config: HookConfig | None = None, *,
                 failing: bool = False, clock: Callable[[], float] = lambda: 0.0) -> None:
        super().__init__(name, config or hook_config())
        self.batches: list[list[bytes]] = []
        #: ``clock()`` at each batch taken.
        self.sent_at: list[float] = []
        self.clock = clock
        self.tries = 0
        self.failing = failing
        self.closed = False

    async def send(self, messages: Sequence[bytes]) -> None:
        self.tries += 1
        await anyio.lowlevel.checkpoint()
        if self.failing:
            raise DeliveryError("POST http://sink/: HTTP 503")
        self.batches.append(list(messages))
        self.sent_at.append(self.clock())

    async def aclose(self) -> None:
        self.closed = True


def hook_config(**keys: Any) -> HookConfig:
    """An http hook's config taking every event, with ``keys`` changed."""
    values: dict[str, Any] = dict(
        transport="http", url="http://127.0.0.1:9/hook",
        events=["send_sms", "deliv_sms", "undeliv_sms", "click_sms", "uclick_sms",
                "unsub_sms", "import_file", "import_api"])
    values.update(keys)
    return HookConfig(**values)
