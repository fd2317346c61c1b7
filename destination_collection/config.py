"""The destination's configuration (mirrors spec.json) and where a DuckDB file lives.

``DESTINATION_COLLECTION_IN_DOCKER=1`` (set by the Docker image) confines DuckDB paths to ``/local``, the folder
Airbyte mounts for local-file destinations: ``x.duckdb``, ``/x.duckdb`` and ``/local/x.duckdb`` all become
``/local/x.duckdb`` and a path that escapes ``/local`` (``../``, a symlink) is a config error.
``DESTINATION_COLLECTION_LOCAL_ROOT`` overrides ``/local`` (tests use a temporary folder). The same rules apply
to the DuckDB ``temp_directory``.

Memory: ``batch_max_bytes`` bounds the bytes of RECORD lines buffered over all streams (``batch_size`` a stream's records);
the DuckDB store's ``memory_limit`` bounds DuckDB's buffer manager and ``temp_directory`` is where it spills.
"""
from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal, Mapping, Union

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

IN_DOCKER_ENV = "DESTINATION_COLLECTION_IN_DOCKER"
LOCAL_ROOT_ENV = "DESTINATION_COLLECTION_LOCAL_ROOT"
DEFAULT_LOCAL_ROOT = "/local"
MiB = 1024 * 1024
# DuckDB's memory units: KB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024 (case-insensitive)
_MEMORY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]I?B|B)\s*$", re.IGNORECASE)
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
DEFAULT_MEMORY_LIMIT = "256MB"
MIN_MEMORY_BYTES = 64 * 10**6
MAX_MEMORY_BYTES = 10**15  # 1000TB: more is surely a typo (DuckDB itself refuses some larger values with a parser error)
DEFAULT_BATCH_MAX_BYTES = 16 * MiB
# DuckDB's own default. Measured (DuckDB 1.5, 2 cores): 256MB made the 100k change batch into a 10 M-document
# collection faster (6.4 s vs 8.9 s: fewer checkpoints, each up to ~2 s there) but a 1 M-document collection built
# with it took the 100k-record CDC batch at 11.9k instead of 17.3k records/s (its checkpoints after many deletes cost
# several seconds); so the default stays DuckDB's, and the trade-off is documented for the setting.
DEFAULT_CHECKPOINT_THRESHOLD = "16MB"
MAX_THREADS = 256  # store.threads (DuckDB's worker threads for statements over a whole collection)


def memory_bytes(text: str) -> int:
    """Bytes of a DuckDB memory size such as ``256MB`` or ``1.5GiB``; ValueError when it is not one."""
    match = _MEMORY.match(text)
    if not match:
        raise ValueError("expected a size such as 256MB, 512MiB or 1GB (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DuckDBStoreConfig(_Model):
    store_type: Literal["duckdb"]
    path: str = Field(min_length=1)
    memory_limit: str = DEFAULT_MEMORY_LIMIT
    temp_directory: str | None = None
    checkpoint_threshold: str = DEFAULT_CHECKPOINT_THRESHOLD
    threads: int | None = Field(None, ge=1, le=MAX_THREADS, strict=True)
    background_commit: bool = True
    set_based_batches: bool = True

    @field_validator("path", "temp_directory")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain the NUL character")
        return value

    @field_validator("temp_directory")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must be a folder path (leave it out for DuckDB's default, <database file>.tmp)")
        return value

    @field_validator("memory_limit")
    @classmethod
    def _memory(cls, value: str) -> str:
        size = memory_bytes(value)
        if size < MIN_MEMORY_BYTES:
            raise ValueError("must be at least 64MB (DuckDB cannot write batches with less)")
        if size > MAX_MEMORY_BYTES:
            raise ValueError("must be at most 1000TB (a size such as 256MB, 4GB)")
        return value.strip()

    @field_validator("checkpoint_threshold")
    @classmethod
    def _checkpoint(cls, value: str) -> str:
        size = memory_bytes(value)
        if size < 10**6 or size > MAX_MEMORY_BYTES:
            raise ValueError("must be between 1MB and 1000TB (a size such as 16MB, 128MB)")
        return value.strip()

    def resolved_path(self) -> str:
        return resolve_duckdb_path(self.path)

    def resolved_temp_directory(self) -> str | None:
        """Where DuckDB spills; None = DuckDB's default (``<database file>.tmp`` next to the file)."""
        if self.temp_directory is None:
            return None
        return resolve_local_path(self.temp_directory, "DuckDB temp_directory")


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
VERIFYING_SSL_MODES = ("verify-ca", "verify-full")  # the modes that check the server's certificate (ca_certificate)
CLIENT_CERTIFICATE_SSL_MODES = ("require", "verify-ca", "verify-full")  # the modes that offer a client certificate


def _blank_is_none(value: Any) -> Any:
    """A cleared text box arrives as "" (or whitespace): the same as leaving the field out."""
    return None if isinstance(value, str) and not value.strip() else value


class PostgresSslConfig(_Model):
    """``store.ssl_mode``: libpq's sslmode plus the PEM texts it needs (written to a private temporary folder only
    while a connection opens: ``stores/postgres_tls.py``). Fields a mode does not use are ignored, as libpq would
    never read them: a CA is used by verify-ca/verify-full, a client certificate by require and the verify modes."""

    mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    ca_certificate: str | None = Field(default=None, repr=False)
    client_certificate: str | None = Field(default=None, repr=False)
    client_key: str | None = Field(default=None, repr=False)
    client_key_password: str | None = Field(default=None, repr=False)

    @field_validator("ca_certificate", "client_certificate", "client_key", "client_key_password", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_is_none(value)

    @model_validator(mode="after")
    def _material(self) -> "PostgresSslConfig":
        if self.ca_certificate is None and self.client_certificate is None and self.client_key is None:
            return self
        from .stores import postgres_tls  # cryptography's PEM parsing, imported only for configs that use it

        if self.mode in VERIFYING_SSL_MODES and self.ca_certificate is not None:
            postgres_tls.check_certificates(self.ca_certificate, "ca_certificate")
        if self.mode in CLIENT_CERTIFICATE_SSL_MODES:
            if (self.client_certificate is None) != (self.client_key is None):
                raise ValueError(
                    "client_certificate and client_key go together: give both (for a server that authenticates by "
                    "certificate) or neither"
                )
            if self.client_certificate is not None:
                postgres_tls.check_certificates(self.client_certificate, "client_certificate")
                postgres_tls.check_private_key(self.client_key or "", self.client_key_password)
        return self

    def uses_ca(self) -> bool:
        return self.mode in VERIFYING_SSL_MODES and self.ca_certificate is not None

    def uses_client_certificate(self) -> bool:
        return self.mode in CLIENT_CERTIFICATE_SSL_MODES and self.client_certificate is not None


TUNNEL_METHODS = ("NO_TUNNEL", "SSH_KEY_AUTH", "SSH_PASSWORD_AUTH")


class SshTunnelConfig(_Model):
    """``store.tunnel_method``, Airbyte's usual SSH tunnel shape (``stores/ssh_tunnel.py`` opens it), plus an optional
    ``tunnel_host_key`` that pins the SSH server's key."""

    tunnel_method: Literal["NO_TUNNEL", "SSH_KEY_AUTH", "SSH_PASSWORD_AUTH"] = "NO_TUNNEL"
    tunnel_host: str | None = None
    tunnel_port: int = Field(22, ge=1, le=65535)
    tunnel_user: str | None = None
    ssh_key: str | None = Field(default=None, repr=False)
    tunnel_user_password: str | None = Field(default=None, repr=False)
    tunnel_host_key: str | None = None

    @field_validator("tunnel_host", "tunnel_user", "ssh_key", "tunnel_user_password", "tunnel_host_key", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _blank_is_none(value)

    @model_validator(mode="after")
    def _complete(self) -> "SshTunnelConfig":
        if self.tunnel_method == "NO_TUNNEL":
            return self
        from .stores import ssh_tunnel  # asyncssh's key parsing, imported only for configs with a tunnel

        secret = "ssh_key" if self.tunnel_method == "SSH_KEY_AUTH" else "tunnel_user_password"
        missing = [name for name in ("tunnel_host", "tunnel_user", secret) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{self.tunnel_method} needs {', '.join(missing)}")
        if self.tunnel_method == "SSH_KEY_AUTH":
            ssh_tunnel.load_private_key(self.ssh_key or "")
        if self.tunnel_host_key is not None:
            ssh_tunnel.load_host_keys(self.tunnel_host_key)
        return self

    @property
    def enabled(self) -> bool:
        return self.tunnel_method != "NO_TUNNEL"


class PostgresStoreConfig(_Model):
    store_type: Literal["postgres"]
    host: str
    port: int = Field(5432, ge=1, le=65535)
    database: str
    schema_: str = Field("public", alias="schema")
    username: str
    password: str | None = Field(default=None, repr=False)
    ssl_mode: PostgresSslConfig = Field(default_factory=PostgresSslConfig)
    tunnel_method: SshTunnelConfig = Field(default_factory=SshTunnelConfig)
    # off by default: measured slower than the per-record path on PostgreSQL (BENCHMARKS.md; set_batch_postgres.py)
    set_based_batches: bool = False

    @field_validator("schema_")
    @classmethod
    def _schema(cls, value: str) -> str:
        return check_schema_name(value)


# PostgreSQL reserves these schemas and the pg_ prefix (CREATE SCHEMA pg_x is refused); matched without regard to
# case, since "PG_CATALOG" is a legal but surely mistaken twin of pg_catalog
RESERVED_SCHEMAS = ("information_schema", "pg_catalog", "pg_toast")
MAX_IDENTIFIER_BYTES = 63  # PostgreSQL silently truncates longer names (NAMEDATALEN - 1)


def check_schema_name(value: str) -> str:
    """A PostgreSQL schema the destination may create and write; ValueError (naming the rule) otherwise."""
    if not value.strip():
        raise ValueError("must name a schema (it is empty); leave it out for 'public'")
    if "\x00" in value:
        raise ValueError("must not contain the NUL character (PostgreSQL names cannot hold it)")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace (PostgreSQL would create a different schema)")
    if len(value.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise ValueError(f"is longer than {MAX_IDENTIFIER_BYTES} bytes, PostgreSQL's limit for names (it would truncate it)")
    lowered = value.lower()
    if lowered in RESERVED_SCHEMAS or lowered.startswith("pg_"):
        raise ValueError(
            "names a PostgreSQL system schema (pg_catalog, information_schema, pg_toast and pg_* are reserved); "
            "use a schema of your own, e.g. 'public' or 'collections'"
        )
    return value


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
    batch_size: int = Field(50_000, ge=1, le=1_000_000)
    batch_max_bytes: int = Field(DEFAULT_BATCH_MAX_BYTES, ge=64 * 1024, le=1024 * MiB)
    flush_interval_secs: float = Field(5.0, ge=0)

    def collection(self, stream: str) -> CollectionConfig:
        for item in self.collections:
            if item.stream == stream:
                return item
        return CollectionConfig(stream=stream)


def migrate_config(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A config in today's spec shape. Before 0.1.2 ``store.ssl_mode`` was libpq's sslmode as a string; the spec now
    offers a choice (``{"mode": …, "ca_certificate": …}``). The spec is checked before the config is parsed, so older
    configs are rewritten here first (in memory, each run: the stored config is left as it is). A string
    ``verify-ca``/``verify-full`` keeps working as before: with no ``ca_certificate`` libpq reads its default root
    certificate file (``~/.postgresql/root.crt``). Anything else is returned unchanged."""
    if not isinstance(raw, Mapping):
        return raw  # not a config at all: the spec check says so
    config = dict(raw)
    store = config.get("store")
    if isinstance(store, Mapping) and isinstance(store.get("ssl_mode"), str):
        config["store"] = {**store, "ssl_mode": {"mode": store["ssl_mode"]}}
    return config


def parse_config(raw: Mapping[str, Any]) -> DestinationConfig:
    """Validate a config mapping; problems become a config_error naming the field (never its value)."""
    try:
        config = DestinationConfig.model_validate(migrate_config(raw))
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
    return resolve_local_path(path, "DuckDB path")


def resolve_local_path(path: str, what: str) -> str:
    """An absolute path; in the Docker image confined to ``/local`` (a path leaving it is a config_error)."""
    if os.environ.get(IN_DOCKER_ENV, "").strip().lower() in ("1", "true", "yes"):
        root = os.path.realpath(os.environ.get(LOCAL_ROOT_ENV) or DEFAULT_LOCAL_ROOT)
        relative = path
        if relative == DEFAULT_LOCAL_ROOT or relative.startswith(DEFAULT_LOCAL_ROOT + "/"):
            relative = relative[len(DEFAULT_LOCAL_ROOT):]
        candidate = os.path.realpath(os.path.join(root, relative.lstrip("/")))
        if os.path.commonpath([root, candidate]) != root or candidate == root:
            raise AirbyteTracedException(
                message=(
                    f"{what} '{path}' leaves {DEFAULT_LOCAL_ROOT}, the only folder the Docker image may write; "
                    f"use a path such as {DEFAULT_LOCAL_ROOT}/collections.duckdb."
                ),
                failure_type=FailureType.config_error,
            )
        return candidate
    return os.path.abspath(os.path.expanduser(path))
