"""Fixtures of the reliability suite (issue 7) and the RELIABILITY.md report (see report.py)."""
from __future__ import annotations

import pytest

from integration_tests.reliability import report

EXPIRY = "integration_tests/reliability/test_iterator_expiry.py"


def pytest_configure(config):
    report.register(config)


def pytest_collection_modifyitems(session, config, items):
    """Run the 300 s iterator-expiry tests first: with ``pytest -n 2`` one worker spends their wait while the
    other runs the rest of the suite, instead of the wait starting at the end and adding 5 minutes."""
    first = [item for item in items if item.nodeid.startswith(EXPIRY)]
    if first:
        rest = [item for item in items if not item.nodeid.startswith(EXPIRY)]
        items[:] = first + rest


@pytest.fixture
def reliability(request):
    """``reliability(trials=1, kills=2)``: numbers for RELIABILITY.md, summed per part."""
    return lambda **numbers: report.record(request, **numbers)
