"""`connledger import`: NDJSON in either body format, from a file or stdin, through the
pipeline in batches. Decoding batch N+1 overlaps appending batch N; appends stay in order."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from service.ledger.model import BatchResult, Incoming, Rejected
from service.ledger.store import now_ms
from service.pipeline import Pipeline

__all__ = ["ImportReport", "import_stream"]

MAX_REPORTED = 100


@dataclass(slots=True)
class ImportReport:
    appended: int = 0
    duplicates: int = 0
    rejected: int = 0
    ignored: int = 0
    rejected_lines: list[tuple[int, Rejected]] = field(default_factory=list)

    def add(self, result: BatchResult, line_numbers: list[int]) -> None:
        tally = result.tally()
        self.appended += tally["appended"]
        self.duplicates += tally["duplicates"]
        self.rejected += tally["rejected"]
        self.ignored += tally["ignored"]
        for line, outcome in zip(line_numbers, result.outcomes, strict=True):
            if isinstance(outcome, Rejected) and len(self.rejected_lines) < MAX_REPORTED:
                self.rejected_lines.append((line, outcome))

    def summary(self) -> dict[str, int]:
        return {
            "appended": self.appended,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "ignored": self.ignored,
        }


def _batches(
    stream: BinaryIO, source_name: str, size: int
) -> Iterator[tuple[list[Incoming], list[int], int]]:
    """(messages, their line numbers, bytes read so far), skipping blank lines."""
    batch: list[Incoming] = []
    numbers: list[int] = []
    consumed = 0
    received = now_ms()
    for number, line in enumerate(stream, start=1):
        consumed += len(line)
        body = line.rstrip(b"\r\n")
        if not body.strip():
            continue
        batch.append(
            Incoming(
                body,
                received,
                "import",
                None,
                {"Ledger-Import-Source": source_name, "Ledger-Import-Line": str(number)},
            )
        )
        numbers.append(number)
        if len(batch) >= size:
            yield batch, numbers, consumed
            batch, numbers, received = [], [], now_ms()
    if batch:
        yield batch, numbers, consumed


async def import_stream(
    pipeline: Pipeline,
    stream: BinaryIO,
    source_name: str,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    in_flight: asyncio.Task[BatchResult] | None = None
    in_flight_lines: list[int] = []
    for batch, numbers, consumed in _batches(stream, source_name, batch_size):
        prepared = await pipeline.prepare(batch)
        if in_flight is not None:
            report.add(await in_flight, in_flight_lines)
        in_flight = asyncio.create_task(pipeline.commit(prepared))
        in_flight_lines = numbers
        if progress is not None:
            progress(consumed)
    if in_flight is not None:
        report.add(await in_flight, in_flight_lines)
    return report


def open_input(path: str) -> tuple[BinaryIO, str, int | None]:
    """The stream, its name for the rejected store, and its size when known."""
    if path == "-":
        return sys.stdin.buffer, "<stdin>", None
    handle = open(path, "rb")  # noqa: SIM115 - closed by the caller
    return handle, path, os.fstat(handle.fileno()).st_size
