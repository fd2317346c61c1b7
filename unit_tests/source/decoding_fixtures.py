"""Shared helpers for the decoding tests: decoders per format, a log capture, the payload shapes of payloads.md."""
from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from source_kinesis.config import StreamFormat
from source_kinesis.decoding import PayloadDecoder

FIXTURES = Path(__file__).parent / "fixtures"
SHARD = "shardId-000000000007"
SEQ = "49590338271490256608559692538361571095921575989136588898"


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> List[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


def make_logger(name: str = "airbyte.test_decoding") -> tuple[logging.Logger, ListHandler]:
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    handler = ListHandler()
    logger.addHandler(handler)
    return logger, handler


def decoder(fmt: str = "json", on_bad_record: str = "keep", primary_key: Optional[List[str]] = None, logger: Optional[logging.Logger] = None) -> PayloadDecoder:
    settings = StreamFormat(stream="orders", format=fmt, dms_primary_key=primary_key or ["id"])
    return PayloadDecoder("orders", settings, on_bad_record, logger or make_logger()[0])


def decode_one(fmt: str, data: bytes, **kwargs: Any) -> Dict[str, Any]:
    records = decoder(fmt, **kwargs).decode(data, "pk", SHARD, SEQ)
    assert len(records) == 1, records
    return records[0].fields


def raw_of(fields: Dict[str, Any]) -> bytes:
    return base64.b64decode(fields["_kinesis_raw_data"])


def kpl_cases() -> Dict[str, Any]:
    return json.loads((FIXTURES / "kpl_aggregates.json").read_text())["cases"]


# ---- shapes from ../shared/notes/payloads.md (verbatim)
CLOUDWATCH_DATA = b'{"messageType":"DATA_MESSAGE","owner":"123456789012","logGroup":"/aws/lambda/orders","logStream":"2026/11/25/[$LATEST]0123456789abcdef0123456789abcdef","subscriptionFilters":["orders-to-kinesis"],"logEvents":[{"id":"38601243765231451206436357342537654474561386484217790464","timestamp":1795639000000,"message":"START RequestId: 6b1c2d3e-0000-4000-8000-000000000001 Version: $LATEST\\n"},{"id":"38601243765231451206436357342537654474561386484217790465","timestamp":1795639000001,"message":"{\\"level\\":\\"INFO\\",\\"msg\\":\\"order placed\\",\\"order_id\\":42}"}]}'
CLOUDWATCH_CONTROL = b'{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1795639000000,"message":"CWL CONTROL MESSAGE: Checking health of destination Kinesis stream."}]}'
DMS_UPDATE = b'{"data":{"id":102,"email":"b@example.com","status":"active","updated_at":"2026-11-25T20:02:00Z"},"before-image":{"id":102},"metadata":{"timestamp":"2026-11-25T20:02:00.250000Z","record-type":"data","operation":"update","partition-key-type":"schema-table","schema-name":"shop","table-name":"customers","transaction-id":8797811009147502}}'
DYNAMODB_MODIFY = b'{"awsRegion":"us-east-1","eventID":"24757579-ebfd-480a-956d-a1287d2ef707","eventName":"MODIFY","userIdentity":null,"recordFormat":"application/json","tableName":"Orders","dynamodb":{"ApproximateCreationDateTime":1795639060456789,"ApproximateCreationDateTimePrecision":"MICROSECOND","Keys":{"pk":{"S":"order#42"},"sk":{"N":"1"}},"NewImage":{"pk":{"S":"order#42"},"sk":{"N":"1"},"total":{"N":"19.99"},"paid":{"BOOL":true}},"OldImage":{"pk":{"S":"order#42"},"sk":{"N":"1"},"total":{"N":"19.99"},"paid":{"BOOL":false}},"SizeBytes":98},"eventSource":"aws:dynamodb"}'
