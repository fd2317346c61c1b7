"""Shard lineage: which shards exist, who their parents are, and when a shard may be read.

Kinesis keeps per-partition-key order across resharding only if a child shard is read after **all** its parents
(one for a split, two for a merge) are drained. A shard is *ready* when every parent is finished (in the saved
state or during this sync) or gone (trimmed: neither listed by ``ListShards`` nor in the state).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from source_kinesis.errors import MalformedResponse, translate
from source_kinesis.pagination import Pagination
from source_kinesis.throttling import CONTROL_PLANE_RETRY_SECONDS, call_kinesis


@dataclass(frozen=True)
class ShardInfo:
    shard_id: str
    parents: Tuple[str, ...] = ()
    hash_range: Optional[Tuple[int, int]] = None

    @classmethod
    def from_list_shards(cls, raw: Mapping[str, Any]) -> "ShardInfo":
        parents = tuple(p for p in (raw.get("ParentShardId"), raw.get("AdjacentParentShardId")) if p)
        return cls(raw["ShardId"], parents, _hash_range(raw.get("HashKeyRange")))

    @classmethod
    def from_child_shard(cls, raw: Mapping[str, Any]) -> "ShardInfo":
        """A ``ChildShards`` entry of the last GetRecords response of a closed shard."""
        return cls(raw["ShardId"], tuple(raw.get("ParentShards") or ()), _hash_range(raw.get("HashKeyRange")))


def _hash_range(raw: Optional[Mapping[str, Any]]) -> Optional[Tuple[int, int]]:
    if not raw:
        return None
    return int(raw["StartingHashKey"]), int(raw["EndingHashKey"])


def list_shards(client: Any, stream_ref: Mapping[str, str], stream_name: str, retry_budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS) -> List[ShardInfo]:
    """Every shard still in retention (open and closed), across all pages, under the bounds of ``pagination.py``
    (a repeated NextToken, a page/item limit, a total time bound).

    ``stream_ref`` is ``{"StreamName": ...}`` or ``{"StreamARN": ...}``. A call that carries ``NextToken`` must not
    also carry the stream name/ARN (Kinesis rejects it), so later pages send the token alone.
    """
    shards: Dict[str, ShardInfo] = {}
    kwargs: Dict[str, Any] = dict(stream_ref)
    pages = Pagination("ListShards", f"stream '{stream_name}'", retry_budget_seconds)
    try:
        while True:
            response = call_kinesis("ListShards", client.list_shards, dict(kwargs, MaxResults=1000), budget_seconds=pages.call_budget())
            page = response.get("Shards")
            if not isinstance(page, list):
                raise MalformedResponse(f"ListShards returned Shards that are not a list: {str(page)[:100]}")
            pages.add_items(len(page))
            for raw in page:
                info = _shard_info(raw)
                shards.setdefault(info.shard_id, info)
            token = response.get("NextToken")
            if not token:
                return list(shards.values())
            if not isinstance(token, str):
                raise MalformedResponse(f"ListShards returned a NextToken that is not a string: {str(token)[:100]}")
            pages.next_token(token)
            kwargs = {"NextToken": token}
    except Exception as exc:  # noqa: BLE001 - translated into an actionable Airbyte error
        raise translate(exc, "ListShards", stream_name) from None


def _shard_info(raw: Any) -> ShardInfo:
    try:
        info = ShardInfo.from_list_shards(raw)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise MalformedResponse(f"ListShards returned a shard that is not a Kinesis shard ({type(exc).__name__}: {str(raw)[:100]})") from None
    if not isinstance(info.shard_id, str) or not all(isinstance(p, str) for p in info.parents):
        raise MalformedResponse(f"ListShards returned a shard whose ShardId/parents are not strings: {str(raw)[:100]}")
    return info


@dataclass
class ShardGraph:
    """Known shards of one stream, and their parents, for readiness decisions on the emitting thread."""

    shards: Dict[str, ShardInfo] = field(default_factory=dict)
    listed: set = field(default_factory=set)  # ids ListShards returned at the start of the sync

    def add(self, info: ShardInfo) -> bool:
        """Register a shard; True if it was new."""
        if info.shard_id in self.shards:
            return False
        self.shards[info.shard_id] = info
        return True

    def add_listed(self, infos: Iterable[ShardInfo]) -> None:
        for info in infos:
            self.add(info)
            self.listed.add(info.shard_id)

    def is_ready(self, shard_id: str, finished: set) -> bool:
        """All parents finished, or gone (trimmed: unknown to this graph)."""
        return all(parent in finished or parent not in self.shards for parent in self.shards[shard_id].parents)

    def children_of(self, shard_id: str) -> List[str]:
        return sorted(s.shard_id for s in self.shards.values() if shard_id in s.parents)

    def order(self) -> List[str]:
        """Shard ids sorted so that parents come before children (ids grow with resharding)."""
        return sorted(self.shards)
