"""Keep pandas out of the destination's process (the console scripts install this; a library caller is left alone).

DuckDB's Python API and pyarrow import pandas, when it is installed, on the first parameter bind or Arrow
registration, only to check whether a value is a DataFrame: ~45 MB of resident memory the write path never uses.
Both treat a missing pandas as "no DataFrames", so an import hook that reports pandas as not installed keeps the
process lean. Written by hand: no library does this, and the hook is a few lines of the documented ``sys.meta_path``
protocol. ``DESTINATION_COLLECTION_ALLOW_PANDAS=1`` turns it off (e.g. for a debugging session that wants pandas).
"""
from __future__ import annotations

import importlib.abc
import os
import sys


class _PandasAbsent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # noqa: D401 - the MetaPathFinder protocol
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"No module named {name!r} (kept out of this process)", name=name)
        return None


def install() -> bool:
    """Hide pandas from later imports unless it is already imported or allowed; whether the hook is in place."""
    if os.environ.get("DESTINATION_COLLECTION_ALLOW_PANDAS", "").strip().lower() in ("1", "true", "yes"):
        return False
    if "pandas" in sys.modules:
        return False
    if not any(isinstance(finder, _PandasAbsent) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PandasAbsent())
    return True
