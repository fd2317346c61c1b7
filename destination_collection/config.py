"""The destination's configuration (mirrors spec.json) and where a DuckDB file lives.

``DESTINATION_COLLECTION_IN_DOCKER=1`` (set by the Docker image) confines DuckDB paths to ``/local``, the folder
Airbyte mounts for local-file destinations: ``x.duckdb``, ``/x.duckdb`` and ``/local/x.duckdb`` all become
``/local/x.duckdb`` and a path that escapes ``/local`` (``../``, a symlink) is a config error.
``DESTINATION_COLLECTION_LOCAL_ROOT`` overrides ``/local`` (tests use a temporary folder).
"""
from __future__ import annotations

import os
from typing import Annotated, Any, Literal, Mapping, Union

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from pydantic import BaseModel, ConfigDict, Field, ValidationError

IN_DOCKER_ENV = "DESTINATION_COLLECTION_IN_DOCKER"
LOCAL_ROOT_ENV = "DESTINATION_COLLECTION_LOCAL_ROOT"
DEFAULT_LOCAL_ROOT = "/local"


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DuckDBStoreConfig(_Model):
    store_type: Literal["duckdb"]
    path: str = Field(min_length=1)

    def resolved_path(self) -> str:
        return resolve_duckdb_path(self.path)


class PostgresStoreConfig(_Model):
    store_type: Literal["postgres"]
    host: str
    port: int = 5432
    database: str
    schema_: str = Field("public", alias="schema")
    username: str
    password: str | None = Field(default=None, repr=False)
    ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"


class CollectionConfig(_Model):
    stream: str
    transformation_sql: str | None = None
    id_field: str | None = None
    event_time_field: str | None = None
    event_time_unit: Literal["auto", "s", "ms", "us"] = "auto"
    retention_secs: int | None = Field(default=None, ge=1)
    ignore_older_changes: bool = False


class DestinationConfig(_Model):
    store: Annotated[Union[DuckDBStoreConfig, PostgresStoreConfig], Field(discriminator="store_type")]
    collection_prefix: str = Field("", pattern=r"^[A-Za-z0-9_]*$")
    collections: tuple[CollectionConfig, ...] = ()
    batch_size: int = Field(10_000, ge=1, le=1_000_000)
    flush_interval_secs: float = Field(5.0, ge=0)

    def collection(self, stream: str) -> CollectionConfig:
        for item in self.collections:
            if item.stream == stream:
                return item
        return CollectionConfig(stream=stream)


def parse_config(raw: Mapping[str, Any]) -> DestinationConfig:
    """Validate a config mapping; problems become a config_error naming the field (never its value)."""
    try:
        config = DestinationConfig.model_validate(dict(raw))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors(include_input=False)
        )
        raise AirbyteTracedException(
            message=f"The destination config is invalid: {problems}. Fix these fields and retry.",
            internal_message=problems,
            failure_type=FailureType.config_error,
        ) from None
    seen: set[str] = set()
    for item in config.collections:
        if item.stream in seen:
            raise AirbyteTracedException(
                message=f"collections lists stream '{item.stream}' twice; keep one entry per stream.",
                failure_type=FailureType.config_error,
            )
        seen.add(item.stream)
    return config


def resolve_duckdb_path(path: str) -> str:
    if path == ":memory:":
        return path
    if path.startswith("md:") or path.startswith("motherduck:"):
        raise AirbyteTracedException(
            message=f"DuckDB path '{path}' points to MotherDuck; this destination writes local files only.",
            failure_type=FailureType.config_error,
        )
    if os.environ.get(IN_DOCKER_ENV, "").strip().lower() in ("1", "true", "yes"):
        root = os.path.realpath(os.environ.get(LOCAL_ROOT_ENV) or DEFAULT_LOCAL_ROOT)
        relative = path
        if relative == DEFAULT_LOCAL_ROOT or relative.startswith(DEFAULT_LOCAL_ROOT + "/"):
            relative = relative[len(DEFAULT_LOCAL_ROOT):]
        candidate = os.path.realpath(os.path.join(root, relative.lstrip("/")))
        if os.path.commonpath([root, candidate]) != root or candidate == root:
            raise AirbyteTracedException(
                message=(
                    f"DuckDB path '{path}' leaves {DEFAULT_LOCAL_ROOT}, the only folder the Docker image may write; "
                    f"use a path such as {DEFAULT_LOCAL_ROOT}/collections.duckdb."
                ),
                failure_type=FailureType.config_error,
            )
        return candidate
    return os.path.abspath(os.path.expanduser(path))
