"""AWS errors become actionable Airbyte errors with the right failure type, naming stream/shard/action."""
from __future__ import annotations

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from source_kinesis.errors import error_code, http_status, is_retryable, is_throttling, translate

SECRET = "s3cr3t-Value-That-Must-Not-Leak"


def client_error(code: str, status: int = 400, message: str = "details") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetRecords")


@pytest.mark.parametrize("code", ["AccessDeniedException", "AccessDenied", "403", "UnauthorizedOperation"])
def test_access_denied_names_action_stream_and_shard(code: str) -> None:
    exc = translate(client_error(code, 403), "GetRecords", "orders", "shardId-000000000001")
    assert exc.failure_type == FailureType.config_error
    assert "kinesis:GetRecords" in exc.message and "'orders'" in exc.message and "shardId-000000000001" in exc.message
    assert "arn:aws:kinesis:<region>:<account>:stream/orders" in exc.message


def test_access_denied_without_stream() -> None:
    exc = translate(client_error("AccessDeniedException"), "ListStreams")
    assert exc.failure_type == FailureType.config_error and "kinesis:ListStreams on the account" in exc.message


@pytest.mark.parametrize("code", ["KMSAccessDeniedException", "KMSDisabledException", "KMSNotFoundException"])
def test_kms_errors_ask_for_kms_decrypt(code: str) -> None:
    exc = translate(client_error(code), "GetRecords", "orders", "shardId-000000000000")
    assert exc.failure_type == FailureType.config_error
    assert "kms:Decrypt" in exc.message and code in exc.message and "'orders'" in exc.message


@pytest.mark.parametrize("code", ["UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException", "InvalidClientTokenId"])
def test_bad_credentials_are_config_errors(code: str) -> None:
    exc = translate(client_error(code, message=f"token {SECRET} is bad"), "DescribeStream", "orders")
    assert exc.failure_type == FailureType.config_error and code in exc.message
    assert SECRET not in exc.message and SECRET not in (exc.internal_message or "")


def test_resource_not_found_names_stream_or_shard() -> None:
    stream = translate(client_error("ResourceNotFoundException"), "DescribeStream", "orders")
    assert stream.failure_type == FailureType.config_error and "stream 'orders' was not found" in stream.message
    shard = translate(client_error("ResourceNotFoundException"), "GetShardIterator", "orders", "shardId-000000000003")
    assert "shard shardId-000000000003 of stream 'orders'" in shard.message


def test_missing_credentials_and_region() -> None:
    assert translate(NoCredentialsError(), "ListShards", "x").failure_type == FailureType.config_error
    assert "credentials" in translate(PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), "ListShards").message
    region = translate(NoRegionError(), "ListShards")
    assert region.failure_type == FailureType.config_error and "region" in region.message


def test_unreachable_endpoint_during_a_sync_is_transient() -> None:
    # An outage that outlasts the retry budget is retried later (issue 15 item 8); check reports it as config_error.
    exc = translate(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "DescribeStream", "orders")
    assert exc.failure_type == FailureType.transient_error
    assert "endpoint" in exc.message and "http://127.0.0.1:1" in exc.message and "'orders'" in exc.message


@pytest.mark.parametrize("code, status", [("ProvisionedThroughputExceededException", 400), ("InternalFailure", 500), ("Whatever", 503)])
def test_retryable_past_budget_is_transient(code: str, status: int) -> None:
    exc = translate(client_error(code, status), "GetRecords", "orders", "shardId-000000000002")
    assert exc.failure_type == FailureType.transient_error
    assert "shardId-000000000002" in exc.message and "retry budget" in exc.message and code in exc.message


def test_unknown_client_error_is_system_error_with_aws_message() -> None:
    exc = translate(client_error("ValidationException", message="Limit too high"), "GetRecords", "orders")
    assert exc.failure_type == FailureType.system_error
    assert "ValidationException: Limit too high" in exc.message


def test_unknown_exception_is_wrapped() -> None:
    exc = translate(ValueError("boom"), "GetRecords", "orders")
    assert isinstance(exc, AirbyteTracedException) and "ValueError: boom" in exc.message


def test_traced_exception_passes_through() -> None:
    original = AirbyteTracedException(message="m", failure_type=FailureType.config_error)
    assert translate(original, "GetRecords") is original


def test_classification_helpers() -> None:
    assert error_code(client_error("X")) == "X" and error_code(ValueError()) == "ValueError"
    assert http_status(client_error("X", 503)) == 503 and http_status(ValueError()) == 0
    assert is_throttling(client_error("KMSThrottlingException")) and not is_throttling(client_error("InternalFailure", 500))
    assert is_retryable(client_error("InternalFailure", 500))
    assert is_retryable(client_error("Unknown", 502))
    assert not is_retryable(client_error("ExpiredIteratorException", 400))
    assert is_retryable(EndpointConnectionError(endpoint_url="http://x"))
    assert is_retryable(ReadTimeoutError(endpoint_url="http://x"))
    assert is_retryable(ConnectTimeoutError(endpoint_url="http://x"))
    assert is_retryable(ConnectionResetError())
    assert not is_retryable(ValueError())


# ------------------------------------------------------------------ check failures end to end (CDK entrypoint)
def test_check_unknown_stream_names_it(moto_aws) -> None:
    from airbyte_cdk.models import Status

    from source_kinesis.source import SourceKinesis

    from .conftest import config, make_stream, run_cli

    import boto3

    make_stream(boto3.client("kinesis", region_name="us-east-1"), "present")
    out = run_cli(SourceKinesis(), "check", config(["present", "absent"]))
    (status,) = [m.connectionStatus for m in out.connection_status_messages]
    assert status.status == Status.FAILED
    assert "'absent'" in status.message and "not found" in status.message
    assert out.errors[0].trace.error.failure_type == FailureType.config_error


def test_check_unreachable_endpoint_is_config_error(aws_env) -> None:
    from airbyte_cdk.models import Status

    from source_kinesis.source import SourceKinesis

    from .conftest import config, run_cli

    out = run_cli(SourceKinesis(), "check", config(["orders"], endpoint_url="http://127.0.0.1:9"))
    (status,) = [m.connectionStatus for m in out.connection_status_messages]
    assert status.status == Status.FAILED
    assert "http://127.0.0.1:9" in status.message and "endpoint" in status.message and "'orders'" in status.message


def test_check_pattern_matching_nothing_fails(moto_aws) -> None:
    from airbyte_cdk.models import Status

    from source_kinesis.source import SourceKinesis

    from .conftest import config, run_cli

    out = run_cli(SourceKinesis(), "check", config(["sales*"]))
    (status,) = [m.connectionStatus for m in out.connection_status_messages]
    assert status.status == Status.FAILED and "sales*" in status.message and "matches no stream" in status.message


def test_global_state_is_refused() -> None:
    from source_kinesis.source import states_by_stream

    with pytest.raises(AirbyteTracedException) as info:
        states_by_stream([{"type": "GLOBAL", "global": {"shared_state": {}}}])
    assert info.value.failure_type == FailureType.config_error and "STREAM" in info.value.message
    blob = {"version": 1, "shards": {}}
    assert states_by_stream([{"type": "STREAM", "stream": {"stream_descriptor": {"name": "a"}, "stream_state": blob}}]) == {"a": blob}
