"""Every Kinesis call the source makes, in one place: describing streams, listing streams and shards (with the
pagination bounds of ``pagination.py``), shard iterators, records, and the probes ``check`` makes.

This layer owns three rules each call used to apply on its own:

* **How a stream is addressed** (``stream_params``, ``records_params``): a stream configured by ARN (e.g. in another
  account) is addressed by ``StreamARN`` everywhere, otherwise by ``StreamName``; ``GetRecords`` takes only the ARN
  (its iterator names the stream), and ``ListShards``' later pages carry ``NextToken`` alone (Kinesis refuses the
  stream beside it).
* **Deadlines and retries**: every call goes through ``throttling.call_kinesis`` (the retry budget, the stop and
  outage guards of ``deadlines.py``, the check that the response is complete).
* **Errors**: the stream-level calls translate AWS errors into Airbyte errors naming the IAM action, the stream and
  the shard (``errors.translate``). ``get_shard_iterator`` and ``get_records`` raise the AWS error as it came: a
  reader first tells apart the ones that are news about the shard (an expired iterator, a stale checkpoint, a shard
  that is gone) and translates the rest itself.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional

from source_kinesis.errors import ACCESS_DENIED, MalformedResponse, config_error, error_code, translate
from source_kinesis.lineage import ShardGraph, ShardInfo
from source_kinesis.pagination import Pagination
from source_kinesis.state import iso_ms
from source_kinesis.throttling import CONTROL_PLANE_RETRY_SECONDS, RetryCounters, call_kinesis


def stream_params(stream_ref: Mapping[str, str]) -> Dict[str, Any]:
    """The parameters that name the stream in a call: ``{"StreamARN": …}`` or ``{"StreamName": …}``."""
    return dict(stream_ref)


def records_params(stream_ref: Mapping[str, str]) -> Dict[str, Any]:
    """What GetRecords carries besides the iterator: the ARN of a stream read by ARN, else nothing."""
    return {"StreamARN": stream_ref["StreamARN"]} if "StreamARN" in stream_ref else {}


@dataclass(frozen=True)
class KinesisStream:
    name: str
    arn: str
    created_at: str  # ISO-8601 UTC ms
    status: str
    encryption: str
    api_ref: Mapping[str, str]  # {"StreamName": ...} or {"StreamARN": ...}, passed to every data-plane call


def describe_stream(client: Any, ref: Mapping[str, str], name: str, retry_budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS) -> KinesisStream:
    try:
        desc = call_kinesis("DescribeStream", client.describe_stream, dict(stream_params(ref), Limit=1), budget_seconds=retry_budget_seconds)["StreamDescription"]
        if not isinstance(desc, dict) or not isinstance(desc.get("StreamName"), str) or not isinstance(desc.get("StreamARN"), str):
            raise MalformedResponse(f"DescribeStream returned a StreamDescription without a StreamName and StreamARN: {str(desc)[:100]}")
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, "DescribeStream", name) from None
    created = desc.get("StreamCreationTimestamp")
    if isinstance(created, (int, float)):
        created = dt.datetime.fromtimestamp(created, dt.timezone.utc)
    created_iso = iso_ms(created) if isinstance(created, dt.datetime) else str(created)
    status = desc.get("StreamStatus", "ACTIVE")
    if status in ("CREATING", "DELETING"):
        raise config_error(f"Kinesis stream '{name}' is {status}; it can be read once it is ACTIVE.")
    return KinesisStream(
        name=desc["StreamName"],
        arn=desc["StreamARN"],
        created_at=created_iso,
        status=status,
        encryption=desc.get("EncryptionType", "NONE"),
        api_ref=dict(ref),
    )


def list_stream_names(client: Any, pattern: str, retry_budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS) -> List[str]:
    """Every stream name of the account/region, across pages, under the pagination bounds of ``pagination.py``."""
    names: List[str] = []
    kwargs: Dict[str, Any] = {"Limit": 100}
    pages = Pagination("ListStreams", "the account's stream list", retry_budget_seconds)
    try:
        while True:
            response = call_kinesis("ListStreams", client.list_streams, kwargs, budget_seconds=pages.call_budget())
            page_names = response.get("StreamNames")
            if not isinstance(page_names, list) or not all(isinstance(n, str) for n in page_names):
                raise MalformedResponse(f"ListStreams returned StreamNames that are not a list of names: {str(page_names)[:100]}")
            pages.add_items(len(page_names))
            names.extend(page_names)
            if not response.get("HasMoreStreams"):
                return names
            token = response.get("NextToken")
            if token:
                pages.next_token(token)
                kwargs = {"Limit": 100, "NextToken": token}
            else:
                if not page_names:
                    raise MalformedResponse("ListStreams said HasMoreStreams but returned no stream name to continue after")
                pages.next_token(f"after:{names[-1]}")
                kwargs = {"Limit": 100, "ExclusiveStartStreamName": names[-1]}
    except Exception as exc:  # noqa: BLE001
        if error_code(exc) in ACCESS_DENIED:
            raise config_error(
                f"The stream pattern '{pattern}' needs kinesis:ListStreams, which is denied. Name the streams explicitly "
                "(names or ARNs need only ListShards, DescribeStream, GetShardIterator and GetRecords), or allow kinesis:ListStreams."
            ) from None
        raise translate(exc, "ListStreams") from None


def list_shards(client: Any, stream_ref: Mapping[str, str], stream_name: str, retry_budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS) -> List[ShardInfo]:
    """Every shard still in retention (open and closed), across all pages, under the bounds of ``pagination.py``
    (a repeated NextToken, a page/item limit, a total time bound).

    ``stream_ref`` is ``{"StreamName": ...}`` or ``{"StreamARN": ...}``. A call that carries ``NextToken`` must not
    also carry the stream name/ARN (Kinesis rejects it), so later pages send the token alone.
    """
    shards: Dict[str, ShardInfo] = {}
    kwargs: Dict[str, Any] = stream_params(stream_ref)
    pages = Pagination("ListShards", f"stream '{stream_name}'", retry_budget_seconds)
    try:
        while True:
            response = call_kinesis("ListShards", client.list_shards, dict(kwargs, MaxResults=1000), budget_seconds=pages.call_budget())
            page = response.get("Shards")
            if not isinstance(page, list):
                raise MalformedResponse(f"ListShards returned Shards that are not a list: {str(page)[:100]}")
            pages.add_items(len(page))
            for raw in page:
                info = ShardInfo.from_list_shards(raw)
                shards.setdefault(info.shard_id, info)
            token = response.get("NextToken")
            if not token:
                ShardGraph().add_listed(shards.values())  # refuses lineage cycles (a MalformedResponse) here
                return list(shards.values())
            if not isinstance(token, str):
                raise MalformedResponse(f"ListShards returned a NextToken that is not a string: {str(token)[:100]}")
            pages.next_token(token)
            kwargs = {"NextToken": token}
    except Exception as exc:  # noqa: BLE001 - translated into an actionable Airbyte error
        raise translate(exc, "ListShards", stream_name) from None


def get_shard_iterator(
    client: Any,
    stream_ref: Mapping[str, str],
    shard_id: str,
    iterator_type: str,
    *,
    sequence_number: Optional[str] = None,
    timestamp: Optional[dt.datetime] = None,
    budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS,
    counters: Optional[RetryCounters] = None,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """A shard iterator; the AWS error as it came when Kinesis refuses (see the module docstring)."""
    kwargs: Dict[str, Any] = dict(stream_params(stream_ref), ShardId=shard_id, ShardIteratorType=iterator_type)
    if sequence_number is not None:
        kwargs["StartingSequenceNumber"] = sequence_number
    if timestamp is not None:
        kwargs["Timestamp"] = timestamp
    response = call_kinesis("GetShardIterator", client.get_shard_iterator, kwargs, budget_seconds=budget_seconds, counters=counters, sleep=sleep)
    iterator = response["ShardIterator"]
    if not isinstance(iterator, str) or not iterator:
        raise MalformedResponse(f"GetShardIterator returned a ShardIterator that is not a string: {str(iterator)[:80]!r}")
    return iterator


def get_records(
    client: Any,
    stream_ref: Mapping[str, str],
    iterator: str,
    limit: int,
    *,
    budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS,
    counters: Optional[RetryCounters] = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """One GetRecords response, unchecked beyond completeness (``shard_reader`` checks every record); the AWS error
    as it came when Kinesis refuses."""
    kwargs: Dict[str, Any] = dict(records_params(stream_ref), ShardIterator=iterator, Limit=limit)
    return call_kinesis("GetRecords", client.get_records, kwargs, budget_seconds=budget_seconds, counters=counters, sleep=sleep)


# SubscribeToShard also retries this: the previous subscription of the consumer on the shard is still active (for up
# to 5 s after it ended, or while an abandoned one is being torn down).
SUBSCRIBE_RETRY_CODES = frozenset({"ResourceInUseException"})


def subscribe_to_shard(
    client: Any,
    consumer_arn: str,
    shard_id: str,
    iterator_type: str,
    *,
    sequence_number: Optional[str] = None,
    timestamp: Optional[dt.datetime] = None,
    budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS,
    counters: Optional[RetryCounters] = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """A subscription's event stream (botocore's ``EventStream``, its initial-response already read); the AWS error
    as it came when Kinesis refuses (a reader tells apart a stale position, a gone shard, a missing consumer)."""
    position: Dict[str, Any] = {"Type": iterator_type}
    if sequence_number is not None:
        position["SequenceNumber"] = sequence_number
    if timestamp is not None:
        position["Timestamp"] = timestamp
    kwargs = {"ConsumerARN": consumer_arn, "ShardId": shard_id, "StartingPosition": position}
    response = call_kinesis(
        "SubscribeToShard", client.subscribe_to_shard, kwargs,
        budget_seconds=budget_seconds, counters=counters, sleep=sleep, retry_codes=SUBSCRIBE_RETRY_CODES,
    )
    return response["EventStream"]


def describe_consumer(client: Any, retry_budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS, **which: str) -> Optional[Dict[str, Any]]:
    """DescribeStreamConsumer by ``ConsumerARN=…`` or ``StreamARN=…, ConsumerName=…``: its ConsumerDescription, or
    None when there is no such consumer. Other errors as they came."""
    try:
        response = call_kinesis("DescribeStreamConsumer", client.describe_stream_consumer, which, budget_seconds=retry_budget_seconds)
    except Exception as exc:  # noqa: BLE001
        if error_code(exc) == "ResourceNotFoundException":
            return None
        raise
    description = response.get("ConsumerDescription")
    if not isinstance(description, dict) or not isinstance(description.get("ConsumerARN"), str) or not isinstance(description.get("ConsumerStatus"), str):
        raise MalformedResponse(f"DescribeStreamConsumer returned a ConsumerDescription without ConsumerARN and ConsumerStatus: {str(description)[:100]}")
    return description


def register_consumer(client: Any, stream_arn: str, name: str, retry_budget_seconds: float = CONTROL_PLANE_RETRY_SECONDS) -> Dict[str, Any]:
    """RegisterStreamConsumer: the new consumer (CREATING). Errors as they came (ResourceInUseException: it exists)."""
    response = call_kinesis(
        "RegisterStreamConsumer", client.register_stream_consumer, {"StreamARN": stream_arn, "ConsumerName": name}, budget_seconds=retry_budget_seconds
    )
    consumer = response.get("Consumer")
    if not isinstance(consumer, dict) or not isinstance(consumer.get("ConsumerARN"), str):
        raise MalformedResponse(f"RegisterStreamConsumer returned a Consumer without ConsumerARN: {str(consumer)[:100]}")
    return consumer


def probe_reads(client: Any, stream: KinesisStream, retry_budget_seconds: float, *, polling: bool = True) -> str:
    """Make, once, each read a sync makes on this stream, so a missing permission shows up now with its name:
    ListShards, and with ``polling`` GetShardIterator and GetRecords (enhanced fan-out needs neither: its probe is
    ``consumers.probe_fan_out``). Returns the shard probed."""
    shards = list_shards(client, stream.api_ref, stream.name, retry_budget_seconds)
    if not shards:
        raise config_error(f"Kinesis stream '{stream.name}' has no shards.")
    shard = shards[-1]
    if not polling:
        return shard.shard_id
    try:
        iterator = get_shard_iterator(client, stream.api_ref, shard.shard_id, "LATEST", budget_seconds=retry_budget_seconds)
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, "GetShardIterator", stream.name, shard.shard_id) from None
    try:
        get_records(client, stream.api_ref, iterator, 1, budget_seconds=retry_budget_seconds)
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, "GetRecords", stream.name, shard.shard_id) from None
    return shard.shard_id
