"""``kinesis-collection reset`` on DuckDB: it forgets exactly its stream's state and empties exactly the collection
that stream is written to under the configured collection_prefix (the one it locked), never a collection matched
some other way (a table name given as the stream)."""
from __future__ import annotations

import argparse
import json

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from collection_runner import commands
from destination_collection.config import parse_config
from destination_collection.naming import STATE_TABLE
from destination_collection.stores import open_store


def _destination(tmp_path, prefix: str) -> str:
    path = tmp_path / f"destination-{prefix or 'none'}.json"
    path.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")}, "collection_prefix": prefix}))
    return str(path)


def _reset(destination: str, stream: str, empty: bool) -> int:
    return commands.reset(argparse.Namespace(destination=destination, stream=stream, empty_collection=empty))


def _seed(tmp_path) -> None:
    store = open_store(parse_config({"store": {"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")}}))
    try:
        store.catalog.ensure_metadata()
        for table in ("kin_orders", "orders"):
            store.catalog.ensure_collection(table, "orders", None, [])
            store.execute(f'INSERT INTO "{table}" (_id, _doc) VALUES (?, ?)', ["1", json.dumps({"in": table})])
        store.states.save("orders", "STREAM", None, "orders", json.dumps({"type": "STREAM"}))
        store.settle()
    finally:
        store.close()


def _count(tmp_path, table: str) -> int:
    store = open_store(parse_config({"store": {"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")}}), read_only=True)
    try:
        return store.fetchall(f'SELECT count(*) FROM "{table}"')[0][0]
    finally:
        store.close()


def test_reset_of_a_store_never_synced_forgets_nothing_and_succeeds(tmp_path):
    assert _reset(_destination(tmp_path, ""), "orders", empty=False) == 0


def test_empty_collection_empties_the_prefix_collection_only(tmp_path):
    _seed(tmp_path)
    assert _reset(_destination(tmp_path, "kin_"), "orders", empty=True) == 0
    assert _count(tmp_path, "kin_orders") == 0
    assert _count(tmp_path, "orders") == 1  # the same stream's collection under another prefix is not this reset's
    store = open_store(parse_config({"store": {"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")}}), read_only=True)
    try:
        assert store.fetchall(f'SELECT count(*) FROM "{STATE_TABLE}"')[0][0] == 0
    finally:
        store.close()


def test_a_table_name_given_as_the_stream_empties_nothing(tmp_path):
    _seed(tmp_path)
    with pytest.raises(AirbyteTracedException) as refused:
        _reset(_destination(tmp_path, "kin_"), "kin_orders", empty=True)
    message = refused.value.message
    assert refused.value.failure_type == FailureType.config_error
    assert "no collection kin_kin_orders" in message and "kin_orders, orders" in message, message
    assert _count(tmp_path, "kin_orders") == 1 and _count(tmp_path, "orders") == 1


def test_a_collection_of_another_stream_with_the_same_table_name_is_not_emptied(tmp_path):
    """Prefix "" + stream "kin_orders" names the table kin_orders, which prefix "kin_" + stream "orders" wrote."""
    _seed(tmp_path)
    with pytest.raises(AirbyteTracedException) as refused:
        _reset(_destination(tmp_path, ""), "kin_orders", empty=True)
    assert "written by stream 'orders', not by stream 'kin_orders'" in refused.value.message, refused.value.message
    assert _count(tmp_path, "kin_orders") == 1


def test_an_empty_stream_name_is_refused(tmp_path):
    with pytest.raises(AirbyteTracedException) as refused:
        _reset(_destination(tmp_path, ""), "  ", empty=False)
    assert "--stream is empty" in refused.value.message and refused.value.failure_type == FailureType.config_error
