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


scorers_app = typer.Typer(help="Image scorers of the ComfyUI judge.", no_args_is_help=True)
app.add_typer(scorers_app, name="scorers")


@scorers_app.command("convert-openclip")
def convert_openclip_command(
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="OpenCLIP weights: .pt/.bin/.safetensors.")
    ],
    model_config: Annotated[
        str, typer.Option("--model-config", help="ViT-H-14 (HPS v2.1), ... or a JSON file.")
    ],
    output: Annotated[Path, typer.Option("--out", help="The directory to write.")],
    tokenizer: Annotated[
        Path | None, typer.Option("--tokenizer", help="A transformers CLIP tokenizer folder.")
    ] = None,
    dtype: Annotated[
        str, typer.Option("--dtype", help="float32, float16 or bfloat16.")
    ] = "float32",
) -> None:
    """Convert an OpenCLIP checkpoint (e.g. HPS v2.1) into a transformers CLIP directory.

    Torch files are read with weights_only=True (tensors only, never arbitrary pickles).
    See docs/comfyui.md.
    """
    from ..judge.scorers.base import ScorerError
    from ..judge.scorers.convert_openclip import (
        DTYPES,
        TOKENIZER_FILES,
        convert_openclip_checkpoint,
    )

    if dtype not in DTYPES:
        fail(f"--dtype must be one of {', '.join(sorted(DTYPES))}, not {dtype!r}")
    try:
        written = convert_openclip_checkpoint(
            checkpoint, output, model_config=model_config, tokenizer=tokenizer, dtype=DTYPES[dtype]
        )
    except ScorerError as error:
        fail(str(error))
    out.print(f"wrote {written}", highlight=False)
    if tokenizer is None:
        out.print(
            f"no tokenizer given: copy a CLIP tokenizer's files ({', '.join(TOKENIZER_FILES[:4])}) "
            f"into {written} before scoring (docs/comfyui.md)",
            highlight=False,
        )
