"""The pipeline, written once for every edge (NATS, HTTP, `connledger import`):

    decode -> validate -> dedupe -> hooks -> append + project (one transaction)

An edge hands over a batch of `Incoming` messages and gets back one outcome per message, in
order. It acknowledges what it read only after `process` returns, since that is when the
transaction holding the batch has committed. A TransientError (database unreachable) means
nothing of the batch was committed: acknowledge nothing and retry.

Hooks are decided once per event, across processes too. Two processes (two instances sharing
the consumer, or `serve` and `connledger import`) may each hold a copy of one new event at the
same moment, and each would find it absent from the ledger. So before it runs an event's hooks,
the pipeline claims the event in the database (store.claim_hooks, committed at once); a copy
whose event another process has claimed is not appended here but comes back as `Deferred`:
the edge hands it back (ingest: a delayed redelivery; import: a retry after the batch), and by
the time it comes again the claimant has appended it and it is a duplicate. A claim is let go
after its batch commits, and renewed while the batch is in hand (`renew_claims`, as its
messages are kept in progress); one left by a process that died is taken over once it is older
than LEDGER_HOOK_CLAIM_TIMEOUT, and only then do that event's hooks run a second time (their first
decision never reached the ledger). Without hooks none of this runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import orjson

from service.errors import RejectedInput
from service.events import Event, Ignored, decode
from service.hooks.runner import HookRunner
from service.inbound import Incoming
from service.ledger.model import Appended, Candidate, Rejected, Rejection
from service.ledger.store import LedgerStore
from service.metrics import Metrics
from service.pipeline.outcomes import BatchResult, Deferred, IgnoredInput, Outcome

__all__ = ["CommitListener", "Pipeline", "Prepared"]

log = logging.getLogger(__name__)

CommitListener = Callable[[BatchResult], None]
# Messages decoded between two looks at the event loop (a batch of 500 takes milliseconds).
YIELD_EVERY = 100


@dataclass(slots=True)
class Prepared:
    """A decoded batch with the hooks' decisions, ready to append."""

    outcomes: list[Outcome | None]
    candidates: list[Candidate] = field(default_factory=list)
    candidate_slots: list[int] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    # Events whose hooks this pipeline claimed and decided: let go once the batch commits.
    claimed: list[str] = field(default_factory=list)


class Pipeline:
    def __init__(
        self,
        store: LedgerStore,
        hooks: HookRunner,
        subject_prefix: str = "connections",
        metrics: Metrics | None = None,
        claim_timeout: float = 120.0,
    ) -> None:
        self.store = store
        self.hooks = hooks
        self.subject_prefix = subject_prefix
        self.metrics = metrics
        self.claim_timeout_ms = int(claim_timeout * 1000)
        # Who holds this pipeline's claims on running hooks: one process, one run.
        self.owner = uuid.uuid4().hex
        # The events it has claimed and not yet let go of (their batches are in hand).
        self.held: set[str] = set()
        # Told of each batch right after it commits, in commit order (the in-memory counts).
        self.listeners: list[CommitListener] = []

    async def process(self, batch: Sequence[Incoming]) -> BatchResult:
        return await self.commit(await self.prepare(batch))

    async def prepare(self, batch: Sequence[Incoming]) -> Prepared:
        """Decode and validate each message, then run the hooks on those not yet recorded.

        Touches the database only to skip hooks for events already in the ledger (a read
        without the writer lock: `commit` checks again under it, and has the last word).
        """
        prepared = Prepared(outcomes=[None] * len(batch))
        for slot, incoming in enumerate(batch):
            if slot and slot % YIELD_EVERY == 0:
                await asyncio.sleep(0)  # let queries answered by this process through
            try:
                decoded = decode(incoming.raw, incoming.subject, self.subject_prefix)
            except RejectedInput as rejected:
                prepared.rejections.append(
                    Rejection(incoming, rejected.code, rejected.message, rejected.field, slot)
                )
                prepared.outcomes[slot] = Rejected(
                    rejected.code, rejected.message, rejected.field, incoming.raw, incoming.subject
                )
                continue
            if isinstance(decoded, Ignored):
                prepared.outcomes[slot] = IgnoredInput(decoded.kind)
                continue
            prepared.candidates.append(Candidate(decoded, incoming, slot=slot))
            prepared.candidate_slots.append(slot)

        if self.hooks and prepared.candidates:
            await self._decide(prepared)
        return prepared

    async def prepare_synthetic(self, events: Sequence[Event], received_at: int) -> Prepared:
        """Events the ledger appends itself (CONTRACT section 13), built whole by the service,
        not decoded from a body: `decode` never reads `origin`, so no producer can send one.
        From here they go the way of every event: the hooks (which may prevent them), then
        `commit`. Their deterministic ids make a second copy a duplicate."""
        prepared = Prepared(outcomes=[None] * len(events))
        for slot, event in enumerate(events):
            assert event.origin is not None, "a synthetic event names its origin"
            raw = orjson.dumps(event.to_native())
            incoming = Incoming(raw, received_at, source=event.origin.value)
            prepared.candidates.append(Candidate(event, incoming, slot=slot))
            prepared.candidate_slots.append(slot)
        if self.hooks and prepared.candidates:
            await self._decide(prepared)
        return prepared

    async def _decide(self, prepared: Prepared) -> None:
        """Run the hooks of the batch's new events, each once: those already in the ledger ran
        theirs when they were first seen, and those another process has claimed are its to
        decide (see the module docstring)."""
        known = await self.store.known([c.event.id for c in prepared.candidates])
        new = list(dict.fromkeys(c.event.id for c in prepared.candidates if c.event.id not in known))
        mine = await self.store.claim_hooks(new, self.owner, self.claim_timeout_ms)
        self.held.update(mine)
        if mine:
            # Another process may have appended one of them and let go of its claim between
            # the look-up above and the claim: look again, now that the claim is committed.
            # Whatever is in the ledger now was decided by that process.
            late = await self.store.known(list(mine))
            if late:
                known.update(late)
                await self.store.release_hooks(list(late), self.owner)
                mine.difference_update(late)
                self.held.difference_update(late)
        prepared.claimed = [event_id for event_id in new if event_id in mine]
        kept: list[Candidate] = []
        decided: set[str] = set()
        deferred = 0
        for candidate in prepared.candidates:
            event_id = candidate.event.id
            if event_id not in known and event_id not in mine:
                prepared.outcomes[candidate.slot] = Deferred(event_id)
                deferred += 1
                continue
            kept.append(candidate)
            if event_id in known or event_id in decided:
                continue  # a duplicate (or conflict): its hooks ran when it was first seen
            decided.add(event_id)
            started = time.perf_counter()
            candidate.decision = await self.hooks.decide(candidate.event)
            if self.metrics is not None:
                self.metrics.hook_seconds.observe(time.perf_counter() - started)
                for failure in candidate.decision.failures:
                    self.metrics.hook_failures.labels(failure.hook).inc()
        if deferred:
            prepared.candidates = kept
            prepared.candidate_slots = [c.slot for c in kept]
            if self.metrics is not None:
                self.metrics.deferred.inc(deferred)

    async def renew_claims(self) -> None:
        """Renew this pipeline's claims on the events of the batches in hand (a long hook, an
        append waiting behind a rebuild), so that no other process takes them over meanwhile:
        called as often as the messages themselves are kept in progress."""
        if self.held:
            await self.store.claim_hooks(sorted(self.held), self.owner, self.claim_timeout_ms)

    async def commit(self, prepared: Prepared) -> BatchResult:
        """Append the batch and store its rejections in one transaction."""
        head = 0
        changes: list[tuple[int, str, int]] = []
        started = time.perf_counter()
        if prepared.candidates or prepared.rejections:
            results, head = await self.store.append(prepared.candidates, prepared.rejections)
            for slot, candidate, outcome in zip(
                prepared.candidate_slots, prepared.candidates, results, strict=True
            ):
                prepared.outcomes[slot] = outcome
                if type(outcome) is Appended:
                    changes.append((outcome.position, candidate.event.session_id, outcome.count))
            changes.sort()
        if prepared.claimed:
            # Committed: the events are in the ledger, and no process will claim them again.
            # Letting go is tidying only; a claim left behind is taken over once it is stale.
            self.held.difference_update(prepared.claimed)
            try:
                await self.store.release_hooks(prepared.claimed, self.owner)
            except Exception as error:
                log.warning("letting go of %d hook claims failed: %s", len(prepared.claimed), error)
            prepared.claimed = []
        outcomes: list[Outcome] = [o for o in prepared.outcomes if o is not None]
        assert len(outcomes) == len(prepared.outcomes), "every message has an outcome"
        result = BatchResult(outcomes, head, changes)
        if self.metrics is not None:
            self._observe(result, time.perf_counter() - started)
        for listener in self.listeners:
            try:
                listener(result)
            except Exception:
                # The batch is committed whatever a listener does: it must still be acked.
                log.exception("a commit listener failed")
        return result

    def _observe(self, result: BatchResult, seconds: float) -> None:
        metrics = self.metrics
        assert metrics is not None
        metrics.append_seconds.observe(seconds)
        metrics.batch_size.observe(len(result.outcomes))
        # Counted here and added once per batch: each inc() takes the metric's lock.
        tally = result.tally()
        for counter, amount in (
            (metrics.appended, tally.appended),
            (metrics.prevented, tally.prevented),
            (metrics.duplicates, tally.duplicates),
            (metrics.ignored, tally.ignored),
        ):
            if amount:
                counter.inc(amount)
        for code, amount in tally.rejected_by_code.items():
            metrics.rejected.labels(code).inc(amount)
        if result.head:
            metrics.head.set(result.head)
