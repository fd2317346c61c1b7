"""The stream consumer an enhanced fan-out sync reads through: found, registered when missing, waited on until ACTIVE.

With ``consumer_name`` every stream read gets a consumer of that name: found with DescribeStreamConsumer, registered
with RegisterStreamConsumer when there is none (a consumer is billed per shard-hour while it exists, so a sync
registers one and ``check`` never does: it only says whether the sync will). With ``consumer_arn`` the consumer must
exist and belong to the configured stream; nothing is registered, so no register permission is needed.

A consumer still CREATING (Kinesis takes seconds to activate one) is waited on, DescribeStreamConsumer every
``CONSUMER_POLL_SECONDS``, for at most ``CONSUMER_ACTIVE_WAIT_SECONDS``; a stop request ends the wait at once. One
being DELETING cannot be read through: a transient error (the next sync registers it again once it is gone).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Dict, Optional

from source_kinesis.config import EnhancedFanOut
from source_kinesis.errors import ACCESS_DENIED, config_error, error_code, transient_error, translate
from source_kinesis.kinesis_api import KinesisStream, describe_consumer, register_consumer, subscribe_to_shard
from source_kinesis.throttling import CONTROL_PLANE_RETRY_SECONDS

CONSUMER_ACTIVE_WAIT_SECONDS = 120.0
CONSUMER_POLL_SECONDS = 1.0


def find_consumer(client: Any, fan_out: EnhancedFanOut, stream: KinesisStream, retry_budget_seconds: float) -> Optional[Dict[str, Any]]:
    """The configured consumer of ``stream`` as DescribeStreamConsumer describes it, or None when ``consumer_name``
    names none yet. A ``consumer_arn`` that does not exist, or belongs to another stream, is a config_error."""
    try:
        if fan_out.consumer_arn is not None:
            description = describe_consumer(client, retry_budget_seconds, ConsumerARN=fan_out.consumer_arn)
        else:
            description = describe_consumer(client, retry_budget_seconds, StreamARN=stream.arn, ConsumerName=fan_out.consumer_name or "")
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, "DescribeStreamConsumer", stream.name) from None
    if fan_out.consumer_arn is None:
        return description
    if description is None:
        raise config_error(
            f"The enhanced fan-out consumer {fan_out.consumer_arn} of stream '{stream.name}' does not exist "
            "(kinesis:DescribeStreamConsumer found none). Register it, or give read_mode.consumer_name to have the sync register one."
        )
    owner = description.get("StreamARN")
    if isinstance(owner, str) and owner != stream.arn:
        raise config_error(
            f"The enhanced fan-out consumer {fan_out.consumer_arn} belongs to {owner}, not to stream '{stream.name}' ({stream.arn}). "
            "Give a consumer of the configured stream."
        )
    return description


def resolve_consumer(
    client: Any,
    fan_out: EnhancedFanOut,
    stream: KinesisStream,
    logger: logging.Logger,
    *,
    retry_budget_seconds: float,
    clock: Callable[[], float] = time.monotonic,
    wait_seconds: float = CONSUMER_ACTIVE_WAIT_SECONDS,
) -> str:
    """The ARN of the ACTIVE consumer this sync reads ``stream`` through (registering it first when missing)."""
    description = find_consumer(client, fan_out, stream, retry_budget_seconds)
    if description is None:
        name = fan_out.consumer_name or ""
        logger.info(f"Stream '{stream.name}': registering the enhanced fan-out consumer '{name}' (kinesis:RegisterStreamConsumer).")
        try:
            description = register_consumer(client, stream.arn, name, min(retry_budget_seconds, CONTROL_PLANE_RETRY_SECONDS))
        except Exception as exc:  # noqa: BLE001
            code = error_code(exc)
            if code == "ResourceInUseException":  # registered meanwhile (another sync): use it
                description = find_consumer(client, fan_out, stream, retry_budget_seconds)
            elif code == "LimitExceededException":  # retried as throttling first; what remains is the consumer limit
                raise config_error(
                    f"kinesis:RegisterStreamConsumer on stream '{stream.name}' kept failing with LimitExceededException: the "
                    "stream has its maximum of 20 consumers (or registrations are throttled). Deregister a consumer you no "
                    "longer use, or give an existing one as read_mode.consumer_arn."
                ) from None
            elif code in ACCESS_DENIED:
                raise config_error(
                    f"Access denied: kinesis:RegisterStreamConsumer on stream '{stream.name}', needed to register the enhanced "
                    f"fan-out consumer '{name}'. Allow kinesis:RegisterStreamConsumer on arn:aws:kinesis:<region>:<account>:stream/"
                    f"{stream.name}, or register the consumer yourself and give its ARN as read_mode.consumer_arn."
                ) from None
            else:
                raise translate(exc, "RegisterStreamConsumer", stream.name) from None
        if description is None:
            raise transient_error(f"The enhanced fan-out consumer '{name}' of stream '{stream.name}' vanished right after it was registered. Try again.")
    return _wait_active(client, description, fan_out, stream, logger, retry_budget_seconds, clock, wait_seconds)


def _wait_active(
    client: Any,
    description: Dict[str, Any],
    fan_out: EnhancedFanOut,
    stream: KinesisStream,
    logger: logging.Logger,
    retry_budget_seconds: float,
    clock: Callable[[], float],
    wait_seconds: float,
) -> str:
    arn = description["ConsumerARN"]
    started = clock()
    logged = False
    while True:
        status = description.get("ConsumerStatus")
        if status == "ACTIVE":
            return arn
        if status == "DELETING":
            raise transient_error(
                f"The enhanced fan-out consumer {arn} of stream '{stream.name}' is being deleted (DELETING); the next sync "
                "registers it again once it is gone" + (" (with consumer_name)." if fan_out.consumer_name else ". Give an ACTIVE consumer's ARN.")
            )
        if clock() - started >= wait_seconds:
            raise transient_error(
                f"The enhanced fan-out consumer {arn} of stream '{stream.name}' stayed {status} for {wait_seconds:.0f} s; "
                "Kinesis usually activates a consumer within seconds. Try again later."
            )
        if not logged:
            logger.info(f"Stream '{stream.name}': waiting for the enhanced fan-out consumer {arn} to become ACTIVE (now {status}).")
            logged = True
        guard = getattr(client, "guard", None)
        if guard is not None:
            guard.sleep(CONSUMER_POLL_SECONDS, "DescribeStreamConsumer")
        else:
            time.sleep(CONSUMER_POLL_SECONDS)
        try:
            fresh = describe_consumer(client, retry_budget_seconds, ConsumerARN=arn)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, "DescribeStreamConsumer", stream.name) from None
        if fresh is None:
            raise transient_error(f"The enhanced fan-out consumer {arn} of stream '{stream.name}' was deleted while the sync waited for it to become ACTIVE. Try again.")
        description = fresh


def probe_fan_out(client: Any, fan_out: EnhancedFanOut, stream: KinesisStream, shard_id: str, retry_budget_seconds: float) -> str:
    """What ``check`` proves of enhanced fan-out on ``stream``, as a sentence for its log: DescribeStreamConsumer
    always; when the consumer exists and is ACTIVE, one SubscribeToShard (LATEST, on ``shard_id``) opened and closed
    at once. Never registers a consumer (a consumer is billed): it says whether the sync will. Missing permissions
    are config_errors naming the action."""
    description = find_consumer(client, fan_out, stream, retry_budget_seconds)
    if description is None:
        return (
            f"stream '{stream.name}': no consumer named '{fan_out.consumer_name}' yet; the first sync registers it "
            f"(needs kinesis:RegisterStreamConsumer on the stream, and kinesis:SubscribeToShard on stream/{stream.name}/consumer/*; "
            "a consumer is billed per shard-hour while it exists)"
        )
    arn, status = description["ConsumerARN"], description.get("ConsumerStatus")
    if status != "ACTIVE":
        return f"stream '{stream.name}': consumer {arn} is {status}; the sync waits until it is ACTIVE (SubscribeToShard not proven yet)"
    try:
        events = subscribe_to_shard(client, arn, shard_id, "LATEST", budget_seconds=retry_budget_seconds)
    except Exception as exc:  # noqa: BLE001
        raise translate(exc, "SubscribeToShard", stream.name, shard_id) from None
    events.close()
    return f"stream '{stream.name}': subscribed to shard {shard_id} through consumer {arn}"
