"""The runner does not commit a state equal to the last one committed or passed on for its stream (issue 12, item 4:
an idle runner makes no commits)."""
from __future__ import annotations

from airbyte_cdk.models import (
    AirbyteMessage, AirbyteRecordMessage, AirbyteStateBlob, AirbyteStateMessage, AirbyteStateType, AirbyteStreamState,
    StreamDescriptor, Type,
)

from collection_runner.repeated_states import RepeatedStates


def state(name: str, shards: dict, namespace: str | None = None) -> AirbyteMessage:
    return AirbyteMessage(type=Type.STATE, state=AirbyteStateMessage(
        type=AirbyteStateType.STREAM,
        stream=AirbyteStreamState(stream_descriptor=StreamDescriptor(name=name, namespace=namespace),
                                  stream_state=AirbyteStateBlob({"version": 1, "shards": shards})),
    ))


def record(name: str, n: int) -> AirbyteMessage:
    return AirbyteMessage(type=Type.RECORD, record=AirbyteRecordMessage(stream=name, data={"n": n}, emitted_at=1))


def passed(messages, committed=()) -> list:
    return list(RepeatedStates(list(committed)).filter(messages))


def test_a_state_equal_to_the_last_one_of_its_stream_is_dropped_records_and_changed_states_pass():
    s0, s1 = state("a", {"0": {"seq": "1"}}), state("a", {"0": {"seq": "2"}})
    r1 = record("a", 1)
    out = passed([s0, state("a", {"0": {"seq": "1"}}), r1, s1, state("a", {"0": {"seq": "2"}}), state("a", {"0": {"seq": "1"}})])
    assert out[:3] == [s0, r1, s1] and len(out) == 4  # the last one differs from its predecessor: passed on
    assert out[3].state.stream.stream_state.shards == {"0": {"seq": "1"}}


def test_the_state_the_run_resumed_from_counts_as_the_last_one_and_key_order_does_not_matter():
    committed = [{"type": "STREAM", "stream": {"stream_descriptor": {"name": "a"},
                                               "stream_state": {"shards": {"0": {"seq": "1"}}, "version": 1}}}]
    assert passed([state("a", {"0": {"seq": "1"}})], committed) == []
    moved = state("a", {"0": {"seq": "9"}})
    assert passed([moved], committed) == [moved]


def test_streams_and_namespaces_are_kept_apart():
    a, b, b_ns = state("a", {"0": {}}), state("b", {"0": {}}), state("b", {"0": {}}, namespace="n")
    assert passed([a, b, b_ns, state("a", {"0": {}})]) == [a, b, b_ns]


def test_other_messages_pass_untouched():
    global_state = AirbyteMessage(type=Type.STATE, state=AirbyteStateMessage(type=AirbyteStateType.GLOBAL))
    items = [global_state, global_state, {"type": "STATE"}, b"line"]
    assert passed(items) == items


def test_each_dropped_state_runs_the_check_a_commit_would_have_run():
    calls = []
    s = state("a", {"0": {"seq": "1"}})
    out = list(RepeatedStates([], on_repeat=lambda: calls.append(1)).filter([s, state("a", {"0": {"seq": "1"}}),
                                                                              state("a", {"0": {"seq": "1"}})]))
    assert out == [s] and calls == [1, 1]

    def lost():
        raise RuntimeError("lock lost")

    try:
        list(RepeatedStates([], on_repeat=lost).filter([s, state("a", {"0": {"seq": "1"}})]))
    except RuntimeError as exc:
        assert "lock lost" in str(exc)
    else:
        raise AssertionError("the check's error must stop the stream")
