"""Connector folders for Airbyte's standard tests, built in a temporary directory.

The standard tests (``airbyte_cdk.test.standard_tests``) read their inputs from a *connector folder*: a directory
named ``source-…`` or ``destination-…`` that holds ``metadata.yaml`` and ``acceptance-test-config.yml``, the
layout of Airbyte's monorepo. This repository keeps both connectors at its top level, so no folder has that shape.

Instead of committing a copy of each metadata file (which would drift), each test process builds the folders
in a fresh temporary directory the first time a suite asks for its root (at collection, since the suite reads
``acceptance-test-config.yml`` to parametrize its tests):

    <tmp>/source-kinesis/
        metadata.yaml                      copied from the repository's top-level metadata.yaml
        acceptance-test-config.yml         copied from integration_tests/standard/source-kinesis/
        integration_tests/…                copied from integration_tests/standard/source-kinesis/integration_tests/
        secrets/config.json                written at test time (points at this process's kinesis-mock)

So the tests work from any clone directory, in parallel processes (each has its own folder and emulator), and
leave nothing in the checkout. The folders are removed when the process exits.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

# connector folder name -> the metadata.yaml it gets (the same files the contract tests validate)
METADATA = {
    "source-kinesis": REPO / "metadata.yaml",
    "destination-collection": REPO / "destination_collection" / "metadata.yaml",
}


@lru_cache(maxsize=None)
def _workspace() -> Path:
    root = Path(tempfile.mkdtemp(prefix="airbyte-standard-tests-"))
    atexit.register(shutil.rmtree, root, True)
    return root


@lru_cache(maxsize=None)
def connector_folder(name: str) -> Path:
    """The connector folder ``<tmp>/<name>/`` for this process, built once."""
    inputs = HERE / name
    if not METADATA[name].is_file():
        raise FileNotFoundError(f"{METADATA[name]} is missing: the standard tests need it in the '{name}' folder")
    folder = _workspace() / name
    shutil.copytree(inputs, folder, dirs_exist_ok=True)
    shutil.copyfile(METADATA[name], folder / "metadata.yaml")
    (folder / "secrets").mkdir(exist_ok=True)
    return folder
