"""The benchmark's smoke mode runs in CI so the benchmark never rots. It asserts nothing about speed: only that every
comparison runs end to end on tiny data and writes its section."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_smoke_runs_every_comparison(tmp_path, kinesis_mock):  # kinesis_mock: the npm emulator is installed
    output = tmp_path / "BENCHMARKS.smoke.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    text = output.read_text()
    listed = subprocess.run([sys.executable, "-m", "bench.run", "--list"], cwd=ROOT, capture_output=True, text=True, check=True)
    titles = [line.split(None, 1)[1] for line in listed.stdout.splitlines() if line.strip()]
    assert titles, "no comparison found"
    for title in titles:
        assert f"## {title}" in text, f"section {title!r} missing from the smoke report"
    assert "SMOKE MODE" in text and "## Targets" in text
