"""destination-collection: Rockset-style collections (documents keyed by _id, with _event_time, _meta, _op,
an ingest transformation and retention) materialised in DuckDB or PostgreSQL. See docs/destination-collection.md."""
from .destination import DestinationCollection
from .protocol_loop import write_messages

__all__ = ["DestinationCollection", "write_messages"]
