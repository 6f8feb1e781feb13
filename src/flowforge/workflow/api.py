"""ComfyUI API-format JSON in and out, exactly.

API format is what ``POST /prompt`` takes: ``{"<id>": {"class_type": ..., "inputs": {...},
"_meta": {...}}}``. A list ``["id", slot]`` is a link; every other value is a literal kept
with its exact JSON type. Reading then writing a file gives back the same JSON (same ids,
same key order, same literal types).

Loading is defensive because files come from users: size, nesting depth and node count are
bounded, and a file in the other ComfyUI format (UI, saved by the editor) is named as such.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from .graph import JsonLiteral, Link, Node, Value, Workflow

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 20_000

Format = Literal["api", "ui", "unknown"]


class WorkflowFormatError(ValueError):
    """The input is not a readable workflow of the expected format. One line, no traceback."""


def detect_format(data: Any) -> Format:
    """Tell API format from UI format from anything else, by shape only."""
    if isinstance(data, dict):
        if isinstance(data.get("nodes"), list) and "links" in data:
            return "ui"
        if data and all(
            isinstance(v, dict) and "class_type" in v and isinstance(v.get("inputs", {}), dict)
            for v in data.values()
        ):
            return "api"
    return "unknown"


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, stopping early once it exceeds `limit`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if level > deepest:
            deepest = level
            if deepest > limit:
                return deepest
        if isinstance(item, dict):
            stack.extend((child, level + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, level + 1) for child in item)
    return deepest


def parse_json_text(text: str, source: str = "<input>") -> Any:
    """Decode JSON with the bounds every flowforge reader shares, as one-line errors."""
    if len(text) > MAX_FILE_BYTES:
        raise WorkflowFormatError(
            f"{source}: {len(text):,} bytes is larger than the {MAX_FILE_BYTES:,} byte limit"
        )
    try:
        data = json.loads(text)
    except RecursionError:
        raise WorkflowFormatError(f"{source}: JSON nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as err:
        raise WorkflowFormatError(
            f"{source}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from None
    if _depth(data, MAX_DEPTH) > MAX_DEPTH:
        raise WorkflowFormatError(f"{source}: JSON nested deeper than {MAX_DEPTH} levels")
    return data


def read_json_file(path: Path | str) -> Any:
    """Read and decode a JSON file with size and depth bounds."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as err:
        raise WorkflowFormatError(f"{path}: cannot read ({err.strerror})") from None
    if size > MAX_FILE_BYTES:
        raise WorkflowFormatError(
            f"{path}: {size:,} bytes is larger than the {MAX_FILE_BYTES:,} byte limit"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise WorkflowFormatError(f"{path}: not UTF-8 text") from None
    return parse_json_text(text, str(path))


def _value_from_json(value: Any) -> Value:
    if isinstance(value, list):
        if len(value) == 2 and isinstance(value[0], str) and type(value[1]) is int:
            return Link(value[0], value[1])
        return JsonLiteral.of(value)
    if isinstance(value, dict):
        return JsonLiteral.of(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise WorkflowFormatError(f"unsupported JSON value {value!r}")  # pragma: no cover


def value_to_json(value: Value) -> Any:
    """The JSON form of an IR value (a link becomes ``["id", slot]``)."""
    if isinstance(value, Link):
        return [value.node, value.slot]
    if isinstance(value, JsonLiteral):
        return value.value()
    return value


def from_api(data: Any, source: str = "<input>") -> Workflow:
    """Build the IR from decoded API-format JSON, keeping ids, order and literal types."""
    kind = detect_format(data)
    if kind == "ui":
        raise WorkflowFormatError(
            f"{source}: this is a UI-format workflow (saved from the ComfyUI editor), "
            "not API format; convert it with `flowforge convert FILE --to api`"
        )
    if kind != "api":
        if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
            hint = " (it looks like a /prompt request body: use its 'prompt' field)"
        else:
            hint = ""
        raise WorkflowFormatError(
            f"{source}: not a ComfyUI workflow: expected an object of nodes, each with "
            f"'class_type' and 'inputs'{hint}"
        )
    if len(data) > MAX_NODES:
        raise WorkflowFormatError(f"{source}: {len(data):,} nodes is more than {MAX_NODES:,}")
    nodes = []
    for node_id, body in data.items():
        class_type = body["class_type"]
        if not isinstance(class_type, str) or not class_type:
            raise WorkflowFormatError(f"{source}: node {node_id}: class_type must be a string")
        inputs = tuple((name, _value_from_json(v)) for name, v in body.get("inputs", {}).items())
        meta = body.get("_meta")
        nodes.append(
            Node(
                id=node_id,
                class_type=class_type,
                inputs=inputs,
                meta=JsonLiteral.of(meta) if meta is not None else None,
            )
        )
    return Workflow(tuple(nodes))


def to_api(workflow: Workflow, *, meta: bool = True) -> dict[str, Any]:
    """API-format JSON for the workflow; key order follows ComfyUI's own files."""
    out: dict[str, Any] = {}
    for node in workflow.nodes:
        body: dict[str, Any] = {
            "inputs": {name: value_to_json(v) for name, v in node.inputs},
            "class_type": node.class_type,
        }
        if meta and node.meta is not None:
            body["_meta"] = node.meta.value()
        out[node.id] = body
    return out


def load_api(path: Path | str) -> Workflow:
    """Read an API-format workflow file."""
    return from_api(read_json_file(path), str(path))


def dumps_api(workflow: Workflow, *, indent: int | None = 2) -> str:
    return json.dumps(to_api(workflow), indent=indent, ensure_ascii=False)


def save_api(workflow: Workflow, path: Path | str) -> None:
    Path(path).write_text(dumps_api(workflow) + "\n", encoding="utf-8")
