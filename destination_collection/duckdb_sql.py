"""SQL text from users, parsed by DuckDB's own parser — shared by the two places that accept it (the ingest
transformation and inspect queries), so both read statements, walk their trees and fold identifiers the same way.

* ``parse_statements``: ``json_serialize_sql`` (it serializes SELECT statements only) turned into the statements'
  JSON trees, or ``Refused`` with DuckDB's reason.
* ``walk``: every object node of such a tree.
* ``ascii_lower`` / ``ascii_upper``: case folding as DuckDB compares identifiers and as ``_op`` keywords are
  matched — ASCII letters only (``str.lower`` maps the Kelvin sign to 'k', ``str.upper`` maps 'ı' to 'I' and 'ſ'
  to 'S', so "ınsert" would become INSERT).
"""
from __future__ import annotations

from typing import Any, Iterable

from . import jsonio

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Refused(Exception):
    """DuckDB's parser refused the text. ``not_select``: it parsed, but is not a SELECT statement."""

    def __init__(self, reason: str, not_select: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.not_select = not_select


def parse_statements(con: Any, sql: str) -> list[dict]:
    """The JSON trees of the statements in ``sql`` (``con``: any DuckDB connection or cursor; nothing runs)."""
    try:
        serialized = jsonio.loads(con.execute("SELECT json_serialize_sql($1)", [sql]).fetchone()[0])
    except ValueError:  # DuckDB writes a literal beyond DOUBLE's range (1e309) as Infinity, which is not JSON
        raise Refused(
            "it holds a numeric literal beyond the range of DOUBLE (such as 1e309); write 'Infinity'::DOUBLE or a "
            "DECIMAL literal instead."
        ) from None
    if serialized.get("error"):
        message = str(serialized.get("error_message") or "it could not be parsed")
        raise Refused(message.rstrip(".!") + ".", not_select="Only SELECT" in message)
    return serialized.get("statements") or []


def walk(node: Any) -> Iterable[dict]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def ascii_lower(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def ascii_upper(text: str) -> str:
    return text.translate(_ASCII_UPPER)
