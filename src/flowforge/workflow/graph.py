"""The workflow IR: an immutable graph of ComfyUI nodes.

Every stage of flowforge (validation, canonical form, text form, augmentation, judging,
training) reads and writes workflows through these types; ComfyUI JSON appears only at the
file and server boundary (`api.py`, `ui.py`). Graphs are frozen: passes return new graphs.

Literal values keep their exact JSON type (``7`` and ``7.0`` are different literals, as
they are in ComfyUI's files), so reading and writing a workflow is the identity. Object
literals (some community nodes take JSON objects) are kept as `JsonLiteral`, which stores
their JSON text, so that the graph stays hashable and immutable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias


@dataclass(frozen=True, order=True)
class Link:
    """A connection from output `slot` of node `node` (ComfyUI writes ``["node", slot]``)."""

    node: str
    slot: int


@dataclass(frozen=True)
class JsonLiteral:
    """A literal that is not a JSON scalar (an object, or a list that is not a link).

    Stored as canonical JSON text so the IR stays immutable and hashable; `value()` gives
    the decoded JSON back.
    """

    text: str

    @staticmethod
    def of(value: Any) -> JsonLiteral:
        return JsonLiteral(json.dumps(value, sort_keys=False, separators=(",", ":")))

    def value(self) -> Any:
        return json.loads(self.text)


Scalar: TypeAlias = str | int | float | bool | None
Value: TypeAlias = Scalar | Link | JsonLiteral


@dataclass(frozen=True)
class Node:
    """One ComfyUI node: its class, its inputs in file order, and optional UI metadata.

    `meta` holds the API format's ``_meta`` object (a title for the editor) as JSON text; it
    is decoration and plays no part in the canonical form.
    """

    id: str
    class_type: str
    inputs: tuple[tuple[str, Value], ...] = ()
    meta: JsonLiteral | None = None

    def get(self, name: str, default: Value = None) -> Value:
        for key, value in self.inputs:
            if key == name:
                return value
        return default

    def input_map(self) -> dict[str, Value]:
        return dict(self.inputs)

    def links(self) -> Iterator[tuple[str, Link]]:
        """(input name, link) for every linked input, in input order."""
        for key, value in self.inputs:
            if isinstance(value, Link):
                yield key, value

    def with_inputs(self, **changes: Value) -> Node:
        """A copy with the named inputs set (kept in place if present, appended if new)."""
        remaining = dict(changes)
        inputs = []
        for key, value in self.inputs:
            if key in remaining:
                inputs.append((key, remaining.pop(key)))
            else:
                inputs.append((key, value))
        inputs.extend(remaining.items())
        return replace(self, inputs=tuple(inputs))

    def without_inputs(self, *names: str) -> Node:
        return replace(self, inputs=tuple((k, v) for k, v in self.inputs if k not in names))


class GraphError(ValueError):
    """A structural problem that makes a value not a workflow graph at all (e.g. duplicate ids)."""


@dataclass(frozen=True)
class Workflow:
    """A ComfyUI workflow graph: nodes in file order, ids unique.

    The node order is the order of the source file; it matters only for writing the file
    back identically. Use `canonicalize` for an order-independent form.
    """

    nodes: tuple[Node, ...]
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        index: dict[str, int] = {}
        for position, node in enumerate(self.nodes):
            if node.id in index:
                raise GraphError(f"duplicate node id {node.id!r}")
            index[node.id] = position
        object.__setattr__(self, "_index", index)

    @staticmethod
    def of(nodes: Iterable[Node]) -> Workflow:
        return Workflow(tuple(nodes))

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._index

    def node(self, node_id: str) -> Node:
        try:
            return self.nodes[self._index[node_id]]
        except KeyError:
            raise KeyError(f"no node with id {node_id!r}") from None

    def ids(self) -> tuple[str, ...]:
        return tuple(node.id for node in self.nodes)

    def by_class(self, class_type: str) -> tuple[Node, ...]:
        return tuple(node for node in self.nodes if node.class_type == class_type)

    def consumers(self, node_id: str) -> tuple[tuple[Node, str, Link], ...]:
        """Every (consumer node, input name, link) that reads an output of `node_id`."""
        return tuple(
            (node, name, link)
            for node in self.nodes
            for name, link in node.links()
            if link.node == node_id
        )

    def replace_node(self, node: Node) -> Workflow:
        """A copy with the node of the same id replaced."""
        position = self._index[node.id]
        return Workflow((*self.nodes[:position], node, *self.nodes[position + 1 :]))

    def add_node(self, node: Node) -> Workflow:
        return Workflow((*self.nodes, node))

    def remove_nodes(self, node_ids: Iterable[str]) -> Workflow:
        dropped = set(node_ids)
        return Workflow(tuple(node for node in self.nodes if node.id not in dropped))

    def rewire(self, old: Link, new: Link) -> Workflow:
        """A copy where every input linked to `old` is linked to `new` instead."""
        nodes = []
        for node in self.nodes:
            changes = {name: new for name, link in node.links() if link == old}
            nodes.append(node.with_inputs(**changes) if changes else node)
        return Workflow(tuple(nodes))

    def new_id(self) -> str:
        """A fresh id: one more than the largest integer id (ComfyUI's own convention)."""
        numeric = [int(i) for i in self._index if i.isdigit()]
        return str(max(numeric, default=0) + 1)
