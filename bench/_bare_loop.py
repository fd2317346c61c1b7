"""The baseline the source is measured against: a bare boto3 GetRecords loop (botocore's defaults, retries off),
reading every shard of a stream from TRIM_HORIZON until an empty page with MillisBehindLatest 0, discarding the
records. ``sequential`` paces each shard at --calls-per-second like the source's budget (the "sequential reader").

    python -m bench._bare_loop ENDPOINT STREAM [--limit N] [--calls-per-second R]
"""
from __future__ import annotations

import argparse
import sys
import time

import boto3
from botocore.config import Config


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("endpoint")
    parser.add_argument("stream")
    parser.add_argument("--limit", type=int, default=10000)
    parser.add_argument("--calls-per-second", type=float, default=0.0)
    args = parser.parse_args()
    client = boto3.client(
        "kinesis", endpoint_url=args.endpoint, region_name="us-east-1", aws_access_key_id="bench",
        aws_secret_access_key="bench-secret", config=Config(retries={"total_max_attempts": 1}),
    )
    total = 0
    interval = 1.0 / args.calls_per_second if args.calls_per_second else 0.0
    for shard in client.list_shards(StreamName=args.stream)["Shards"]:
        iterator = client.get_shard_iterator(StreamName=args.stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            started = time.monotonic()
            page = client.get_records(ShardIterator=iterator, Limit=args.limit)
            total += len(page["Records"])
            if not page["Records"] and page.get("MillisBehindLatest") == 0:
                break
            iterator = page.get("NextShardIterator")
            if interval:
                time.sleep(max(0.0, started + interval - time.monotonic()))
    print(total)
    return 0


if __name__ == "__main__":
    sys.exit(main())
