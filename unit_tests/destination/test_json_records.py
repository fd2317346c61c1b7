"""``JsonRecord`` (a RECORD whose data its in-process producer holds as JSON text) gives the same collection and
echoes as the same records given as RECORD lines: the reference ``write`` path."""
from __future__ import annotations

import orjson
import duckdb
import pytest

from destination_collection.protocol_loop import JsonRecord, write_messages

PK = [["pk"]]


def catalog(mode: str) -> dict:
    stream = {"name": "s", "json_schema": {"type": "object"}, "supported_sync_modes": ["incremental"]}
    return {"streams": [{"stream": stream, "sync_mode": "incremental", "destination_sync_mode": mode, "primary_key": PK}]}


def datas() -> list:
    out = []
    for i in range(300):
        kind = i % 6
        body = {"pk": f"k{i % 41}", "n": i, "_kinesis_arrival_time": f"2026-01-01T00:00:{i % 60:02d}.000Z"}
        if kind == 1:
            body["_op"] = "DELETE" if i % 4 == 1 else "repsert"
        elif kind == 2:
            body["_meta"] = {"x": i}
        elif kind == 3:
            body["text"] = "tab\tand\nnewline é"
        elif kind == 4:
            body["nested"] = {"_event_time": "x", "list": [1, 2.5, None]}
        out.append(body)
    return out


def state(n: int) -> dict:
    return {"type": "STATE", "state": {"type": "STREAM", "stream": {"stream_descriptor": {"name": "s"}, "stream_state": {"n": n}}}}


def messages(as_text: bool) -> list:
    result = []
    for i, data in enumerate(datas()):
        line = orjson.dumps({"type": "RECORD", "record": {"stream": "s", "data": data, "emitted_at": 1_700_000_000_000 + i}})
        result.append(JsonRecord("s", None, orjson.dumps(data).decode(), 1_700_000_000_000 + i, len(line)) if as_text else line)
        if i % 70 == 69:
            result.append(state(i))
    result.append(state(-1))
    return result


def written(tmp_path, as_text: bool, mode: str):
    db = tmp_path / f"{as_text}-{mode}.duckdb"
    config = {"store": {"store_type": "duckdb", "path": str(db)}, "batch_size": 64}
    echoes = [orjson.loads(orjson.dumps(e)) for e in write_messages(config, catalog(mode), iter(messages(as_text)))]
    con = duckdb.connect(str(db), read_only=True)
    try:
        # (append: each document's _id is a generated UUIDv7, different in every run)
        excluded = "_airbyte_raw_id" if mode == "append_dedup" else "_airbyte_raw_id, _id"
        rows = sorted(con.execute(f"SELECT * EXCLUDE ({excluded}) FROM s").fetchall(), key=repr)
    finally:
        con.close()
    return rows, echoes


@pytest.mark.parametrize("mode", ["append", "append_dedup"])
def test_json_records_and_record_lines_give_the_same_collection_and_echoes(tmp_path, mode):
    text_rows, text_echoes = written(tmp_path, True, mode)
    line_rows, line_echoes = written(tmp_path, False, mode)
    assert len(line_rows) > 30 and len(line_echoes) == 5
    assert text_rows == line_rows
    assert text_echoes == line_echoes
