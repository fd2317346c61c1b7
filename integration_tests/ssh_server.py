"""A throwaway OpenSSH server for the SSH tunnel tests: Debian's ``/usr/sbin/sshd``, unprivileged, on 127.0.0.1.

Like ``postgres_server.py``: a free port, a fresh temporary folder outside the checkout holding everything (host key,
config, authorized_keys, log), stopped by its PID (also at exit) and the folder removed. As root, sshd runs as the
system user ``kcsshtest`` (created when missing); otherwise as ourselves. An unprivileged sshd can only log in its own
uid, so the login user ``tunnel`` is that uid under another name, supplied by nss_wrapper (``LD_PRELOAD``) from a
passwd file in the temporary folder, with a sha512-crypt hash of a random password: password authentication works
without touching the system's accounts (``UsePAM no``: sshd then checks the hash itself). Key authentication uses a
fresh ed25519 client key. Only local port forwarding is allowed: no shell, no TTY, no X11.

``sshd_available()`` says why the server cannot run here (tests skip with it); ``scripts/bootstrap.sh`` installs
``openssh-server`` and ``libnss-wrapper`` when run as root.
"""
from __future__ import annotations

import atexit
import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from integration_tests.postgres_server import free_port, service_user

SSHD = "/usr/sbin/sshd"
SERVICE_USER = "kcsshtest"
LOGIN_USER = "tunnel"


def _nss_wrapper() -> str | None:
    for path in sorted(glob.glob("/usr/lib/*/libnss_wrapper.so")) + ["/usr/lib/libnss_wrapper.so"]:
        if os.path.exists(path):
            return path
    return None


def sshd_available() -> str | None:
    """None when the server can start here, else why not (a skip reason)."""
    missing = [what for what, ok in ((SSHD, os.access(SSHD, os.X_OK)), ("libnss_wrapper.so", _nss_wrapper()),
                                     ("ssh-keygen", shutil.which("ssh-keygen")), ("openssl", shutil.which("openssl")))
               if not ok]
    if missing:
        return f"SSH tunnel tests need {', '.join(missing)}: apt-get install openssh-server libnss-wrapper " \
               "(scripts/bootstrap.sh does it as root)"
    return None


def _descendants(pid: int) -> list[int]:
    """PIDs of the processes descended from ``pid`` (from /proc: sshd forks one child per connection)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _write(path: str, text: str, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, mode)


@dataclass
class SshServer:
    host: str = "127.0.0.1"
    port: int = 0
    user: str = LOGIN_USER
    password: str = field(default="", repr=False)
    # the client private key in authorized_keys (ed25519, OpenSSH format, no passphrase)
    client_key_pem: str = field(default="", repr=False)
    host_key_line: str = ""  # the server's public key, "ssh-ed25519 AAAA..." (for known_hosts checks)
    pid: int | None = None

    def start(self, timeout: float = 10.0) -> "SshServer":
        reason = sshd_available()
        if reason:
            raise RuntimeError(reason)
        account = service_user(SERVICE_USER)
        uid, gid = (account.pw_uid, account.pw_gid) if account is not None else (os.getuid(), os.getgid())
        self._root = root = tempfile.mkdtemp(prefix="kc-sshtest-")
        atexit.register(self.stop)  # also on an interrupted session
        path = lambda name: os.path.join(root, name)  # noqa: E731
        for name in ("host_key", "client_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kc-test-{name}", "-f", path(name)],
                           check=True, capture_output=True)
        with open(path("host_key.pub")) as handle:
            self.host_key_line = handle.read().strip()
        with open(path("client_key")) as handle:
            self.client_key_pem = handle.read()
        shutil.copyfile(path("client_key.pub"), path("authorized_keys"))
        self.password = secrets.token_urlsafe(16)
        hashed = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=self.password, text=True,
                                check=True, capture_output=True).stdout.strip()  # the password never on a command line
        _write(path("passwd"), f"{self.user}:{hashed}:{uid}:{gid}:{self.user}:{root}:/bin/sh\n")
        _write(path("group"), f"{self.user}:x:{gid}:\n")
        self.port = free_port()
        _write(path("sshd_config"), "\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {path('host_key')}",
            f"PidFile {path('sshd.pid')}", "UsePAM no", "PasswordAuthentication yes",
            "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            f"AuthorizedKeysFile {path('authorized_keys')}",
            "StrictModes no", "AllowTcpForwarding local", "PermitTTY no", "X11Forwarding no", "AllowAgentForwarding no",
            "PermitTunnel no", "GatewayPorts no", "LogLevel VERBOSE", "",
        ]))
        for dirpath, dirnames, filenames in os.walk(root):
            for name in [dirpath, *(os.path.join(dirpath, n) for n in filenames)]:
                os.chown(name, uid, gid)
        os.chmod(root, 0o700)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": root, "LC_ALL": "C",
               "LD_PRELOAD": _nss_wrapper(), "NSS_WRAPPER_PASSWD": path("passwd"), "NSS_WRAPPER_GROUP": path("group")}
        run_as = {"user": uid, "group": gid, "extra_groups": []} if account is not None else {}
        self._log = path("sshd.log")
        with open(self._log, "wb") as log_handle:
            self._process = subprocess.Popen([SSHD, "-D", "-e", "-f", path("sshd_config")], stdin=subprocess.DEVNULL,
                                             stdout=log_handle, stderr=subprocess.STDOUT, env=env, cwd=root,
                                             start_new_session=True, **run_as)
        self.pid = self._process.pid
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until the port answers with an SSH banner (sshd -D has no readiness signal)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                log = self.log_text()
                self.stop()
                raise RuntimeError(f"sshd exited during start-up:\n{log[-2000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1) as sock:
                    if sock.recv(64).startswith(b"SSH-2.0"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                log = self.log_text()
                self.stop()
                raise RuntimeError(f"sshd did not answer within {timeout:.0f} s:\n{log[-2000:]}")
            time.sleep(0.05)

    def log_text(self) -> str:
        """sshd's log so far (``-e``: to stderr, captured in the temporary folder); '' once stopped."""
        try:
            with open(self._log, errors="replace") as handle:
                return handle.read()
        except (AttributeError, OSError):
            return ""

    def stop(self) -> None:
        if self.pid is not None:
            # the listener and its per-connection children (each in its own session, so not reachable as a process
            # group): an open tunnel must not outlive the server
            children = _descendants(self.pid)
            for pid in [self.pid, *children]:
                _signal(pid, signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal(self.pid, signal.SIGKILL)
                self._process.wait(timeout=10)
            for pid in children:
                _signal(pid, signal.SIGKILL)  # no-op for those already gone
            self.pid = None
        if getattr(self, "_root", None):
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None

    def __enter__(self) -> "SshServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
