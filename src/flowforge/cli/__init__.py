"""The ``flowforge`` command line: a thin typer layer over plain Python functions.

`app` lives in `app.py`; each module here registers the commands of one area on it. Nothing
in flowforge imports this package.
"""

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

__all__ = ["app"]
