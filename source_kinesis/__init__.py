"""Airbyte source for Amazon Kinesis Data Streams (entry point: source_kinesis.run, connector: source_kinesis.source)."""
