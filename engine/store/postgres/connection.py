"""What every PostgreSQL role module shares: the pool and the open store's caches."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from engine.errors import InputError
from engine.store.counters import Tally, on_channels
from engine.store.postgres.db import Database, Tx

__all__ = ["AUDIENCE_COLUMNS", "CHANNELS", "PICK_SUBSCRIPTION", "Channel", "PgBase",
           "channel_literal", "checked_channel", "pick_subscription"]

Channel = Literal["sms", "email"]
#: The channels a subscription, a mailing and an audience may have: the closed set that
#: ``channel_literal`` writes into SQL.
CHANNELS: Final = ("sms", "email")


def checked_channel(channel: str) -> Channel:
    """``channel`` if it is one of ``CHANNELS``; InputError otherwise."""
    if channel == "sms":
        return "sms"
    if channel == "email":
        return "email"
    raise InputError(f"a channel is sms or email, not {channel!r}")


def channel_literal(channel: str) -> str:
    """``channel`` as an SQL literal (``'sms'``, ``'email'``): a constant in the statement
    keeps the match on ``subscriptions_pick`` (profile, resource, channel, status) a
    plain index lookup. Anything outside ``CHANNELS`` is refused, so the literal can
    never be anything else."""
    return f"'{checked_channel(channel)}'"


def pick_subscription(channel: str) -> str:
    """Joins each profile ``p`` to ``s``, its highest-priority active subscription of
    ``channel`` to the resource bound at this ``%s`` (all NULL if it has none)."""
    return (
        "LEFT JOIN LATERAL (SELECT phone, fields FROM subscriptions"
        " WHERE profile_id = p.id AND resource_id = %s"
        f" AND channel = {channel_literal(channel)}"
        " AND status = 'subscribed' ORDER BY priority DESC, id LIMIT 1) s ON true"
    )


#: ``pick_subscription`` of the SMS channel.
PICK_SUBSCRIPTION = pick_subscription("sms")

#: An ``AudienceRow``'s columns, fields as JSON text (decoded lazily by the renderer).
AUDIENCE_COLUMNS = "p.id, p.fields::text, s.phone, s.fields::text"


class PgBase:
    """The state the role mixins of ``PostgresStore`` share.

    Each method runs in one transaction (``async with self.db.transaction() as tx``) and
    awaits the driver inside it: other tasks run meanwhile, so nothing may assume two
    calls are atomic together. The caches hold what never changes once written."""

    db: Database
    #: The database's URL, without its password.
    url: str

    def __init__(self, db: Database, url: str) -> None:
        self.db = db
        self.url = url
        #: resource name -> id (resources are never renamed nor dropped).
        self._resources: dict[str, int] = {}
        #: run id -> the suppression lists that apply to it (cleared on attach).
        self._run_lists: dict[int, list[int]] = {}
        #: run id -> its mailing's resource id.
        self._run_resource: dict[int, int] = {}
        self._run_test: dict[int, bool] = {}
        #: run id -> its mailing's channel (a mailing's never changes).
        self._run_channel: dict[int, Channel] = {}
        #: the tracking domain's secret, once read (it never changes).
        self._tracking_secret: bytes | None = None

    async def _channels(self, tx: Tx, run_ids: Iterable[int | None]) -> dict[int, Channel]:
        """The channel of each run (cached); a run that does not exist is left out."""
        wanted = {int(r) for r in run_ids if r is not None}
        missing = [r for r in wanted if r not in self._run_channel]
        if missing:
            for run_id, channel in await tx.fetchall(
                "SELECT r.id, m.channel FROM runs r JOIN mailings m ON m.id = r.mailing_id"
                " WHERE r.id = ANY(%s::bigint[])", (missing,)
            ):
                self._run_channel[int(run_id)] = "email" if channel == "email" else "sms"
        return {r: self._run_channel[r] for r in wanted if r in self._run_channel}

    async def _channel(self, tx: Tx, run_id: int) -> Channel:
        """A run's channel (``sms`` for a run there is not)."""
        return (await self._channels(tx, (run_id,))).get(run_id, "sms")

    async def _on_channels(self, tx: Tx, tally: Tally) -> Tally:
        """``tally`` with each run's events of its channel's kinds (an email run's
        ``send``, not ``send_sms``: ``counters.on_channels``)."""
        channels = await self._channels(tx, (e[2] for e in tally.events))
        on_channels(tally, lambda run_id: channels.get(run_id, "sms"))
        return tally
