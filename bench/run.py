"""One command for every benchmark comparison::

    python -m bench.run                 # build/cached data, run every comparison, write BENCHMARKS.md
    python -m bench.run --smoke         # tiny sizes, one run, asserts only that everything runs (CI)
    python -m bench.run --list          # the comparisons found
    python -m bench.run --only destination --runs 5 --output /tmp/b.md

Comparisons are the modules of this package that define ``TITLE``, ``ORDER`` and ``run(ctx) -> Section``
(see ``bench/common.py``); adding a module adds a section.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time
import traceback

from . import common

NOT_COMPARISONS = {"common", "run"}


def discover() -> list:
    import bench

    modules = []
    for info in pkgutil.iter_modules(bench.__path__):
        if info.name in NOT_COMPARISONS or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"bench.{info.name}")
        if hasattr(module, "run") and hasattr(module, "TITLE"):
            modules.append(module)
    return sorted(modules, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one run; checks that everything runs")
    parser.add_argument("--list", action="store_true", help="list the comparisons and exit")
    parser.add_argument("--only", action="append", default=[], help="run only this comparison module (repeatable)")
    parser.add_argument("--runs", type=int, default=None, help="runs per subject (default 3; smoke: 1)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply record counts (e.g. 0.1 for a quick look)")
    parser.add_argument("--rebuild", action="store_true",
                        help="rebuild cached collections (bench/destination.py reuses them while the code is unchanged)")
    parser.add_argument("--output", default=None,
                        help="Markdown file (default BENCHMARKS.md; smoke mode: .cache/bench/BENCHMARKS.smoke.md)")
    args = parser.parse_args(argv)

    modules = discover()
    if args.list:
        for module in modules:
            print(f"{module.__name__.split('.')[-1]:<16} {module.TITLE}")
        return 0
    if args.only:
        known = {m.__name__.split(".")[-1] for m in modules}
        unknown = set(args.only) - known
        if unknown:
            parser.error(f"unknown comparison(s) {sorted(unknown)}; known: {sorted(known)}")
        modules = [m for m in modules if m.__name__.split(".")[-1] in args.only]

    ctx = common.Context(smoke=args.smoke, runs=args.runs or (1 if args.smoke else 3), scale=args.scale,
                         rebuild=args.rebuild)
    output = args.output or (os.path.join(common.CACHE, "BENCHMARKS.smoke.md") if args.smoke
                             else os.path.join(common.REPO, "BENCHMARKS.md"))
    command = "python -m bench.run" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    started = time.perf_counter()
    sections, failed = [], []
    try:
        for module in modules:
            ctx.log(f"== {module.TITLE}")
            t0 = time.perf_counter()
            try:
                sections.append(module.run(ctx))
            except Exception:
                failed.append(module.__name__)
                ctx.log(traceback.format_exc())
                sections.append(common.Section(module.TITLE, notes=["**failed** — see the bench log"]))
            ctx.log(f"   {module.TITLE}: {time.perf_counter() - t0:.1f} s")
    finally:
        ctx.close()
    elapsed = time.perf_counter() - started
    text = common.render(sections, ctx, command.replace(" --output " + (args.output or ""), ""), elapsed)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(text)
    ctx.log(f"wrote {output} in {elapsed:.0f} s")
    if failed:
        ctx.log(f"FAILED: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
