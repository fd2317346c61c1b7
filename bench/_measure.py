"""Run one command and report what the whole process tree cost: a tiny wrapper around a benchmark subject.

    python -m bench._measure RESULT.json -- COMMAND [ARG...]

stdin, stdout and stderr are inherited (the caller redirects them). The wrapper makes itself a *child subreaper*
(``prctl(PR_SET_CHILD_SUBREAPER)``), so a grandchild that outlives its parent (an orphaned sandbox, a helper left
behind) is re-parented to the wrapper instead of init, and the wrapper reaps every descendant before it reports.
``getrusage(RUSAGE_CHILDREN)`` after that is then the user + system CPU of *all* threads of *all* processes of the
tree (the subject and, e.g., the transformation sandbox it starts), start-up included; ``wait4`` of the subject alone
counts only the grandchildren the subject itself reaped.

Peak memory: the subject's ``VmHWM`` (its own high-water mark since exec, polled every 10 ms; not ``ru_maxrss``,
which after fork+exec can report the forking parent's size) and the peak of the summed ``VmRSS`` of the whole tree
(polled), which shows what a sandbox child adds.

RESULT.json: ``{"wall", "user", "sys", "returncode", "peak_rss_mb", "peak_tree_rss_mb", "processes"}``.
"""
from __future__ import annotations

import ctypes
import json
import os
import resource
import subprocess
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
POLL_SECS = 0.01


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as handle:
                out.extend(int(p) for p in handle.read().split())
        except (OSError, ValueError):
            pass
    return out


def _tree(root: int) -> list[int]:
    seen, todo = [], [root]
    while todo:
        pid = todo.pop()
        seen.append(pid)
        todo.extend(_children(pid))
    return seen


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    result_path, command = argv[0], argv[2:]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        subreaper = libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        subreaper = False
    started = time.perf_counter()
    proc = subprocess.Popen(command)
    hwm_kb = tree_kb = 0
    processes: set[int] = set()
    status = 0
    while True:
        hwm_kb = max(hwm_kb, _status_kb(proc.pid, "VmHWM:"))
        pids = _tree(proc.pid)
        # orphans re-parented to us (subreaper) are part of the tree too
        pids += [p for p in _children(os.getpid()) if p != proc.pid and p not in pids]
        processes.update(pids)
        tree_kb = max(tree_kb, sum(_status_kb(p, "VmRSS:") for p in pids))
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(POLL_SECS)
    wall = time.perf_counter() - started
    # reap whatever the subject left behind (re-parented to us); give it a moment, then stop it
    deadline = time.monotonic() + 10
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid:
            continue
        if time.monotonic() > deadline:
            for child in _children(os.getpid()):
                try:
                    os.kill(child, 9)
                except OSError:
                    pass
        time.sleep(0.02)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump({
            "wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime,
            "returncode": os.waitstatus_to_exitcode(status),
            "peak_rss_mb": hwm_kb / 1024, "peak_tree_rss_mb": tree_kb / 1024,
            "processes": len(processes), "subreaper": subreaper,
        }, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
