"""One batch's way through a gateway, across attempts: what each answer means.

Sans-I/O: the async shell calls the driver and feeds the answer (results or an exception)
in; this class decides each message's outcome, which messages go again, and how long the
gateway asked us to wait. Retry timing (how long, how many times) is the caller's policy.

An answer that leaves it open whether the gateway took a message (a timeout after the
request was written, a connection lost before the answer: ``ambiguous``) settles that
message ``unknown`` with the reason, unless ``retry_ambiguous`` (the sender's
``on_ambiguous = "retry"``): then it goes again under the same id, and ``maybe_taken``
remembers that the gateway may already have it.

::

    sub = Submission(messages, caller_id)
    while not sub.done:
        try:
            results = await driver.send_batch(sub.next_attempt())
        except Exception as err:
            sub.failed(err)
        else:
            sub.answered(results)
        if not sub.done:
            ...  # wait, or sub.give_up()
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engine.core.prepare import Message
from engine.core.states import Outcome, State
from engine.drivers import OutboundMessage, SendResult
from engine.errors import GatewayError, InputError, PermanentGatewayError, TransientGatewayError

__all__ = ["Compose", "Submission"]

#: Builds one email message's OutboundMessage (``engine.core.email_message.Composer``),
#: given the time for its Date header.
Compose = Callable[[Message, float], OutboundMessage]

_NO_RESULT = "the driver returned no result for it"


class Submission:
    """The outcomes of one batch, settled over one or more attempts."""

    __slots__ = ("_caller_id", "_errors", "_maybe", "_messages", "_now", "_outbound",
                 "attempt", "outcomes", "pending", "retry_after", "retry_ambiguous", "seqs",
                 "throttled", "unwritable")

    def __init__(
        self, messages: Sequence[Message], caller_id: str, *, retry_ambiguous: bool = False,
        compose: Compose | None = None, now: float = 0.0,
    ) -> None:
        self._messages = messages
        self._now = now
        self.seqs = [m.seq for m in messages]
        self.outcomes: list[Outcome | None] = [None] * len(messages)
        #: Positions (into ``messages``) still to be settled.
        self.pending = list(range(len(messages)))
        self.attempt = 0
        #: Seconds the gateway asked us to wait before the next attempt, if it said.
        self.retry_after: float | None = None
        #: True when the last answer was a throttling one (slow the whole sender down).
        self.throttled = False
        self._caller_id = caller_id
        self._errors: dict[int, str | None] = {}
        self.retry_ambiguous = retry_ambiguous
        #: Positions an earlier attempt may have handed over (retried: ambiguous answers).
        self._maybe: set[int] = set()
        #: Positions whose message could not be written (an email the sender's From
        #: and the recipient's address cannot make): settled failed at once, never sent.
        self.unwritable: list[int] = []
        self._outbound = self._build(messages, caller_id, compose)
        self._fail_unwritable()

    def _build(self, messages: Sequence[Message], caller_id: str,
               compose: Compose | None) -> list[OutboundMessage]:
        if compose is None:
            return [OutboundMessage(m.id, m.phone, caller_id, m.text, m.segments)
                    for m in messages]
        out = []
        for i, m in enumerate(messages):
            try:
                out.append(compose(m, self._now))
            except InputError as err:  # kept in place, settled failed, never submitted
                out.append(OutboundMessage(m.id, m.phone, caller_id, m.text, m.segments))
                if i not in self.unwritable:
                    self.unwritable.append(i)
                    self._errors[i] = str(err)
        return out

    def _fail_unwritable(self) -> None:
        if not self.unwritable:
            return
        bad = set(self.unwritable)
        for i in self.unwritable:
            if self.outcomes[i] is None:
                self.outcomes[i] = Outcome(self.seqs[i], State.FAILED, "unwritable", None,
                                           self._errors.get(i), 0)
        self.pending = [i for i in self.pending if i not in bad]

    @property
    def done(self) -> bool:
        return not self.pending

    @property
    def maybe_taken(self) -> bool:
        """Some message still pending may be at the gateway already (an ambiguous answer
        was retried): it must not be taken back as merely reserved."""
        maybe = self._maybe
        return bool(maybe) and any(i in maybe for i in self.pending)

    def settled(self) -> list[int]:
        """Positions settled so far."""
        return [i for i, o in enumerate(self.outcomes) if o is not None]

    def next_attempt(self) -> list[OutboundMessage]:
        """The messages to submit now."""
        self.attempt += 1
        self.retry_after = None
        self.throttled = False
        if len(self.pending) == len(self._outbound):
            return self._outbound
        return [self._outbound[i] for i in self.pending]

    def _settle(self, i: int, state: str, reason: str | None = None,
                provider_id: str | None = None, error: str | None = None) -> None:
        self.outcomes[i] = Outcome(self.seqs[i], state, reason, provider_id, error, self.attempt)

    def answered(self, results: Sequence[SendResult]) -> None:
        """The driver answered the attempt with one result per message."""
        pending = self.pending
        retry: list[int] = []
        if len(results) == len(pending) and all(
            r.id == self._outbound[i].id for r, i in zip(results, pending, strict=True)
        ):
            pairs = zip(pending, results, strict=True)
        else:  # out of order, missing or extra results: match by id
            by_id = {r.id: r for r in results}
            pairs = ((i, by_id.get(self._outbound[i].id)) for i in pending)  # type: ignore[assignment]
        for i, r in pairs:
            if r is None:
                self._settle(i, State.UNKNOWN, "no_result", error=_NO_RESULT)
            elif r.status == "accepted":
                self.outcomes[i] = Outcome(self.seqs[i], "sent", None, r.provider_id, None,
                                           self.attempt)
            elif r.status == "rejected":
                self._settle(i, State.FAILED, "rejected", error=r.error)
            elif r.status == "unknown":
                error = r.error or ""
                reason = "timeout" if error.startswith("timeout") else "connection_lost"
                if self.retry_ambiguous:
                    retry.append(i)
                    self._errors[i] = r.error
                    self._maybe.add(i)
                else:
                    self._settle(i, State.UNKNOWN, reason, error=r.error)
            else:
                retry.append(i)
                self._errors[i] = r.error
                if r.retry_after:
                    self.retry_after = max(self.retry_after or 0.0, r.retry_after)
                    self.throttled = True
        self.pending = retry

    def failed(self, err: BaseException) -> None:
        """The driver raised instead of answering."""
        if isinstance(err, TransientGatewayError) and err.ambiguous is not None:
            if not self.retry_ambiguous:
                for i in self.pending:
                    self._settle(i, State.UNKNOWN, err.ambiguous, error=str(err))
                self.pending = []
                return
            self._maybe.update(self.pending)
        if isinstance(err, TransientGatewayError):
            self.retry_after = err.retry_after
            self.throttled = err.retry_after is not None
            for i in self.pending:
                self._errors[i] = str(err)
            return
        if isinstance(err, PermanentGatewayError):
            state, reason, error = State.FAILED, "rejected", str(err)
            if err.code:
                reason = f"rejected: {err.code}"
        elif isinstance(err, GatewayError):
            state, reason, error = State.FAILED, "gateway_error", str(err)
        else:  # a driver bug: the batch may or may not have gone out
            state, reason, error = State.UNKNOWN, "driver_error", repr(err)
        for i in self.pending:
            self._settle(i, state, reason, error=error)
        self.pending = []

    def interrupted(self) -> None:
        """The run stopped in the middle of an attempt (its grace ran out): the gateway may
        have what was pending. Settled ``unknown`` (reason ``interrupted``), or kept
        pending as maybe taken where ambiguous attempts are retried."""
        if self.retry_ambiguous:
            self._maybe.update(self.pending)
            return
        for i in self.pending:
            self._settle(i, State.UNKNOWN, "interrupted",
                         error="in flight when the run was stopped; the gateway may or may "
                               "not have it")
        self.pending = []

    def switch(self, caller_id: str, compose: Compose | None = None) -> None:
        """Fail over to another sender: same message ids, its caller id (an email
        sender's ``compose``: its From and envelope)."""
        if compose is not None:
            self._caller_id = caller_id
            self._outbound = self._build(self._messages, caller_id, compose)
            self._fail_unwritable()
        elif caller_id != self._caller_id:
            self._caller_id = caller_id
            self._outbound = [
                OutboundMessage(o.id, o.to, caller_id, o.text, o.segments)
                for o in self._outbound
            ]

    def give_up(self, reason: str = "retries_exhausted") -> None:
        """No more attempts: what is still pending failed with its last error."""
        for i in self.pending:
            self._settle(i, State.FAILED, reason, error=self._errors.get(i))
        self.pending = []

    def results(self) -> list[Outcome]:
        """One outcome per message, in the batch's order (only once ``done``)."""
        assert self.done, "results() before the submission is settled"
        return self.outcomes  # type: ignore[return-value]
