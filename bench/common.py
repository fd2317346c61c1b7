"""Shared benchmark machinery: timing and medians, peak RSS of a child process, machine and version info, the
Markdown report.

A comparison module (``bench/<name>.py``) exposes::

    TITLE = "Destination throughput"     # section heading
    ORDER = 30                           # sections are written in this order
    def run(ctx: Context) -> Section     # measure (side by side, ctx.runs times each) and return the section

``bench/run.py`` discovers every such module, runs the selected ones, and writes ``BENCHMARKS.md``.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Iterable, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, ".cache", "bench")


# -- context --------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Context:
    smoke: bool = False
    runs: int = 3
    cache_dir: str = CACHE
    scale: float = 1.0  # multiplies record counts (smoke mode uses a tiny scale)
    rebuild: bool = False  # rebuild cached artefacts (e.g. the destination's built collections) instead of reusing them
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True)
    _services: dict[str, Any] = dataclasses.field(default_factory=dict)
    _cleanups: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    def size(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else max(1, int(full * self.scale))

    def path(self, *parts: str) -> str:
        os.makedirs(self.cache_dir, exist_ok=True)
        return os.path.join(self.cache_dir, *parts)

    def service(self, name: str, start: Callable[[], Any], stop: Callable[[Any], None]) -> Any:
        """A service shared by comparisons (e.g. a PostgreSQL server), started once, stopped at the end."""
        if name not in self._services:
            value = start()
            self._services[name] = value
            self._cleanups.append(lambda: stop(value))
        return self._services[name]

    def close(self) -> None:
        while self._cleanups:
            try:
                self._cleanups.pop()()
            except Exception as exc:  # a cleanup failure must not hide the results
                self.log(f"cleanup failed: {exc}")


# -- measuring ------------------------------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(wall seconds, result) of ``fn()``."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def interleaved(ctx: Context, subjects: Sequence[tuple[str, Callable[[], float]]]) -> dict[str, list[float]]:
    """Run each subject ``ctx.runs`` times, alternating subjects within each round (side by side: drift in the
    machine's speed hits every subject alike). Each callable returns its measured value."""
    out: dict[str, list[float]] = {name: [] for name, _ in subjects}
    for round_ in range(ctx.runs):
        for name, fn in subjects:
            value = fn()
            out[name].append(value)
            ctx.log(f"  {name} run {round_ + 1}/{ctx.runs}: {value:,.3f}")
    return out


@dataclasses.dataclass
class ChildResult:
    wall_secs: float
    peak_rss_mb: float
    returncode: int
    stdout: bytes
    stderr_tail: str


def run_child(argv: Sequence[str], stdin_path: str | None = None, env: dict[str, str] | None = None,
              cwd: str | None = None, timeout: float = 600) -> ChildResult:
    """Run a child process (stdin from a file); its wall time and peak RSS (``wait4``: that child alone)."""
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    out_path = os.path.join(CACHE, f"child-{os.getpid()}.out")
    err_path = os.path.join(CACHE, f"child-{os.getpid()}.err")
    os.makedirs(CACHE, exist_ok=True)
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(list(argv), stdin=stdin, stdout=out, stderr=err, env=env, cwd=cwd)
            deadline = start + timeout
            hwm = 0.0
            while True:
                hwm = max(hwm, _vm_hwm_mb(proc.pid))
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.01)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if stdin_path:
            stdin.close()
    with open(out_path, "rb") as handle:
        stdout = handle.read()
    with open(err_path, "rb") as handle:
        stderr_tail = handle.read()[-2000:].decode("utf-8", "replace")
    # Peak RSS = the child's VmHWM (its own address space after exec), polled every 10 ms. Not wait4's ru_maxrss:
    # on Linux that starts from the RSS of the forking parent (the benchmark process itself), so it measures us.
    return ChildResult(wall, hwm or usage.ru_maxrss / 1024, proc.returncode, stdout, stderr_tail)


def _vm_hwm_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


# -- environment ----------------------------------------------------------------------------------------------
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "-"
    except (OSError, subprocess.SubprocessError):
        return "-"


def machine_info() -> dict[str, str]:
    cpus = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cpus
    memory = _memory_gb()
    return {
        "CPU": f"{_cpu_model()} — {usable} usable core(s) of {cpus}",
        "memory": f"{memory:.1f} GiB" if memory else "-",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "commit": _git_commit(),
    }


VERSIONED = ("airbyte-cdk", "duckdb", "pyarrow", "orjson", "psycopg", "boto3", "botocore")


def versions(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {name: _version(name) for name in VERSIONED}
    out.update(extra or {})
    return out


# -- report ---------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]] = dataclasses.field(default_factory=list)
    caption: str = ""

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))


@dataclasses.dataclass
class Target:
    name: str
    measured: str
    goal: str
    met: bool | None  # None: not measured (smoke mode, or a prerequisite missing)


@dataclasses.dataclass
class Section:
    title: str
    intro: str = ""
    tables: list[Table] = dataclasses.field(default_factory=list)
    targets: list[Target] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)  # e.g. the PostgreSQL server version


def fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if value != value:
            return "–"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v).replace("|", "\\|") for v in row) + " |")
    return lines


def render(sections: list[Section], ctx: Context, command: str, elapsed: float) -> str:
    extra: dict[str, str] = {}
    for section in sections:
        extra.update(section.versions)
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{command}` on {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC in {elapsed:.0f} s"
        f"{' (SMOKE MODE: tiny sizes, numbers mean nothing)' if ctx.smoke else ''}. "
        f"Every number is the median of {ctx.runs} run(s); the subjects of one comparison run side by side, "
        "alternating within each round, in the same process tree and on the same data.",
        "",
        "## Machine and versions",
        "",
    ]
    lines += _md_table(["", ""], [[k, v] for k, v in {**machine_info(), **versions(extra)}.items()])
    all_targets = [(s.title, t) for s in sections for t in s.targets]
    if all_targets:
        lines += ["", "## Targets", ""]
        lines += _md_table(
            ["section", "target", "measured", "goal", "met"],
            [[title, t.name, t.measured, t.goal, "–" if t.met is None else ("yes" if t.met else "**no**")]
             for title, t in all_targets],
        )
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        if section.intro:
            lines += [section.intro, ""]
        for table in section.tables:
            if table.caption:
                lines += [table.caption, ""]
            lines += _md_table(table.columns, table.rows)
            lines.append("")
        for note in section.notes:
            lines.append(f"- {note}")
        if section.notes:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
