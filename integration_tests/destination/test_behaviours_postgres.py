"""The store-independent behaviours (unit_tests/destination/behaviours.py) against a real PostgreSQL server."""
from unit_tests.destination.behaviours import *  # noqa: F401,F403
