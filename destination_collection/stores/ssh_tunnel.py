"""The SSH tunnel to PostgreSQL (``store.tunnel_method``): an SSH connection to the tunnel host and a local port on
127.0.0.1 forwarded through it to ``store.host:store.port`` as the tunnel host sees them.

Built on asyncssh (maintained, with local port forwarding built in; paramiko would need a hand-written forwarding
loop, and ``sshtunnel`` is unmaintained and breaks with paramiko 4). asyncssh is asynchronous; the store is not, so
one daemon thread runs an event loop for every tunnel of the process and the calls here wait on it with a bound.

What it promises:

* **Bounded waits**: opening the tunnel (TCP, handshake, authentication, the first forwarded connection) takes at
  most ``CONNECT_TIMEOUT_SECONDS``; a tunnel whose server stops answering is noticed by keepalives within
  ``KEEPALIVE_SECONDS × KEEPALIVE_COUNT`` and closed, which ends the PostgreSQL connection through it with an error
  instead of a hang.
* **No ambient configuration**: no ``~/.ssh/config``, no agent, no default keys: only what the config gives.
* **Host keys**: with ``tunnel_host_key`` the server must present one of those keys (``ssh-keyscan`` output or a
  ``.pub`` line); without it any key is accepted, as Airbyte's tunnels do, and its fingerprint is logged so that it
  can be pinned.
* **Clear errors**: a refused login, an unknown host key or a forward the server refuses is a config_error naming the
  setting; an unreachable server is a transient_error. Messages never hold the key or the password.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

import asyncssh
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

if TYPE_CHECKING:
    from ..config import SshTunnelConfig

logger = logging.getLogger("airbyte")
# asyncssh logs every channel at INFO (host, user, ports; never keys): one tunnel per connection would flood the log
logging.getLogger("asyncssh").setLevel(logging.WARNING)

CONNECT_TIMEOUT_SECONDS = 15.0
KEEPALIVE_SECONDS = 15
KEEPALIVE_COUNT = 4
CLOSE_TIMEOUT_SECONDS = 5.0

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def load_private_key(text: str) -> "asyncssh.SSHKey":
    """The key in ``ssh_key``; ValueError naming the field (never echoing the key) when it is not one."""
    try:
        return asyncssh.import_private_key(text.strip() + "\n")
    except asyncssh.KeyImportError as exc:
        if "passphrase" in str(exc).lower():
            raise ValueError(
                "ssh_key is protected by a passphrase, which the tunnel cannot ask for: remove it "
                "(ssh-keygen -p -N '' -f <key file>) or use a key made for the tunnel"
            ) from None
        raise ValueError(
            "ssh_key is not a private key (paste the whole OpenSSH or PEM key, from its -----BEGIN line to its "
            "-----END line)"
        ) from None


def load_host_keys(text: str) -> list["asyncssh.SSHKey"]:
    """The keys in ``tunnel_host_key``: lines as ``ssh-keyscan`` prints them (``host type base64``) or as a ``.pub``
    file holds them (``type base64 [comment]``); ValueError when a line is neither."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        start = next((i for i, word in enumerate(words) if word.startswith(("ssh-", "ecdsa-", "sk-"))), None)
        try:
            if start is None or start + 1 >= len(words):
                raise asyncssh.KeyImportError("no key type")
            keys.append(asyncssh.import_public_key(f"{words[start]} {words[start + 1]}"))
        except asyncssh.KeyImportError:
            raise ValueError(
                f"tunnel_host_key line {number} is not a public key (expected e.g. 'ssh-ed25519 AAAA…' as ssh-keyscan "
                "prints it)"
            ) from None
    if not keys:
        raise ValueError("tunnel_host_key holds no public key (expected e.g. 'ssh-ed25519 AAAA…' as ssh-keyscan prints it)")
    return keys


def _event_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="ssh-tunnels", daemon=True).start()
            _loop = loop
        return _loop


class _HostKeyCheck(asyncssh.SSHClient):
    """Records the key the server presented; asyncssh asks it only about keys not among the pinned ones."""

    def __init__(self) -> None:
        self.presented: "asyncssh.SSHKey | None" = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: "asyncssh.SSHKey") -> bool:
        self.presented = key
        return False


class SshTunnel:
    """One SSH connection forwarding a local port to ``remote_host:remote_port``; ``open`` returns the port."""

    def __init__(self, config: "SshTunnelConfig", remote_host: str, remote_port: int):
        self.config = config
        self.remote_host = remote_host
        self.remote_port = remote_port
        self._conn: Any = None
        self._listener: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def where(self) -> str:
        return f"{self.config.tunnel_host}:{self.config.tunnel_port}"

    def open(self) -> int:
        self._loop = _event_loop()
        future = asyncio.run_coroutine_threadsafe(self._open(), self._loop)
        try:
            return future.result(CONNECT_TIMEOUT_SECONDS + 5)
        except TimeoutError:  # the coroutine's own timeout should have fired first; stop it, then report
            future.cancel()
            raise self._unreachable(f"no answer within {CONNECT_TIMEOUT_SECONDS:.0f} s") from None

    async def _open(self) -> int:
        config = self.config
        pinned = load_host_keys(config.tunnel_host_key) if config.tunnel_host_key else None
        check = _HostKeyCheck()
        options: dict[str, Any] = dict(
            username=config.tunnel_user,
            known_hosts=(pinned, [], []) if pinned else None,
            agent_path=None,
            config=None,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            keepalive_interval=KEEPALIVE_SECONDS,
            keepalive_count_max=KEEPALIVE_COUNT,
        )
        if config.tunnel_method == "SSH_KEY_AUTH":
            options.update(client_keys=[load_private_key(config.ssh_key or "")], password=None, preferred_auth="publickey")
        else:
            options.update(
                client_keys=None, password=config.tunnel_user_password, preferred_auth="keyboard-interactive,password"
            )
        try:
            self._conn = await asyncio.wait_for(
                asyncssh.connect(config.tunnel_host, config.tunnel_port, client_factory=lambda: check, **options),
                CONNECT_TIMEOUT_SECONDS,
            )
        except asyncssh.PermissionDenied:
            secret = "ssh_key (its public half must be in the user's authorized_keys)" if config.tunnel_method == "SSH_KEY_AUTH" else "tunnel_user_password"
            raise self._config_error(
                f"The SSH server {self.where} refused user '{config.tunnel_user}'. Check store.tunnel_method.tunnel_user "
                f"and {secret}."
            ) from None
        except asyncssh.HostKeyNotVerifiable:
            presented = check.presented.get_fingerprint() if check.presented is not None else "a key"
            raise self._config_error(
                f"The SSH server {self.where} presented host key {presented}, which is not one of the keys in "
                "store.tunnel_method.tunnel_host_key. If the server's key changed on purpose, put its new key there "
                "(ssh-keyscan prints it); otherwise something may be intercepting the connection."
            ) from None
        except (OSError, asyncio.TimeoutError, asyncssh.Error) as exc:
            raise self._unreachable(" ".join(str(exc).split()) or type(exc).__name__) from None
        try:
            if pinned is None:
                key = self._conn.get_server_host_key()
                logger.info(
                    f"SSH tunnel to {self.where}: host key {key.get_fingerprint() if key else '?'} accepted without "
                    "verification; set store.tunnel_method.tunnel_host_key to pin it."
                )
            await self._probe()
            self._listener = await self._conn.forward_local_port("127.0.0.1", 0, self.remote_host, self.remote_port)
            return self._listener.get_port()
        except BaseException:
            self._conn.close()
            raise

    async def _probe(self) -> None:
        """One forwarded connection to PostgreSQL, closed at once: a server that refuses forwarding, or cannot reach
        the database, is reported here by name instead of as PostgreSQL's "server closed the connection"."""
        try:
            _, writer = await asyncio.wait_for(
                self._conn.open_connection(self.remote_host, self.remote_port), CONNECT_TIMEOUT_SECONDS
            )
        except asyncssh.ChannelOpenError as exc:
            reason = " ".join(str(exc.reason).split()) or type(exc).__name__
            if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                raise self._config_error(
                    f"The SSH server {self.where} does not allow forwarding to {self.remote_host}:{self.remote_port} "
                    f"({reason}): the server must permit TCP forwarding (AllowTcpForwarding, PermitOpen) for user "
                    f"'{self.config.tunnel_user}'."
                ) from None
            raise AirbyteTracedException(
                message=(
                    f"The SSH server {self.where} could not connect to PostgreSQL at {self.remote_host}:"
                    f"{self.remote_port} ({reason}). store.host and store.port are resolved by the tunnel host: check "
                    "them from there, and that PostgreSQL is running."
                ),
                internal_message=reason,
                failure_type=FailureType.transient_error,
            ) from None
        except asyncio.TimeoutError:
            raise self._unreachable(f"forwarding to {self.remote_host}:{self.remote_port} gave no answer") from None
        writer.close()

    def close(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None or self._conn is None or loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._close(), loop)
        try:
            future.result(CLOSE_TIMEOUT_SECONDS)
        except Exception:  # noqa: BLE001 - closing a dead tunnel: nothing left to release that the loop will not
            future.cancel()

    async def _close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._conn.close()
        await self._conn.wait_closed()

    def _config_error(self, message: str) -> AirbyteTracedException:
        return AirbyteTracedException(message=message, internal_message=message, failure_type=FailureType.config_error)

    def _unreachable(self, reason: str) -> AirbyteTracedException:
        return AirbyteTracedException(
            message=(
                f"Cannot open the SSH tunnel to {self.where}: {reason}. Check store.tunnel_method.tunnel_host and "
                "tunnel_port, and that the SSH server is reachable from where the destination runs."
            ),
            internal_message=reason,
            failure_type=FailureType.transient_error,
        )
