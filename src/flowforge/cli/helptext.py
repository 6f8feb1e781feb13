"""Command help as reflowed paragraphs, and the top-level help arranged for a newcomer.

Typer takes a command's help from its docstring and joins the line breaks of the first
paragraph only; the rest keep the docstring's source-code wrapping, which leaves ragged lines
in a terminal narrower or wider than 100 columns. Docstrings here are plain paragraphs (no
lists or code blocks), so joining each paragraph's lines is safe and lets rich wrap them to
the terminal.
"""

from __future__ import annotations

import inspect

import typer


def reflowed(doc: str) -> str:
    """`doc` with each paragraph (blank-line separated) on one line, spaces collapsed."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def reflow_help(app: typer.Typer) -> None:
    """Give every command of `app` and of its sub-apps its docstring help, reflowed (an
    explicit ``help=`` is reflowed too)."""
    for command in app.registered_commands:
        doc = command.help or (inspect.getdoc(command.callback) if command.callback else None)
        if doc:
            command.help = reflowed(doc)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)


#: The top-level help's panels, in the order a newcomer needs them: the main job and the
#: command that uses its result first, then each stage of ``flowforge run`` as a command of
#: its own, then workflows, then judges and data. Within a panel typer lists commands before
#: command groups (``library``, ``reward``, ...).
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Start here", ("run", "design")),
    (
        "The stages of flowforge run, one at a time",
        ("library", "collect", "reward", "sft", "comfygen-ft", "grpo", "evaluate"),
    ),
    ("Workflows", ("validate", "convert", "catalog")),
    ("Judges and data", ("sim", "scorers", "data")),
)


def arrange_help(app: typer.Typer) -> None:
    """Put each top-level command and group of `app` in its `PANELS` panel, in that order
    (typer lists them in registration order, which follows the modules' imports). A name
    `PANELS` lacks goes last, in typer's own "Commands" panel (a test checks that none does)."""
    order = [(panel, name) for panel, names in PANELS for name in names]
    place = {name: (rank, panel) for rank, (panel, name) in enumerate(order)}
    last: tuple[int, str | None] = (len(place), None)
    for command in app.registered_commands:
        command.rich_help_panel = place.get(command.name or "", last)[1]
    for group in app.registered_groups:
        group.rich_help_panel = place.get(group.name or "", last)[1]
    app.registered_commands.sort(key=lambda command: place.get(command.name or "", last)[0])
    app.registered_groups.sort(key=lambda group: place.get(group.name or "", last)[0])
