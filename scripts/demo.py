"""The one-command demo: a local Kinesis stream, realistic order events (with resharding while writing), a DuckDB
collection kept by the runner, then a query, the collection's DESCRIBE, and the committed state.

Run it again: the emulator keeps its data (persisted under .cache/demo), so the second run writes a few new events
and the runner's incremental sync picks up only those. Every process it starts is stopped before it ends.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from integration_tests.kinesis_mock import KinesisMock, wait_active  # noqa: E402  (the demo reuses the test launcher)

DEMO = Path(os.environ.get("DEMO_DIR") or ROOT / ".cache" / "demo").resolve()
STREAM = "orders"
BIN = Path(sys.executable).parent
CITIES = [("Lisbon", "PT"), ("Berlin", "DE"), ("Austin", "US"), ("Osaka", "JP"), ("Lyon", "FR"), ("Denver", "US")]
ITEMS = [("keyboard", 49.0), ("monitor", 189.0), ("mouse", 19.5), ("headset", 79.9), ("webcam", 59.0), ("dock", 129.0)]


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def events(rng: random.Random, start_id: int, count: int):
    """Order lifecycle events: an order is placed, and some are later paid or shipped (same order_id)."""
    now = time.time()
    placed = []
    for i in range(count):
        if placed and rng.random() < 0.3:
            index = rng.randrange(len(placed))
            status = "shipped" if placed[index]["status"] == "paid" else "paid"
            order = dict(placed[index], status=status, updated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + i)))
            placed[index] = order
        else:
            city, country = rng.choice(CITIES)
            item, price = rng.choice(ITEMS)
            order = {
                "order_id": start_id + i,
                "user": f"user-{rng.randint(1, 40):03d}",
                "item": item,
                "quantity": rng.randint(1, 3),
                "price": price,
                "status": "placed",
                "address": {"city": city, "country": country},
                "tags": rng.sample(["gift", "express", "promo", "b2b"], rng.randint(0, 2)),
                "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + i)),
            }
            placed.append(order)
        yield order


def put(client, batch) -> None:
    for start in range(0, len(batch), 200):
        chunk = batch[start : start + 200]
        records = [{"Data": json.dumps(e).encode(), "PartitionKey": f"order-{e['order_id']}"} for e in chunk]
        assert client.put_records(StreamName=STREAM, Records=records)["FailedRecordCount"] == 0


def reshard(client) -> str:
    shards = client.list_shards(StreamName=STREAM)["Shards"]
    open_shards = sorted(
        (s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]),
        key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]),
    )
    for a, b in zip(open_shards, open_shards[1:]):
        if len(open_shards) > 3 and int(a["HashKeyRange"]["EndingHashKey"]) + 1 == int(b["HashKeyRange"]["StartingHashKey"]):
            client.merge_shards(StreamName=STREAM, ShardToMerge=a["ShardId"], AdjacentShardToMerge=b["ShardId"])
            done = f"merged {a['ShardId']} and {b['ShardId']}"
            break
    else:
        target = open_shards[0]
        lo, hi = int(target["HashKeyRange"]["StartingHashKey"]), int(target["HashKeyRange"]["EndingHashKey"])
        client.split_shard(StreamName=STREAM, ShardToSplit=target["ShardId"], NewStartingHashKey=str((lo + hi) // 2))
        done = f"split {target['ShardId']}"
    time.sleep(0.5)
    wait_active(client, STREAM)
    return done


def runner(*args: str) -> None:
    subprocess.run([str(BIN / "kinesis-collection"), *args], check=True)


def main() -> int:
    DEMO.mkdir(parents=True, exist_ok=True)
    emulator = KinesisMock(
        SHOULD_PERSIST_DATA="true", PERSIST_PATH=str(DEMO), PERSIST_FILE_NAME="kinesis-mock.json", PERSIST_INTERVAL="1s"
    )
    banner(f"Starting kinesis-mock on 127.0.0.1:{emulator.port} (data kept in {DEMO})")
    with emulator:
        client = emulator.client()
        first_run = STREAM not in client.list_streams()["StreamNames"]
        if first_run:
            client.create_stream(StreamName=STREAM, ShardCount=3)
            wait_active(client, STREAM)
            print(f"Created stream {STREAM} with 3 shards")
        run_file = DEMO / "runs.json"
        runs = json.loads(run_file.read_text()) if run_file.exists() else {"next_order_id": 1, "runs": 0}
        rng = random.Random(runs["runs"])
        count = 600 if first_run else 150
        batch = list(events(rng, runs["next_order_id"], count))
        put(client, batch[: count // 2])
        change = reshard(client)
        put(client, batch[count // 2 :])
        runs = {"next_order_id": runs["next_order_id"] + count, "runs": runs["runs"] + 1}
        run_file.write_text(json.dumps(runs))
        print(f"Wrote {count} order events ({'first run' if first_run else 'new events only'}), {change} halfway through")

        source = DEMO / "source.json"
        source.write_text(json.dumps(emulator.source_config([STREAM], get_records_per_second=5)))
        destination = DEMO / "destination.json"
        destination.write_text(
            json.dumps(
                {
                    "store": {"store_type": "duckdb", "path": str(DEMO / "orders.duckdb")},
                    "collections": [
                        {
                            "stream": STREAM,
                            "id_field": "order_id",
                            "event_time_field": "updated_at",
                            "transformation_sql": "SELECT *, round(price * quantity, 2) AS amount FROM _input",
                        }
                    ],
                },
                indent=2,
            )
        )
        banner("kinesis-collection sync (one bounded sync into the DuckDB collection)")
        runner("sync", "--source", str(source), "--destination", str(destination))
        table = "orders"
        banner("Revenue by country (SQL over the collection)")
        runner(
            "query", "--destination", str(destination),
            f'SELECT "address"->>\'country\' AS country, count(*) AS orders, round(sum(amount), 2) AS revenue, '
            f'count(*) FILTER (WHERE status = \'shipped\') AS shipped FROM {table} GROUP BY 1 ORDER BY revenue DESC',
        )
        banner(f"DESCRIBE {table}")
        runner("describe", "--destination", str(destination), table)
        banner("Collection stats")
        runner("stats", "--destination", str(destination))
        banner("Committed state per stream (lives in the store, committed with the data)")
        stats = subprocess.run(
            [str(BIN / "kinesis-collection"), "stats", "--destination", str(destination), "--format", "json"],
            check=True, capture_output=True, text=True,
        )
        for collection in json.loads(stats.stdout)["collections"]:
            state = collection["state"]
            state = json.loads(state) if isinstance(state, str) else state
            print(json.dumps(state["stream"]["stream_state"], indent=2))
    banner("Done: the emulator is stopped. Run the demo again to see an incremental sync pick up only new events.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
