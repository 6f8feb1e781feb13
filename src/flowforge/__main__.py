"""``python -m flowforge``: the same app as the ``flowforge`` console script."""

from flowforge.cli import app

if __name__ == "__main__":  # not when a spawned stage process imports this module
    app()
