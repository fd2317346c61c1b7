"""Per-stream state: where each shard stands, in a versioned, documented JSON shape.

```
{"version": 1, "stream_arn": "...", "stream_created_at": "2026-11-25T21:30:38.123Z",
 "shards": {"shardId-000000000000": {"sequence_number": "4968...", "sub_sequence_number": 0,
                                      "finished": false, "parents": [], "started_at": null}}}
```
- ``sequence_number``/``sub_sequence_number``: the last *emitted* user record of the shard (KPL aggregates share a
  sequence number and differ by sub-sequence). Resume reads ``AT_SEQUENCE_NUMBER`` and skips user records up to
  and including this one, so it continues exactly after it: no gap, no repeat.
- ``finished``: the shard was read to its end (no ``NextShardIterator``). A finished shard leaves the state only
  once ``ListShards`` no longer lists it (trimmed), so its children never wait for it and it is never re-read.
- ``parents``: lineage, kept so a child can be judged ready even after its parents were pruned.
- ``started_at``: for shards that emitted nothing yet under LATEST/AT_TIMESTAMP, the time reading began; the next
  sync resumes ``AT_TIMESTAMP`` there instead of jumping to the new tip.
Sequence numbers are compared as integers, never as strings.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

STATE_VERSION = 1


def iso_ms(value: dt.datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the format of every timestamp this source writes."""
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def position_key(sequence_number: str, sub_sequence_number: int) -> Tuple[int, int]:
    return int(sequence_number), int(sub_sequence_number)


@dataclass
class ShardState:
    sequence_number: Optional[str] = None
    sub_sequence_number: int = 0
    finished: bool = False
    parents: List[str] = field(default_factory=list)
    started_at: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return {
            "sequence_number": self.sequence_number,
            "sub_sequence_number": self.sub_sequence_number,
            "finished": self.finished,
            "parents": list(self.parents),
            "started_at": self.started_at,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "ShardState":
        seq = raw.get("sequence_number")
        if seq is not None:
            seq = str(seq)
            int(seq)  # must be a decimal integer
        finished = raw.get("finished", False)
        if not isinstance(finished, bool):
            raise ValueError(f"'finished' must be true or false, not {finished!r}")
        return cls(
            sequence_number=seq,
            sub_sequence_number=int(raw.get("sub_sequence_number") or 0),
            finished=finished,
            parents=[str(p) for p in raw.get("parents") or []],
            started_at=raw.get("started_at"),
        )

    def is_after(self, sequence_number: str, sub_sequence_number: int) -> bool:
        """True if the user record (sequence_number, sub_sequence_number) comes after the checkpoint."""
        if self.sequence_number is None:
            return True
        return position_key(sequence_number, sub_sequence_number) > position_key(self.sequence_number, self.sub_sequence_number)


@dataclass
class StreamState:
    stream_arn: Optional[str] = None
    stream_created_at: Optional[str] = None
    shards: Dict[str, ShardState] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "stream_arn": self.stream_arn,
            "stream_created_at": self.stream_created_at,
            "shards": {shard_id: shard.to_dict() for shard_id, shard in sorted(self.shards.items())},
        }

    @classmethod
    def from_dict(cls, raw: Optional[Mapping[str, Any]], stream: str = "?") -> Optional["StreamState"]:
        """Parse a saved state; ``None`` for an empty one. A malformed or newer state is a config_error."""
        if not raw:
            return None
        from source_kinesis.errors import config_error

        version = raw.get("version")
        if version != STATE_VERSION:
            raise config_error(
                f"The saved state of stream '{stream}' has version {version!r}; this connector reads version {STATE_VERSION}. "
                "Reset the stream's state, or use the connector version that wrote it."
            )
        try:
            shards = {str(k): ShardState.from_dict(v) for k, v in (raw.get("shards") or {}).items()}
        except (TypeError, ValueError, AttributeError) as exc:
            raise config_error(f"The saved state of stream '{stream}' is malformed ({exc}). Reset the stream's state.") from None
        return cls(stream_arn=raw.get("stream_arn"), stream_created_at=raw.get("stream_created_at"), shards=shards)

    def prune(self, listed_shard_ids: set) -> List[str]:
        """Drop shards that are finished and no longer listed (trimmed). Returns the dropped ids."""
        dropped = [sid for sid, s in self.shards.items() if s.finished and sid not in listed_shard_ids]
        for sid in dropped:
            del self.shards[sid]
        return dropped
