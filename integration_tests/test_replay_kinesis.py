"""The in-memory Kinesis (``integration_tests/replay.py`` behind ``FaultProxy.replay``) as a producer and a consumer
see it through boto3: puts on live, growing shards, every iterator type on them, wall-clock ``MillisBehindLatest``,
Kinesis' hash-key routing, concurrent producers, the separate-process mode, and source-kinesis following it."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict

import boto3
import pytest
from botocore.config import Config

from integration_tests.fault_proxy import FaultProxy
from integration_tests.replay import ReplayData, ReplayStream

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REGION, ACCESS_KEY, SECRET_KEY = "us-east-1", "test", "test-secret"


def client_for(url: str):
    return boto3.client("kinesis", endpoint_url=url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                        aws_secret_access_key=SECRET_KEY, config=Config(retries={"total_max_attempts": 1}))


def live(*streams: ReplayStream, **kwargs) -> FaultProxy:
    kwargs.setdefault("max_lifetime_seconds", 60)
    return FaultProxy.replay(ReplayData(list(streams)), **kwargs)


def md5_key(partition_key: str) -> int:
    return int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")


def owner(shards, key: int) -> str:
    (shard_id,) = [s["ShardId"] for s in shards if int(s["HashKeyRange"]["StartingHashKey"]) <= key <= int(s["HashKeyRange"]["EndingHashKey"])]
    return shard_id


def read_all(client, stream: str, shard_id: str, kind: str = "TRIM_HORIZON", **extra):
    iterator = client.get_shard_iterator(StreamName=stream, ShardId=shard_id, ShardIteratorType=kind, **extra)["ShardIterator"]
    records = []
    while True:
        page = client.get_records(ShardIterator=iterator, Limit=10000)
        records += page["Records"]
        iterator = page["NextShardIterator"]
        if not page["Records"] and page["MillisBehindLatest"] == 0:
            return records, iterator


def test_put_then_read_back_through_every_iterator_type():
    with live(ReplayStream("puts", shards=2, records_per_shard=0)) as server:
        client = client_for(server.endpoint_url)
        shards = client.list_shards(StreamName="puts")["Shards"]
        assert read_all(client, "puts", shards[0]["ShardId"])[0] == []  # created empty
        one = client.put_record(StreamName="puts", Data=b'{"n": 0}', PartitionKey="alpha")
        assert one["ShardId"] == owner(shards, md5_key("alpha")) and len(one["SequenceNumber"]) == 56
        entries = [{"Data": json.dumps({"n": i}).encode(), "PartitionKey": f"key-{i}"} for i in range(1, 41)]
        many = client.put_records(StreamName="puts", Records=entries)
        assert many["FailedRecordCount"] == 0 and len(many["Records"]) == 40
        assert [r["ShardId"] for r in many["Records"]] == [owner(shards, md5_key(e["PartitionKey"])) for e in entries]

        put = {one["SequenceNumber"]: (b'{"n": 0}', "alpha", one["ShardId"])}
        put.update({r["SequenceNumber"]: (e["Data"], e["PartitionKey"], r["ShardId"]) for e, r in zip(entries, many["Records"])})
        assert len(put) == 41
        by_shard = defaultdict(list)
        for shard in shards:
            records, _ = read_all(client, "puts", shard["ShardId"])
            for record in records:
                data, key, shard_id = put[record["SequenceNumber"]]
                assert (record["Data"], record["PartitionKey"], shard["ShardId"]) == (data, key, shard_id)
            by_shard[shard["ShardId"]] = records
        assert sum(len(v) for v in by_shard.values()) == 41
        # within a shard: the order of the puts (request order within a call), increasing sequence numbers
        for shard_id, records in by_shard.items():
            expected = [s for s, (_, _, sid) in put.items() if sid == shard_id]
            assert [r["SequenceNumber"] for r in records] == expected
            assert [int(r["SequenceNumber"]) for r in records] == sorted(int(r["SequenceNumber"]) for r in records)

        shard_id = max(by_shard, key=lambda s: len(by_shard[s]))
        records = by_shard[shard_id]
        middle = records[len(records) // 2]["SequenceNumber"]
        at, _ = read_all(client, "puts", shard_id, "AT_SEQUENCE_NUMBER", StartingSequenceNumber=middle)
        after, _ = read_all(client, "puts", shard_id, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=middle)
        assert at == records[len(records) // 2:] and after == records[len(records) // 2 + 1:]
        first_arrival = records[0]["ApproximateArrivalTimestamp"]
        assert read_all(client, "puts", shard_id, "AT_TIMESTAMP", Timestamp=first_arrival)[0] == records
        latest, _ = read_all(client, "puts", shard_id, "LATEST")
        assert latest == []


def test_latest_on_a_growing_shard_starts_after_the_last_record_at_the_time_of_the_call():
    with live(ReplayStream("grow", shards=1, records_per_shard=5)) as server:
        client = client_for(server.endpoint_url)
        client.put_records(StreamName="grow", Records=[{"Data": b"before", "PartitionKey": f"b{i}"} for i in range(3)])
        iterator = client.get_shard_iterator(StreamName="grow", ShardId="shardId-000000000000", ShardIteratorType="LATEST")["ShardIterator"]
        page = client.get_records(ShardIterator=iterator)
        assert page["Records"] == [] and page["MillisBehindLatest"] == 0
        client.put_records(StreamName="grow", Records=[{"Data": f"after-{i}".encode(), "PartitionKey": f"a{i}"} for i in range(4)])
        # the same position (the first iterator, and the NextShardIterator of the empty page) sees exactly the new ones
        for it in (iterator, page["NextShardIterator"]):
            assert [r["Data"] for r in client.get_records(ShardIterator=it)["Records"]] == [f"after-{i}".encode() for i in range(4)]
        later = client.get_shard_iterator(StreamName="grow", ShardId="shardId-000000000000", ShardIteratorType="LATEST")["ShardIterator"]
        assert client.get_records(ShardIterator=later)["Records"] == []
        everything, _ = read_all(client, "grow", "shardId-000000000000")
        assert len(everything) == 5 + 3 + 4 and everything[5]["Data"] == b"before"  # the backlog, then the puts


def test_at_timestamp_uses_the_arrival_time_of_the_put():
    with live(ReplayStream("stamps", shards=1, records_per_shard=0)) as server:
        client = client_for(server.endpoint_url)
        before = time.time()
        client.put_records(StreamName="stamps", Records=[{"Data": b"early", "PartitionKey": "k"}] * 3)
        records, _ = read_all(client, "stamps", "shardId-000000000000")
        early_arrival = records[0]["ApproximateArrivalTimestamp"].timestamp()
        assert before - 0.001 <= early_arrival <= time.time()  # the wall clock at the put, ms precision
        while time.time() < early_arrival + 0.005:
            time.sleep(0.002)
        between = time.time()
        while time.time() < between + 0.005:
            time.sleep(0.002)
        client.put_record(StreamName="stamps", Data=b"late", PartitionKey="k")
        after_early, _ = read_all(client, "stamps", "shardId-000000000000", "AT_TIMESTAMP", Timestamp=between)
        assert [r["Data"] for r in after_early] == [b"late"]
        assert len(read_all(client, "stamps", "shardId-000000000000", "AT_TIMESTAMP", Timestamp=early_arrival)[0]) == 4
        assert read_all(client, "stamps", "shardId-000000000000", "AT_TIMESTAMP", Timestamp=time.time() + 1)[0] == []


def test_millis_behind_latest_is_now_minus_the_arrival_of_the_next_unread_record():
    with live(ReplayStream("behind", shards=1, records_per_shard=0)) as server:
        client = client_for(server.endpoint_url)
        client.put_records(StreamName="behind", Records=[{"Data": b"x", "PartitionKey": str(i)} for i in range(5)])
        put_at = time.time()
        time.sleep(0.3)
        iterator = client.get_shard_iterator(StreamName="behind", ShardId="shardId-000000000000", ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        page = client.get_records(ShardIterator=iterator, Limit=2)
        waited_ms = (time.time() - put_at) * 1000
        assert len(page["Records"]) == 2 and 300 <= page["MillisBehindLatest"] <= waited_ms + 5
        rest = client.get_records(ShardIterator=page["NextShardIterator"])
        assert len(rest["Records"]) == 3 and rest["MillisBehindLatest"] == 0  # the page reached the tip
        client.put_record(StreamName="behind", Data=b"new", PartitionKey="n")
        waiting = client.get_records(ShardIterator=rest["NextShardIterator"], Limit=1)
        assert [r["Data"] for r in waiting["Records"]] == [b"new"] and waiting["MillisBehindLatest"] == 0


def test_routing_follows_kinesis_rule_explicit_hash_keys_and_kinesis_mock(kinesis_mock):
    keys = [f"user-{i}" for i in range(200)] + ["ü-ñ-漢字", "x" * 256]
    with live(ReplayStream("route3", shards=3, records_per_shard=0), ReplayStream("route4", shards=4, records_per_shard=0)) as server:
        client = client_for(server.endpoint_url)
        for name in ("route3", "route4"):
            shards = client.list_shards(StreamName=name)["Shards"]
            assert int(shards[0]["HashKeyRange"]["StartingHashKey"]) == 0 and int(shards[-1]["HashKeyRange"]["EndingHashKey"]) == 2**128 - 1
            for a, b in zip(shards, shards[1:]):  # contiguous ranges
                assert int(b["HashKeyRange"]["StartingHashKey"]) == int(a["HashKeyRange"]["EndingHashKey"]) + 1
            response = client.put_records(StreamName=name, Records=[{"Data": b"d", "PartitionKey": k} for k in keys])
            assert [r["ShardId"] for r in response["Records"]] == [owner(shards, md5_key(k)) for k in keys]
            assert len(set(r["ShardId"] for r in response["Records"])) == len(shards)  # 200 keys reach every shard
            for shard in shards:  # an explicit hash key wins over the partition key, at both ends of each range
                for edge in ("StartingHashKey", "EndingHashKey"):
                    placed = client.put_record(StreamName=name, Data=b"e", PartitionKey="user-1", ExplicitHashKey=shard["HashKeyRange"][edge])
                    assert placed["ShardId"] == shard["ShardId"]
        with pytest.raises(client.exceptions.InvalidArgumentException):
            client.put_record(StreamName="route4", Data=b"e", PartitionKey="k", ExplicitHashKey=str(2**128))
        # the same keys on kinesis-mock land on the same shards (its ranges differ only at the boundaries)
        mock = kinesis_mock.client()
        from integration_tests.kinesis_mock import create_stream

        name = f"route4-{int(time.time() * 1000)}"
        create_stream(mock, name, 4)
        theirs = mock.put_records(StreamName=name, Records=[{"Data": b"d", "PartitionKey": k} for k in keys])
        ours = client.put_records(StreamName="route4", Records=[{"Data": b"d", "PartitionKey": k} for k in keys])
        assert [r["ShardId"] for r in ours["Records"]] == [r["ShardId"] for r in theirs["Records"]]


def test_concurrent_puts_from_threads_lose_nothing():
    threads_n, calls, per_call = 8, 30, 25
    with live(ReplayStream("busy", shards=4, records_per_shard=0), max_requests=10_000) as server:
        acks = []
        errors = []

        def producer(t: int) -> None:
            client = client_for(server.endpoint_url)
            try:
                for c in range(calls):
                    records = [{"Data": f"{t}-{c}-{i}".encode(), "PartitionKey": f"{t}-{c}-{i}"} for i in range(per_call)]
                    response = client.put_records(StreamName="busy", Records=records)
                    assert response["FailedRecordCount"] == 0
                    acks.extend((r["ShardId"], r["SequenceNumber"], e["Data"]) for e, r in zip(records, response["Records"]))
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        reader_client = client_for(server.endpoint_url)
        shard_ids = [s["ShardId"] for s in reader_client.list_shards(StreamName="busy")["Shards"]]
        # a reader follows one shard while the puts run: it must see the same records, in order, as the full read
        iterator = reader_client.get_shard_iterator(StreamName="busy", ShardId=shard_ids[0], ShardIteratorType="LATEST")["ShardIterator"]
        followed = []
        workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads_n)]
        for worker in workers:
            worker.start()
        while any(w.is_alive() for w in workers):
            page = reader_client.get_records(ShardIterator=iterator)
            followed += page["Records"]
            iterator = page["NextShardIterator"]
        for worker in workers:
            worker.join()
        assert errors == []
        total = threads_n * calls * per_call
        assert len(acks) == total and len({(s, q) for s, q, _ in acks}) == total
        stored = {}
        for shard_id in shard_ids:
            records, _ = read_all(reader_client, "busy", shard_id)
            numbers = [int(r["SequenceNumber"]) for r in records]
            assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
            arrivals = [r["ApproximateArrivalTimestamp"] for r in records]
            assert arrivals == sorted(arrivals)
            stored.update({(shard_id, r["SequenceNumber"]): r["Data"] for r in records})
            if shard_id == shard_ids[0]:
                followed += read_all(reader_client, "busy", shard_id, "AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=followed[-1]["SequenceNumber"])[0] if followed else records
                assert [r["SequenceNumber"] for r in followed] == [r["SequenceNumber"] for r in records]
        assert stored == {(s, q): d for s, q, d in acks}
        assert server.backend.data.records_put == total and server.backend_errors == []


def test_put_errors_and_create_stream():
    with live(ReplayStream("errs", shards=1, records_per_shard=0)) as server:
        client = client_for(server.endpoint_url)
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.put_record(StreamName="missing", Data=b"x", PartitionKey="k")
        with pytest.raises(Exception) as too_many:
            client.put_records(StreamName="errs", Records=[{"Data": b"x", "PartitionKey": "k"}] * 501)
        assert too_many.value.response["Error"]["Code"] == "ValidationException"
        with pytest.raises(Exception) as too_big:
            client.put_record(StreamName="errs", Data=b"x" * ((1 << 20) + 1), PartitionKey="k")
        assert too_big.value.response["Error"]["Code"] == "ValidationException"
        assert client.list_shards(StreamName="errs")["Shards"] and server.backend.data.records_put == 0  # nothing half-put

        client.create_stream(StreamName="made", ShardCount=3)
        with pytest.raises(client.exceptions.ResourceInUseException):
            client.create_stream(StreamName="made", ShardCount=3)
        assert client.describe_stream_summary(StreamName="made")["StreamDescriptionSummary"]["OpenShardCount"] == 3
        assert "made" in client.list_streams()["StreamNames"]
        placed = client.put_record(StreamName="made", Data=b"hello", PartitionKey="p")
        records, _ = read_all(client, "made", placed["ShardId"])
        assert [(r["Data"], r["SequenceNumber"]) for r in records] == [(b"hello", placed["SequenceNumber"])]
        assert server.backend.data.payloads("made") == [("p", b"hello")]


def test_runs_as_a_separate_process_until_stdin_closes():
    process = subprocess.Popen([sys.executable, "-m", "integration_tests.replay", "--stream", "proc:2", "--max-lifetime-seconds", "60"],
                               cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        endpoint = json.loads(process.stdout.readline())["endpoint_url"]
        assert endpoint.startswith("http://127.0.0.1:")
        client = client_for(endpoint)
        client.put_records(StreamName="proc", Records=[{"Data": b"x", "PartitionKey": str(i)} for i in range(10)])
        served = sum(len(read_all(client, "proc", s["ShardId"])[0]) for s in client.list_shards(StreamName="proc")["Shards"])
        assert served == 10
        process.stdin.close()
        counters = json.loads(process.stdout.readline())
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert counters["records_put"] == 10 and counters["records_served"] == 10 and counters["stop_reason"] is None
    assert counters["requests"]["PutRecords"] == 1 and counters["backend_errors"] == []


def test_source_follow_sees_records_put_while_it_runs():
    """source-kinesis in follow mode on an empty live stream: every record put while it runs arrives once."""
    from source_kinesis.follow import follow

    with live(ReplayStream("followed", shards=2, records_per_shard=0), max_requests=20_000) as server:
        client = client_for(server.endpoint_url)
        config = {"credentials": {"auth_type": "access_keys", "aws_access_key_id": ACCESS_KEY, "aws_secret_access_key": SECRET_KEY},
                  "region": REGION, "endpoint_url": server.endpoint_url, "streams": ["followed"],
                  "get_records_per_second": 5, "checkpoint_interval_seconds": 0.5}
        stop = threading.Event()
        seen = []
        states = []

        def consume() -> None:
            for message in follow(config, stop_event=stop):
                if message.type.name == "RECORD":
                    seen.append(message.record.data)
                elif message.type.name == "STATE":
                    states.append(message)

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and server.requests["GetRecords"] < 2:  # both shards are being polled
                time.sleep(0.05)
            sent = Counter()
            for batch in range(5):
                records = [{"Data": json.dumps({"batch": batch, "i": i}).encode(), "PartitionKey": f"{batch}-{i}"} for i in range(20)]
                client.put_records(StreamName="followed", Records=records)
                sent.update(f"{batch}-{i}" for i in range(20))
                time.sleep(0.1)
            while time.monotonic() < deadline and len(seen) < sum(sent.values()):
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(timeout=30)
        assert not thread.is_alive()
        got = Counter(r["_kinesis_partition_key"] for r in seen)
        assert got == sent  # every record once
        assert states, "no checkpoint"
        assert server.backend_errors == []
