"""The write loop: Airbyte messages in, committed data and echoed states out.

``write_messages(config, catalog, messages)`` is a generator usable in-process (a runner can feed it the source's
messages directly) and by the ``write`` command (fed stdin lines). Messages may be raw JSON lines (str/bytes),
dicts, CDK ``AirbyteMessage`` objects, or ``JsonRecord``s (a RECORD whose data its producer already holds as JSON
text: buffered as that text, never parsed or re-serialized on the set-based path). It yields each echoed STATE
message as a dict.

Guarantees:

* A state is yielded only after the transaction holding every record before it has committed. That transaction
  also stores the state in ``_collection_state`` (the store is the state's home: ``store.states.committed()``).
* The echo is the state exactly as received (``state.id`` and unknown fields included: the raw JSON is kept, not
  the CDK model, which drops unknown fields), plus ``destinationStats.recordCount`` = records of that stream (all
  streams for a GLOBAL state) received since its previous state.
* Flushes: a stream's buffer reaches ``batch_size`` records, or the buffers of ALL streams together reach
  ``batch_max_bytes`` input bytes (a record that would take them past ``batch_max_bytes`` first commits every
  buffer, in one transaction, so memory is bounded by ``batch_max_bytes`` however many streams there are; a record
  bigger than that is its own batch: never refused); a STATE arrives (STREAM state: that stream; GLOBAL/LEGACY:
  all streams, one transaction) and is not held (group commit, see ``HOLD_FACTOR``: a state arriving soon after a
  costly commit waits for the next commit, which takes it and the records it covers); the oldest buffered record or
  held state is older than ``flush_interval_secs`` (checked as messages arrive); the stream's ``STREAM_STATUS
  COMPLETE`` (then older generations are removed in the same transaction); end of input. A full buffer is committed
  before the next message is handled, or in the same transaction as that message when it is a STATE covering the
  stream.
* Malformed lines and records of streams missing from the catalog are counted and skipped; once everything else
  is committed the run fails with a message giving the counts.
* A batch the store cannot hold in memory (``MemoryError``, e.g. DuckDB past ``store.memory_limit``) fails the run
  with a ``config_error`` naming the stream(s), the batch and the settings to change: the same batch would fail the
  same way on a retry, so Airbyte must not retry it unchanged.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, NamedTuple

from airbyte_cdk.models import (
    AirbyteMessage,
    AirbyteMessageSerializer,
    ConfiguredAirbyteCatalog,
    ConfiguredAirbyteCatalogSerializer,
    FailureType,
)
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

import orjson

from . import jsonio
from .collection_writer import CollectionWriter, stream_key
from .config import DestinationConfig, DuckDBStoreConfig, parse_config
from .retention import PURGE_EVERY_SECS, purge_expired
from .stores import GLOBAL_STATE_KEY, Store, open_store

logger = logging.getLogger("airbyte")
MAX_SAMPLES = 3
# Group commit. A commit's lookup of stored documents reads the collection's whole _id column (DuckDB has no index it
# uses for joins), and its delete scans the row ids (DuckDB) or walks an _id index bigger than the cache (PostgreSQL):
# ~0.2 s per commit at 10 M documents however few records it carries. So a STATE is committed at once only if the
# time since the last commit is at least HOLD_FACTOR times that commit's lookup and delete; otherwise it is held (not
# echoed) and joins the next commit, which also takes the records it covers. Where those are cheap next to the time
# between states (up to ~1 M documents; a follow-mode source checkpointing every 0.5 s) every state commits as it
# arrives; a state is never held longer than flush_interval_secs (checked as messages arrive, as for records).
HOLD_FACTOR = 16
# A batch keeps ~5 containers per buffered record alive until its flush, so the cyclic GC's default first threshold
# (700 allocations) walks the same young records over and over (~3 us per record, ~10 % of a write). During a
# write the first threshold is raised; objects are still freed by reference counting as before, only the search
# for reference cycles runs less often. Restored when the last running write loop ends.
GC_FIRST_THRESHOLD = 50_000
_gc_lock = threading.Lock()
_gc_users = 0
_gc_saved: tuple[int, ...] | None = None


@contextlib.contextmanager
def _fewer_gc_passes() -> Iterator[None]:
    global _gc_users, _gc_saved
    with _gc_lock:
        if _gc_users == 0:
            _gc_saved = gc.get_threshold()
            gc.set_threshold(max(_gc_saved[0], GC_FIRST_THRESHOLD), *_gc_saved[1:])
        _gc_users += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_users -= 1
            if _gc_users == 0 and _gc_saved is not None:
                gc.set_threshold(*_gc_saved)
                _gc_saved = None


class JsonRecord(NamedTuple):
    """A RECORD given by an in-process producer that holds its data as JSON text: ``data`` is the text of a JSON object
    exactly as ``orjson.dumps`` writes it (valid JSON, no integer past 64 bits); ``size`` its input bytes for
    ``batch_max_bytes``. The same record as a RECORD line gives the same documents (the differential tests)."""

    stream: str
    namespace: str | None
    data: str
    emitted_at: Any
    size: int


def write_messages(
    config: DestinationConfig | Mapping[str, Any],
    catalog: ConfiguredAirbyteCatalog | Mapping[str, Any],
    messages: Iterable[Any],
    store: Store | None = None,
) -> Iterator[dict[str, Any]]:
    """Write ``messages``; yield each echoed STATE message (a dict) once its data is committed."""
    yield from WriteLoop(config, catalog, store=store).run(messages)


def record_size(data: Any) -> int:
    """Input bytes of a record given as an object (in-process callers): its data's JSON length, as in a line."""
    try:
        return len(orjson.dumps(data))
    except (TypeError, orjson.JSONEncodeError):  # integers past 64 bits, unusual types: the exact encoder
        try:
            return len(jsonio.dumps(data))
        except Exception:  # not JSON at all: still never free, so it cannot slip past batch_max_bytes unnoticed
            return max(1, len(repr(data)))


def _is_object(value: Any) -> bool:
    """An object, or absent (null): handlers treat a missing part as empty."""
    return value is None or isinstance(value, dict)


def shape_problem(message: dict[str, Any]) -> str | None:
    """Why a message cannot be used (its parts that must be objects are not), or None. Checked once per message so
    the handlers below can rely on the shape: a hostile line is counted as malformed, never a traceback."""
    kind = message.get("type")
    if kind == "RECORD":
        if not _is_object(message.get("record")):
            return "a RECORD whose 'record' is not an object"
    elif kind == "STATE":
        return _described_part_problem(message, "STATE", "state", "stream")
    elif kind == "TRACE":
        return _described_part_problem(message, "TRACE", "trace", "stream_status")
    return None


def _described_part_problem(message: dict[str, Any], kind: str, part: str, described: str) -> str | None:
    """``message[part]`` must be an object; its ``described`` member, when present, an object whose
    ``stream_descriptor`` (when present) is an object too."""
    value = message.get(part)
    if not _is_object(value):
        return f"a {kind} whose '{part}' is not an object"
    inner = (value or {}).get(described)
    if inner is not None and not (_is_object(inner) and _is_object(inner.get("stream_descriptor") or {})):
        return f"a {kind} whose '{described}' or 'stream_descriptor' is not an object"
    return None


class WriteLoop:
    def __init__(
        self,
        config: DestinationConfig | Mapping[str, Any],
        catalog: ConfiguredAirbyteCatalog | Mapping[str, Any],
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config if isinstance(config, DestinationConfig) else parse_config(config)
        self.catalog = (
            catalog
            if isinstance(catalog, ConfiguredAirbyteCatalog)
            else ConfiguredAirbyteCatalogSerializer.load(dict(catalog))
        )
        self._own_store = store is None
        self.store = store
        self.clock = clock
        self.writers: dict[tuple[str | None, str], CollectionWriter] = {}
        self._by_name: dict[str, list[CollectionWriter]] = {}
        self.records_since_global_state = 0
        self.malformed = 0
        self.malformed_samples: list[str] = []
        self.unknown_streams: dict[str, int] = {}
        self._last_purge: float | None = None
        self._deadline: float | None = None  # when the oldest buffered record is due (flush_interval_secs)
        # writers whose buffer reached batch_size: committed before the next message is handled, or together with
        # it when that message is a STATE covering them (one transaction for records + state, not two)
        self._full: list[CollectionWriter] = []
        # input bytes buffered over all writers: bounded by batch_max_bytes (one bound for the whole process, so 100
        # streams cannot each hold a nearly full batch); recomputed after every commit
        self._buffered_total = 0
        # state echoes whose transaction was handed to the store; yielded once the store says its COMMIT finished
        # (the DuckDB store commits on a background thread while the next batch is read and prepared)
        self._echoes: list[dict[str, Any]] = []
        # STATEs received but not committed yet (group commit, see HOLD_FACTOR), in arrival order: (echo, state row,
        # the writers whose records it covers)
        self._held: list[tuple[dict[str, Any], tuple[str, str, str | None, str | None, str], list[CollectionWriter]]] = []
        self._held_since: float | None = None  # when the oldest held state arrived
        self._last_commit_at: float | None = None  # the loop's clock when the last commit's store work ended
        self._last_lookup_seconds = 0.0  # what that commit's lookups and deletes of stored documents took

    # -- setup ------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        if self.store is None:
            self.store = open_store(self.config)
        tables: dict[str, str] = {}
        for configured in self.catalog.streams:
            writer = CollectionWriter(self.store, configured, self.config)
            if writer.table in tables:
                raise AirbyteTracedException(
                    message=(
                        f"Streams '{tables[writer.table]}' and '{writer.key}' map to the same collection "
                        f"{writer.table}; rename one stream or change collection_prefix."
                    ),
                    failure_type=FailureType.config_error,
                )
            tables[writer.table] = writer.key
            self.writers[(configured.stream.namespace, configured.stream.name)] = writer
            self._by_name.setdefault(configured.stream.name, []).append(writer)
        # the metadata tables in a transaction of their own: it holds the schema's metadata-DDL lock (PostgreSQL), which
        # other writers sharing the schema wait on, while the writers' DDL below may wait on locks of users' queries
        self.store.catalog.ensure_metadata()
        with self.store.transaction():
            for writer in self.writers.values():
                writer.open()
        for writer in self.writers.values():
            logger.info(
                f"Stream '{writer.key}' → collection {writer.table} ({writer.mode}, generation "
                f"{writer.plan.write_generation}, {'replaces older generations on completion' if writer.plan.truncates else 'keeps older generations'})."
            )

    def _writer(self, name: str | None, namespace: str | None) -> CollectionWriter | None:
        if name is None:
            return None
        writer = self.writers.get((namespace, name))
        if writer is None and namespace is None:
            candidates = self._by_name.get(name, [])
            if len(candidates) == 1:
                writer = candidates[0]
        return writer

    # -- the loop ---------------------------------------------------------------------------------------------
    def run(self, messages: Iterable[Any]) -> Iterator[dict[str, Any]]:
        with _fewer_gc_passes():
            yield from self._run(messages)

    def _run(self, messages: Iterable[Any]) -> Iterator[dict[str, Any]]:
        self._open()
        try:
            line_number = 0
            for item in messages:
                line_number += 1
                if type(item) is JsonRecord:  # the common case of an in-process producer: no parse, no shape checks
                    if self._full:
                        self._commit_full()
                    self._buffer_record(item.stream, item.namespace, item.data, item.emitted_at, item.size, "text")
                    self._maybe_flush_on_interval()
                    if self._echoes and not self.store.commit_pending():
                        yield from self._release_echoes()
                    continue
                message = self._decode(item, line_number)
                if message is None:
                    continue
                kind = message.get("type")
                if self._full and not (kind == "STATE" and self._state_covers_full(message)):
                    self._commit_full()
                if kind == "RECORD":
                    self._on_record(message, len(item) if type(item) is bytes or type(item) is str else None)
                elif kind == "STATE":
                    self._on_state(message)
                elif kind == "TRACE":
                    self._on_trace(message)
                self._maybe_flush_on_interval()
                if self._echoes and not self.store.commit_pending():
                    yield from self._release_echoes()
            self._full = []
            self._commit(list(self.writers.values()))
            for writer in self.writers.values():
                purge_expired(writer)
            self.store.settle()
            yield from self._release_echoes()
            self._report()
        finally:
            for writer in self.writers.values():
                writer.close()
            if self._own_store and self.store is not None:
                self.store.close()

    def _release_echoes(self) -> Iterator[dict[str, Any]]:
        """Yield the echoes of committed states, in order (the caller checked the store has no COMMIT running)."""
        echoes, self._echoes = self._echoes, []
        yield from echoes

    def _decode(self, item: Any, line_number: int) -> dict[str, Any] | None:
        message = self._parse(item, line_number)
        if message is None:
            return None
        problem = shape_problem(message)
        if problem is not None:
            return self._malformed(line_number, problem)
        return message

    def _parse(self, item: Any, line_number: int) -> dict[str, Any] | None:
        if type(item) is bytes or type(item) is str:  # input lines, the common case: checked first
            return self._parse_line(item, line_number)
        if isinstance(item, dict):
            return item
        if isinstance(item, AirbyteMessage):
            return AirbyteMessageSerializer.dump(item)
        if isinstance(item, (bytes, str)):
            return self._parse_line(item, line_number)
        return self._malformed(line_number, f"unsupported message object {type(item).__name__}")

    def _parse_line(self, item: bytes | str, line_number: int) -> dict[str, Any] | None:
        if not item or item.isspace():  # blank (what strip() leaves empty), without copying the line
            return None
        try:
            message = jsonio.loads(item)
        except ValueError as exc:
            return self._malformed(line_number, f"not JSON ({str(exc).splitlines()[0][:120]})")
        if isinstance(message, dict) and isinstance(message.get("type"), str):
            return message
        return self._malformed(line_number, "not an Airbyte message (a JSON object with a 'type')")

    def _malformed(self, line_number: int, reason: str) -> None:
        """Count a line that is not a usable Airbyte message; the run fails at the end with the counts."""
        self.malformed += 1
        if len(self.malformed_samples) < MAX_SAMPLES:
            self.malformed_samples.append(f"line {line_number}: {reason}")
            logger.warning(f"Skipping input line {line_number}: {reason}.")
        return None

    def _on_record(self, message: dict[str, Any], size: int | None = None) -> None:
        """``size``: the RECORD line's length (None for a message given as an object: then measured here)."""
        record = message.get("record") or {}
        data = record.get("data")
        from_line = size is not None
        self._buffer_record(
            record.get("stream"), record.get("namespace"), data, record.get("emitted_at"),
            size if from_line else None, "line" if from_line else "object",
        )

    def _buffer_record(self, name: Any, namespace: Any, data: Any, emitted_at: Any, size: int | None, given_as: str) -> None:
        """Buffer one record for its stream's writer. ``given_as``: "line" (``data`` parsed from a RECORD line),
        "object" (an in-process object: may hold values that are not JSON; ``size`` None: measured here) or "text"
        (a ``JsonRecord``'s JSON text)."""
        writer = self._writer(name, namespace)
        if writer is None:
            key = stream_key(str(name), namespace)
            if key not in self.unknown_streams:
                logger.warning(f"Record for stream '{key}', which is not in the configured catalog: skipped.")
            self.unknown_streams[key] = self.unknown_streams.get(key, 0) + 1
            return
        if size is None:
            size = record_size(data)
        max_bytes = self.config.batch_max_bytes
        if self._buffered_total and self._buffered_total + size > max_bytes:
            # this record would take the buffers past batch_max_bytes: commit what is buffered first, every stream
            # in one transaction (full writers were committed before this message was handled)
            self._commit([w for w in self.writers.values() if w.buffer])
        now = self.clock()
        if given_as == "line":
            writer.add(data, emitted_at, now, size)
        elif given_as == "text":
            writer.add_text(data, emitted_at, now, size)
        else:
            writer.add_object(data, emitted_at, now, size)
        self._buffered_total += size
        if self._deadline is None:
            self._deadline = now + self.config.flush_interval_secs
        self.records_since_global_state += 1
        if self._buffered_total >= max_bytes:
            self._full.extend(w for w in self.writers.values() if w.buffer and w not in self._full)
        elif len(writer.buffer) >= self.config.batch_size and writer not in self._full:
            self._full.append(writer)

    def _commit_full(self) -> None:
        full, self._full = self._full, []
        self._commit(full)

    def _state_covers_full(self, message: dict[str, Any]) -> bool:
        """Whether this STATE's commit takes every full buffer (then they share its transaction)."""
        state = message.get("state") or {}
        if self._state_type(state) != "STREAM":
            return True
        descriptor = (state.get("stream") or {}).get("stream_descriptor") or {}
        writer = self._writer(descriptor.get("name"), descriptor.get("namespace"))
        return writer is not None and all(w is writer for w in self._full)

    @staticmethod
    def _state_type(state: dict[str, Any]) -> str:
        return state.get("type") or ("STREAM" if "stream" in state else "GLOBAL" if "global" in state else "LEGACY")

    def _on_state(self, message: dict[str, Any]) -> None:
        state = dict(message.get("state") or {})
        state_type = self._state_type(state)
        if state_type == "STREAM":
            descriptor = (state.get("stream") or {}).get("stream_descriptor") or {}
            name, namespace = descriptor.get("name"), descriptor.get("namespace")
            writer = self._writer(name, namespace)
            writers = [writer] if writer else []
            key = stream_key(str(name), namespace)
            count = writer.records_since_state if writer else 0
            if writer:
                writer.records_since_state = 0
        else:
            writers = list(self.writers.values())
            name = namespace = None
            key = GLOBAL_STATE_KEY
            count = self.records_since_global_state
            self.records_since_global_state = 0
            for writer in writers:
                writer.records_since_state = 0
        state["destinationStats"] = {"recordCount": float(count)}
        echo = dict(message)
        echo["state"] = state
        self._held.append((echo, (key, state_type, namespace, name, jsonio.dumps(state)), writers))
        now = self.clock()
        if self._held_since is None:
            self._held_since = now
        if self._full or self._state_due(now):
            # full buffers were left for this message (it covers them): one transaction for both
            self._commit(writers)
            self._full = []

    def _state_due(self, now: float) -> bool:
        """Whether held states are committed now (group commit, see HOLD_FACTOR)."""
        if not self._held:
            return False
        if self._last_commit_at is None or now - self._held_since >= self.config.flush_interval_secs:
            return True
        return now - self._last_commit_at >= HOLD_FACTOR * self._last_lookup_seconds

    def _on_trace(self, message: dict[str, Any]) -> None:
        trace = message.get("trace") or {}
        if trace.get("type") != "STREAM_STATUS":
            return
        status = trace.get("stream_status") or {}
        descriptor = status.get("stream_descriptor") or {}
        writer = self._writer(descriptor.get("name"), descriptor.get("namespace"))
        if writer is None or status.get("status") != "COMPLETE" or writer.complete:
            return
        writer.complete = True
        self._commit([writer], completed=writer)

    def _maybe_flush_on_interval(self) -> None:
        if self._held and self._state_due(self.clock()):
            self._commit([])
        if self._deadline is None:
            return
        now = self.clock()
        if now < self._deadline:
            return
        interval = self.config.flush_interval_secs
        due = [
            w for w in self.writers.values() if w.first_buffered_at is not None and now - w.first_buffered_at >= interval
        ]
        if due:
            self._commit(due)
        pending = [w.first_buffered_at for w in self.writers.values() if w.first_buffered_at is not None]
        self._deadline = min(pending) + interval if pending else None

    # -- committing -------------------------------------------------------------------------------------------
    def _commit(self, writers: list[CollectionWriter], completed: CollectionWriter | None = None) -> None:
        """One transaction: the writers' buffered records, every held state with the buffered records it covers,
        and the older generations of ``completed`` (a stream whose STREAM_STATUS COMPLETE came). The held states'
        echoes are released once the store has committed (``_echoes``)."""
        held, self._held, self._held_since = self._held, [], None
        if held:
            covered = {id(w) for _, _, state_writers in held for w in state_writers} | {id(w) for w in writers}
            writers = [w for w in self.writers.values() if id(w) in covered]
        batches = [(writer, len(writer.buffer), writer.buffered_bytes()) for writer in writers]
        try:
            prepared = [(writer, writer.take_changes()) for writer in writers]
            self._buffered_total = sum(w.buffered_bytes() for w in self.writers.values())
            if not held and completed is None and not any(changes for _, changes in prepared):
                return
            store = self.store
            lookup_seconds = 0.0
            with store.transaction():
                for writer, changes in prepared:
                    writer.apply(changes)
                    lookup_seconds += writer.lookup_seconds
                if completed is not None:
                    completed.remove_old_generations()
                for _, state, _ in held:
                    store.states.save(*state)
        except MemoryError as exc:
            raise self._out_of_memory(batches, exc) from None
        now = self.clock()
        self._last_commit_at, self._last_lookup_seconds = now, lookup_seconds
        self._echoes.extend(echo for echo, _, _ in held)
        if self._last_purge is None or now - self._last_purge >= PURGE_EVERY_SECS:
            self._last_purge = now
            for writer, _ in prepared:
                purge_expired(writer)

    def _out_of_memory(self, batches: list[tuple[CollectionWriter, int, int]], exc: MemoryError) -> AirbyteTracedException:
        """The config_error for a batch that did not fit in memory: the streams, the batch, the settings to change."""
        streams = ", ".join(
            f"'{w.key}' (collection {w.table}: {count} record(s), {size / 1048576:.1f} MiB)" for w, count, size in batches if count
        ) or ", ".join(f"'{w.key}'" for w, _, _ in batches) or "(no records buffered)"
        detail = getattr(exc, "detail", None) or str(exc) or type(exc).__name__
        config = self.config
        if isinstance(config.store, DuckDBStoreConfig):
            advice = (
                f"raise store.memory_limit (now {config.store.memory_limit}) or lower batch_max_bytes (now "
                f"{config.batch_max_bytes} bytes) or batch_size (now {config.batch_size})"
            )
        else:
            advice = (
                f"lower batch_max_bytes (now {config.batch_max_bytes} bytes) or batch_size (now {config.batch_size}), "
                f"or give the destination more memory"
            )
        return AirbyteTracedException(
            message=(
                f"Out of memory writing a batch of stream(s) {streams}: {detail}. Nothing of this batch was committed; "
                f"{advice}, then retry (the same batch would fail the same way with the same settings)."
            ),
            internal_message=detail,
            failure_type=FailureType.config_error,
        )

    def _report(self) -> None:
        for writer in self.writers.values():
            s = writer.stats
            logger.info(
                f"Stream '{writer.key}' → {writer.table}: {s.summary()}; {s.misfits} values not fitting their column "
                f"(kept in _doc), {s.generations_removed} documents removed with older generations, {s.purged} purged "
                f"by retention."
            )
            if not s.adds_up():  # a bug of ours: say so rather than show numbers that do not add up
                logger.warning(
                    f"Stream '{writer.key}': the summary does not add up ({s.records} records + {s.extra_rows} extra "
                    f"rows != {s.filtered} filtered + {s.counts.total()} changes); please report this."
                )
        problems = []
        if self.malformed:
            problems.append(
                f"{self.malformed} malformed input line(s) were skipped ({'; '.join(self.malformed_samples)})"
            )
        if self.unknown_streams:
            listing = ", ".join(f"'{k}': {v}" for k, v in sorted(self.unknown_streams.items()))
            problems.append(
                f"{sum(self.unknown_streams.values())} record(s) of streams not in the configured catalog were "
                f"skipped ({listing}); add these streams to the catalog to keep them"
            )
        if problems:
            raise AirbyteTracedException(
                message="; ".join(problems) + ". Everything else was committed and acknowledged.",
                failure_type=FailureType.system_error,
            )
