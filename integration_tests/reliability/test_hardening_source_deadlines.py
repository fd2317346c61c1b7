"""Issue 15 items 7 and 8, with real processes: ``source-kinesis check`` and ``read`` against hostile loopback
endpoints (``fault_proxy.HostileEndpoint``: slow drip, silent, endless/repeated NextToken, garbage JSON) and
against kinesis-mock behind the fault proxy going down mid-read, with and without SIGTERM.

Documented bounds (docs/source-kinesis.md): check ends within 30 s on any endpoint; read ends within
retry_budget_seconds plus one call's deadline (20 s) once the endpoint stops making progress; SIGTERM ends read
within 5 s with what was fetched, a final state per stream, exit 0."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from typing import Any, Dict, List

import pytest

from integration_tests.fault_proxy import FaultProxy, HostileEndpoint
from integration_tests.reliability.helpers import assert_no_secrets, script
from integration_tests.source_helpers import Producer
from source_kinesis.deadlines import CALL_DEADLINE_SECONDS

pytestmark = pytest.mark.timeout(240)
SECRET = "hardening-deadline-secret-0123456789"
SLACK = 8.0  # process start-up and a loaded machine


def hostile_config(endpoint: str, **overrides: Any) -> Dict[str, Any]:
    config = {"credentials": {"auth_type": "access_keys", "aws_access_key_id": "AKIAHOSTILE", "aws_secret_access_key": SECRET},
              "region": "us-east-1", "streams": ["hostile"], "endpoint_url": endpoint}
    config.update(overrides)
    return config


def catalog(names: List[str]) -> Dict[str, Any]:
    return {"streams": [{"stream": {"name": n, "json_schema": {}, "supported_sync_modes": ["incremental"]},
                         "sync_mode": "incremental", "destination_sync_mode": "append"} for n in names]}


def messages(out: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def run_cli(tmp_path, command: str, config: Dict[str, Any], timeout: float, names: List[str] = ()) -> tuple:
    (tmp_path / "config.json").write_text(json.dumps(config))
    args = [script("source-kinesis"), command, "--config", str(tmp_path / "config.json")]
    if command == "read":
        (tmp_path / "catalog.json").write_text(json.dumps(catalog(list(names))))
        args += ["--catalog", str(tmp_path / "catalog.json")]
    started = time.monotonic()
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    elapsed = time.monotonic() - started
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert_no_secrets(done.stdout + done.stderr, f"source {command}")
    assert SECRET not in done.stdout + done.stderr
    return done, elapsed, messages(done.stdout)


def test_check_ends_within_30_s_on_a_slow_drip_endpoint(tmp_path, reliability):
    """The issue's example: one byte every few seconds kept check running past 300 s."""
    with HostileEndpoint("drip", drip_seconds=3.0) as endpoint:
        done, elapsed, out = run_cli(tmp_path, "check", hostile_config(endpoint.endpoint_url, retry_budget_seconds=20), timeout=120)
    assert elapsed < 30.0, elapsed
    status = [m["connectionStatus"] for m in out if m["type"] == "CONNECTION_STATUS"][0]
    assert status["status"] == "FAILED"
    assert endpoint.endpoint_url in status["message"] and "DescribeStream" in status["message"] and "'hostile'" in status["message"]
    reliability(cases=1)


@pytest.mark.parametrize("kind, call", [("endless_next_token", "ListShards"), ("repeated_next_token", "ListShards"),
                                        ("garbage_json", "DescribeStream")])
def test_check_on_hostile_pagination_and_garbage_fails_fast_naming_the_call(tmp_path, kind, call, reliability):
    with HostileEndpoint(kind) as endpoint:
        done, elapsed, out = run_cli(tmp_path, "check", hostile_config(endpoint.endpoint_url), timeout=120)
    assert elapsed < 30.0, elapsed
    status = [m["connectionStatus"] for m in out if m["type"] == "CONNECTION_STATUS"][0]
    assert status["status"] == "FAILED" and call in status["message"] and "'hostile'" in status["message"], status
    reliability(cases=1)


@pytest.mark.parametrize("kind", ["drip", "silent", "endless_next_token"])
def test_read_on_a_hostile_endpoint_ends_within_budget_plus_one_deadline(tmp_path, kind, reliability):
    budget = 3
    with HostileEndpoint(kind, drip_seconds=2.0) as endpoint:
        done, elapsed, out = run_cli(tmp_path, "read", hostile_config(endpoint.endpoint_url, retry_budget_seconds=budget),
                                     timeout=180, names=["hostile"])
    assert elapsed < budget + CALL_DEADLINE_SECONDS + SLACK, elapsed
    assert done.returncode != 0
    errors = [m["trace"]["error"] for m in out if m["type"] == "TRACE" and m["trace"].get("type") == "ERROR"]
    assert errors and errors[-1]["failure_type"] == "transient_error", errors  # an outage: retry later (runner exit 3)
    assert "'hostile'" in errors[-1]["message"] and ("DescribeStream" in errors[-1]["message"] or "ListShards" in errors[-1]["message"])
    reliability(cases=1)


def start_read(tmp_path, config: Dict[str, Any], names: List[str]) -> subprocess.Popen:
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "catalog.json").write_text(json.dumps(catalog(names)))
    return subprocess.Popen([script("source-kinesis"), "read", "--config", str(tmp_path / "config.json"), "--catalog", str(tmp_path / "catalog.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("fault", ["http_503", "latency", "reset"])
def test_sigterm_during_an_outage_emits_what_was_read_and_exits_0_within_5_s(tmp_path, kinesis_mock, kinesis, new_stream, fault, reliability):
    """Issue 8: SIGTERM while every GetRecords after the first fails (503, never answers, resets) with a 90 s
    budget waited out the budget and exited 2. Now: within 5 s, the records already read, a final state, exit 0."""
    stream = new_stream(shards=1)
    Producer(kinesis, stream).put(7)

    def decide(operation: str, n: int):
        return fault if operation == "GetRecords" and n > 1 else None

    with FaultProxy.to_upstream(kinesis_mock.endpoint_url, decide=decide, fault_latency_seconds=120, max_lifetime_seconds=200) as proxy:
        config = kinesis_mock.source_config([stream], endpoint_url=proxy.endpoint_url, retry_budget_seconds=90)
        process = start_read(tmp_path, config, [stream])
        try:
            deadline = time.monotonic() + 60
            while proxy.snapshot()["requests"].get("GetRecords", 0) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert proxy.snapshot()["requests"].get("GetRecords", 0) >= 3, proxy.snapshot()
            time.sleep(1.0)
            signalled = time.monotonic()
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=60)
            elapsed = time.monotonic() - signalled
        finally:
            if process.poll() is None:
                process.kill()
    assert elapsed < 5.0, elapsed
    assert process.returncode == 0, err[-2000:]
    parsed = messages(out)
    records = [m["record"]["data"] for m in parsed if m["type"] == "RECORD"]
    assert len(records) == 7
    states = [m["state"]["stream"]["stream_state"] for m in parsed if m["type"] == "STATE"]
    last = max(records, key=lambda r: int(r["_kinesis_sequence_number"]))
    assert states[-1]["shards"][last["_kinesis_shard_id"]]["sequence_number"] == last["_kinesis_sequence_number"]
    assert not [m for m in parsed if m["type"] == "TRACE" and m["trace"].get("type") == "ERROR"]
    reliability(cases=1)


def test_an_outage_past_the_budget_without_a_signal_is_a_transient_error(tmp_path, kinesis_mock, kinesis, new_stream, reliability):
    stream = new_stream(shards=1)
    Producer(kinesis, stream).put(3)
    with FaultProxy.to_upstream(kinesis_mock.endpoint_url, decide=lambda op, n: "latency" if op == "GetRecords" and n > 1 else None,
                                fault_latency_seconds=120, max_lifetime_seconds=200) as proxy:
        done, elapsed, out = run_cli(tmp_path, "read", kinesis_mock.source_config([stream], endpoint_url=proxy.endpoint_url, retry_budget_seconds=3),
                                     timeout=180, names=[stream])
    assert elapsed < 3 + CALL_DEADLINE_SECONDS + SLACK, elapsed
    errors = [m["trace"]["error"] for m in out if m["type"] == "TRACE" and m["trace"].get("type") == "ERROR"]
    assert errors and errors[-1]["failure_type"] == "transient_error"
    assert stream in errors[-1]["message"] and "GetRecords" in errors[-1]["message"] and "shardId-" in errors[-1]["message"]
    assert len([m for m in out if m["type"] == "RECORD"]) == 3  # what was read before the outage still went out
    reliability(cases=1)


# ----------------------------------------------------------------- round 2: answers that are not Kinesis' (scripted)
DESCRIPTION = {"StreamDescription": {"StreamName": "hostile", "StreamARN": "arn:aws:kinesis:us-east-1:000000000000:stream/hostile",
                                     "StreamStatus": "ACTIVE", "StreamCreationTimestamp": 1_700_000_000, "Shards": [], "HasMoreShards": False,
                                     "RetentionPeriodHours": 24, "EnhancedMonitoring": [], "EncryptionType": "NONE"}}


def kinesis_like(get_records):
    """A script answering DescribeStream/ListShards/GetShardIterator like Kinesis and GetRecords with ``get_records(n)``."""
    from integration_tests.fault_proxy import Response

    def script(operation: str, body: Dict[str, Any], n: int):
        if operation == "DescribeStream":
            return Response.json(DESCRIPTION)
        if operation == "ListShards":
            return Response.json({"Shards": [{"ShardId": "shardId-000000000000", "HashKeyRange": {"StartingHashKey": "0", "EndingHashKey": "9"},
                                              "SequenceNumberRange": {"StartingSequenceNumber": "1"}}]})
        if operation == "GetShardIterator":
            return Response.json({"ShardIterator": "it"})
        return get_records(n)

    return script


def page(records: List[Dict[str, Any]], behind: int = 0, iterator: Any = "it") -> Any:
    from integration_tests.fault_proxy import Response

    return Response.json({"Records": records, "NextShardIterator": iterator, "MillisBehindLatest": behind})


def raw(seq: int, data: str = "eyJhIjoxfQ==") -> Dict[str, Any]:
    return {"SequenceNumber": str(seq), "Data": data, "PartitionKey": "k", "ApproximateArrivalTimestamp": 1_700_000_000.5}


def last_error(out: List[Dict[str, Any]]) -> Dict[str, Any]:
    errors = [m["trace"]["error"] for m in out if m["type"] == "TRACE" and m["trace"].get("type") == "ERROR"]
    assert errors, out
    return errors[-1]


@pytest.mark.parametrize("name, get_records, words", [
    ("empty_pages_behind_forever", lambda n: page([], behind=5000), ["not making progress"]),
    ("data_not_base64", lambda n: page([raw(1, data="!!!not base64***")]), ["not Kinesis JSON"]),
    ("sequence_numbers_repeat", lambda n: page([raw(1), raw(2)] if n == 1 else [raw(2), raw(3)], behind=10), ["sequence number 2 after 2"]),
    ("redirect", lambda n: __import__("integration_tests.fault_proxy", fromlist=["Response"]).Response(302, b"", [("Location", "http://127.0.0.1:1/")]), ["HTTP 302"]),
])
def test_read_of_answers_that_are_not_kinesis_ends_with_a_transient_error_naming_shard_and_call(tmp_path, name, get_records, words, reliability):
    """Each of these either polled until killed (empty pages while behind), emitted records twice (repeats) or
    ended as a system_error with a raw parser message (not base64, a redirect)."""
    budget = 3
    with HostileEndpoint("scripted", script=kinesis_like(get_records)) as endpoint:
        done, elapsed, out = run_cli(tmp_path, "read", hostile_config(endpoint.endpoint_url, retry_budget_seconds=budget), timeout=120, names=["hostile"])
    assert elapsed < budget + CALL_DEADLINE_SECONDS + SLACK, elapsed
    error = last_error(out)
    assert error["failure_type"] == "transient_error", error
    for word in ["'hostile'", "shardId-000000000000", "GetRecords"] + words:
        assert word in error["message"], (word, error["message"])
    sequence_numbers = [m["record"]["data"]["_kinesis_sequence_number"] for m in out if m["type"] == "RECORD"]
    assert len(sequence_numbers) == len(set(sequence_numbers))  # never a record twice
    reliability(cases=1)


def test_read_with_stdout_closed_early_exits_at_once_without_tracebacks(tmp_path, reliability):
    """A consumer that stops reading (`| head`) gave a BrokenPipeError traceback per buffered write."""
    endless = kinesis_like(lambda n: page([raw(s) for s in range(n * 500 - 499, n * 500 + 1)], behind=1000))
    with HostileEndpoint("scripted", script=endless) as endpoint:
        process = start_read(tmp_path, hostile_config(endpoint.endpoint_url), ["hostile"])
        try:
            deadline = time.monotonic() + 60
            while endpoint.requests.get("GetRecords", 0) < 3 and time.monotonic() < deadline:
                time.sleep(0.1)
            process.stdout.read(1000)
            process.stdout.close()
            closed = time.monotonic()
            err = process.stderr.read()
            process.wait(timeout=30)
            elapsed = time.monotonic() - closed
        finally:
            if process.poll() is None:
                process.kill()
    assert elapsed < 5.0, elapsed
    assert "Traceback" not in err and "BrokenPipeError" not in err, err[-2000:]
    assert "stdout was closed" in err and process.returncode == 1
    reliability(cases=1)
