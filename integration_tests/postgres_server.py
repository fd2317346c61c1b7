"""A throwaway PostgreSQL server for tests: started on 127.0.0.1 by the fixtures, stopped by its PID afterwards.

Works as root (CI, sessions) and as a normal user. As root, the server runs as an unprivileged system user
(``kcpgtest``, created when missing; ``nobody`` if it cannot be created), because PostgreSQL refuses to run as root.
Its data directory and socket directory live in a fresh temporary folder outside the checkout that this user owns
(a checkout under a home folder may be unreadable to other users). The server listens on loopback only, on a free
port, with fsync off (test data is disposable). Tests connect over TCP with a password-protected role.

TLS is always on (``ssl=on``) with certificates from a fresh in-memory ``TestCA`` (``server.tls``): the server
certificate names ``DNS:localhost`` only, so ``verify-full`` works with host ``localhost`` and fails with
``127.0.0.1``. Plain connections keep working for the main role (``store_config()`` says ``{"mode": "disable"}``).
Two extra roles exist for the SSL tests, each allowed over TLS only (``hostnossl ... reject``):
``cert_role()`` (``kc_cert``, client-certificate authentication, CN = role name) and ``ssl_role()`` (``kc_ssl_only``,
password over TLS).

Binaries: ``$PG_BIN`` if set, else the newest ``/usr/lib/postgresql/*/bin``, else ``initdb``/``postgres`` on PATH.
"""
from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from integration_tests.tls_material import TestCA

SERVICE_USER = "kcpgtest"
ROLE = "kc_test"
DATABASE = "kc_test"
CERT_ROLE = "kc_cert"
SSL_ROLE = "kc_ssl_only"


def find_bin_dir() -> str:
    explicit = os.environ.get("PG_BIN")
    if explicit:
        return explicit
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]) if p.split("/")[-2].isdigit() else 0
    )
    for candidate in reversed(candidates):
        if os.path.exists(os.path.join(candidate, "postgres")) and os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres"):
        return os.path.dirname(initdb)
    raise RuntimeError("PostgreSQL server binaries not found: install postgresql (15) or set PG_BIN to its bin folder")


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (also for the other servers the fixtures start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_user(name: str = SERVICE_USER) -> pwd.struct_passwd | None:
    """The unprivileged system user ``name`` to run a test server as, created when missing (``nobody`` if it cannot
    be); None when not root: run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    try:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)
    except (OSError, subprocess.CalledProcessError, KeyError):
        return pwd.getpwnam("nobody")


@dataclass
class PostgresServer:
    host: str = "127.0.0.1"
    port: int = 0
    user: str = ROLE
    password: str = ""
    database: str = DATABASE
    pid: int | None = None
    # server settings on top of the defaults below (e.g. the benchmark's {"shared_buffers": "1GB"}: the tests' 32MB
    # is far below what a production server gives a 10 M-row table)
    settings: dict[str, str] = field(default_factory=dict)
    # the CA behind the server certificate (``tls.ca_pem`` to verify the server, ``tls.client_certificate(role)``)
    tls: TestCA | None = field(default=None, repr=False)

    def start(self) -> "PostgresServer":
        bin_dir = find_bin_dir()
        account = service_user()
        self._root = tempfile.mkdtemp(prefix="kc-pgtest-")
        data_dir = os.path.join(self._root, "data")
        self._socket_dir = os.path.join(self._root, "sock")
        os.makedirs(self._socket_dir)
        run_as = {}
        if account is not None:
            for path in (self._root, self._socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
            os.chmod(self._root, 0o700)
            run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if account is not None:
            env["HOME"] = self._root
        subprocess.run(
            [os.path.join(bin_dir, "initdb"), "-D", data_dir, "-U", "postgres", "-E", "UTF8", "--locale=C",
             "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
            check=True, capture_output=True, env=env, cwd=self._root, **run_as,
        )
        self._data_dir = data_dir
        self._account = account
        with open(os.path.join(data_dir, "pg_hba.conf")) as handle:
            self._hba_base = handle.read()  # as initdb wrote it
        # the TLS-only roles are in pg_hba.conf from the start (created after start-up): no reload needed for them
        self._cert_roles: list[str] = [CERT_ROLE]
        self._ssl_roles: dict[str, str] = {SSL_ROLE: secrets.token_urlsafe(16)}  # role -> password
        ssl_args = self._write_tls_files(data_dir)
        self._write_hba()
        self.port = free_port()
        self._log = os.path.join(self._root, "postgres.log")
        log_handle = open(self._log, "wb")
        self._process = subprocess.Popen(
            [os.path.join(bin_dir, "postgres"), "-D", data_dir, "-k", self._socket_dir, "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "full_page_writes=off", "-c", "max_connections=50", "-c", "shared_buffers=32MB", *ssl_args,
             *(arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}"))],
            stdout=log_handle, stderr=subprocess.STDOUT, env=env, cwd=self._root, start_new_session=True, **run_as,
        )
        log_handle.close()
        self.pid = self._process.pid
        atexit.register(self.stop)  # also on an interrupted session
        self._wait_ready()
        self.password = secrets.token_urlsafe(16)
        self._setup_role()
        self._create_tls_role(CERT_ROLE, None)
        self._create_tls_role(SSL_ROLE, self._ssl_roles[SSL_ROLE])
        return self

    def _write_private(self, path: str, text: str) -> None:
        """Write ``text`` to ``path`` mode 0600, owned by the server's account (PostgreSQL refuses a key file that
        others can read)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(path, 0o600)
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    def _write_tls_files(self, data_dir: str) -> list[str]:
        """A fresh CA, server certificate and key in the data directory; the ``-c`` options that turn TLS on."""
        self.tls = TestCA.create()
        files = {"server.crt": self.tls.server_cert_pem, "server.key": self.tls.server_key_pem,
                 "root.crt": self.tls.ca_pem}  # root.crt: the CA that client certificates must chain to
        for name, text in files.items():
            self._write_private(os.path.join(data_dir, name), text)
        return ["-c", "ssl=on", "-c", f"ssl_cert_file={os.path.join(data_dir, 'server.crt')}",
                "-c", f"ssl_key_file={os.path.join(data_dir, 'server.key')}",
                "-c", f"ssl_ca_file={os.path.join(data_dir, 'root.crt')}"]

    def _write_hba(self) -> None:
        """initdb's pg_hba.conf with the TLS-only roles' lines in front (the first matching line wins)."""
        path = os.path.join(self._data_dir, "pg_hba.conf")
        lines = ["# test fixture: roles that may log in over TLS only"]
        for role in self._cert_roles:
            lines += [f"hostssl all {role} 127.0.0.1/32 cert", f"hostnossl all {role} 127.0.0.1/32 reject"]
        for role in self._ssl_roles:
            lines += [f"hostssl all {role} 127.0.0.1/32 scram-sha-256", f"hostnossl all {role} 127.0.0.1/32 reject"]
        self._write_private(path, "\n".join(lines) + "\n\n" + self._hba_base)

    def _reload_hba(self) -> None:
        """Rewrite pg_hba.conf and wait until the postmaster has reloaded it (pg_reload_conf() only sends SIGHUP)."""
        self._write_hba()
        with self._superuser_connect() as conn:
            before = conn.execute("SELECT pg_conf_load_time()").fetchone()[0]
            conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with self._superuser_connect() as conn:  # a new backend reports the postmaster's load time
                if conn.execute("SELECT pg_conf_load_time()").fetchone()[0] != before:
                    return
            time.sleep(0.02)
        raise RuntimeError("PostgreSQL did not reload pg_hba.conf within 10 s")

    def _create_tls_role(self, name: str, password: str | None) -> None:
        from psycopg import sql

        role = sql.Identifier(name)
        with self.admin_connect() as conn:
            if password is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(role))
            else:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password)))
            conn.execute(sql.SQL("GRANT CONNECT, CREATE, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(self.database), role))
            conn.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(role))

    def cert_role(self, name: str = CERT_ROLE) -> str:
        """A LOGIN role (no password) that may connect only over TLS with a client certificate whose CN is its name
        (``tls.client_certificate(name)``); it can create schemas and tables in the test database. Idempotent;
        ``kc_cert`` exists from the start."""
        if name not in self._cert_roles:
            self._create_tls_role(name, None)
            self._cert_roles.append(name)
            self._reload_hba()
        return name

    def ssl_role(self, name: str = SSL_ROLE) -> tuple[str, str]:
        """``(role, password)`` of a LOGIN role that may connect only over TLS (``disable`` is refused, ``require``
        works), with the same rights as ``cert_role()``. Idempotent; ``kc_ssl_only`` exists from the start."""
        if name not in self._ssl_roles:
            password = secrets.token_urlsafe(16)
            self._create_tls_role(name, password)
            self._ssl_roles[name] = password
            self._reload_hba()
        return name, self._ssl_roles[name]

    def _superuser_connect(self):
        import psycopg

        return psycopg.connect(host=self._socket_dir, port=self.port, user="postgres", dbname="postgres", autocommit=True)

    def checkpoint(self) -> None:
        """``CHECKPOINT`` as the superuser: every dirty buffer written out (e.g. after a bulk load, before a
        measurement)."""
        with self._superuser_connect() as conn:
            conn.execute("CHECKPOINT")

    def admin_connect(self, database: str | None = None):
        """A superuser connection (autocommit) to the test database (or ``database``) for test set-up: roles, grants."""
        import psycopg

        return psycopg.connect(host=self._socket_dir, port=self.port, user="postgres", dbname=database or self.database, autocommit=True)

    def _wait_ready(self, timeout: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited during start-up:\n{open(self._log).read()[-2000:]}")
            try:
                self._superuser_connect().close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("PostgreSQL did not accept connections within 30 s")
                time.sleep(0.1)

    def _setup_role(self) -> None:
        from psycopg import sql

        with self._superuser_connect() as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(self.user), sql.Literal(self.password)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(self.database), sql.Identifier(self.user)))

    def stop(self) -> None:
        if self.pid is not None:
            try:
                os.kill(self.pid, signal.SIGINT)  # fast shutdown
                try:
                    self._process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.kill(self.pid, signal.SIGKILL)
                    self._process.wait(timeout=10)
            except ProcessLookupError:
                pass
            self.pid = None
        if getattr(self, "_root", None):
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def store_config(self, schema: str = "public", *, ssl_mode: dict | None = None, host: str | None = None,
                     username: str | None = None, password: str | None = None) -> dict:
        """The destination's ``store`` block for this server: the main role, no TLS, unless told otherwise (e.g.
        ``ssl_mode={"mode": "verify-full", "ca_certificate": server.tls.ca_pem}, host="localhost"``)."""
        return {
            "store_type": "postgres",
            "host": host or self.host,
            "port": self.port,
            "database": self.database,
            "schema": schema,
            "username": username or self.user,
            "password": self.password if password is None else password,
            "ssl_mode": dict(ssl_mode) if ssl_mode is not None else {"mode": "disable"},
        }
