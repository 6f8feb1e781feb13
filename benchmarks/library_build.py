"""Measure how fast the default seed library grows into N distinct valid workflows.

Usage: ``python benchmarks/library_build.py [--size 20000] [--seed 0]``. Prints workflows per
second (augment + canonical hash + validation + coherence check of every output), the
machine and the command. No files are written.
"""

from __future__ import annotations

import argparse
import time

from machine import command_line, describe_machine

from flowforge.workflow.library import build_library, load_seed_library
from flowforge.workflow.schema import default_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    seeds, catalog = load_seed_library(), default_catalog()
    start = time.perf_counter()
    library = build_library(seeds, catalog, args.size, args.seed)
    elapsed = time.perf_counter() - start
    print(
        f"built {len(library):,} distinct valid workflows in {elapsed:.1f} s "
        f"({len(library) / elapsed:,.0f} workflows/s)"
    )
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
