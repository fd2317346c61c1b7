"""Airbyte's standard tests for source-kinesis, offline, against kinesis-mock.

The suite reads integration_tests/standard/source-kinesis/acceptance-test-config.yml from a connector folder built
in a temporary directory (connector_folder.py). A module fixture creates and seeds a two-shard stream on this
process's emulator and writes the scenario configs (secrets/config.json, secrets/invalid_config.json) pointing at
it, so spec, check (valid and invalid), discover, a full-refresh read with schema validation and the bad-catalog
read all run the connector in-process as the CDK's suite does.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from airbyte_cdk.test import standard_tests

from integration_tests.kinesis_mock import create_stream
from integration_tests.standard.connector_folder import connector_folder
from source_kinesis.source import SourceKinesis

pytest_plugins = ["airbyte_cdk.test.standard_tests.pytest_hooks"]

STREAM = "standard-tests-events"
RECORDS = 40


def _with_endpoint(template: Path, endpoint_url: str) -> str:
    config = json.loads(template.read_text())
    config["endpoint_url"] = endpoint_url
    return json.dumps(config, indent=2)


@pytest.fixture(scope="module", autouse=True)
def seeded_emulator(kinesis_mock):
    """A two-shard stream with RECORDS JSON events, and the scenario configs pointing at this emulator."""
    client = kinesis_mock.client()
    create_stream(client, STREAM, 2)
    entries = [{"Data": json.dumps({"event": "page_view", "n": n, "user": f"u{n % 7}"}).encode(), "PartitionKey": f"u{n % 7}"} for n in range(RECORDS)]
    assert client.put_records(StreamName=STREAM, Records=entries)["FailedRecordCount"] == 0
    folder = connector_folder("source-kinesis")
    for name in ("config", "invalid_config"):
        template = folder / "integration_tests" / ("sample_config.json" if name == "config" else "invalid_config.json")
        (folder / "secrets" / f"{name}.json").write_text(_with_endpoint(template, kinesis_mock.endpoint_url))
    yield
    client.delete_stream(StreamName=STREAM, EnforceConsumerDeletion=True)


class TestSourceKinesisStandard(standard_tests.SourceTestSuiteBase):
    connector = SourceKinesis

    @classmethod
    def get_connector_root_dir(cls) -> Path:
        return connector_folder("source-kinesis")


def test_committed_catalog_reads_every_seeded_record_once():
    """The suite's read only requires some records per stream; with the committed configured catalog (incremental,
    no state) every seeded record must come back exactly once, with a final state per stream."""
    from airbyte_cdk.models import ConfiguredAirbyteCatalogSerializer
    from airbyte_cdk.test.entrypoint_wrapper import read

    folder = connector_folder("source-kinesis")
    config = json.loads((folder / "secrets" / "config.json").read_text())
    catalog = ConfiguredAirbyteCatalogSerializer.load(json.loads((folder / "integration_tests" / "configured_catalog.json").read_text()))
    output = read(SourceKinesis(), config, catalog)
    assert not output.errors
    numbers = sorted(r.record.data["n"] for r in output.records)
    assert numbers == list(range(RECORDS))
    assert output.state_messages and output.state_messages[-1].state.stream.stream_descriptor.name == STREAM
