"""Fixtures for the destination's PostgreSQL tests: one throwaway server per session (per xdist worker), one
fresh schema per test."""
import itertools
import re

import pytest

from integration_tests.postgres_server import PostgresServer
from unit_tests.destination.harness import Harness

_schemas = itertools.count()


@pytest.fixture(scope="session")
def postgres_server():
    with PostgresServer() as server:
        yield server


@pytest.fixture
def pg_store_config(postgres_server, request):
    schema = f"t{next(_schemas)}_" + re.sub(r"[^a-z0-9_]", "_", request.node.name.lower())[:40]
    return postgres_server.store_config(schema=schema)


@pytest.fixture
def harness(pg_store_config):
    return Harness(pg_store_config)
