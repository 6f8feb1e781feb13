"""``python -m flowforge``: the same app as the ``flowforge`` console script."""

from flowforge.cli import app

app()
