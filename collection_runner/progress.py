"""What a person watching the runner sees: records/s, per-stream lag, the last commit.

On a terminal, one status line redrawn twice a second; otherwise (logs, CI, systemd) a plain log line every 10 s.
Lag of a stream = commit time − arrival time (in Kinesis) of the newest record that commit made queryable.
"""
from __future__ import annotations

import datetime as dt
import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, Optional, TextIO

from collection_runner.source_process import SourceProgress
from destination_collection.protocol_loop import JsonRecord


def _parse_arrival(value: str) -> Optional[dt.datetime]:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None


@dataclass
class StreamProgress:
    records: int = 0
    newest_arrival: Optional[str] = None  # newest _kinesis_arrival_time seen (ISO strings order correctly)
    committed_arrival: Optional[str] = None
    lag_seconds: Optional[float] = None
    commits: int = 0


@dataclass
class RunnerProgress:
    logger: logging.Logger
    out: TextIO = field(default_factory=lambda: sys.stderr)
    interactive: Optional[bool] = None
    redraw_seconds: float = 0.5
    log_seconds: float = 10.0
    clock: Any = time.monotonic
    streams: Dict[str, StreamProgress] = field(default_factory=dict)
    records: int = 0
    commits: int = 0
    last_commit_at: Optional[dt.datetime] = None
    errors: int = 0

    def __post_init__(self) -> None:
        if self.interactive is None:
            self.interactive = bool(getattr(self.out, "isatty", lambda: False)())
        self.started = self.clock()
        self._last_show = self.started
        self._last_records = 0
        self._rate = 0.0

    # -- observation ------------------------------------------------------------------------------------------
    def observe(self, messages: Iterable[Any]) -> Iterator[Any]:
        """Pass the source's messages through, counting records and noting arrival times and errors.

        In-process sources give CDK messages; the source process (``source_process``) gives records as
        ``JsonRecord``s or RECORD lines, which are not parsed here: its ``SourceProgress`` messages carry the counts instead (taken, not passed on),
        and its other messages come as dicts."""
        for message in messages:
            kind = type(message)
            if kind is JsonRecord or kind is bytes:  # a source process's record: counted by its SourceProgress
                yield message
                continue
            if kind is SourceProgress:
                self._source_progress(message.streams)
                continue
            if kind is dict:
                if message.get("type") == "TRACE":
                    error = (message.get("trace") or {}).get("error")
                    if isinstance(error, dict):
                        self._source_error(str(error.get("message")))
                yield message
                continue
            kind = getattr(message, "type", None)
            if kind is not None and kind.name == "RECORD":
                record = message.record
                stream = self.streams.get(record.stream)
                if stream is None:
                    stream = self.streams[record.stream] = StreamProgress()
                stream.records += 1
                self.records += 1
                arrival = record.data.get("_kinesis_arrival_time")
                if arrival is not None and (stream.newest_arrival is None or arrival > stream.newest_arrival):
                    stream.newest_arrival = arrival
                if self.records % 5000 == 0:
                    self.tick()
            elif kind is not None and kind.name == "TRACE" and message.trace.error is not None:
                self._source_error(message.trace.error.message)
            yield message

    def _source_error(self, text: str) -> None:
        self.errors += 1
        self.logger.error(f"Source error: {text}")

    def _source_progress(self, streams: Dict[str, Dict[str, Any]]) -> None:
        """The source process's counts so far (cumulative, per stream)."""
        for name, seen in streams.items():
            stream = self.streams.get(name)
            if stream is None:
                stream = self.streams[name] = StreamProgress()
            records = int(seen.get("records") or 0)
            self.records += records - stream.records
            stream.records = records
            arrival = seen.get("newest_arrival")
            if arrival is not None and (stream.newest_arrival is None or arrival > stream.newest_arrival):
                stream.newest_arrival = arrival
        self.tick()

    def on_commit(self, echo: Dict[str, Any]) -> None:
        """An echoed state: its data is committed and queryable."""
        now = dt.datetime.now(dt.timezone.utc)
        self.commits += 1
        self.last_commit_at = now
        name = (((echo.get("state") or {}).get("stream") or {}).get("stream_descriptor") or {}).get("name")
        stream = self.streams.get(name) if name else None
        if stream is not None:
            stream.commits += 1
            if stream.newest_arrival != stream.committed_arrival:
                arrival = _parse_arrival(stream.newest_arrival or "")
                stream.lag_seconds = (now - arrival).total_seconds() if arrival else None
                stream.committed_arrival = stream.newest_arrival
            else:
                stream.lag_seconds = 0.0  # nothing new since the previous commit: caught up
        self.tick()

    # -- display ----------------------------------------------------------------------------------------------
    def status(self) -> str:
        lags = ", ".join(
            f"{name} {'-' if s.lag_seconds is None else f'{s.lag_seconds:.1f}s'}" for name, s in sorted(self.streams.items())
        )
        last = self.last_commit_at.strftime("%H:%M:%S") if self.last_commit_at else "none yet"
        return f"{self.records:,} records ({self._rate:,.0f}/s) | lag: {lags or '-'} | {self.commits} commits, last {last}"

    def tick(self, force: bool = False) -> None:
        now = self.clock()
        elapsed = now - self._last_show
        period = self.redraw_seconds if self.interactive else self.log_seconds
        if not force and elapsed < period:
            return
        if elapsed > 0:
            self._rate = (self.records - self._last_records) / elapsed
        self._last_show, self._last_records = now, self.records
        if self.interactive:
            self.out.write("\r\033[K" + self.status())
            self.out.flush()
        else:
            self.logger.info(self.status())

    def finish(self) -> str:
        seconds = self.clock() - self.started
        if self.interactive:
            self.out.write("\r\033[K")
            self.out.flush()
        rate = self.records / seconds if seconds > 0 else 0.0
        return f"{self.records:,} records in {seconds:.1f} s ({rate:,.0f}/s), {self.commits} commits" + (
            f", {self.errors} source errors" if self.errors else ""
        )
