"""parse_config: cross-field rules, stream references, per-stream formats; errors are config_errors naming the field."""
from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Dict

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_kinesis.config import AccessKeys, DefaultChain, IamRole, StreamRef, parse_config

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
KEY_ID = "AKIAIOSFODNN7EXAMPLE"
TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"


def raw(**overrides: Any) -> Dict[str, Any]:
    base: Dict[str, Any] = {
        "credentials": {"auth_type": "default_chain"},
        "region": "us-east-1",
        "streams": ["orders"],
    }
    base.update(overrides)
    return base


def keys(**extra: Any) -> Dict[str, Any]:
    creds = {"auth_type": "access_keys", "aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET, "aws_session_token": TOKEN}
    creds.update(extra)
    return creds


def config_error(raw_config: Dict[str, Any]) -> AirbyteTracedException:
    with pytest.raises(AirbyteTracedException) as info:
        parse_config(raw_config)
    exc = info.value
    assert exc.failure_type == FailureType.config_error
    assert exc.message.startswith("Invalid source-kinesis configuration")
    return exc


def assert_no_secret(exc: AirbyteTracedException) -> None:
    for text in (exc.message, exc.internal_message or "", str(exc)):
        for secret in (SECRET, TOKEN, KEY_ID):
            assert secret not in text


def test_minimal_config_defaults() -> None:
    cfg = parse_config(raw())
    assert isinstance(cfg.credentials, DefaultChain)
    assert cfg.start_position == "TRIM_HORIZON"
    assert cfg.stale_checkpoint == "restart"
    assert cfg.get_records_per_second == 2.0 and cfg.megabytes_per_second == 1.0
    assert cfg.records_per_call == 10000
    assert cfg.endpoint_url is None and cfg.max_sync_duration_seconds is None


def test_credentials_variants() -> None:
    role = parse_config(raw(credentials={"auth_type": "iam_role", "role_arn": "arn:aws-cn:iam::123456789012:role/r", "external_id": "ext-1"}))
    assert isinstance(role.credentials, IamRole)
    assert role.credentials.role_session_name == "airbyte-source-kinesis"
    access = parse_config(raw(credentials=keys()))
    assert isinstance(access.credentials, AccessKeys)
    assert access.credentials.aws_session_token == TOKEN


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"region": "US-EAST-1"}, "region"),
        ({"region": None}, "region"),
        ({"streams": []}, "streams"),
        ({"records_per_call": 10001}, "records_per_call"),
        ({"get_records_per_second": 6}, "get_records_per_second"),
        ({"megabytes_per_second": 3}, "megabytes_per_second"),
        ({"max_parallel_shards": 0}, "max_parallel_shards"),
        ({"endpoint_url": "localhost:4567"}, "endpoint_url"),
        ({"start_position": "EARLIEST"}, "start_position"),
        ({"stale_checkpoint": "ignore"}, "stale_checkpoint"),
        ({"credentials": {"auth_type": "iam_role", "role_arn": "arn:aws:iam::1:role/x", "external_id": "ext"}}, "role_arn"),
        ({"credentials": {"auth_type": "iam_role", "role_arn": "arn:aws:iam::123456789012:role/x"}}, "external_id"),
        ({"credentials": {"auth_type": "access_keys", "aws_access_key_id": KEY_ID}}, "aws_secret_access_key"),
        ({"credentials": {"auth_type": "password"}}, "credentials"),
    ],
)
def test_invalid_field_is_named(overrides: Dict[str, Any], field: str) -> None:
    exc = config_error(raw(**overrides))
    assert field in exc.message


@pytest.mark.parametrize(
    "overrides",
    [
        {"region": "nowhere"},
        {"streams": ["bad name with spaces"]},
        {"records_per_call": 0},
        {"endpoint_url": "ftp://example"},
        {"start_position": "AT_TIMESTAMP"},
        {"credentials": keys(aws_session_token=12345)},
        {"credentials": keys(aws_access_key_id=["not", "a", "string"])},
        {"credentials": keys(auth_type="access_key")},
        {"credentials": keys(aws_secret_access_key=None)},
    ],
)
def test_errors_never_echo_secrets(overrides: Dict[str, Any]) -> None:
    merged = raw(credentials=keys())
    merged.update(overrides)
    exc = config_error(merged)
    assert_no_secret(exc)


def test_secret_of_wrong_type_is_not_echoed() -> None:
    exc = config_error(raw(credentials=keys(aws_secret_access_key={"value": SECRET})))
    assert "aws_secret_access_key" in exc.message
    assert_no_secret(exc)


@pytest.mark.parametrize("position", [{"start_position": "AT_TIMESTAMP"}, {"start_position": {"position": "AT_TIMESTAMP"}}])
def test_at_timestamp_requires_timestamp(position) -> None:
    exc = config_error(raw(**position))
    assert "AT_TIMESTAMP needs its timestamp" in exc.message and "start_position.timestamp" in exc.message


@pytest.mark.parametrize("form", ["flat", "choice"])
def test_at_timestamp_in_the_future_is_refused(form) -> None:
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).isoformat()
    config = (raw(start_position="AT_TIMESTAMP", start_timestamp=future) if form == "flat"
              else raw(start_position={"position": "AT_TIMESTAMP", "timestamp": future}))
    exc = config_error(config)
    assert "start_position timestamp" in exc.message and "future" in exc.message


def test_start_position_choice_and_the_earlier_flat_form_parse_the_same() -> None:
    """The spec offers a choice (the timestamp only inside AT_TIMESTAMP); configs saved before it keep working."""
    choice = parse_config(raw(start_position={"position": "AT_TIMESTAMP", "timestamp": "2024-05-01T12:00:00Z"}))
    flat = parse_config(raw(start_position="AT_TIMESTAMP", start_timestamp="2024-05-01T12:00:00Z"))
    assert (choice.start_position, choice.start_timestamp) == (flat.start_position, flat.start_timestamp)
    assert choice.start_timestamp == dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc)
    for position in ("TRIM_HORIZON", "LATEST"):
        assert parse_config(raw(start_position={"position": position})).start_position == position
        assert parse_config(raw(start_position=position)).start_position == position
    assert parse_config(raw()).start_position == "TRIM_HORIZON"


@pytest.mark.parametrize("choice, named", [
    ({"position": "LATEST", "timestamp": "2024-05-01T12:00:00Z"}, "AT_TIMESTAMP only"),
    ({"position": "AT_TIMESTAMP", "timestamp": "soon"}, "start_position.timestamp"),
    ({"position": "SOMETIMES"}, "start_position"),
    ({"timestamp": "2024-05-01T12:00:00Z"}, "position is required"),
    ({"position": "LATEST", "offset": 3}, "unknown field(s) offset"),
])
def test_a_bad_start_position_choice_is_a_config_error_naming_it(choice, named) -> None:
    exc = config_error(raw(start_position=choice))
    assert named in exc.message


def test_at_timestamp_naive_means_utc() -> None:
    cfg = parse_config(raw(start_position="AT_TIMESTAMP", start_timestamp="2024-05-01T12:00:00"))
    assert cfg.start_timestamp == dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc)
    offset = parse_config(raw(start_position="AT_TIMESTAMP", start_timestamp="2024-05-01T14:00:00+02:00"))
    assert offset.start_timestamp == cfg.start_timestamp


def test_timestamp_ignored_for_other_positions() -> None:
    future = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)).isoformat()
    assert parse_config(raw(start_position="LATEST", start_timestamp=future)).start_position == "LATEST"


def test_stream_refs_names_arns_globs() -> None:
    cfg = parse_config(
        raw(
            streams=[
                "orders",
                "arn:aws:kinesis:eu-west-1:123456789012:stream/payments.v2",
                "arn:aws-cn:kinesis:cn-north-1:123456789012:stream/cn_stream",
                "sales*",
                "log-?",
                "team[ab]-events",
            ]
        )
    )
    refs = cfg.stream_refs
    assert (refs[0].name, refs[0].arn, refs[0].pattern) == ("orders", None, None)
    assert (refs[1].name, refs[1].arn) == ("payments.v2", "arn:aws:kinesis:eu-west-1:123456789012:stream/payments.v2")
    assert refs[2].name == "cn_stream" and refs[2].arn.startswith("arn:aws-cn:")
    assert refs[3].pattern == "sales*" and refs[3].name is None
    assert refs[3].matches("sales-eu") and refs[3].matches("sales") and not refs[3].matches("presales")
    assert refs[4].matches("log-1") and not refs[4].matches("log-12")
    assert refs[5].matches("teama-events") and not refs[5].matches("teamc-events")
    assert refs[0].matches("orders") and not refs[0].matches("orders2")
    assert refs[1].matches("payments.v2")


def test_stream_ref_strips_whitespace() -> None:
    assert StreamRef.parse("  orders ").name == "orders"


@pytest.mark.parametrize(
    "entry",
    [
        "arn:aws:kinesis:us-east-1:123456789012:table/orders",
        "arn:aws:kinesis:us-east-1:12345:stream/orders",
        "arn:aws:sqs:us-east-1:123456789012:orders",
        "arn:aws:kinesis:us-east-1:123456789012:stream/",
    ],
)
def test_bad_stream_arn_is_a_config_error(entry: str) -> None:
    exc = config_error(raw(streams=["orders", entry]))
    assert "streams" in exc.message and entry in exc.message and "ARN" in exc.message


def test_invalid_stream_name() -> None:
    exc = config_error(raw(streams=["a" * 129]))
    assert "streams" in exc.message and "not a valid stream name" in exc.message


def test_format_for_overrides() -> None:
    cfg = parse_config(
        raw(
            format="text",
            dms_primary_key=["pk"],
            stream_formats=[
                {"stream": "cdc-*", "format": "dms", "dms_primary_key": ["tenant", "id"]},
                {"stream": "cdc-legacy", "format": "json"},
                {"stream": "logs*", "format": "cloudwatch_logs"},
                {"stream": "dms-default", "format": "dms"},
            ],
        )
    )
    cdc = cfg.format_for("cdc-orders")
    assert (cdc.stream, cdc.format, cdc.dms_primary_key) == ("cdc-orders", "dms", ["tenant", "id"])
    assert cfg.format_for("cdc-legacy").format == "dms"  # first match wins
    assert cfg.format_for("logs-app").format == "cloudwatch_logs"
    assert cfg.format_for("dms-default").dms_primary_key == ["pk"]  # falls back to the top-level key
    other = cfg.format_for("orders")
    assert (other.format, other.dms_primary_key) == ("text", ["pk"])


def test_format_override_with_unknown_format_is_named() -> None:
    exc = config_error(raw(stream_formats=[{"stream": "x", "format": "avro"}]))
    assert "stream_formats" in exc.message and "format" in exc.message


def test_unknown_fields_are_ignored() -> None:
    cfg = parse_config(raw(something_new=True, credentials={"auth_type": "default_chain", "extra": 1}))
    assert isinstance(cfg.credentials, DefaultChain)


@pytest.mark.parametrize("legacy", [
    {"start_position": "LATEST"},
    {"start_position": "TRIM_HORIZON", "start_timestamp": None},
    {"start_position": "AT_TIMESTAMP", "start_timestamp": "2024-05-01T12:00:00Z"},
])
def test_configs_saved_before_the_start_position_choice_pass_the_spec_check_and_connect(kinesis, legacy) -> None:
    """The CDK checks a config against spec.json before the connector sees it; an older config (a string
    start_position, a top-level start_timestamp) is rewritten first, so check still succeeds with it."""
    import jsonschema

    from source_kinesis.config import migrate_config
    from source_kinesis.source import SourceKinesis
    from unit_tests.source.conftest import config as moto_config, make_stream, run_cli

    make_stream(kinesis, "orders")
    old = moto_config(["orders"], **legacy)
    spec = SourceKinesis().spec(logging.getLogger("airbyte.test")).connectionSpecification
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(old, spec)
    jsonschema.validate(migrate_config(old), spec)
    assert parse_config(migrate_config(old)).start_position == parse_config(old).start_position == legacy["start_position"]
    statuses = run_cli(SourceKinesis(), "check", old).connection_status_messages
    assert [s.connectionStatus.status.value for s in statuses] == ["SUCCEEDED"], statuses


def test_enhanced_fan_out_choice_and_its_rules():
    from source_kinesis.config import parse_config as parse

    base = {"credentials": {"auth_type": "default_chain"}, "region": "us-east-1", "streams": ["orders"]}
    arn = "arn:aws:kinesis:us-east-1:123456789012:stream/orders/consumer/airbyte:1764547200"
    assert parse(base).fan_out is None  # configs without read_mode keep polling
    assert parse(dict(base, read_mode={"mode": "enhanced_fan_out", "consumer_name": "airbyte"})).fan_out.consumer_name == "airbyte"
    assert parse(dict(base, read_mode={"mode": "enhanced_fan_out", "consumer_arn": arn})).fan_out.consumer_arn == arn
    by_arn = dict(base, streams=["arn:aws:kinesis:us-east-1:123456789012:stream/orders"])
    assert parse(dict(by_arn, read_mode={"mode": "enhanced_fan_out", "consumer_arn": arn})).fan_out is not None
    refused = {
        "exactly one of consumer_name": {"mode": "enhanced_fan_out"},
        "exactly one of consumer_name ": {"mode": "enhanced_fan_out", "consumer_name": "a", "consumer_arn": arn},
        "is not a Kinesis stream consumer ARN": {"mode": "enhanced_fan_out", "consumer_arn": "arn:aws:kinesis:us-east-1:1:stream/x"},
        "is not a valid consumer name": {"mode": "enhanced_fan_out", "consumer_name": "bad name"},
    }
    for expected, mode in refused.items():
        with pytest.raises(AirbyteTracedException) as info:
            parse(dict(base, read_mode=mode))
        assert expected.strip() in info.value.message and info.value.failure_type.value == "config_error"
    cases = [
        (dict(base, streams=["orders", "sales"]), "exactly that one stream"),
        (dict(base, streams=["ord*"]), "exactly that one stream"),
        (dict(base, streams=["sales"]), "a consumer of stream 'orders'"),
        (dict(base, streams=["arn:aws:kinesis:us-east-1:999999999999:stream/orders"]), "not to the configured stream"),
        (dict(base, region="us-west-2"), "in region us-east-1"),
    ]
    for config, expected in cases:
        with pytest.raises(AirbyteTracedException) as info:
            parse(dict(config, read_mode={"mode": "enhanced_fan_out", "consumer_arn": arn}))
        assert expected in info.value.message, info.value.message
