"""An Airbyte user's client: PyAirbyte 0.71 (its own venv, made by scripts/bootstrap.sh) runs source-kinesis as a local
executable with a default config (schema sampling on by default) against kinesis-mock and reads into its DuckDB cache.
The payload's fields must arrive as typed columns: PyAirbyte's cache, like Airbyte's typed destinations, keeps only
the fields the catalog declares."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYAIRBYTE_PYTHON = os.path.join(ROOT, ".cache", "pyairbyte-venv", "bin", "python")


def _put(kinesis, stream: str, events: list[dict]) -> None:
    entries = [{"Data": json.dumps(e).encode(), "PartitionKey": f"k{i}"} for i, e in enumerate(events)]
    response = kinesis.put_records(StreamName=stream, Records=entries)
    assert response["FailedRecordCount"] == 0


def test_pyairbyte_reads_the_payload_as_typed_columns_with_a_default_config(kinesis_mock, kinesis, new_stream,
                                                                          tmp_path):
    if not os.path.exists(PYAIRBYTE_PYTHON):
        pytest.fail(f"{PYAIRBYTE_PYTHON} is missing: run scripts/bootstrap.sh (it installs PyAirbyte's venv)")
    name = new_stream(shards=2, prefix="pyab")
    events = [{"order_id": f"o-{i}", "user": {"id": i, "name": f"u{i}"}, "amount": round(i * 2.5, 2),
               "quantity": i, "paid": i % 2 == 0, "tags": ["gift"] if i % 3 else []} for i in range(25)]
    _put(kinesis, name, events)
    config = kinesis_mock.source_config([name])  # the defaults: nothing about the schema
    config_path = tmp_path / "source.json"
    config_path.write_text(json.dumps(config))
    executable = os.path.join(os.path.dirname(sys.executable), "source-kinesis")
    env = {**os.environ, "DO_NOT_TRACK": "1", "AIRBYTE_OFFLINE_MODE": "1", "AIRBYTE_NO_UI": "1", "NO_COLOR": "1",
           "AIRBYTE_CACHE_ROOT": str(tmp_path / "cache-root"), "AIRBYTE_LOGGING_ROOT": str(tmp_path / "logs")}
    env.pop("VIRTUAL_ENV", None)
    done = subprocess.run(
        [PYAIRBYTE_PYTHON, os.path.join(ROOT, "integration_tests", "_pyairbyte_read.py"), executable,
         str(config_path), str(tmp_path / "cache.duckdb")],
        capture_output=True, text=True, timeout=240, env=env, cwd=str(tmp_path),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    stream = result[name]
    assert stream["rows"] == 25
    columns = {key.lower(): kind.upper() for key, kind in stream["columns"].items()}
    # the payload's fields, typed from the sample
    assert columns["order_id"] == "VARCHAR" and columns["quantity"] == "BIGINT"
    assert columns["amount"].startswith("DECIMAL") and columns["paid"] == "BOOLEAN"  # (PyAirbyte: number → DECIMAL)
    assert columns["user"] == "JSON" and columns["tags"] == "JSON"
    # and the contract's
    assert columns["_kinesis_sequence_number"] == "VARCHAR" and columns["_kinesis_sub_sequence_number"] == "BIGINT"
