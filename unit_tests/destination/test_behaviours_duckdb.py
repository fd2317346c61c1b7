"""The store-independent behaviours (behaviours.py) against an embedded DuckDB file."""
from unit_tests.destination.behaviours import *  # noqa: F401,F403
