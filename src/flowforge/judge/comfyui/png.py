"""PNG files that carry their workflow, written the way ComfyUI's SaveImage writes them.

SaveImage stores the API workflow as JSON in a ``prompt`` text chunk and each
``extra_pnginfo`` entry (the editor sends ``workflow``, the UI graph) in a chunk of its
name. Dropping such a PNG onto ComfyUI loads the ``workflow`` chunk, or the ``prompt`` chunk
when there is none. flowforge rewrites the chunks of every image it keeps, so a file holds
exactly what was judged whatever the server wrote, and adds a ``flowforge`` chunk with the
request (prompt text, seed) and the scores, for people browsing a render folder.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin

#: zlib level ComfyUI's SaveImage uses: fast, and images are kept by the thousand.
COMPRESS_LEVEL = 4


def with_workflow(
    png: bytes,
    workflow: Mapping[str, Any],
    ui_workflow: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """`png` re-encoded (pixels unchanged) with text chunks ``prompt`` (the API workflow),
    ``workflow`` (the UI graph, when given) and one per `extra` key, as JSON like ComfyUI's."""
    with Image.open(io.BytesIO(png)) as image:
        image.load()
        info = PngImagePlugin.PngInfo()
        info.add_text("prompt", json.dumps(workflow))
        if ui_workflow is not None:
            info.add_text("workflow", json.dumps(ui_workflow))
        for key, value in (extra or {}).items():
            info.add_text(key, json.dumps(value))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info, compress_level=COMPRESS_LEVEL)
    return buffer.getvalue()


def text_chunks(png: bytes | Path) -> dict[str, str]:
    """The text chunks of a PNG (``prompt``, ``workflow``, ...) as strings."""
    source = png if isinstance(png, Path) else io.BytesIO(png)
    with Image.open(source) as image:
        image.load()
        return {str(key): str(value) for key, value in getattr(image, "text", {}).items()}


def decode(png: bytes) -> Image.Image:
    """The image in RGB, as the scorers take it."""
    with Image.open(io.BytesIO(png)) as image:
        return image.convert("RGB")


def save_atomic(data: bytes, path: Path) -> None:
    """Write `data` to `path` so that a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
