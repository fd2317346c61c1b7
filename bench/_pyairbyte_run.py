"""Run by PyAirbyte's own virtual environment (``.cache/pyairbyte-venv``, made by scripts/bootstrap.sh): read the stub replay source into
PyAirbyte's DuckDB cache, the way a user would, and print the number of records the cache holds.

    .cache/pyairbyte-venv/bin/python bench/_pyairbyte_run.py SOURCE_EXECUTABLE MESSAGES.jsonl CACHE.duckdb
"""
from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    executable, messages, database = argv
    import airbyte as ab

    source = ab.get_source("source-replay", config={"path": messages}, local_executable=executable,
                           install_if_missing=False, streams="*")
    cache = ab.DuckDBCache(db_path=database)
    result = source.read(cache=cache, force_full_refresh=True)
    print(len(result["events"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
