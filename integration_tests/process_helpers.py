"""Processes seen through Linux's /proc: a process's live children, and whether one still runs (the runner's source
process must not outlive the runner)."""
from __future__ import annotations

import os
from typing import List


def children_of(pid: int) -> List[int]:
    """The live children of ``pid`` (none once it has ended)."""
    found: List[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                found += [int(p) for p in handle.read().split()]
    except OSError:
        pass
    return found


def gone(pid: int) -> bool:
    """Not running any more (a zombie nobody reaped counts: it holds nothing but its table entry)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
