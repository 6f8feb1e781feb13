"""The ``flowforge`` command line: a thin typer layer over plain Python functions.

`app` lives in `app.py`; each module here registers the commands of one area on it. Nothing
in flowforge imports this package.
"""

from . import comfyui, data, policy, reward, sim, workflow  # noqa: F401  (register their commands)
from .app import app

__all__ = ["app"]
