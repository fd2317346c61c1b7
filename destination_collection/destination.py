"""The Airbyte destination (CDK ``Destination``): spec, check and write."""
from __future__ import annotations

import json
import logging
from importlib import resources
from typing import Any, Iterable, Iterator, Mapping

from airbyte_cdk.destinations import Destination
from airbyte_cdk.models import (
    AirbyteConnectionStatus,
    AirbyteMessage,
    AirbyteMessageSerializer,
    ConfiguredAirbyteCatalog,
    ConnectorSpecification,
    ConnectorSpecificationSerializer,
    Status,
)
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from .config import parse_config
from .protocol_loop import write_messages
from .stores import open_store
from .transformation import check_sql


def raw_spec() -> dict[str, Any]:
    """spec.json as written (keeps ``supportsRefreshes``, which the CDK's model does not know)."""
    return json.loads(resources.files("destination_collection").joinpath("spec.json").read_text("utf-8"))


class DestinationCollection(Destination):
    def spec(self, logger: logging.Logger) -> ConnectorSpecification:
        return ConnectorSpecificationSerializer.load(raw_spec())

    def check(self, logger: logging.Logger, config: Mapping[str, Any]) -> AirbyteConnectionStatus:
        try:
            parsed = parse_config(config)
            for item in parsed.collections:
                if item.transformation_sql:
                    check_sql(item.transformation_sql, item.stream)
            store = open_store(parsed)
            try:
                with store.transaction():
                    store.catalog.ensure_metadata()
            finally:
                store.close()
        except AirbyteTracedException as exc:
            return AirbyteConnectionStatus(status=Status.FAILED, message=exc.message)
        except Exception as exc:  # unexpected: still a clear FAILED status, never a password
            return AirbyteConnectionStatus(status=Status.FAILED, message=f"{type(exc).__name__}: {exc}")
        return AirbyteConnectionStatus(status=Status.SUCCEEDED)

    def write_raw(
        self, config: Mapping[str, Any], configured_catalog: ConfiguredAirbyteCatalog, input_messages: Iterable[Any]
    ) -> Iterator[dict[str, Any]]:
        """Echoed STATE messages as dicts, exactly as received plus destinationStats (used by the CLI)."""
        yield from write_messages(config, configured_catalog, input_messages)

    def write(
        self, config: Mapping[str, Any], configured_catalog: ConfiguredAirbyteCatalog, input_messages: Iterable[AirbyteMessage]
    ) -> Iterable[AirbyteMessage]:
        """CDK interface. Note: the CDK model drops unknown state fields; the CLI uses write_raw instead."""
        for echo in self.write_raw(config, configured_catalog, input_messages):
            yield AirbyteMessageSerializer.load(echo)
