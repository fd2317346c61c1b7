"""Shared fixtures for source-kinesis unit tests: an isolated AWS environment, moto, configs, sync helpers."""
from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import boto3
import pytest
from airbyte_cdk.models import AirbyteMessage, Type
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from moto import mock_aws

REGION = "us-east-1"

_AWS_VARS = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_KINESIS",
    "AWS_ENDPOINT_URL_STS",
    "AWS_REGION",
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real AWS: fake keys in the environment, no profiles, files or metadata service."""
    for var in _AWS_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def moto_aws(aws_env: None):
    with mock_aws():
        yield


@pytest.fixture
def kinesis(moto_aws: None):
    return boto3.client("kinesis", region_name=REGION)


def make_stream(client: Any, name: str, shards: int = 1) -> str:
    client.create_stream(StreamName=name, ShardCount=shards)
    return client.describe_stream(StreamName=name)["StreamDescription"]["StreamARN"]


def put(client: Any, stream: str, items: Iterable[Mapping[str, Any]], partition_key: Optional[str] = None) -> List[Tuple[str, str]]:
    """Put JSON records one by one (moto is sequential); returns [(shard_id, sequence_number)]."""
    out = []
    for i, item in enumerate(items):
        response = client.put_record(StreamName=stream, Data=json.dumps(item).encode(), PartitionKey=partition_key or f"pk-{i}")
        out.append((response["ShardId"], response["SequenceNumber"]))
    return out


def config(streams: List[str], **overrides: Any) -> Dict[str, Any]:
    """A fast config: default chain credentials (the env's keys), a quick budget, short checkpoints."""
    base: Dict[str, Any] = {
        "credentials": {"auth_type": "default_chain"},
        "region": REGION,
        "streams": streams,
        "get_records_per_second": 5,
        "megabytes_per_second": 2,
        "retry_budget_seconds": 5,
        "checkpoint_interval_seconds": 60,
    }
    base.update(overrides)
    return base


def run_orchestrator(
    raw_config: Mapping[str, Any],
    names: List[str],
    states: Optional[Mapping[str, Any]] = None,
    logger: Optional[logging.Logger] = None,
    speedup: float = 20.0,
):
    """One bounded sync through the Orchestrator on the real client (moto). Returns (messages, raised).

    ``speedup`` runs the orchestrator's clock (read budget, pool schedule, checkpoint timer, deadline) that many
    times faster than real time, so the per-shard call spacing does not slow the suite down.
    """
    from source_kinesis.auth import ClientFactory
    from source_kinesis.config import parse_config
    from source_kinesis.discovery import resolve_catalog_stream
    from source_kinesis.orchestrator import Orchestrator

    cfg = parse_config(raw_config)
    client = ClientFactory(cfg).kinesis()
    clock = (lambda: time.monotonic() * speedup) if speedup != 1 else time.monotonic
    orchestrator = Orchestrator(cfg, client, logger or logging.getLogger("airbyte.test"), clock=clock)
    messages: List[AirbyteMessage] = []
    raised: Optional[AirbyteTracedException] = None
    try:
        for message in orchestrator.run(names, lambda name: resolve_catalog_stream(client, cfg, name), dict(states or {})):
            messages.append(message)
    except AirbyteTracedException as exc:
        raised = exc
    return messages, raised


def records_of(messages: List[AirbyteMessage]) -> List[Dict[str, Any]]:
    return [m.record.data for m in messages if m.type == Type.RECORD]


def states_of(messages: List[AirbyteMessage], stream: Optional[str] = None) -> List[Dict[str, Any]]:
    out = []
    for m in messages:
        if m.type == Type.STATE and (stream is None or m.state.stream.stream_descriptor.name == stream):
            out.append(json.loads(json.dumps(m.state.stream.stream_state.__dict__)))
    return out


def errors_of(messages: List[AirbyteMessage]) -> List[Any]:
    return [m.trace.error for m in messages if m.type == Type.TRACE and m.trace.error is not None]


def run_cli(source: Any, command: str, raw_config: Mapping[str, Any]):
    """Run a CDK entrypoint command (e.g. check) in-process with a config file, as the platform would."""
    from airbyte_cdk.test.entrypoint_wrapper import _run_command

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.json"
        path.write_text(json.dumps(raw_config))
        return _run_command(source, [command, "--config", str(path)], expecting_exception=None)
