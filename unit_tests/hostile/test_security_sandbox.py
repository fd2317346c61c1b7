"""Security without servers: the ingest-transformation sandbox and DuckDB paths confined to /local in the image.

Transformations: every statement that tries to read files, reach the network, touch other tables or the store, or
change the sandbox is refused with a config_error — by the statement check and, should that ever let one through, by
the sandbox connection itself (external access off, configuration locked). A loopback listener proves no connection
is attempted. A runaway expression is stopped by the per-batch timeout.
"""
from __future__ import annotations

import os
import socket
import threading

import duckdb
import pytest
from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_collection.config import IN_DOCKER_ENV, LOCAL_ROOT_ENV, resolve_duckdb_path
from destination_collection.transformation import Transformation
from destination_collection.transformation_sandbox import sandbox_connection

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def listener():
    """A loopback TCP listener that counts connection attempts (the 'network' a transformation must not reach)."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.2)
    hits = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                hits.append(1)
                conn.close()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], hits
    stop.set()
    thread.join(timeout=2)
    server.close()


ESCAPES = [
    ("read-csv-in-from", "SELECT * FROM read_csv('/etc/passwd')"),
    ("file-path-as-table", "SELECT * FROM '/etc/passwd'"),
    ("read-text-join", "SELECT * FROM _input, read_text('/etc/passwd')"),
    ("read-csv-in-select", "SELECT *, (SELECT count(*) FROM read_csv('/etc/passwd')) AS n FROM _input"),
    ("exists-subquery", "SELECT * FROM _input WHERE EXISTS (SELECT 1 FROM read_csv('/etc/passwd'))"),
    ("in-subquery", "SELECT * FROM _input WHERE 1 IN (SELECT 1 FROM glob('/etc/*'))"),
    ("cte-read", "WITH x AS (SELECT * FROM read_csv('/etc/passwd')) SELECT * FROM _input"),
    ("union-read", "SELECT * FROM _input UNION ALL SELECT * FROM read_csv('/etc/passwd')"),
    ("lambda-subquery", "SELECT *, list_transform([1], x -> (SELECT 1 FROM read_text('/etc/passwd'))) AS y FROM _input"),
    ("http-table", "SELECT * FROM read_csv('http://127.0.0.1:{port}/x.csv')"),
    ("http-subquery", "SELECT *, (SELECT 1 FROM read_json('http://127.0.0.1:{port}/x.json')) AS y FROM _input"),
    ("s3-table", "SELECT * FROM 's3://bucket/key.parquet'"),
    ("other-table", "SELECT * FROM orders"),
    ("store-state-table", "SELECT * FROM _collection_state"),
    ("schema-qualified-input", "SELECT * FROM main._input"),
    ("catalog-functions", "SELECT * FROM duckdb_tables()"),
    ("settings-subquery", "SELECT *, (SELECT value FROM duckdb_settings() LIMIT 1) AS v FROM _input"),
    ("attach", "ATTACH '/tmp/kc-hostile.duckdb' AS other"),
    ("copy-to-file", "COPY (SELECT 1) TO '/tmp/kc-hostile.csv'"),
    ("two-statements", "SELECT * FROM _input; COPY _input TO '/tmp/kc-hostile.csv'"),
    ("install-extension", "INSTALL httpfs"),
    ("load-extension", "LOAD httpfs"),
    ("set-external-access", "SET enable_external_access = true"),
    ("create-table", "CREATE TABLE pwn AS SELECT 1"),
    ("create-macro", "CREATE MACRO m() AS 1"),
    ("insert", "INSERT INTO _input VALUES (1)"),
    ("pragma", "PRAGMA database_list"),
    ("call", "CALL pragma_database_list()"),
    ("export-database", "EXPORT DATABASE '/tmp/kc-hostile'"),
    ("empty", "   "),
]


@pytest.mark.parametrize("case_id,sql", ESCAPES, ids=[c[0] for c in ESCAPES])
def test_transformation_cannot_escape(case_id, sql, listener, tmp_path, reliability):
    port, hits = listener
    before = len(hits)
    with pytest.raises(AirbyteTracedException) as caught:
        transformation = Transformation(sql.format(port=port), "orders")
        transformation.apply([{"a": 1}])  # only reached if the check let it through: must still fail
    assert caught.value.failure_type == FailureType.config_error
    assert "Ingest transformation of stream 'orders'" in caught.value.message
    assert len(hits) == before, "the transformation reached the network"
    assert not os.path.exists("/tmp/kc-hostile.csv") and not os.path.exists("/tmp/kc-hostile.duckdb")
    reliability(cases=1)


SANDBOX_PROBES = [
    ("read-csv", "SELECT * FROM read_csv('/etc/passwd')"),
    ("read-text", "SELECT * FROM read_text('/etc/hostname')"),
    ("glob", "SELECT * FROM glob('/etc/*')"),
    ("http", "SELECT * FROM read_csv('http://127.0.0.1:{port}/x.csv')"),
    ("attach", "ATTACH '/tmp/kc-hostile.duckdb' AS other"),
    ("copy", "COPY (SELECT 1) TO '/tmp/kc-hostile.csv'"),
    ("unlock", "SET lock_configuration = false"),
    ("enable-access", "SET enable_external_access = true"),
    ("install", "INSTALL httpfs"),
]


@pytest.mark.parametrize("case_id,sql", SANDBOX_PROBES, ids=[c[0] for c in SANDBOX_PROBES])
def test_sandbox_connection_itself_refuses(case_id, sql, listener, reliability):
    """Defence in depth: the connection a transformation runs on refuses these even without the statement check."""
    port, hits = listener
    before = len(hits)
    con = sandbox_connection()
    try:
        with pytest.raises(duckdb.Error):
            con.execute(sql.format(port=port)).fetchall()
    finally:
        con.close()
    assert len(hits) == before
    assert not os.path.exists("/tmp/kc-hostile.csv") and not os.path.exists("/tmp/kc-hostile.duckdb")
    reliability(cases=1)


def test_transformation_sees_only_its_batch_not_the_store(tmp_path, reliability):
    """A store file with other tables next to it is invisible: the sandbox is a private in-memory database."""
    store = duckdb.connect(str(tmp_path / "store.duckdb"))
    store.execute("CREATE TABLE orders AS SELECT 'secret' AS s")
    store.close()
    transformation = Transformation("SELECT *, current_database() AS db FROM _input", "orders")
    try:
        rows = transformation.apply([{"a": 1}])
    finally:
        transformation.close()
    assert rows == [(0, {"a": 1, "db": "memory"})]
    reliability(cases=1)


RUNAWAY = """
import resource, sys, time
from destination_collection.transformation import Transformation
t = Transformation("SELECT *, list_sum(range(a)) AS s FROM _input", "orders", timeout_secs=0.05)
try:
    t.apply([{"a": int(sys.argv[1])}])
    outcome = "completed"
except Exception as exc:
    outcome = type(exc).__name__ + ": " + str(exc)[:300]
t.close()
print(outcome)
# the statement runs in the transformation's child process: count it too
print(max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) // 1024)
"""


def run_runaway(n: int) -> tuple:
    """Run a runaway transformation in a child process under a 3 GB address-space cap (so a failure here can never
    exhaust the machine); returns (outcome, peak RSS in MB)."""
    import resource
    import subprocess
    import sys

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))

    done = subprocess.run([sys.executable, "-c", RUNAWAY, str(n)], capture_output=True, text=True, timeout=60, preexec_fn=cap)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and len(lines) == 2, done.stderr[-2000:]
    return lines[0], int(lines[1])


def test_runaway_transformation_is_stopped_by_the_timeout(reliability):
    outcome, _ = run_runaway(20_000_000)  # ~160 MB: within the memory cap, ~0.2 s of work
    assert outcome.startswith("AirbyteTracedException") and "took longer than 0.05s" in outcome, outcome
    reliability(cases=1)


@pytest.mark.parametrize("n", [100_000_000, 3_000_000_000])
def test_transformation_memory_stays_within_the_sandbox_limit(n, reliability):
    """list values are allocated outside DuckDB's memory_limit: the sandbox process's address-space cap stops them
    (3e9 once exhausted 21 GB before a timeout could fire) with a config error naming the cause."""
    reliability(cases=1)
    outcome, peak_mb = run_runaway(n)
    assert peak_mb < 1400, f"peak RSS {peak_mb} MB with a 1 GB sandbox headroom ({outcome})"
    assert outcome.startswith("AirbyteTracedException") and "needed more memory than the sandbox allows" in outcome, outcome


PATHS = [
    # (path as configured, expected path relative to the root, or None when it must be refused)
    ("x.duckdb", "x.duckdb"),
    ("/x.duckdb", "x.duckdb"),
    ("/local/x.duckdb", "x.duckdb"),
    ("/local/sub/dir/x.duckdb", "sub/dir/x.duckdb"),
    ("../x.duckdb", None),
    ("/local/../etc/x.duckdb", None),
    ("sub/../../x.duckdb", None),
    ("/local/link-out/x.duckdb", None),  # a symlink inside /local pointing outside
    ("/local", None),
    ("/", None),
    ("md:my_db", None),
    ("motherduck:my_db", None),
    ("/local/./x.duckdb", "x.duckdb"),
    ("/etc/passwd", "etc/passwd"),  # an absolute path is taken inside /local, never outside
]


@pytest.mark.parametrize("path,expected", PATHS, ids=[p[0] for p in PATHS])
def test_duckdb_path_cannot_escape_local_in_the_image(path, expected, tmp_path, monkeypatch, reliability):
    root = tmp_path / "local"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "link-out").symlink_to(outside)
    monkeypatch.setenv(IN_DOCKER_ENV, "1")
    monkeypatch.setenv(LOCAL_ROOT_ENV, str(root))
    reliability(cases=1)
    if expected is None:
        with pytest.raises(AirbyteTracedException) as caught:
            resolve_duckdb_path(path)
        assert caught.value.failure_type == FailureType.config_error
        return
    resolved = resolve_duckdb_path(path)
    assert resolved == os.path.join(os.path.realpath(root), expected)
