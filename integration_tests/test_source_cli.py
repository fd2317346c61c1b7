"""The console script as `docker run <image> spec|check|discover|read` runs it: files in, protocol messages out."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from integration_tests.kinesis_mock import SECRET_KEY
from integration_tests.source_helpers import Producer


def run_cli(*args: str, cwd: Path) -> list:
    script = shutil.which("source-kinesis") or str(Path(sys.executable).parent / "source-kinesis")
    proc = subprocess.run([script, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert SECRET_KEY not in proc.stdout and SECRET_KEY not in proc.stderr
    messages = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode, messages


def test_cli_spec_check_discover_read(tmp_path, kinesis_mock, kinesis, new_stream):
    name = new_stream(shards=2, prefix="cli")
    Producer(kinesis, name).put(24)
    kinesis.put_record(StreamName=name, Data=b'{"pk": "big", "amount": 123456789012345678901234567890}', PartitionKey="big")
    config = tmp_path / "config.json"
    config.write_text(json.dumps(kinesis_mock.source_config([name])))

    code, out = run_cli("spec", cwd=tmp_path)
    assert code == 0
    spec = [m for m in out if m["type"] == "SPEC"][0]["spec"]
    assert spec["connectionSpecification"]["properties"]["credentials"]["oneOf"][0]["title"].startswith("IAM role")

    code, out = run_cli("check", "--config", str(config), cwd=tmp_path)
    status = [m for m in out if m["type"] == "CONNECTION_STATUS"][0]["connectionStatus"]
    assert code == 0 and status["status"] == "SUCCEEDED"

    code, out = run_cli("discover", "--config", str(config), cwd=tmp_path)
    catalog = [m for m in out if m["type"] == "CATALOG"][0]["catalog"]
    stream = catalog["streams"][0]
    assert stream["name"] == name and stream["source_defined_primary_key"] == [["_kinesis_shard_id"], ["_kinesis_sequence_number"], ["_kinesis_sub_sequence_number"]]
    assert set(stream["supported_sync_modes"]) == {"full_refresh", "incremental"}

    configured = {"streams": [{"stream": stream, "sync_mode": "incremental", "destination_sync_mode": "append"}]}
    catalog_file = tmp_path / "catalog.json"
    catalog_file.write_text(json.dumps(configured))
    code, out = run_cli("read", "--config", str(config), "--catalog", str(catalog_file), cwd=tmp_path)
    assert code == 0
    records = [m["record"] for m in out if m["type"] == "RECORD"]
    states = [m["state"] for m in out if m["type"] == "STATE"]
    assert len(records) == 25 and states
    big = [r["data"] for r in records if r["data"]["pk"] == "big"][0]
    assert big["amount"] == 123456789012345678901234567890  # stays exact on the wire (json.loads keeps big ints)
    assert states[-1]["sourceStats"]["recordCount"] >= 0

    state_file = tmp_path / "state.json"
    state_file.write_text(json.dumps([states[-1]]))
    Producer(kinesis, name, keys=3).put(5)
    code, out = run_cli("read", "--config", str(config), "--catalog", str(catalog_file), "--state", str(state_file), cwd=tmp_path)
    assert code == 0
    assert len([m for m in out if m["type"] == "RECORD"]) == 5


def test_cli_check_unknown_stream_fails_with_its_name(tmp_path, kinesis_mock):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(kinesis_mock.source_config(["no-such-stream"])))
    code, out = run_cli("check", "--config", str(config), cwd=tmp_path)
    status = [m for m in out if m["type"] == "CONNECTION_STATUS"][0]["connectionStatus"]
    assert code == 0 and status["status"] == "FAILED"
    assert "no-such-stream" in status["message"] and "not found" in status["message"]


def test_cli_check_unreachable_endpoint_is_a_config_error(tmp_path, kinesis_mock):
    from integration_tests.kinesis_mock import free_port

    config = tmp_path / "config.json"
    raw = kinesis_mock.source_config(["orders"])
    raw["endpoint_url"] = f"http://127.0.0.1:{free_port()}"
    config.write_text(json.dumps(raw))
    code, out = run_cli("check", "--config", str(config), cwd=tmp_path)
    status = [m for m in out if m["type"] == "CONNECTION_STATUS"][0]["connectionStatus"]
    assert status["status"] == "FAILED" and "Could not reach the Kinesis endpoint" in status["message"]
