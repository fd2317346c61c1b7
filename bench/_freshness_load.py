"""The freshness benchmark's load generator, a process of its own (its boto3 work does not share a GIL with the
benchmark's query poller or the Kinesis server)::

    python -m bench._freshness_load ENDPOINT STREAM RATE SECONDS BATCH WRITERS OUT.json

``WRITERS`` threads put batches of ``BATCH`` records with ``put_records``, each on its own fixed schedule (one batch
every WRITERS × BATCH / RATE seconds, the writers staggered evenly), for ``SECONDS`` seconds; a writer whose call
overruns its slot starts the next one at once (no catch-up burst beyond that). Batch ``b``'s records carry
``{"batch": b, "i": i, ...}`` (~120 bytes) and partition keys ``b<b>-<i>``, so they spread over every shard.
Writes ``{"batches": [[batch, put called (epoch s), put returned (epoch s)], ...], "seconds": wall s of the load,
"cpu_seconds": this process's user + system CPU during the load, "failed_records": n}`` to ``OUT.json``.
"""
from __future__ import annotations

import itertools
import json
import resource
import sys
import threading
import time


def main(argv: list) -> int:
    endpoint, stream, rate, seconds, batch_size, writers, out = argv
    rate, seconds, batch_size, writers = float(rate), float(seconds), int(batch_size), int(writers)
    import boto3
    from botocore.config import Config

    client = boto3.client("kinesis", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                          aws_secret_access_key="bench-secret",
                          config=Config(retries={"total_max_attempts": 1}, max_pool_connections=writers + 2))
    counter = itertools.count()
    lock = threading.Lock()
    batches: list = []
    failed = [0]
    period = writers * batch_size / rate
    kinds = ("page_view", "click", "purchase", "signup")

    def writer(slot: int, start: float) -> None:
        next_at = start + slot * period / writers
        end = start + seconds
        while True:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if time.monotonic() >= end:
                return
            with lock:
                batch = next(counter)
            records = [{"Data": (f'{{"batch":{batch},"i":{i},"user_id":"user-{(batch * 31 + i) % 1000:04d}",'
                                 f'"type":"{kinds[i % 4]}","amount":{i * 37 / 100},"tags":["web","eu"]}}').encode(),
                        "PartitionKey": f"b{batch}-{i}"} for i in range(batch_size)]
            called = time.time()
            response = client.put_records(StreamName=stream, Records=records)
            returned = time.time()
            with lock:
                batches.append([batch, called, returned])
                failed[0] += response.get("FailedRecordCount", 0)
            next_at = max(next_at + period, time.monotonic() - period / 2)

    client.list_shards(StreamName=stream)  # connect and warm botocore's caches before the clock starts
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start = usage.ru_utime + usage.ru_stime
    start = time.monotonic()
    threads = [threading.Thread(target=writer, args=(slot, start), daemon=True) for slot in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, "w") as handle:
        json.dump({"batches": sorted(batches), "seconds": elapsed, "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu_start,
                   "failed_records": failed[0]}, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
