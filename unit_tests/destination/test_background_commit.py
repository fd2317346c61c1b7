"""The DuckDB store commits on a background thread while the write loop reads on (stores/duckdb_store.py): a state
is still echoed only after its COMMIT finished, a failed COMMIT acknowledges nothing, and the overlap is real."""
from __future__ import annotations

import json
import time

import pytest

from destination_collection.stores import duckdb_store
from unit_tests.destination.harness import record, state, stream

S = "orders"


def test_echo_waits_for_a_slow_background_commit_while_reading_goes_on(harness, monkeypatch):
    original = duckdb_store._Commit._run
    windows: list[list[float]] = []

    def slow(self, con):
        started = time.monotonic()
        time.sleep(0.3)
        original(self, con)
        windows.append([started, time.monotonic()])

    monkeypatch.setattr(duckdb_store._Commit, "_run", slow)
    pulled: list[float] = []

    def feed():
        for batch in range(3):
            for i in range(50):
                pulled.append(time.monotonic())
                yield json.dumps(record(S, {"k": batch * 100 + i}))
                if batch < 2 and i == 0:
                    time.sleep(0.001)
            pulled.append(time.monotonic())
            yield json.dumps(state(S, {"batch": batch}, state_id=batch))
            time.sleep(0.05)  # the source's next page: the loop goes back to reading while the commit runs

    seen = []
    for echo in harness.iter_write([stream(S)], feed()):
        # at the moment the echo comes out, its state (and records) are committed: another connection sees them
        committed = harness.states()[S]
        seen.append((echo["state"]["id"], committed["id"], len(harness.docs(S))))
    assert [s[0] for s in seen] == [0, 1, 2]
    for echoed, committed, docs in seen:
        assert committed >= echoed and docs >= (echoed + 1) * 50
    # lines were read while a commit was running: the point of committing in the background
    assert any(start < t < end for start, end in windows for t in pulled), "no line was read during a commit"


def test_a_failed_background_commit_acknowledges_nothing_and_fails_the_write(harness, monkeypatch):
    harness.write([stream(S)], [record(S, {"k": 0}), state(S, {"upto": 0}, state_id=1)])

    def fail(self, con):
        self.error = RuntimeError("disk full during COMMIT")

    monkeypatch.setattr(duckdb_store._Commit, "_run", fail)
    echoes = []
    with pytest.raises(RuntimeError, match="disk full during COMMIT"):
        for echo in harness.iter_write([stream(S)], [record(S, {"k": 1}), state(S, {"upto": 1}, state_id=2),
                                                    record(S, {"k": 2})]):
            echoes.append(echo)
    monkeypatch.undo()
    assert echoes == []
    assert set(harness.docs(S)) == {"[0]"}  # the uncommitted batch is gone with its state
    assert harness.states()[S]["id"] == 1


def test_synchronous_commit_can_be_chosen(harness, monkeypatch):
    harness.store_config = {**harness.store_config, "background_commit": False}  # store.background_commit
    started = []
    monkeypatch.setattr(duckdb_store._Commit, "__init__", lambda self, con: started.append(1))
    echoes = harness.write([stream(S)], [record(S, {"k": 1}), state(S, {"upto": 1}, state_id=5)])
    assert [e["state"]["id"] for e in echoes] == [5] and started == []
    assert harness.states()[S]["id"] == 5


def test_checkpoint_threshold_is_a_config_field(harness):
    harness.store_config = {**harness.store_config, "checkpoint_threshold": "128MB"}
    harness.write([stream(S)], [record(S, {"k": 1})])
    store = harness.store()
    try:
        assert store.fetchall("SELECT current_setting('checkpoint_threshold')")[0][0] in ("128.0 MB", "122.0 MiB")
    finally:
        store.close()
    from destination_collection.config import parse_config
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    with pytest.raises(AirbyteTracedException, match="store.duckdb.checkpoint_threshold|checkpoint_threshold"):
        parse_config({"store": {**harness.store_config, "checkpoint_threshold": "lots"}})


@pytest.mark.parametrize("configured", [None, 3])
def test_duckdb_threads_run_the_statements_over_a_whole_collection_and_one_thread_the_rest(harness, monkeypatch,
                                                                                             configured):
    import duckdb

    default = duckdb.connect().execute("SELECT current_setting('threads')").fetchone()[0]
    if configured is not None:
        harness.store_config = {**harness.store_config, "threads": configured}  # store.threads
    seen: list[tuple[str, int]] = []
    store_class = duckdb_store.DuckDBStore
    originals = {name: getattr(store_class, name) for name in ("execute", "fetchall")}

    def spying(name):
        def spy(self, sql, *args, **kwargs):
            threads = originals["fetchall"](self, "SELECT current_setting('threads')")[0][0]
            kind = "join" if 'FROM "orders" t JOIN' in sql else "state" if "_collection_state" in sql else "other"
            seen.append((kind, threads))
            return originals[name](self, sql, *args, **kwargs)
        return spy

    for name in originals:
        monkeypatch.setattr(store_class, name, spying(name))
    for batch in range(2):  # the second batch updates the first's document: its stored row is looked up by a join
        echoes = harness.write([stream(S)], [record(S, {"k": 1, "v": batch}), state(S, {"upto": batch}, state_id=batch)])
        assert [e["state"]["id"] for e in echoes] == [batch]
    monkeypatch.undo()
    assert harness.docs(S)["[1]"]["v"] == 1
    joins = {threads for kind, threads in seen if kind == "join"}
    assert joins == {configured or default}
    assert {threads for kind, threads in seen if kind == "state"} == {1}


@pytest.mark.parametrize("bad", [0, 257, "2", True, 1.5])
def test_duckdb_threads_out_of_range_or_not_an_integer_is_a_config_error_naming_it(harness, bad):
    from airbyte_cdk.models import FailureType
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    from destination_collection.config import parse_config

    with pytest.raises(AirbyteTracedException, match=r"store\.duckdb\.threads") as raised:
        parse_config({"store": {**harness.store_config, "threads": bad}})
    assert raised.value.failure_type == FailureType.config_error
