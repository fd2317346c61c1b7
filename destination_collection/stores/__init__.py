"""Collection stores: DuckDB (embedded file, the default) and PostgreSQL; both implement stores.base.Store."""
from __future__ import annotations

from ..config import DestinationConfig, DuckDBStoreConfig
from .base import GLOBAL_STATE_KEY, Store


def open_store(config: DestinationConfig, read_only: bool = False) -> Store:
    if isinstance(config.store, DuckDBStoreConfig):
        from .duckdb_store import DuckDBStore

        return DuckDBStore(
            config.store.resolved_path(), read_only=read_only, memory_limit=config.store.memory_limit,
            temp_directory=config.store.resolved_temp_directory(),
            checkpoint_threshold=config.store.checkpoint_threshold, threads=config.store.threads,
            background_commit=config.store.background_commit,
            set_based_batches=config.store.set_based_batches,
        )
    from .postgres_store import PostgresStore

    return PostgresStore(config.store, read_only=read_only)


__all__ = ["GLOBAL_STATE_KEY", "Store", "open_store"]
