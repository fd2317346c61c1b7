"""dms and dynamodb formats: rows/items with _op, _id and _event_time; control records skipped and counted.
(The module name carries "decoding" so the decoding selection runs every test here.)"""
from __future__ import annotations

import base64
import gzip
import json

import orjson
import pytest

from source_kinesis.change_events import canonical_id, dynamodb_number, iso_from_epoch, unmarshal
from source_kinesis.decoding import BAD_KEPT, CONTROL_SKIPPED, ERROR_FIELD
from unit_tests.source.decoding_fixtures import DMS_UPDATE, DYNAMODB_MODIFY, SEQ, SHARD, decoder, raw_of


def dms(data=None, before=None, before_name="before-image", **metadata):
    meta = {
        "timestamp": "2026-11-25T20:02:00.250000Z",
        "record-type": "data",
        "operation": "insert",
        "partition-key-type": "schema-table",
        "schema-name": "shop",
        "table-name": "customers",
        **metadata,
    }
    body = {"data": data if data is not None else {"id": 1, "email": "a@example.com"}, "metadata": meta}
    if before is not None:
        body[before_name] = before
    return json.dumps(body, indent=4).encode()  # DMS "json" message format is indented


# ------------------------------------------------------------------------------------------------------------ DMS
def test_dms_update_from_payloads_md():
    [record] = decoder("dms").decode(DMS_UPDATE, "pk", SHARD, SEQ)
    assert record.fields == {
        "id": 102,
        "email": "b@example.com",
        "status": "active",
        "updated_at": "2026-11-25T20:02:00Z",
        "_op": "REPSERT",
        "_id": '["shop","customers",102]',
        "_event_time": "2026-11-25T20:02:00.250000Z",
        "_dms_schema": "shop",
        "_dms_table": "customers",
        "_dms_operation": "update",
        "_dms_transaction_id": 8797811009147502,
    }


@pytest.mark.parametrize("operation, op", [("load", "REPSERT"), ("insert", "REPSERT"), ("update", "REPSERT"), ("delete", "DELETE")])
def test_dms_operations_map_to_upper_case_ops(operation, op):
    [record] = decoder("dms").decode(dms(operation=operation), "pk", SHARD, SEQ)
    assert record.fields["_op"] == op and record.fields["id"] == 1 and record.fields["_dms_operation"] == operation
    assert "_dms_transaction_id" not in record.fields


def test_dms_ids_never_collide_across_tables_and_follow_the_configured_key():
    one = decoder("dms", primary_key=["region", "id"])
    a = one.decode(dms({"id": 1, "region": "eu"}), "pk", SHARD, SEQ)[0].fields["_id"]
    b = one.decode(dms({"id": 1, "region": "eu"}, **{"table-name": "orders"}), "pk", SHARD, SEQ)[0].fields["_id"]
    c = one.decode(dms({"id": 1, "region": "eu"}, **{"schema-name": "shop.customers", "table-name": ""}), "pk", SHARD, SEQ)[0]
    assert a == '["shop","customers","eu",1]' and b == '["shop","orders","eu",1]'
    assert ERROR_FIELD in c.fields  # an empty table name is not a DMS data record
    dotted = one.decode(dms({"id": 1, "region": "eu"}, **{"schema-name": "shop.cus", "table-name": "tomers"}), "pk", SHARD, SEQ)[0]
    assert dotted.fields["_id"] == '["shop.cus","tomers","eu",1]' != a
    # key column types are kept: 1 and "1" are different keys
    assert one.decode(dms({"id": "1", "region": "eu"}), "pk", SHARD, SEQ)[0].fields["_id"] == '["shop","customers","eu","1"]'


def test_dms_big_integer_keys_stay_exact():
    payload = b'{"data":{"id":123456789012345678901234567890},"metadata":{"record-type":"data","operation":"insert","schema-name":"s","table-name":"t"}}'
    [record] = decoder("dms").decode(payload, "pk", SHARD, SEQ)
    assert record.fields["_id"] == '["s","t",123456789012345678901234567890]'


def test_dms_primary_key_change_deletes_the_old_document():
    payload = dms({"id": 2, "email": "x"}, before={"id": 1, "email": "x"}, operation="update")
    records = decoder("dms").decode(payload, "pk", SHARD, SEQ)
    assert [(r.sub_sequence_number, r.fields["_op"], r.fields["_id"]) for r in records] == [
        (0, "DELETE", '["shop","customers",1]'),
        (1, "REPSERT", '["shop","customers",2]'),
    ]
    # any before-image field name (BeforeImageSettings.FieldName); a before-image without the key changes nothing
    assert len(decoder("dms").decode(dms({"id": 2}, before={"id": 1}, before_name="old", operation="update"), "pk", SHARD, SEQ)) == 2
    assert len(decoder("dms").decode(dms({"id": 2}, before={"email": "y"}, operation="update"), "pk", SHARD, SEQ)) == 1


@pytest.mark.parametrize("operation", ["create-table", "drop-table", "add-column", "truncate-table"])
def test_dms_control_records_are_skipped_and_counted(operation):
    payload = json.dumps({"metadata": {"record-type": "control", "operation": operation, "schema-name": "shop", "table-name": "t"}}).encode()
    d = decoder("dms")
    assert d.decode(payload, "pk", SHARD, SEQ) == []
    assert d.counters.by_shard[SHARD][CONTROL_SKIPPED] == 1


def test_dms_missing_primary_key_column_is_a_bad_record():
    d = decoder("dms", primary_key=["customer_id"])
    payload = dms()
    [record] = d.decode(payload, "pk", SHARD, SEQ)
    assert record.fields[ERROR_FIELD] == "primary-key column 'customer_id' missing from 'data' of table shop.customers (dms_primary_key)"
    assert raw_of(record.fields) == payload and d.counters.by_shard[SHARD][BAD_KEPT] == 1


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"[]", "not a DMS record: payload is not a JSON object"),
        (b'{"data": {}}', "no 'metadata' object"),
        (b'{"metadata": {"record-type": "other"}}', "record-type is 'other'"),
        (b'{"metadata": {"record-type": "data", "operation": "merge"}}', "unknown metadata.operation"),
        (b'{"metadata": {"record-type": "data", "operation": "insert", "table-name": "t"}}', "without a 'data' object"),
        (b'{"data": {"id": 1}, "metadata": {"record-type": "data", "operation": "insert"}}', "without metadata.table-name"),
    ],
)
def test_dms_malformed_records_are_bad_records(payload, reason):
    [record] = decoder("dms").decode(payload, "pk", SHARD, SEQ)
    assert reason in record.fields[ERROR_FIELD]


@pytest.mark.parametrize(
    "timestamp, fields",
    [
        ("2026-11-25T20:02:00.250000Z", {"_event_time": "2026-11-25T20:02:00.250000Z"}),
        ("2026-11-25T20:02:00.25", {"_event_time": "2026-11-25T20:02:00.250000Z"}),
        ("2026-11-25T21:02:00+01:00", {"_event_time": "2026-11-25T20:02:00.000000Z"}),
        ("yesterday", {"_dms_timestamp": "yesterday"}),
        (12, {"_dms_timestamp": 12}),
    ],
)
def test_dms_event_time_is_normalised_or_the_timestamp_kept_as_sent(timestamp, fields):
    [record] = decoder("dms").decode(dms(timestamp=timestamp), "pk", SHARD, SEQ)
    assert {k: v for k, v in record.fields.items() if k in ("_event_time", "_dms_timestamp")} == fields


def test_dms_gzip_and_one_line_payloads():
    one_line = orjson.dumps(json.loads(dms()))
    assert decoder("dms").decode(gzip.compress(one_line), "pk", SHARD, SEQ)[0].fields["_id"] == '["shop","customers",1]'


# ------------------------------------------------------------------------------------------------------- DynamoDB
def ddb(event_name="INSERT", keys=None, new=None, old=None, created=1795639060456, precision=None, table="Orders"):
    change = {"Keys": keys if keys is not None else {"pk": {"S": "order#42"}, "sk": {"N": "1"}}, "SizeBytes": 10}
    if created is not None:
        change["ApproximateCreationDateTime"] = created
    if precision:
        change["ApproximateCreationDateTimePrecision"] = precision
    if new is not None:
        change["NewImage"] = new
    if old is not None:
        change["OldImage"] = old
    return orjson.dumps(
        {"awsRegion": "us-east-1", "eventID": "e-1", "eventName": event_name, "userIdentity": None, "recordFormat": "application/json", "tableName": table, "dynamodb": change, "eventSource": "aws:dynamodb"}
    )


def test_dynamodb_modify_from_payloads_md():
    [record] = decoder("dynamodb").decode(DYNAMODB_MODIFY, "pk", SHARD, SEQ)
    assert record.fields == {
        "pk": "order#42",
        "sk": 1,
        "total": 19.99,
        "paid": True,
        "_op": "REPSERT",
        "_id": '["Orders",{"pk":"order#42","sk":1}]',
        "_event_time": "2026-11-25T20:37:40.456789Z",
        "_dynamodb_table": "Orders",
        "_dynamodb_event_name": "MODIFY",
        "_dynamodb_event_id": "24757579-ebfd-480a-956d-a1287d2ef707",
        "_dynamodb_user_identity": None,
    }


def test_dynamodb_insert_with_millisecond_time():
    [record] = decoder("dynamodb").decode(ddb(new={"pk": {"S": "order#42"}, "sk": {"N": "1"}, "n": {"NULL": True}}), "pk", SHARD, SEQ)
    assert record.fields["_op"] == "REPSERT" and record.fields["n"] is None
    assert record.fields["_event_time"] == "2026-11-25T20:37:40.456Z"


def test_dynamodb_remove_is_a_delete_with_the_keys_as_fields():
    ttl = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    payload = orjson.loads(ddb("REMOVE", old={"pk": {"S": "order#42"}, "sk": {"N": "1"}, "x": {"S": "gone"}}))
    payload["userIdentity"] = ttl
    [record] = decoder("dynamodb").decode(orjson.dumps(payload), "pk", SHARD, SEQ)
    assert {k: v for k, v in record.fields.items() if not k.startswith("_dynamodb")} == {
        "pk": "order#42",
        "sk": 1,
        "_op": "DELETE",
        "_id": '["Orders",{"pk":"order#42","sk":1}]',
        "_event_time": "2026-11-25T20:37:40.456Z",
    }
    assert record.fields["_dynamodb_user_identity"] == ttl


def test_dynamodb_keys_only_stream_view_is_an_upsert_of_the_keys():
    [record] = decoder("dynamodb").decode(ddb("MODIFY"), "pk", SHARD, SEQ)
    assert record.fields["_op"] == "UPSERT" and record.fields["pk"] == "order#42"


def test_dynamodb_id_is_independent_of_key_order_and_table_scoped():
    a = decoder("dynamodb").decode(ddb(keys={"pk": {"S": "a"}, "sk": {"N": "2"}}), "pk", SHARD, SEQ)[0].fields["_id"]
    b = decoder("dynamodb").decode(ddb(keys={"sk": {"N": "2"}, "pk": {"S": "a"}}), "pk", SHARD, SEQ)[0].fields["_id"]
    c = decoder("dynamodb").decode(ddb(keys={"sk": {"N": "2"}, "pk": {"S": "a"}}, table="Other"), "pk", SHARD, SEQ)[0].fields["_id"]
    assert a == b == '["Orders",{"pk":"a","sk":2}]' and c == '["Other",{"pk":"a","sk":2}]'


def test_dynamodb_unmarshals_every_attribute_type():
    blob = base64.b64encode(b"\x00\xff").decode()
    image = {
        "s": {"S": "text"},
        "n": {"N": "-12"},
        "f": {"N": "19.99"},
        "big": {"N": "123456789012345678901234567890123456"},
        "precise": {"N": "0.12345678901234567890123456789"},
        "b": {"B": blob},
        "bool": {"BOOL": False},
        "null": {"NULL": True},
        "ss": {"SS": ["a", "b"]},
        "ns": {"NS": ["1", "2.5", "1E+2"]},
        "bs": {"BS": [blob]},
        "m": {"M": {"inner": {"L": [{"S": "x"}, {"N": "3"}, {"M": {}}]}}},
        "l": {"L": []},
    }
    [record] = decoder("dynamodb").decode(ddb(new={**image, "pk": {"S": "order#42"}}), "pk", SHARD, SEQ)
    f = record.fields
    assert (f["s"], f["n"], f["f"], f["b"], f["bool"], f["null"]) == ("text", -12, 19.99, blob, False, None)
    assert f["big"] == 123456789012345678901234567890123456 and type(f["big"]) is int
    assert f["precise"] == "0.12345678901234567890123456789"
    assert (f["ss"], f["ns"], f["bs"], f["l"]) == (["a", "b"], [1, 2.5, 100], [blob], [])
    assert f["m"] == {"inner": ["x", 3, {}]}


@pytest.mark.parametrize(
    "text, value",
    [("0", 0), ("-0", 0), ("1.0", 1), ("1E+2", 100), ("1.5E+1", 15), ("9.9999999999999999999999999999999999999E+125", 99999999999999999999999999999999999999 * 10**88),
     ("0.1", 0.1), ("-2.5E-3", -0.0025), ("1E-130", 1e-130), ("3.141592653589793", 3.141592653589793), ("3.1415926535897932384626", "3.1415926535897932384626")],
)
def test_dynamodb_numbers_are_exact(text, value):
    result = dynamodb_number(text)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize("text", ["", "abc", "NaN", "Infinity", "1E+999999999", "1" * 200, 5])
def test_dynamodb_invalid_numbers_raise(text):
    with pytest.raises(ValueError):
        dynamodb_number(text)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"[]", "not a DynamoDB record"),
        (ddb("UPDATE"), "eventName is not INSERT, MODIFY or REMOVE"),
        (b'{"eventName": "INSERT", "tableName": "t"}', "no 'dynamodb' object"),
        (ddb(table=""), "without tableName"),
        (ddb(keys={}), "without dynamodb.Keys"),
        (ddb(new={"a": {"X": "1"}}), "unknown type 'X'"),
        (ddb(new={"a": {"S": 1}}), "S holds a int"),
        (ddb(new={"a": {"S": "x", "N": "1"}}), "expected an object with one type key"),
        (ddb(new={"a": {"N": "zz"}}), "invalid DynamoDB number"),
        (ddb(new=[1]), "NewImage is not an object"),
        (ddb(created="yesterday"), "timestamp is not a number"),
    ],
)
def test_dynamodb_malformed_records_are_bad_records(payload, reason):
    d = decoder("dynamodb")
    [record] = d.decode(payload, "pk", SHARD, SEQ)
    assert reason in record.fields[ERROR_FIELD]
    assert raw_of(record.fields) == payload


def test_dynamodb_without_creation_time_has_no_event_time():
    [record] = decoder("dynamodb").decode(ddb(created=None, new={"pk": {"S": "x"}}), "pk", SHARD, SEQ)
    assert "_event_time" not in record.fields


def test_dynamodb_unmarshal_deeply_nested_maps():
    value = {"S": "leaf"}
    for _ in range(32):  # DynamoDB's own nesting limit
        value = {"M": {"k": value}}
    result = unmarshal(value)
    for _ in range(32):
        result = result["k"]
    assert result == "leaf"


def test_change_event_helpers():
    assert canonical_id(["t", {"b": 1, "a": [2**70, "é"]}]) == '["t",{"a":[1180591620717411303424,"é"],"b":1}]'
    assert iso_from_epoch(0, "ms") == "1970-01-01T00:00:00.000Z"
    assert iso_from_epoch(1795639060456789, "us") == "2026-11-25T20:37:40.456789Z"
    assert iso_from_epoch(-1, "ms") == "1969-12-31T23:59:59.999Z"
    with pytest.raises(ValueError):
        iso_from_epoch(True)
