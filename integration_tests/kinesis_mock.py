"""Start and stop kinesis-mock (npm ``kinesis-local@0.6.2``) on 127.0.0.1 for tests and the demo.

kinesis-mock has no host setting and binds every interface, so it is started with ``node -r loopback.js``, which
forces every ``listen`` onto 127.0.0.1. The process is ours: it is stopped by its PID, never by name.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Optional

import boto3
from botocore.config import Config

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOOPBACK_JS = HERE / "loopback.js"
DEFAULT_PACKAGE_DIR = REPO / ".cache" / "node" / "node_modules" / "kinesis-local"
REGION = "us-east-1"
# kinesis-mock accepts any credentials; these are fixture values, scanned for in test output like real secrets.
ACCESS_KEY = "AKIAKINESISMOCK0000"
SECRET_KEY = "kinesis-mock-fixture-secret-value-0000"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def package_dir() -> Path:
    configured = os.environ.get("KINESIS_LOCAL_DIR")
    path = Path(configured) if configured else DEFAULT_PACKAGE_DIR
    if not (path / "main.js").exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError(f"kinesis-local is not installed at {path} and npm is not on PATH; run scripts/bootstrap.sh")
        prefix = path.parent.parent
        prefix.mkdir(parents=True, exist_ok=True)
        subprocess.run([npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix), "kinesis-local@0.6.2"], check=True)
    return path


class KinesisMock:
    """One kinesis-mock process listening on 127.0.0.1:<port> (plain HTTP)."""

    def __init__(self, **settings: str) -> None:
        self.port = free_port()
        self.tls_port = free_port()
        self.settings = settings
        self.process: Optional[subprocess.Popen] = None
        self._log = tempfile.NamedTemporaryFile(prefix="kinesis-mock-", suffix=".log", delete=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> "KinesisMock":
        pkg = package_dir()
        env = dict(os.environ)
        env.update(
            KINESIS_MOCK_CERT_PATH=str(pkg / "server.json"),
            KINESIS_MOCK_PLAIN_PORT=str(self.port),
            KINESIS_MOCK_TLS_PORT=str(self.tls_port),
            AWS_REGION=REGION,
            LOG_LEVEL="WARN",
            SHARD_LIMIT="200",
            CREATE_STREAM_DURATION="100ms",
            DELETE_STREAM_DURATION="100ms",
            SPLIT_SHARD_DURATION="200ms",
            MERGE_SHARDS_DURATION="200ms",
            UPDATE_SHARD_COUNT_DURATION="200ms",
        )
        env.update(self.settings)
        self.process = subprocess.Popen(
            ["node", "-r", str(LOOPBACK_JS), str(pkg / "main.js")],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kinesis-mock exited with {self.process.returncode}: {self.log_tail()}")
            try:
                self.client().list_streams(Limit=1)
                return self
            except Exception:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"kinesis-mock did not answer on {self.endpoint_url} within {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return Path(self._log.name).read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def persist_file(self) -> Optional[Path]:
        if self.settings.get("SHOULD_PERSIST_DATA") != "true":
            return None
        return Path(self.settings.get("PERSIST_PATH", ".")) / self.settings.get("PERSIST_FILE_NAME", "kinesis-mock.json")

    def _complete_snapshot(self, path: Path, timeout: float = 5.0) -> Optional[bytes]:
        """The persisted data once kinesis-mock has rewritten it after this call began and it parses as JSON.

        kinesis-mock rewrites its file every PERSIST_INTERVAL by truncating it first, so a SIGTERM that lands mid-write
        leaves an empty or partial file, and the next start fails with ``java.util.NoSuchElementException``.
        """
        began = time.time()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if path.stat().st_mtime > began:
                    data = path.read_bytes()
                    json.loads(data)
                    return data
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        persisted = self.persist_file()
        snapshot = self._complete_snapshot(persisted) if persisted is not None else None
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if persisted is not None and snapshot is not None:
            try:
                json.loads(persisted.read_bytes())
            except (OSError, ValueError):
                # The stop interrupted a rewrite: put back the last complete one (written while nothing changed).
                partial = persisted.with_suffix(".restoring")
                partial.write_bytes(snapshot)
                os.replace(partial, persisted)

    def client(self):
        return boto3.client(
            "kinesis",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"total_max_attempts": 3, "mode": "standard"}, connect_timeout=5, read_timeout=30),
        )

    def source_config(self, streams, **overrides) -> dict:
        """A source-kinesis config pointing at this emulator with access keys."""
        config = {
            "credentials": {"auth_type": "access_keys", "aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY},
            "region": REGION,
            "endpoint_url": self.endpoint_url,
            "streams": list(streams),
        }
        config.update(overrides)
        return config

    def __enter__(self) -> "KinesisMock":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def wait_active(client, stream: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.describe_stream(StreamName=stream, Limit=1)["StreamDescription"]["StreamStatus"]
        if status == "ACTIVE":
            return
        time.sleep(0.1)
    raise TimeoutError(f"stream {stream} not ACTIVE after {timeout}s")


def create_stream(client, stream: str, shards: int) -> None:
    client.create_stream(StreamName=stream, ShardCount=shards)
    wait_active(client, stream)
