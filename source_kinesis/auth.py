"""AWS credentials and clients: access keys, the default chain, or an IAM role assumed through STS.

The role is assumed on top of the default credential chain with ``ExternalId``, through botocore's refreshable
credentials: botocore calls ``_assume`` again shortly before the temporary credentials expire, so follow runs
outlive the one-hour default session.

Clients are built with botocore's own retries off (``total_max_attempts=1``): the shard reader owns retries and
backoff in one place (tenacity), so throttle counts and backoff are exact. Every call, Kinesis and STS alike, runs
under a total deadline (``deadlines.py``): ``kinesis()`` returns a ``GuardedClient``. With enhanced fan-out the
client's SubscribeToShard calls go over HTTP/2 (``fanout_transport.py``).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from typing import Any, Callable, Dict, Optional

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import CredentialProvider, RefreshableCredentials
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError
from botocore.utils import parse_timestamp

from source_kinesis.config import AccessKeys, IamRole, SourceConfig
from source_kinesis.deadlines import CALL_DEADLINE_SECONDS, CallDeadlineExceeded, CallGuard, GuardedClient
from source_kinesis.errors import BAD_CREDENTIALS, config_error, error_code, transient_error, translate

# Ask for credentials valid this long; botocore refreshes them 15 (advisory) / 10 (mandatory) minutes before expiry.
ROLE_SESSION_SECONDS = 3600


def assume_role_fetcher(sts_client: Any, role: IamRole, duration: int = ROLE_SESSION_SECONDS) -> Callable[[], Dict[str, str]]:
    """A function returning fresh temporary credentials for the role, in botocore's refresh metadata shape."""

    def fetch() -> Dict[str, str]:
        try:
            response = sts_client.assume_role(
                RoleArn=role.role_arn,
                RoleSessionName=role.role_session_name,
                ExternalId=role.external_id,
                DurationSeconds=duration,
            )
        except ClientError as exc:
            code = error_code(exc)
            if code in {"AccessDenied", "AccessDeniedException", "403"}:
                raise config_error(
                    f"Could not assume role {role.role_arn} (sts:AssumeRole denied). Check that the role's trust policy "
                    "names the principal running the connector and requires exactly this external ID."
                ) from None
            if code in BAD_CREDENTIALS:
                raise config_error(
                    f"Could not assume role {role.role_arn}: the base credentials from the default chain were rejected ({code})."
                ) from None
            raise translate(exc, "AssumeRole") from None
        except EndpointConnectionError as exc:
            raise config_error(
                f"Could not reach AWS STS to assume role {role.role_arn} ({exc}). Check the region and the network route to STS."
            ) from None
        except BotoCoreError as exc:
            raise translate(exc, "AssumeRole") from None
        creds = response["Credentials"]
        expiration = creds["Expiration"]
        if isinstance(expiration, dt.datetime):
            expiration = expiration.astimezone(dt.timezone.utc).isoformat()
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": expiration,
        }

    return fetch


# botocore's per-socket-read timeouts; the total per call is the guard's (CALL_DEADLINE_SECONDS). The read timeout
# also frees the thread of a call abandoned at its deadline once the server goes quiet.
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = int(CALL_DEADLINE_SECONDS)


class _AssumedRole(CredentialProvider):
    """Hands botocore's credential resolver the role's refreshable credentials (``CredentialProvider`` and
    ``CredentialResolver.insert_before`` are botocore's public extension points for credential sources)."""

    METHOD = "sts-assume-role"

    def __init__(self, credentials: RefreshableCredentials) -> None:
        super().__init__()
        self._role_credentials = credentials

    def load(self) -> RefreshableCredentials:
        return self._role_credentials


def build_session(config: SourceConfig, guard: Optional[CallGuard] = None) -> boto3.Session:
    """A boto3 session over a botocore session built here, through public APIs only: access keys with
    ``set_credentials``, a role through a credential provider placed first in the resolver chain, and the source's
    timestamp parser through the response parser factory (``epoch_timestamp``)."""
    core = botocore.session.get_session()
    core.set_config_variable("region", config.region)
    creds = config.credentials
    if isinstance(creds, AccessKeys):
        core.set_credentials(creds.aws_access_key_id, creds.aws_secret_access_key, creds.aws_session_token or None)
    elif isinstance(creds, IamRole):
        base = boto3.Session(region_name=config.region)  # the default chain's credentials call AssumeRole
        sts = base.client(
            "sts",
            region_name=config.region,
            config=Config(
                retries={"total_max_attempts": 3, "mode": "standard"},
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                read_timeout=READ_TIMEOUT_SECONDS,
            ),
        )
        fetch = assume_role_fetcher(sts, creds)
        # The first AssumeRole runs under the guard's deadline here; refreshes run inside a Kinesis call, so under
        # that call's deadline.
        sts_guard = dataclasses.replace(guard, endpoint="AWS STS") if guard is not None else CallGuard(endpoint="AWS STS")
        try:
            first = sts_guard.call("AssumeRole", fetch, {})
        except CallDeadlineExceeded as exc:
            raise transient_error(f"Could not assume role {creds.role_arn}: {exc}. Check the network route to AWS STS, then try again.") from None
        refreshable = RefreshableCredentials.create_from_metadata(
            metadata=first, refresh_using=fetch, method="sts-assume-role"
        )
        core.get_component("credential_provider").insert_before("env", _AssumedRole(refreshable))
    # botocore.parsers.ResponseParserFactory.set_parser_defaults: the documented hook for a session's parsers
    core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=epoch_timestamp)
    return boto3.Session(botocore_session=core, region_name=config.region)


def epoch_timestamp(value: Any) -> float:
    """botocore timestamp parser for the source's clients: epoch seconds as a float instead of a datetime.
    Kinesis' JSON protocol sends timestamps as epoch numbers; botocore's default turns each one into a tz-aware
    datetime, a large share of GetRecords' per-record cost. Strings (other endpoints) still parse."""
    if isinstance(value, (int, float)):
        return float(value)
    return parse_timestamp(value).timestamp()


class ClientFactory:
    """Builds the Kinesis client once per config (boto3 clients are thread-safe; sessions are not), guarded: every
    call ends within its deadline, within ``total_seconds`` of the factory's creation when given (check), and at once
    when ``stop`` is set."""

    def __init__(self, config: SourceConfig, *, stop: Optional[threading.Event] = None, total_seconds: Optional[float] = None) -> None:
        self.config = config
        guard = CallGuard(endpoint=config.endpoint_url or f"the Kinesis endpoint of {config.region}").with_stops(stop)
        self.guard = guard.with_total(total_seconds) if total_seconds is not None else guard
        self._lock = threading.Lock()
        self._client: Optional[Any] = None
        self.sender: Optional[Any] = None  # enhanced fan-out's transport, once the client is built

    def kinesis(self) -> Any:
        with self._lock:
            if self._client is None:
                session = build_session(self.config, self.guard)
                self._client = session.client(
                    "kinesis",
                    region_name=self.config.region,
                    endpoint_url=self.config.endpoint_url or None,
                    config=Config(
                        retries={"total_max_attempts": 1},
                        connect_timeout=CONNECT_TIMEOUT_SECONDS,
                        read_timeout=READ_TIMEOUT_SECONDS,
                        max_pool_connections=self.config.max_parallel_shards + 4,
                        user_agent_extra="airbyte-source-kinesis",
                    ),
                )
                if self.config.fan_out is not None:
                    # SubscribeToShard over HTTP/2 (fanout_transport.py); every other call keeps botocore's transport.
                    # Imported here: httpx costs polling syncs start-up time for nothing.
                    from source_kinesis.fanout_transport import Http2Sender, default_verify, install

                    self.sender = Http2Sender(connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS, verify=default_verify())
                    install(self._client, self.sender)
                self._client = GuardedClient(self._client, self.guard)
            return self._client
