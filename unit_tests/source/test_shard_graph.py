"""ShardGraph.is_ready, the rule behind the ordering guarantee (a child shard is read only after every parent it has
was read to its end), on the lineages resharding makes: a split, a merge, a parent trimmed by retention, a parent
missing from ListShards, and parents finished in an earlier sync (known only from the state). Until now only
kinesis-mock's resharding exercised it."""
from __future__ import annotations

import pytest

from source_kinesis.errors import MalformedResponse
from source_kinesis.lineage import ShardGraph, ShardInfo

P, Q, A, B, M = (f"shardId-00000000000{i}" for i in range(5))


def graph(*infos: ShardInfo) -> ShardGraph:
    built = ShardGraph()
    built.add_listed(infos)
    return built


def test_a_split_s_children_wait_for_their_parent():
    g = graph(ShardInfo(P), ShardInfo(A, (P,)), ShardInfo(B, (P,)))
    assert g.is_ready(P, finished=set())
    assert not g.is_ready(A, finished=set()) and not g.is_ready(B, finished=set())
    assert g.is_ready(A, finished={P}) and g.is_ready(B, finished={P})
    assert g.order().index(P) < g.order().index(A) < g.order().index(B)


def test_a_merge_waits_for_both_parents():
    g = graph(ShardInfo(P), ShardInfo(Q), ShardInfo(M, (P, Q)))
    assert not g.is_ready(M, finished=set())
    assert not g.is_ready(M, finished={P})  # the adjacent parent still holds earlier records of its keys
    assert not g.is_ready(M, finished={Q})
    assert g.is_ready(M, finished={P, Q})


def test_a_parent_trimmed_by_retention_does_not_block_its_children():
    # ListShards no longer returns the parent: nothing of it can be read, so nothing precedes the child
    g = graph(ShardInfo(A, (P,)), ShardInfo(B, (P,)))
    assert g.is_ready(A, finished=set()) and g.is_ready(B, finished=set())


def test_a_merge_with_one_parent_missing_from_list_shards_waits_for_the_other():
    g = graph(ShardInfo(Q), ShardInfo(M, (P, Q)))  # P trimmed, Q still listed and unread
    assert not g.is_ready(M, finished=set())
    assert g.is_ready(M, finished={Q})


def test_parents_finished_in_an_earlier_sync_count_as_finished():
    # the state says P and Q were read to their end last sync; both are still listed (within retention)
    g = graph(ShardInfo(P), ShardInfo(Q), ShardInfo(M, (P, Q)), ShardInfo(A, (M,)))
    earlier = {P, Q}
    assert g.is_ready(M, finished=earlier)
    assert not g.is_ready(A, finished=earlier)
    assert g.is_ready(A, finished=earlier | {M})


def test_children_learnt_from_child_shards_join_the_graph_once():
    g = graph(ShardInfo(P))
    assert g.add(ShardInfo.from_child_shard({"ShardId": A, "ParentShards": [P], "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "9"}}))
    assert not g.add(ShardInfo(A, (P,)))  # listed again later: already known, keeps its parents
    assert not g.is_ready(A, finished=set()) and g.is_ready(A, finished={P})


def test_a_lineage_cycle_is_refused():
    g = graph(ShardInfo(P), ShardInfo(A, (P,)))
    with pytest.raises(MalformedResponse, match="own ancestor"):
        g.add(ShardInfo(B, (B,)))
    cyclic = ShardGraph()
    cyclic.add(ShardInfo(A, (B,)))
    with pytest.raises(MalformedResponse, match="own ancestor"):
        cyclic.add(ShardInfo(B, (A,)))
