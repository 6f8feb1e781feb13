"""Commands that talk to a user's ComfyUI server."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import app, fail, out

catalog_app = typer.Typer(
    help="Node catalogs (/object_info) of ComfyUI servers.", no_args_is_help=True
)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("pull")
def catalog_pull_command(
    server: Annotated[
        str, typer.Option("--server", help="ComfyUI base URL, e.g. http://127.0.0.1:8188.")
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the JSON.")],
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the server.")
    ] = 60.0,
) -> None:
    """Save a server's /object_info, so designs use exactly the nodes and models it has.

    Pass the file to --object-info of validate, convert, library build and design.
    """
    from ..judge.comfyui.factory import pull_catalog

    try:
        count = pull_catalog(server, output, timeout=timeout)
    except Exception as error:  # network and server failures are the user's to fix: one line
        fail(f"catalog pull from {server}: {type(error).__name__}: {' '.join(str(error).split())}")
    out.print(f"wrote {count} node classes from {server} to {output}", highlight=False)
