"""Packaging for both connectors of this repository.

One distribution installs two independent packages and their console scripts:
``source-kinesis`` (``source_kinesis``) and ``destination-collection`` (``destination_collection``).
They share no code; they only agree on the record contract documented in README.md.
"""
from setuptools import find_packages, setup

SOURCE_REQUIRES = [
    "airbyte-cdk>=7.0,<8",
    "boto3>=1.34,<2",
    "botocore>=1.34,<2",
    "tenacity>=8.2,<10",
    "pydantic>=2.5,<3",
    "orjson>=3.9,<4",
]

DESTINATION_REQUIRES = [
    "airbyte-cdk>=7.0,<8",
    "duckdb>=1.1,<2",
    "psycopg[binary]>=3.1,<4",
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

setup(
    name="airbyte-kinesis-collections",
    version="0.1.1",
    description="Airbyte source for Amazon Kinesis Data Streams and a destination for Rockset-style collections",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11,<3.14",
    packages=find_packages(
        include=["source_kinesis", "source_kinesis.*", "destination_collection", "destination_collection.*", "collection_runner", "collection_runner.*"]
    ),
    package_data={
        "source_kinesis": ["spec.json", "schemas/*.json"],
        "destination_collection": ["spec.json", "*.json"],
    },
    install_requires=sorted(set(SOURCE_REQUIRES + DESTINATION_REQUIRES)),
    extras_require={"tests": TEST_REQUIRES},
    entry_points={
        "console_scripts": [
            "source-kinesis=source_kinesis.run:run",
            "destination-collection=destination_collection.run:run",
            "kinesis-collection=collection_runner.cli:run",
        ]
    },
)
