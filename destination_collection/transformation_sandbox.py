"""The process an ingest transformation runs in: a child with its own DuckDB, an address-space cap and a kill switch.

Why a process and not just DuckDB's settings: ``memory_limit`` bounds DuckDB's buffer manager only. List and string
values (``range()``, ``repeat()``, list functions) are allocated outside it, so one record could make a transformation
take gigabytes (``list_sum(range(3e9))`` exhausted 21 GB before a timeout fired), and DuckDB only notices an
interrupt between its tasks. A child process gets an ``RLIMIT_AS`` cap, so such allocations fail inside DuckDB with an
``OutOfMemoryException`` (the child survives and says so), and a query running past its deadline is ended by killing
the child, which is then restarted for the next batch.

The child also runs with a scrubbed environment (no credentials or passwords inherited), ignores SIGINT (a Ctrl-C
stops the parent gracefully, which then closes the child), and dies with its parent (``PR_SET_PDEATHSIG``).

Wire format on the child's stdin/stdout (hand-written: the multiprocessing module would re-import the parent's
``__main__`` under ``spawn`` and is unsafe to ``fork`` from the runner's threads): each frame is two big-endian
uint32 lengths, a JSON header and an Arrow IPC stream (possibly empty).
"""
from __future__ import annotations

import os
import selectors
import signal
import struct
import subprocess
import sys
import time
import weakref
from typing import Any

import duckdb
import orjson
import pyarrow as pa

MEMORY_LIMIT = "512MB"  # DuckDB's own buffer-manager limit inside the child
ADDRESS_SPACE_HEADROOM = 1024**3  # RLIMIT_AS = the child's size once ready + this
ARROW_INPUT = "__kc_input"
START_TIMEOUT_SECS = 60.0
_FRAME = struct.Struct(">II")
_BOOT = (
    "import importlib.util, json, sys\n"
    "sys.path[:] = json.loads(sys.argv[2])\n"
    "spec = importlib.util.spec_from_file_location('kc_transformation_sandbox', sys.argv[3])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module.main(int(sys.argv[1]))\n"
)


def sandbox_connection() -> duckdb.DuckDBPyConnection:
    """A private in-memory DuckDB with files, network and extensions off and its configuration locked."""
    con = duckdb.connect(
        ":memory:",
        config={
            "enable_external_access": False,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "threads": 1,
            "memory_limit": MEMORY_LIMIT,
        },
    )
    con.execute("SET lock_configuration = true")
    return con


class SandboxError(Exception):
    """A query failed in the child: ``kind`` is the DuckDB/Python exception class name, or 'Timeout'/'Crashed'."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _ipc(table: pa.Table) -> pa.Buffer:
    """The table as an Arrow IPC stream (a buffer: written to the pipe as is, without a copy into bytes)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def _write_frame(pipe: Any, header: bytes, body: Any) -> None:
    """One frame: both lengths, the JSON header, the body (bytes or an Arrow buffer), then flush."""
    pipe.write(_FRAME.pack(len(header), len(body)))
    pipe.write(header)
    if len(body):
        pipe.write(body)
    pipe.flush()


# -- the parent's side --------------------------------------------------------------------------------------------
class Sandbox:
    """One child process; ``run`` sends a statement and an input table and returns the result table."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    def start(self) -> None:
        """Start the child unless it runs; waits until it is ready (imports take ~0.4 s), so callers can start their
        deadline afterwards."""
        if self._proc is not None and self._proc.poll() is None:
            return
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "HOME": "/nonexistent"}
        if os.environ.get("LD_LIBRARY_PATH"):  # some Python builds need it to load libpython
            env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
        # -I: no environment variables, no user site, no script directory on sys.path. The child gets the parent's
        # sys.path and loads this file directly, without the package's __init__ (which imports the Airbyte CDK: ~3 s).
        proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _BOOT, str(os.getpid()), orjson.dumps([p for p in sys.path if p]).decode(), __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self._proc = proc
        self._finalizer = weakref.finalize(self, _stop, proc)
        try:
            head, _ = self._read_reply(proc, time.monotonic() + START_TIMEOUT_SECS)
        except (EOFError, OSError) as exc:
            raise self._crashed(proc) from exc
        if not head.get("ready"):
            raise SandboxError("Crashed", f"the transformation process did not start: {head}")

    def run(self, sql: str, table: pa.Table | None, deadline: float) -> tuple[pa.Table, list[dict]]:
        """Returns (result, one ``{"name", "type", "kind"}`` per result column: see ``output_kind``); raises
        SandboxError."""
        self.start()
        proc = self._proc
        assert proc is not None
        body = _ipc(table) if table is not None else b""
        header = orjson.dumps({"sql": sql})
        try:
            assert proc.stdin is not None
            _write_frame(proc.stdin, header, body)
            reply = self._read_reply(proc, deadline)
        except SandboxError:
            raise
        except (BrokenPipeError, ConnectionError, EOFError) as exc:
            raise self._crashed(proc) from exc
        head, payload = reply
        if head.get("error"):
            raise SandboxError(head["error"], head.get("message", ""))
        result = pa.ipc.open_stream(payload).read_all()
        return result, list(head.get("columns", []))

    def _read_reply(self, proc: subprocess.Popen, deadline: float) -> tuple[dict, bytes]:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)

            def read_exactly(n: int) -> bytes:
                chunks, remaining = [], n
                while remaining:
                    left = deadline - time.monotonic()
                    if left <= 0 or not selector.select(left):
                        self.kill()
                        raise SandboxError("Timeout", "deadline passed")
                    chunk = os.read(fd, min(remaining, 1 << 20))
                    if not chunk:
                        raise EOFError
                    chunks.append(chunk)
                    remaining -= len(chunk)
                return b"".join(chunks)

            head_len, body_len = _FRAME.unpack(read_exactly(_FRAME.size))
            head = orjson.loads(read_exactly(head_len))
            return head, read_exactly(body_len) if body_len else b""

    def _crashed(self, proc: subprocess.Popen) -> SandboxError:
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            code = proc.returncode
        self._proc = None
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return SandboxError("Crashed", f"the transformation process ended unexpectedly ({how})")

    def kill(self) -> None:
        if self._proc is not None:
            _stop(self._proc, graceful=False)
            self._proc = None

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._proc = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


def _stop(proc: subprocess.Popen, graceful: bool = True) -> None:
    try:
        if proc.poll() is None and graceful:
            try:
                assert proc.stdin is not None
                proc.stdin.close()  # EOF: the child exits on its own
                proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    finally:
        for pipe in (proc.stdin, proc.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:  # unflushed input to a child that is gone
                pass


# -- the child's side ---------------------------------------------------------------------------------------------
def _die_with_parent(parent_pid: int) -> None:
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        # PR_SET_PDEATHSIG: fires when the parent *thread* that started us ends; a transformation is started and used
        # by the thread running the write loop, which closes it before it ends
        libc.prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: EOF on stdin still ends the child
        pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(0)


def _cap_address_space() -> None:
    import resource

    with open("/proc/self/status") as status:
        size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    limit = size + ADDRESS_SPACE_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


# How each DuckDB result type crosses to the parent, where ``transformation`` turns it into a JSON value.
# "plain": Arrow converts it exactly (booleans, integers within 64 bits signed, floats, text, blobs, intervals);
# "number": exact decimal text (UBIGINT, HUGEINT, UHUGEINT, BIGNUM, DECIMAL: Arrow would wrap or round some of these);
# "json": JSON text (JSON, and nested types through to_json, so that MAP, STRUCT, LIST, ARRAY and UNION values keep
# their shape and their nested numbers stay exact); "temporal": DuckDB's text (dates beyond Python's years 1..9999,
# infinity, nanoseconds and time-zone offsets survive); "text": DuckDB's text (ENUM, UUID, BIT, anything else).
_PLAIN_TYPES = {
    "boolean", "tinyint", "smallint", "integer", "bigint", "utinyint", "usmallint", "uinteger", "float", "double",
    "varchar", "blob", "interval", "null", '"null"',
}
_NUMBER_TYPES = {"ubigint", "hugeint", "uhugeint", "decimal", "bignum", "varint"}
_NESTED_TYPES = {"struct", "list", "array", "map", "union"}
_TEMPORAL_TYPES = {
    "date", "time", "timestamp", "timestamp_s", "timestamp_ms", "timestamp_ns", "timestamp with time zone",
    "time with time zone", "time_ns",
}


def output_kind(type_name: str, type_id: str) -> str:
    """How a result column of this DuckDB type is sent to the parent (see above)."""
    if type_name == "JSON":
        return "json"
    if type_id in _PLAIN_TYPES:
        return "plain"
    if type_id in _NUMBER_TYPES:
        return "number"
    if type_id in _NESTED_TYPES:
        return "json"
    if type_id in _TEMPORAL_TYPES:
        return "temporal"
    return "text"


def _encoded(column: str, kind: str, type_name: str) -> str:
    if kind == "plain":
        return column
    if kind == "json" and type_name != "JSON":
        return f"CAST(to_json({column}) AS VARCHAR)"
    return f"CAST({column} AS VARCHAR)"


def _run_encoded(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[dict], pa.Table]:
    """Run ``sql``; returns a description of each result column (name, DuckDB type, kind) and the result with each
    column encoded for its kind (positionally renamed inside, so odd or duplicate names cannot break the wrapper)."""
    relation = con.sql(sql)
    if relation is None:  # not a query (the statement check lets only SELECTs through; tests send others)
        return [], pa.table({})
    names = list(relation.columns)
    types = [(str(t), str(t.id).lower()) for t in relation.types]
    columns = [{"name": n, "type": t, "kind": output_kind(t, i)} for n, (t, i) in zip(names, types)]
    if all(c["kind"] == "plain" for c in columns):
        return columns, relation.to_arrow_table()
    positional = ", ".join(f'"c{i}"' for i in range(len(names)))
    select = ", ".join(
        _encoded(f'"c{i}"', c["kind"], c["type"]) + ' AS "' + c["name"].replace('"', '""') + '"'
        for i, c in enumerate(columns)
    )
    return columns, con.sql(f"SELECT {select} FROM ({sql}) AS __kc_result({positional})").to_arrow_table()


def _serve(stdin: Any, stdout: Any) -> None:
    con = sandbox_connection()

    def read_exactly(n: int) -> bytes:
        data = stdin.read(n)
        if len(data) < n:
            raise EOFError
        return data

    def reply(head: dict, body: Any = b"") -> None:
        _write_frame(stdout, orjson.dumps(head), body)

    # the first Arrow round trip loads lazily imported modules (~0.5 s): pay for it before saying ready, not inside
    # the first batch's deadline
    con.register(ARROW_INPUT, pa.table({"warm_up": pa.array([1], pa.int64())}))
    con.execute(f"SELECT CAST(warm_up AS JSON) AS j FROM {ARROW_INPUT}").to_arrow_table()
    con.unregister(ARROW_INPUT)
    _cap_address_space()  # after the warm-up, which maps ~500 MB of address space (libraries, arenas)
    reply({"ready": True})
    while True:
        try:
            head_len, body_len = _FRAME.unpack(read_exactly(_FRAME.size))
        except EOFError:
            return
        request = orjson.loads(read_exactly(head_len))
        body = read_exactly(body_len) if body_len else b""
        registered = False
        try:
            if body:
                con.register(ARROW_INPUT, pa.ipc.open_stream(body).read_all())
                registered = True
            del body
            columns, table = _run_encoded(con, request["sql"])
            reply({"columns": columns}, _ipc(table))
        except (duckdb.Error, MemoryError, pa.ArrowException) as exc:
            reply({"error": type(exc).__name__, "message": str(exc)[:2000]})
        finally:
            if registered:
                con.unregister(ARROW_INPUT)


def main(parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    _serve(sys.stdin.buffer, sys.stdout.buffer)
