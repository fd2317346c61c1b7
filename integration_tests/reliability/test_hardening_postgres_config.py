"""Issue 15, item 10 (destination, PostgreSQL): schema names and missing privileges give the same clear config_error
from ``check`` and ``write`` (before: ``write`` died with a traceback — schema '' even wrote into ``public`` silently
through the search path, ``pg_catalog`` gave "unacceptable schema name", a user without CREATE "permission denied").
"""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from integration_tests.postgres_server import PostgresServer
from unit_tests.destination.harness import record, state, stream

CLI = str(Path(sys.executable).with_name("destination-collection"))
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def server():
    with PostgresServer() as pg:
        yield pg


def _run(tmp_path: Path, store: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """check's message (FAILED expected) and write's error trace, for one store config."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store": store}))
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"streams": [stream("s", mode="append_dedup", pk=[["k"]])]}))
    check = subprocess.run([CLI, "check", "--config", str(config)], capture_output=True, text=True, timeout=60)
    status = [json.loads(l)["connectionStatus"] for l in check.stdout.splitlines() if '"CONNECTION_STATUS"' in l]
    assert status and status[0]["status"] == "FAILED", check.stdout[-800:]
    lines = "\n".join(json.dumps(m) for m in [record("s", {"k": 1}), state("s", 1)]) + "\n"
    write = subprocess.run([CLI, "write", "--config", str(config), "--catalog", str(catalog)], input=lines,
                           capture_output=True, text=True, timeout=60)
    errors = [json.loads(l)["trace"]["error"] for l in write.stdout.splitlines() if '"TRACE"' in l]
    assert write.returncode == 1 and errors, (write.stdout[-800:], write.stderr[-800:])
    assert not [l for l in write.stdout.splitlines() if '"STATE"' in l], "nothing may be acknowledged"
    return status[0]["message"], errors[0]


BAD_SCHEMAS = {
    "empty": ("", "empty"),
    "blank": ("   ", "empty"),
    "pg_catalog": ("pg_catalog", "system schema"),
    "PG_CATALOG": ("PG_CATALOG", "system schema"),
    "information_schema": ("information_schema", "system schema"),
    "pg_toast": ("pg_toast", "system schema"),
    "pg_prefix": ("pg_mine", "system schema"),
    "nul": ("col\x00lections", "NUL"),
    "leading-space": (" public", "whitespace"),
    "trailing-newline": ("public\n", "whitespace"),
    "too-long": ("s" * 64, "63 bytes"),
    "too-long-multibyte": ("é" * 32, "63 bytes"),
}


@pytest.mark.parametrize("case", list(BAD_SCHEMAS))
def test_bad_schema_is_a_config_error_for_check_and_write(server, tmp_path, case, reliability):
    schema, reason = BAD_SCHEMAS[case]
    store = server.store_config(schema=schema)
    checked, error = _run(tmp_path, store)
    assert error["failure_type"] == "config_error"
    for text in (checked, error["message"]):
        assert "store.postgres.schema" in text and reason in text, text
        assert server.password not in text
    reliability(cases=1)


def test_schema_with_quotes_and_long_valid_names_work(server, tmp_path, reliability):
    """Names PostgreSQL accepts (quotes, spaces inside, upper case, exactly 63 bytes) are written, not refused."""
    for schema in ['we"ird', "My Schema", "s" * 63]:
        config = tmp_path / "config.json"
        config.write_text(json.dumps({"store": server.store_config(schema=schema)}))
        catalog = tmp_path / "catalog.json"
        catalog.write_text(json.dumps({"streams": [stream("s", mode="append_dedup", pk=[["k"]])]}))
        lines = "\n".join(json.dumps(m) for m in [record("s", {"k": 1}), state("s", 1)]) + "\n"
        write = subprocess.run([CLI, "write", "--config", str(config), "--catalog", str(catalog)], input=lines,
                               capture_output=True, text=True, timeout=60)
        assert write.returncode == 0, write.stdout[-800:]
        with server.admin_connect() as conn:
            conn.execute(f"SET search_path TO {sql.Identifier(schema).as_string(conn)}")
            assert conn.execute('SELECT _id FROM "s"').fetchall() == [("[1]",)]
    reliability(cases=3)


def _role(server: PostgresServer, grants: list[str]) -> tuple[str, str]:
    name = f"kc_limited_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(12)
    with server.admin_connect() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password)))
        conn.execute(sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
        for grant in grants:
            conn.execute(grant.format(role=sql.Identifier(name).as_string(conn)))
    return name, password


PRIVILEGE_CASES = {
    # no CREATE on the database, schema missing: CREATE SCHEMA is refused
    "no-create-on-database": ("fresh_{n}", [], "CREATE ON DATABASE"),
    # the schema exists, the user has no USAGE on it
    "no-usage-on-schema": ("owned_{n}", ["CREATE SCHEMA owned_{n}"], "USAGE"),
    # USAGE but no CREATE on the schema: creating the metadata tables is refused
    "usage-without-create": ("owned_{n}", ["CREATE SCHEMA owned_{n}", "GRANT USAGE ON SCHEMA owned_{n} TO {role}"], "CREATE ON SCHEMA"),
    # public without CREATE (PostgreSQL 15's default for non-owners)
    "public-without-create": ("public", [], "CREATE ON SCHEMA"),
}


@pytest.mark.parametrize("case", list(PRIVILEGE_CASES))
def test_missing_privileges_are_config_errors_for_check_and_write(server, tmp_path, case, reliability):
    schema_template, statements, grant_hint = PRIVILEGE_CASES[case]
    n = secrets.token_hex(3)
    schema = schema_template.format(n=n)
    role, password = _role(server, [s.replace("{n}", n) for s in statements])
    store = dict(server.store_config(schema=schema), username=role, password=password)
    checked, error = _run(tmp_path, store)
    assert error["failure_type"] == "config_error", error
    for text in (checked, error["message"]):
        assert role in text and schema in text and server.database in text, text
        assert "GRANT" in text and grant_hint in text, text
        assert password not in text
    assert "Traceback" not in error["message"]
    reliability(cases=1)
