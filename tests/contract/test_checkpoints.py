"""Named positions beside the projection's checkpoint (the relay's progress), on both databases."""

from __future__ import annotations

from service.ledger.append import CHECKPOINT
from service.ledger.checkpoints import read_checkpoint
from service.nats.relay import RELAY_CHECKPOINT
from service.pipeline.ledger_service import LedgerService
from tests.helpers import created


async def test_a_saved_position_only_moves_forward(ledger: LedgerService) -> None:
    store = ledger.store
    assert await read_checkpoint(store.engine, RELAY_CHECKPOINT) == 0
    await store.save_position(RELAY_CHECKPOINT, 500)
    # A relay that lost its lease without knowing it yet writes where it got to, behind the
    # relay that took over: the checkpoint stays where the furthest one put it.
    await store.save_position(RELAY_CHECKPOINT, 200)
    assert await read_checkpoint(store.engine, RELAY_CHECKPOINT) == 500
    await store.save_position(RELAY_CHECKPOINT, 500)
    await store.save_position(RELAY_CHECKPOINT, 501)
    assert await read_checkpoint(store.engine, RELAY_CHECKPOINT) == 501


async def test_a_saved_position_leaves_the_projection_checkpoint_alone(ledger: LedgerService) -> None:
    await ledger.pipeline.process([created(f"e{n}", connection=f"c{n}") for n in range(3)])
    await ledger.store.save_position(RELAY_CHECKPOINT, 2)
    assert await read_checkpoint(ledger.store.engine, CHECKPOINT) == 3
    assert await read_checkpoint(ledger.store.engine, RELAY_CHECKPOINT) == 2
