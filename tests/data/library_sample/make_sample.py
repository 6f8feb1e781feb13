"""Write the checked-in library sample: 50 workflows of the default 1,000-workflow library.

Run from anywhere: ``python tests/data/library_sample/make_sample.py [OUT_DIR]``. It builds
``build_library(load_seed_library(), default_catalog(), size=1000, seed=0)`` and saves every
20th workflow (API JSON named by canonical hash, plus ``index.jsonl`` with origin seed and
augmentations) into OUT_DIR (default: this directory, whose old sample files it replaces).

The sample exists for an outside check: queue each file against a real ComfyUI with the
default catalog's model files (``POST /prompt`` validates before it runs) and expect no
``node_errors``. ``tests/test_library.py`` fails when the checked-in files no longer match
what the code builds; rerun this script then.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from flowforge.workflow.library import (
    INDEX_NAME,
    LibraryEntry,
    build_library,
    load_seed_library,
    save_library,
)
from flowforge.workflow.schema import default_catalog

HERE = Path(__file__).resolve().parent
SIZE, SEED, EVERY = 1000, 0, 20
_SAMPLE_FILE = re.compile(r"[0-9a-f]{32}\.json")


def sample() -> list[LibraryEntry]:
    library = build_library(load_seed_library(), default_catalog(), SIZE, SEED)
    return library[::EVERY]


def write(out_dir: Path) -> list[str]:
    """Replace the sample in `out_dir`; returns the names of the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.iterdir():
        if _SAMPLE_FILE.fullmatch(old.name) or old.name == INDEX_NAME:
            old.unlink()
    entries = sample()
    save_library(entries, out_dir)
    return sorted([f"{entry.hash}.json" for entry in entries] + [INDEX_NAME])


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    print(f"wrote {len(write(target)) - 1} workflows to {target}")
