"""Packaging for both connectors of this repository and the runner.

By default (``pip install .``) one distribution installs the three packages, their dependencies and console
scripts: ``source-kinesis`` (``source_kinesis``), ``destination-collection`` (``destination_collection``) and
``kinesis-collection`` (``collection_runner``, which runs the other two in one process). The connectors share no
code; they only agree on the record contract documented in README.md.

``KINESIS_COLLECTIONS_TARGET=source`` or ``=destination`` installs one connector alone, with only what it needs (the
Docker image's targets do; the source's image then has no duckdb, pyarrow or psycopg, the destination's no boto3),
and no runner: it needs both. ``integration_tests/test_lean_installs.py`` proves each set in a fresh venv.
"""
import os

from setuptools import find_packages, setup

SOURCE_REQUIRES = [
    "airbyte-cdk>=7.0,<8",
    "boto3>=1.34,<2",
    "botocore>=1.34,<2",
    "tenacity>=8.2,<10",
    "pydantic>=2.5,<3",
    "orjson>=3.9,<4",
    "httpx[http2]>=0.27,<1",  # enhanced fan-out: SubscribeToShard over HTTP/2 (fanout_transport.py)
]

DESTINATION_REQUIRES = [
    "airbyte-cdk>=7.0,<8",
    "duckdb>=1.1,<2",
    "psycopg[binary]>=3.1,<4",
    "asyncssh[bcrypt]>=2.14,<3",  # PostgreSQL's SSH tunnel (stores/ssh_tunnel.py)
    "cryptography>=41",  # checks the PEM certificates and keys of store.ssl_mode (stores/postgres_tls.py)
    "pyarrow>=14,<27",
    "jsonschema>=4.17,<5",
    "pydantic>=2.5,<3",
    "orjson>=3.9,<4",
]

TEST_REQUIRES = [
    "pytest>=7.4,<10",
    "pytest-timeout>=2.2,<3",
    "pytest-xdist>=3.5,<4",
    "hypothesis>=6.90,<7",
    "moto[server]>=5.2,<5.3",
    "aws-kinesis-agg>=1.2,<2",
    "six>=1.16",
    "airbyte-connector-models>=0.1.12,<0.2",  # Airbyte's metadata.yaml model (unit_tests/test_packaging_contract.py)
]

PACKAGES = {"source": ["source_kinesis"], "destination": ["destination_collection"], "runner": ["collection_runner"]}
SCRIPTS = {
    "source": ["source-kinesis=source_kinesis.run:run"],
    "destination": ["destination-collection=destination_collection.run:run"],
    "runner": ["kinesis-collection=collection_runner.cli:run"],
}
REQUIRES = {"source": SOURCE_REQUIRES, "destination": DESTINATION_REQUIRES, "runner": []}
TARGETS = {"all": ["source", "destination", "runner"], "source": ["source"], "destination": ["destination"]}
TARGET = os.environ.get("KINESIS_COLLECTIONS_TARGET", "").strip().lower() or "all"
if TARGET not in TARGETS:
    raise SystemExit(
        f"KINESIS_COLLECTIONS_TARGET={TARGET!r}: expected source, destination or all (the default: everything)"
    )
PARTS = TARGETS[TARGET]

setup(
    name="airbyte-kinesis-collections",
    version="0.1.5",
    description="Airbyte source for Amazon Kinesis Data Streams and a destination for Rockset-style collections",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.14",
    packages=find_packages(include=[f"{package}{suffix}" for part in PARTS for package in PACKAGES[part] for suffix in ("", ".*")]),
    package_data={
        "source_kinesis": ["spec.json", "schemas/*.json"],
        "destination_collection": ["spec.json", "*.json"],
    },
    install_requires=sorted({requirement for part in PARTS for requirement in REQUIRES[part]}),
    extras_require={"tests": TEST_REQUIRES},
    entry_points={"console_scripts": [script for part in PARTS for script in SCRIPTS[part]]},
)
