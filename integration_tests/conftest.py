import itertools

import pytest

from integration_tests.kinesis_mock import KinesisMock, create_stream

_names = itertools.count()


@pytest.fixture(scope="session")
def kinesis_mock():
    """One kinesis-mock per test session (per xdist worker), on 127.0.0.1, stopped by PID at the end."""
    with KinesisMock() as mock:
        yield mock


@pytest.fixture
def kinesis(kinesis_mock):
    return kinesis_mock.client()


@pytest.fixture
def new_stream(kinesis, request):
    """Factory: create a fresh stream with a unique name and return its name."""

    def make(shards: int = 2, prefix: str = "it") -> str:
        name = f"{prefix}-{request.node.name[:40].replace('[', '-').replace(']', '')}-{next(_names)}"
        create_stream(kinesis, name, shards)
        return name

    return make
