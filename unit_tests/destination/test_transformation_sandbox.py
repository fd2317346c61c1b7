"""The transformation's child process: what it refuses, what it inherits, how it ends (destination_collection/transformation_sandbox.py)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection.transformation import Transformation
from destination_collection.transformation_sandbox import Sandbox, SandboxError


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] == "Z"


@pytest.fixture
def sandbox():
    box = Sandbox()
    yield box
    box.close()


def run(box: Sandbox, sql: str) -> list:
    result, _ = box.run(sql, None, time.monotonic() + 30)
    return result.to_pylist()


@pytest.mark.parametrize("statement", ["SELECT * FROM read_text('/etc/hostname')", "INSTALL httpfs", "ATTACH '/tmp/kc-sandbox.db'"])
def test_child_connection_refuses_files_network_and_extensions(sandbox, statement):
    with pytest.raises(SandboxError) as info:
        run(sandbox, statement)
    assert info.value.kind == "PermissionException", (info.value.kind, str(info.value))
    assert not os.path.exists("/tmp/kc-sandbox.db")


@pytest.mark.parametrize("statement", ["SET enable_external_access = true", "SET memory_limit = '64GB'", "SET threads = 8"])
def test_child_connection_configuration_is_locked(sandbox, statement):
    with pytest.raises(SandboxError, match="locked"):
        run(sandbox, statement)
    assert run(sandbox, "SELECT current_setting('threads') AS t") == [{"t": 1}]  # still serving, unchanged


def test_child_inherits_no_secrets_from_the_environment(monkeypatch, sandbox):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "kc-fixture-secret-ABC123")
    monkeypatch.setenv("PGPASSWORD", "kc-fixture-password-XYZ")
    sandbox.start()
    with open(f"/proc/{sandbox.pid}/environ", "rb") as environ:
        inherited = environ.read()
    assert b"kc-fixture-secret" not in inherited and b"kc-fixture-password" not in inherited
    assert b"AWS_SECRET_ACCESS_KEY" not in inherited and b"PGPASSWORD" not in inherited


def test_child_ignores_sigint_so_a_ctrl_c_stops_only_the_parent_gracefully(sandbox):
    sandbox.start()
    os.kill(sandbox.pid, signal.SIGINT)
    time.sleep(0.2)
    assert run(sandbox, "SELECT 42 AS x") == [{"x": 42}]


def test_child_dies_with_its_parent():
    parent = subprocess.Popen(
        [sys.executable, "-c", "from destination_collection.transformation_sandbox import Sandbox\n"
         "import sys, time\nb = Sandbox(); b.start(); print(b.pid, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        child = int(parent.stdout.readline())
        os.kill(child, 0)  # alive
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            if _zombie(child):  # a zombie waiting for init: dead
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"sandbox child {child} outlived its parent")
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()


def test_memory_failure_leaves_the_sandbox_serving():
    t = Transformation("SELECT *, list_sum(range(a)) AS s FROM _input", "orders")
    try:
        pid = t._sandbox.pid
        with pytest.raises(AirbyteTracedException) as info:
            t.apply([{"a": 1}, {"a": 3_000_000_000}])
        assert info.value.failure_type == FailureType.config_error
        assert "needed more memory than the sandbox allows" in info.value.message and "'orders'" in info.value.message
        assert t.apply([{"a": 4}]) == [(0, {"a": 4, "s": 6})]
        assert t._sandbox.pid == pid  # the same process: an allocation failure is not a crash
    finally:
        t.close()


def test_timeout_kills_the_child_and_the_next_batch_gets_a_fresh_one():
    t = Transformation("SELECT *, list_sum(range(a)) AS s FROM _input", "orders", timeout_secs=0.05)
    try:
        first = t._sandbox.pid
        with pytest.raises(AirbyteTracedException, match="took longer than 0.05s"):
            t.apply([{"a": 20_000_000}])  # one chunk, ~0.2 s in one DuckDB task: the deadline passes inside it
        assert t._sandbox.pid is None
        with pytest.raises(ProcessLookupError):
            for _ in range(100):  # reaped: no zombie left behind either
                os.kill(first, 0)
                time.sleep(0.01)
        assert t.apply([{"a": 3}]) == [(0, {"a": 3, "s": 3})]
        assert t._sandbox.pid not in (None, first)
    finally:
        t.close()


def test_a_crashed_child_is_a_system_error_naming_the_stream_then_recovers(monkeypatch):
    t = Transformation("SELECT *, list_sum(range(a)) AS s FROM _input", "orders", timeout_secs=30)
    try:
        pid = t._sandbox.pid
        sandbox_class = type(t._sandbox)
        read_reply = sandbox_class._read_reply
        killed = []

        def kill_while_it_computes(self, proc, deadline):
            # the request is written; the child is working on it: it dies now (a timer could also land between two
            # requests, where a dead child is simply restarted for the next one)
            if proc.pid == pid and not killed:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            return read_reply(self, proc, deadline)

        monkeypatch.setattr(sandbox_class, "_read_reply", kill_while_it_computes)
        with pytest.raises(AirbyteTracedException) as info:
            t.apply([{"a": 5000}] * 10_000)
        assert killed == [pid]
        assert info.value.failure_type == FailureType.system_error
        assert "stream 'orders'" in info.value.message and "signal 9" in info.value.message
        assert t.apply([{"a": 2}]) == [(0, {"a": 2, "s": 1})]
    finally:
        t.close()


def test_close_ends_the_child():
    t = Transformation("SELECT * FROM _input", "orders")
    pid = t._sandbox.pid
    t.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def _children() -> set:
    found = set()
    for task in os.listdir(f"/proc/{os.getpid()}/task"):
        with open(f"/proc/{os.getpid()}/task/{task}/children") as handle:
            found.update(int(pid) for pid in handle.read().split())
    return {pid for pid in found if not _zombie(pid)}


def test_a_statement_refused_by_the_dry_run_leaves_no_process_behind():
    before = _children()
    with pytest.raises(AirbyteTracedException) as info:
        Transformation("SELECT *, no_such_function(a) AS b FROM _input", "orders")
    assert info.value.failure_type == FailureType.config_error and "no_such_function" in info.value.message
    assert _children() - before == set()
