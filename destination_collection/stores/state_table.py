"""``_collection_state``: the latest committed state per stream, written in the same transaction as the data it covers
(``stream_key`` = name, or ``namespace.name``; ``__global__`` for a GLOBAL/LEGACY state). The table is created with
the other metadata tables (``collection_catalog.CollectionCatalog.ensure_metadata``); one per store
(``Store.states``)."""
from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from .. import jsonio
from ..naming import STATE_TABLE

if TYPE_CHECKING:
    from .base import Store

GLOBAL_STATE_KEY = "__global__"


class StateTable:
    def __init__(self, store: "Store"):
        self.store = store

    def save(self, stream_key: str, state_type: str, namespace: str | None, stream: str | None, state_json: str) -> None:
        store = self.store
        store.execute(
            f"INSERT INTO {store.q(STATE_TABLE)} (stream_key, state_type, namespace, stream, state_json, committed_at) "
            f"VALUES ({', '.join([store.param] * 6)}) ON CONFLICT (stream_key) DO UPDATE SET "
            f"state_type = excluded.state_type, namespace = excluded.namespace, stream = excluded.stream, "
            f"state_json = excluded.state_json, committed_at = excluded.committed_at",
            [stream_key, state_type, namespace, stream, state_json, dt.datetime.now(dt.timezone.utc)],
        )

    def committed(self) -> dict[str, str]:
        """Latest committed state per stream key: the raw JSON of the echoed ``state`` object."""
        store = self.store
        if not store.table_exists(STATE_TABLE):
            return {}
        return dict(store.fetchall(f"SELECT stream_key, state_json FROM {store.q(STATE_TABLE)} ORDER BY stream_key"))

    def messages(self) -> list[dict[str, Any]]:
        """The committed states as a list of state objects, ready for a source's ``--state`` (or ``state=``)."""
        return [jsonio.loads(text) for text in self.committed().values()]

    def rows(self) -> list[dict[str, Any]]:
        return self.store.table_rows(
            STATE_TABLE, "stream_key, state_type, namespace, stream, state_json, committed_at", "stream_key"
        )
