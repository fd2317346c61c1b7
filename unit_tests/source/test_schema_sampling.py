"""discover samples each stream by default (schema_sample_size 100, at most SCHEMA_SAMPLE_SECONDS per stream) and
declares the payload's top-level fields as nullable hints beside the contract fields; 0 keeps the open schema."""
from __future__ import annotations

import logging
import time

import pytest

from source_kinesis.discovery import record_schema
from source_kinesis.source import INFERRED_KEYWORD, SCHEMA_SAMPLE_SECONDS, SourceKinesis
from unit_tests.source.conftest import config, make_stream, put

LOG = logging.getLogger("airbyte.test")


def _schema(cfg: dict) -> dict:
    catalog = SourceKinesis().discover(LOG, cfg)
    assert len(catalog.streams) == 1
    return catalog.streams[0].json_schema


def _orders(n: int) -> list[dict]:
    return [{"order_id": f"o-{i}", "amount": i, "price": i * 1.25, "paid": i % 2 == 0, "tags": ["a"],
             "address": {"city": "Lisboa"}} for i in range(n)]


def test_default_config_declares_the_sampled_payload_fields_as_nullable_hints(kinesis):
    make_stream(kinesis, "orders", shards=4)
    put(kinesis, "orders", _orders(40))
    cfg = config(["orders"])
    assert "schema_sample_size" not in cfg  # the default
    started = time.monotonic()
    schema = _schema(cfg)
    elapsed = time.monotonic() - started
    props = schema["properties"]
    assert props["order_id"] == {"type": ["string", "null"], INFERRED_KEYWORD: True}
    assert props["amount"]["type"] == ["integer", "null"] and props["price"]["type"] == ["number", "null"]
    assert props["paid"]["type"] == ["boolean", "null"]
    assert props["tags"]["type"] == ["array", "null"] and props["address"]["type"] == ["object", "null"]
    assert all(props[name][INFERRED_KEYWORD] is True for name in ("amount", "price", "paid", "tags", "address"))
    contract = record_schema()["properties"]
    for name, declared in contract.items():  # the contract fields are declarations, unchanged
        assert props[name] == declared
    assert schema["additionalProperties"] is True and "required" not in schema
    assert elapsed < SCHEMA_SAMPLE_SECONDS + 2, f"discover took {elapsed:.1f} s"


def test_an_empty_stream_ends_its_sample_at_the_shards_tips_within_the_bound(kinesis):
    make_stream(kinesis, "quiet", shards=4)
    started = time.monotonic()
    schema = _schema(config(["quiet"]))
    elapsed = time.monotonic() - started
    assert schema == record_schema()
    assert elapsed < SCHEMA_SAMPLE_SECONDS, f"discover of an empty stream took {elapsed:.1f} s"


def test_sample_size_zero_keeps_the_open_contract_schema(kinesis):
    make_stream(kinesis, "orders", shards=1)
    put(kinesis, "orders", _orders(5))
    assert _schema(config(["orders"], schema_sample_size=0)) == record_schema()


def test_the_sample_stops_at_its_size_and_asks_no_shard_for_more(kinesis, monkeypatch):
    from source_kinesis import source

    make_stream(kinesis, "orders", shards=1)
    put(kinesis, "orders", [{"early": 1}] * 3 + [{"late": "x"}] * 5)
    limits = []
    original = source.Orchestrator.__init__

    def spy(self, cfg, *args, **kwargs):
        limits.append(cfg.records_per_call)
        original(self, cfg, *args, **kwargs)

    monkeypatch.setattr(source.Orchestrator, "__init__", spy)
    props = _schema(config(["orders"], schema_sample_size=3))["properties"]
    assert "early" in props and "late" not in props
    assert limits == [3]


@pytest.mark.parametrize("bad", [-1, 10_001, "many"])
def test_a_bad_sample_size_is_a_config_error_naming_it(bad):
    from airbyte_cdk.utils.traced_exception import AirbyteTracedException

    from source_kinesis.config import parse_config

    with pytest.raises(AirbyteTracedException, match="schema_sample_size"):
        parse_config(config(["orders"], schema_sample_size=bad))
