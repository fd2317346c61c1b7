"""Console entry point ``source-kinesis``: spec | check --config | discover --config | read --config --catalog [--state]."""
import sys

from airbyte_cdk.entrypoint import launch

from source_kinesis.source import SourceKinesis


def run() -> None:
    launch(SourceKinesis(), sys.argv[1:])


if __name__ == "__main__":
    run()
