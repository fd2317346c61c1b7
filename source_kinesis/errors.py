"""Turn AWS errors into Airbyte errors a user can act on.

Every message names the thing (stream, shard, IAM action, role) and what to do, and carries the Airbyte failure
type: ``config_error`` for what the user must fix (access, names, region, endpoint), ``transient_error`` for what a
retry later may fix (throttling past the retry budget, outages), ``system_error`` for our own bugs. Messages are
built from error codes and names only, never from request parameters, so no secret can leak into them.
"""
from __future__ import annotations

from typing import Optional

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError as BotoConnectionError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from source_kinesis.deadlines import CallDeadlineExceeded, EndpointStalled

ACCESS_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError", "403"}
BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidAccessKeyId",
    "MissingAuthenticationToken",
}
KMS_CONFIG = {"KMSAccessDeniedException", "KMSDisabledException", "KMSInvalidStateException", "KMSNotFoundException", "KMSOptInRequired"}
THROTTLING = {
    "ProvisionedThroughputExceededException",
    "LimitExceededException",
    "KMSThrottlingException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "TooManyRequestsException",
}
SERVER_ERRORS = {"InternalFailure", "InternalFailureException", "InternalError", "ServiceUnavailable", "ServiceUnavailableException"}


class MalformedResponse(Exception):
    """A Kinesis response whose content cannot be what Kinesis sends (e.g. a sequence number that is not decimal
    digits, a ListShards that repeats its NextToken). A broken or hostile endpoint: retried, then transient."""


class IncompleteResponse(Exception):
    """A Kinesis response that lacks a member every successful response carries (a body cut short in transit:
    botocore neither enforces Content-Length nor fails on unparseable JSON, it returns ``{}``). Retryable."""

    def __init__(self, action: str, member: str) -> None:
        super().__init__(f"kinesis:{action} returned a response without {member} (cut short in transit?)")


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


def http_status(exc: BaseException) -> int:
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return 0


def is_throttling(exc: BaseException) -> bool:
    return error_code(exc) in THROTTLING


def is_retryable(exc: BaseException) -> bool:
    """Throttling, KMS throttling, 5xx and connection-level errors: worth another try after a backoff."""
    if isinstance(exc, ClientError):
        code = error_code(exc)
        return code in THROTTLING or code in SERVER_ERRORS or http_status(exc) >= 500 or http_status(exc) == 429
    # HTTPClientError covers ConnectionClosedError (a reset or a close before the response), ResponseStreamingError
    # (a body cut short while streaming) and ReadTimeoutError: botocore's own standard retry mode treats the whole
    # family as transient, and so do we (botocore's retries are off in our client, so this is the only retry layer).
    if isinstance(exc, (EndpointConnectionError, BotoConnectionError, ReadTimeoutError, HTTPClientError, IncompleteReadError, IncompleteResponse)):
        return True
    if isinstance(exc, (CallDeadlineExceeded, EndpointStalled, MalformedResponse)):
        return True
    # urllib3/http.client errors that botocore did not wrap (connection reset mid-body, truncated responses).
    return isinstance(exc, (ConnectionError, TimeoutError)) or type(exc).__name__ in {
        "ProtocolError",
        "IncompleteRead",
        "ResponseStreamingError",
    }


# Actions on a stream consumer (enhanced fan-out): their IAM resource is the consumer's ARN, not the stream's.
CONSUMER_ACTIONS = {"SubscribeToShard", "DescribeStreamConsumer"}


def _iam_hint(action: str, stream: Optional[str]) -> str:
    resource = f"arn:aws:kinesis:<region>:<account>:stream/{stream}" if stream else "the stream ARN"
    if action in CONSUMER_ACTIONS:
        resource = f"{resource}/consumer/*" if stream else "the consumer ARN (stream/NAME/consumer/*)"
    return f"Allow kinesis:{action} on {resource} in the IAM policy of the connector's identity."


def config_error(message: str) -> AirbyteTracedException:
    return AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.config_error)


def transient_error(message: str) -> AirbyteTracedException:
    return AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.transient_error)


def translate(exc: BaseException, action: str, stream: Optional[str] = None, shard: Optional[str] = None) -> AirbyteTracedException:
    """An AirbyteTracedException for an error raised by the Kinesis call ``action`` (e.g. "GetRecords")."""
    if isinstance(exc, AirbyteTracedException):
        return exc
    where = f"stream '{stream}'" if stream else "the account"
    if shard:
        where += f", shard {shard}"
    code = error_code(exc)
    if code in ACCESS_DENIED:
        return config_error(f"Access denied: kinesis:{action} on {where}. {_iam_hint(action, stream)}")
    if code in KMS_CONFIG:
        return config_error(
            f"Cannot decrypt {where} ({code}): the stream is encrypted with a KMS key the connector may not use. "
            "Allow kms:Decrypt on that key for the connector's identity (and check the key is enabled)."
        )
    if code in BAD_CREDENTIALS:
        return config_error(
            f"AWS rejected the credentials while calling kinesis:{action} ({code}). Check the access key, secret and "
            "session token, or that the role could be assumed, and that the region is right."
        )
    if code == "ResourceNotFoundException":
        thing = f"shard {shard} of stream '{stream}'" if shard else f"stream '{stream}'"
        return config_error(f"Kinesis {thing} was not found in this region/account (kinesis:{action}). Check the name or ARN and the region.")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return config_error("No AWS credentials found in the default credential chain. Configure access keys or a role, or provide credentials to the machine running the connector.")
    if isinstance(exc, NoRegionError):
        return config_error("No AWS region configured. Set the region.")
    if isinstance(exc, EndpointConnectionError):
        # An outage (retry later) during a sync; check turns it into a config_error (see source.check_connection).
        return transient_error(
            f"Could not reach the Kinesis endpoint while calling kinesis:{action} on {where} for the whole retry budget: {exc}. "
            "Check the region, the endpoint URL and the network; if they are right, the endpoint is down: try again later."
        )
    if isinstance(exc, (CallDeadlineExceeded, EndpointStalled, IncompleteResponse, MalformedResponse)):
        return transient_error(
            f"kinesis:{action} on {where} failed: {exc}. The endpoint is not answering like Kinesis "
            "(an outage, a proxy or a wrong endpoint URL): check the endpoint URL and the network, then try again later."
        )
    if isinstance(exc, ClientError) and code.isdigit() and not is_retryable(exc):
        # botocore names an error by its bare HTTP status when the body carries no AWS error type: a redirect, a
        # 404 or an HTML page from something that is not Kinesis (a proxy, a captive portal, a wrong endpoint URL).
        # Like any answer that is not Kinesis', a transient_error (check reports it as a config_error).
        return transient_error(
            f"kinesis:{action} on {where} failed: the endpoint answered HTTP {code} without a Kinesis error (a redirect, "
            "a proxy or a wrong endpoint URL). Check the endpoint URL and the network, then try again later."
        )
    if is_retryable(exc):
        return transient_error(f"kinesis:{action} on {where} kept failing with {code} past the retry budget. Try again later; if it is throttling, lower the read budget or the number of consumers of the stream.")
    if isinstance(exc, ClientError):
        msg = exc.response.get("Error", {}).get("Message", "")
        return AirbyteTracedException(
            message=f"kinesis:{action} on {where} failed: {code}: {msg}",
            internal_message=f"{code}: {msg}",
            failure_type=FailureType.system_error,
        )
    if isinstance(exc, BotoCoreError):
        return AirbyteTracedException(message=f"kinesis:{action} on {where} failed: {exc}", internal_message=str(exc), failure_type=FailureType.system_error)
    return AirbyteTracedException.from_exception(exc, message=f"kinesis:{action} on {where} failed: {type(exc).__name__}: {exc}")
