"""Run by PyAirbyte's own virtual environment (``.cache/pyairbyte-venv``, made by scripts/bootstrap.sh): read
source-kinesis, as a local executable with the given config, into PyAirbyte's DuckDB cache the way a user would, then
print (as JSON) the cache's columns and row count for each stream.

    .cache/pyairbyte-venv/bin/python integration_tests/_pyairbyte_read.py SOURCE_EXECUTABLE CONFIG.json CACHE.duckdb
"""
from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    executable, config_path, database = argv
    import airbyte as ab

    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    source = ab.get_source("source-kinesis", config=config, local_executable=executable, install_if_missing=False,
                           streams="*")
    cache = ab.DuckDBCache(db_path=database, schema_name="main")
    result = source.read(cache=cache)
    from sqlalchemy import text

    out = {}
    with cache.get_sql_engine().connect() as con:
        for name in result.streams:
            table = con.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND lower(table_name) = "
                "lower(regexp_replace(:name, '[^A-Za-z0-9_]', '_', 'g'))"
            ), {"name": name}).scalar_one()
            columns = dict(con.execute(text(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'main' "
                "AND table_name = :table"
            ), {"table": table}).fetchall())
            rows = con.execute(text(f'SELECT count(*) FROM main."{table}"')).scalar_one()
            out[name] = {"table": table, "columns": columns, "rows": rows}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
