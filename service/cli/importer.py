"""`connledger import`: NDJSON in either body format, from a file or stdin, through the
pipeline in batches, appended in order.

Without hooks, decoding batch N+1 overlaps appending batch N: one append is in flight at a time,
as an asyncio task. Decoding is pure Python and never waits on anything, so left alone it would
hold the event loop until the whole next batch is decoded, and the in-flight append, which
needs the loop between its statements, would make no progress in the meantime. The next batch
is therefore decoded a slice at a time, and the loop gets a turn between slices: the database
works on one statement while Python decodes the next slice. This is safe because without hooks
`prepare` only decodes; duplicates are found by the append, under the writer lock.

With hooks it is not: `prepare` runs the hooks on the events it does not find in the ledger,
so it must see every batch before it committed (or a duplicate of an event of the batch in
flight would run the hooks again), and must see a batch whole (its within-batch dedupe spans
one call). So with hooks each batch is prepared in one call, after the one before committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice
from typing import BinaryIO, Final

from service.inbound import Incoming
from service.ledger.model import Rejected
from service.ledger.store import now_ms
from service.pipeline.batches import Pipeline, Prepared
from service.pipeline.decode_ahead import CommitBehind
from service.pipeline.outcomes import BatchResult, Deferred, Tally
from service.subjects import HEADER_IMPORT_LINE, HEADER_IMPORT_SOURCE

__all__ = ["DEFAULT_BATCH_SIZE", "MAX_BATCH_SIZE", "ImportReport", "import_stream", "open_input"]

MAX_REPORTED = 100
# Lines per append transaction. Much of a transaction's cost does not grow with its size: a row
# per touched session in ledger_sessions and projection_sessions, and above all every index
# page it touches, written whole to SQLite's WAL (or PostgreSQL's, after a checkpoint) however
# few entries it gained. With 5,000 sessions, a million events took 74 s on SQLite in batches
# of 10,000, 65 s in batches of 25,000, 56 s in batches of 50,000 (PostgreSQL: 67, 58, 55 s).
# The price: about 300 MB of memory at 50,000, and the writer lock held for a second or two
# per batch, during which the service's own appends wait. `--batch-size` trades them back.
DEFAULT_BATCH_SIZE: Final = 50_000
MAX_BATCH_SIZE: Final = 200_000
log = logging.getLogger(__name__)

# The pause before lines handed back as Deferred are processed again.
DEFERRED_RETRY_SECONDS = 0.2
# Lines decoded between two turns of the event loop (a few milliseconds of work).
SLICE: Final = 500


@dataclass(slots=True)
class ImportReport:
    total: Tally = field(default_factory=Tally)
    rejected_lines: list[tuple[int, Rejected]] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.total.rejected

    def add(self, result: BatchResult, line_numbers: list[int]) -> None:
        for line, outcome in zip(line_numbers, result.outcomes, strict=True):
            self.total.add(outcome)
            if isinstance(outcome, Rejected) and len(self.rejected_lines) < MAX_REPORTED:
                self.rejected_lines.append((line, outcome))

    def summary(self) -> dict[str, int]:
        return self.total.summary()


class _Lines:
    """The input's non-blank lines as Incoming messages, with their line numbers."""

    def __init__(self, stream: BinaryIO, source_name: str) -> None:
        self.source_name = source_name
        self.consumed = 0  # bytes read so far, for the progress bar
        self._numbered = enumerate(stream, start=1)

    def take(self, count: int) -> tuple[list[Incoming], list[int]]:
        """Up to `count` messages (fewer only at the end of the input)."""
        messages: list[Incoming] = []
        numbers: list[int] = []
        received = now_ms()
        source = self.source_name
        consumed = self.consumed
        while len(messages) < count:
            chunk = list(islice(self._numbered, count - len(messages)))
            if not chunk:
                break
            for number, line in chunk:
                consumed += len(line)
                body = line.rstrip(b"\r\n")
                if not body.strip():
                    continue
                # The headers say where a rejected line came from (`connledger rejected`).
                messages.append(
                    Incoming(
                        body,
                        received,
                        "import",
                        None,
                        {HEADER_IMPORT_SOURCE: source, HEADER_IMPORT_LINE: str(number)},
                    )
                )
                numbers.append(number)
        self.consumed = consumed
        return messages, numbers


async def _prepare_batch(pipeline: Pipeline, lines: _Lines, size: int) -> tuple[Prepared, list[int]]:
    """Read and prepare up to `size` lines, a slice at a time, giving the event loop a turn
    after each slice (see the module docstring)."""
    batch = Prepared(outcomes=[])
    numbers: list[int] = []
    while len(numbers) < size:
        messages, slice_numbers = lines.take(min(SLICE, size - len(numbers)))
        if not messages:
            break
        part = await pipeline.prepare(messages)
        offset = len(batch.outcomes)
        batch.outcomes.extend(part.outcomes)
        batch.candidates.extend(part.candidates)
        batch.candidate_slots.extend([slot + offset for slot in part.candidate_slots])
        batch.rejections.extend(part.rejections)
        numbers.extend(slice_numbers)
        await asyncio.sleep(0)
    return batch, numbers


async def _renew_claims(pipeline: Pipeline) -> None:
    """Renew the claims on the hooks of the batch in hand a few times within their timeout,
    so that a long batch (slow hooks, a large --batch-size) keeps them (pipeline/batches.py)."""
    while True:
        await asyncio.sleep(pipeline.claim_timeout_ms / 3000)
        try:
            await pipeline.renew_claims()
        except Exception as error:
            log.warning("renewing the claims on the hooks of the batch in hand failed: %s", error)


async def _process_until_recorded(
    pipeline: Pipeline, messages: list[Incoming], numbers: list[int], report: ImportReport
) -> None:
    """Process a batch; lines whose events another process was deciding the hooks of (a
    service ingesting the same events) come back `Deferred`, and are processed again once
    that process has had the time to append them (pipeline/batches.py)."""
    while messages:
        result = await pipeline.process(messages)
        report.add(result, numbers)
        waiting = [i for i, outcome in enumerate(result.outcomes) if type(outcome) is Deferred]
        if waiting:
            await asyncio.sleep(DEFERRED_RETRY_SECONDS)
        messages = [messages[i] for i in waiting]
        numbers = [numbers[i] for i in waiting]


async def import_stream(
    pipeline: Pipeline,
    stream: BinaryIO,
    source_name: str,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    lines = _Lines(stream, source_name)
    if pipeline.hooks:
        renewing = asyncio.create_task(_renew_claims(pipeline))
        try:
            while True:
                messages, numbers = lines.take(batch_size)
                if not messages:
                    return report
                await _process_until_recorded(pipeline, messages, numbers, report)
                if progress is not None:
                    progress(lines.consumed)
        finally:
            renewing.cancel()
    # Without hooks, each batch is decoded while the one before it commits (see
    # pipeline/decode_ahead.py).
    commits: CommitBehind[tuple[BatchResult, list[int]]] = CommitBehind()
    try:
        while True:
            prepared, numbers = await _prepare_batch(pipeline, lines, batch_size)
            if not numbers:
                break
            done = await commits.then(_commit(pipeline, prepared, numbers))
            if done is not None:
                report.add(*done)
            if progress is not None:
                progress(lines.consumed)
        done = await commits.wait()
        if done is not None:
            report.add(*done)
    finally:
        # Something failed while a batch was being appended: let that append finish (or
        # fail) rather than abandon it halfway.
        await commits.settle()
    return report


async def _commit(
    pipeline: Pipeline, prepared: Prepared, numbers: list[int]
) -> tuple[BatchResult, list[int]]:
    return await pipeline.commit(prepared), numbers


def open_input(path: str) -> tuple[BinaryIO, str, int | None]:
    """The stream, its name for the rejected store, and its size when known."""
    if path == "-":
        return sys.stdin.buffer, "<stdin>", None
    handle = open(path, "rb")  # noqa: SIM115 - closed by the caller
    return handle, path, os.fstat(handle.fileno()).st_size
