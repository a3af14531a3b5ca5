"""Action hooks' messages: each event of the record as the JSON object a hook delivers.

The structure is Altcraft's, so consumers written for its action hooks keep working
(``docs/hooks.md`` has an example per event), plus ``event_id`` to dedupe on::

    {"event_id": "1042", "event_type": "deliv_sms", "event_date": "2026-12-02T06:33:31.120Z",
     "account_id": 1, "is_test": false, "profile_id": 7, "list_id": 1, "custom_data": null,
     "event_data": {"message_id": "r5x-3", "campaign_id": 12, "resource_id": 1,
                    "run_id": 40, "phone": "+447911000001", "sender": "ACME",
                    "error": null, "url": null}}

An email event (``send``, ``open``, ``hbounce``...) has ``email`` where an SMS event has
``phone``. An import event (``import_file``, ``import_api``) carries the import's counts as its
``event_data``. Sans-I/O: ``HookFilter`` says which events a hook delivers and
``MessageEncoder`` builds their bytes, one call per batch and no clock read.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import msgspec

from engine.config import HookConfig
from engine.store.base import HookEvent

__all__ = ["EMAIL_EVENTS", "IMPORT_EVENTS", "HookFilter", "MessageEncoder", "event_date"]

#: The events of a finished import: no message, mailing or resource.
IMPORT_EVENTS = frozenset({"import_file", "import_api"})


class _EventData(msgspec.Struct):
    message_id: str | None
    campaign_id: int | None
    resource_id: int | None
    run_id: int | None
    phone: str
    sender: str | None
    error: str | None
    url: str | None


class _EmailEventData(msgspec.Struct):
    """An email event's data: Altcraft's ``email`` where an SMS event has ``phone``."""

    message_id: str | None
    campaign_id: int | None
    resource_id: int | None
    run_id: int | None
    email: str
    sender: str | None
    error: str | None
    url: str | None


#: The events of the email channel (``engine.core.events``).
EMAIL_EVENTS = frozenset({"send", "deliv", "undeliv", "click", "uclick", "unsub", "open",
                          "uopen", "hbounce", "sbounce", "complain"})


class _Message(msgspec.Struct):
    event_id: str
    event_type: str
    event_date: str
    account_id: int
    is_test: bool
    profile_id: int | None
    list_id: int | None
    custom_data: msgspec.Raw | None
    #: ``_EventData``, or an import's counts (``msgspec.Raw``).
    event_data: object


_EMPTY_OBJECT = msgspec.Raw(b"{}")
#: Seconds whose "YYYY-MM-DDTHH:MM:SS" text is kept: events come in time order, so a
#: batch formats each second once.
_SECONDS_KEPT = 4096
_seconds: dict[int, str] = {}


def event_date(at: float) -> str:
    """``at`` (seconds since the epoch) in RFC 3339, UTC, to the millisecond:
    ``2026-12-02T06:33:31.120Z``."""
    second, ms = divmod(int(at * 1000), 1000)
    text = _seconds.get(second)
    if text is None:
        if len(_seconds) >= _SECONDS_KEPT:
            _seconds.clear()
        text = _seconds[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{text}.{ms:03d}Z"


class HookFilter:
    """Which events of the record a hook delivers (its ``events``, ``resources``,
    ``databases``, ``mailings`` and ``include_tests``)."""

    __slots__ = ("_databases", "_events", "_include_tests", "_mailings", "_resources")

    def __init__(self, config: HookConfig) -> None:
        self._events = frozenset(config.events)
        self._resources = frozenset(config.resources)
        self._databases = frozenset(config.databases)
        self._mailings = frozenset(config.mailings)
        self._include_tests = config.include_tests

    def __call__(self, event: HookEvent) -> bool:
        """The hook delivers ``event``."""
        if event.kind not in self._events:
            return False
        if event.is_test and not self._include_tests:
            return False
        # an import has no resource or mailing: either filter leaves it out
        if self._resources and event.resource not in self._resources:
            return False
        if self._mailings and event.mailing_id not in self._mailings:
            return False
        return not (self._databases and event.database not in self._databases)

    def select(self, events: Iterable[HookEvent]) -> list[HookEvent]:
        """The events of ``events`` the hook delivers, in order."""
        return [e for e in events if self(e)]


class MessageEncoder:
    """Builds events' messages as JSON bytes, for the account ``account_id``."""

    __slots__ = ("_account_id", "_encode")

    def __init__(self, account_id: int) -> None:
        self._account_id = account_id
        self._encode = msgspec.json.Encoder().encode

    def encode(self, event: HookEvent) -> bytes:
        """The message of ``event``."""
        return self._encode(self._message(event))

    def encode_all(self, events: Sequence[HookEvent]) -> list[bytes]:
        """The messages of ``events``, in order."""
        message, encode = self._message, self._encode
        return [encode(message(e)) for e in events]

    def _message(self, e: HookEvent) -> _Message:
        data: object
        if e.kind in IMPORT_EVENTS:
            data = msgspec.Raw(e.data) if e.data else _EMPTY_OBJECT
        elif e.kind in EMAIL_EVENTS:
            data = _EmailEventData(e.message_id, e.mailing_id, e.resource_id, e.run_id,
                                   e.phone, e.sender, e.error, e.url)
        else:
            data = _EventData(e.message_id, e.mailing_id, e.resource_id, e.run_id, e.phone,
                              e.sender, e.error, e.url)
        custom = msgspec.Raw(e.custom_data) if e.custom_data else None
        return _Message(str(e.position.id), e.kind, event_date(e.at), self._account_id,
                        e.is_test, e.profile_id, e.database_id, custom, data)
