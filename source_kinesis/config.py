"""The connector's configuration as a validated, typed model (pydantic), built from the spec's JSON.

The CDK validates the raw config against spec.json before check/discover/read; this model adds the cross-field
rules a JSON schema cannot say (AT_TIMESTAMP needs a timestamp, not in the future) and gives the rest of the
package typed access. Every validation failure becomes a ``config_error`` naming the field.
"""
from __future__ import annotations

import datetime as dt
import fnmatch
import re
from typing import Any, Dict, List, Literal, Mapping, Optional, Union

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FORMATS = ("json", "text", "bytes", "cloudwatch_logs", "dms", "dynamodb")
Format = Literal["json", "text", "bytes", "cloudwatch_logs", "dms", "dynamodb"]

ROLE_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$")
STREAM_ARN_RE = re.compile(r"^arn:aws(-[a-z]+)*:kinesis:([a-z0-9-]+):([0-9]{12}):stream/([A-Za-z0-9_.-]{1,128})$")
STREAM_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
CONSUMER_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
CONSUMER_ARN_RE = re.compile(
    r"^arn:aws(-[a-z]+)*:kinesis:([a-z0-9-]+):([0-9]{12}):stream/([A-Za-z0-9_.-]{1,128})/consumer/([A-Za-z0-9_.-]{1,128}):([0-9]{1,20})$"
)
GLOB_CHARS = set("*?[")


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class IamRole(_Model):
    auth_type: Literal["iam_role"]
    role_arn: str
    external_id: str = Field(min_length=2, max_length=1224)
    role_session_name: str = Field(default="airbyte-source-kinesis", pattern=r"^[A-Za-z0-9+=,.@_-]{2,64}$")

    @field_validator("role_arn")
    @classmethod
    def _arn(cls, value: str) -> str:
        if not ROLE_ARN_RE.match(value):
            raise ValueError(f"'{value}' is not an IAM role ARN like arn:aws:iam::123456789012:role/name")
        return value


class AccessKeys(_Model):
    auth_type: Literal["access_keys"]
    aws_access_key_id: str = Field(min_length=1)
    aws_secret_access_key: str = Field(min_length=1)
    aws_session_token: Optional[str] = None


class DefaultChain(_Model):
    auth_type: Literal["default_chain"]


class Polling(_Model):
    """Read with GetRecords (shares each shard's 5 calls/s and 2 MB/s with the stream's other polling consumers)."""

    mode: Literal["polling"]


class EnhancedFanOut(_Model):
    """Read with SubscribeToShard through a registered consumer (its own 2 MB/s per shard, pushed). Exactly one of
    ``consumer_name`` (registered by the sync on each stream when missing) or ``consumer_arn`` (an existing consumer
    of the one configured stream) is given."""

    mode: Literal["enhanced_fan_out"]
    consumer_name: Optional[str] = None
    consumer_arn: Optional[str] = None

    @field_validator("consumer_name")
    @classmethod
    def _name(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not CONSUMER_NAME_RE.match(value):
            raise ValueError(f"'{value}' is not a valid consumer name (1-128 of A-Z a-z 0-9 _ . -)")
        return value

    @field_validator("consumer_arn")
    @classmethod
    def _arn(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not CONSUMER_ARN_RE.match(value):
            raise ValueError(
                f"'{value}' is not a Kinesis stream consumer ARN like "
                "arn:aws:kinesis:us-east-1:123456789012:stream/name/consumer/consumer-name:1700000000"
            )
        return value

    @model_validator(mode="after")
    def _one_consumer(self) -> "EnhancedFanOut":
        if (self.consumer_name is None) == (self.consumer_arn is None):
            raise ValueError(
                "enhanced fan-out needs exactly one of consumer_name (a consumer the sync registers on each stream "
                "when missing) or consumer_arn (an existing consumer of the one configured stream)"
            )
        return self

    @property
    def consumer_stream(self) -> Optional[str]:
        """The stream name inside ``consumer_arn`` (None with ``consumer_name``)."""
        match = CONSUMER_ARN_RE.match(self.consumer_arn or "")
        return match.group(4) if match else None


class StreamFormat(_Model):
    stream: str = Field(min_length=1)
    format: Format
    dms_primary_key: Optional[List[str]] = None


class StreamRef(_Model):
    """One entry of ``streams``: a name, an ARN or a glob pattern."""

    raw: str
    name: Optional[str] = None  # set for names and ARNs
    arn: Optional[str] = None  # set for ARNs
    pattern: Optional[str] = None  # set for glob patterns

    @classmethod
    def parse(cls, raw: str) -> "StreamRef":
        raw = raw.strip()
        arn = STREAM_ARN_RE.match(raw)
        if arn:
            return cls(raw=raw, name=arn.group(4), arn=raw)
        if raw.startswith("arn:"):
            raise ValueError(f"'{raw}' is not a Kinesis stream ARN like arn:aws:kinesis:us-east-1:123456789012:stream/name")
        if GLOB_CHARS & set(raw):
            return cls(raw=raw, pattern=raw)
        if not STREAM_NAME_RE.match(raw):
            raise ValueError(f"'{raw}' is not a valid stream name (1-128 of A-Z a-z 0-9 _ . -), ARN or glob pattern")
        return cls(raw=raw, name=raw)

    def matches(self, name: str) -> bool:
        if self.pattern is not None:
            return fnmatch.fnmatchcase(name, self.pattern)
        return name == self.name


class SourceConfig(_Model):
    credentials: Union[IamRole, AccessKeys, DefaultChain] = Field(discriminator="auth_type")
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$")
    streams: List[str] = Field(min_length=1)
    endpoint_url: Optional[str] = Field(default=None, pattern=r"^https?://[^\s]+$")
    start_position: Literal["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"] = "TRIM_HORIZON"
    start_timestamp: Optional[dt.datetime] = None
    format: Format = "json"
    dms_primary_key: List[str] = Field(default_factory=lambda: ["id"])
    stream_formats: List[StreamFormat] = Field(default_factory=list)
    on_bad_record: Literal["keep", "skip", "fail"] = "keep"
    stale_checkpoint: Literal["restart", "fail"] = "restart"
    get_records_per_second: float = Field(default=2.0, ge=0.1, le=5)
    megabytes_per_second: float = Field(default=1.0, ge=0.01, le=2)
    records_per_call: int = Field(default=10000, ge=1, le=10000)
    max_parallel_shards: int = Field(default=16, ge=1, le=256)
    max_sync_duration_seconds: Optional[int] = Field(default=None, ge=1, le=604800)
    retry_budget_seconds: float = Field(default=300, gt=0, le=86400)
    checkpoint_interval_records: int = Field(default=10000, ge=1, le=10_000_000)
    checkpoint_interval_seconds: float = Field(default=10.0, ge=0.1, le=3600)
    schema_sample_size: int = Field(default=100, ge=0, le=10000)
    read_mode: Union[Polling, EnhancedFanOut] = Field(default_factory=lambda: Polling(mode="polling"), discriminator="mode")

    @model_validator(mode="before")
    @classmethod
    def _start_position_choice(cls, data: Any) -> Any:
        """The spec's ``start_position`` is a choice (``{"position": "AT_TIMESTAMP", "timestamp": …}``, the timestamp
        only in that option); configs written before it (a string plus a top-level ``start_timestamp``) still parse.
        Both become the flat ``start_position`` / ``start_timestamp`` the reader uses."""
        if not isinstance(data, Mapping) or not isinstance(data.get("start_position"), Mapping):
            return data
        choice = dict(data["start_position"])
        unknown = sorted(set(choice) - {"position", "timestamp"})
        if unknown:
            raise ValueError(f"start_position: unknown field(s) {', '.join(unknown)} (expected position, and timestamp for AT_TIMESTAMP)")
        if "position" not in choice:
            raise ValueError("start_position: position is required (TRIM_HORIZON, LATEST or AT_TIMESTAMP)")
        flat = dict(data)
        flat["start_position"] = choice["position"]
        if choice.get("position") == "AT_TIMESTAMP":
            flat["start_timestamp"] = choice.get("timestamp")
        elif choice.get("timestamp") is not None:
            raise ValueError(f"start_position: a timestamp belongs to AT_TIMESTAMP only, not {choice['position']}")
        return flat

    @field_validator("streams")
    @classmethod
    def _streams(cls, value: List[str]) -> List[str]:
        for entry in value:
            StreamRef.parse(entry)
        return value

    @field_validator("start_timestamp")
    @classmethod
    def _utc(cls, value: Optional[dt.datetime]) -> Optional[dt.datetime]:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value

    @model_validator(mode="after")
    def _timestamp_rules(self) -> "SourceConfig":
        if self.start_position == "AT_TIMESTAMP":
            if self.start_timestamp is None:
                raise ValueError(
                    "start_position AT_TIMESTAMP needs its timestamp (start_position.timestamp; a top-level "
                    "start_timestamp in configs written before 0.1.1), ISO-8601 such as 2026-11-25T00:00:00Z"
                )
            if self.start_timestamp > dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5):
                raise ValueError(f"the start_position timestamp {self.start_timestamp.isoformat()} is in the future; Kinesis refuses AT_TIMESTAMP iterators after now")
        return self

    @model_validator(mode="after")
    def _consumer_arn_rules(self) -> "SourceConfig":
        mode = self.read_mode
        if isinstance(mode, EnhancedFanOut) and mode.consumer_arn is not None:
            refs = self.stream_refs
            if len(refs) != 1 or refs[0].name is None:
                raise ValueError(
                    "read_mode.consumer_arn belongs to one stream, so streams must name exactly that one stream (a name "
                    "or an ARN, not a pattern); to read several streams with enhanced fan-out, give consumer_name instead"
                )
            if refs[0].name != mode.consumer_stream:
                raise ValueError(
                    f"read_mode.consumer_arn is a consumer of stream '{mode.consumer_stream}', but streams names "
                    f"'{refs[0].name}'; give that stream's consumer, or consumer_name to have one registered"
                )
            owner = (mode.consumer_arn or "").split("/consumer/", 1)[0]
            if refs[0].arn is not None and owner != refs[0].arn:
                raise ValueError(f"read_mode.consumer_arn belongs to {owner}, not to the configured stream {refs[0].arn}")
            consumer_region = CONSUMER_ARN_RE.match(mode.consumer_arn or "").group(2)
            if consumer_region != self.region:
                raise ValueError(f"read_mode.consumer_arn is in region {consumer_region}, but region is {self.region}")
        return self

    @property
    def fan_out(self) -> Optional[EnhancedFanOut]:
        """The enhanced fan-out settings, or None when reading by polling."""
        return self.read_mode if isinstance(self.read_mode, EnhancedFanOut) else None

    @property
    def stream_refs(self) -> List[StreamRef]:
        return [StreamRef.parse(entry) for entry in self.streams]

    def format_for(self, stream: str) -> StreamFormat:
        """The decoding settings of one stream: the first matching override, else the top-level format."""
        for override in self.stream_formats:
            if fnmatch.fnmatchcase(stream, override.stream):
                return StreamFormat(stream=stream, format=override.format, dms_primary_key=override.dms_primary_key or self.dms_primary_key)
        return StreamFormat(stream=stream, format=self.format, dms_primary_key=self.dms_primary_key)


def migrate_config(raw: Mapping[str, Any]) -> Dict[str, Any]:
    """A config in today's spec shape. Before 0.1.1 ``start_position`` was a string with a top-level
    ``start_timestamp``; the spec now offers a choice (``{"position": …, "timestamp": …}``). The CDK checks configs
    against the spec before the connector sees them, so older configs are rewritten here first (in memory, each run:
    the stored config is left as it is). Anything else is returned unchanged."""
    config = dict(raw)
    position = config.get("start_position")
    if isinstance(position, str):
        choice: Dict[str, Any] = {"position": position}
        timestamp = config.pop("start_timestamp", None)
        if position == "AT_TIMESTAMP" and timestamp is not None:
            choice["timestamp"] = timestamp
        config["start_position"] = choice
    elif "start_timestamp" in config and config.get("start_timestamp") is None:
        config.pop("start_timestamp")
    return config


def parse_config(raw: Mapping[str, Any]) -> SourceConfig:
    """Validate a raw config; any problem is a config_error that names the field and never echoes secret values."""
    try:
        return SourceConfig.model_validate(dict(raw))
    except ValidationError as exc:
        problems = []
        chosen = isinstance(raw.get("start_position"), Mapping)
        for err in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(part) for part in err["loc"]) or "config"
            if chosen and where == "start_timestamp":  # the flat field the choice's timestamp became
                where = "start_position.timestamp"
            problems.append(f"{where}: {err['msg']}")
        message = "Invalid source-kinesis configuration: " + "; ".join(problems)
        raise AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.config_error) from None
