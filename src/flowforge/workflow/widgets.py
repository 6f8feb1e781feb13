"""How the ComfyUI editor stores widget values: the ``widgets_values`` list of a UI node.

A UI-format node does not name its literal inputs: ``widgets_values`` lists them in the
order the node's schema declares its widget inputs, with two editor-only values mixed in
that are not inputs at all:
- "control after generate" (``fixed | randomize | increment | decrement``) right after a
  seed-like INT widget, so KSampler has 7 values for 6 widgets;
- the upload button's value (``"image"``) after the last required widget of image-upload
  nodes (LoadImage, LoadImageMask).
Every widget keeps its place even when it is converted to an input and linked (the editor
keeps its last value), so linked widgets are counted, never skipped.

Reading (`name_widget_values`) and writing (`widget_values`) live together so they stay
each other's inverse. `order_known` guards both: a catalog dumped with sorted keys does not
know the declaration order, and a guessed order would silently swap values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .graph import JsonLiteral, Link, Node
from .schema import InputSpec, NodeSchema

#: The editor-only value after a seed widget: what to do to the seed after each run.
CONTROL_VALUES = frozenset({"fixed", "randomize", "increment", "decrement"})
#: INT widgets that always get a control value (early-2024 schemas have no flag for it).
SEED_WIDGETS = frozenset({"seed", "noise_seed"})
#: The upload button's value, after the last required widget of image-upload nodes.
UPLOAD_VALUE = "image"


def order_known(schema: NodeSchema) -> bool:
    """Whether the schema's widget order is the declaration order ``widgets_values`` uses."""
    return schema.order_known or len(schema.widgets()) < 2


def _is_control(spec: InputSpec, following: InputSpec | None, value: Any) -> bool:
    """Whether `value`, right after INT widget `spec`, is its editor-only control value."""
    if spec.kind != "INT" or not isinstance(value, str) or value not in CONTROL_VALUES:
        return False
    if spec.name in SEED_WIDGETS:
        return True
    # Other INT widgets carry one when a newer schema asks for it: the string is a control
    # value unless the next widget could hold it itself.
    return following is None or not (
        following.kind == "STRING" or (following.kind == "ENUM" and value in following.choices)
    )


def _upload_after(widgets: Sequence[InputSpec]) -> int | None:
    """Index of the widget the upload button's value follows, if the node has one."""
    if not any(spec.upload for spec in widgets):
        return None
    return max((k for k, spec in enumerate(widgets) if spec.required), default=None)


def _is_upload(value: Any) -> bool:
    # Some 2025 editors saved the upload button itself (``{"name": "upload", ...}``).
    return value == UPLOAD_VALUE or (isinstance(value, dict) and value.get("name") == "upload")


def name_widget_values(
    values: Sequence[Any], widgets: Sequence[InputSpec]
) -> dict[str, Any] | None:
    """Widget name -> value for one node's ``widgets_values``; None if they do not fit.

    The control value is optional (files saved before the editor added it lack it) and is
    recognised by its value; so is the upload value. What remains must match one to one.
    """
    named: dict[str, Any] = {}
    upload_after = _upload_after(widgets)
    position = 0
    for k, spec in enumerate(widgets):
        if position >= len(values):
            return None
        named[spec.name] = values[position]
        position += 1
        following = widgets[k + 1] if k + 1 < len(widgets) else None
        if position < len(values) and _is_control(spec, following, values[position]):
            position += 1
        if k == upload_after and position < len(values) and _is_upload(values[position]):
            position += 1
    return named if position == len(values) else None


def placeholder(spec: InputSpec) -> Any:
    """The value written for a linked widget: the editor shows it but the link wins."""
    if spec.default is not None:
        return spec.default
    if spec.kind == "ENUM":
        return spec.choices[0] if spec.choices else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(spec.kind)


def widget_values(node: Node, schema: NodeSchema) -> list[Any]:
    """``widgets_values`` for one node, as the editor writes it (every widget given)."""
    values: list[Any] = []
    widgets = schema.widgets()
    upload_after = _upload_after(widgets)
    for k, spec in enumerate(widgets):
        value = node.get(spec.name)
        if isinstance(value, Link):
            values.append(placeholder(spec))
        else:
            values.append(value.value() if isinstance(value, JsonLiteral) else value)
        if spec.kind == "INT" and spec.name in SEED_WIDGETS:
            values.append("fixed")
        if k == upload_after:
            values.append(UPLOAD_VALUE)
    return values
