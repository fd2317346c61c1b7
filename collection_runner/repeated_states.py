"""The runner passes a STREAM state on only when it differs from the last one committed or passed on for its stream.

A following source checkpoints every ``checkpoint_interval_seconds`` (0.5 s as the runner tunes it for follow mode:
``configs.follow_tuned``) whether or not anything arrived (an Airbyte ``read`` documents those idle checkpoints: the
platform shows progress with them). In the runner a state equal to the last one changes nothing — the positions did
not move, so no record was read since — yet each would be a commit: a transaction, a WAL write, on PostgreSQL a round
trip. So an idle runner makes no commits. A state differs as soon as any shard's position moves, so dropping an equal
one never delays a record. What the runner did after each commit and still must do while idle (checking its
PostgreSQL lock) runs at each dropped state instead (``on_repeat``).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional

import orjson
from airbyte_cdk.models import AirbyteMessage, AirbyteStateType, Type


def _canonical(stream_state: Any) -> Optional[bytes]:
    """A stream state's JSON with sorted keys (None when it cannot be written as JSON: then it is never dropped)."""
    if hasattr(stream_state, "__dict__") and not isinstance(stream_state, Mapping):
        stream_state = dict(vars(stream_state))  # AirbyteStateBlob holds its fields as attributes
    try:
        return orjson.dumps(stream_state, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None


def _descriptor(name: Any, namespace: Any) -> tuple:
    return (name, namespace)


class RepeatedStates:
    """``filter`` drops STREAM states equal to the last one known for their stream; ``committed`` are the states the
    run resumed from (STREAM state messages as dicts, as the store returns them)."""

    def __init__(self, committed: List[Dict[str, Any]], on_repeat: Optional[Callable[[], None]] = None) -> None:
        """``on_repeat`` runs for each dropped state: what the runner did after each commit that still needs doing
        while nothing is committed (checking that its PostgreSQL lock still holds)."""
        self.last: Dict[tuple, bytes] = {}
        self.dropped = 0
        self.on_repeat = on_repeat
        for message in committed:
            stream = message.get("stream") or {}
            descriptor = stream.get("stream_descriptor") or {}
            text = _canonical(stream.get("stream_state"))
            if text is not None:
                self.last[_descriptor(descriptor.get("name"), descriptor.get("namespace"))] = text

    def filter(self, messages: Iterable[Any]) -> Iterator[Any]:
        for message in messages:
            if self._repeated(message):
                self.dropped += 1
                if self.on_repeat is not None:
                    self.on_repeat()
                continue
            yield message

    def _repeated(self, message: Any) -> bool:
        key_and_state = _stream_state(message)
        if key_and_state is None:
            return False
        key, stream_state = key_and_state
        text = _canonical(stream_state)
        if text is None:
            self.last.pop(key, None)
            return False
        if self.last.get(key) == text:
            return True
        self.last[key] = text
        return False


def _stream_state(message: Any) -> Optional[tuple]:
    """((name, namespace), stream_state) of a STREAM state message — a CDK message (a source in this process) or a
    dict (the source process's line) — else None."""
    if type(message) is dict:
        if message.get("type") != "STATE":
            return None
        state = message.get("state")
        if not isinstance(state, dict) or (state.get("type") or "STREAM") != "STREAM" or not isinstance(state.get("stream"), dict):
            return None
        descriptor = state["stream"].get("stream_descriptor")
        if not isinstance(descriptor, dict):
            return None
        return _descriptor(descriptor.get("name"), descriptor.get("namespace")), state["stream"].get("stream_state")
    if not isinstance(message, AirbyteMessage) or message.type != Type.STATE or message.state is None:
        return None
    state = message.state
    if state.type != AirbyteStateType.STREAM or state.stream is None:
        return None
    descriptor = state.stream.stream_descriptor
    return _descriptor(descriptor.name, descriptor.namespace), state.stream.stream_state
