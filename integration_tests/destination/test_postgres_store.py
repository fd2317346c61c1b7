"""PostgreSQL-specific behaviour: check, error messages without secrets, inspect on a server."""
from __future__ import annotations

import logging

import pytest
from airbyte_cdk.models import FailureType, Status
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection import inspect as inspect_cmd
from destination_collection.config import parse_config
from destination_collection.destination import DestinationCollection
from destination_collection.stores import open_store
from unit_tests.destination.harness import record, state, stream

LOGGER = logging.getLogger("airbyte")


def test_check_succeeds_and_creates_schema(pg_store_config):
    status = DestinationCollection().check(LOGGER, {"store": pg_store_config})
    assert status.status == Status.SUCCEEDED


def test_wrong_password_is_a_config_error_without_the_password(pg_store_config):
    wrong = dict(pg_store_config, password="definitely-Wrong-pw-123")
    status = DestinationCollection().check(LOGGER, {"store": wrong})
    assert status.status == Status.FAILED
    assert "password authentication failed" in status.message and pg_store_config["username"] in status.message
    assert "definitely-Wrong-pw-123" not in status.message
    with pytest.raises(AirbyteTracedException) as info:
        open_store(parse_config({"store": wrong}))
    assert info.value.failure_type == FailureType.config_error


def test_unreachable_server_is_transient(pg_store_config):
    closed = dict(pg_store_config, port=1)
    with pytest.raises(AirbyteTracedException) as info:
        open_store(parse_config({"store": closed}))
    assert info.value.failure_type == FailureType.transient_error and "127.0.0.1:1" in info.value.message


def test_inspect_on_postgres(harness):
    harness.write([stream("orders")], [record("orders", {"k": 1, "user": "ann", "tags": ["x"]}), record("orders", {"k": 2, "user": "bob"}),
                                       state("orders", {"c": 2}, state_id=3)])
    store = open_store(parse_config(harness.config()), read_only=True)
    try:
        schema = harness.store_config["schema"]
        columns, rows = inspect_cmd.run_query(store, f'SELECT "user" FROM "{schema}".orders ORDER BY 1')
        assert rows == [("ann",), ("bob",)]
        total, described = inspect_cmd.describe(store, "orders")
        assert total == 2 and {"field": ["tags", "*"], "type": "string", "occurrences": 1, "total": 2} in described
        (collection,) = inspect_cmd.stats(store)["collections"]
        assert collection["documents"] == 2 and collection["bytes"] > 0 and collection["state"]["id"] == 3
        with pytest.raises(AirbyteTracedException, match="read-only"):
            inspect_cmd.run_query(store, f'DELETE FROM "{schema}".orders')
    finally:
        store.close()


def test_cli_check_and_write_against_postgres(pg_store_config, tmp_path):
    import json
    import subprocess

    from unit_tests.destination.test_cli import ENV, _command

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": pg_store_config}))
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"streams": [stream("orders")]}))
    stdin = tmp_path / "in.jsonl"
    stdin.write_text("\n".join(json.dumps(m) for m in [
        record("orders", {"k": 1, "user": "ann"}), record("orders", {"k": 1, "_op": "delete"}),
        record("orders", {"k": 2, "user": "bob"}), state("orders", {"c": 2}, state_id=8)]) + "\n")
    with open(stdin, "rb") as handle:
        proc = subprocess.run(_command() + ["write", "--config", str(config), "--catalog", str(catalog)],
                              stdin=handle, capture_output=True, timeout=120, env=ENV)
    out = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.strip()]
    assert proc.returncode == 0, proc.stdout.decode()[-2000:]
    assert [m["state"]["id"] for m in out if m["type"] == "STATE"] == [8]
    assert pg_store_config["password"] not in proc.stdout.decode() + proc.stderr.decode()
    store = open_store(parse_config({"store": pg_store_config}))
    try:
        rows = store.fetchall(f'SELECT _id, "user" FROM {store.q("orders")} ORDER BY 1')
        assert rows == [("[2]", "bob")]
        assert [m["id"] for m in store.states.messages()] == [8]
    finally:
        store.close()
