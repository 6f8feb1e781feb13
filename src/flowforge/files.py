"""Writing a file so that a kill leaves the old version or the new one, never half of one.

Run records, checkpoint metadata, stage markers, plans and reports are all read back to
decide what a resumed run does; a torn file there would lose or repeat work.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` (UTF-8) to ``<path>.partial``, then rename it over `path` (atomic on
    POSIX and Windows within one file system)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def remove(path: Path) -> None:
    """Remove `path`, a directory with everything in it or a file; nothing if it is absent
    (a stage, or a run's stale output, being redone)."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
