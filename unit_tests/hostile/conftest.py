"""Hostile-input corpus (issue 7, part 5): results go to RELIABILITY.md (integration_tests/reliability/report.py)."""
from __future__ import annotations

import pytest

from integration_tests.reliability import report


def pytest_configure(config):
    report.register(config)


@pytest.fixture
def reliability(request):
    return lambda **numbers: report.record(request, **numbers)
