"""Destination throughput and memory.

* **Throughput**: a pre-generated message file (Kinesis-shaped records: 14 payload fields of mixed types + the 6
  ``_kinesis_*`` fields = 20 fields; a STREAM state every 10,000 records, as the source checkpoints by default)
  written by ``write_messages`` (in-process, the path the runner uses) into DuckDB ``append``, DuckDB
  ``append_dedup`` (30 % of the records repeat an earlier ``_id``) and PostgreSQL ``append``; side by side with a
  **floor pipeline** written here: orjson parse of each line + the same rows (``_id``, ``_event_time``, ``_meta``,
  ``_doc``, Airbyte columns, typed columns) built with the least Python possible + one bulk insert into a table
  with the destination's own DDL (last record per ``_id`` for dedup). Ratio = destination / floor records/s.
* **Memory**: ``destination-collection write`` as a child process on a small and a 10× larger file (DuckDB, append
  and dedup; 25k and 250k by default, the issue's 100k and 1M with ``--scale 4``); peak RSS of that process
  (VmHWM, polled).
"""
from __future__ import annotations

import datetime as dt
import gc
import logging
import os
import random
import shutil
import sys

import orjson

from .common import Context, Section, Table, Target, interleaved, median, run_child, timed

TITLE = "Destination throughput and memory"
ORDER = 30
STREAM = "events"
STATE_EVERY = 10_000
DATA_VERSION = 1
KINESIS_PK = [["_kinesis_shard_id"], ["_kinesis_sequence_number"], ["_kinesis_sub_sequence_number"]]
KINESIS = {
    "_kinesis_stream": "stream",
    "_kinesis_shard_id": "shard_id",
    "_kinesis_sequence_number": "sequence_number",
    "_kinesis_sub_sequence_number": "sub_sequence_number",
    "_kinesis_partition_key": "partition_key",
    "_kinesis_arrival_time": "arrival_time",
}

# -- data -------------------------------------------------------------------------------------------------------
_STATUSES = ["new", "paid", "shipped", "delivered", "cancelled", "refunded"]
_CITIES = ["Berlin", "Lisboa", "São Paulo", "Zürich", "Kraków", "Tokyo 東京", "New York", "Nairobi"]
_TAGS = ["gift", "express", "fragile", "bulk", "promo", "vip", "eco"]
_BASE = dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc)


def _records(count: int, dedup: bool, seed: int = 7):
    """Yield (data, emitted_at_ms) deterministically; the first k of n equal the k of a smaller file."""
    rng = random.Random(seed)
    ids: list[str] = []
    base_ms = int(_BASE.timestamp() * 1000)
    for i in range(count):
        shard = i % 4
        arrival_ms = base_ms + i * 3
        arrival = dt.datetime.fromtimestamp(arrival_ms / 1000, dt.timezone.utc)
        r = rng.random()
        order_id = f"ord-{i:09d}"
        data = {
            "user_id": rng.randrange(1, 5_000_000),
            "order_id": order_id,
            "amount": round(rng.random() * 1000, 2),
            "quantity": rng.randrange(1, 20),
            "currency": "EUR" if r < 0.5 else "USD",
            "is_gift": r < 0.1,
            "status": _STATUSES[i % len(_STATUSES)],
            "created_at": f"{arrival:%Y-%m-%dT%H:%M:%S}.{arrival.microsecond // 1000:03d}Z",
            "tags": rng.sample(_TAGS, rng.randrange(0, 3)),
            "address": {"city": _CITIES[i % len(_CITIES)], "zip": f"{rng.randrange(10000, 99999)}"},
            "discount": None if r < 0.6 else round(rng.random() * 0.3, 3),
            "note": "" if r < 0.7 else "Grüße — please ring twice 🔔",
            "score": rng.randrange(-2**62, 2**62),
            "version": 1 + i // 100_000,
        }
        if dedup:
            if ids and rng.random() < 0.3:
                # half of the repeats hit a recent id (same batch), half any earlier one (a stored document)
                j = len(ids) - 1 - rng.randrange(min(len(ids), 5_000)) if rng.random() < 0.5 else rng.randrange(len(ids))
                data["_id"] = ids[j]
            else:
                data["_id"] = order_id
                ids.append(order_id)
            del data["order_id"]
            data["order_ref"] = order_id
        data["_kinesis_stream"] = "orders"
        data["_kinesis_shard_id"] = f"shardId-{shard:012d}"
        data["_kinesis_sequence_number"] = f"4959033827149025660855969253836157109592157598913658{i:010d}"
        data["_kinesis_sub_sequence_number"] = 0
        data["_kinesis_partition_key"] = f"user-{data['user_id']}"
        data["_kinesis_arrival_time"] = data["created_at"]
        yield data, arrival_ms + 5


def _state(i: int) -> bytes:
    return orjson.dumps({"type": "STATE", "state": {"type": "STREAM", "stream": {
        "stream_descriptor": {"name": STREAM}, "stream_state": {"records": i}}, "id": i}})


def messages_file(ctx: Context, count: int, dedup: bool) -> str:
    """The cached message file (JSON lines: RECORDs, a STATE every 10k records and at the end)."""
    path = ctx.path(f"dest-v{DATA_VERSION}-{'dedup' if dedup else 'append'}-{count}.jsonl")
    if os.path.exists(path):
        return path
    ctx.log(f"  generating {path}")
    tmp = path + ".tmp"
    with open(tmp, "wb") as out:
        for i, (data, emitted) in enumerate(_records(count, dedup), 1):
            out.write(orjson.dumps({"type": "RECORD", "record": {"stream": STREAM, "data": data, "emitted_at": emitted}}))
            out.write(b"\n")
            if i % STATE_EVERY == 0 or i == count:
                out.write(_state(i))
                out.write(b"\n")
    os.replace(tmp, path)
    return path


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


# -- stores -------------------------------------------------------------------------------------------------------
def _postgres(ctx: Context):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from integration_tests.postgres_server import PostgresServer

    return ctx.service("postgres", lambda: PostgresServer().start(), lambda server: server.stop())


class DuckTarget:
    label = "DuckDB"

    def __init__(self, ctx: Context, name: str):
        self.path = ctx.path(f"{name}.duckdb")

    def reset(self) -> None:
        for suffix in ("", ".wal"):
            if os.path.exists(self.path + suffix):
                os.remove(self.path + suffix)

    def config(self) -> dict:
        return {"store": {"store_type": "duckdb", "path": self.path}}

    def count(self, table: str) -> int:
        import duckdb

        with duckdb.connect(self.path, read_only=True) as con:
            return con.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


class PostgresTarget:
    label = "PostgreSQL"

    def __init__(self, ctx: Context, name: str):
        self.server = _postgres(ctx)
        self.schema = f"bench_{name}"

    def connect(self):
        import psycopg

        s = self.server
        return psycopg.connect(host=s.host, port=s.port, dbname=s.database, user=s.user, password=s.password,
                               autocommit=True)

    def reset(self) -> None:
        with self.connect() as con:
            con.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')

    def config(self) -> dict:
        return {"store": self.server.store_config(schema=self.schema)}

    def count(self, table: str) -> int:
        with self.connect() as con:
            return con.execute(f'SELECT count(*) FROM "{self.schema}"."{table}"').fetchone()[0]

    def version(self) -> str:
        with self.connect() as con:
            return con.execute("SHOW server_version").fetchone()[0]


# -- subjects -----------------------------------------------------------------------------------------------------
def run_destination(target, path: str, dedup: bool, extra: dict | None = None) -> float:
    """Seconds for write_messages over the file into a fresh store."""
    from destination_collection import write_messages

    logging.getLogger("airbyte").setLevel(logging.WARNING)  # the in-process run logs like the CLI; keep it quiet
    target.reset()
    config = {**target.config(), **(extra or {})}
    gc.collect()

    def go():
        echoed = 0
        with open(path, "rb") as handle:
            for _ in write_messages(config, catalog(dedup), handle):
                echoed += 1
        return echoed

    secs, echoed = timed(go)
    assert echoed > 0, "no state echoed"
    return secs


def _floor_rows(path: str, dedup: bool):
    """orjson parse + the same row values, with the least Python: one pass, appends to column lists."""
    loads, dumps = orjson.loads, orjson.dumps
    kinesis_items = list(KINESIS.items())
    rows: dict = {} if dedup else None
    cols = {k: [] for k in ("_id", "_event_time", "_meta", "_doc", "_airbyte_raw_id", "_airbyte_extracted_at")}
    fields = ["user_id", "order_ref" if dedup else "order_id", "amount", "quantity", "currency", "is_gift", "status",
              "created_at", "tags", "address", "discount", "note", "score", "version"]
    typed = {f: [] for f in fields}
    from destination_collection.documents import new_uuids  # the same time-ordered ids the destination writes

    pool: list[str] = []

    def raw_ids():
        if not pool:
            pool.extend(reversed(new_uuids(4096)))
        return pool.pop()
    with open(path, "rb") as handle:
        for line in handle:
            message = loads(line)
            if message["type"] != "RECORD":
                continue
            record = message["record"]
            data = record["data"]
            kinesis = {short: data.pop(name) for name, short in kinesis_items}
            doc_id = data.pop("_id") if dedup else None
            if dedup:
                rows[doc_id] = (data, kinesis, record["emitted_at"])
                continue
            cols["_id"].append(raw_ids())
            cols["_event_time"].append(kinesis["arrival_time"])
            cols["_meta"].append(dumps({"kinesis": kinesis}).decode())
            cols["_doc"].append(dumps(data).decode())
            cols["_airbyte_raw_id"].append(raw_ids())
            cols["_airbyte_extracted_at"].append(record["emitted_at"])
            for f in fields:
                typed[f].append(data.get(f))
    if dedup:
        for doc_id, (data, kinesis, emitted) in rows.items():
            cols["_id"].append(doc_id)
            cols["_event_time"].append(kinesis["arrival_time"])
            cols["_meta"].append(dumps({"kinesis": kinesis}).decode())
            cols["_doc"].append(dumps(data).decode())
            cols["_airbyte_raw_id"].append(raw_ids())
            cols["_airbyte_extracted_at"].append(emitted)
            for f in fields:
                typed[f].append(data.get(f))
    return cols, typed


def _json_col(values):
    return [None if v is None else orjson.dumps(v).decode() for v in values]


def run_floor_duckdb(target: DuckTarget, path: str, dedup: bool, ddl: str, columns: list[str]) -> float:
    import duckdb
    import pyarrow as pa

    target.reset()
    gc.collect()

    def go():
        cols, typed = _floor_rows(path, dedup)
        n = len(cols["_id"])
        arrays = {
            "_id": pa.array(cols["_id"], pa.string()),
            "_event_time": pa.array(cols["_event_time"], pa.string()),
            "_meta": pa.array(cols["_meta"], pa.string()),
            "_doc": pa.array(cols["_doc"], pa.string()),
            "_airbyte_raw_id": pa.array(cols["_airbyte_raw_id"], pa.string()),
            "_airbyte_extracted_at": pa.array(cols["_airbyte_extracted_at"], pa.int64()),
            "_airbyte_meta": pa.array(['{"sync_id":42,"changes":[]}'] * n, pa.string()),
            "_airbyte_generation_id": pa.array([1] * n, pa.int64()),
        }
        for f, values in typed.items():
            arrays[f] = pa.array(_json_col(values) if f in ("tags", "address") else values)
        table = pa.table(arrays)
        con = duckdb.connect(target.path)
        con.execute(ddl)
        con.register("staged", table)
        select = []
        for name in columns:
            if name == "_event_time":
                select.append("CAST(_event_time AS TIMESTAMPTZ)")
            elif name == "_airbyte_extracted_at":
                select.append("make_timestamptz(_airbyte_extracted_at * 1000)")
            else:
                select.append(f'"{name}"')
        con.execute(f'INSERT INTO floor SELECT {", ".join(select)} FROM staged')
        con.close()
        return n

    secs, _ = timed(go)
    return secs


def run_floor_postgres(target: PostgresTarget, path: str, dedup: bool, table: str, columns: list[str]) -> float:
    gc.collect()

    def go():
        cols, typed = _floor_rows(path, dedup)
        n = len(cols["_id"])
        epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
        with target.connect() as con:
            con.execute(f'DROP TABLE IF EXISTS "{target.schema}".floor')
            con.execute(f'CREATE TABLE "{target.schema}".floor (LIKE "{target.schema}"."{table}" INCLUDING ALL)')
            meta = '{"sync_id":42,"changes":[]}'
            by_name = {"_id": cols["_id"], "_event_time": cols["_event_time"], "_meta": cols["_meta"],
                       "_doc": cols["_doc"], "_airbyte_raw_id": cols["_airbyte_raw_id"],
                       "_airbyte_extracted_at": [epoch + dt.timedelta(milliseconds=v)
                                                 for v in cols["_airbyte_extracted_at"]],
                       "_airbyte_meta": [meta] * n, "_airbyte_generation_id": [1] * n}
            for f, values in typed.items():
                by_name[f] = _json_col(values) if f in ("tags", "address") else values
            series = [by_name[c] for c in columns]
            names = ", ".join(f'"{c}"' for c in columns)
            with con.transaction():
                with con.cursor() as cur:
                    with cur.copy(f'COPY "{target.schema}".floor ({names}) FROM STDIN') as copy:
                        for row in zip(*series):
                            copy.write_row(row)
        return n

    secs, _ = timed(go)
    return secs


def _duck_ddl(target: DuckTarget, table: str) -> tuple[str, list[str]]:
    import duckdb

    with duckdb.connect(target.path, read_only=True) as con:
        sql = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = ?", [table]).fetchone()[0]
        columns = [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            [table]).fetchall()]
    ddl = "CREATE TABLE floor" + sql[sql.index("("):]
    return ddl, columns


def _pg_columns(target: PostgresTarget, table: str) -> list[str]:
    with target.connect() as con:
        return [r[0] for r in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position", [target.schema, table]).fetchall()]


# -- the comparison -----------------------------------------------------------------------------------------------
def throughput(ctx: Context, section: Section) -> None:
    # 250k records per throughput run (3 stores x (destination + floor) x runs must fit the 10-minute budget at
    # today's speed); --scale 4 measures the full 1M file
    # Default sizes keep the whole `python -m bench.run` within 10 minutes on 2 cores at today's destination speed;
    # `--scale 4` gives the 1M-record file (and 400k/4M for memory), which takes far longer.
    n = ctx.size(250_000 // 4, 2_000)
    n_pg = ctx.size(250_000 // 4, 2_000)
    table = Table(["store / mode", "records", "documents", "destination rec/s", "floor rec/s", "ratio", "target"],
                  caption="Records per second, median of the runs (wall time of the whole write, from the file to "
                          "the last commit).")
    cases = [("DuckDB append", DuckTarget, n, False, 0.6), ("DuckDB append_dedup", DuckTarget, n, True, 0.4),
             ("PostgreSQL append", PostgresTarget, n_pg, False, 0.6)]
    for label, kind, count, dedup, goal in cases:
        ctx.log(f"- {label}, {count:,} records")
        path = messages_file(ctx, count, dedup)
        if kind is PostgresTarget:
            try:
                target = kind(ctx, f"dest_{'dedup' if dedup else 'append'}")
                section.versions["PostgreSQL server"] = target.version()
            except Exception as exc:  # no PostgreSQL binaries: say so, keep the rest
                section.notes.append(f"{label}: skipped — {exc}")
                continue
            floor_target = target
        else:
            target = kind(ctx, f"dest-{'dedup' if dedup else 'append'}")
            floor_target = kind(ctx, f"floor-{'dedup' if dedup else 'append'}")
        # a small run of the same data gives the table's DDL for the floor (and warms imports and caches)
        run_destination(target, messages_file(ctx, ctx.size(20_000, 500), dedup), dedup)
        if kind is DuckTarget:
            ddl, columns = _duck_ddl(target, STREAM)
            floor = lambda: run_floor_duckdb(floor_target, path, dedup, ddl, columns)
        else:
            columns = _pg_columns(target, STREAM)
            floor = lambda: run_floor_postgres(floor_target, path, dedup, STREAM, columns)
        results = interleaved(ctx, [("destination", lambda: run_destination(target, path, dedup)), ("floor", floor)])
        documents = target.count(STREAM)
        dest_rate = count / median(results["destination"])
        floor_rate = count / median(results["floor"])
        ratio = dest_rate / floor_rate
        table.add(label, count, documents, dest_rate, floor_rate, f"{ratio:.2f}×", f"≥ {goal}×")
        measured = not ctx.smoke
        section.targets.append(Target(f"{label} vs floor", f"{ratio:.2f}×", f"≥ {goal}×", (ratio >= goal) if measured else None))
        if label == "DuckDB append":
            section.targets.append(Target("DuckDB append absolute", f"{dest_rate:,.0f} rec/s", "≥ 150,000 rec/s",
                                          (dest_rate >= 150_000) if measured else None))
    section.tables.append(table)


def memory(ctx: Context, section: Section) -> None:
    small, large = ctx.size(100_000 // 4, 500), ctx.size(1_000_000 // 4, 2_000)
    exe = os.path.join(os.path.dirname(sys.executable), "destination-collection")
    if not os.path.exists(exe):
        exe = shutil.which("destination-collection") or exe
    table = Table(["mode", "records", "peak RSS (MB)", "wall (s)", "rec/s"],
                  caption="`destination-collection write` as a child process (stdin from the file, DuckDB, default "
                          f"batch_size), peak RSS of that process (its VmHWM); median of {ctx.runs} run(s) per size "
                          "(one run at 1M or more).")
    peaks: dict[tuple[bool, int], float] = {}
    for dedup in (False, True):
        for count in (small, large):
            path = messages_file(ctx, count, dedup)
            target = DuckTarget(ctx, f"mem-{'dedup' if dedup else 'append'}")
            config_path, catalog_path = ctx.path("mem-config.json"), ctx.path(f"mem-catalog-{dedup}.json")
            with open(config_path, "wb") as handle:
                handle.write(orjson.dumps(target.config()))
            with open(catalog_path, "wb") as handle:
                handle.write(orjson.dumps(catalog(dedup)))
            rss, walls = [], []
            for _ in range(1 if count >= 1_000_000 else ctx.runs):
                target.reset()
                result = run_child([exe, "write", "--config", config_path, "--catalog", catalog_path], stdin_path=path)
                if result.returncode != 0:
                    raise RuntimeError(f"destination-collection write failed ({result.returncode}): {result.stderr_tail}")
                echoed = sum(1 for line in result.stdout.splitlines() if line.startswith(b'{"type":"STATE"'))
                assert echoed == -(-count // STATE_EVERY), f"expected a state echo per {STATE_EVERY} records, got {echoed}"
                rss.append(result.peak_rss_mb)
                walls.append(result.wall_secs)
                ctx.log(f"  {'dedup' if dedup else 'append'} {count:,}: {result.peak_rss_mb:.0f} MB, {result.wall_secs:.1f} s")
            peaks[(dedup, count)] = median(rss)
            table.add("append_dedup" if dedup else "append", count, median(rss), median(walls), count / median(walls))
    section.tables.append(table)
    for dedup in (False, True):
        mode = "append_dedup" if dedup else "append"
        lo, hi = peaks[(dedup, small)], peaks[(dedup, large)]
        measured = not ctx.smoke
        section.targets.append(Target(f"peak RSS {mode} at {large:,}", f"{hi:.0f} MB", "≤ 400 MB",
                                      (hi <= 400) if measured else None))
        section.targets.append(Target(f"peak RSS {mode} {large:,} / {small:,}", f"{hi / lo:.2f}×", "≤ 1.5×",
                                      (hi / lo <= 1.5) if measured else None))


def run(ctx: Context) -> Section:
    section = Section(TITLE, intro=__doc__.split("\n", 1)[1].strip())
    throughput(ctx, section)
    memory(ctx, section)
    return section
