"""The typer app and what every command shares: consoles, one-line errors, progress bars.

Every command turns expected failures (bad files, wrong formats, invalid catalogs, bad
settings) into one readable line on stderr and exit code 2; a traceback means a bug in
flowforge. Exit code 1 is reserved for "the input was read fine and is invalid".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from ..workflow.api import WorkflowFormatError
from ..workflow.graph import GraphError
from ..workflow.schema import Catalog, CatalogError, load_catalog

app = typer.Typer(
    name="flowforge",
    help="Design ComfyUI text-to-image workflows per prompt (reward ensemble + SFT + GRPO).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# No emoji codes: Rich would print a user's `--judge sim:x:` or a prompt's ":x:" as an emoji.
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)

ObjectInfoOption = Annotated[
    Path | None,
    typer.Option(
        "--object-info",
        help="A ComfyUI /object_info JSON dump (your server's nodes and model files). "
        "Default: the shipped catalog (ComfyUI early 2024, SD1.5/SDXL models).",
        dir_okay=False,
    ),
]


def fail(message: str) -> NoReturn:
    """Print one readable line and exit 2: the input could not be used at all."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user's input can cause into `fail` lines instead of tracebacks."""
    try:
        yield
    except (WorkflowFormatError, CatalogError, GraphError, ValueError) as error:
        fail(str(error))


def catalog_option(path: Path | None) -> Catalog:
    """The catalog a command's --object-info names (the shipped one by default)."""
    with user_errors():
        return load_catalog(path)


class RateColumn(ProgressColumn):
    """Items per second, as measured by rich over the last seconds."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("  -/s" if speed is None else f"{speed:,.0f}/s", style="cyan")


def progress_bar() -> Progress:
    """The progress bar every long flowforge job shows: count, rate, elapsed, ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )
