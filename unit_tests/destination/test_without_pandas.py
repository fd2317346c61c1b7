"""The console scripts keep pandas out of the process (issue 11: ~45 MB that DuckDB/pyarrow import and never use)."""
import json
import subprocess
import sys

SCRIPT = r"""
import io, json, sys
from destination_collection.run import run
config, catalog = sys.argv[1], sys.argv[2]
sys.stdin = io.TextIOWrapper(io.BytesIO(sys.argv[3].encode()), encoding="utf-8")
try:
    run(["write", "--config", config, "--catalog", catalog])
except SystemExit:
    pass
import duckdb
rows = duckdb.connect(json.load(open(config))["store"]["path"]).execute("SELECT _doc FROM events").fetchall()
print(json.dumps({"pandas_loaded": "pandas" in sys.modules, "rows": [r[0] for r in rows]}), file=sys.stderr)
"""


def _write(tmp_path, env_extra=None):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": {"store_type": "duckdb", "path": str(tmp_path / "c.duckdb")}}))
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"streams": [{
        "stream": {"name": "events", "json_schema": {}, "supported_sync_modes": ["incremental"]},
        "sync_mode": "incremental", "destination_sync_mode": "append_dedup", "primary_key": [["k"]],
    }]}))
    lines = "\n".join(json.dumps({"type": "RECORD", "record": {"stream": "events", "data": {"k": i, "v": "x"}, "emitted_at": 1}})
                      for i in range(3)) + "\n"
    import os
    env = dict(os.environ, **(env_extra or {}))
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(config), str(catalog), lines], capture_output=True, text=True,
                          timeout=120, env=env)
    return json.loads(done.stderr.strip().splitlines()[-1])


def test_write_runs_without_loading_pandas(tmp_path):
    result = _write(tmp_path)
    assert result["pandas_loaded"] is False
    assert sorted(json.loads(r)["k"] for r in result["rows"]) == [0, 1, 2]


def test_pandas_can_be_allowed_back(tmp_path):
    try:
        import pandas  # noqa: F401
    except ImportError:  # pragma: no cover - pandas is installed with the test dependencies
        return
    result = _write(tmp_path, {"DESTINATION_COLLECTION_ALLOW_PANDAS": "1"})
    assert result["pandas_loaded"] is True and len(result["rows"]) == 3
