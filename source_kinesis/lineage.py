"""Shard lineage: which shards exist, who their parents are, and when a shard may be read.

Kinesis keeps per-partition-key order across resharding only if a child shard is read after **all** its parents
(one for a split, two for a merge) are drained. A shard is *ready* when every parent is finished (in the saved
state or during this sync) or gone (trimmed: neither listed by ``ListShards`` nor in the state).

What an endpoint says about shards is checked before it is believed (a broken or hostile endpoint must not make
shards silently unreadable or crash the emitting thread): shard ids and parents are non-empty strings, hash keys are
ASCII decimal digits within 0..2^128-1 (``int()`` alone would take ``"1_0"``, ``" 1"`` or other scripts' digits),
``ChildShards`` is a list of such shards, and no shard is its own ancestor (a shard whose parents lead back to it
could never become ready: a bounded sync would end without ever reading it). A breach is a ``MalformedResponse``:
a transient_error naming the call, the stream and the shard.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Set, Tuple

from source_kinesis.errors import MalformedResponse


@dataclass(frozen=True)
class ShardInfo:
    shard_id: str
    parents: Tuple[str, ...] = ()
    hash_range: Optional[Tuple[int, int]] = None

    @classmethod
    def from_list_shards(cls, raw: Mapping[str, Any]) -> "ShardInfo":
        """A ``Shards`` entry of ListShards; a ``MalformedResponse`` if it is not shaped like one."""
        if not isinstance(raw, Mapping):
            raise MalformedResponse(f"ListShards returned a shard that is not an object: {_shown(raw)}")
        parents = tuple(p for p in (raw.get("ParentShardId"), raw.get("AdjacentParentShardId")) if p is not None)
        return cls._checked("ListShards", raw, raw.get("ShardId"), parents)

    @classmethod
    def from_child_shard(cls, raw: Mapping[str, Any]) -> "ShardInfo":
        """A ``ChildShards`` entry of the last GetRecords response of a closed shard."""
        if not isinstance(raw, Mapping):
            raise MalformedResponse(f"GetRecords returned a ChildShards entry that is not an object: {_shown(raw)}")
        parents = raw.get("ParentShards") or ()
        if not isinstance(parents, (list, tuple)):
            raise MalformedResponse(f"GetRecords returned a child shard whose ParentShards is not a list: {_shown(raw)}")
        return cls._checked("GetRecords", raw, raw.get("ShardId"), tuple(parents))

    @classmethod
    def _checked(cls, action: str, raw: Mapping[str, Any], shard_id: Any, parents: Tuple[Any, ...]) -> "ShardInfo":
        if not _is_shard_id(shard_id) or not all(_is_shard_id(p) for p in parents):
            raise MalformedResponse(f"{action} returned a shard whose ShardId or parent ids are not shard ids: {_shown(raw)}")
        if shard_id in parents:
            raise MalformedResponse(f"{action} returned shard {shard_id} as its own parent")
        return cls(shard_id, parents, _hash_range(action, shard_id, raw.get("HashKeyRange")))


MAX_HASH_KEY = 2**128 - 1
HASH_KEY_RE = re.compile(r"[0-9]{1,39}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 100 else text[:97] + "..."


def _is_shard_id(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 256


def _hash_key(action: str, shard_id: str, value: Any) -> int:
    if not isinstance(value, str) or HASH_KEY_RE.fullmatch(value) is None or int(value) > MAX_HASH_KEY:
        raise MalformedResponse(f"{action} returned shard {shard_id} with a hash key that is not a decimal number 0..2^128-1: {_shown(value)}")
    return int(value)


def _hash_range(action: str, shard_id: str, raw: Any) -> Optional[Tuple[int, int]]:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise MalformedResponse(f"{action} returned shard {shard_id} with a HashKeyRange that is not an object: {_shown(raw)}")
    start, end = _hash_key(action, shard_id, raw.get("StartingHashKey")), _hash_key(action, shard_id, raw.get("EndingHashKey"))
    if start > end:
        raise MalformedResponse(f"{action} returned shard {shard_id} with a HashKeyRange that ends before it starts: {_shown(raw)}")
    return start, end


def child_shards(raw: Any, shard_id: str) -> List[ShardInfo]:
    """The ``ChildShards`` of the last GetRecords page of ``shard_id``, checked (absent or null: none)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MalformedResponse(f"GetRecords returned ChildShards that are not a list: {_shown(raw)}")
    children = [ShardInfo.from_child_shard(entry) for entry in raw]
    if any(child.shard_id == shard_id for child in children):
        raise MalformedResponse(f"GetRecords named shard {shard_id} among its own ChildShards")
    return children


@dataclass
class ShardGraph:
    """Known shards of one stream, and their parents, for readiness decisions on the emitting thread."""

    shards: Dict[str, ShardInfo] = field(default_factory=dict)
    listed: set = field(default_factory=set)  # ids ListShards returned at the start of the sync

    def add(self, info: ShardInfo) -> bool:
        """Register a shard; True if it was new. A known shard keeps the parents it was first registered with, so
        only a new shard can close a cycle: one whose parents lead back to it is a ``MalformedResponse``."""
        if info.shard_id in self.shards:
            return False
        if info.shard_id in self._ancestors(info.parents):
            raise MalformedResponse(f"shard {info.shard_id} would be its own ancestor (parents {', '.join(info.parents)}): the shard lineage has a cycle")
        self.shards[info.shard_id] = info
        return True

    def _ancestors(self, parents: Iterable[str]) -> Set[str]:
        """Every known shard reachable through parent links (each visited once: bounded by the graph's size)."""
        seen: Set[str] = set()
        todo = list(parents)
        while todo:
            shard_id = todo.pop()
            if shard_id in seen:
                continue
            seen.add(shard_id)
            known = self.shards.get(shard_id)
            if known is not None:
                todo.extend(known.parents)
        return seen

    def add_listed(self, infos: Iterable[ShardInfo]) -> None:
        for info in infos:
            self.add(info)
            self.listed.add(info.shard_id)

    def is_ready(self, shard_id: str, finished: set) -> bool:
        """All parents finished, or gone (trimmed: unknown to this graph)."""
        return all(parent in finished or parent not in self.shards for parent in self.shards[shard_id].parents)

    def order(self) -> List[str]:
        """Shard ids sorted so that parents come before children (ids grow with resharding)."""
        return sorted(self.shards)
