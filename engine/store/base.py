"""The one storage seam: small protocols by role, and ``Store``, which has them all.

Every method is async, takes a whole chunk or batch (nothing here is called once per
message) and is atomic on its own: it runs in one transaction of its database, or says in
its docstring where it is split into several (``apply_receipts``). No caller may assume
two calls are atomic together, nor that no other task runs between them: a networked
database awaits its driver inside every call.

Rows cross the seam as named, typed tuples and Structs. The one exception is the profile
fields of the hot path (``AudienceRow.fields``, ``TriggerRow.fields``): they stay the JSON
text the database holds, decoded by the renderer only when a template reads ``lead``
(decoding every row cost more than the rest of a row's read; ``bench/pipeline.py``).

Implementations: ``engine.store.sqlite`` (the embedded default) and
``engine.store.postgres``; ``engine.store.open.open_store`` picks one from a URL. The
contract suite in ``tests/store/`` runs every method on both.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from engine.core.policy import Policy
from engine.core.prepare import AudienceRow, Message, Skipped
from engine.core.states import Outcome
from engine.drivers import Bounce, Receipt
from engine.store.models import (
    AudienceSource,
    Mailing,
    MailingOptions,
    MailingState,
    Run,
    RunSpec,
    RunStatus,
    Step,
    StepKind,
)

if TYPE_CHECKING:
    from engine.segments.condition import Condition
    from engine.segments.dates import Now

__all__ = [
    "ORIGIN",
    "ApiTokenStore",
    "AudienceStore",
    "ChannelRow",
    "ChunkRow",
    "Click",
    "ClickReport",
    "ClusterStore",
    "ConditionPlan",
    "DatabaseRow",
    "DeadLetter",
    "DirectoryRow",
    "EventPosition",
    "EventRow",
    "EventStore",
    "GalleryDeleted",
    "GallerySort",
    "GalleryStore",
    "Grouping",
    "HookEvent",
    "HookState",
    "HookStore",
    "ImageQuery",
    "ImageRow",
    "ImportRecord",
    "ImportResult",
    "JournalBatch",
    "JournalStore",
    "Lease",
    "LinkRow",
    "LinkStat",
    "Member",
    "NewImage",
    "PolicyStore",
    "ProfileRow",
    "ProfileStore",
    "ReceiptReport",
    "ReceiptStore",
    "RecipientRef",
    "RecipientRow",
    "ReportFilter",
    "ReportStore",
    "Reserved",
    "RunStore",
    "SegmentRow",
    "SegmentStore",
    "Store",
    "SubscriptionRow",
    "SubscriptionStore",
    "SuppressionStore",
    "TokenRow",
    "TrackingStore",
    "TriggerRow",
    "TriggerStore",
    "WorkerRow",
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


class Lease(NamedTuple):
    """A worker's lease on a chunk of a cluster run. ``fence`` goes up at each claim: a
    write under an older fence is refused (LeaseLost)."""

    run_id: int
    chunk: int
    #: The chunk's profile ids: lo < id <= hi (hi None: no upper bound).
    lo: int
    hi: int | None
    fence: int
    worker: str
    #: Where the chunk's reading stands (a profile id; every id <= it is settled).
    checkpoint: int
    #: The next seq the chunk gives a message (chunks have disjoint seq ranges).
    next_seq: int
    audience_done: bool
    #: True when the chunk was taken over from a worker whose lease expired: its journal
    #: must be settled first, as ``resume`` does.
    taken_over: bool


class ChunkRow(NamedTuple):
    run_id: int
    chunk: int
    lo: int
    hi: int | None
    #: pending, leased or done
    state: str
    worker: str | None
    #: Seconds until the lease expires (negative: expired); None unless leased.
    lease_left: float | None
    checkpoint: int
    fence: int


class WorkerRow(NamedTuple):
    worker: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    chunks: int


class TriggerRow(NamedTuple):
    """A queued trigger, with its profile and that profile's chosen subscription."""

    queue_id: int
    seq: int
    profile_id: int
    #: The profile's fields, as JSON text (see the module's docstring).
    fields: bytes | str | None
    phone: str | None
    sub_fields: bytes | str | None
    #: The trigger call's content (``apicontent``), as JSON.
    content: bytes | None


class RecipientRow(NamedTuple):
    """A recipient's recorded state."""

    seq: int
    profile_id: int
    phone: str
    state: str
    reason: str | None


class SubscriptionRow(NamedTuple):
    profile_id: int
    database: str
    phone: str
    channel: str
    status: str
    priority: int
    created_at: float
    updated_at: float


class SegmentRow(NamedTuple):
    """A stored segment. ``condition`` is the text of a dynamic segment's condition."""

    id: int
    name: str
    database: str
    database_id: int
    kind: Literal["static", "dynamic"]
    condition: str | None
    created_at: float


class DatabaseRow(NamedTuple):
    """A profile database and how many profiles it holds (the console's list)."""

    id: int
    name: str
    profiles: int


class ProfileRow(NamedTuple):
    """A profile as the console lists it: its keys and its fields, decoded."""

    id: int
    phone: str | None
    email: str | None
    fields: dict[str, Any]


class Member(NamedTuple):
    """A profile of a segment, as ``segment show`` samples it."""

    id: int
    phone: str | None
    email: str | None


class ConditionPlan(NamedTuple):
    """What a store's SQL decides of a condition: ``decided`` when SQL decides every
    profile; ``python_only``, the parts it never answers, as written."""

    decided: bool
    python_only: tuple[str, ...]


class TokenRow(NamedTuple):
    id: int
    name: str | None
    role: str
    group: str | None
    created_at: float
    revoked_at: float | None
    digest: str


class ProfileStore(abc.ABC):
    """Profile databases, resources, profiles and their subscriptions."""

    @abc.abstractmethod
    async def database_id(self, name: str, *, create: bool = False) -> int:
        """The id of profile database ``name``; NotFound unless ``create``."""

    @abc.abstractmethod
    async def database_name(self, database_id: int) -> str:
        """The name of profile database ``database_id``; NotFound if there is none."""

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
        channel: Literal["sms", "email"] = "sms",
    ) -> ImportResult:
        """Apply a batch in one transaction (all of it or, on error, none), in order.

        ``matching`` is ``phone``, ``email``, ``id`` or ``field:NAME``: a record whose key
        equals that of a profile in the database (the oldest, if several) matches it.
        ``mode``: ``add+update`` adds records that match nothing and merges the others into
        their profile (their fields over the old ones; phone and email when given);
        ``add`` skips the ones that match; ``update`` rejects the ones that do not. A
        record's address for ``channel`` (its phone; its email, normalised, for an email
        resource) is subscribed to ``resource_id`` when given, under that channel.
        """

    @abc.abstractmethod
    async def set_subscription_status(
        self, resource_id: int, profile_ids: Sequence[int], status: str
    ) -> int:
        """Set the status (subscribed, unsubscribed, suspended, invalid, hardbounced,
        complainer) of the profiles' subscriptions to the resource (of its channel);
        returns how many changed."""

    @abc.abstractmethod
    async def find_profiles(
        self, database_id: int, key: str, values: Sequence[str]
    ) -> dict[str, int]:
        """Profile ids by ``phone`` (E.164), ``email`` or ``field:NAME`` (a custom field's
        value, compared as text: a number's JSON text, a string as is); the oldest profile
        wins."""

    @abc.abstractmethod
    async def profile_ids_in(self, database_id: int, ids: Sequence[int]) -> set[int]:
        """Which of ``ids`` are profiles of the database."""

    @abc.abstractmethod
    async def database_rows(self) -> list[DatabaseRow]:
        """Every profile database, by name, with its count of profiles (a count over
        each database's index: for a page, not a hot path)."""

    @abc.abstractmethod
    async def profile_page(
        self, database_id: int, after_id: int, limit: int
    ) -> list[ProfileRow]:
        """Up to ``limit`` profiles of the database with id > ``after_id``, in id order."""


class SubscriptionStore(abc.ABC):
    """A resource's subscriptions (of its channel), one profile or address at a time (the
    API's)."""

    @abc.abstractmethod
    async def find_subscriptions(
        self, resource_id: int, *, profile_id: int | None = None, phone: str | None = None,
        database_id: int | None = None, limit: int = 1000,
    ) -> list[SubscriptionRow]:
        """The resource's subscriptions matching every filter given, by profile id,
        then priority (highest first), then age."""

    @abc.abstractmethod
    async def profile_phone(self, profile_id: int) -> tuple[int, str | None] | None:
        """(database id, phone) of a profile; None if there is no such profile."""

    @abc.abstractmethod
    async def subscribe(self, resource_id: int, profile_id: int, phone: str) -> int:
        """Subscribe the profile's ``phone`` (E.164) to the resource, or re-subscribe it;
        returns 1 if anything changed, else 0."""

    @abc.abstractmethod
    async def unsubscribe_phone(
        self, resource_id: int, phone: str, *, profile_id: int | None = None,
        database_id: int | None = None,
    ) -> int:
        """Unsubscribe ``phone`` from the resource (only the profile's, or only in the
        database, if given); returns how many subscriptions changed."""


class SuppressionStore(abc.ABC):
    """Suppression lists and what they are attached to."""

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


class SegmentStore(abc.ABC):
    """Segments: static lists of profiles, and dynamic conditions judged when read.

    A dynamic segment's condition (``engine.segments.Condition``, dialect-free) is turned
    into SQL by the store, in its own dialect; what SQL cannot decide faithfully is left
    to ``Condition.residual``, row by row, a chunk at a time. Results equal ``{if ...}``
    on every store."""

    @abc.abstractmethod
    async def segment_id(self, name: str) -> tuple[int, int]:
        """(segment id, its database id) of segment ``name``; NotFound if absent."""

    @abc.abstractmethod
    async def create_segment(
        self, name: str, database_id: int, *, condition: str | None = None,
        profile_ids: Sequence[int] | None = None,
    ) -> SegmentRow:
        """A dynamic segment (``condition``, already checked to compile) or a static one
        (``profile_ids``, each checked to be a profile of the database). InputError for a
        taken name, or naming up to five ids that are not profiles of the database."""

    @abc.abstractmethod
    async def get_segment(self, name: str) -> SegmentRow:
        """NotFound if there is no segment named ``name``."""

    @abc.abstractmethod
    async def segment_by_id(self, segment_id: int) -> SegmentRow:
        """NotFound if there is no such segment."""

    @abc.abstractmethod
    async def segment_rows(self) -> list[SegmentRow]:
        """Every segment, by name."""

    @abc.abstractmethod
    def condition_plan(self, condition: Condition) -> ConditionPlan:
        """What this store's SQL decides of ``condition``, and what it leaves to Python."""

    @abc.abstractmethod
    async def count_segment(
        self, segment: SegmentRow, condition: Condition | None, now: Now
    ) -> int:
        """How many profiles the segment holds now (``condition``: a dynamic segment's,
        compiled; a static segment's is None)."""

    @abc.abstractmethod
    async def segment_sample(
        self, segment: SegmentRow, condition: Condition | None, now: Now, limit: int
    ) -> list[Member]:
        """The segment's first ``limit`` members by profile id, as of ``now``."""

    @abc.abstractmethod
    async def segment_page(
        self, segment: SegmentRow, condition: Condition | None, resource_id: int,
        after_id: int, limit: int, now: Now,
    ) -> tuple[list[AudienceRow], int | None]:
        """The segment's next profiles after ``after_id`` as ``audience_chunk`` reads
        them, and the last profile id scanned (None: nothing left). Up to ``limit``
        profiles are scanned; the rows may be fewer than ``limit``, or none, while more
        remain."""


class AudienceStore(abc.ABC):
    """The audience cursor's reads, and the per-chunk lookups of the hot path."""

    @abc.abstractmethod
    async def count_audience(self, source: AudienceSource) -> int:
        """How many profiles the source holds now (for a dynamic segment, its database's
        count: an upper bound, cheap to get). For progress, not for the log. It scans an
        index (80 ms for a million profiles on SQLite), so a run asks for it beside its
        first messages, not before them: the store must not hold the event loop meanwhile.
        """

    @abc.abstractmethod
    async def audience_bound(self, source: AudienceSource) -> int:
        """An upper bound on ``count_audience``, at once (a look at both ends of an
        index, no scan): what a run sizes its dedupe filter by before its first message.
        """

    @abc.abstractmethod
    async def audience_chunk(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int
    ) -> list[AudienceRow]:
        """Up to ``limit`` profiles with id > ``after_id``, in id order, each with its
        highest-priority active subscription of ``source.channel`` to the resource (phone,
        the address, None if none)."""

    @abc.abstractmethod
    async def audience_page(
        self, source: AudienceSource, resource_id: int, after_id: int, limit: int, now: float,
        *, condition: Condition | None = None,
    ) -> tuple[list[AudienceRow], int | None]:
        """The audience cursor's next page: up to ``limit`` rows as ``audience_chunk``
        reads them, and the id to continue after (None: the audience is read to its end).
        A dynamic segment is evaluated as of ``now`` with ``condition`` (its condition
        compiled with the workspace's template functions; when None, the store compiles
        the stored text with the built-in ones). Its page may hold fewer rows than
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


class RunStore(abc.ABC):
    """Mailings and their runs."""

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
        options: MailingOptions | None = None,
        next_launch: float | None = None,
    ) -> Mailing:
        """A mailing with no run yet: ``scheduled`` to launch at ``next_launch`` (seconds
        since the epoch) when given, else a ``draft``."""

    @abc.abstractmethod
    async def get_mailing(self, mailing_id: int) -> Mailing:
        """NotFound if absent."""

    @abc.abstractmethod
    async def list_mailings(self, limit: int = 100, *, documents: bool = True) -> list[Mailing]:
        """Newest first. ``documents=False`` leaves each ``document`` empty (a list that
        shows none should not decode up to ``[limits] document_bytes`` per mailing)."""

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
        options: MailingOptions | None = None,
    ) -> tuple[Mailing, Run]:
        """Create a broadcast mailing and its run, marked running by this process."""
        mailing = await self.create_mailing(
            name=name, kind="broadcast", resource=resource, source=source, template=template,
            limit=limit, document=document, policy=policy, options=options,
        )
        return mailing, await self.start_run(mailing.id)

    @abc.abstractmethod
    async def start_run(self, mailing_id: int, spec: RunSpec | None = None) -> Run:
        """A new run of the mailing, marked running by this process; ``spec`` says what it
        is for (a launch over the whole audience by default)."""

    @abc.abstractmethod
    async def set_launch(
        self, mailing_id: int, *, expect: float | None, next_launch: float | None,
        state: MailingState | None = None,
    ) -> bool:
        """Move the mailing's next launch from ``expect`` to ``next_launch`` (and its state
        to ``state``, if given), atomically, only if it is still ``expect`` and the mailing
        is not cancelled; whether it did. Of processes that saw one launch due, exactly
        one wins this, and it is the one that launches it."""

    @abc.abstractmethod
    async def set_mailing_state(self, mailing_id: int, state: MailingState) -> None:
        """Set the mailing's state; ``done``, ``cancelled`` and ``draft`` clear its next
        launch. NotFound if absent."""

    @abc.abstractmethod
    async def due_mailings(self, now: float) -> list[Mailing]:
        """The ``scheduled`` and ``waiting`` mailings whose next launch is at or before
        ``now``, soonest first."""

    @abc.abstractmethod
    async def next_due(self) -> float | None:
        """The soonest next launch of any mailing, if one is scheduled."""

    @abc.abstractmethod
    async def mailing_runs(self, mailing_id: int) -> list[Run]:
        """Every run of the mailing, oldest first."""

    @abc.abstractmethod
    async def get_run(self, run_id: int) -> tuple[Mailing, Run]:
        """The run and its mailing; NotFound if absent."""

    @abc.abstractmethod
    async def latest_run(self, mailing_id: int) -> Run | None:
        """The mailing's newest run, if any."""

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

    @abc.abstractmethod
    async def cancel_run(self, run_id: int) -> None:
        """Settle a stopped run for good: what was reserved and never handed over is
        skipped (reason ``cancelled``), what may have been is ``unknown``."""

    @abc.abstractmethod
    async def add_step(
        self, mailing_id: int, spec: RunSpec, *, after_run: int | None = None,
        at: float | None = None, kind: StepKind = "run",
    ) -> int:
        """Keep a launch's next step (``Step``): do ``kind`` with ``spec`` once run
        ``after_run`` is finished and time ``at`` has come (None: no such condition); its
        id. Kept in the store so that a process stopped mid-launch loses none of it."""

    @abc.abstractmethod
    async def start_run_then(
        self, mailing_id: int, spec: RunSpec, kind: StepKind, then: RunSpec,
    ) -> tuple[Run, int]:
        """``start_run`` and ``add_step(mailing_id, then, after_run=<the run>, kind=kind)``
        in one transaction (a process stopped between the two would lose the rest of
        its launch): the run, and the step's id."""

    @abc.abstractmethod
    async def pending_steps(self, now: float) -> list[Step]:
        """The steps due at ``now``: their ``after_run`` finished (or none) and their
        ``at`` at or before ``now`` (or none), oldest first. Seeing one is not taking it
        (``take_step``)."""

    @abc.abstractmethod
    async def take_step(self, step_id: int) -> bool:
        """Delete the step, atomically; whether this call did. Of processes that saw one
        step due, exactly one takes it, and it is the one that does it."""

    @abc.abstractmethod
    async def drop_steps(self, mailing_id: int) -> int:
        """Delete every step of the mailing (its launch was cancelled, or a run of it
        ended unfinished); how many there were."""


class JournalStore(abc.ABC):
    """The journal of reserved batches, and the recipients' rows."""

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
        lease: Lease | None = None,
        links: Sequence[tuple[int, int, str]] = (),
    ) -> set[int]:
        """Atomically: journal the (batch id, sender, messages) batches, record the skips,
        advance the checkpoint (and ``next_seq``, unless None) and add ``counts`` to the
        run's counters. The journal keeps each message's seq, profile and phone, not its
        text.

        ``links``: ``(slot link id, seq, url)`` of the URLs that came from data in these
        messages' texts (``TrackingStore.data_link_url`` answers them from now on). Written
        again for the same ``(link, seq)`` (a resume re-renders), the url is replaced.

        Returns the seqs of the messages refused as duplicates: their phone was already
        accepted in the run by another worker (the ``(run, phone)`` backstop of exact
        dedupe). They are recorded ``skipped``, reason ``duplicate``, counted under
        ``duplicate`` (not ``reserved``) and left out of the journal and of the policy
        history; the caller must not send them. Always empty with one process.

        ``lease``: the chunk of a cluster run this reserve belongs to. The checkpoint,
        ``next_seq`` and ``audience_done`` are then the chunk's, and LeaseLost (nothing
        written) if the lease was taken over. The same holds for ``mark_sending``,
        ``unmark_sending``, ``move_batch`` and ``record``."""

    @abc.abstractmethod
    async def mark_sending(
        self, run_id: int, batch: int, *, lease: Lease | None = None
    ) -> None:
        """The batch is about to be handed to its gateway (durably, before it is).

        Called once the batch has room in its sender's window, before it waits for the
        sender's pace (so that no commit lies between the pace's grant and the request):
        a batch marked ``sending`` may be at its gateway, and what a kill leaves marked is
        at most a window of messages per sender."""

    @abc.abstractmethod
    async def unmark_sending(
        self, run_id: int, batch: int, *, lease: Lease | None = None
    ) -> None:
        """The batch is back to merely reserved: its gateway certainly has none of what is
        still pending (it answered "not taken" for all of it)."""

    @abc.abstractmethod
    async def move_batch(
        self, run_id: int, batch: int, sender: str, *, lease: Lease | None = None
    ) -> None:
        """A journalled batch fails over to another sender (its messages keep their ids)."""

    @abc.abstractmethod
    async def record(
        self, run_id: int, batch: int, sender: str, messages: Sequence[Message],
        outcomes: Sequence[Outcome], keep: Sequence[Message] = (),
        keep_sending: bool = False, lease: Lease | None = None,
    ) -> None:
        """Atomically: write the batch's recipient rows and drop it from the journal.

        ``keep``: messages of the batch that are not settled and that no gateway has (a
        run stopped between two parts of a batch, or while waiting to retry what its
        gateway refused): the batch stays in the journal with just those, ``reserved``, for
        ``resume`` to send or ``cancel`` to record ``cancelled``. With ``keep_sending`` they
        stay marked ``sending`` instead (a gateway may have some: an ambiguous attempt that
        is to be retried).

        The same transaction adds to the event record a ``send_sms`` event per message
        recorded ``sent`` (``engine.core.events``), and to the report counters
        (``ReportStore``) the batch's recipients, sent (and their segments), failed and
        unknown, under its sender and the hour it is recorded in."""

    @abc.abstractmethod
    async def journal(self, run_id: int) -> list[JournalBatch]:
        """The run's reserved batches whose fate is not recorded, oldest first."""

    @abc.abstractmethod
    def recipient_phones(self, run_id: int, chunk: int = 5000) -> AsyncIterator[list[str]]:
        """The phones of the run's non-skipped recipients, in chunks (to rebuild dedupe)."""

    @abc.abstractmethod
    async def recipient_rows(self, run_id: int) -> list[RecipientRow]:
        """Every recipient row of the run, in seq order (inspection: tests, the CLI)."""

    @abc.abstractmethod
    async def run_summary(self, run_id: int) -> dict[str, dict[str, int]]:
        """Recipient counts by state, and by reason within each state."""


class ReceiptStore(abc.ABC):
    """Delivery receipts, kept until their message is recorded."""

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
        receipt applied twice moves nothing. ``now``: the clock (tests).

        Each receipt that moves a recipient (now, or later when its message is recorded)
        adds a ``deliv_sms`` or ``undeliv_sms`` event (the latter with the provider's
        ``error``) and counts under ``delivered`` or ``undelivered`` (with its reason,
        ``engine.core.events.normalise_reason``) in the hour it is applied."""


class PolicyStore(abc.ABC):
    """The message history sending policies count."""

    @abc.abstractmethod
    async def policy_counts(
        self, policy: Policy, resource_id: int, keys: Sequence[int | str], now: float,
        *, channel_resources: Sequence[int] | None = None,
    ) -> dict[int | str, int]:
        """Messages counted under ``policy`` in its window ending today, per profile id
        (or per E.164 phone, or email address, for ``contact`` scope); keys with none are
        left out. Messages count from the moment they are reserved.

        ``channel_resources`` are the ids of the resources of the mailing's channel, which
        ``profile_channel`` scope counts (None: every resource's, as ``profile``)."""


class TriggerStore(abc.ABC):
    """The queue of a trigger mailing."""

    @abc.abstractmethod
    async def enqueue_triggers(
        self, mailing_id: int, run_id: int, items: Sequence[tuple[int, bytes, str | None]],
        *, custom_data: Sequence[bytes | None] | None = None,
    ) -> list[tuple[int, bool]]:
        """Queue (profile id, JSON content, idempotency key) items of a trigger mailing in
        one transaction; for each, its message's seq and whether the key was seen before
        (then nothing is queued and the first seq is returned). ``custom_data``, one per
        item (JSON or None), is kept with the message for the action hooks
        (``HookEvent.custom_data``)."""

    @abc.abstractmethod
    async def trigger_chunk(
        self, run_id: int, resource_id: int, after_id: int, limit: int
    ) -> list[TriggerRow]:
        """Up to ``limit`` queued triggers of the run after queue id ``after_id``, in queue
        order, each with its profile and the profile's best active subscription to the
        resource (``phone`` None if none). Calls held for quiet hours (``hold_triggers``)
        are left out: ``held_triggers`` reads them back when they are due."""

    @abc.abstractmethod
    async def hold_triggers(self, run_id: int, held: Sequence[tuple[int, float]]) -> None:
        """Hold (queue id, not before) calls of the run: their recipient is in their quiet
        hours. ``trigger_chunk`` reads them no more, whether the checkpoint passed them or
        not; ``held_triggers`` hands them back once their time has come. Held again (still
        quiet when released), the new time replaces the old."""

    @abc.abstractmethod
    async def held_triggers(
        self, run_id: int, resource_id: int, now: float, limit: int
    ) -> list[TriggerRow]:
        """Up to ``limit`` held calls of the run whose time is ``now`` or before, soonest
        first, not released and not recorded as recipients (a release that a crash cut
        short between the reserve and ``release_triggers``); read as ``trigger_chunk``
        reads. The caller leaves out the seqs still in the run's journal."""

    @abc.abstractmethod
    async def release_triggers(self, run_id: int, queue_ids: Sequence[int]) -> None:
        """Held calls that are reserved now (or recorded): never handed back again."""


class ApiTokenStore(abc.ABC):
    """The API's bearer tokens, kept as SHA-256 digests (``engine.api.tokens``)."""

    @abc.abstractmethod
    async def add_token(
        self, *, role: str, digest: str, name: str | None = None, group: str | None = None,
        created_at: float,
    ) -> TokenRow:
        """Keep a new token's record."""

    @abc.abstractmethod
    async def token_row(self, token_id: int) -> TokenRow | None:
        """The token's record, revoked or not."""

    @abc.abstractmethod
    async def token_rows(self) -> list[TokenRow]:
        """Every token's record, revoked ones too, oldest first."""

    @abc.abstractmethod
    async def revoke_token(self, token_id: int, at: float) -> TokenRow | None:
        """Stamp ``revoked_at`` (revoking twice keeps the first time); None if absent."""

    @abc.abstractmethod
    async def live_token(self, digest: str) -> TokenRow | None:
        """The unrevoked token with this digest, if any."""


#: How a gallery listing is ordered: by upload time, by name (ASCII case folded), by size.
GallerySort = Literal["date", "name", "size"]


class DirectoryRow(NamedTuple):
    """A gallery directory; ``parent_id`` None is the root."""

    id: int
    name: str
    parent_id: int | None
    created_at: float


class ImageRow(NamedTuple):
    """A gallery image's metadata; its bytes and thumbnail are blobs named by sha256."""

    id: int
    name: str
    directory_id: int | None
    sha256: str
    thumb_sha256: str
    #: The URL's last segment, fixed at upload (a rename keeps the URL).
    url_name: str
    format: str
    size: int
    width: int
    height: int
    created_at: float
    #: Sorted by code point.
    tags: list[str]


class NewImage(NamedTuple):
    """An image to add: its blobs are stored already."""

    name: str
    directory_id: int | None
    sha256: str
    thumb_sha256: str
    url_name: str
    format: str
    size: int
    width: int
    height: int
    created_at: float
    tags: Sequence[str]


class ImageQuery(NamedTuple):
    """Which images ``gallery_images`` lists: those matching every filter set."""

    #: In their name or one of their tags, ASCII case folded.
    q: str | None = None
    #: Tagged exactly this.
    tag: str | None = None
    #: Added at or after this time.
    since: float | None = None
    #: Only the images of ``directory_id`` (None: the root's).
    in_directory: bool = False
    directory_id: int | None = None
    sort: GallerySort = "date"
    desc: bool = True
    limit: int = 1000


class GalleryDeleted(NamedTuple):
    """What a gallery deletion removed."""

    images: int
    #: Blob digests no image refers to any more: the caller deletes the blobs.
    orphans: frozenset[str]


class GalleryStore(abc.ABC):
    """The image gallery's metadata (directories, images, tags); the bytes are in a
    ``engine.gallery.blobs.BlobStore``. Names and tags come checked (``engine.gallery``).

    Directory names are unique among siblings; "ASCII case folded" is SQLite's NOCASE (and
    its ``lower``): A-Z fold, every other character compares as it is, by code point."""

    @abc.abstractmethod
    async def gallery_directory(self, directory_id: int) -> DirectoryRow:
        """NotFound ``no directory {id}`` if absent."""

    @abc.abstractmethod
    async def gallery_directories(
        self, parent_id: int | None = None, *, q: str | None = None,
        sort: GallerySort = "name", desc: bool = False,
    ) -> list[DirectoryRow]:
        """The children of ``parent_id`` (None: the root's); with ``q``, every directory
        whose name holds it (ASCII case folded). By ``sort`` (``size`` is by name), then id."""

    @abc.abstractmethod
    async def create_gallery_directory(
        self, name: str, parent_id: int | None, *, now: float
    ) -> DirectoryRow:
        """Atomically: NotFound if the parent is absent, StoreError ``a directory named
        'x' already exists there`` if a sibling has the name, else the new directory."""

    @abc.abstractmethod
    async def update_gallery_directory(
        self, directory_id: int, *, name: str | None = None, parent_id: int | None = None,
        move: bool = False,
    ) -> DirectoryRow:
        """Atomically rename (``name``) and/or move under ``parent_id`` (``move``; None: the
        root). NotFound for an absent directory or parent; InputError (``parent_id: ...``)
        for a move into itself or below; StoreError for a name taken by a new sibling."""

    @abc.abstractmethod
    async def delete_gallery_directory(self, directory_id: int) -> GalleryDeleted:
        """Delete a directory with its subdirectories and their images; NotFound if it is
        absent."""

    @abc.abstractmethod
    async def gallery_image(self, image_id: int) -> ImageRow | None:
        """The image with its tags, if any."""

    @abc.abstractmethod
    async def gallery_image_by_digest(self, sha256: str) -> ImageRow | None:
        """The oldest image with this content, if any."""

    @abc.abstractmethod
    async def gallery_images(self, query: ImageQuery) -> list[ImageRow]:
        """Up to ``query.limit`` images matching it, by ``query.sort`` (name: ASCII case
        folded) ascending or ``desc``, then id ascending."""

    @abc.abstractmethod
    async def add_gallery_image(self, image: NewImage) -> ImageRow:
        """Atomically: NotFound if its directory is absent, else the image and its tags."""

    @abc.abstractmethod
    async def update_gallery_image(
        self, image_id: int, *, name: str | None = None, directory_id: int | None = None,
        move: bool = False, add_tags: Sequence[str] = (), remove_tags: Sequence[str] = (),
    ) -> ImageRow:
        """Atomically rename, move (``move``; None: the root), untag then tag; NotFound
        ``no image {id}`` or ``no directory {id}``. The image as it is after."""

    @abc.abstractmethod
    async def delete_gallery_images(self, image_ids: Sequence[int]) -> GalleryDeleted:
        """Delete the images (unknown ids are ignored)."""


class ClusterStore(abc.ABC):
    """Chunks of cluster runs, leased by workers; and the workers themselves.

    Only a store that several processes share implements it (PostgreSQL); the SQLite
    store raises StoreError("a cluster needs PostgreSQL"). Times are the database
    server's clock, so workers on machines whose clocks differ agree on leases."""

    @abc.abstractmethod
    async def create_chunks(self, run_id: int, source: AudienceSource, *, size: int) -> int:
        """Cut the run's audience into chunks of about ``size`` profiles (ranges of
        profile ids, the last one open-ended so profiles added meanwhile are read too);
        returns how many. A run that has chunks keeps them (resume, a second call)."""

    @abc.abstractmethod
    async def claim_chunk(
        self, worker: str, ttl: float, *, run_id: int | None = None
    ) -> Lease | None:
        """Lease a chunk for ``ttl`` seconds: a pending chunk of a running run (of
        ``run_id`` only, if given), or one whose lease expired (taken over: its fence goes
        up, so its old owner can write nothing more). None if there is none. Uses
        ``FOR UPDATE SKIP LOCKED``: any number of workers claim at once."""

    @abc.abstractmethod
    async def renew_lease(self, lease: Lease, ttl: float) -> bool:
        """Extend the lease by ``ttl`` seconds from now; False if it was taken over."""

    @abc.abstractmethod
    async def release_chunk(self, lease: Lease, *, done: bool) -> bool:
        """Give the chunk up: ``done`` (its audience is read and none of its batches is
        journalled any more) or back to pending for any worker (a pause, a stop). Returns
        True when this made every chunk of the run done. LeaseLost if taken over."""

    @abc.abstractmethod
    async def chunks(self, run_id: int) -> list[ChunkRow]:
        """The run's chunks, in order."""

    @abc.abstractmethod
    async def worker_heartbeat(
        self, worker: str, *, host: str, pid: int, chunks: int, ttl: float
    ) -> None:
        """Say the worker is alive (and holds ``chunks`` leases); rows of workers not
        heard from for ``ttl`` seconds are dropped by whoever calls this."""

    @abc.abstractmethod
    async def workers(self) -> list[WorkerRow]:
        """The live workers, oldest first."""


# -- the tracking domain: links, clicks, unsubscribes; the event record; reports ------------


class LinkRow(NamedTuple):
    """A run's short link target. ``url`` None: a data slot, whose URL is each message's
    own (``TrackingStore.data_link_url``)."""

    id: int
    run_id: int
    url: str | None
    #: The seq that a code's second number counts from: codes carry ``seq - seq_base``
    #: (``engine.core.codes`` has 29 bits for it, and a cluster chunk's seqs start at
    #: ``k * 2**32 + 1``). A multiple of ``engine.core.codes.MAX_VALUE``; 0 but in a
    #: cluster chunk past the first.
    seq_base: int = 0


class Click(NamedTuple):
    """A click on a short link, as the tracking domain saw it."""

    link_id: int
    seq: int
    at: float
    ip: str | None
    user_agent: str | None
    #: A crawler or a link-preview bot: kept, never counted or made an event.
    bot: bool


class ClickReport(NamedTuple):
    #: Clicks written (people and bots).
    recorded: int
    #: People's clicks that were their recipient's first on that link.
    unique: int
    #: Clicks on a (link, seq) with no recipient recorded in the link's run: dropped.
    unknown: int


class Open(NamedTuple):
    """An email's open, as the tracking domain saw its pixel fetched
    (``{base}/o/{code}``)."""

    run_id: int
    seq: int
    at: float
    ip: str | None
    user_agent: str | None
    #: A crawler: kept, never counted or made an event.
    bot: bool
    #: A mail privacy proxy's prefetch (Apple Mail Privacy Protection): kept, flagged,
    #: never counted as the recipient's open or made an event.
    prefetch: bool = False


class OpenReport(NamedTuple):
    #: Opens written (people, bots and prefetches).
    recorded: int
    #: People's opens that were their message's first (``uopen``).
    unique: int
    #: Opens of a (run, seq) with no recipient recorded: dropped.
    unknown: int


class BounceReport(NamedTuple):
    """What ``TrackingStore.apply_bounces`` did."""

    #: Subscriptions made ``hardbounced``.
    hardbounced: int
    #: Soft bounces recorded (``sbounce`` events; no status changes).
    soft: int
    #: Subscriptions made ``complainer`` (their address is suppressed as well).
    complainers: int
    #: Bounces that matched no recipient of Herald's (kept nowhere).
    unknown: int


class RecipientRef(NamedTuple):
    """Who a (run, seq) of a sent message is: what an unsubscribe page needs."""

    run_id: int
    seq: int
    mailing_id: int
    #: The mailing's resource (its config name).
    resource: str
    profile_id: int
    phone: str
    database_id: int
    #: Whether the recipient's profile has an active subscription to ``resource`` (of the
    #: run's channel).
    subscribed: bool


class EventRow(NamedTuple):
    """One event of the record, in the order events happened (``id`` grows)."""

    id: int
    #: ``engine.core.events.EventKind``.
    kind: str
    at: float
    mailing_id: int | None
    run_id: int | None
    seq: int | None
    profile_id: int | None
    phone: str
    #: The message id (``{run uid}-{seq}``), None for a STOP reply with no message.
    message_id: str | None
    sender: str | None
    #: The provider's error (``undeliv_sms``).
    error: str | None
    #: The short link's target (``click_sms``, ``uclick_sms``).
    url: str | None


class EventPosition(NamedTuple):
    """Where an event lies in the order hooks deliver the record in: ``(txid, id)``.

    On SQLite writers take turns, so ids grow in commit order and ``txid`` is always 0.
    On PostgreSQL an id is given at insert and transactions commit out of id order, so a
    reader paging by id alone could pass an event that commits later with a smaller id:
    there ``txid`` is the writing transaction's id (``xid8``), and hooks read only events
    whose every earlier writer has ended (``txid`` under the snapshot's ``xmin``), in
    ``(txid, id)`` order."""

    txid: int
    id: int


#: Before every event: a hook's cursor that has delivered nothing.
ORIGIN: EventPosition = EventPosition(0, 0)


class HookEvent(NamedTuple):
    """One event of the record with what an action hook's message says of it (its
    mailing, resource, database and the trigger call's ``custom_data``), in delivery
    order (``position``)."""

    position: EventPosition
    #: ``engine.core.events.EventKind``, or ``import_file`` / ``import_api``.
    kind: str
    at: float
    #: The run is a test send (``mailing test``).
    is_test: bool
    mailing_id: int | None
    run_id: int | None
    seq: int | None
    #: ``{run uid}-{seq}``; None for an event with no message (a STOP reply to none, an
    #: import).
    message_id: str | None
    profile_id: int | None
    #: The profile's database (Altcraft's ``list_id``), by id and name: a message's
    #: mailing's, else the profile's; an import event's, the database it imported into.
    database_id: int | None
    database: str | None
    #: The mailing's resource, by its numeric id (as ``/api/v1/resources`` lists it) and
    #: its config name.
    resource_id: int | None
    resource: str | None
    phone: str
    sender: str | None
    #: The provider's error (``undeliv_sms``).
    error: str | None
    #: The link's target (``click_sms``, ``uclick_sms``).
    url: str | None
    #: The trigger call's ``custom_data``, as JSON (None when the call gave none).
    custom_data: bytes | None
    #: What an import event says (its counts, file name...), as a JSON object.
    data: bytes | None


class HookState(NamedTuple):
    """A hook's row: how far it has delivered, and which process delivers it."""

    name: str
    cursor: EventPosition
    #: The process holding the hook's lease ("" when none), and until when (the store's
    #: clock, seconds since the epoch).
    owner: str
    lease_until: float
    #: The last failure's text ("" after a success), and when the failing batch first
    #: failed (None when nothing is failing).
    last_error: str
    failing_since: float | None
    #: Events delivered since the hook was first seen.
    delivered: int


class DeadLetter(NamedTuple):
    """A batch a hook gave up on after ``max_age``: the events in ``(after, upto]`` (the
    hook's filters apply again on replay)."""

    id: int
    hook: str
    after: EventPosition
    upto: EventPosition
    #: Events of the batch (after the hook's filters).
    events: int
    error: str
    first_failed: float
    at: float


#: How the channel report groups its counts.
#: ``variant``: the run's ``spec.variant`` (1-based in the report; multivariate mailings).
Grouping = Literal["day", "hour", "mailing", "resource", "sender", "variant"]


class ReportFilter(NamedTuple):
    """What a report covers: mailings (any if empty), a resource, a time range (events
    at ``since <= at < until``, seconds since the epoch) and a channel (the mailings'
    ``Mailing.source.channel``: ``sms`` or ``email``; any if None)."""

    mailings: tuple[int, ...] = ()
    resource: str | None = None
    since: float | None = None
    until: float | None = None
    channel: str | None = None


class ChannelRow(NamedTuple):
    """Counts of the channel report for one key of its grouping."""

    #: ``by="day"``: "YYYY-MM-DD" (UTC); ``"hour"``: "YYYY-MM-DDTHH:00Z"; ``"mailing"``:
    #: the mailing id; ``"resource"``, ``"sender"``: the name; ``None``: no grouping (one
    #: row, all of it).
    key: str | int | None
    recipients: int
    sent: int
    delivered: int
    undelivered: int
    failed: int
    unknown: int
    segments: int
    clicks: int
    unique_clicks: int
    unsubscribed: int
    #: Profiles held out in a control group (``--control``, a database's control_group).
    control: int = 0
    #: Email only: people's opens (``open``) and first opens of a message (``uopen``),
    #: hard and soft bounces (``hbounce``, ``sbounce``) and complaints (``complain``).
    opens: int = 0
    unique_opens: int = 0
    hard_bounced: int = 0
    soft_bounced: int = 0
    complaints: int = 0


class LinkStat(NamedTuple):
    url: str
    clicks: int
    #: Distinct recipients who clicked this URL.
    unique_clicks: int


class TrackingStore(abc.ABC):
    """Short links of runs, the clicks on them, and unsubscribes from their messages."""

    @abc.abstractmethod
    async def tracking_secret(self) -> bytes:
        """32 random bytes made on the first call and the same ever after, for every
        process on this store: the key of ``engine.core.codes``."""

    @abc.abstractmethod
    async def ensure_links(
        self, run_id: int, urls: Sequence[str], slots: int, *, seq_base: int = 0
    ) -> list[LinkRow]:
        """The run's links for the seqs from ``seq_base`` (a multiple of
        ``engine.core.codes.MAX_VALUE``): one per template URL of ``urls`` (in that
        order), then ``slots`` data slots (``url`` None). Made on the first call for that
        (run, seq_base); any later one (a resume, another worker) returns the same rows,
        whatever it asks. Each seq_base has rows of its own: a code carries ``seq -
        link.seq_base``, and the first row is the anchor of the unsubscribe codes of
        those seqs. Everything else (``data_link_url``, ``Click``, ``reserve(links=...)``)
        takes the real seq."""

    @abc.abstractmethod
    async def link(self, link_id: int) -> LinkRow | None:
        """The link row ``link_id`` (with its ``seq_base``), None if there is none."""

    @abc.abstractmethod
    async def data_link_url(self, link_id: int, seq: int) -> str | None:
        """The URL of data slot ``link_id`` in message ``seq`` (``reserve(links=...)``)."""

    @abc.abstractmethod
    async def add_clicks(self, clicks: Sequence[Click]) -> ClickReport:
        """One transaction: write the clicks. Each person's click (not ``bot``) adds a
        ``click_sms`` event with the link's URL and counts under ``clicks``; the first of
        its (link, seq) also adds ``uclick_sms`` and counts under ``unique_clicks``. They
        count under the recipient's sender, in the hour of the click."""

    @abc.abstractmethod
    async def recipient_ref(self, run_id: int, seq: int) -> RecipientRef | None:
        """The recipient of message ``seq`` of the run, if it was recorded (not skipped)."""

    @abc.abstractmethod
    async def unsubscribe_recipient(
        self, run_id: int, seq: int, *, everywhere: bool = False, at: float
    ) -> int:
        """Unsubscribe the recipient of message ``seq``: its profile's subscriptions
        of the run's channel to the run's resource, or with ``everywhere`` to every resource
        (of the profile's database). One transaction, with an ``unsub_sms`` event (``unsub``
        on email) and an ``unsubscribed`` count when anything changed. Returns the
        subscriptions changed (0: already unsubscribed, or no such recipient)."""

    @abc.abstractmethod
    async def unsubscribe_reply(
        self, phone: str, resource_ids: Sequence[int], *, at: float
    ) -> int:
        """A STOP reply from ``phone`` (E.164): unsubscribe every subscription with that
        phone to any of the resources, whatever its profile. Each profile unsubscribed
        adds an ``unsub_sms`` event, credited (with an ``unsubscribed`` count) to the last
        message sent to the phone on one of the resources, if any. Returns the
        subscriptions changed."""


    @abc.abstractmethod
    async def add_opens(self, opens: Sequence[Open]) -> OpenReport:
        """One transaction: write the opens. Each person's open (not ``bot``, not
        ``prefetch``) adds an ``open`` event and counts under ``opens``; the first of
        its (run, seq) also adds ``uopen`` and counts under ``unique_opens``. They count
        under the recipient's sender, in the hour of the open. An open of a (run, seq)
        with no recipient recorded is dropped (``unknown``)."""

    @abc.abstractmethod
    async def apply_bounces(
        self, bounces: Sequence[Bounce], resource_ids: Sequence[int], *, at: float
    ) -> BounceReport:
        """One transaction: apply bounces and complaints (their ``email`` normalised,
        ``engine.core.emails``) that came for email ``resource_ids``.

        Each is credited to its message: the one its ``id`` names (``{run uid}-{seq}``)
        when recorded, else the last message sent to the address on one of the
        resources. ``hard``: every subscription with that address to one of the
        resources becomes ``hardbounced``, with an ``hbounce`` event (``error``) and a
        ``hard_bounced`` count. ``soft``: an ``sbounce`` event and a ``soft_bounced``
        count, no status change. ``complaint``: the subscriptions become
        ``complainer``, the address joins the global suppression list ``complaints``
        (kind ``email``; lowercased, as lists hold addresses), with a ``complain`` event
        and a ``complaints`` count. A bounce of neither a recorded message nor a
        subscribed address is ``unknown``. The same report twice changes nothing more (no
        second event)."""


class EventStore(abc.ABC):
    """The event record: what hooks deliver (through their own cursors) and tests read."""

    @abc.abstractmethod
    async def events(
        self, *, after: int = 0, limit: int = 1000, run_id: int | None = None
    ) -> list[EventRow]:
        """Events with ``id > after``, oldest first, at most ``limit`` (of one run only,
        if given)."""


class HookStore(abc.ABC):
    """Action hooks' outbox: a cursor per hook over the event record, a lease so that one
    process at a time delivers each hook, and the dead letters.

    Delivery is at least once: a deliverer reads a batch after its cursor, sends it, and
    only then advances the cursor (fenced by its lease), so a process that dies between
    the two sends that batch again. Times are the store's clock (the database server's
    on PostgreSQL)."""

    @abc.abstractmethod
    async def record_import_event(
        self, kind: str, at: float, database_id: int, data: bytes
    ) -> None:
        """Add a finished import's event (``import_file``, ``import_api``) to the record:
        ``data`` is a JSON object (its counts)."""

    @abc.abstractmethod
    async def hook_events(
        self, after: EventPosition, limit: int, *, upto: EventPosition | None = None
    ) -> list[HookEvent]:
        """At most ``limit`` events after ``after`` (and at or before ``upto``), in
        delivery order. Never an event that a writer still open could precede: on
        PostgreSQL only events below the snapshot's ``xmin`` (``EventPosition``)."""

    @abc.abstractmethod
    async def events_at(self, since: float) -> EventPosition:
        """The position just before the first event at ``since`` or later (for a replay
        from a time): events are recorded in time order, near enough."""

    @abc.abstractmethod
    async def claim_hook(
        self, name: str, owner: str, ttl: float
    ) -> HookState | None:
        """Take or renew the lease on hook ``name`` for ``ttl`` seconds: granted when it is
        free, expired, or ``owner``'s already. A hook not seen before starts at the end
        of the record (it delivers what happens from now on). None when another owner
        holds it."""

    @abc.abstractmethod
    async def advance_hook(
        self, name: str, owner: str, cursor: EventPosition, delivered: int
    ) -> bool:
        """Move the hook's cursor to ``cursor`` (never back), add ``delivered`` to its
        count and clear its failure, if ``owner`` still holds its lease; False (and
        nothing written) when the lease was lost."""

    @abc.abstractmethod
    async def fail_hook(
        self, name: str, owner: str, error: str, first_failed: float
    ) -> bool:
        """Note the hook's failure (shown by ``herald hooks status``), if ``owner`` holds
        its lease; False when it was lost."""

    @abc.abstractmethod
    async def release_hook(self, name: str, owner: str) -> None:
        """Give the lease up (on shutdown), so another process takes it at once."""

    @abc.abstractmethod
    async def hook_states(self) -> list[HookState]:
        """Every hook ever seen, by name."""

    @abc.abstractmethod
    async def dead_letter(
        self, name: str, owner: str, letter: DeadLetter
    ) -> bool:
        """In one transaction: keep ``letter`` (its ``id`` is ignored) and move the hook's
        cursor past it (to ``letter.upto``), if ``owner`` holds the lease; False when the
        lease was lost (nothing written)."""

    @abc.abstractmethod
    async def dead_letters(self, name: str | None = None) -> list[DeadLetter]:
        """The dead letters (of one hook, if given), oldest first."""

    @abc.abstractmethod
    async def drop_dead_letters(self, ids: Sequence[int]) -> None:
        """Forget dead letters that were delivered again (``herald hooks replay``)."""


class ReportStore(abc.ABC):
    """Counters kept as events arrive, per (run, sender, hour): reports read them, so a
    report over a mailing of millions of recipients answers in milliseconds."""

    @abc.abstractmethod
    async def report_channel(
        self, where: ReportFilter, by: Grouping | None = None,
    ) -> list[ChannelRow]:
        """The counts by ``by``, in key order (one row with key None when ``by`` is None;
        none at all when nothing matches)."""

    @abc.abstractmethod
    async def report_undeliveries(self, where: ReportFilter) -> list[tuple[str, int]]:
        """(normalised reason, undeliveries), most first, then by reason."""

    @abc.abstractmethod
    async def report_clicks(self, where: ReportFilter) -> list[LinkStat]:
        """People's clicks (not bots) per URL, most unique clicks first, then by URL."""



class Store(
    ProfileStore, SubscriptionStore, SuppressionStore, SegmentStore, AudienceStore,
    RunStore, JournalStore, ReceiptStore, PolicyStore, TriggerStore, ApiTokenStore,
    GalleryStore, ClusterStore, TrackingStore, EventStore, HookStore, ReportStore,
):
    """Everything Herald persists, by role. ``url`` names the database (without a
    password)."""

    url: str = ""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close connections."""
