"""The collection store at scale (issue 11): `destination-collection write` against the stores' own bulk loads.

* **Data**: Kinesis-shaped order events (14 payload fields of mixed types + the six `_kinesis_*` fields, ~0.5 KB
  per RECORD line), Airbyte RECORD lines in an NDJSON file with a STREAM state every 10,000 records. `append` gets
  generated ids; `append_dedup` uses `id_field: order_id` (every id new when building).
* **Subjects**: `destination-collection write --config C --catalog K < file`, a child process, default batch
  settings. **Floors**, on the same file in the same run: DuckDB's own `read_json` of the file into a table with the
  collection's own definition (copied from the collection the destination created: `_id NOT NULL`, typed
  columns, `_doc`/`_meta` JSON), and PostgreSQL `COPY` of the same rows (CSV prepared before the measurement) into
  the same table definition (`CREATE TABLE … (LIKE collection INCLUDING ALL)`), both child processes too.
* **CPU per record** = user + system CPU of every thread of every process of the child's tree (the write process
  and, e.g., the transformation sandbox it starts; start-up included), from `getrusage(RUSAGE_CHILDREN)` of a
  subreaper wrapper (`bench/_measure.py`) that reaps all descendants. For PostgreSQL the server's CPU during the run
  (postmaster and backends, from /proc) is added and shown. **Peak RSS** = VmHWM of the write process, polled; "tree"
  adds the RSS of its children (sandbox) at the same moment. records/s = records / wall time of the whole process.
* **Flatness**: the same change batch (half updates of existing ids, half new ids, `append_dedup` on `order_id`)
  into a 100k-document collection and into a big one (1 M; 10 M with `--scale 10`), each time into a fresh copy of
  the collection the destination built (DuckDB: the cached database file copied; PostgreSQL: `CREATE DATABASE …
  TEMPLATE`). The DuckDB collections are cached under `.cache/bench/collections/<data version>-<hash of
  destination_collection/>` (`--rebuild` forces a new build); their build figures are stored with them.
* **Queries**: right after the change batch into the big collection (no maintenance in between) vs on a fully
  compacted copy in the same database (`CREATE TABLE … AS SELECT * FROM collection`, then CHECKPOINT).
"""
from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time

import orjson

from .common import REPO, Context, Section, Table, Target, median

TITLE = "Destination: the collection store at scale"
ORDER = 30
STREAM = "events"
STATE_EVERY = 10_000
DATA_VERSION = 2
ID_FIELD = "order_id"
TRANSFORMATION = "SELECT *, amount * 2 AS double FROM _input"
BIN = os.path.dirname(sys.executable)
KINESIS_PK = [["_kinesis_shard_id"], ["_kinesis_sequence_number"], ["_kinesis_sub_sequence_number"]]
KINESIS = {
    "_kinesis_stream": "stream",
    "_kinesis_shard_id": "shard_id",
    "_kinesis_sequence_number": "sequence_number",
    "_kinesis_sub_sequence_number": "sub_sequence_number",
    "_kinesis_partition_key": "partition_key",
    "_kinesis_arrival_time": "arrival_time",
}
PAYLOAD = {  # field -> DuckDB type of the record as read_json sees it (the floors' input schema)
    "user_id": "BIGINT", "order_id": "VARCHAR", "amount": "DOUBLE", "quantity": "BIGINT", "currency": "VARCHAR",
    "is_gift": "BOOLEAN", "status": "VARCHAR", "created_at": "VARCHAR", "tags": "VARCHAR[]",
    "address": "STRUCT(city VARCHAR, zip VARCHAR)", "discount": "DOUBLE", "note": "VARCHAR", "score": "BIGINT",
    "version": "BIGINT",
}
INPUT_FIELDS = {**PAYLOAD, **{k: ("BIGINT" if "sub_sequence" in k else "VARCHAR") for k in KINESIS}}

# -- data -------------------------------------------------------------------------------------------------------
_STATUSES = ["new", "paid", "shipped", "delivered", "cancelled", "refunded"]
_CITIES = ["Berlin", "Lisboa", "São Paulo", "Zürich", "Kraków", "Tokyo 東京", "New York", "Nairobi"]
_TAGS = ["gift", "express", "fragile", "bulk", "promo", "vip", "eco"]
_BASE_MS = int(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)


def _iso(ms: int) -> str:
    t = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return f"{t:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def _kinesis(data: dict, seq: int, arrival: str) -> dict:
    data["_kinesis_stream"] = "orders"
    data["_kinesis_shard_id"] = f"shardId-{seq % 4:012d}"
    data["_kinesis_sequence_number"] = f"4959033827149025660855969253836157109592157598913658{seq:010d}"
    data["_kinesis_sub_sequence_number"] = 0
    data["_kinesis_partition_key"] = f"user-{data.get('user_id', seq)}"
    data["_kinesis_arrival_time"] = arrival
    return data


def order_event(rng: random.Random, seq: int, number: int, version: int) -> tuple[dict, int]:
    """One order event (data, emitted_at ms): order ``ord-<number>``, the ``seq``-th event of the stream."""
    arrival_ms = _BASE_MS + seq * 3
    arrival = _iso(arrival_ms)
    r = rng.random()
    data = {
        "user_id": rng.randrange(1, 5_000_000),
        "order_id": f"ord-{number:09d}",
        "amount": round(rng.random() * 1000, 2),
        "quantity": rng.randrange(1, 20),
        "currency": "EUR" if r < 0.5 else "USD",
        "is_gift": r < 0.1,
        "status": _STATUSES[(number + version - 1) % len(_STATUSES)],
        "created_at": arrival,
        "tags": rng.sample(_TAGS, rng.randrange(0, 3)),
        "address": {"city": _CITIES[number % len(_CITIES)], "zip": f"{rng.randrange(10000, 99999)}"},
        "discount": None if r < 0.6 else round(rng.random() * 0.3, 3),
        "note": "" if r < 0.7 else "Grüße — please ring twice 🔔",
        "score": rng.randrange(-2**62, 2**62),
        "version": version,
    }
    return _kinesis(data, seq, arrival), arrival_ms + 5


def _write_file(ctx: Context, path: str, records) -> str:
    if os.path.exists(path):
        return path
    ctx.log(f"  generating {os.path.basename(path)}")
    tmp = path + ".tmp"
    count = 0
    with open(tmp, "wb") as out:
        for data, emitted in records:
            count += 1
            out.write(orjson.dumps({"type": "RECORD", "record": {"stream": STREAM, "data": data, "emitted_at": emitted}}))
            out.write(b"\n")
            if count % STATE_EVERY == 0:
                out.write(_state(count))
                out.write(b"\n")
        if count % STATE_EVERY:
            out.write(_state(count))
            out.write(b"\n")
    os.replace(tmp, path)
    return path


def _state(i: int) -> bytes:
    return orjson.dumps({"type": "STATE", "state": {"type": "STREAM", "stream": {
        "stream_descriptor": {"name": STREAM}, "stream_state": {"records": i}}, "id": i}})


def base_file(ctx: Context, count: int) -> str:
    """``count`` new orders (``ord-0`` … ``ord-<count-1>``); the first k of any file equal the k of a smaller one."""
    def records():
        rng = random.Random(7)
        for i in range(count):
            yield order_event(rng, i, i, 1)
    return _write_file(ctx, ctx.path(f"coll-v{DATA_VERSION}-base-{count}.jsonl"), records())


def change_file(ctx: Context, small: int, big: int, count: int) -> str:
    """The change batch: ``count`` full documents, half to ids every collection of ≥ ``small`` documents holds
    (distinct, random), half new ids (≥ ``big``), interleaved at random; events newer than any stored one."""
    def records():
        rng = random.Random(11)
        updates = count // 2
        existing = iter(rng.sample(range(small), updates))
        kinds = [True] * updates + [False] * (count - updates)
        rng.shuffle(kinds)
        fresh = big
        for k, update in enumerate(kinds):
            if update:
                number = next(existing)
            else:
                number, fresh = fresh, fresh + 1
            yield order_event(rng, big + k, number, 2)
    return _write_file(ctx, ctx.path(f"coll-v{DATA_VERSION}-change-{small}-{big}-{count}.jsonl"), records())


def cdc_file(ctx: Context, size: int, count: int, op: str) -> str:
    """A CDC batch as the ``dms`` format emits it: ``_op`` ``op`` (REPSERT: whole rows; UPSERT: the changed fields
    only, merged) for 60 % existing ids and 30 % new ids, ``DELETE`` for 10 % existing ids; ids distinct."""
    def records():
        rng = random.Random(13)
        n_existing = int(count * 0.7)
        existing = iter(rng.sample(range(size), min(size, n_existing)))
        kinds = ["old"] * int(count * 0.6) + ["delete"] * int(count * 0.1)
        kinds += ["new"] * (count - len(kinds))
        rng.shuffle(kinds)
        fresh = size + 10 * count  # above any id of the collection and of the change batch
        for k, kind in enumerate(kinds):
            seq = size + 10 * count + k
            if kind == "new":
                data, emitted = order_event(rng, seq, fresh, 3)
                fresh += 1
                data["_op"] = op
            else:
                number = next(existing, None)
                if number is None:  # tiny sizes: fewer existing ids than asked
                    number, fresh = fresh, fresh + 1
                data, emitted = order_event(rng, seq, number, 3)
                if kind == "delete":
                    data = _kinesis({"order_id": data["order_id"], "_op": "DELETE"}, seq, data["created_at"])
                elif op == "UPSERT":
                    data = _kinesis({"order_id": data["order_id"], "status": data["status"], "amount": data["amount"],
                                     "version": 3, "_op": "UPSERT"}, seq, data["created_at"])
                else:
                    data["_op"] = op
            yield data, emitted
    return _write_file(ctx, ctx.path(f"coll-v{DATA_VERSION}-cdc-{op.lower()}-{size}-{count}.jsonl"), records())


def catalog(dedup: bool) -> dict:
    props = {name: {"type": ["null", "integer" if "sub_sequence" in name else "string"]} for name in KINESIS}
    return {"streams": [{
        "stream": {"name": STREAM, "json_schema": {"type": "object", "properties": props},
                   "supported_sync_modes": ["full_refresh", "incremental"], "source_defined_primary_key": KINESIS_PK},
        "sync_mode": "incremental",
        "destination_sync_mode": "append_dedup" if dedup else "append",
        "primary_key": KINESIS_PK,
        "generation_id": 1, "minimum_generation_id": 0, "sync_id": 42,
    }]}


def _records_in(path: str) -> int:
    with open(path, "rb") as handle:
        return sum(1 for line in handle if line.startswith(b'{"type":"RECORD"'))


# -- measuring a child process tree -----------------------------------------------------------------------------
class Run:
    """One measured child process tree (``bench/_measure.py``) plus, for PostgreSQL, the server's CPU."""

    def __init__(self, label: str, records: int, result: dict, server_cpu: float = 0.0):
        self.label, self.records, self.server_cpu = label, records, server_cpu
        self.wall = result["wall"]
        self.cpu = result["user"] + result["sys"]
        self.rss = result["peak_rss_mb"]
        self.tree_rss = result["peak_tree_rss_mb"]
        self.processes = result["processes"]

    @property
    def us_per_record(self) -> float:
        return (self.cpu + self.server_cpu) / self.records * 1e6

    @property
    def rate(self) -> float:
        return self.records / self.wall

    def figures(self) -> dict:
        return {"label": self.label, "records": self.records, "wall": self.wall, "cpu": self.cpu,
                "server_cpu": self.server_cpu, "rss": self.rss, "tree_rss": self.tree_rss, "processes": self.processes}

    @classmethod
    def from_figures(cls, f: dict) -> "Run":
        run = cls(f["label"], f["records"], {"wall": f["wall"], "user": f["cpu"], "sys": 0.0, "peak_rss_mb": f["rss"],
                                             "peak_tree_rss_mb": f["tree_rss"], "processes": f["processes"]},
                  f.get("server_cpu", 0.0))
        return run


def measure(ctx: Context, label: str, argv: list[str], records: int, stdin_path: str | None = None,
            pg_server=None, env: dict | None = None, timeout: float = 7200) -> tuple[Run, bytes]:
    result_path = ctx.path(f"measure-{os.getpid()}.json")
    out_path, err_path = ctx.path(f"measure-{os.getpid()}.out"), ctx.path(f"measure-{os.getpid()}.err")
    before = _server_cpu(pg_server) if pg_server else 0.0
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.run([sys.executable, "-m", "bench._measure", result_path, "--", *argv], stdin=stdin,
                                  stdout=out, stderr=err, cwd=REPO, env=env, timeout=timeout)
    finally:
        if stdin_path:
            stdin.close()
    server = (_server_cpu(pg_server) - before) if pg_server else 0.0
    with open(err_path, "rb") as handle:
        err_tail = handle.read()[-3000:].decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{label}: the measuring wrapper failed ({proc.returncode}): {err_tail}")
    with open(result_path, encoding="utf-8") as handle:
        result = json.load(handle)
    with open(out_path, "rb") as handle:
        stdout = handle.read()
    if result["returncode"] != 0:
        raise RuntimeError(f"{label} failed ({result['returncode']}): {err_tail}\n{stdout[-2000:].decode('utf-8', 'replace')}")
    run = Run(label, records, result, server)
    extra = f" + server {server:.2f} s" if pg_server else ""
    ctx.log(f"  {label}: {records:,} records, {run.wall:.2f} s, {run.rate:,.0f} rec/s, CPU {run.cpu:.2f} s{extra} "
            f"= {run.us_per_record:.1f} µs/record, peak RSS {run.rss:.0f} MB (tree {run.tree_rss:.0f} MB)")
    return run, stdout


_CLK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int, children: bool) -> float:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # fields[0] is the state (field 3): utime = 14, stime = 15, cutime = 16, cstime = 17
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLK


def _server_cpu(server) -> float:
    """CPU seconds the PostgreSQL server has used: the postmaster, its live children, and (through the
    postmaster's cutime/cstime) every backend it has reaped."""
    from ._measure import _tree

    return sum(_proc_cpu(pid, children=True) for pid in _tree(server.pid))


def write(ctx: Context, label: str, store: dict, dedup: bool, messages: str, records: int | None = None,
          transformation: str | None = None, pg_server=None) -> Run:
    """``destination-collection write`` of ``messages`` into ``store``, measured."""
    collection = {"stream": STREAM}
    if dedup:
        collection["id_field"] = ID_FIELD
    if transformation:
        collection["transformation_sql"] = transformation
    tag = hashlib.sha1(label.encode()).hexdigest()[:8]
    config_path, catalog_path = ctx.path(f"coll-config-{tag}.json"), ctx.path(f"coll-catalog-{int(dedup)}.json")
    with open(config_path, "wb") as handle:
        handle.write(orjson.dumps({"store": store, "collections": [collection]}))
    with open(catalog_path, "wb") as handle:
        handle.write(orjson.dumps(catalog(dedup)))
    records = records if records is not None else _records_in(messages)
    exe = os.path.join(BIN, "destination-collection")
    if not os.path.exists(exe):
        exe = shutil.which("destination-collection") or exe
    run, stdout = measure(ctx, label, [exe, "write", "--config", config_path, "--catalog", catalog_path], records,
                          stdin_path=messages, pg_server=pg_server)
    echoed = sum(1 for line in stdout.splitlines() if line.startswith(b'{"type":"STATE"'))
    expected = -(-records // STATE_EVERY) if records else 1
    if echoed != expected:
        raise RuntimeError(f"{label}: expected {expected} state echoes, got {echoed}")
    return run


# -- DuckDB -------------------------------------------------------------------------------------------------------
def duck_store(path: str) -> dict:
    return {"store_type": "duckdb", "path": path}


def duck_remove(path: str) -> None:
    for suffix in ("", ".wal"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    shutil.rmtree(path + ".tmp", ignore_errors=True)


def duck_copy(source: str, target: str) -> None:
    duck_remove(target)
    for suffix in ("", ".wal"):
        if os.path.exists(source + suffix):
            shutil.copyfile(source + suffix, target + suffix)


def duck_definition(path: str) -> tuple[str, list[tuple[str, str]]]:
    """The collection's table definition (``CREATE TABLE floor(…)``) and its (column, type) list: the table's own
    DDL when the collection is a table, else built from DESCRIBE with ``_id`` as PRIMARY KEY."""
    import duckdb

    with duckdb.connect(path, read_only=True) as con:
        row = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = ?", [STREAM]).fetchone()
        columns = [(r[0], r[1]) for r in con.execute(f'DESCRIBE "{STREAM}"').fetchall()]
    if row:
        sql = row[0]
        return "CREATE TABLE floor" + sql[sql.index("("):].rstrip().rstrip(";"), columns
    body = ", ".join(f'"{n}" {t}{" PRIMARY KEY" if n == "_id" else ""}' for n, t in columns)
    return f"CREATE TABLE floor({body})", columns


def _floor_select(columns: list[tuple[str, str]], path: str, postgres: bool = False) -> str:
    """SELECT the collection's columns from the NDJSON file with DuckDB's own JSON reader (RECORD lines only)."""
    data_type = ", ".join(f'"{k}" {t}' for k, t in INPUT_FIELDS.items())
    source = (f"read_json('{path}', format = 'newline_delimited', columns = {{'type': 'VARCHAR', "
              f"'record': 'STRUCT(stream VARCHAR, emitted_at BIGINT, data STRUCT({data_type}))'}})")
    kinesis = ", ".join(f"'{short}', d.\"{name}\"" for name, short in KINESIS.items())
    doc = ", ".join(f'"{k}" := d."{k}"' for k in PAYLOAD)
    special = {
        "_id": f'd."{ID_FIELD}"',
        "_event_time": 'CAST(d."_kinesis_arrival_time" AS TIMESTAMPTZ)',
        "_meta": f"json_object('kinesis', json_object({kinesis}))",
        "_doc": f"to_json(struct_pack({doc}))",
        "_airbyte_raw_id": "CAST(uuidv7() AS VARCHAR)",
        "_airbyte_extracted_at": "CAST(epoch_ms(emitted_at) AS TIMESTAMPTZ)",
        "_airbyte_meta": """'{"sync_id":42,"changes":[]}'""",
        "_airbyte_generation_id": "1",
        # the writer's operations.document_shape of these documents: the same for every row
        "_doc_shape": "'" + json.dumps([list(PAYLOAD), ["kinesis"]], separators=(",", ":")) + "'",
    }
    exprs = []
    for name, kind in columns:
        if name in special:
            expr = special[name]
        elif name in INPUT_FIELDS:
            json_like = kind.upper() in ("JSON", "JSONB") or INPUT_FIELDS[name].endswith(("[]", ")"))
            expr = f'to_json(d."{name}")' if json_like else f'd."{name}"'
            if not postgres and not json_like:
                expr = f"CAST({expr} AS {kind})"
        else:
            expr = "NULL"
        exprs.append(f'{expr} AS "{name}"')
    return (f"SELECT {', '.join(exprs)} FROM (SELECT record.data AS d, record.emitted_at AS emitted_at "
            f"FROM {source} WHERE type = 'RECORD')")


def duck_floor(ctx: Context, label: str, messages: str, definition: tuple[str, list]) -> Run:
    ddl, columns = definition
    db = ctx.path("coll-floor.duckdb")
    duck_remove(db)
    script = ctx.path("coll-floor.sql")
    with open(script, "w", encoding="utf-8") as handle:
        handle.write(f"SET memory_limit = '256MB';\n{ddl};\nINSERT INTO floor {_floor_select(columns, messages)};\n")
    run, _ = measure(ctx, label, [sys.executable, "-m", "bench._floor", "duckdb", db, script], _records_in(messages))
    return run


# -- PostgreSQL -----------------------------------------------------------------------------------------------------
def _postgres(ctx: Context):
    sys.path.insert(0, REPO)
    from integration_tests.postgres_server import PostgresServer

    return ctx.service("postgres", lambda: PostgresServer().start(), lambda server: server.stop())


class Pg:
    SCHEMA = "bench"

    def __init__(self, ctx: Context):
        self.server = _postgres(ctx)
        with self.server.admin_connect("postgres") as con:
            con.execute(f'ALTER ROLE "{self.server.user}" CREATEDB')

    def store(self, database: str) -> dict:
        return {**self.server.store_config(schema=self.SCHEMA), "database": database}

    def conninfo(self, database: str) -> str:
        s = self.server
        return f"host={s.host} port={s.port} dbname={database} user={s.user} password={s.password}"

    def connect(self, database: str):
        import psycopg

        return psycopg.connect(self.conninfo(database), autocommit=True)

    def create(self, database: str, template: str | None = None) -> None:
        with self.server.admin_connect("postgres") as con:
            con.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            extra = f' TEMPLATE "{template}" STRATEGY FILE_COPY' if template else ""
            con.execute(f'CREATE DATABASE "{database}" OWNER "{self.server.user}"{extra}')

    def version(self) -> str:
        with self.connect(self.server.database) as con:
            return con.execute("SHOW server_version").fetchone()[0]

    def columns(self, database: str) -> list[tuple[str, str]]:
        with self.connect(database) as con:
            return [(r[0], r[1]) for r in con.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND "
                "table_name = %s ORDER BY ordinal_position", [self.SCHEMA, STREAM]).fetchall()]


def pg_floor_rows(ctx: Context, messages: str, columns: list[tuple[str, str]]) -> str:
    """The same rows as CSV in the PostgreSQL collection's column order (prepared by DuckDB, not measured)."""
    import duckdb

    path = messages[:-len(".jsonl")] + f"-{hashlib.sha1(repr(columns).encode()).hexdigest()[:8]}.csv"
    if not os.path.exists(path):
        with duckdb.connect() as con:
            con.execute(f"COPY ({_floor_select(columns, messages, postgres=True)}) TO '{path}.tmp' "
                        "(FORMAT csv, HEADER false)")
        os.replace(path + ".tmp", path)
    return path


def pg_floor(ctx: Context, pg: Pg, label: str, database: str, rows: str, records: int) -> Run:
    with pg.connect(database) as con:
        con.execute(f'DROP TABLE IF EXISTS "{Pg.SCHEMA}".floor')
        con.execute(f'CREATE TABLE "{Pg.SCHEMA}".floor (LIKE "{Pg.SCHEMA}"."{STREAM}" INCLUDING ALL)')
    run, _ = measure(ctx, label, [sys.executable, "-m", "bench._floor", "postgres", pg.conninfo(database),
                                  f'"{Pg.SCHEMA}".floor', rows], records, pg_server=pg.server)
    return run


# -- the cache of built DuckDB collections --------------------------------------------------------------------------
def _code_hash() -> str:
    digest = hashlib.sha256()
    root = os.path.join(REPO, "destination_collection")
    for path in sorted(glob.glob(os.path.join(root, "**", "*"), recursive=True)):
        if "__pycache__" in path or not os.path.isfile(path):
            continue
        digest.update(os.path.relpath(path, root).encode())
        with open(path, "rb") as handle:
            digest.update(handle.read())
    import duckdb

    digest.update(duckdb.__version__.encode())
    return digest.hexdigest()[:12]


class Builds:
    """DuckDB collections built by the destination, kept with their build figures, keyed by the data version and
    the write path's code (a collection an older write path built may not be one the current one can read)."""

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.key = f"v{DATA_VERSION}-{_code_hash()}"
        self.root = ctx.path("collections", self.key)
        for other in glob.glob(ctx.path("collections", "*")):
            if os.path.basename(other) != self.key:
                shutil.rmtree(other, ignore_errors=True)  # collections of another write path: stale, and big
        if getattr(ctx, "rebuild", False):
            shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root, exist_ok=True)

    def path(self, mode: str, size: int) -> str:
        return os.path.join(self.root, f"{mode}-{size}.duckdb")

    def cached(self, mode: str, size: int) -> Run | None:
        figures = self.path(mode, size) + ".json"
        if os.path.exists(figures) and os.path.exists(self.path(mode, size)):
            with open(figures, encoding="utf-8") as handle:
                return Run.from_figures(json.load(handle))
        return None

    def build(self, mode: str, size: int, keep: bool) -> Run:
        db = self.path(mode, size) if keep else self.ctx.path(f"coll-build-{mode}.duckdb")
        duck_remove(db)
        duck_remove(self.path(mode, size))
        messages = base_file(self.ctx, size)
        run = write(self.ctx, f"DuckDB {mode} build {size:,}", duck_store(db), mode == "append_dedup", messages, size)
        if keep:
            with open(db + ".json", "w", encoding="utf-8") as handle:
                json.dump({**run.figures(), "built_at": time.time()}, handle)
        else:
            duck_remove(db)
        return run


# -- the comparison -------------------------------------------------------------------------------------------------
def _label(n: int) -> str:
    return f"{n // 1_000_000} M" if n >= 1_000_000 and n % 1_000_000 == 0 else (
        f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n:,}")


class Plan:
    def __init__(self, ctx: Context):
        self.smoke = ctx.smoke
        if ctx.smoke:
            self.small, self.mid, self.big, self.batch, self.pg_append = 500, 2_000, 2_000, 500, 1_000
        else:
            self.small = min(100_000, ctx.size(100_000, 500))
            self.mid = min(1_000_000, ctx.size(1_000_000, 2_000))
            self.big = max(self.mid, ctx.size(1_000_000, 2_000))
            self.batch = self.small
            self.pg_append = min(1_000_000, ctx.size(200_000, 1_000))
        self.sizes = sorted({self.small, self.mid, self.big})
        self.runs = ctx.runs
        # CDC is an absolute figure, not a ratio: one run of each mix keeps the default run near its budget
        self.cdc_runs = 1 if self.batch >= 100_000 else ctx.runs

    def runs_at(self, size: int) -> int:
        return 1 if size >= 1_000_000 else self.runs


def _cmd(ctx: Context) -> str:
    scale = f" --scale {ctx.scale:g}" if ctx.scale != 1 else ""
    return f"`python -m bench.run --only destination{scale}{' --smoke' if ctx.smoke else ''}`"


def builds(ctx: Context, plan: Plan, section: Section, cache: Builds) -> dict:
    """DuckDB: the floor, append and append_dedup builds at every size (peak RSS too), and the transformation."""
    table = Table(["size", "subject", "runs", "µs CPU/record", "× floor", "records/s", "peak RSS MB", "tree RSS MB",
                   "note"], caption=f"DuckDB builds from an empty database ({_cmd(ctx)}). Median of the runs; one "
                                    "run at ≥ 1 M. CPU = the whole process tree, start-up included.")
    # a tiny build first: the collection's table definition for the floor, the start-up cost, warm caches
    tiny = base_file(ctx, 1_000)
    tiny_db = ctx.path("coll-tiny.duckdb")
    duck_remove(tiny_db)
    startup = write(ctx, "DuckDB append_dedup 1k (start-up)", duck_store(tiny_db), True, tiny, 1_000)
    definition = duck_definition(tiny_db)
    out: dict = {"definition": definition, "startup": startup}
    for size in plan.sizes:
        messages = base_file(ctx, size)
        runs: dict[str, list[Run]] = {}
        notes: dict[str, str] = {}
        cached = {mode: cache.cached(mode, size) for mode in ("append_dedup",)}
        subjects = [("DuckDB floor (read_json → INSERT)", lambda: duck_floor(ctx, f"DuckDB floor {size:,}", messages, definition)),
                    ("append", lambda: cache.build("append", size, keep=False))]
        if cached["append_dedup"] is None:
            subjects.append(("append_dedup (new ids)", lambda: cache.build("append_dedup", size, keep=True)))
        else:
            runs["append_dedup (new ids)"] = [cached["append_dedup"]]
            notes["append_dedup (new ids)"] = "cached build (same write path code)"
        if size == plan.small:
            subjects.append(("append + transformation", lambda: write(
                ctx, f"DuckDB append + transformation {size:,}", duck_store(ctx.path("coll-transform.duckdb")),
                False, messages, size, transformation=TRANSFORMATION)))
        for _ in range(plan.runs_at(size)):
            for name, fn in subjects:
                if name.startswith("append +"):
                    duck_remove(ctx.path("coll-transform.duckdb"))
                runs.setdefault(name, []).append(fn())
        duck_remove(ctx.path("coll-transform.duckdb"))
        floor = median(r.us_per_record for r in runs[subjects[0][0]])
        for name, rs in runs.items():
            us = median(r.us_per_record for r in rs)
            table.add(_label(size), name, len(rs), us, f"{us / floor:.2f}×", median(r.rate for r in rs),
                      median(r.rss for r in rs), median(r.tree_rss for r in rs), notes.get(name, ""))
        out[size] = {name: {"us": median(r.us_per_record for r in rs), "rate": median(r.rate for r in rs), "runs": len(rs),
                            "rss": median(r.rss for r in rs), "tree_rss": median(r.tree_rss for r in rs)}
                     for name, rs in runs.items()}
        out[size]["floor"] = floor
    duck_remove(ctx.path("coll-floor.duckdb"))
    duck_remove(tiny_db)
    table.add("1k", "append_dedup (start-up: tiny file)", 1, startup.cpu * 1e6 / 1_000, "", startup.rate, startup.rss,
              startup.tree_rss, f"{startup.cpu:.2f} s CPU, {startup.wall:.2f} s wall for 1,000 records")
    section.tables.append(table)
    return out


def flatness_duckdb(ctx: Context, plan: Plan, cache: Builds, built: dict) -> dict:
    change = change_file(ctx, plan.small, plan.big, plan.batch)
    scratch = ctx.path("coll-scratch.duckdb")
    runs: dict[int, list[Run]] = {plan.small: [], plan.big: []}
    for _ in range(plan.runs):
        for size in (plan.small, plan.big):
            duck_copy(cache.path("append_dedup", size), scratch)
            runs[size].append(write(ctx, f"DuckDB change batch into {size:,}", duck_store(scratch), True, change,
                                    plan.batch))
    # queries right after the last change batch into the big collection, then on a compacted copy
    queries = query_comparison(ctx, scratch)
    duck_remove(scratch)
    return {"runs": runs, "queries": queries}


def query_comparison(ctx: Context, path: str) -> dict:
    import duckdb

    con = duckdb.connect(path)
    some_id = con.execute(f'SELECT _id FROM "{STREAM}" WHERE "version" = 2 LIMIT 1').fetchone()[0]
    queries = {
        "point lookup by _id": ('SELECT * FROM "{t}" WHERE _id = ?', [some_id]),
        "count(*)": ('SELECT count(*) FROM "{t}"', []),
        "GROUP BY status": ('SELECT status, count(*), sum(amount) FROM "{t}" GROUP BY status ORDER BY status', []),
    }
    repeats = 3 if ctx.smoke else 7

    def timings(table: str) -> dict:
        out = {}
        for name, (sql, params) in queries.items():
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                con.execute(sql.format(t=table), params).fetchall()
                times.append(time.perf_counter() - started)
            out[name] = median(times) * 1000
        return out

    after = timings(STREAM)
    started = time.perf_counter()
    con.execute(f'CREATE TABLE bench_compacted AS SELECT * FROM "{STREAM}"')
    con.execute("CHECKPOINT")
    compaction = time.perf_counter() - started
    compacted = timings("bench_compacted")
    same = con.execute(f'SELECT (SELECT count(*) FROM "{STREAM}") = (SELECT count(*) FROM bench_compacted)').fetchone()[0]
    con.close()
    ctx.log(f"  queries after the change batch {after} vs compacted {compacted} (copy {compaction:.1f} s)")
    return {"after": after, "compacted": compacted, "compaction_secs": compaction, "same": same}


def postgres_part(ctx: Context, plan: Plan, section: Section) -> dict | None:
    try:
        pg = Pg(ctx)
        section.versions["PostgreSQL server"] = pg.version()
    except Exception as exc:  # no PostgreSQL binaries: say so, keep the rest
        section.notes.append(f"PostgreSQL: not measured — {exc}")
        return None
    out: dict = {"builds": {}, "flat": {plan.small: [], plan.big: []}, "append": [], "append_set": [], "copy": []}
    # append vs the COPY floor
    messages = base_file(ctx, plan.pg_append)
    pg.create("bench_append")
    rows = None
    for _ in range(plan.runs_at(plan.pg_append)):
        with pg.connect("bench_append") as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{Pg.SCHEMA}" CASCADE')
        out["append"].append(write(ctx, f"PostgreSQL append {plan.pg_append:,}", pg.store("bench_append"), False,
                                   messages, plan.pg_append, pg_server=pg.server))
        # the set-based path (store.set_based_batches: off by default on PostgreSQL), the same file
        with pg.connect("bench_append") as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{Pg.SCHEMA}" CASCADE')
        out["append_set"].append(write(ctx, f"PostgreSQL append (set-based) {plan.pg_append:,}",
                                       {**pg.store("bench_append"), "set_based_batches": True}, False, messages,
                                       plan.pg_append, pg_server=pg.server))
        if rows is None:
            rows = pg_floor_rows(ctx, messages, pg.columns("bench_append"))
        out["copy"].append(pg_floor(ctx, pg, f"PostgreSQL COPY floor {plan.pg_append:,}", "bench_append", rows,
                                    plan.pg_append))
    # the collections for flatness, built by the destination
    for size in (plan.small, plan.big):
        database = f"bench_built_{size}"
        pg.create(database)
        out["builds"][size] = write(ctx, f"PostgreSQL append_dedup build {size:,}", pg.store(database), True,
                                    base_file(ctx, size), size, pg_server=pg.server)
        with pg.connect(database) as con:
            con.execute(f'VACUUM ANALYZE "{Pg.SCHEMA}"."{STREAM}"')
    change = change_file(ctx, plan.small, plan.big, plan.batch)
    for _ in range(plan.runs):
        for size in (plan.small, plan.big):
            pg.create("bench_scratch", template=f"bench_built_{size}")
            out["flat"][size].append(write(ctx, f"PostgreSQL change batch into {size:,}", pg.store("bench_scratch"),
                                           True, change, plan.batch, pg_server=pg.server))
    for database in ("bench_scratch", "bench_append", *(f"bench_built_{s}" for s in (plan.small, plan.big))):
        with pg.server.admin_connect("postgres") as con:
            con.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return out


def cdc(ctx: Context, plan: Plan, cache: Builds) -> dict:
    size = plan.mid
    count = plan.batch
    scratch = ctx.path("coll-scratch.duckdb")
    out: dict[str, list[Run]] = {"REPSERT": [], "UPSERT": []}
    files = {op: cdc_file(ctx, size, count, op) for op in out}
    for _ in range(plan.cdc_runs):
        for op in out:
            duck_copy(cache.path("append_dedup", size), scratch)
            out[op].append(write(ctx, f"DuckDB CDC {op} into {size:,}", duck_store(scratch), True, files[op], count))
    duck_remove(scratch)
    return out


# -- PyAirbyte -------------------------------------------------------------------------------------------------------
PYAIRBYTE_SPEC = "airbyte==0.71.*"


def pyairbyte_python(ctx: Context) -> tuple[str | None, str]:
    """The PyAirbyte venv's python (scripts/bootstrap.sh makes it; created here when missing, not in smoke mode), or
    (None, why not)."""
    venv = os.path.join(REPO, ".cache", "pyairbyte-venv")
    python = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".installed")
    if os.path.exists(marker):
        return python, ""
    if ctx.smoke:
        return None, f"smoke mode does not install PyAirbyte (a normal run creates {os.path.relpath(venv, REPO)})"
    ctx.log(f"  installing {PYAIRBYTE_SPEC} into {venv} (once)")
    started = time.monotonic()
    try:
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True, capture_output=True, timeout=120)
        left = 600 - (time.monotonic() - started)
        subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PYAIRBYTE_SPEC],
                       check=True, capture_output=True, timeout=left)
    except subprocess.TimeoutExpired:
        return None, "installing PyAirbyte took more than 10 min"
    except (OSError, subprocess.CalledProcessError) as exc:
        tail = (getattr(exc, "stderr", b"") or b"").decode("utf-8", "replace").strip().splitlines()[-1:]
        return None, f"installing PyAirbyte failed: {' '.join(tail) or exc}"
    with open(marker, "w", encoding="utf-8") as handle:
        handle.write(PYAIRBYTE_SPEC + "\n")
    return python, ""


def pyairbyte(ctx: Context, plan: Plan) -> tuple[list[Run], str]:
    python, why = pyairbyte_python(ctx)
    if python is None:
        return [], why
    messages = base_file(ctx, plan.small)
    stub = ctx.path("replay-source")
    with open(stub, "w", encoding="utf-8") as handle:
        handle.write(f"#!/bin/sh\nexec {python} {os.path.join(REPO, 'bench', '_replay_source.py')} \"$@\"\n")
    os.chmod(stub, 0o755)
    env = {**os.environ, "DO_NOT_TRACK": "1", "AIRBYTE_OFFLINE_MODE": "1", "AIRBYTE_NO_UI": "1", "NO_COLOR": "1",
           "AIRBYTE_CACHE_ROOT": ctx.path("pyairbyte-cache"),
           "AIRBYTE_LOGGING_ROOT": ctx.path("pyairbyte-logs")}
    env.pop("VIRTUAL_ENV", None)
    runs = []
    try:
        for _ in range(plan.runs):
            db = ctx.path("pyairbyte.duckdb")
            duck_remove(db)
            shutil.rmtree(ctx.path("pyairbyte-cache"), ignore_errors=True)
            run, stdout = measure(ctx, f"PyAirbyte DuckDB cache {plan.small:,}", [
                python, os.path.join(REPO, "bench", "_pyairbyte_run.py"), stub, messages, db], plan.small, env=env,
                timeout=1200)
            got = stdout.strip().splitlines()[-1:] if stdout.strip() else []
            if got != [str(plan.small).encode()]:
                raise RuntimeError(f"PyAirbyte cached {got} records, expected {plan.small}")
            runs.append(run)
    except Exception as exc:
        return [], f"PyAirbyte failed: {' '.join(str(exc).split())[-300:]}"
    finally:
        duck_remove(ctx.path("pyairbyte.duckdb"))
    return runs, ""


# -- the section ------------------------------------------------------------------------------------------------------
def _yes(ok: bool, ctx: Context) -> bool | None:
    return None if ctx.smoke else ok


def run(ctx: Context) -> Section:
    section = Section(TITLE, intro=__doc__.split("\n", 1)[1].strip())
    plan = Plan(ctx)
    cache = Builds(ctx)
    cmd = _cmd(ctx)
    ctx.log(f"- sizes {plan.sizes}, change batch {plan.batch:,}, PostgreSQL append {plan.pg_append:,}; "
            f"collections cache {cache.root}")
    t0 = time.perf_counter()
    built = builds(ctx, plan, section, cache)
    ctx.log(f"  builds: {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    flat = flatness_duckdb(ctx, plan, cache, built)
    cdc_runs = cdc(ctx, plan, cache)
    ctx.log(f"  DuckDB flatness + CDC: {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    try:
        pg = postgres_part(ctx, plan, section)
    except Exception as exc:  # keep the DuckDB figures; smoke mode (CI) must still fail loudly
        if ctx.smoke:
            raise
        import traceback

        ctx.log(traceback.format_exc())
        section.notes.append(f"PostgreSQL: **failed** — {' '.join(str(exc).split())[:300]}")
        pg = None
    ctx.log(f"  PostgreSQL: {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    pa_runs, pa_why = pyairbyte(ctx, plan)
    ctx.log(f"  PyAirbyte: {time.perf_counter() - t0:.0f} s")

    small, big, mid = plan.small, plan.big, plan.mid
    dedup, append, tr = "append_dedup (new ids)", "append", "append + transformation"
    # flatness table
    flat_table = Table(["store", "change batch into", "runs", "records/s", "µs CPU/record", "peak RSS MB",
                        "records/s big / small", "CPU/record small / big"],
                       caption=f"Upsert flatness: the same {plan.batch:,}-record change batch (half updates of "
                               f"existing ids, half new ids; `append_dedup`, `id_field: {ID_FIELD}`) into a fresh copy "
                               f"of a {_label(small)} and a {_label(big)} collection the destination built ({cmd}). "
                               "records/s = records / wall time of the whole `write` process (the target); the CPU ratio (client + "
                               "server CPU) is the steadier figure on a shared machine, where wall time moves ±30 %.")
    ratios = {}
    stores = [("DuckDB", flat["runs"])] + ([("PostgreSQL", pg["flat"])] if pg else [])
    for store, by_size in stores:
        rate = {s: median(r.rate for r in by_size[s]) for s in (small, big)}
        ratios[store] = rate[big] / rate[small]
        cpu = {s: median(r.us_per_record for r in by_size[s]) for s in (small, big)}
        for s in (small, big):
            rs = by_size[s]
            flat_table.add(store, _label(s), len(rs), rate[s], cpu[s], median(r.rss for r in rs),
                           f"{ratios[store]:.2f}" if s == big else "", f"{cpu[small] / cpu[big]:.2f}" if s == big else "")
    section.tables.append(flat_table)
    # CDC table
    cdc_table = Table(["_op mix", "into", "records", "runs", "records/s", "µs CPU/record", "peak RSS MB"],
                      caption=f"CDC into a fresh copy of the {_label(mid)}-document DuckDB collection ({cmd}): "
                              "60 % to existing ids, 30 % new ids, 10 % DELETE of existing ids.")
    cdc_rate = {}
    for op, rs in cdc_runs.items():
        cdc_rate[op] = median(r.rate for r in rs)
        mix = "REPSERT (whole rows) + DELETE" if op == "REPSERT" else "UPSERT (changed fields, merged) + DELETE"
        cdc_table.add(mix, _label(mid), plan.batch, len(rs), cdc_rate[op], median(r.us_per_record for r in rs),
                      median(r.rss for r in rs))
    section.tables.append(cdc_table)
    # PostgreSQL table
    if pg:
        pg_table = Table(["subject", "records", "runs", "records/s", "× COPY", "client CPU µs/record",
                          "server CPU µs/record", "CPU × COPY", "peak RSS MB"],
                         caption=f"PostgreSQL ({cmd}): `append` vs `COPY` of the same rows into the same table "
                                 "definition, and the `append_dedup` builds of the flatness collections. CPU is "
                                 "split between the client process tree and the server (postmaster + backends).")
        copy_rate = median(r.rate for r in pg["copy"])
        copy_us = median(r.us_per_record for r in pg["copy"])
        pg_rate = median(r.rate for r in pg["append"])
        for name, rs in (("COPY floor", pg["copy"]), ("destination append", pg["append"]),
                         ("destination append, set-based batches (`set_based_batches: true`)", pg["append_set"])):
            pg_table.add(name, plan.pg_append, len(rs), median(r.rate for r in rs),
                         f"{median(r.rate for r in rs) / copy_rate:.2f}×", median(r.cpu / r.records * 1e6 for r in rs),
                         median(r.server_cpu / r.records * 1e6 for r in rs),
                         f"{median(r.us_per_record for r in rs) / copy_us:.2f}×", median(r.rss for r in rs))
        for size, r in pg["builds"].items():
            pg_table.add("destination append_dedup build", size, 1, r.rate, "", r.cpu / r.records * 1e6,
                         r.server_cpu / r.records * 1e6, "", r.rss)
        section.tables.append(pg_table)
    # queries
    q = flat["queries"]
    q_table = Table(["query", "after the change batch (ms)", "fully compacted copy (ms)", "ratio"],
                    caption=f"Queries on the {_label(big)}-document DuckDB collection right after the change batch "
                            "(no maintenance in between) vs a compacted copy in the same database; median of "
                            f"{3 if ctx.smoke else 7} runs each, in-process DuckDB ({cmd}). The copy (CTAS + "
                            f"CHECKPOINT) took {q['compaction_secs']:.1f} s.")
    q_ratio = 0.0
    for name in q["after"]:
        ratio = q["after"][name] / q["compacted"][name]
        q_ratio = max(q_ratio, ratio)
        q_table.add(name, q["after"][name], q["compacted"][name], f"{ratio:.2f}×")
    section.tables.append(q_table)
    # PyAirbyte
    pa_table = Table(["subject", "records", "runs", "records/s", "µs CPU/record", "peak RSS MB", "tree RSS MB"],
                     caption=f"PyAirbyte {PYAIRBYTE_SPEC.split('==')[1]} (its own venv: duckdb 1.4.3) reading a stub "
                             "source that replays the same file into its DuckDB cache, vs `destination-collection "
                             f"write` of the same file ({cmd}). CPU and tree RSS include the source process.")
    ours = built[small]
    pa_table.add("destination-collection append", small, ours[append]["runs"], ours[append]["rate"], ours[append]["us"],
                 ours[append]["rss"], ours[append]["tree_rss"])
    pa_table.add("destination-collection append_dedup", small, ours[dedup]["runs"], ours[dedup]["rate"], ours[dedup]["us"],
                 ours[dedup]["rss"], ours[dedup]["tree_rss"])
    if pa_runs:
        pa_table.add("PyAirbyte DuckDB cache", small, len(pa_runs), median(r.rate for r in pa_runs),
                     median(r.us_per_record for r in pa_runs), median(r.rss for r in pa_runs),
                     median(r.tree_rss for r in pa_runs))
    else:
        pa_table.add("PyAirbyte DuckDB cache", small, 0, f"not measured: {pa_why}", "", "", "")
    section.tables.append(pa_table)

    # targets
    t = section.targets
    at = built[mid]
    for name in (append, dedup):
        x = at[name]["us"] / at["floor"]
        t.append(Target(f"DuckDB build {_label(mid)} {name.split(' ')[0]}: CPU/record vs the DuckDB floor",
                        f"{x:.2f}× ({at[name]['us']:.1f} vs {at['floor']:.1f} µs)", "≤ 1.5×", _yes(x <= 1.5, ctx)))
    for store, ratio in ratios.items():
        t.append(Target(f"upsert flatness {store}: records/s into {_label(big)} / into {_label(small)}",
                        f"{ratio:.2f}", "≥ 0.8", _yes(ratio >= 0.8, ctx)))
    for op, rate in cdc_rate.items():
        t.append(Target(f"CDC at {_label(mid)}, {op} + DELETE (DuckDB)", f"{rate:,.0f} rec/s", "≥ 30,000 rec/s",
                        _yes(rate >= 30_000, ctx)))
    if pg:
        x = pg_rate / copy_rate
        t.append(Target(f"PostgreSQL append {_label(plan.pg_append)} vs COPY (records/s)", f"{x:.2f}×", "≥ 0.8×",
                        _yes(x >= 0.8, ctx)))
    for name in (append, dedup):
        peaks = {s: built[s][name]["rss"] for s in plan.sizes}
        worst = max(peaks.values())
        t.append(Target(f"peak RSS {name.split(' ')[0]}, sizes {', '.join(_label(s) for s in plan.sizes)}",
                        f"max {worst:.0f} MB", "≤ 350 MB", _yes(worst <= 350, ctx)))
        x = peaks[big] / peaks[small]
        t.append(Target(f"peak RSS {name.split(' ')[0]} {_label(big)} / {_label(small)}", f"{x:.2f}×", "≤ 1.2×",
                        _yes(x <= 1.2, ctx)))
    x = built[small][tr]["us"] / built[small][append]["us"]
    t.append(Target(f"ingest transformation, CPU/record vs without ({_label(small)} append)", f"{x:.2f}×", "≤ 2×",
                    _yes(x <= 2, ctx)))
    t.append(Target("queries right after the change batch vs compacted (worst of the three)", f"{q_ratio:.2f}×",
                    "≤ 1.5×", _yes(q_ratio <= 1.5 and q["same"], ctx)))
    if pa_runs:
        pa = median(r.rate for r in pa_runs)
        t.append(Target(f"PyAirbyte DuckDB cache ({_label(small)}), side by side", f"{pa:,.0f} rec/s vs ours "
                        f"{ours[append]['rate']:,.0f} (append)", "shown", None))
    else:
        t.append(Target("PyAirbyte DuckDB cache, side by side", f"not measured: {pa_why}", "shown", None))
    rate = built[mid][append]["rate"]
    t.append(Target(f"DuckDB append absolute ({_label(mid)})", f"{rate:,.0f} rec/s", "≥ 150,000 rec/s",
                    _yes(rate >= 150_000, ctx)))
    section.notes.append(f"Exact commands: every figure of this section comes from {cmd}; sizes: {', '.join(_label(s) for s in plan.sizes)} "
                         f"documents (`--scale 10`: 100k, 1 M, 10 M), change and CDC batches {plan.batch:,} records, "
                         f"PostgreSQL append {plan.pg_append:,} (`--scale 5`: 1 M).")
    section.notes.append(f"Built DuckDB collections are cached in `{os.path.relpath(cache.root, REPO)}` (key = data "
                         "version + hash of `destination_collection/` + DuckDB version); a cached build's figures are "
                         "those of the run that built it. `--rebuild` builds again.")
    if not q["same"]:
        section.notes.append("**The compacted copy does not hold as many documents as the collection.**")
    return section
