"""Retention: documents whose ``_event_time`` is older than the collection's ``retention_secs`` are purged.

Purging runs once the first batch is committed, then at most every ``PURGE_EVERY_SECS`` while a sync runs, and
at the end of every sync; each purge is its own transaction and logs how many documents it removed. The count
accumulates in ``_collection_catalog.purged_documents`` (shown by ``stats``).
"""
from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .collection_writer import CollectionWriter

logger = logging.getLogger("airbyte")
PURGE_EVERY_SECS = 60.0


def retention_cutoff(retention_secs: int, now: dt.datetime | None = None) -> dt.datetime:
    return (now or dt.datetime.now(dt.timezone.utc)) - dt.timedelta(seconds=retention_secs)


def purge_expired(writer: "CollectionWriter") -> int:
    seconds = writer.settings.retention_secs
    if not seconds:
        return 0
    cutoff = retention_cutoff(seconds)
    with writer.store.transaction():
        purged = writer.store.purge_older_than(writer.table, cutoff)
    writer.stats.purged += purged
    logger.info(
        f"Collection {writer.table}: retention of {seconds}s purged {purged} document(s) with _event_time "
        f"before {cutoff.isoformat()}."
    )
    return purged
