"""infer_schema: an open JSON schema of sampled records (genson underneath)."""
from __future__ import annotations

import jsonschema

from source_kinesis.schema_inference import MAX_DEPTH, infer_schema


def test_no_records_is_an_open_object():
    assert infer_schema([]) == {"type": "object"}


def test_types_merge_and_nothing_is_required():
    schema = infer_schema(
        [
            {"id": 1, "name": "a", "tags": ["x"], "nested": {"ok": True}, "price": 1},
            {"id": 2**80, "name": None, "tags": [], "nested": {"ok": False, "extra": 1.5}, "price": 2.5},
            "not a dict",
        ]
    )
    assert schema["type"] == "object" and "$schema" not in schema
    props = schema["properties"]
    assert props["id"] == {"type": "integer"}
    assert props["name"] == {"type": ["null", "string"]} or props["name"] == {"type": ["string", "null"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["price"] == {"type": "number"}
    assert props["nested"]["properties"]["extra"] == {"type": "number"}
    assert "required" not in schema and "required" not in props["nested"]
    # records unlike the sample still validate: missing and additional fields are fine
    jsonschema.validate({"other": 1}, schema)
    jsonschema.validate({"id": 3, "nested": {}}, schema)


def test_a_field_named_required_is_kept():
    schema = infer_schema([{"required": {"required": 1}}])
    assert schema["properties"]["required"]["properties"]["required"] == {"type": "integer"}


def test_change_event_and_bad_record_fields_are_described():
    schema = infer_schema([{"id": 1, "_op": "REPSERT", "_id": '["t",1]'}, {"_kinesis_raw_data": "eA==", "_kinesis_error": "invalid JSON"}])
    assert set(schema["properties"]) == {"id", "_op", "_id", "_kinesis_raw_data", "_kinesis_error"}


def test_deep_nesting_is_cut_at_max_depth_without_recursion_errors():
    deep = current = {}
    for _ in range(1024):
        current["x"] = {}
        current = current["x"]
    deep_list = [[[]]]
    for _ in range(2000):
        deep_list = [deep_list]
    schema = infer_schema([deep, {"l": deep_list}])
    node = schema
    for _ in range(MAX_DEPTH - 1):
        node = node["properties"]["x"]
    assert node == {"type": "object", "properties": {"x": {}}}  # below MAX_DEPTH: any value
    jsonschema.validate(deep, schema)
