"""Set-up for Airbyte's standard tests (see connector_folder.py for the connector-folder arrangement).

* Registers the markers the CDK's suites use (``image_tests``, ``requires_creds``), which pytest.ini's
  ``--strict-markers`` would otherwise reject when the suite classes are imported.
* Skips the suites' Docker image tests (``image_tests``): no Docker engine runs here, and they would build the
  images and contact Airbyte's registry. The Dockerfile contract is checked offline by
  unit_tests/test_packaging_contract.py. Set ``STANDARD_TESTS_IMAGES=1`` to run them where Docker is available.
"""
from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "image_tests: Airbyte standard tests that build and run the connector image")
    config.addinivalue_line("markers", "requires_creds: Airbyte standard test scenarios that need real credentials")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if os.environ.get("STANDARD_TESTS_IMAGES") == "1":
        return
    skip = pytest.mark.skip(
        reason="Docker image test: no Docker engine here (the Dockerfile contract is checked by "
        "unit_tests/test_packaging_contract.py); set STANDARD_TESTS_IMAGES=1 to run it"
    )
    for item in items:
        if item.get_closest_marker("image_tests") is not None:
            item.add_marker(skip)
