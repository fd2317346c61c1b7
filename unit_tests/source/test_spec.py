"""spec.json follows Airbyte's spec rules (oneOf, secrets, additionalProperties) and agrees with the config model."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest

import source_kinesis
from source_kinesis.config import ROLE_ARN_RE, SourceConfig
from source_kinesis.source import SourceKinesis

SPEC_PATH = Path(source_kinesis.__file__).parent / "spec.json"
SPEC = json.loads(SPEC_PATH.read_text())
CONNECTION = SPEC["connectionSpecification"]
FORBIDDEN = ("anyOf", "allOf", "not", "if", "then", "else", "patternProperties")
SECRET_NAME = re.compile(r"secret|password|token|^aws_access_key_id$")


def walk(node: Any, path: str = "$") -> Iterator[Tuple[str, Any]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")


def schema_nodes() -> List[Tuple[str, dict]]:
    """Every schema object (skips `examples`/`default` values, which are data, not schemas)."""
    out = []
    for path, node in walk(CONNECTION):
        if ".examples" in path or ".default" in path:
            continue
        out.append((path, node))
    return out


def properties_named() -> List[Tuple[str, str, dict]]:
    out = []
    for path, node in schema_nodes():
        for name, prop in (node.get("properties") or {}).items():
            out.append((path, name, prop))
    return out


def test_top_level_shape() -> None:
    assert SPEC["documentationUrl"].startswith("https://")
    assert CONNECTION["type"] == "object"
    assert CONNECTION["$schema"].startswith("http://json-schema.org/")
    assert CONNECTION["additionalProperties"] is True
    assert set(CONNECTION["required"]) == {"credentials", "region", "streams"}
    assert CONNECTION["title"]


@pytest.mark.parametrize("keyword", FORBIDDEN)
def test_no_forbidden_keywords(keyword: str) -> None:
    # a *property* called e.g. "not" would be fine; only schema keywords count
    offenders = [path for path, node in schema_nodes() if keyword in node and not path.endswith(".properties")]
    assert offenders == []


def test_additional_properties_always_true() -> None:
    bad = [path for path, node in schema_nodes() if "additionalProperties" in node and node["additionalProperties"] is not True]
    assert bad == []


ONE_OF_KEYS = {  # each choice: its discriminator property and its options' constants
    "$.properties.credentials": ("auth_type", ["access_keys", "default_chain", "iam_role"]),
    "$.properties.start_position": ("position", ["AT_TIMESTAMP", "LATEST", "TRIM_HORIZON"]),
    "$.properties.read_mode": ("mode", ["enhanced_fan_out", "polling"]),
}


def test_one_of_rules() -> None:
    one_ofs = [(path, node) for path, node in schema_nodes() if "oneOf" in node]
    assert [p for p, _ in one_ofs] == list(ONE_OF_KEYS)
    for path, parent in one_ofs:
        key, expected = ONE_OF_KEYS[path]
        assert parent["type"] == "object", path
        options = parent["oneOf"]
        assert len(options) >= 2
        consts = []
        for option in options:
            assert option["type"] == "object"
            with_const = {name for name, prop in option["properties"].items() if "const" in prop}
            assert with_const == {key}, option["title"]
            prop = option["properties"][key]
            assert "default" not in prop and "enum" not in prop
            assert key in option["required"]
            consts.append(prop["const"])
        assert sorted(consts) == expected
        assert len(set(consts)) == len(consts)


def test_secret_looking_properties_are_airbyte_secret() -> None:
    secretish = [(p, n, prop) for p, n, prop in properties_named() if SECRET_NAME.search(n)]
    assert {n for _, n, _ in secretish} >= {"aws_access_key_id", "aws_secret_access_key", "aws_session_token"}
    for path, name, prop in secretish:
        assert prop.get("airbyte_secret") is True, f"{path}.{name}"


def test_iam_role_option_is_first_and_access_keys_deprecated() -> None:
    options = CONNECTION["properties"]["credentials"]["oneOf"]
    assert options[0]["properties"]["auth_type"]["const"] == "iam_role"
    assert "recommended" in options[0]["title"].lower()
    keys = next(o for o in options if o["properties"]["auth_type"]["const"] == "access_keys")
    assert "deprecated" in keys["title"].lower()
    role = options[0]
    assert set(role["required"]) == {"auth_type", "role_arn", "external_id"}


ROLE_PATTERN = CONNECTION["properties"]["credentials"]["oneOf"][0]["properties"]["role_arn"]["pattern"]

GOOD_ARNS = [
    "arn:aws:iam::123456789012:role/airbyte-kinesis-reader",
    "arn:aws-cn:iam::123456789012:role/reader",
    "arn:aws-us-gov:iam::123456789012:role/reader",
    "arn:aws-iso-b:iam::123456789012:role/reader",
    "arn:aws:iam::123456789012:role/path/to/role+name=,.@_-",
]
BAD_ARNS = [
    "arn:aws:iam::12345678901:role/short-account",
    "arn:aws:iam::123456789012:user/not-a-role",
    "arn:aws:sts::123456789012:assumed-role/reader/session",
    "arn:gcp:iam::123456789012:role/reader",
    "arn:aws:iam::123456789012:role/",
    "arn:aws:iam:us-east-1:123456789012:role/regional",
    "arn:AWS:iam::123456789012:role/reader",
    "reader",
    "arn:aws:iam::123456789012:role/with space",
    " arn:aws:iam::123456789012:role/reader",
]


@pytest.mark.parametrize("arn", GOOD_ARNS)
def test_role_arn_pattern_accepts_every_partition(arn: str) -> None:
    assert re.search(ROLE_PATTERN, arn)
    assert ROLE_ARN_RE.match(arn)


@pytest.mark.parametrize("arn", BAD_ARNS)
def test_role_arn_pattern_rejects_malformed(arn: str) -> None:
    assert not re.search(ROLE_PATTERN, arn)
    assert not ROLE_ARN_RE.match(arn)


def test_spec_and_model_patterns_agree() -> None:
    assert ROLE_PATTERN == ROLE_ARN_RE.pattern
    props = CONNECTION["properties"]
    assert props["region"]["pattern"] == SourceConfig.model_fields["region"].metadata[0].pattern
    assert props["endpoint_url"]["pattern"] == SourceConfig.model_fields["endpoint_url"].metadata[0].pattern


def test_spec_defaults_match_model_defaults() -> None:
    fields = SourceConfig.model_fields
    for name, prop in CONNECTION["properties"].items():
        if "default" not in prop:
            continue
        model_default = fields[name].get_default(call_default_factory=True)
        assert model_default == prop["default"], name


def test_spec_enums_match_model_literals() -> None:
    props = CONNECTION["properties"]
    options = props["start_position"]["oneOf"]
    assert [o["properties"]["position"]["const"] for o in options] == ["TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"]
    assert [sorted(o["required"]) for o in options] == [["position"], ["position"], ["position", "timestamp"]]
    assert "start_timestamp" not in props  # only inside the AT_TIMESTAMP choice
    assert SourceConfig.model_fields["start_position"].default == "TRIM_HORIZON"
    assert props["stale_checkpoint"]["enum"] == ["restart", "fail"]


def test_read_budget_defaults_are_under_the_kinesis_quota() -> None:
    props = CONNECTION["properties"]
    assert props["get_records_per_second"]["default"] < 5 and props["get_records_per_second"]["maximum"] <= 5
    assert props["megabytes_per_second"]["default"] < 2 and props["megabytes_per_second"]["maximum"] <= 2
    assert props["records_per_call"]["maximum"] == 10000


def test_every_property_has_a_title_and_order() -> None:
    for name, prop in CONNECTION["properties"].items():
        assert prop.get("title"), name
        assert isinstance(prop.get("order"), int), name
    orders = [p["order"] for p in CONNECTION["properties"].values()]
    assert len(orders) == len(set(orders))


def test_source_spec_loads_package_data() -> None:
    spec = SourceKinesis().spec(logging.getLogger("test"))
    assert spec.connectionSpecification == CONNECTION
    assert str(spec.documentationUrl) == SPEC["documentationUrl"] or spec.documentationUrl == SPEC["documentationUrl"]
