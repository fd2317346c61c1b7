"""A shard's status moves only along the lifecycle shard_lifecycle.py draws, and each move keeps the persisted
position and the progress line in step (the orchestrator's tests prove the moves happen at the right pages)."""
from __future__ import annotations

import pytest

from source_kinesis.progress import ShardProgress
from source_kinesis.shard_lifecycle import Shard, ShardStatus
from source_kinesis.shard_reader import ShardStats
from source_kinesis.state import ShardState

SEQ = "49590338271490256608559692538361571095921575989136588898"


class _Reader:
    cancelled = False
    closed = False

    def close(self) -> None:
        self.closed = True


def _started(position: ShardState | None = None) -> tuple[Shard, _Reader, ShardProgress]:
    shard = Shard("shardId-000000000001", position or ShardState())
    reader, progress = _Reader(), ShardProgress("orders", "shardId-000000000001", ShardStats())
    shard.start(reader, progress)  # type: ignore[arg-type]
    return shard, reader, progress


def test_a_shard_finished_in_an_earlier_sync_starts_finished():
    assert Shard("s", ShardState(finished=True)).status is ShardStatus.FINISHED
    assert Shard("s", ShardState(finished=True)).ended
    assert Shard("s", ShardState()).status is ShardStatus.WAITING


def test_a_resumed_shard_skips_up_to_its_checkpoint_and_checks_the_gap():
    shard, _, _ = _started(ShardState(sequence_number=SEQ, sub_sequence_number=3))
    assert shard.status is ShardStatus.READING
    assert shard.skip_to == ShardState(sequence_number=SEQ, sub_sequence_number=3) and shard.gap_check == SEQ
    assert shard.skip_to is not shard.position  # emitting moves the position, not what to skip
    shard.restarted_at_trim_horizon()
    assert (shard.position.sequence_number, shard.position.sub_sequence_number) == (None, 0)
    assert shard.skip_to is None and shard.gap_check is None
    fresh, _, _ = _started()
    assert fresh.skip_to is None and fresh.gap_check is None


@pytest.mark.parametrize(
    "move, status, finished, done",
    [
        (lambda s: s.finish("shard closed and drained"), ShardStatus.FINISHED, True, "shard closed and drained"),
        (lambda s: s.vanish(), ShardStatus.GONE, True, "shard gone"),
        (lambda s: s.stop("caught up"), ShardStatus.STOPPED, False, "caught up"),
        (lambda s: s.fail(), ShardStatus.FAILED, False, ""),
    ],
)
def test_each_way_out_of_reading(move, status, finished, done):
    shard, reader, progress = _started()
    move(shard)
    assert reader.closed  # leaving READING releases what the reader holds (a fan-out subscription)
    assert shard.status is status and shard.reader is None
    assert shard.position.finished is finished and shard.ended is finished  # only these let children start
    assert progress.done == done
    assert reader.cancelled is (status is ShardStatus.FAILED)
    with pytest.raises(AssertionError):
        shard.stop("again")  # a shard leaves reading once


def test_a_shard_starts_once():
    shard, _, _ = _started()
    with pytest.raises(AssertionError):
        shard.start(_Reader(), None)  # type: ignore[arg-type]
