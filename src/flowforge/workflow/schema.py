"""Node schemas read from ComfyUI's ``/object_info`` JSON.

A `Catalog` is what one ComfyUI installation offers: its node classes, their inputs and
outputs, and (as enum choices) the model files it has installed. flowforge ships a real
``/object_info`` dump as its default catalog (see ``resources/comfyui/ATTRIBUTION.md``); a
user points flowforge at their own server's dump to design for exactly their install.

Input order matters for reading UI-format files, whose ``widgets_values`` list follows the
order a node declares its inputs. A live server keeps that order (newer ones also send
``input_order``); a dump saved with sorted keys loses it, so the shipped catalog carries the
declaration order of its nodes (``resources/comfyui/input_order.json``, read off ComfyUI's
node definitions) and `NodeSchema.order_known` says where the order is trustworthy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from .api import WorkflowFormatError, read_json_file

InputKind = Literal["link", "INT", "FLOAT", "STRING", "BOOLEAN", "ENUM"]
WIDGET_KINDS = ("INT", "FLOAT", "STRING", "BOOLEAN", "ENUM")

#: Inputs whose enum lists are the model files installed on a server, not fixed vocabulary.
MODEL_FILE_INPUTS = frozenset(
    {
        "ckpt_name",
        "lora_name",
        "vae_name",
        "model_name",
        "unet_name",
        "clip_name",
        "clip_name1",
        "clip_name2",
        "control_net_name",
        "style_model_name",
        "gligen_name",
        "hypernetwork_name",
        "config_name",
        "photomaker_model_name",
    }
)


class CatalogError(ValueError):
    """An ``/object_info`` file that cannot be read as node schemas."""


@dataclass(frozen=True)
class InputSpec:
    """One input of a node class.

    `kind` is "link" for a typed connection (`type` is then e.g. "MODEL"), or the widget
    kind. Numbers carry their ``min``/``max``/``step``; an enum carries its `choices`.
    """

    name: str
    kind: InputKind
    type: str
    required: bool
    choices: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    step: float | None = None
    default: Any = None
    multiline: bool = False
    #: An enum of files the user uploads to the server (LoadImage's ``image_upload``).
    upload: bool = False

    @property
    def is_widget(self) -> bool:
        return self.kind != "link"

    @property
    def is_model_file(self) -> bool:
        """True for enums that list one server's files (models, uploaded images)."""
        return self.kind == "ENUM" and (self.name in MODEL_FILE_INPUTS or self.upload)

    def describe(self) -> str:
        """What this input expects, in words an error message can show."""
        if self.kind == "link":
            return f"a link of type {self.type}"
        if self.kind == "ENUM":
            shown = ", ".join(self.choices[:8]) + (", ..." if len(self.choices) > 8 else "")
            return f"one of [{shown}]"
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        return f"{self.kind}" + (f" ({', '.join(bounds)})" if bounds else "")


@dataclass(frozen=True)
class NodeSchema:
    """The interface of one node class: inputs in declaration order, typed outputs."""

    class_type: str
    inputs: tuple[InputSpec, ...]
    outputs: tuple[str, ...]
    output_names: tuple[str, ...]
    output_node: bool
    category: str = ""
    #: Whether `inputs` is in declaration order (the order UI ``widgets_values`` follow).
    #: False when the dump was saved with sorted keys and nothing restored the order.
    order_known: bool = True
    _by_name: Mapping[str, InputSpec] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_name", {spec.name: spec for spec in self.inputs})

    def input(self, name: str) -> InputSpec | None:
        return self._by_name.get(name)

    def has_upload_widget(self) -> bool:
        """Whether the editor adds an ``upload`` button value to this node's API export."""
        return any(spec.upload for spec in self.inputs)

    def widgets(self) -> tuple[InputSpec, ...]:
        return tuple(spec for spec in self.inputs if spec.is_widget)

    def required(self) -> tuple[InputSpec, ...]:
        return tuple(spec for spec in self.inputs if spec.required)


def _parse_input(name: str, raw: Any, required: bool, class_type: str) -> InputSpec:
    if not isinstance(raw, list | tuple) or not raw:
        raise CatalogError(f"{class_type}.{name}: input spec must be a non-empty list")
    head = raw[0]
    options: dict[str, Any] = raw[1] if len(raw) > 1 and isinstance(raw[1], dict) else {}
    if isinstance(head, list):
        return InputSpec(
            name,
            "ENUM",
            "COMBO",
            required,
            choices=tuple(str(c) for c in head),
            default=options.get("default"),
            upload=bool(options.get("image_upload", False)),
        )
    if head == "COMBO":  # newer ComfyUI: ["COMBO", {"options": [...]}]
        return InputSpec(
            name,
            "ENUM",
            "COMBO",
            required,
            choices=tuple(str(c) for c in options.get("options", [])),
            default=options.get("default"),
        )
    if not isinstance(head, str):
        raise CatalogError(f"{class_type}.{name}: input type must be a string or a list")
    if head == "INT" or head == "FLOAT":
        kind: InputKind = "INT" if head == "INT" else "FLOAT"
        return InputSpec(
            name,
            kind,
            head,
            required,
            min=options.get("min"),
            max=options.get("max"),
            step=options.get("step"),
            default=options.get("default"),
        )
    if head == "STRING":
        return InputSpec(
            name,
            "STRING",
            "STRING",
            required,
            default=options.get("default"),
            multiline=bool(options.get("multiline", False)),
        )
    if head == "BOOLEAN":
        return InputSpec(name, "BOOLEAN", "BOOLEAN", required, default=options.get("default"))
    return InputSpec(name, "link", head, required)


def _ordered_names(section: Mapping[str, Any], order: list[str] | None) -> list[str]:
    if not order:
        return list(section)
    known = [name for name in order if name in section]
    return known + [name for name in section if name not in known]


def parse_node_schema(
    class_type: str,
    raw: Mapping[str, Any],
    order: Mapping[str, list[str]] | None = None,
    keys_sorted: bool = False,
) -> NodeSchema:
    """One ``/object_info`` entry; `order` overrides input order per section if given.

    `keys_sorted` says the dump lost declaration order (every section's keys sorted), so
    the order is known only where ``input_order`` or `order` restores it.
    """
    if not isinstance(raw, Mapping) or not isinstance(raw.get("input", {}), Mapping):
        raise CatalogError(f"{class_type}: not an /object_info node entry")
    sections = raw.get("input", {})
    declared = raw.get("input_order") or order or {}
    specs = []
    for section, required in (("required", True), ("optional", False)):
        body = sections.get(section) or {}
        for name in _ordered_names(body, declared.get(section)):
            specs.append(_parse_input(name, body[name], required, class_type))
    outputs = tuple(str(t) if not isinstance(t, list) else "COMBO" for t in raw.get("output", []))
    names = tuple(raw.get("output_name") or outputs)
    return NodeSchema(
        class_type=class_type,
        inputs=tuple(specs),
        outputs=outputs,
        output_names=names,
        output_node=bool(raw.get("output_node", False)),
        category=str(raw.get("category", "")),
        order_known=bool(raw.get("input_order") or order) or not keys_sorted,
    )


def _keys_sorted(data: Mapping[str, Any]) -> bool:
    """Whether every input section of every node lists its keys sorted (a sorted dump).

    A live server keeps declaration order, so at least one node of a real install has
    unsorted keys; a dump where none has was written with sorted keys.
    """
    for raw in data.values():
        for section in (raw.get("input") or {}).values():
            if isinstance(section, Mapping) and list(section) != sorted(section):
                return False
    return True


@dataclass(frozen=True)
class Catalog:
    """The node schemas of one ComfyUI installation, by class_type."""

    nodes: Mapping[str, NodeSchema]
    source: str = "<memory>"
    #: Textual-inversion embedding names (ComfyUI's ``GET /embeddings``); None when unknown.
    embeddings: tuple[str, ...] | None = None

    def __contains__(self, class_type: object) -> bool:
        return class_type in self.nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, class_type: str) -> NodeSchema | None:
        return self.nodes.get(class_type)

    def __getitem__(self, class_type: str) -> NodeSchema:
        return self.nodes[class_type]

    def choices(self, class_type: str, input_name: str) -> tuple[str, ...]:
        """The enum choices of one input (e.g. the installed checkpoints), or ()."""
        schema = self.nodes.get(class_type)
        spec = schema.input(input_name) if schema else None
        return spec.choices if spec else ()


def catalog_from_object_info(
    data: Any,
    source: str = "<memory>",
    input_order: Mapping[str, Mapping[str, list[str]]] | None = None,
    embeddings: tuple[str, ...] | None = None,
) -> Catalog:
    """Parse decoded ``/object_info`` JSON into a Catalog."""
    if not isinstance(data, Mapping) or not data:
        raise CatalogError(f"{source}: /object_info must be a non-empty JSON object")
    order = input_order or {}
    keys_sorted = _keys_sorted(data)
    nodes = {}
    for class_type, raw in data.items():
        if not isinstance(raw, Mapping) or "input" not in raw:
            raise CatalogError(
                f"{source}: entry {class_type!r} is not a node schema (no 'input'); "
                "is this an /object_info dump?"
            )
        nodes[class_type] = parse_node_schema(class_type, raw, order.get(class_type), keys_sorted)
    return Catalog(nodes=nodes, source=source, embeddings=embeddings)


def _resource_json(name: str) -> Any:
    return json.loads(
        resources.files("flowforge").joinpath("resources", "comfyui", name).read_text("utf-8")
    )


@cache
def default_catalog() -> Catalog:
    """The shipped catalog: a real ComfyUI (early 2024) with an SD1.5/SDXL model set."""
    return catalog_from_object_info(
        _resource_json("object_info.json"),
        source="flowforge default (ComfyUI a28a9dc)",
        input_order=_resource_json("input_order.json"),
        embeddings=tuple(_resource_json("embeddings.json")["embeddings"]),
    )


def load_catalog(path: Path | str | None = None) -> Catalog:
    """A catalog from a user's ``/object_info`` dump, or the default one if `path` is None.

    A user's dump says nothing about embeddings, so their names are unknown (None) and
    embedding references are not checked.
    """
    if path is None:
        return default_catalog()
    try:
        data = read_json_file(path)
    except WorkflowFormatError as err:
        raise CatalogError(str(err)) from None
    return catalog_from_object_info(
        data, source=str(path), input_order=_resource_json("input_order.json")
    )
