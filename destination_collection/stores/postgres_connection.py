"""The one way to open a PostgreSQL connection: the store, the runner's lock and the read-only ``query`` path all call
``connect``, so ``store.ssl_mode`` (``postgres_tls.py``) and ``store.tunnel_method`` (``ssh_tunnel.py``) apply to
every connection alike.

Through a tunnel libpq connects to the tunnel's local port (``hostaddr=127.0.0.1``) while ``host`` stays
``store.host``, so verify-full still checks the server's certificate against the configured name. The tunnel lives
as long as the connection: closing the connection closes it.

A failure is a config_error when the user must change something (user, password, database, SSL, tunnel login) and a
transient_error when the server is unreachable; the message names host, port, database and user, never the password.
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import psycopg
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from ..config import PostgresStoreConfig
from . import postgres_tls

if TYPE_CHECKING:
    from .ssh_tunnel import SshTunnel

CONNECT_TIMEOUT_SECONDS = 15
_USER_FIXABLE = ("password", "authentication", "role", "does not exist", "ssl", "certificate", "pg_hba.conf")


class TunneledConnection(psycopg.Connection):
    """A connection that closes its SSH tunnel with it (also when it is garbage-collected unclosed)."""

    def attach(self, tunnel: "SshTunnel") -> None:
        self._tunnel = tunnel
        weakref.finalize(self, tunnel.close)

    def close(self) -> None:
        try:
            super().close()
        finally:
            tunnel = self.__dict__.pop("_tunnel", None)
            if tunnel is not None:
                tunnel.close()


def connect(config: PostgresStoreConfig, application_name: str = "destination-collection") -> psycopg.Connection:
    """An autocommit connection to the configured server, through the tunnel and with the TLS settings configured."""
    tunnel = new_tunnel(config) if config.tunnel_method.enabled else None
    try:
        address = {"host": config.host, "port": config.port}
        if tunnel is not None:
            address.update(hostaddr="127.0.0.1", port=tunnel.open())
        with postgres_tls.libpq_ssl_params(config.ssl_mode) as ssl_params:
            conn = (TunneledConnection if tunnel is not None else psycopg.Connection).connect(
                **address,
                dbname=config.database,
                user=config.username,
                password=config.password or None,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                application_name=application_name,
                autocommit=True,
                **ssl_params,
            )
    except psycopg.OperationalError as exc:
        if tunnel is not None:
            tunnel.close()
        raise _connect_error(config, exc) from None
    except BaseException:
        if tunnel is not None:
            tunnel.close()
        raise
    if tunnel is not None:
        conn.attach(tunnel)
    return conn


def new_tunnel(config: PostgresStoreConfig) -> "SshTunnel":
    """The tunnel to ``store.host:store.port`` (asyncssh, ~0.3 s to import, is loaded only by configs with a tunnel)."""
    from .ssh_tunnel import SshTunnel

    return SshTunnel(config.tunnel_method, config.host, config.port)


def _connect_error(config: PostgresStoreConfig, exc: psycopg.OperationalError) -> AirbyteTracedException:
    text = " ".join(str(exc).split()) if str(exc).strip() else type(exc).__name__
    via = f" through the SSH tunnel {config.tunnel_method.tunnel_host}" if config.tunnel_method.enabled else ""
    hint = postgres_tls.explain(text)
    if "out of shared memory" in text.lower():  # the server's lock table is full: its sessions hold too many locks
        hint = None
        advice = ("The server has no room left in its lock table (max_locks_per_transaction): sessions hold too many "
                  "locks, e.g. kinesis-collection runners with thousands of collections (see pg_locks); try again "
                  "when they have stopped, or raise max_locks_per_transaction.")
    else:
        advice = f"To fix: {hint}." if hint else "Check host, port, database, user, password and ssl_mode."
    return AirbyteTracedException(
        message=(
            f"Cannot connect to PostgreSQL at {config.host}:{config.port}{via}, database '{config.database}' as user "
            f"'{config.username}' (ssl_mode {config.ssl_mode.mode}): {text}. {advice}"
        ),
        internal_message=text,
        failure_type=FailureType.config_error
        if hint or any(word in text.lower() for word in _USER_FIXABLE)
        else FailureType.transient_error,
    )
