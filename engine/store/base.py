"""The storage interface the engine talks to.

Methods are async and work on whole batches: the embedded SQLite store runs each one
synchronously on the event loop thread (short statements, no await inside, so each call is
atomic with respect to other tasks), and a networked store (PostgreSQL, Redis) awaits its
driver instead. Nothing on this interface is called once per message.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple

from engine.core.policy import Policy
from engine.core.prepare import AudienceRow, Message, Skipped
from engine.core.states import Outcome
from engine.drivers import Receipt
from engine.store.models import AudienceSource, Mailing, Run, RunStatus

__all__ = [
    "ImportRecord",
    "ImportResult",
    "JournalBatch",
    "ReceiptReport",
    "Reserved",
    "Store",
]


class ImportRecord(NamedTuple):
    """One profile to add or update. ``key`` is the value matched on: the E.164 phone, the
    lower-cased email, the profile id, or the custom field's value; None never matches."""

    key: str | int | None
    phone: str | None
    email: str | None
    fields: dict[str, Any]


class ImportResult(NamedTuple):
    """What ``Store.import_profiles`` did with a batch of records."""

    added: int
    updated: int
    #: Records that matched a profile in ``add`` mode: left alone, not an error.
    skipped: int = 0
    #: (index in the batch, reason) of each record refused, e.g. no match in ``update`` mode.
    rejected: tuple[tuple[int, str], ...] = ()


class Reserved(NamedTuple):
    """A journalled message: enough to find its recipient again (the text is re-rendered)."""

    seq: int
    profile_id: int
    phone: str


class JournalBatch(NamedTuple):
    """A reserved batch not yet recorded; ``state`` is 'reserved' or 'sending'."""

    run_id: int
    batch: int
    sender: str
    state: str
    entries: list[Reserved]


class ReceiptReport(NamedTuple):
    """What became of a bunch of delivery receipts."""

    #: Applied to their recipient.
    matched: int
    #: No recipient has that provider id yet: kept, applied when it is recorded.
    pending: int
    #: The recipient is already in a state the receipt cannot move it from.
    ignored: int
    #: Kept receipts dropped, oldest first, to keep the gateway's under its cap.
    dropped: int = 0


class Store(abc.ABC):
    """Everything the engine persists. See ``engine.store.sqlite.SQLiteStore``."""

    # -- profile data ------------------------------------------------------------------

    @abc.abstractmethod
    async def database_id(self, name: str, *, create: bool = False) -> int:
        """The id of profile database ``name``; NotFound unless ``create``."""

    @abc.abstractmethod
    async def resource_id(self, name: str) -> int:
        """The id of resource ``name`` (resources are declared in config; rows follow)."""

    @abc.abstractmethod
    async def import_profiles(
        self,
        database_id: int,
        records: Sequence[ImportRecord],
        *,
        matching: str,
        resource_id: int | None,
        mode: str = "add+update",
    ) -> ImportResult:
        """Apply a batch in one transaction (all of it or, on error, none), in order.

        ``matching`` is ``phone``, ``email``, ``id`` or ``field:NAME``: a record whose key
        equals that of a profile in the database (the oldest, if several) matches it.
        ``mode``: ``add+update`` adds records that match nothing and merges the others into
        their profile (their fields over the old ones; phone and email when given);
        ``add`` skips the ones that match; ``update`` rejects the ones that do not. A
        record's phone is subscribed to ``resource_id`` when given.
        """

    @abc.abstractmethod
    async def set_subscription_status(
        self, resource_id: int, profile_ids: Sequence[int], status: str
    ) -> int:
        """Set the status (subscribed, unsubscribed, suspended, invalid) of the profiles'
        SMS subscriptions to the resource; returns how many changed."""

    @abc.abstractmethod
    async def add_suppressions(
        self, list_name: str, kind: str, values: Sequence[str], *, is_global: bool = True
    ) -> int:
        """Add values (E.164 phones, emails, domains) to a suppression list, created global
        or not as ``is_global`` says; returns how many were new."""

    @abc.abstractmethod
    async def attach_suppression_list(
        self, list_name: str, *, database_id: int | None = None, mailing_id: int | None = None
    ) -> None:
        """A non-global list applies to the mailings of a database, or to one mailing."""

    @abc.abstractmethod
    async def suppression_lists(self) -> list[dict[str, Any]]:
        """Each list: name, global, counts by kind, attached databases and mailings."""

    @abc.abstractmethod
    async def segment_id(self, name: str) -> tuple[int, int]:
        """(segment id, its database id) of segment ``name``; NotFound if absent."""

    @abc.abstractmethod
    async def count_audience(self, source: AudienceSource) -> int:
        """How many profiles the source holds now (for a dynamic segment, its database's
        count: an upper bound, cheap to get). For progress and sizing, not for the log."""

    # -- runs --------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_run(
        self,
        *,
        name: str,
        resource: str,
        source: AudienceSource,
        template: str,
        limit: int | None,
        document: dict[str, Any] | None = None,
        policy: Policy | None = None,
    ) -> tuple[Mailing, Run]:
        """Create a broadcast mailing and its run, marked running by this process."""

    @abc.abstractmethod
    async def get_run(self, run_id: int) -> tuple[Mailing, Run]:
        """The run and its mailing; NotFound if absent."""

    @abc.abstractmethod
    async def list_runs(self, limit: int = 100) -> list[tuple[Mailing, Run]]:
        """Newest first."""

    @abc.abstractmethod
    async def claim_run(self, run_id: int) -> Run:
        """Mark a run as running in this process (for resume); StoreError if it is live."""

    @abc.abstractmethod
    async def set_run_status(
        self,
        run_id: int,
        status: RunStatus,
        *,
        timings: dict[str, float] | None = None,
        error: str | None = None,
    ) -> None:
        """Move a run to ``status``; ``finished`` and ``failed`` stamp the finish time."""

    # -- the hot path (once per chunk or batch) ----------------------------------------

    @abc.abstractmethod
    async def audience_chunk(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int
    ) -> list[AudienceRow]:
        """Up to ``limit`` profiles with id > ``after_id``, in id order, each with its
        highest-priority active SMS subscription to the resource (phone None if none)."""

    @abc.abstractmethod
    async def audience_page(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int, now: float
    ) -> tuple[list[AudienceRow], int | None]:
        """The audience cursor's next page: up to ``limit`` rows as ``audience_chunk``
        reads them, and the id to continue after (None: the audience is read to its end).
        A dynamic segment is evaluated as of ``now``; its page may hold fewer rows than
        ``limit``, or none, while more remain."""

    @abc.abstractmethod
    async def audience_rows(
        self, source: AudienceSource, resource_id: int, profile_ids: Sequence[int]
    ) -> list[AudienceRow]:
        """The rows of these profiles, as ``audience_chunk`` reads them (for resume)."""

    @abc.abstractmethod
    async def lookup(
        self, run_id: int, phones: Sequence[str], maybe_seen: Sequence[str]
    ) -> tuple[set[str], set[str]]:
        """(the suppressed among ``phones``, the ones among ``maybe_seen`` already recorded
        as recipients of the run)."""

    @abc.abstractmethod
    async def reserve(
        self,
        run_id: int,
        *,
        batches: Sequence[tuple[int, str, Sequence[Message]]],
        skipped: Sequence[Skipped],
        checkpoint: int,
        next_seq: int | None,
        counts: dict[str, int],
        audience_done: bool,
    ) -> None:
        """Atomically: journal the (batch id, sender, messages) batches, record the skips,
        advance the checkpoint (and ``next_seq``, unless None) and add ``counts`` to the
        run's counters. The journal keeps each message's seq, profile and phone, not its
        text."""

    @abc.abstractmethod
    async def mark_sending(self, run_id: int, batch: int) -> None:
        """The batch is about to be handed to its gateway (durably, before it is).

        Called just before a request is written, never while the batch still waits for
        its sender's window or rate: a batch marked ``sending`` may be at its gateway."""

    @abc.abstractmethod
    async def unmark_sending(self, run_id: int, batch: int) -> None:
        """The batch is back to merely reserved: its gateway certainly has none of what is
        still pending (it answered "not taken" for all of it)."""

    @abc.abstractmethod
    async def move_batch(self, run_id: int, batch: int, sender: str) -> None:
        """A journalled batch fails over to another sender (its messages keep their ids)."""

    @abc.abstractmethod
    async def record(
        self, run_id: int, batch: int, sender: str, messages: Sequence[Message],
        outcomes: Sequence[Outcome], keep: Sequence[Message] = (),
        keep_sending: bool = False,
    ) -> None:
        """Atomically: write the batch's recipient rows and drop it from the journal.

        ``keep``: messages of the batch that are not settled and that no gateway has (a
        run stopped between two parts of a batch, or while waiting to retry what its
        gateway refused): the batch stays in the journal with just those, ``reserved``, for
        ``resume`` to send or ``cancel`` to record ``cancelled``. With ``keep_sending`` they
        stay marked ``sending`` instead (a gateway may have some: an ambiguous attempt that
        is to be retried)."""

    @abc.abstractmethod
    async def apply_receipts(
        self, gateway: str, receipts: Sequence[Receipt], *, senders: Sequence[str],
        cap: int = 100_000, ttl: float = 7 * 86400.0, now: float | None = None,
    ) -> ReceiptReport:
        """Apply receipts of ``gateway``, whose senders (config names) are ``senders``.

        A receipt moves the recipients that have its provider id and one of ``senders``
        (no other gateway's) to delivered / undelivered, as far as
        ``engine.core.states.can_move`` allows, in order of the receipts' ``at``. A receipt
        with no such recipient is kept for the gateway and applied when a message of one
        of its senders is recorded with that id, unless it waited more than ``ttl``
        seconds: then it is dropped. The gateway keeps at most ``cap`` receipts (0: no
        cap); past it the oldest are dropped and counted. The store remembers which
        gateway each of ``senders`` belongs to, for ``record``.

        The receipts may be applied in several transactions (a big callback does not hold
        the store): a crash in the middle leaves part applied, which is harmless as a
        receipt applied twice moves nothing. ``now``: the clock (tests)."""

    @abc.abstractmethod
    async def policy_counts(
        self, policy: Policy, resource_id: int, keys: Sequence[int | str], now: float
    ) -> dict[int | str, int]:
        """Messages counted under ``policy`` in its window ending today, per profile id
        (or per E.164 phone for ``contact`` scope); keys with none are left out. Messages
        count from the moment they are reserved."""

    @abc.abstractmethod
    async def journal(self, run_id: int) -> list[JournalBatch]:
        """The run's reserved batches whose fate is not recorded, oldest first."""

    @abc.abstractmethod
    def recipient_phones(self, run_id: int, chunk: int = 5000) -> AsyncIterator[list[str]]:
        """The phones of the run's non-skipped recipients, in chunks (to rebuild dedupe)."""

    @abc.abstractmethod
    async def run_summary(self, run_id: int) -> dict[str, dict[str, int]]:
        """Recipient counts by state, and by reason within each state."""

    # -- mailings run by the service -------------------------------------------------

    @abc.abstractmethod
    async def create_mailing(
        self,
        *,
        name: str,
        kind: str,
        resource: str,
        source: AudienceSource,
        template: str,
        limit: int | None,
        document: dict[str, Any] | None = None,
        policy: Policy | None = None,
    ) -> Mailing:
        """A mailing with no run yet."""

    @abc.abstractmethod
    async def get_mailing(self, mailing_id: int) -> Mailing:
        """NotFound if absent."""

    @abc.abstractmethod
    async def list_mailings(self, limit: int = 100, *, documents: bool = True) -> list[Mailing]:
        """Newest first. ``documents=False`` leaves each ``document`` empty (a list that
        shows none should not decode up to ``[limits] document_bytes`` per mailing)."""

    @abc.abstractmethod
    async def start_run(self, mailing_id: int) -> Run:
        """A new run of the mailing, marked running by this process."""

    @abc.abstractmethod
    async def latest_run(self, mailing_id: int) -> Run | None:
        """The mailing's newest run, if any."""

    @abc.abstractmethod
    async def cancel_run(self, run_id: int) -> None:
        """Settle a stopped run for good: what was reserved and never handed over is
        skipped (reason ``cancelled``), what may have been is ``unknown``."""

    @abc.abstractmethod
    async def find_profiles(
        self, database_id: int, key: str, values: Sequence[str]
    ) -> dict[str, int]:
        """Profile ids by ``phone`` (E.164) or ``email``; the oldest profile wins."""

    @abc.abstractmethod
    async def profile_ids_in(self, database_id: int, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` are profiles of the database."""

    @abc.abstractmethod
    async def enqueue_triggers(
        self, mailing_id: int, run_id: int, items: Sequence[tuple[int, bytes, str | None]]
    ) -> list[tuple[int, bool]]:
        """Queue (profile id, JSON content, idempotency key) items of a trigger mailing in
        one transaction; for each, its message's seq and whether the key was seen before
        (then nothing is queued and the first seq is returned)."""

    @abc.abstractmethod
    async def trigger_chunk(
        self, run_id: int, resource_id: int, after_id: int, limit: int
    ) -> list[tuple[Any, ...]]:
        """Queued triggers after queue id ``after_id``: (queue id, seq, profile id,
        profile fields, subscription phone, subscription fields, content)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close connections."""
