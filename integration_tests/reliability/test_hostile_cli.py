"""A handful of hostile inputs through the real command lines (the in-process corpus is in unit_tests/hostile):
each ends with a clear error naming the cause — no traceback, no hang — and the destination keeps what it accepted."""
from __future__ import annotations

import json
import subprocess

import duckdb
import pytest

from integration_tests.reliability.helpers import assert_no_secrets, script
from unit_tests.destination.harness import state, stream

pytestmark = pytest.mark.timeout(120)


def test_destination_cli_with_garbage_and_partial_lines_keeps_what_it_accepted(tmp_path, reliability):
    config = tmp_path / "destination.json"
    config.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(tmp_path / "d.duckdb")}}))
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"streams": [stream("s", pk=[["k"]])]}))
    good = [json.dumps({"type": "RECORD", "record": {"stream": "s", "data": {"k": f"k{i}"}, "emitted_at": 1}}) for i in range(3)]
    lines = good[:2] + ["garbage \x00 line", "\xff\xfe", json.dumps(state("s", {"c": 1}))] + good[2:] + ['{"type": "RECORD", "record": {"str']
    done = subprocess.run([script("destination-collection"), "write", "--config", str(config), "--catalog", str(catalog)],
                          input="\n".join(lines).encode("utf-8", "surrogateescape"), capture_output=True, timeout=90)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert "Traceback" not in err, err[-2000:]
    assert done.returncode != 0
    messages = [json.loads(l) for l in out.splitlines() if l.strip()]
    assert any(m["type"] == "STATE" and m["state"]["stream"]["stream_state"] == {"c": 1} for m in messages)
    traces = [m["trace"]["error"]["message"] for m in messages if m["type"] == "TRACE" and m["trace"].get("type") == "ERROR"]
    assert traces and "3 malformed input line(s)" in traces[0], traces
    con = duckdb.connect(str(tmp_path / "d.duckdb"), read_only=True)
    try:
        assert con.execute('SELECT count(*) FROM "s"').fetchone()[0] == 3  # every good record, even after garbage
    finally:
        con.close()
    reliability(cli_cases=1)


def test_source_cli_with_absurd_config_names_the_fields(tmp_path, reliability):
    config = tmp_path / "source.json"
    secret = "cli-hostile-secret-value-0001"
    config.write_text(json.dumps({
        "credentials": {"auth_type": "access_keys", "aws_access_key_id": "AKIA", "aws_secret_access_key": secret},
        "region": "us-east-1", "streams": ["orders"], "records_per_call": 10**9, "retry_budget_seconds": -1,
    }))
    done = subprocess.run([script("source-kinesis"), "check", "--config", str(config)], capture_output=True, text=True, timeout=90)
    assert "Traceback" not in done.stderr
    assert_no_secrets(done.stdout + done.stderr, "source check")
    assert secret not in done.stdout + done.stderr
    status = [json.loads(l) for l in done.stdout.splitlines() if '"CONNECTION_STATUS"' in l]
    assert status and status[0]["connectionStatus"]["status"] == "FAILED"
    message = status[0]["connectionStatus"]["message"]
    assert "records_per_call" in message or "retry_budget_seconds" in message, message
    reliability(cli_cases=1)


def test_runner_cli_with_absurd_destination_config_exits_2(tmp_path, kinesis_mock, reliability):
    source = tmp_path / "source.json"
    source.write_text(json.dumps(kinesis_mock.source_config(["orders"])))
    destination = tmp_path / "destination.json"
    destination.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(tmp_path / "x.duckdb")}, "batch_size": -5}))
    done = subprocess.run([script("kinesis-collection"), "sync", "--source", str(source), "--destination", str(destination)],
                          capture_output=True, text=True, timeout=90)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.returncode == 2, done.stderr[-2000:]
    assert "batch_size" in done.stderr
    reliability(cli_cases=1)
