"""Airbyte's standard tests for destination-collection, offline.

The suite reads integration_tests/standard/destination-collection/acceptance-test-config.yml from a connector folder
built in a temporary directory (connector_folder.py). The destination runs as in its Docker image:
``DESTINATION_COLLECTION_IN_DOCKER=1`` with ``DESTINATION_COLLECTION_LOCAL_ROOT`` pointing at ``<folder>/local``
(standing in for Airbyte's ``/local`` mount), so the committed DuckDB sample config checks out and the invalid one
(a path escaping ``/local``) fails as it would in the image. A throwaway PostgreSQL server (the same helper as the
destination's PostgreSQL tests) backs the PostgreSQL scenarios, including the suite's check that the password never
appears in the output.

CDK 7.39.1's ``DestinationTestSuiteBase`` runs spec and check only; a write round trip with the committed catalog
is added below, since ``write`` is what the platform calls most.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pytest
from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer
from airbyte_cdk.test import standard_tests

from destination_collection import DestinationCollection
from integration_tests.postgres_server import PostgresServer
from integration_tests.standard.connector_folder import connector_folder

pytest_plugins = ["airbyte_cdk.test.standard_tests.pytest_hooks"]

NAME = "destination-collection"


@pytest.fixture(scope="module")
def local_root() -> Path:
    root = connector_folder(NAME) / "local"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(autouse=True)
def as_in_the_image(monkeypatch, local_root):
    monkeypatch.setenv("DESTINATION_COLLECTION_IN_DOCKER", "1")
    monkeypatch.setenv("DESTINATION_COLLECTION_LOCAL_ROOT", str(local_root))


@pytest.fixture(scope="module", autouse=True)
def postgres_configs():
    """secrets/postgres_config.json (a working server) and secrets/postgres_invalid_config.json (wrong password)."""
    secrets_dir = connector_folder(NAME) / "secrets"
    with PostgresServer() as server:
        good = {"store": server.store_config(schema="standard_tests")}
        bad = {"store": dict(server.store_config(schema="standard_tests"), password="not-the-password-0000")}
        (secrets_dir / "postgres_config.json").write_text(json.dumps(good, indent=2))
        (secrets_dir / "postgres_invalid_config.json").write_text(json.dumps(bad, indent=2))
        yield


class TestDestinationCollectionStandard(standard_tests.DestinationTestSuiteBase):
    connector = DestinationCollection

    @classmethod
    def get_connector_root_dir(cls) -> Path:
        return connector_folder(NAME)


NOW_MS = int(time.time() * 1000)  # event times inside the sample config's 30-day retention


def _record(n: int, event: str) -> dict:
    data = {"event": event, "n": n, "user": f"u{n % 3}", "ts": NOW_MS + n}
    return {"type": "RECORD", "record": {"stream": "standard-tests-events", "data": data, "emitted_at": NOW_MS}}


def test_write_round_trip_with_the_committed_catalog(local_root):
    """The committed sample config and configured catalog: records in, the state echoed after commit with its id and
    record count, the transformation applied (upper-cased event, 'test' rows filtered) and one document per key."""
    folder = connector_folder(NAME)
    config = json.loads((folder / "integration_tests" / "sample_config.json").read_text())
    catalog = json.loads((folder / "integration_tests" / "configured_catalog.json").read_text())
    state = {"type": "STATE", "state": {"type": "STREAM", "id": 7, "stream": {"stream_descriptor": {"name": "standard-tests-events"}, "stream_state": {"n": 4}}}}
    complete = {"type": "TRACE", "trace": {"type": "STREAM_STATUS", "emitted_at": NOW_MS,
                                           "stream_status": {"stream_descriptor": {"name": "standard-tests-events"}, "status": "COMPLETE"}}}
    messages = [_record(1, "view"), _record(2, "test"), _record(3, "click"), _record(1, "view_again"), state, complete]

    echoed = list(DestinationCollection().write_raw(config, ConfiguredAirbyteCatalogSerializer.load(catalog), (json.dumps(m) for m in messages)))

    states = [m for m in echoed if m.get("type") == "STATE"]
    assert len(states) == 1 and states[0]["state"]["id"] == 7
    assert states[0]["state"]["destinationStats"]["recordCount"] == 4
    with duckdb.connect(str(local_root / "standard_tests.duckdb"), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables WHERE table_name LIKE 'standard_tests_events%'").fetchall()]
        assert len(tables) == 1, tables
        rows = con.execute(f'SELECT _id, event FROM "{tables[0]}" ORDER BY _id').fetchall()
    assert rows == [("[1]", "VIEW_AGAIN"), ("[3]", "CLICK")]
