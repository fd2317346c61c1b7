"""Credentials: access keys, the default chain, and an assumed role whose credentials refresh before expiry."""
from __future__ import annotations

import datetime as dt
from typing import Any, Dict, List

import boto3
import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from botocore.config import Config
from botocore.credentials import RefreshableCredentials
from botocore.exceptions import ClientError, EndpointConnectionError
from botocore.stub import Stubber

from source_kinesis.auth import ROLE_SESSION_SECONDS, ClientFactory, assume_role_fetcher, build_session
from source_kinesis.config import IamRole, parse_config

ROLE_ARN = "arn:aws:iam::123456789012:role/airbyte-kinesis-reader"
EXTERNAL_ID = "ext-7f1c"
BASE_KEY = "AKIABASEKEYEXAMPLE01"
BASE_SECRET = "baseSecretExample/DoNotLeak+0123456789"


def role(**extra: Any) -> IamRole:
    return IamRole(auth_type="iam_role", role_arn=ROLE_ARN, external_id=EXTERNAL_ID, **extra)


class FakeSTS:
    """Hands out numbered temporary credentials; each expires `lifetimes[i]` from now."""

    def __init__(self, lifetimes: List[dt.timedelta], error: Exception = None) -> None:
        self.lifetimes = lifetimes
        self.error = error
        self.calls: List[Dict[str, Any]] = []

    def assume_role(self, **kwargs: Any) -> Dict[str, Any]:
        self.calls.append(kwargs)
        if self.error is not None:
            raise self.error
        n = len(self.calls)
        lifetime = self.lifetimes[min(n - 1, len(self.lifetimes) - 1)]
        return {
            "Credentials": {
                "AccessKeyId": f"ASIATEMP{n}",
                "SecretAccessKey": f"temp-secret-{n}",
                "SessionToken": f"temp-token-{n}",
                "Expiration": dt.datetime.now(dt.timezone.utc) + lifetime,
            }
        }


def sts_denied(code: str = "AccessDenied", message: str = "not authorized") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 403}}, "AssumeRole")


def test_fetcher_calls_sts_with_external_id_and_session_name() -> None:
    sts = FakeSTS([dt.timedelta(hours=1)])
    creds = assume_role_fetcher(sts, role(role_session_name="my-session"))()
    assert sts.calls == [{"RoleArn": ROLE_ARN, "RoleSessionName": "my-session", "ExternalId": EXTERNAL_ID, "DurationSeconds": ROLE_SESSION_SECONDS}]
    assert (creds["access_key"], creds["secret_key"], creds["token"]) == ("ASIATEMP1", "temp-secret-1", "temp-token-1")
    expiry = dt.datetime.fromisoformat(creds["expiry_time"])
    assert expiry.tzinfo is not None and dt.timedelta(minutes=59) < expiry - dt.datetime.now(dt.timezone.utc) <= dt.timedelta(hours=1)


def test_credentials_refresh_before_expiry() -> None:
    # first credentials expire in 5 minutes (inside botocore's 10-minute mandatory refresh window), the next in 1 h
    sts = FakeSTS([dt.timedelta(minutes=5), dt.timedelta(hours=1)])
    fetch = assume_role_fetcher(sts, role())
    refreshable = RefreshableCredentials.create_from_metadata(metadata=fetch(), refresh_using=fetch, method="sts-assume-role")
    assert len(sts.calls) == 1
    frozen = refreshable.get_frozen_credentials()
    assert len(sts.calls) == 2
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ("ASIATEMP2", "temp-secret-2", "temp-token-2")
    again = refreshable.get_frozen_credentials()  # fresh for an hour: no new AssumeRole
    assert len(sts.calls) == 2 and again.access_key == "ASIATEMP2"


def test_credentials_far_from_expiry_are_not_refreshed() -> None:
    sts = FakeSTS([dt.timedelta(hours=1)])
    fetch = assume_role_fetcher(sts, role())
    refreshable = RefreshableCredentials.create_from_metadata(metadata=fetch(), refresh_using=fetch, method="sts-assume-role")
    assert refreshable.get_frozen_credentials().access_key == "ASIATEMP1"
    assert len(sts.calls) == 1


@pytest.mark.parametrize("code", ["AccessDenied", "AccessDeniedException", "403"])
def test_assume_role_denied_is_config_error_naming_role_and_external_id(code: str) -> None:
    fetch = assume_role_fetcher(FakeSTS([], error=sts_denied(code)), role())
    with pytest.raises(AirbyteTracedException) as info:
        fetch()
    exc = info.value
    assert exc.failure_type == FailureType.config_error
    assert ROLE_ARN in exc.message and "external ID" in exc.message and "sts:AssumeRole" in exc.message


def test_assume_role_with_rejected_base_credentials() -> None:
    fetch = assume_role_fetcher(FakeSTS([], error=sts_denied("InvalidClientTokenId", f"key {BASE_KEY} unknown")), role())
    with pytest.raises(AirbyteTracedException) as info:
        fetch()
    assert info.value.failure_type == FailureType.config_error
    assert ROLE_ARN in info.value.message and "default chain" in info.value.message
    assert BASE_KEY not in info.value.message


def test_assume_role_unreachable_sts() -> None:
    fetch = assume_role_fetcher(FakeSTS([], error=EndpointConnectionError(endpoint_url="https://sts.example")), role())
    with pytest.raises(AirbyteTracedException) as info:
        fetch()
    assert info.value.failure_type == FailureType.config_error
    assert "STS" in info.value.message and "assume role" in info.value.message


def test_no_credentials_in_assume_role_errors_with_real_sts_client() -> None:
    sts = boto3.client("sts", region_name="us-east-1", aws_access_key_id=BASE_KEY, aws_secret_access_key=BASE_SECRET,
                       config=Config(retries={"total_max_attempts": 1}))
    for code in ("AccessDenied", "ExpiredToken", "RegionDisabledException"):
        with Stubber(sts) as stubber:
            stubber.add_client_error("assume_role", service_error_code=code, service_message="denied", http_status_code=403)
            with pytest.raises(AirbyteTracedException) as info:
                assume_role_fetcher(sts, role())()
        text = f"{info.value.message} {info.value.internal_message} {info.value!r}"
        assert BASE_KEY not in text and BASE_SECRET not in text


def test_access_keys_session(aws_env) -> None:
    cfg = parse_config({
        "credentials": {"auth_type": "access_keys", "aws_access_key_id": "AKIAKEYS", "aws_secret_access_key": "keys-secret", "aws_session_token": "keys-token"},
        "region": "eu-west-1",
        "streams": ["orders"],
    })
    session = build_session(cfg)
    frozen = session.get_credentials().get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ("AKIAKEYS", "keys-secret", "keys-token")
    assert session.region_name == "eu-west-1"


def test_access_keys_without_token(aws_env) -> None:
    cfg = parse_config({
        "credentials": {"auth_type": "access_keys", "aws_access_key_id": "AKIAKEYS", "aws_secret_access_key": "keys-secret", "aws_session_token": ""},
        "region": "eu-west-1",
        "streams": ["orders"],
    })
    assert build_session(cfg).get_credentials().get_frozen_credentials().token is None


def test_default_chain_uses_environment(aws_env, monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENV")
    cfg = parse_config({"credentials": {"auth_type": "default_chain"}, "region": "us-west-2", "streams": ["orders"]})
    session = build_session(cfg)
    assert session.get_credentials().access_key == "AKIAFROMENV"
    assert session.region_name == "us-west-2"


def test_iam_role_session_on_moto_is_refreshable(moto_aws) -> None:
    """build_session wires STS into botocore's refreshable credentials: a near expiry triggers a new AssumeRole."""
    cfg = parse_config({"credentials": {"auth_type": "iam_role", "role_arn": ROLE_ARN, "external_id": EXTERNAL_ID},
                        "region": "us-east-1", "streams": ["orders"]})
    session = build_session(cfg)
    creds = session.get_credentials()
    assert isinstance(creds, RefreshableCredentials)
    assert creds.method == "sts-assume-role"
    first = creds.get_frozen_credentials()
    assert first.access_key.startswith("ASIA") and first.token
    creds._expiry_time = dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)
    second = creds.get_frozen_credentials()
    assert second.access_key != first.access_key
    assert creds._expiry_time - dt.datetime.now(dt.timezone.utc) > dt.timedelta(minutes=50)


def test_client_factory_turns_botocore_retries_off(aws_env) -> None:
    cfg = parse_config({"credentials": {"auth_type": "default_chain"}, "region": "us-east-1", "streams": ["orders"],
                        "endpoint_url": "http://127.0.0.1:4567", "max_parallel_shards": 7})
    factory = ClientFactory(cfg)
    client = factory.kinesis()
    assert factory.kinesis() is client
    assert client.meta.config.retries["total_max_attempts"] == 1
    assert client.meta.endpoint_url == "http://127.0.0.1:4567"
    assert client.meta.config.max_pool_connections >= 7


def test_secrets_never_reach_the_output_of_check_discover_read(moto_aws) -> None:
    import json

    import boto3
    from airbyte_cdk.models import SyncMode
    from airbyte_cdk.test.catalog_builder import CatalogBuilder
    from airbyte_cdk.test.entrypoint_wrapper import discover, read

    from source_kinesis.source import SourceKinesis

    from .conftest import config, make_stream, put, run_cli

    kinesis = boto3.client("kinesis", region_name="us-east-1")
    make_stream(kinesis, "orders")
    put(kinesis, "orders", [{"n": 1}])
    secret, token = "Sup3rSecretKeyMaterial/ABCDEFGH0123", "SessionTokenMaterial0123456789"
    cfg = config(["orders", "missing"], credentials={"auth_type": "access_keys", "aws_access_key_id": "AKIAOUTPUTTEST", "aws_secret_access_key": secret, "aws_session_token": token})
    outputs = [
        run_cli(SourceKinesis(), "check", cfg),
        discover(SourceKinesis(), cfg, expecting_exception=True),
        read(SourceKinesis(), cfg, CatalogBuilder().with_stream("orders", SyncMode.incremental).with_stream("missing", SyncMode.incremental).build(), expecting_exception=True),
    ]
    assert outputs[2].records  # the read did run
    for out in outputs:
        text = json.dumps([m.model_dump(mode="json") if hasattr(m, "model_dump") else str(m) for m in out._messages]) + "".join(map(str, out.logs))
        assert secret not in text and token not in text


@pytest.mark.parametrize("auth", ["access_keys", "default_chain", "iam_role"])
def test_the_kinesis_client_parses_timestamps_as_epoch_floats_through_public_botocore_hooks(moto_aws, auth) -> None:
    """Pins what build_session does through botocore's public extension points (no private attributes): the
    response parser factory's timestamp parser (GetRecords' ApproximateArrivalTimestamp as a float, not a datetime)
    and each credential source. A botocore upgrade that breaks either fails here."""
    import boto3 as boto

    credentials = {
        "access_keys": {"auth_type": "access_keys", "aws_access_key_id": "AKIAPINNED", "aws_secret_access_key": "s"},
        "default_chain": {"auth_type": "default_chain"},
        "iam_role": {"auth_type": "iam_role", "role_arn": ROLE_ARN, "external_id": EXTERNAL_ID},
    }[auth]
    cfg = parse_config({"credentials": credentials, "region": "us-east-1", "streams": ["orders"]})
    setup = boto.client("kinesis", region_name="us-east-1")
    setup.create_stream(StreamName="orders", ShardCount=1)
    setup.put_record(StreamName="orders", Data=b'{"n": 1}', PartitionKey="k")
    client = ClientFactory(cfg).kinesis()
    shard = client.list_shards(StreamName="orders")["Shards"][0]["ShardId"]
    iterator = client.get_shard_iterator(StreamName="orders", ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    record = client.get_records(ShardIterator=iterator)["Records"][0]
    assert type(record["ApproximateArrivalTimestamp"]) is float
    session_credentials = build_session(cfg).get_credentials()
    expected = {"access_keys": "explicit", "default_chain": "env", "iam_role": "sts-assume-role"}[auth]
    assert session_credentials.method == expected
