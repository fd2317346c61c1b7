"""Loading and validating the runner's inputs: the source config, the destination config, the catalog.

Each config is checked against its connector's spec (the same check Airbyte makes), and every secret in either
(fields marked ``airbyte_secret``) is registered with the CDK's filter so it never reaches a log line.
"""
from __future__ import annotations

import json
import logging
from typing import Any, Dict, List, Mapping, Optional

from airbyte_cdk.models import (
    AirbyteStream,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteCatalogSerializer,
    ConfiguredAirbyteStream,
    ConnectorSpecificationSerializer,
    DestinationSyncMode,
    FailureType,
    SyncMode,
)
from airbyte_cdk.sources.utils.schema_helpers import check_config_against_spec_or_exit
from airbyte_cdk.utils.airbyte_secrets_utils import get_secrets, update_secrets
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection.config import migrate_config as migrate_destination_config, parse_config as parse_destination_config
from destination_collection.destination import raw_spec as destination_spec
from source_kinesis.config import migrate_config, parse_config as parse_source_config
from source_kinesis.source import SourceKinesis

# Follow mode: how often the source checkpoints while idle (a following source checkpoints as soon as it has
# caught up with what it read, so records do not wait for this; the runner drops idle states equal to the last one).
FOLLOW_CHECKPOINT_SECONDS = 0.5
# Follow mode: the destination's flush_interval_secs, which also bounds how long its group commit holds a state back
# (destination_collection.protocol_loop.HOLD_FACTOR: a state arriving within 16x the last commit's lookup time of it
# waits for the next commit). At 1,000 records/s on 4 shards the lookups of a ~10k-document collection took 5-30 ms,
# so states were held 0.1-0.5 s (only 36 commits in a 13 s run); freshness (put → queryable p95 ≤ 0.5 s at 1,000
# records/s, the benchmark) needs the bound lower than the 1 s it was; 0.05 s since enhanced fan-out (put → queryable
# p95 0.34 s at 0.1, 0.29 s at 0.05, 1,000 records/s on 4 shards: its events arrive ~20 ms after the put, so this hold
# was the largest wait left). A commit still takes every state and record that arrived while the previous one ran,
# so a large collection is not committed more often than it can be.
FOLLOW_FLUSH_SECONDS = 0.05


def _config_error(message: str) -> AirbyteTracedException:
    return AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.config_error)


def read_json(path: str, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as exc:
        raise _config_error(f"Cannot read the {what} file {path}: {exc.strerror}.") from None
    except ValueError as exc:
        raise _config_error(f"The {what} file {path} is not valid JSON: {exc}.") from None


_registered: List[str] = []


def registered_secrets() -> List[str]:
    """Every secret registered so far (both configs'): the source process masks them in its log lines too."""
    return list(_registered)


def _register_secrets(spec: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    _registered.extend(get_secrets(spec, config))
    update_secrets(list(_registered))


# How a spec violation is described. Never the offending value: it may be a secret (a key of the wrong type).
_RULES = {
    "minimum": "must be at least {v}",
    "maximum": "must be at most {v}",
    "exclusiveMinimum": "must be more than {v}",
    "exclusiveMaximum": "must be less than {v}",
    "type": "must be of type {v}",
    "enum": "must be one of {v}",
    "pattern": "does not have the expected format",
    "minLength": "is too short",
    "maxLength": "is too long",
    "minItems": "needs at least {v} item(s)",
    "maxItems": "takes at most {v} item(s)",
    "oneOf": "matches none of the allowed forms",
    "anyOf": "matches none of the allowed forms",
}


def check_against_spec(config: Mapping[str, Any], spec: Any, what: str) -> None:
    """Validate ``config`` against the connector's spec, like the CDK's check_config_against_spec_or_exit, but
    naming each offending field (the CDK's message gives only the rule: "-5 is less than the minimum of 1" — which
    field?, found by the reliability suite) and never echoing a value."""
    from jsonschema import Draft7Validator

    try:
        check_config_against_spec_or_exit(config, spec)
        return
    except Exception:  # noqa: BLE001 - described below, field by field
        pass
    errors = sorted(Draft7Validator(spec.connectionSpecification).iter_errors(dict(config)), key=lambda e: [str(p) for p in e.path])
    problems = []
    for error in errors[:5]:
        where = ".".join(str(part) for part in error.path) or "config"
        if error.validator == "required":
            problems.append(f"{where}: {error.message}")  # names the missing property, holds no value
        else:
            problems.append(f"{where}: " + _RULES.get(str(error.validator), "is invalid ({r})").format(v=error.validator_value, r=error.validator))
    raise _config_error(f"The {what} is invalid: {'; '.join(problems) or 'it does not match the connector spec'}.")


def load_source_config(path: str) -> Dict[str, Any]:
    config = migrate_config(read_json(path, "source config"))  # configs written before 0.1.1 still load
    spec = SourceKinesis().spec(logging.getLogger("airbyte"))
    _register_secrets(spec.connectionSpecification, config)
    check_against_spec(config, spec, "source config")
    return config


def load_destination_config(path: str) -> Dict[str, Any]:
    config = migrate_destination_config(read_json(path, "destination config"))  # configs written before 0.1.2 still load
    spec = ConnectorSpecificationSerializer.load(destination_spec())
    _register_secrets(spec.connectionSpecification, config)
    check_against_spec(config, spec, "destination config")
    return config


def follow_tuned(source_config: Mapping[str, Any], destination_config: Mapping[str, Any]) -> tuple:
    """Copies of both configs with the checkpoint and flush intervals short enough for follow-mode freshness: the
    smaller of each package's own value (as its config model reads it, defaults included) and the follow value."""
    checkpoint = parse_source_config(source_config).checkpoint_interval_seconds
    flush = parse_destination_config(destination_config).flush_interval_secs
    source = {**source_config, "checkpoint_interval_seconds": min(checkpoint, FOLLOW_CHECKPOINT_SECONDS)}
    destination = {**destination_config, "flush_interval_secs": min(flush, FOLLOW_FLUSH_SECONDS)}
    return source, destination


def configured_stream(stream: AirbyteStream) -> ConfiguredAirbyteStream:
    """Incremental, deduplicated on the source's primary key: re-delivery after a crash never duplicates."""
    return ConfiguredAirbyteStream(
        stream=stream,
        sync_mode=SyncMode.incremental,
        destination_sync_mode=DestinationSyncMode.append_dedup,
        cursor_field=list(stream.default_cursor_field or []),
        primary_key=[list(p) for p in (stream.source_defined_primary_key or [])],
    )


def load_catalog(path: Optional[str], source_config: Mapping[str, Any], logger: logging.Logger) -> ConfiguredAirbyteCatalog:
    """The configured catalog from a file, or every stream discover finds (incremental + append_dedup)."""
    if path:
        raw = read_json(path, "catalog")
        try:
            catalog = ConfiguredAirbyteCatalogSerializer.load(raw)
        except Exception as exc:  # noqa: BLE001 - the serializer's errors name the bad member
            raise _config_error(f"The catalog file {path} is not a configured Airbyte catalog: {exc}.") from None
        names = [configured.stream.name for configured in catalog.streams]
        if not names:
            raise _config_error(f"The catalog file {path} lists no stream; nothing to sync. List the streams to sync, or leave out --catalog.")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise _config_error(
                f"The catalog file {path} lists stream(s) {', '.join(repr(n) for n in repeated)} more than once; list each stream once."
            )
        namespaced = [c.stream.name for c in catalog.streams if c.stream.namespace]
        if namespaced:
            # source-kinesis streams have no namespace: its records and states carry none, so a namespace here would
            # name a collection and a state key (``ns.name``) that the stream's commits never use
            raise _config_error(
                f"The catalog file {path} gives stream(s) {', '.join(repr(n) for n in namespaced)} a namespace; Kinesis "
                "streams have none. Remove the stream's 'namespace' (or use collection_prefix to tell collections apart)."
            )
        return catalog
    if "schema_sample_size" not in source_config:
        # start fast: the collections type every field from the data; sampling only when the config asks for it
        source_config = {**source_config, "schema_sample_size": 0}
    catalog = SourceKinesis().discover(logger, source_config)
    if not catalog.streams:
        raise _config_error("No Kinesis stream matches the source config's 'streams'; nothing to sync.")
    logger.info(f"No catalog given: syncing every discovered stream ({', '.join(s.name for s in catalog.streams)}) incrementally, deduplicated.")
    return ConfiguredAirbyteCatalog(streams=[configured_stream(s) for s in catalog.streams])
