"""The stores' own bulk loads, run as child processes by ``bench/destination.py`` (the floors of the collection
writes)::

    python -m bench._floor duckdb DATABASE SCRIPT.sql     # runs the script (CREATE TABLE + INSERT … read_json(…))
    python -m bench._floor postgres CONNINFO TABLE ROWS.csv  # COPY TABLE FROM STDIN (FORMAT csv), the file streamed

The parent writes the SQL (the collection's own table definition, the same NDJSON file) and the CSV (the same rows,
prepared before the measurement), measures this process with ``bench._measure`` and, for PostgreSQL, adds the
server's CPU.
"""
from __future__ import annotations

import sys


def duckdb_floor(database: str, script: str) -> None:
    import duckdb

    with open(script, encoding="utf-8") as handle:
        sql = handle.read()
    con = duckdb.connect(database)
    for statement in (s.strip() for s in sql.split(";\n")):
        if statement:
            con.execute(statement)
    con.execute("CHECKPOINT")
    con.close()


def postgres_floor(conninfo: str, table: str, rows: str) -> None:
    import psycopg

    with psycopg.connect(conninfo, autocommit=False) as con:
        with con.cursor() as cur:
            with cur.copy(f"COPY {table} FROM STDIN (FORMAT csv)") as copy:
                with open(rows, "rb") as handle:
                    while block := handle.read(1 << 20):
                        copy.write(block)
        con.commit()


def main(argv: list[str]) -> int:
    if argv[:1] == ["duckdb"] and len(argv) == 3:
        duckdb_floor(argv[1], argv[2])
    elif argv[:1] == ["postgres"] and len(argv) == 4:
        postgres_floor(argv[1], argv[2], argv[3])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
