"""One shard's life in a sync, as an explicit status: the only place a shard's status changes.

::

    WAITING ──start()──▶ READING ──finish()──▶ FINISHED   closed and drained (now, or in an earlier sync)
       (parents not         │      ──stop()────▶ STOPPED    the bounded stop rule held: next sync goes on
        all finished)       │      ──gone()────▶ GONE       trimmed or deleted before its end (stale_checkpoint)
                            └──────fail()──────▶ FAILED     its stream failed while it was being read

A ``Shard`` holds what the emitting thread knows of it: its persisted position (the ``ShardState`` that goes into
the stream's state), its reader while it reads, its progress line, and, for a shard resumed from a checkpoint, the
position to skip up to (``ShardState.is_after``: the record at the checkpoint was emitted last sync) and the sequence
number its first record must be (else records were lost to retention in between: the ``stale_checkpoints`` rule).
Only the orchestrator's thread calls these methods; readers run on the pool's threads and only return pages.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from source_kinesis.state import ShardState

if TYPE_CHECKING:
    from source_kinesis.progress import ShardProgress
    from source_kinesis.readers import Reader


class ShardStatus(enum.Enum):
    WAITING = "waiting on parents"
    READING = "reading"
    STOPPED = "stopped"
    FINISHED = "finished"
    GONE = "gone"
    FAILED = "failed"


# a child may start once each parent is one of these (nothing more of the parent will ever be read)
ENDED = (ShardStatus.FINISHED, ShardStatus.GONE)


@dataclass
class Shard:
    shard_id: str
    position: ShardState  # the persisted checkpoint; the same object the stream's state holds
    status: ShardStatus = ShardStatus.WAITING
    start_latest: bool = False  # first sync with start_position LATEST: its first iterator is LATEST
    reader: Optional["Reader"] = None
    progress: Optional["ShardProgress"] = None
    skip_to: Optional[ShardState] = None  # resumed: records at or before this position were emitted already
    gap_check: Optional[str] = None  # resumed: the first record read must be this one

    def __post_init__(self) -> None:
        if self.position.finished:
            self.status = ShardStatus.FINISHED

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def start(self, reader: "Reader", progress: "ShardProgress") -> None:
        assert self.status is ShardStatus.WAITING, f"{self.shard_id} started while {self.status.value}"
        self.status, self.reader, self.progress = ShardStatus.READING, reader, progress
        if self.position.sequence_number is not None:  # resumed at AT_SEQUENCE_NUMBER of the checkpoint
            self.skip_to = ShardState(sequence_number=self.position.sequence_number, sub_sequence_number=self.position.sub_sequence_number)
            self.gap_check = self.position.sequence_number

    def restarted_at_trim_horizon(self) -> None:
        """The reader found the checkpoint stale and restarted at TRIM_HORIZON: nothing of it is left to skip."""
        self.position.sequence_number, self.position.sub_sequence_number = None, 0
        self.skip_to = self.gap_check = None

    def finish(self, reason: str) -> None:
        self._end(ShardStatus.FINISHED, reason)

    def vanish(self) -> None:
        self._end(ShardStatus.GONE, "shard gone")

    def stop(self, reason: str) -> None:
        self._leave(ShardStatus.STOPPED, reason)

    def fail(self) -> None:
        if self.reader is not None:
            self.reader.cancelled = True
        self._leave(ShardStatus.FAILED, "")

    def _end(self, status: ShardStatus, reason: str) -> None:
        """Nothing more of this shard will ever be read: the state says so, and its children may start."""
        self.position.finished = True
        self._leave(status, reason)

    def _leave(self, status: ShardStatus, reason: str) -> None:
        assert self.status is ShardStatus.READING, f"{self.shard_id} {status.value} while {self.status.value}"
        if self.reader is not None:
            self.reader.close()
        self.status, self.reader = status, None
        if self.progress is not None and reason:
            self.progress.done = reason
