import pytest

from unit_tests.destination.harness import Harness


@pytest.fixture
def duckdb_path(tmp_path):
    return str(tmp_path / "collections.duckdb")


@pytest.fixture
def harness(duckdb_path):
    return Harness({"store_type": "duckdb", "path": duckdb_path})
