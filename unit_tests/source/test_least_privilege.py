"""Least privilege on moto with IAM enforcement: an assumed role allowed only the four Kinesis read actions.

Base credentials are an IAM user's keys in the environment (the role option assumes on top of the default chain).
The role's trust policy names that user's exact ARN and requires an external ID. moto evaluates Kinesis calls
against resource ``*``, so the test policies are scoped to ``*`` (stream-ARN scoping is documented for users).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List

import boto3
import pytest
from airbyte_cdk.models import FailureType, Status, SyncMode
from airbyte_cdk.test.catalog_builder import CatalogBuilder
from airbyte_cdk.test.entrypoint_wrapper import discover as entrypoint_discover
from airbyte_cdk.test.entrypoint_wrapper import read as entrypoint_read
from moto.core.authorization import enable_iam_authentication

from source_kinesis.source import SourceKinesis

from .conftest import REGION, config, make_stream, put, run_cli

EXTERNAL_ID = "airbyte-ext-4711"
FOUR_ACTIONS = ["kinesis:ListShards", "kinesis:DescribeStream", "kinesis:GetShardIterator", "kinesis:GetRecords"]
# Enhanced fan-out's least privilege: no GetShardIterator/GetRecords; the consumer actions instead (on AWS scoped to
# the stream ARN and stream/NAME/consumer/*; moto evaluates against "*").
FAN_OUT_ACTIONS = [
    "kinesis:ListShards", "kinesis:DescribeStream", "kinesis:DescribeStreamConsumer", "kinesis:RegisterStreamConsumer", "kinesis:SubscribeToShard",
]


def policy(actions: List[str]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]})


@pytest.fixture
def world(moto_aws, monkeypatch) -> Dict[str, Any]:
    """Stream with records, an IAM user (base credentials) and roles; IAM is enforced only inside the test."""
    iam = boto3.client("iam", region_name=REGION)
    kinesis = boto3.client("kinesis", region_name=REGION)
    make_stream(kinesis, "orders", shards=1)
    written = put(kinesis, "orders", [{"n": i} for i in range(4)])
    user = iam.create_user(UserName="connector")["User"]
    key = iam.create_access_key(UserName="connector")["AccessKey"]
    iam.put_user_policy(UserName="connector", PolicyName="assume", PolicyDocument=policy(["sts:AssumeRole"]))
    trust = json.dumps({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"AWS": user["Arn"]},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": EXTERNAL_ID}},
        }],
    })
    roles = {}
    for name, actions in {
        "reader": FOUR_ACTIONS,
        "no-get-records": [a for a in FOUR_ACTIONS if a != "kinesis:GetRecords"],
        "no-get-shard-iterator": [a for a in FOUR_ACTIONS if a != "kinesis:GetShardIterator"],
        "fan-out": FAN_OUT_ACTIONS,
        "fan-out-no-describe-consumer": [a for a in FAN_OUT_ACTIONS if a != "kinesis:DescribeStreamConsumer"],
        "fan-out-no-register": [a for a in FAN_OUT_ACTIONS if a != "kinesis:RegisterStreamConsumer"],
    }.items():
        roles[name] = iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)["Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName="kinesis-read", PolicyDocument=policy(actions))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    with enable_iam_authentication():
        yield {"roles": roles, "written": written, "secret": key["SecretAccessKey"], "key_id": key["AccessKeyId"]}


def role_config(world: Dict[str, Any], role: str = "reader", external_id: str = EXTERNAL_ID, streams=("orders",)) -> Dict[str, Any]:
    return config(list(streams), credentials={"auth_type": "iam_role", "role_arn": world["roles"][role], "external_id": external_id})


def check(cfg: Dict[str, Any]):
    out = run_cli(SourceKinesis(), "check", cfg)
    statuses = [m.connectionStatus for m in out.connection_status_messages]
    assert len(statuses) == 1
    return statuses[0], out


def assert_no_secrets(world: Dict[str, Any], texts: List[str]) -> None:
    for text in texts:
        assert world["secret"] not in text


def test_enforcement_is_on(world) -> None:
    """Sanity: the base user itself may not read Kinesis; only the role can."""
    kinesis = boto3.client("kinesis", region_name=REGION)
    with pytest.raises(Exception) as info:
        kinesis.describe_stream(StreamName="orders")
    assert "403" in str(info.value) or "AccessDenied" in str(info.value)


def test_four_actions_are_enough_for_check_discover_read(world) -> None:
    cfg = role_config(world)
    status, _ = check(cfg)
    assert status.status == Status.SUCCEEDED, status.message

    catalog_out = entrypoint_discover(SourceKinesis(), cfg)
    assert catalog_out.errors == []
    (stream,) = catalog_out.catalog.catalog.streams
    assert stream.name == "orders"
    assert stream.source_defined_primary_key == [["_kinesis_shard_id"], ["_kinesis_sequence_number"], ["_kinesis_sub_sequence_number"]]

    catalog = CatalogBuilder().with_stream("orders", SyncMode.incremental).build()
    out = entrypoint_read(SourceKinesis(), cfg, catalog)
    assert out.errors == []
    assert [(r.record.data["_kinesis_shard_id"], r.record.data["_kinesis_sequence_number"]) for r in out.records] == world["written"]
    assert [r.record.data["n"] for r in out.records] == [0, 1, 2, 3]


def test_wrong_external_id_fails_check(world) -> None:
    status, out = check(role_config(world, external_id="not-the-right-one"))
    assert status.status == Status.FAILED
    assert world["roles"]["reader"] in status.message and "external ID" in status.message and "sts:AssumeRole" in status.message
    traces = [m.trace.error for m in out.errors]
    assert traces and traces[0].failure_type == FailureType.config_error
    assert_no_secrets(world, [status.message] + [t.message for t in traces] + [t.internal_message or "" for t in traces])


def test_role_without_get_records_fails_check_naming_action_and_stream(world) -> None:
    status, out = check(role_config(world, role="no-get-records"))
    assert status.status == Status.FAILED
    assert "kinesis:GetRecords" in status.message and "'orders'" in status.message
    assert out.errors[0].trace.error.failure_type == FailureType.config_error


def test_role_without_get_shard_iterator_fails_check_naming_action(world) -> None:
    status, _ = check(role_config(world, role="no-get-shard-iterator"))
    assert status.status == Status.FAILED
    assert "kinesis:GetShardIterator" in status.message and "'orders'" in status.message


def test_glob_pattern_without_list_streams_says_so(world) -> None:
    status, _ = check(role_config(world, streams=("ord*",)))
    assert status.status == Status.FAILED
    assert "kinesis:ListStreams" in status.message and "ord*" in status.message


def test_read_without_get_records_fails_with_config_error(world) -> None:
    catalog = CatalogBuilder().with_stream("orders", SyncMode.incremental).build()
    out = entrypoint_read(SourceKinesis(), role_config(world, role="no-get-records"), catalog)
    assert out.records == []
    errors = [m.trace.error for m in out.errors]
    assert errors and all(e.failure_type == FailureType.config_error for e in errors)
    assert any("kinesis:GetRecords" in e.message and "orders" in e.message for e in errors)
    assert_no_secrets(world, [e.message for e in errors])


FAN_OUT = {"mode": "enhanced_fan_out", "consumer_name": "airbyte"}


def consumers() -> List[Dict[str, Any]]:
    """The stream's consumers, read from moto's backend (the base user may not call Kinesis while IAM is enforced)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.kinesis.models import kinesis_backends

    stream = kinesis_backends[DEFAULT_ACCOUNT_ID][REGION].describe_stream_summary(None, "orders")
    return [{"name": c.consumer_name, "arn": c.consumer_arn} for c in stream.consumers]


def test_fan_out_check_needs_no_get_records_and_says_the_sync_will_register_without_registering(world) -> None:
    status, out = check(dict(role_config(world, role="fan-out"), read_mode=FAN_OUT))
    assert status.status == Status.SUCCEEDED, status.message
    logs = "\n".join(m.log.message for m in out.logs)
    assert "the first sync registers it" in logs and "kinesis:RegisterStreamConsumer" in logs
    assert consumers() == []  # check never registers a consumer (a consumer is billed)


def test_fan_out_check_without_describe_stream_consumer_names_the_action_and_the_consumer_resource(world) -> None:
    status, out = check(dict(role_config(world, role="fan-out-no-describe-consumer"), read_mode=FAN_OUT))
    assert status.status == Status.FAILED
    assert "kinesis:DescribeStreamConsumer" in status.message and "stream/orders/consumer/*" in status.message
    assert out.errors[0].trace.error.failure_type == FailureType.config_error


def test_fan_out_read_registers_the_consumer_and_without_register_says_what_to_allow_or_give(world) -> None:
    catalog = CatalogBuilder().with_stream("orders", SyncMode.incremental).build()
    out = entrypoint_read(SourceKinesis(), dict(role_config(world, role="fan-out-no-register"), read_mode=FAN_OUT), catalog)
    errors = [m.trace.error for m in out.errors]
    assert out.records == [] and errors and errors[0].failure_type == FailureType.config_error
    assert "kinesis:RegisterStreamConsumer" in errors[0].message and "read_mode.consumer_arn" in errors[0].message
    assert consumers() == []
    # Allowed to register: the sync registers it (moto activates consumers at once); moto has no SubscribeToShard, so
    # the read itself is proven against the replay server (integration_tests/test_source_fanout.py).
    entrypoint_read(SourceKinesis(), dict(role_config(world, role="fan-out"), read_mode=FAN_OUT, retry_budget_seconds=1), catalog)
    assert [c["name"] for c in consumers()] == ["airbyte"]
