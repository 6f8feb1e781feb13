"""The ``flowforge`` command line: a thin typer layer over plain Python functions.

`app` lives in `app.py`; each module here registers the commands of one area on it. Nothing
in flowforge imports this package.
"""

import os

# OpenMP threads that spin-wait for a descheduled sibling made torch up to 20x slower on a
# shared 2-core machine (docs/grpo.md); passive waiting must be chosen before torch loads,
# and every command imports torch lazily, after this.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from . import (  # noqa: F401  (register their commands)
    comfyui,
    data,
    pipeline,
    policy,
    reward,
    sim,
    workflow,
)
from .app import app
from .helptext import arrange_help, reflow_help

reflow_help(app)
arrange_help(app)

__all__ = ["app"]
