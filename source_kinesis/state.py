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
Sequence numbers are compared as integers, never as strings. Everywhere one is parsed (a saved state, a GetRecords
response) it must be ASCII decimal digits only (``[0-9]+``): ``int()`` alone would also take ``" 12 "``, ``"1_000"``
or other scripts' digits (``"١٢"``), which Kinesis never sends. A state that breaks a rule is a config_error naming
the stream, the shard and the field.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

STATE_VERSION = 1
SEQUENCE_NUMBER_RE = re.compile(r"[0-9]{1,256}")


def is_sequence_number(value: Any) -> bool:
    """A Kinesis sequence number: a string of ASCII decimal digits."""
    return isinstance(value, str) and SEQUENCE_NUMBER_RE.fullmatch(value) is not None


def iso_ms(value: dt.datetime) -> str:
    """ISO-8601 UTC with milliseconds and a Z, the format of every timestamp this source writes."""
    value = value.astimezone(dt.timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def position_key(sequence_number: str, sub_sequence_number: int) -> Tuple[int, int]:
    return int(sequence_number), int(sub_sequence_number)


def _shown(value: Any) -> str:
    """A value for an error message: its JSON-ish repr, cut short (states hold no secrets, but may be huge)."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
        """Parse one shard's saved position; a ValueError names the field that breaks the documented shape."""
        if not isinstance(raw, Mapping):
            raise ValueError(f"must be an object, not {_shown(raw)}")
        seq = raw.get("sequence_number")
        if type(seq) is int and seq >= 0:  # a JSON number of digits (hand-written states): exact in Python
            seq = str(seq)
        if seq is not None and not is_sequence_number(seq):
            raise ValueError(f"'sequence_number' must be null or a string of decimal digits 0-9, not {_shown(seq)}")
        sub = raw.get("sub_sequence_number", 0)
        if sub is None:
            sub = 0
        if isinstance(sub, str) and SEQUENCE_NUMBER_RE.fullmatch(sub):
            sub = int(sub)
        if isinstance(sub, bool) or not isinstance(sub, int) or sub < 0:
            raise ValueError(f"'sub_sequence_number' must be a non-negative integer, not {_shown(sub)}")
        finished = raw.get("finished", False)
        if not isinstance(finished, bool):
            raise ValueError(f"'finished' must be true or false, not {_shown(finished)}")
        parents = raw.get("parents") or []
        if not isinstance(parents, list) or not all(isinstance(p, str) and p for p in parents):
            raise ValueError(f"'parents' must be a list of shard ids, not {_shown(parents)}")
        started_at = raw.get("started_at")
        if started_at is not None:
            if not isinstance(started_at, str):
                raise ValueError(f"'started_at' must be null or an ISO-8601 timestamp string, not {_shown(started_at)}")
            try:
                parse_iso(started_at)
            except ValueError:
                raise ValueError(f"'started_at' must be null or an ISO-8601 timestamp like 2026-11-25T21:30:38.123Z, not {_shown(started_at)}") from None
        return cls(sequence_number=seq, sub_sequence_number=sub, finished=finished, parents=list(parents), started_at=started_at)

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

        if not isinstance(raw, Mapping):
            raise config_error(f"The saved state of stream '{stream}' is not an object ({_shown(raw)}). Reset the stream's state.")
        version = raw.get("version")
        if type(version) is not int or version != STATE_VERSION:
            raise config_error(
                f"The saved state of stream '{stream}' has version {version!r}; this connector reads version {STATE_VERSION}. "
                "Reset the stream's state, or use the connector version that wrote it."
            )
        for name in ("stream_arn", "stream_created_at"):
            if raw.get(name) is not None and not isinstance(raw.get(name), str):
                raise config_error(f"The saved state of stream '{stream}' is malformed: '{name}' must be a string, not {_shown(raw.get(name))}. Reset the stream's state.")
        raw_shards = raw.get("shards") or {}
        if not isinstance(raw_shards, Mapping):
            raise config_error(f"The saved state of stream '{stream}' is malformed: 'shards' must be an object, not {_shown(raw_shards)}. Reset the stream's state.")
        shards: Dict[str, ShardState] = {}
        for shard_id, value in raw_shards.items():
            try:
                shards[str(shard_id)] = ShardState.from_dict(value)
            except (TypeError, ValueError, AttributeError) as exc:
                raise config_error(
                    f"The saved state of stream '{stream}' is malformed: shard {str(shard_id)[:100]}: {exc}. Reset the stream's state."
                ) from None
        return cls(stream_arn=raw.get("stream_arn"), stream_created_at=raw.get("stream_created_at"), shards=shards)

    def prune(self, listed_shard_ids: set) -> List[str]:
        """Drop shards that are finished and no longer listed (trimmed). Returns the dropped ids."""
        dropped = [sid for sid, s in self.shards.items() if s.finished and sid not in listed_shard_ids]
        for sid in dropped:
            del self.shards[sid]
        return dropped
