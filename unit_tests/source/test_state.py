"""Versioned per-stream state: round trips, validation, pruning, integer sequence comparison."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from hypothesis import given
from hypothesis import strategies as st

from source_kinesis.state import STATE_VERSION, ShardState, StreamState, iso_ms, parse_iso, position_key

SEQ_A = "49590338271490256608559692538361571095921575989136588898"  # 56 digits
SEQ_B = "49590338271490256608559692540925702759324208523137515618"


def sample() -> StreamState:
    return StreamState(
        stream_arn="arn:aws:kinesis:us-east-1:123456789012:stream/orders",
        stream_created_at="2026-11-25T21:30:38.123Z",
        shards={
            "shardId-000000000002": ShardState(sequence_number=SEQ_B, sub_sequence_number=3, parents=["shardId-000000000000", "shardId-000000000001"]),
            "shardId-000000000000": ShardState(sequence_number=SEQ_A, finished=True),
            "shardId-000000000001": ShardState(started_at="2026-11-25T21:31:00.000Z"),
        },
    )


def test_round_trip_through_json() -> None:
    state = sample()
    blob = json.loads(json.dumps(state.to_dict()))
    assert blob["version"] == STATE_VERSION == 1
    assert list(blob["shards"]) == sorted(blob["shards"])  # stable order
    assert blob["shards"]["shardId-000000000002"] == {
        "sequence_number": SEQ_B,
        "sub_sequence_number": 3,
        "finished": False,
        "parents": ["shardId-000000000000", "shardId-000000000001"],
        "started_at": None,
    }
    again = StreamState.from_dict(blob, "orders")
    assert again == state
    assert again.to_dict() == blob


def test_sequence_numbers_stay_strings_even_if_saved_as_ints() -> None:
    blob = sample().to_dict()
    blob["shards"]["shardId-000000000000"]["sequence_number"] = int(SEQ_A)
    state = StreamState.from_dict(blob)
    assert state.shards["shardId-000000000000"].sequence_number == SEQ_A


def test_missing_optional_fields_get_defaults() -> None:
    state = StreamState.from_dict({"version": 1, "shards": {"s-1": {}}})
    shard = state.shards["s-1"]
    assert (shard.sequence_number, shard.sub_sequence_number, shard.finished, shard.parents, shard.started_at) == (None, 0, False, [], None)
    assert state.stream_arn is None


@pytest.mark.parametrize("empty", [None, {}])
def test_empty_state_is_none(empty) -> None:
    assert StreamState.from_dict(empty, "orders") is None


@pytest.mark.parametrize("version", [2, 0, "1", None])
def test_version_mismatch_is_config_error(version) -> None:
    blob = sample().to_dict()
    blob["version"] = version
    if version is None:
        del blob["version"]
    with pytest.raises(AirbyteTracedException) as info:
        StreamState.from_dict(blob, "orders")
    assert info.value.failure_type == FailureType.config_error
    assert "'orders'" in info.value.message and repr(version) in info.value.message and "Reset" in info.value.message


@pytest.mark.parametrize(
    "shards",
    [
        {"s-1": {"sequence_number": "12abc"}},
        {"s-1": {"sequence_number": "1.5"}},
        {"s-1": {"sub_sequence_number": "x"}},
        {"s-1": "not an object"},
        {"s-1": {"parents": 5}},
        ["s-1"],
    ],
)
def test_malformed_state_is_config_error(shards) -> None:
    with pytest.raises(AirbyteTracedException) as info:
        StreamState.from_dict({"version": 1, "shards": shards}, "orders")
    assert info.value.failure_type == FailureType.config_error
    assert "malformed" in info.value.message and "'orders'" in info.value.message


def test_prune_keeps_unlisted_unfinished_and_drops_finished_unlisted() -> None:
    state = StreamState(
        shards={
            "listed-finished": ShardState(finished=True),
            "listed-open": ShardState(),
            "gone-finished": ShardState(finished=True, sequence_number="10"),
            "gone-unfinished": ShardState(sequence_number="5"),
        }
    )
    dropped = state.prune({"listed-finished", "listed-open", "new-shard"})
    assert dropped == ["gone-finished"]
    assert set(state.shards) == {"listed-finished", "listed-open", "gone-unfinished"}
    assert state.prune({"listed-finished", "listed-open"}) == []


@pytest.mark.parametrize(
    "checkpoint, record, after",
    [
        ("9", "10", True),  # string comparison would say "10" < "9"
        ("100", "99", False),  # string comparison would say "99" > "100"
        ("99", "100", True),
        (SEQ_A, SEQ_B, True),
        (SEQ_B, SEQ_A, False),
        ("9" * 55, "1" + "0" * 55, True),  # 55 vs 56 digits
        ("1" + "0" * 55, "9" * 55, False),
        (SEQ_A, SEQ_A, False),
    ],
)
def test_is_after_compares_integers(checkpoint: str, record: str, after: bool) -> None:
    assert ShardState(sequence_number=checkpoint).is_after(record, 0) is after


def test_is_after_sub_sequence_ordering() -> None:
    shard = ShardState(sequence_number=SEQ_A, sub_sequence_number=2)
    assert not shard.is_after(SEQ_A, 0)
    assert not shard.is_after(SEQ_A, 2)
    assert shard.is_after(SEQ_A, 3)
    assert shard.is_after(SEQ_B, 0)  # a later Kinesis record, whatever its sub-sequence
    assert not ShardState(sequence_number="10", sub_sequence_number=0).is_after("9", 99)
    assert ShardState(sequence_number="9", sub_sequence_number=10).is_after("9", 11)  # 11 > 10 as ints, not strings


def test_no_checkpoint_means_everything_is_after() -> None:
    assert ShardState().is_after("0", 0)


@given(
    st.integers(min_value=0, max_value=10**56),
    st.integers(min_value=0, max_value=50),
    st.integers(min_value=0, max_value=10**56),
    st.integers(min_value=0, max_value=50),
)
def test_is_after_matches_integer_tuple_order(cp_seq: int, cp_sub: int, seq: int, sub: int) -> None:
    shard = ShardState(sequence_number=str(cp_seq), sub_sequence_number=cp_sub)
    assert shard.is_after(str(seq), sub) == ((seq, sub) > (cp_seq, cp_sub))
    assert position_key(str(seq), sub) == (seq, sub)


def test_iso_ms_round_trip() -> None:
    moment = dt.datetime(2026, 11, 25, 21, 30, 38, 123987, tzinfo=dt.timezone.utc)
    text = iso_ms(moment)
    assert text == "2026-11-25T21:30:38.123Z"
    assert parse_iso(text) == moment.replace(microsecond=123000)
    eastern = moment.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    assert iso_ms(eastern) == text
    assert parse_iso("2026-11-25T21:30:38").tzinfo == dt.timezone.utc
