"""The Airbyte source: spec, check, discover, read.

``check`` proves every read a sync will make (assume-role, DescribeStream, ListShards, GetShardIterator,
GetRecords) for each configured stream; with enhanced fan-out, DescribeStreamConsumer and one SubscribeToShard instead
of the last two (``consumers.probe_fan_out``), saying whether the sync will register the consumer. ``read`` hands all configured streams at once to the orchestrator, which
reads their shards concurrently (the CDK's stock read goes stream by stream) and owns records, states and stream
statuses.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from airbyte_cdk.models import (
    AirbyteCatalog,
    FailureType,
    AirbyteMessage,
    AirbyteStateMessage,
    AirbyteStateType,
    ConfiguredAirbyteCatalog,
    SyncMode,
    Type,
)
from airbyte_cdk.sources import AbstractSource
from airbyte_cdk.sources.streams import Stream
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_kinesis.auth import ClientFactory
from source_kinesis.config import EnhancedFanOut, Polling, SourceConfig, migrate_config, parse_config
from source_kinesis.consumers import find_consumer, probe_fan_out
from source_kinesis.deadlines import Stopped
from source_kinesis.discovery import KinesisStream, airbyte_stream, record_schema, resolve_catalog_stream, resolve_streams
from source_kinesis.errors import config_error, translate
from source_kinesis.kinesis_api import probe_reads
from source_kinesis.orchestrator import Orchestrator
from source_kinesis.records import CONTRACT_FIELDS
from source_kinesis.schema_inference import infer_schema

# Discover samples every stream by default (config schema_sample_size, default 100 records) so that typed
# destinations get payload columns; a stream's sample ends after this many seconds of reading however little it
# found (an empty stream ends sooner: each shard's reader stops at the tip), so discover costs at most this much more
# per stream.
SCHEMA_SAMPLE_SECONDS = 3
# An inferred property carries this keyword (JSON Schema ignores unknown keywords): its type is a hint from a sample,
# not a declaration. destination-collection widens such a column as values need (README, "Schema at discover").
INFERRED_KEYWORD = "x-inferred"
# check answers within seconds (the Airbyte UI waits on it): transient errors are retried this long, not a sync's budget.
CHECK_RETRY_SECONDS = 10.0
# ... and the whole check (every call, its retries and backoff, for every stream) ends within this many seconds, on
# any endpoint: a slow-dripping or silent one included (the bound is 30 s; process start-up takes the rest).
CHECK_TOTAL_SECONDS = 25.0


def states_by_stream(state: Optional[List[Any]]) -> Dict[str, Optional[Mapping[str, Any]]]:
    """Per-stream state blobs from the ``--state`` messages (CDK objects or raw dicts)."""
    result: Dict[str, Optional[Mapping[str, Any]]] = {}
    for message in state or []:
        if isinstance(message, Mapping):
            if message.get("type", "STREAM") != "STREAM" or "stream" not in message:
                raise config_error("Only per-stream (STREAM) state is supported; reset the connection's state.")
            stream = message["stream"]
            result[stream["stream_descriptor"]["name"]] = stream.get("stream_state") or None
            continue
        if not isinstance(message, AirbyteStateMessage) or message.type != AirbyteStateType.STREAM or message.stream is None:
            raise config_error("Only per-stream (STREAM) state is supported; reset the connection's state.")
        blob = message.stream.stream_state
        result[message.stream.stream_descriptor.name] = dict(blob.__dict__) if blob is not None else None
    return result


class SourceKinesis(AbstractSource):
    def __init__(self, stop_event: Optional[threading.Event] = None) -> None:
        """``stop_event`` (for runners): when set, a bounded read stops early, emitting what it already fetched and a
        final checkpoint per stream."""
        super().__init__()
        self.stop_event = stop_event

    def check_connection(self, logger: logging.Logger, config: Mapping[str, Any]) -> Tuple[bool, Optional[Any]]:
        cfg = parse_config(config)
        try:
            client = ClientFactory(cfg, stop=self.stop_event, total_seconds=CHECK_TOTAL_SECONDS).kinesis()
            streams = resolve_streams(client, cfg, require_matches=True, retry_budget_seconds=CHECK_RETRY_SECONDS)
            notes = []
            for stream in streams:
                shard_id = probe_reads(client, stream, CHECK_RETRY_SECONDS, polling=cfg.fan_out is None)
                if cfg.fan_out is not None:
                    notes.append(probe_fan_out(client, cfg.fan_out, stream, shard_id, CHECK_RETRY_SECONDS))
        except AirbyteTracedException as exc:
            raise check_failure(exc, cfg) from None
        except Exception as exc:  # noqa: BLE001 - anything else still gets an actionable message
            raise check_failure(translate(exc, "DescribeStream"), cfg) from None
        logger.info(f"Check succeeded: {len(streams)} stream(s) readable: {', '.join(s.name for s in streams)}")
        for note in notes:
            logger.info(f"Enhanced fan-out: {note}")
        return True, None

    def configure(self, config: Mapping[str, Any], temp_dir: str) -> Mapping[str, Any]:
        """Configs written before 0.1.1 are rewritten into today's spec shape (config.migrate_config) before the CDK
        checks them against the spec."""
        return super().configure(migrate_config(config), temp_dir)

    def streams(self, config: Mapping[str, Any]) -> List[Stream]:
        # Not used: discover and read are overridden (all streams are read concurrently by the orchestrator).
        return []

    def discover(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteCatalog:
        cfg = parse_config(config)
        client = ClientFactory(cfg).kinesis()
        streams = resolve_streams(client, cfg)
        if not streams:
            logger.warning("No Kinesis stream matches the configured names and patterns.")
        return AirbyteCatalog(streams=[airbyte_stream(s.name, self.stream_schema(cfg, client, s, logger)) for s in streams])

    def stream_schema(self, cfg: SourceConfig, client: Any, stream: KinesisStream, logger: logging.Logger) -> Optional[Dict[str, Any]]:
        """The stream's JSON schema: the record-contract schema plus the payload fields inferred from up to
        ``schema_sample_size`` records read from TRIM_HORIZON for at most ``SCHEMA_SAMPLE_SECONDS`` (each nullable and
        marked ``INFERRED_KEYWORD``: a sample proves neither a type nor that a field is always there); 0 = the open
        record-contract schema alone."""
        if cfg.schema_sample_size <= 0:
            return None
        sample = sample_records(cfg, client, stream, logger, cfg.schema_sample_size, SCHEMA_SAMPLE_SECONDS)
        schema = record_schema()
        inferred = infer_schema({k: v for k, v in record.items() if k not in CONTRACT_FIELDS} for record in sample)
        for name, field_schema in (inferred.get("properties") or {}).items():
            if name not in schema["properties"]:
                schema["properties"][name] = _hint(field_schema)
        logger.info(
            f"Stream '{stream.name}': inferred the schema of {len(inferred.get('properties') or {})} payload fields "
            f"from {len(sample)} sampled records (schema_sample_size: {cfg.schema_sample_size}; 0 turns sampling off)."
        )
        return schema

    def read(
        self,
        logger: logging.Logger,
        config: Mapping[str, Any],
        catalog: ConfiguredAirbyteCatalog,
        state: Optional[List[AirbyteStateMessage]] = None,
    ) -> Iterator[AirbyteMessage]:
        cfg = parse_config(config)
        names = unique_stream_names(configured.stream.name for configured in catalog.streams)
        try:
            client = ClientFactory(cfg, stop=self.stop_event).kinesis()
        except Stopped:
            return  # stopped before reading anything (while assuming the role): nothing to emit
        saved = states_by_stream(state)
        for configured in catalog.streams:
            if configured.sync_mode == SyncMode.full_refresh:
                saved[configured.stream.name] = None
        orchestrator = Orchestrator(cfg, client, logger, stop_event=self.stop_event)
        yield from orchestrator.run(names, lambda name: resolve_catalog_stream(client, cfg, name), saved)


def unique_stream_names(names: Iterable[str]) -> List[str]:
    """The catalog's stream names in order; a name listed twice would emit every record twice: a config_error."""
    result: List[str] = []
    for name in names:
        if name in result:
            raise config_error(
                f"The configured catalog lists stream '{name}' more than once; each stream may appear once. "
                "Remove the duplicate entry (refresh the connection's streams)."
            )
        result.append(name)
    return result


def check_failure(exc: AirbyteTracedException, cfg: SourceConfig) -> AirbyteTracedException:
    """What check reports. An endpoint that cannot be reached, stalls or does not answer like Kinesis within check's
    time limit is reported as a config_error (a FAILED connection status: check the endpoint URL, region, network),
    since at setup time that is what the user can fix; during a sync the same failures are transient errors."""
    if exc.failure_type != FailureType.transient_error:
        return exc
    endpoint = cfg.endpoint_url or f"the AWS endpoints of region {cfg.region}"
    message = (
        f"Check could not complete against {endpoint} (check's time limit is {CHECK_TOTAL_SECONDS:.0f} s): {exc.message} "
        "(If the endpoint URL and region are right and it is only temporarily unavailable, test again later.)"
    )
    return config_error(message)


def sample_records(cfg: SourceConfig, client: Any, stream: KinesisStream, logger: logging.Logger, limit: int, seconds: int) -> List[Dict[str, Any]]:
    """Up to ``limit`` records of the stream from TRIM_HORIZON, reading for at most ``seconds`` (a bounded read that
    asks each shard for no more than ``limit`` records a call)."""
    sample_cfg = cfg.model_copy(update={
        "start_position": "TRIM_HORIZON", "max_sync_duration_seconds": seconds, "on_bad_record": "keep",
        "records_per_call": max(1, min(limit, cfg.records_per_call)), "read_mode": _sampling_mode(cfg, client, stream),
    })
    quiet = logging.getLogger("airbyte.source_kinesis.sampling")
    quiet.setLevel(logging.WARNING)
    messages = Orchestrator(sample_cfg, client, quiet).run([stream.name], lambda name: stream, {})
    records: List[Dict[str, Any]] = []
    try:
        for message in messages:
            if message.type == Type.RECORD:
                records.append(message.record.data)
                if len(records) >= limit:
                    break
    except AirbyteTracedException as exc:
        logger.warning(f"Stream '{stream.name}': schema sampling stopped early: {exc.message}")
    finally:
        messages.close()  # stops the readers
    return records


def _sampling_mode(cfg: SourceConfig, client: Any, stream: KinesisStream) -> Any:
    """How discover samples: polling, or with enhanced fan-out through the configured consumer when it already
    exists and is ACTIVE (discover never registers a consumer: a consumer is billed; a sync registers it)."""
    if cfg.fan_out is None:
        return cfg.read_mode
    try:
        description = find_consumer(client, cfg.fan_out, stream, CHECK_RETRY_SECONDS)
    except AirbyteTracedException:
        description = None
    if description is not None and description.get("ConsumerStatus") == "ACTIVE":
        return EnhancedFanOut(mode="enhanced_fan_out", consumer_arn=description["ConsumerARN"])
    return Polling(mode="polling")


def _hint(field_schema: Dict[str, Any]) -> Dict[str, Any]:
    """An inferred top-level property: nullable, and marked as a hint."""
    hinted = dict(field_schema)
    kinds = hinted.get("type")
    if isinstance(kinds, str):
        hinted["type"] = [kinds, "null"] if kinds != "null" else "null"
    elif isinstance(kinds, list) and "null" not in kinds:
        hinted["type"] = [*kinds, "null"]
    hinted[INFERRED_KEYWORD] = True
    return hinted
