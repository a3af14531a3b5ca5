"""What every SQLite role module shares: the connection, its transactions, the caches."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from engine.errors import StoreError

if TYPE_CHECKING:
    from engine.segments.condition import Condition
    from engine.store.sqlite.conditions import Verdict

__all__ = ["CHANNELS", "PICKS", "PICK_SUBSCRIPTION", "ConditionKey", "SQLiteBase", "Transaction",
           "channel_of_address", "json", "pick_subscription", "run_channel", "sql_text"]

ConditionKey = tuple[str, tuple[tuple[str, int], ...]]

#: JSON of the values bound through ``json_each(?)``, of counts and of documents.
json = msgspec.json.Encoder()

#: The channels a subscription, a mailing's audience and a run have.
CHANNELS = ("sms", "email")


def _pick(channel: str) -> str:
    return (
        "LEFT JOIN subscriptions s ON s.id = (SELECT id FROM subscriptions"
        f" WHERE profile_id = p.id AND resource_id = ? AND channel = '{channel}'"
        " AND status = 'subscribed' ORDER BY priority DESC, id LIMIT 1)"
    )


#: Per channel: joins each profile ``p`` to its highest-priority active subscription of
#: that channel to resource ?. The channel is a literal (the index ``subscriptions_pick``
#: answers it), from this closed set, never user text.
PICKS = {channel: _pick(channel) for channel in CHANNELS}
#: The SMS one (what every audience read before there was email).
PICK_SUBSCRIPTION = PICKS["sms"]


def pick_subscription(channel: str) -> str:
    """``PICKS[channel]``; StoreError for a channel Herald does not have."""
    try:
        return PICKS[channel]
    except KeyError:
        raise StoreError(f"no channel {channel!r}: a channel is sms or email") from None


def channel_of_address(address: str) -> str:
    """The channel an address belongs to: ``email`` for one with an ``@``, else ``sms``
    (an E.164 phone)."""
    return "email" if "@" in address else "sms"


def run_channel(c: sqlite3.Connection, run_id: int) -> str | None:
    """The channel of a run's mailing; None if there is no such run."""
    row = c.execute("SELECT m.channel FROM runs r JOIN mailings m ON m.id = r.mailing_id"
                    " WHERE r.id = ?", (run_id,)).fetchone()
    return None if row is None else str(row[0])


class Transaction:
    """``with`` block around BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")


def sql_text(value: str) -> str:
    """A string as an SQL literal."""
    return "'" + value.replace("'", "''") + "'"


class SQLiteBase:
    """The state the role mixins of ``SQLiteStore`` share.

    Each method runs its statements synchronously on the event loop thread, in one
    transaction, and is short (keyset-paginated reads, one transaction per batch)."""

    conn: sqlite3.Connection
    path: Path

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self.url = f"sqlite:///{path}"
        #: resource name -> id (resources are never deleted)
        self._resources: dict[str, int] = {}
        #: run id -> its mailing's resource id (for the policy history)
        self._run_resource: dict[int, int] = {}
        self._run_test: dict[int, bool] = {}
        #: run id -> its mailing's channel
        self._run_channels: dict[int, str] = {}
        #: run id -> the suppression lists that apply to it
        self._run_lists: dict[int, list[int]] = {}
        #: the private scratch database of the dedupe record, and the runs it holds
        self._scratch: sqlite3.Connection | None = None
        self._seen_tables: set[int] = set()
        #: the run whose accepted keys are held in memory, not yet written to its scratch
        #: table (one run at a time), and those keys
        self._seen_run: int | None = None
        self._seen_held: set[Any] = set()
        #: compiled segment conditions and their verdicts, by ``Condition.key``
        self._verdicts: dict[ConditionKey, tuple[Condition, Verdict]] = {}
        #: the tracking domain's secret, once read (it never changes)
        self._tracking_secret: bytes | None = None

    def _tx(self) -> Transaction:
        return Transaction(self.conn)

    def _resource_id(self, name: str) -> int:
        """The id of resource ``name``, its row created on first use."""
        if name in self._resources:
            return self._resources[name]
        self.conn.execute(
            "INSERT OR IGNORE INTO resources (name, created_at) VALUES (?, ?)",
            (name, time.time()),
        )
        (rid,) = self.conn.execute(
            "SELECT id FROM resources WHERE name = ?", (name,)
        ).fetchone()
        self._resources[name] = int(rid)
        return int(rid)

    def _run_is_test(self, c: sqlite3.Connection, run_id: int) -> bool:
        """Whether a run sends test messages (``RunSpec.is_test``; cached: a run's spec never
        changes): they count for no policy and in no report."""
        flag = self._run_test.get(run_id)
        if flag is None:
            row = c.execute("SELECT coalesce(json_extract(spec, '$.is_test'), 0) FROM runs"
                            " WHERE id = ?", (run_id,)).fetchone()
            flag = self._run_test[run_id] = bool(row and row[0])
        return flag

    def _run_channel(self, c: sqlite3.Connection, run_id: int) -> str:
        """The channel of a run's mailing (cached: a run never changes channel)."""
        channel = self._run_channels.get(run_id)
        if channel is None:
            channel = run_channel(c, run_id)
            if channel is None:
                return "sms"  # no such run (yet): nothing of it is read
            if channel not in CHANNELS:
                raise StoreError(f"run {run_id}: no channel {channel!r}")
            self._run_channels[run_id] = channel
        return channel

    def _run_resource_id(self, c: sqlite3.Connection, run_id: int) -> int:
        """The resource id of a run's mailing (cached: a run never changes resource)."""
        resource_id = self._run_resource.get(run_id)
        if resource_id is None:
            (name,) = c.execute(
                "SELECT m.resource FROM runs r JOIN mailings m ON m.id = r.mailing_id"
                " WHERE r.id = ?", (run_id,)).fetchone()
            resource_id = self._run_resource[run_id] = self._resource_id(name)
        return resource_id
