"""One commit in flight, behind the decoding of the next batch, in order."""

from __future__ import annotations

import asyncio

import pytest

from service.pipeline.decode_ahead import CommitBehind


async def test_commits_run_one_at_a_time_in_order_and_hand_back_the_one_before() -> None:
    log: list[str] = []

    async def commit(name: str) -> str:
        log.append(f"start {name}")
        await asyncio.sleep(0.01)
        log.append(f"end {name}")
        return name

    commits: CommitBehind[str] = CommitBehind()
    assert await commits.then(commit("a")) is None
    assert commits.committing
    log.append("decoding b")  # while a commits
    assert await commits.then(commit("b")) == "a"
    assert await commits.wait() == "b"
    assert not commits.committing
    # a starts at the first turn the loop gets; b only once a has ended.
    assert log == ["decoding b", "start a", "end a", "start b", "end b"]


async def test_a_failed_commit_is_raised_and_the_next_one_never_starts() -> None:
    started: list[str] = []

    async def failing() -> None:
        raise RuntimeError("database gone")

    async def never() -> None:
        started.append("never")

    commits: CommitBehind[None] = CommitBehind()
    await commits.then(failing())
    with pytest.raises(RuntimeError, match="database gone"):
        await commits.then(never())
    assert started == []
    assert not commits.committing


async def test_settle_lets_the_commit_in_flight_finish() -> None:
    finished = asyncio.Event()

    async def slow() -> None:
        await asyncio.sleep(0.01)
        finished.set()

    commits: CommitBehind[None] = CommitBehind()
    await commits.then(slow())
    await commits.settle()
    assert finished.is_set()
    assert not commits.committing
