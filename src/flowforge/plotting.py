"""What every flowforge plot shares: matplotlib on the Agg backend, and saving a figure.

Imported only by the modules that draw (``reward.plots``, ``evaluate.plots``), and
matplotlib itself only when a plot is drawn, so nothing else pays for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only; no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int) -> Path:
    """Lay out `fig`, write it to `path` as PNG, free it; return `path`."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path
