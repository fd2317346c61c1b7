"""Upsert flatness at sizes the default benchmark does not reach: the same 100k change batch (half updates of random
existing ids, half new ids, whole documents, a STATE every 10,000 records) into a small and a big collection,
written in-process with ``write_messages`` (default settings), DuckDB or PostgreSQL.

    python -m bench.flatness_probe --store duckdb --big 10000000
    python -m bench.flatness_probe --store postgres --big 10000000 [--shared-buffers 1GB]

The big collection is built from 1 M documents written by the destination, then copied in SQL to ``--big`` documents
(ids renumbered; the same columns, ``_doc_shape`` included) — minutes instead of the hour a 10 M write takes here —
and synced to disk before the change batch, which goes into a fresh copy (DuckDB) or the built schema
(PostgreSQL, a throwaway server from ``integration_tests/postgres_server.py``; both sizes vacuumed, analyzed and
checkpointed first). Prints the seconds and records/s of
each change batch and their ratio (big / small: the issue's flatness; goal ≥ 0.8). A probe, not part of
``bench.run``: ``bench/destination.py`` measures the whole ``write`` process at 100k and 1 M (10 M with
``--scale 10``).

    python -m bench.flatness_probe --store duckdb --big 10000000 --sustained 40 [--max-vacuum-tasks 100]

runs 40 successive syncs of 100k updates into one 10 M-document collection instead and prints each sync's seconds and
its longest wait between two state echoes: the COMMITs whose checkpoints merge row groups (``--max-vacuum-tasks N``
bounds the merges per checkpoint; the writer keeps DuckDB's own default, 100: see ``duckdb_store.MAX_VACUUM_TASKS``)."""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.destination import order_event  # noqa: E402
from destination_collection.protocol_loop import write_messages  # noqa: E402

STREAM = "events"
SEED_DOCUMENTS = 1_000_000
CHANGES = 100_000
CATALOG = {"streams": [{"stream": {"name": STREAM, "json_schema": {}, "supported_sync_modes": ["incremental"]},
                        "sync_mode": "incremental", "destination_sync_mode": "append_dedup",
                        "primary_key": [["order_id"]]}]}
COLLECTIONS = [{"stream": STREAM, "id_field": "order_id"}]


def _record(i: int, rng: random.Random, version: int) -> str:
    """The benchmark's own order event (bench/destination.py) for order ``i`` as a RECORD line."""
    data, emitted_at = order_event(rng, i, i, version)
    return json.dumps({"type": "RECORD", "record": {"stream": STREAM, "emitted_at": emitted_at, "data": data}})


def _lines(ids, version: int):
    rng = random.Random(version)
    for n, i in enumerate(ids):
        yield _record(i, rng, version)
        if (n + 1) % 10_000 == 0:
            yield json.dumps({"type": "STATE", "state": {"type": "STREAM", "stream": {
                "stream_descriptor": {"name": STREAM}, "stream_state": {"n": n}}}})


def _change_ids(size: int) -> list[int]:
    rng = random.Random(5)
    ids = rng.sample(range(size), CHANGES // 2) + list(range(size, size + CHANGES // 2))
    rng.shuffle(ids)
    return ids


def _write(config: dict, ids, version: int) -> float:
    started = time.perf_counter()
    for _ in write_messages(config, CATALOG, _lines(ids, version)):
        pass
    return time.perf_counter() - started


def _copy_up(execute, table: str, columns: list[str], size: int, seed: int) -> None:
    """Grow the ``seed``-document collection to ``size`` documents: copies with renumbered ids (and order_id), in one
    statement. (One INSERT per copy left a part-filled row group after each copy in DuckDB, which the first checkpoint
    after deletes then merged: ~1.8 s of one-off vacuum at 10 M that a collection grown by syncs does not carry.)"""
    renumbered = {"_id", "order_id"}
    exprs = [f"'ord-' || lpad(CAST(CAST(substr({c}, 5) AS BIGINT) + k * {seed} AS VARCHAR), 9, '0')"
             if c in renumbered else f'"{c}"' for c in columns]
    execute(f"INSERT INTO {table} SELECT {', '.join(exprs)} FROM {table} "
            f"CROSS JOIN generate_series(1, {size // seed - 1}) AS copies(k) "
            f"WHERE CAST(substr(_id, 5) AS BIGINT) < {seed}")


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _duckdb_build(folder: str, size: int, seed_documents: int) -> tuple[str, dict]:
    """A synced ``size``-document collection and a fresh copy of it to write into: (built file, config for the copy)."""
    import duckdb

    built = os.path.join(folder, f"probe-{size}.duckdb")
    _remove(built)
    config = {"store": {"store_type": "duckdb", "path": built}, "collections": COLLECTIONS}
    _write(config, range(min(size, seed_documents)), 1)
    if size > seed_documents:
        con = duckdb.connect(built)
        con.execute("SET memory_limit = '2GB'")
        columns = [row[0] for row in con.execute(f"DESCRIBE {STREAM}").fetchall()]
        _copy_up(con.execute, STREAM, columns, size, seed_documents)
        assert con.execute(f"SELECT count(*) FROM {STREAM}").fetchone()[0] == size
        con.execute("CHECKPOINT")
        con.close()
    work = built + ".work"
    shutil.copyfile(built, work)
    _fsync(work)
    config["store"]["path"] = work
    config["store"].update(CHANGE_STORE_SETTINGS)
    return built, config


CHANGE_STORE_SETTINGS: dict = {}  # DuckDB store settings of the change batches (--threads)


def _remove(*paths: str) -> None:
    for path in paths:
        for suffix in ("", ".wal"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)


def duckdb_probe(folder: str, size: int, seed_documents: int) -> float:
    built, config = _duckdb_build(folder, size, seed_documents)
    try:
        return _write(config, _change_ids(size), 2)
    finally:
        _remove(built, config["store"]["path"])


def duckdb_sustained(folder: str, size: int, seed_documents: int, syncs: int) -> None:
    """``syncs`` successive syncs of 100k updates of random stored ids (1 % of 10 M per sync: row groups thin out
    together, as under uniform updates) into one ``size``-document collection. Prints each sync's seconds and the
    longest wait between two of its state echoes (a state is echoed once its COMMIT, checkpoint included, is done)."""
    built, config = _duckdb_build(folder, size, seed_documents)
    try:
        for sync in range(syncs):
            ids = random.Random(100 + sync).sample(range(size), CHANGES)
            started = last = time.perf_counter()
            longest = 0.0
            for _ in write_messages(config, CATALOG, _lines(ids, 10 + sync)):
                now = time.perf_counter()
                longest, last = max(longest, now - last), now
            print(f"sync {sync + 1}: {time.perf_counter() - started:.2f} s, longest wait between state echoes "
                  f"{longest:.2f} s", flush=True)
    finally:
        _remove(built, config["store"]["path"])


def postgres_probe(server, size: int, seed_documents: int) -> float:
    from destination_collection.config import parse_config
    from destination_collection.stores.postgres_connection import connect

    config = {"store": server.store_config(schema=f"probe{size}"), "collections": COLLECTIONS}
    _write(config, range(min(size, seed_documents)), 1)
    conn = connect(parse_config(config).store)
    table = f'"probe{size}"."{STREAM}"'
    if size > seed_documents:
        columns = [row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
            "ORDER BY ordinal_position", [f"probe{size}", STREAM]).fetchall()]
        with conn.transaction():
            _copy_up(conn.execute, table, columns, size, seed_documents)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == size
    # either size, as autovacuum leaves a collection between syncs (statistics, visibility map), with the build's
    # dirty pages written out (CHECKPOINT): the change batch does not pay for writing the build
    conn.execute(f"VACUUM ANALYZE {table}")
    conn.close()
    server.checkpoint()
    return _write(config, _change_ids(size), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", choices=("duckdb", "postgres"), required=True)
    parser.add_argument("--big", type=int, default=10_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=SEED_DOCUMENTS,
                        help="documents the destination writes; a bigger collection is copied up from them")
    parser.add_argument("--folder", default=os.path.join(REPO, ".cache", "bench", "probe"))
    parser.add_argument("--sustained", type=int, metavar="SYNCS",
                        help="DuckDB: instead, this many successive syncs of 100k updates into the --big collection")
    parser.add_argument("--shared-buffers", default="1GB",
                        help="PostgreSQL: the server's shared_buffers (default 1GB, ~25 %% of a 4 GB server: a "
                             "production server's share for a 5 GB table; the tests' server has 32MB)")
    parser.add_argument("--max-vacuum-tasks", type=int,
                        help="DuckDB: row-group merges a checkpoint may run (default: DuckDB's own, 100)")
    parser.add_argument("--threads", type=int,
                        help="DuckDB: store.threads of the change batches (default: the destination's, 1)")
    args = parser.parse_args()
    if args.threads is not None:
        CHANGE_STORE_SETTINGS["threads"] = args.threads
    if args.big > args.seed and args.big % args.seed:
        parser.error(f"--big above --seed ({args.seed:,}) must be a multiple of it")
    if args.small < CHANGES // 2:
        parser.error(f"--small must hold the {CHANGES // 2:,} ids the change batch updates")
    logging.getLogger("airbyte").setLevel(logging.WARNING)
    os.makedirs(args.folder, exist_ok=True)
    seconds = {}
    if args.max_vacuum_tasks is not None:
        from destination_collection.stores import duckdb_store

        duckdb_store.MAX_VACUUM_TASKS = args.max_vacuum_tasks
    if args.sustained:
        if args.store != "duckdb":
            parser.error("--sustained runs against DuckDB")
        duckdb_sustained(args.folder, args.big, args.seed, args.sustained)
        return
    if args.store == "duckdb":
        for size in (args.small, args.big):
            seconds[size] = duckdb_probe(args.folder, size, args.seed)
            print(f"DuckDB change batch into {size:,}: {seconds[size]:.2f} s, {CHANGES / seconds[size]:,.0f} records/s",
                  flush=True)
    else:
        from integration_tests.postgres_server import PostgresServer

        server = PostgresServer(settings={"shared_buffers": args.shared_buffers}).start()
        try:
            for size in (args.small, args.big):
                seconds[size] = postgres_probe(server, size, args.seed)
                print(f"PostgreSQL change batch into {size:,}: {seconds[size]:.2f} s, "
                      f"{CHANGES / seconds[size]:,.0f} records/s", flush=True)
        finally:
            server.stop()
    print(f"flatness {args.big:,} / {args.small:,}: {seconds[args.small] / seconds[args.big]:.2f}")


if __name__ == "__main__":
    main()
