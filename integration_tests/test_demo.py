"""The README's first command: the demo runs, shows a query, DESCRIBE and the state; a second run is incremental."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_demo(demo_dir: Path) -> str:
    env = dict(os.environ, DEMO_DIR=str(demo_dir))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, text=True, timeout=240, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_demo_twice_second_run_is_incremental(tmp_path, kinesis_mock):  # kinesis_mock: ensures the npm package is installed
    first = run_demo(tmp_path)
    assert "Created stream orders with 3 shards" in first
    assert re.search(r"Wrote 600 order events \(first run\), split shardId-\d+ halfway through", first)
    assert "Sync done: 600 records" in first
    assert "=== Revenue by country" in first and re.search(r"country \| orders \| revenue \| shipped", first)
    assert '["address","country"]' in first and '["tags","*"]' in first  # DESCRIBE output
    assert '"stream_arn": "arn:aws:kinesis:us-east-1:000000000000:stream/orders"' in first
    assert "the emulator is stopped" in first
    second = run_demo(tmp_path)
    assert "Created stream" not in second and "(new events only)" in second
    assert "Sync done: 150 records" in second, "the second run must pick up only the new events"
