"""Absurd and hostile configurations: each is accepted as a sane value or refused with a config_error naming the
field — never another exception, never a secret value in the message."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Tuple

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection.config import parse_config as parse_destination
from source_kinesis.config import parse_config as parse_source

pytestmark = pytest.mark.timeout(30)
SECRET = "hostile-config-secret-value-42"
SOURCE = {
    "credentials": {"auth_type": "access_keys", "aws_access_key_id": "AKIAHOSTILE", "aws_secret_access_key": SECRET},
    "region": "us-east-1",
    "streams": ["orders"],
}
ROLE = {"auth_type": "iam_role", "role_arn": "arn:aws:iam::123456789012:role/reader", "external_id": SECRET}


def source(**changes: Any) -> Dict[str, Any]:
    config = copy.deepcopy(SOURCE)
    for key, value in changes.items():
        if value is _DROP:
            config.pop(key, None)
        else:
            config[key] = value
    return config


_DROP = object()

# (id, config, None if accepted else a substring the error must hold)
SOURCE_CASES: List[Tuple[str, Dict[str, Any], Any]] = [
    ("baseline", source(), None),
    ("negative-calls-per-second", source(get_records_per_second=-1), "get_records_per_second"),
    ("zero-calls-per-second", source(get_records_per_second=0), "get_records_per_second"),
    ("huge-calls-per-second", source(get_records_per_second=1e9), "get_records_per_second"),
    ("nan-calls-per-second", source(get_records_per_second=float("nan")), "get_records_per_second"),
    ("inf-megabytes", source(megabytes_per_second=float("inf")), "megabytes_per_second"),
    ("negative-megabytes", source(megabytes_per_second=-0.5), "megabytes_per_second"),
    ("records-per-call-zero", source(records_per_call=0), "records_per_call"),
    ("records-per-call-huge", source(records_per_call=10**12), "records_per_call"),
    ("records-per-call-string", source(records_per_call="lots"), "records_per_call"),
    ("records-per-call-float", source(records_per_call=12.5), "records_per_call"),
    ("parallel-shards-negative", source(max_parallel_shards=-3), "max_parallel_shards"),
    ("parallel-shards-huge", source(max_parallel_shards=10**9), "max_parallel_shards"),
    ("sync-duration-negative", source(max_sync_duration_seconds=-1), "max_sync_duration_seconds"),
    ("sync-duration-huge", source(max_sync_duration_seconds=10**15), "max_sync_duration_seconds"),
    ("retry-budget-negative", source(retry_budget_seconds=-5), "retry_budget_seconds"),
    ("retry-budget-zero", source(retry_budget_seconds=0), "retry_budget_seconds"),
    ("retry-budget-nan", source(retry_budget_seconds=float("nan")), "retry_budget_seconds"),
    ("retry-budget-huge", source(retry_budget_seconds=1e300), "retry_budget_seconds"),
    ("checkpoint-records-zero", source(checkpoint_interval_records=0), "checkpoint_interval_records"),
    ("checkpoint-seconds-negative", source(checkpoint_interval_seconds=-1), "checkpoint_interval_seconds"),
    ("checkpoint-seconds-inf", source(checkpoint_interval_seconds=float("inf")), "checkpoint_interval_seconds"),
    ("schema-sample-huge", source(schema_sample_size=10**9), "schema_sample_size"),
    ("region-empty", source(region=""), "region"),
    ("region-upper-case", source(region="US-EAST-1"), "region"),
    ("region-injection", source(region="us-east-1.evil.com/"), "region"),
    ("region-path", source(region="../../etc"), "region"),
    ("region-with-newline", source(region="us-east-1\nx"), "region"),
    ("region-missing", source(region=_DROP), "region"),
    ("endpoint-file-scheme", source(endpoint_url="file:///etc/passwd"), "endpoint_url"),
    ("endpoint-no-scheme", source(endpoint_url="kinesis.local"), "endpoint_url"),
    ("endpoint-with-space", source(endpoint_url="http://a b"), "endpoint_url"),
    ("endpoint-gopher", source(endpoint_url="gopher://127.0.0.1:70/"), "endpoint_url"),
    ("streams-empty", source(streams=[]), "streams"),
    ("streams-not-list", source(streams="orders"), "streams"),
    ("stream-name-injection", source(streams=['x"; DROP TABLE y; --']), "not a valid stream name"),
    ("stream-name-too-long", source(streams=["a" * 129]), "not a valid stream name"),
    ("stream-name-slash", source(streams=["../orders"]), "not a valid stream name"),
    ("stream-name-nul", source(streams=["a\x00b"]), "not a valid stream name"),
    ("stream-arn-malformed", source(streams=["arn:aws:kinesis:us-east-1:123:stream/x"]), "not a Kinesis stream ARN"),
    ("stream-arn-wrong-service", source(streams=["arn:aws:s3:::bucket"]), "not a Kinesis stream ARN"),
    ("stream-arn-injection", source(streams=["arn:aws:kinesis:us-east-1:123456789012:stream/x;rm -rf"]), "not a Kinesis stream ARN"),
    ("stream-arn-valid", source(streams=["arn:aws-cn:kinesis:cn-north-1:123456789012:stream/orders"]), None),
    ("stream-glob", source(streams=["sales*"]), None),
    ("role-arn-malformed", source(credentials={**ROLE, "role_arn": "arn:aws:iam::12:role/x"}), "role_arn"),
    ("role-arn-user-not-role", source(credentials={**ROLE, "role_arn": "arn:aws:iam::123456789012:user/bob"}), "role_arn"),
    ("role-arn-empty", source(credentials={**ROLE, "role_arn": ""}), "role_arn"),
    ("role-session-name-injection", source(credentials={**ROLE, "role_session_name": "a b;c"}), "role_session_name"),
    ("external-id-too-short", source(credentials={**ROLE, "external_id": "x"}), "external_id"),
    ("external-id-huge", source(credentials={**ROLE, "external_id": "x" * 5000}), "external_id"),
    ("auth-type-unknown", source(credentials={"auth_type": "magic"}), "credentials"),
    ("credentials-not-object", source(credentials="keys"), "credentials"),
    ("access-key-empty", source(credentials={"auth_type": "access_keys", "aws_access_key_id": "", "aws_secret_access_key": SECRET}), "aws_access_key_id"),
    ("secret-key-not-string", source(credentials={"auth_type": "access_keys", "aws_access_key_id": "A", "aws_secret_access_key": 12345}), "aws_secret_access_key"),
    ("start-position-unknown", source(start_position="YESTERDAY"), "start_position"),
    ("at-timestamp-missing", source(start_position="AT_TIMESTAMP"), "AT_TIMESTAMP needs its timestamp"),
    ("at-timestamp-future", source(start_position="AT_TIMESTAMP", start_timestamp="2999-01-01T00:00:00Z"), "in the future"),
    ("at-timestamp-garbage", source(start_position="AT_TIMESTAMP", start_timestamp="soon"), "start_timestamp"),
    ("at-timestamp-year-0", source(start_position="AT_TIMESTAMP", start_timestamp="0000-01-01T00:00:00Z"), "start_timestamp"),
    ("format-unknown", source(format="xml"), "format"),
    ("on-bad-record-unknown", source(on_bad_record="ignore"), "on_bad_record"),
    ("stream-formats-bad-format", source(stream_formats=[{"stream": "o*", "format": "csv"}]), "stream_formats"),
    ("stream-formats-not-list", source(stream_formats={"stream": "o"}), "stream_formats"),
    ("dms-primary-key-not-list", source(dms_primary_key="id"), "dms_primary_key"),
    ("config-not-object-fields", source(streams=[1, 2]), "streams"),
]


@pytest.mark.parametrize("case_id,config,problem", SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_hostile_source_config(case_id, config, problem, reliability):
    reliability(cases=1)
    if problem is None:
        parse_source(config)
        return
    with pytest.raises(AirbyteTracedException) as caught:
        parse_source(config)
    assert caught.value.failure_type == FailureType.config_error
    assert problem in caught.value.message, caught.value.message
    assert SECRET not in caught.value.message and SECRET not in (caught.value.internal_message or "")


PG = {"store_type": "postgres", "host": "127.0.0.1", "port": 5432, "database": "d", "username": "u", "password": SECRET}


def dest(**changes: Any) -> Dict[str, Any]:
    config: Dict[str, Any] = {"store": {"store_type": "duckdb", "path": "/tmp/hostile-never-created.duckdb"}}
    config.update(changes)
    return config


DESTINATION_CASES: List[Tuple[str, Dict[str, Any], Any]] = [
    ("baseline", dest(), None),
    ("postgres-baseline", dest(store=PG), None),
    ("store-missing", {}, "store"),
    ("store-type-unknown", dest(store={"store_type": "oracle"}), "store"),
    ("duckdb-path-empty", dest(store={"store_type": "duckdb", "path": ""}), "path"),
    ("duckdb-path-not-string", dest(store={"store_type": "duckdb", "path": 5}), "path"),
    ("postgres-port-string", dest(store={**PG, "port": "abc"}), "port"),
    ("postgres-ssl-mode-unknown", dest(store={**PG, "ssl_mode": "sometimes"}), "ssl_mode"),
    ("postgres-host-missing", dest(store={k: v for k, v in PG.items() if k != "host"}), "host"),
    ("batch-size-zero", dest(batch_size=0), "batch_size"),
    ("batch-size-negative", dest(batch_size=-10), "batch_size"),
    ("batch-size-huge", dest(batch_size=10**12), "batch_size"),
    ("batch-size-string", dest(batch_size="many"), "batch_size"),
    ("flush-interval-negative", dest(flush_interval_secs=-1), "flush_interval_secs"),
    ("flush-interval-nan", dest(flush_interval_secs=float("nan")), "flush_interval_secs"),
    ("flush-interval-inf-means-never", dest(flush_interval_secs=float("inf")), None),
    ("prefix-injection", dest(collection_prefix='x"; DROP TABLE y; --'), "collection_prefix"),
    ("prefix-path", dest(collection_prefix="../"), "collection_prefix"),
    ("collections-not-list", dest(collections="orders"), "collections"),
    ("collections-duplicate", dest(collections=[{"stream": "a"}, {"stream": "a"}]), "twice"),
    ("retention-negative", dest(collections=[{"stream": "a", "retention_secs": -1}]), "retention_secs"),
    ("retention-zero", dest(collections=[{"stream": "a", "retention_secs": 0}]), "retention_secs"),
    ("event-time-unit-unknown", dest(collections=[{"stream": "a", "event_time_unit": "days"}]), "event_time_unit"),
    ("collection-stream-missing", dest(collections=[{"transformation_sql": "SELECT * FROM _input"}]), "stream"),
]


@pytest.mark.parametrize("case_id,config,problem", DESTINATION_CASES, ids=[c[0] for c in DESTINATION_CASES])
def test_hostile_destination_config(case_id, config, problem, reliability):
    reliability(cases=1)
    if problem is None:
        parse_destination(config)
        return
    with pytest.raises(AirbyteTracedException) as caught:
        parse_destination(config)
    assert caught.value.failure_type == FailureType.config_error
    assert problem in caught.value.message, caught.value.message
    assert SECRET not in caught.value.message and SECRET not in (caught.value.internal_message or "")
