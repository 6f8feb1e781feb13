"""Command help as reflowed paragraphs.

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
