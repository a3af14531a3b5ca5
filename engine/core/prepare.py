"""Turning a chunk of audience rows into messages and skips: the per-message core.

A chunk goes through two synchronous calls with one batched lookup between them::

    plan = preparer.screen(rows)                  # eligibility, E.164, bloom screening
    suppressed, seen = store.lookup(plan)         # the shell's I/O, once per chunk
    batch = preparer.finish(plan, suppressed, seen, now)

``finish`` decides each row's fate in this order: no active subscription (not a recipient,
only counted), invalid phone, suppressed, duplicate, over the policy, in a control group
(``control``), then render and measure: a text that is empty or only whitespace is skipped
as ``empty``, the rest are routed, and a text over its sender's segment cap is skipped as
``too_long``. The rest become messages with a run-wide sequence number; their id is
``{run_uid}-{seq}`` and never changes afterwards.

A run that takes a share of its mailing's audience (``engine.core.groups``: a multivariate
mailing's test and winner runs) drops the other profiles in ``screen``, before anything
else: they are no part of the run (not received, not found, not recorded), only counted as
``other_share``. A wave of a launch (``engine.core.localtime``: the recipients' local time,
quiet hours) drops the same way the profiles whose send time is outside its window, after
the share: counted as ``later`` (and by send time, for the next wave) or ``earlier``. Only
such a run decodes each profile's ``_tz``. A trial run (``mailing test``: ``trial=True``)
renders each row as given, with no dedupe, no policy and no control group; a suppressed
phone is still suppressed.

Where the run's resource has a tracking domain, the shell hands the Preparer a
:class:`~engine.core.links.Shortener` (:meth:`Preparer.track`): each text's links are
shortened right after rendering, so emptiness, segments and ``too_long`` are judged on the
text that is sent, and the URLs from data that took a link slot come back in
``PreparedBatch.links`` for the shell to reserve with the messages.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence, Set
from typing import Any, NamedTuple, Protocol

import msgspec

from engine.core.dedupe import Dedupe, Screen
from engine.core.groups import CONTROL, Groups
from engine.core.links import DataLink, Shortener
from engine.core.localtime import EARLIER, LATER, SendTimes, later_key, profile_zone
from engine.core.policy import Policy, over_limit
from engine.core.states import Skip

__all__ = [
    "AudienceRow",
    "Message",
    "Plan",
    "PreparedBatch",
    "Preparer",
    "QueuedTrigger",
    "Renderer",
    "Skipped",
]

_json_decode = msgspec.json.Decoder(dict[str, Any]).decode


class AudienceRow(NamedTuple):
    """One profile as the audience cursor reads it, with its best active subscription."""

    profile_id: int
    fields: bytes | str | None
    #: The chosen subscription's phone as stored (None: no active subscription).
    phone: str | None
    sub_fields: bytes | str | None = None


class QueuedTrigger(Protocol):
    """A queued trigger as the store reads it (``engine.store.base.TriggerRow``)."""

    @property
    def queue_id(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def profile_id(self) -> int: ...
    @property
    def fields(self) -> bytes | str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def sub_fields(self) -> bytes | str | None: ...
    @property
    def content(self) -> bytes | None: ...


class Message(NamedTuple):
    seq: int
    id: str
    profile_id: int
    phone: str
    sender: str
    text: str
    segments: int
    encoding: str = "gsm7"


class Skipped(NamedTuple):
    seq: int
    profile_id: int
    phone: str
    reason: str


class Normaliser(Protocol):
    """Turns an address as written into the channel's form (E.164, a normalised email),
    or None when it is none (``PhoneNormaliser``, ``EmailNormaliser``)."""

    def normalise(self, raw: str) -> str | None: ...


class Renderer(Protocol):
    roots: frozenset[str]

    def render(self, ctx: Mapping[str, Any]) -> str: ...


class Plan(NamedTuple):
    rows: Sequence[AudienceRow]
    #: Index into rows of each row that has an active subscription.
    subscribed: list[int]
    #: E.164 phone per subscribed row, None when invalid.
    phones: list[str | None]
    #: Valid phones in subscribed order, and which subscribed position each came from.
    valid: list[str]
    valid_at: list[int]
    screen: Screen
    #: The last profile id of the chunk as read, when the run's share dropped rows of it
    #: (``rows`` then holds only the run's), and the ids it dropped, in order.
    last_id: int | None = None
    others: Sequence[int] = ()
    #: The ids a wave's window dropped, in order, with their send time (None: an
    #: earlier wave's).
    later: Sequence[tuple[int, float | None]] = ()

    def maybe_seen(self) -> list[str]:
        return [self.valid[i] for i in self.screen.maybe]


class PreparedBatch(NamedTuple):
    messages: list[Message]
    skipped: list[Skipped]
    #: The last profile id this call settled (the run's resume point).
    checkpoint: int
    #: True when the run's limit was reached inside this chunk.
    limit_reached: bool
    counts: dict[str, int]
    #: ``(slot link id, seq, url)`` of the URLs from data of these messages that were
    #: shortened (``JournalStore.reserve(links=...)``).
    links: Sequence[DataLink] = ()


class Preparer:
    """Per-run state of the prepare stage: sequence numbers, dedupe, counters, limit."""

    #: The skip reason of an address the normaliser refuses.
    invalid_reason: str = Skip.INVALID_PHONE

    def __init__(
        self,
        *,
        run_uid: str,
        run_id: int = 0,
        normaliser: Normaliser,
        dedupe: Dedupe,
        template: Renderer,
        measure: Callable[[str], Any],
        route: Callable[[str, float], str],
        max_segments: Mapping[str, int],
        context: Mapping[str, Any],
        next_seq: int = 1,
        limit: int | None = None,
        reserved: int = 0,
        policy: Policy | None = None,
        shortener: Shortener | None = None,
        groups: Groups | None = None,
        trial: bool = False,
    ) -> None:
        self.run_uid = run_uid
        self.run_id = run_id
        self.normaliser = normaliser
        self.dedupe = dedupe
        self.template = template
        #: Whether each rendered text must be looked at for being blank (not when the
        #: template has literal text of its own).
        self._check_blank = not getattr(template, "never_blank", False)
        self.measure = measure
        self.route = route
        self.max_segments = max_segments
        self.context = dict(context)
        self.next_seq = next_seq
        self.limit = limit
        #: Messages reserved so far in this run (counts against ``limit``).
        self.reserved = reserved
        #: The sending policy in force for this mailing, if any (never for a trial).
        self.policy = None if trial else policy
        #: A ``mailing test`` run: every row is a message, no dedupe, no control group.
        self.trial = trial
        #: The run's share of the audience and its control groups (None: all, none).
        self.groups: Groups | None = None
        self.use_groups(groups)
        #: A wave's window of send times and how each profile's is found (None: all).
        self.window: tuple[float, float] | None = None
        self.send_times: SendTimes | None = None
        self._needs_lead = "lead" in template.roots
        self._needs_sub = "subscription" in template.roots
        self._resource_id = self.context.get("resource", {}).get("id")
        #: Rewrites each text's links on the tracking domain (None: no tracking domain).
        self.shortener: Shortener | None = None
        if shortener is not None:
            self.track(shortener)

    def track(self, shortener: Shortener) -> None:
        """Shorten every text rendered from now on with ``shortener``, and render the
        unsubscribe functions as its per-recipient links."""
        self.shortener = shortener
        self.context["resource"] = {**self.context.get("resource", {}),
                                    **shortener.resource_fields}

    def use_groups(self, groups: Groups | None) -> None:
        """Take only ``groups``' share of the rows from now on, and hold its control
        groups out (a trial takes neither)."""
        self.groups = None if self.trial or groups is None or not (
            groups.shared or groups.controls) else groups

    @property
    def limit_reached(self) -> bool:
        return self.limit is not None and self.reserved >= self.limit

    def use_window(self, window: tuple[float, float] | None,
                   send_times: SendTimes | None) -> None:
        """Take only the profiles whose send time (``send_times``, from each profile's
        ``_tz``) falls in ``window`` = ``(after, until]`` from now on: a wave of a launch
        (``engine.core.localtime``). None: every profile (a trial takes all)."""
        self.window = None if self.trial or window is None or send_times is None \
            else window
        self.send_times = send_times if self.window is not None else None

    def screen(self, rows: Sequence[AudienceRow]) -> Plan:
        last_id: int | None = None
        others: list[int] = []
        later: list[tuple[int, float | None]] = []
        groups = self.groups
        if groups is not None and groups.shared and rows:
            last_id = rows[-1][0]
            in_share = groups.in_share
            kept = []
            for row in rows:
                if in_share(row[0]):
                    kept.append(row)
                else:
                    others.append(row[0])
            rows = kept
        if self.window is not None and self.send_times is not None:
            if last_id is None and rows:
                last_id = rows[-1][0]
            rows = self._in_window(rows, self.window, self.send_times, later)
        normalise = self.normaliser.normalise
        subscribed: list[int] = []
        phones: list[str | None] = []
        valid: list[str] = []
        valid_at: list[int] = []
        for i, row in enumerate(rows):
            phone = row[2]  # rows may be plain tuples in AudienceRow's column order
            if phone is None:
                continue
            e164 = normalise(phone)
            if e164 is not None:
                valid.append(e164)
                valid_at.append(len(subscribed))
            subscribed.append(i)
            phones.append(e164)
        screen = Screen(list(range(len(valid))), [], []) if self.trial \
            else self.dedupe.screen(valid)
        return Plan(rows, subscribed, phones, valid, valid_at, screen, last_id, others, later)

    @staticmethod
    def _in_window(
        rows: Sequence[AudienceRow], window: tuple[float, float], times: SendTimes,
        out: list[tuple[int, float | None]],
    ) -> list[AudienceRow]:
        """The rows whose send time is in ``(after, until]``; appends ``(profile id,
        send time)`` of each row after it to ``out``, ``(profile id, None)`` of each row
        before it (an earlier wave took them)."""
        after, until = window
        send_time = times.of
        kept = []
        for row in rows:
            at = send_time(profile_zone(row[1]))
            if at <= after:
                out.append((row[0], None))
            elif at > until:
                out.append((row[0], at))
            else:
                kept.append(row)
        return kept

    def policy_keys(self, plan: Plan) -> list[int | str]:
        """What the chunk's policy counts are looked up by (profile ids or phones)."""
        if self.policy is None:
            return []
        if self.policy.key == "phone":
            return list(dict.fromkeys(plan.valid))
        return [plan.rows[i][0] for k, i in enumerate(plan.subscribed)
                if plan.phones[k] is not None]

    def finish(
        self, plan: Plan, suppressed: Set[str], seen: Set[str], now: float,
        policy_counts: Mapping[int | str, int] | None = None,
    ) -> PreparedBatch:
        dup = [False] * len(plan.subscribed)
        if not self.trial:
            dup_valid = self.dedupe.confirm(plan.valid, plan.screen, seen)
            for k, at in enumerate(plan.valid_at):
                dup[at] = dup_valid[k]

        rows = plan.rows
        phones = plan.phones
        messages: list[Message] = []
        skipped: list[Skipped] = []
        counts = dict.fromkeys(
            ("invalid", "suppressed", "duplicate", "empty", "too_long", "policy", "control"),
            0)
        seq = self.next_seq
        check_blank = self._check_blank
        policy = self.policy if policy_counts is not None else None
        limited = policy.max_messages if policy is not None else 0
        by_phone = policy is not None and policy.key == "phone"
        policy_counts = policy_counts or {}
        uid = self.run_uid
        limit = self.limit if self.limit is not None else -1
        reserved = self.reserved
        render, route = self.render, self.route
        accept = _accept_none if self.trial else self.dedupe.accept
        invalid = self.invalid_reason
        controlled = self.groups.controlled if self.groups is not None and \
            self.groups.controls else None
        caps = self.max_segments
        links: list[DataLink] = []
        stop_at = len(rows)  # rows[:stop_at] are settled by this call
        found = 0
        for k, i in enumerate(plan.subscribed):
            if reserved == limit:
                stop_at = i  # resume (or nothing) starts at this row
                break
            found += 1
            row = rows[i]
            profile_id = row[0]
            e164 = phones[k]
            if e164 is None:
                skipped.append(Skipped(seq, profile_id, row[2] or "", invalid))
                counts["invalid"] += 1
            elif e164 in suppressed:
                skipped.append(Skipped(seq, profile_id, e164, Skip.SUPPRESSED))
                counts["suppressed"] += 1
            elif dup[k]:
                skipped.append(Skipped(seq, profile_id, e164, Skip.DUPLICATE))
                counts["duplicate"] += 1
            elif limited and policy_counts.get(e164 if by_phone else profile_id, 0) >= limited:
                skipped.append(Skipped(seq, profile_id, e164, Skip.POLICY))
                counts["policy"] += 1
            elif controlled is not None and controlled(profile_id):
                skipped.append(Skipped(seq, profile_id, e164, CONTROL))
                counts["control"] += 1
            else:
                linked = len(links)
                text, segments, encoding = render(row, None, seq, links)
                # before routing: a blank text takes no sender's share
                if check_blank and (not text or text.isspace()):
                    skipped.append(Skipped(seq, profile_id, e164, Skip.EMPTY))
                    counts["empty"] += 1
                    del links[linked:]
                else:
                    sender = route(e164, now)
                    cap = caps.get(sender, 0)
                    if cap and segments > cap:
                        skipped.append(Skipped(seq, profile_id, e164, Skip.TOO_LONG))
                        counts["too_long"] += 1
                        del links[linked:]
                    else:
                        accept(e164)
                        messages.append(
                            Message(seq, f"{uid}-{seq}", profile_id, e164, sender, text,
                                    segments, encoding)
                        )
                        reserved += 1
            seq += 1
        self.reserved = reserved
        counts["received"] = stop_at
        counts["found"] = found
        if stop_at == len(rows) and plan.last_id is not None:
            checkpoint = plan.last_id  # the share's rows are settled, the others dropped
        elif stop_at:
            checkpoint = rows[stop_at - 1][0]
        else:
            checkpoint = checkpoint_before(rows)
        if plan.last_id is not None:
            # the dropped rows up to the checkpoint are settled with this chunk
            counts["other_share"] = bisect_right(plan.others, checkpoint)
            for profile_id, send_at in plan.later:
                if profile_id > checkpoint:
                    break  # the rest are the resume's (ids come in order)
                if send_at is None:
                    counts[EARLIER] = counts.get(EARLIER, 0) + 1
                else:
                    counts[LATER] = counts.get(LATER, 0) + 1
                    key = later_key(send_at)
                    counts[key] = counts.get(key, 0) + 1
        limit_reached = self.limit_reached
        self.next_seq = seq
        return PreparedBatch(messages, skipped, checkpoint, limit_reached, counts, links)


    def render(
        self, row: AudienceRow, apicontent: dict[str, Any] | None = None, seq: int = 0,
        links: list[DataLink] | None = None,
    ) -> tuple[str, int, str]:
        """The text of message ``seq`` for one audience row (its links shortened, the URLs
        from data that took a slot appended to ``links``), its length in SMS segments and
        its encoding."""
        text = self.template.render(self.context_of(row, apicontent))
        if self.shortener is not None:
            text = self.shortener.shorten(text, seq, [] if links is None else links)
        info = self.measure(text)
        return text, info.segments, info.encoding

    def context_of(
        self, row: AudienceRow, apicontent: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The render context of one audience row: the run's, with the row's ``lead``,
        ``subscription`` and the trigger call's ``apicontent`` where the template reads
        them."""
        ctx = self.context.copy()
        if apicontent is not None:
            ctx["apicontent"] = apicontent
        if self._needs_lead:
            lead = _json_decode(row[1]) if row[1] else {}
            lead["_id"] = row[0]
            ctx["lead"] = lead
        if self._needs_sub:
            sub = _json_decode(row[3]) if row[3] else {}
            sub["phone"] = row[2]
            sub.setdefault("resource_id", self._resource_id)
            ctx["subscription"] = sub
        return ctx

    def rerender(
        self, entries: Sequence[tuple[int, int, str]], rows: Sequence[AudienceRow], sender: str
    ) -> tuple[list[Message], list[tuple[int, int, str]]]:
        """Messages again for journalled (seq, profile id, phone) entries, under their
        original ids and with the same links (a link's code is derived from its seq; the
        URLs from data were reserved with the batch); also the entries whose profile no
        longer exists."""
        by_id = {row[0]: row for row in rows}
        messages: list[Message] = []
        missing = []
        for seq, profile_id, phone in entries:
            row = by_id.get(profile_id)
            if row is None:
                missing.append((seq, profile_id, phone))
                continue
            text, segments, encoding = self.render(row, None, seq)
            messages.append(Message(seq, f"{self.run_uid}-{seq}", profile_id, phone, sender,
                                    text, segments, encoding))
        return messages, missing


    def finish_triggers(
        self, rows: Sequence[QueuedTrigger], phones: Sequence[str | None],
        suppressed: Set[str], now: float,
        policy_counts: Mapping[int | str, int] | None = None,
    ) -> PreparedBatch:
        """Settle queued triggers (``Store.trigger_chunk`` rows, their E.164 phones from
        ``normalise``). Each already has its seq (its message id was answered at once), so
        each ends as a message or a recorded skip; there is no dedupe and no limit."""
        messages: list[Message] = []
        skipped: list[Skipped] = []
        counts = dict.fromkeys(("received", "found", "invalid", "suppressed", "empty",
                                "too_long", "not_subscribed", "policy", "control"), 0)
        controlled = self.groups.controlled if self.groups is not None and \
            self.groups.controls else None
        uid, route, caps = self.run_uid, self.route, self.max_segments
        check_blank = self._check_blank
        policy = self.policy if policy_counts is not None else None
        policy_counts = dict(policy_counts or {})
        links: list[DataLink] = []
        for row, e164 in zip(rows, phones, strict=True):
            seq, profile_id, phone = row.seq, row.profile_id, row.phone
            counts["received"] += 1
            if phone is None:
                skipped.append(Skipped(seq, profile_id, "", Skip.NOT_SUBSCRIBED))
                counts["not_subscribed"] += 1
                continue
            counts["found"] += 1
            if e164 is None:
                skipped.append(Skipped(seq, profile_id, phone, self.invalid_reason))
                counts["invalid"] += 1
            elif e164 in suppressed:
                skipped.append(Skipped(seq, profile_id, e164, Skip.SUPPRESSED))
                counts["suppressed"] += 1
            elif policy is not None and over_limit(
                policy, policy_counts, e164 if policy.key == "phone" else profile_id
            ):
                skipped.append(Skipped(seq, profile_id, e164, Skip.POLICY))
                counts["policy"] += 1
            elif controlled is not None and controlled(profile_id):
                skipped.append(Skipped(seq, profile_id, e164, CONTROL))
                counts["control"] += 1
            else:
                linked = len(links)
                text, segments, encoding = self.render(
                    AudienceRow(profile_id, row.fields, phone, row.sub_fields),
                    _json_decode(row.content or b"{}"), seq, links,
                )
                if check_blank and (not text or text.isspace()):
                    skipped.append(Skipped(seq, profile_id, e164, Skip.EMPTY))
                    counts["empty"] += 1
                    del links[linked:]
                    continue
                sender = route(e164, now)
                cap = caps.get(sender, 0)
                if cap and segments > cap:
                    skipped.append(Skipped(seq, profile_id, e164, Skip.TOO_LONG))
                    counts["too_long"] += 1
                    del links[linked:]
                    continue
                if policy is not None:  # several triggers in one chunk count against it too
                    key = e164 if policy.key == "phone" else profile_id
                    policy_counts[key] = policy_counts.get(key, 0) + 1
                messages.append(Message(seq, f"{uid}-{seq}", profile_id, e164, sender,
                                        text, segments, encoding))
        checkpoint = rows[-1].queue_id if rows else 0
        return PreparedBatch(messages, skipped, checkpoint, False, counts, links)


def _accept_none(phone: str) -> None:
    """A trial's dedupe: it remembers nothing."""


def checkpoint_before(rows: Sequence[AudienceRow]) -> int:
    """The resume point when a chunk's first row is already past the limit."""
    return rows[0][0] - 1 if rows else 0
