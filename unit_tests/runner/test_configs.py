"""The runner's follow tuning reads each package's own config model (its defaults included), never copies of them;
and its modules import without a cycle (cli → commands, never back)."""
from __future__ import annotations

import ast
from pathlib import Path

from collection_runner.configs import FOLLOW_CHECKPOINT_SECONDS, FOLLOW_FLUSH_SECONDS, follow_tuned
from destination_collection.config import DestinationConfig
from source_kinesis.config import SourceConfig

SOURCE = {"credentials": {"auth_type": "access_keys", "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": "s"},
          "region": "us-east-1", "streams": ["orders"]}
DESTINATION = {"store": {"store_type": "duckdb", "path": "/tmp/x.duckdb"}}


def test_follow_tuning_takes_the_smaller_of_the_package_value_and_the_follow_value():
    source, destination = follow_tuned(SOURCE, DESTINATION)
    # the packages' defaults (read from their models) are above the follow values
    assert SourceConfig.model_fields["checkpoint_interval_seconds"].default > FOLLOW_CHECKPOINT_SECONDS
    assert DestinationConfig.model_fields["flush_interval_secs"].default > FOLLOW_FLUSH_SECONDS
    assert source["checkpoint_interval_seconds"] == FOLLOW_CHECKPOINT_SECONDS
    assert destination["flush_interval_secs"] == FOLLOW_FLUSH_SECONDS
    faster_source, faster_destination = follow_tuned({**SOURCE, "checkpoint_interval_seconds": 0.2},
                                                     {**DESTINATION, "flush_interval_secs": 0.05})
    assert faster_source["checkpoint_interval_seconds"] == 0.2 and faster_destination["flush_interval_secs"] == 0.05
    assert "checkpoint_interval_seconds" not in SOURCE and "flush_interval_secs" not in DESTINATION  # copies


def test_cli_and_commands_do_not_import_each_other():
    commands = ast.parse((Path(__file__).resolve().parents[2] / "collection_runner" / "commands.py").read_text())
    imported = {node.module for node in ast.walk(commands) if isinstance(node, ast.ImportFrom)}
    assert "collection_runner.cli" not in imported


def test_without_a_catalog_the_runner_discovers_without_sampling_unless_the_source_config_asks(monkeypatch):
    import logging

    from airbyte_cdk.models import AirbyteCatalog

    from collection_runner.configs import load_catalog
    from source_kinesis.discovery import airbyte_stream
    from source_kinesis.source import SourceKinesis

    seen = []

    def discover(self, logger, config):
        seen.append(config.get("schema_sample_size"))
        return AirbyteCatalog(streams=[airbyte_stream("orders")])

    monkeypatch.setattr(SourceKinesis, "discover", discover)
    log = logging.getLogger("airbyte.test")
    catalog = load_catalog(None, SOURCE, log)
    assert [c.stream.name for c in catalog.streams] == ["orders"]
    load_catalog(None, {**SOURCE, "schema_sample_size": 50}, log)
    assert seen == [0, 50]
    assert "schema_sample_size" not in SOURCE  # the caller's config is not changed


def test_the_runner_loads_a_source_config_saved_before_the_start_position_choice(tmp_path):
    import json

    from collection_runner.configs import load_source_config

    path = tmp_path / "source.json"
    path.write_text(json.dumps({**SOURCE, "start_position": "AT_TIMESTAMP", "start_timestamp": "2024-05-01T12:00:00Z"}))
    loaded = load_source_config(str(path))
    assert loaded["start_position"] == {"position": "AT_TIMESTAMP", "timestamp": "2024-05-01T12:00:00Z"}
    assert "start_timestamp" not in loaded
    assert SourceConfig.model_validate(loaded).start_position == "AT_TIMESTAMP"


def test_a_catalog_giving_a_stream_a_namespace_is_refused_naming_it(tmp_path):
    """source-kinesis states and records carry no namespace: a namespaced catalog would lock and name a state key
    (ns.name) that the stream's commits never use, so two runners could share one state row."""
    import json
    import logging

    import pytest
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    from collection_runner.configs import load_catalog

    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"streams": [{
        "stream": {"name": "orders", "namespace": "ns", "json_schema": {}, "supported_sync_modes": ["incremental"]},
        "sync_mode": "incremental", "destination_sync_mode": "append",
    }]}))
    with pytest.raises(AirbyteTracedException) as refused:
        load_catalog(str(path), {}, logging.getLogger("test"))
    assert "'orders'" in refused.value.message and "namespace" in refused.value.message
    assert refused.value.failure_type.value == "config_error"
