"""The layout of a UI-format file written for the ComfyUI editor (see `ui.to_ui`).

A file the editor opens needs more than the graph: integer node ids, numbered input and
output sockets with a link table that agrees with them, ``widgets_values`` in declaration
order (`widgets.py`), and positions. Nodes go in one column per graph depth, stacked top
down, with sizes close to the editor's own so nothing overlaps and the flow reads left to
right. `writable_problems` lists everything that would make such a file wrong, so the
caller can refuse it with every reason at once.
"""

from __future__ import annotations

from typing import Any

from .graph import Link, Node, Workflow
from .schema import Catalog, InputSpec, NodeSchema
from .widgets import order_known, widget_values

COLUMN_WIDTH = 400
NODE_GAP = 40


def writable_problems(workflow: Workflow, catalog: Catalog) -> list[str]:
    """Everything that keeps this workflow from being written as a file the editor reads."""
    problems = []
    for node in workflow:
        where = f"node {node.id} ({node.class_type})"
        if not (node.id.isascii() and node.id.isdigit() and str(int(node.id)) == node.id):
            problems.append(f"{where}: UI node ids are integers (canonicalize first)")
        schema = catalog.get(node.class_type)
        if schema is None:
            problems.append(f"{where}: node type not in the catalog, its widgets are unknown")
            continue
        if not order_known(schema):
            problems.append(f"{where}: the catalog does not know its widgets' declaration order")
        for name, value in node.inputs:
            spec = schema.input(name)
            if spec is None and not (name == "upload" and schema.has_upload_widget()):
                problems.append(f"{where}: input {name!r} is not declared by the catalog")
            elif isinstance(value, Link):
                source = workflow.node(value.node) if value.node in workflow else None
                outputs = catalog.get(source.class_type) if source else None
                if outputs is None or value.slot >= len(outputs.outputs):
                    problems.append(f"{where}: input {name!r} links to no known output")
            elif spec is not None and spec.kind == "link":
                problems.append(f"{where}: input {name!r} needs a link, found a literal")
        missing = [spec.name for spec in schema.widgets() if spec.name not in node.input_map()]
        if missing:
            problems.append(f"{where}: no value for widget(s) {', '.join(missing)}")
    return problems


def _sockets(node: Node, schema: NodeSchema) -> list[tuple[InputSpec, Link | None]]:
    """The node's input slots as the editor numbers them: link inputs, then linked widgets."""
    values = node.input_map()
    links = [spec for spec in schema.inputs if spec.kind == "link"]
    linked_widgets = [spec for spec in schema.widgets() if isinstance(values.get(spec.name), Link)]
    return [
        (spec, link if isinstance(link := values.get(spec.name), Link) else None)
        for spec in links + linked_widgets
    ]


def _layout(workflow: Workflow, catalog: Catalog, order: list[str]) -> dict[str, list[int]]:
    """Node id -> [x, y, width, height]: one column per graph depth, stacked top down."""
    depth: dict[str, int] = {}
    bottom: dict[int, int] = {}
    boxes = {}
    for node_id in order:
        node = workflow.node(node_id)
        depth[node_id] = 1 + max((depth[link.node] for _, link in node.links()), default=-1)
        schema = catalog[node.class_type]
        multiline = sum(1 for spec in schema.widgets() if spec.multiline)
        slots = max(len(_sockets(node, schema)), len(schema.outputs))
        height = 40 + 22 * slots + 26 * len(schema.widgets()) + 90 * multiline
        top = bottom.get(depth[node_id], 50)
        bottom[depth[node_id]] = top + height + NODE_GAP
        width = COLUMN_WIDTH - (40 if multiline else 80)
        boxes[node_id] = [50 + depth[node_id] * COLUMN_WIDTH, top, width, height]
    return boxes


def _links(workflow: Workflow, catalog: Catalog) -> list[list[Any]]:
    """The file's link table ``[id, source, slot, target, target slot, type]``, ids from 1."""
    table: list[list[Any]] = []
    for node in workflow:
        for slot, (_, link) in enumerate(_sockets(node, catalog[node.class_type])):
            if link is not None:
                kind = catalog[workflow.node(link.node).class_type].outputs[link.slot]
                table.append([len(table) + 1, int(link.node), link.slot, int(node.id), slot, kind])
    return table


def _ui_node(
    node: Node, schema: NodeSchema, links: list[list[Any]], box: list[int], position: int
) -> dict[str, Any]:
    """One editor node; `position` is its place in the execution order."""
    inputs = []
    for slot, (spec, _) in enumerate(_sockets(node, schema)):
        socket: dict[str, Any] = {"name": spec.name, "type": spec.type}
        if spec.is_widget:
            socket["widget"] = {"name": spec.name}
        into = [row[0] for row in links if row[3] == int(node.id) and row[4] == slot]
        inputs.append(socket | {"link": into[0] if into else None})
    outputs = [
        {
            "name": name,
            "type": kind,
            "links": [row[0] for row in links if row[1] == int(node.id) and row[2] == slot],
            "slot_index": slot,
        }
        for slot, (kind, name) in enumerate(zip(schema.outputs, schema.output_names, strict=True))
    ]
    body: dict[str, Any] = {
        "id": int(node.id),
        "type": node.class_type,
        "pos": box[:2],
        "size": box[2:],
        "flags": {},
        "order": position,
        "mode": 0,
        "inputs": inputs,
        "outputs": outputs,
    }
    meta = node.meta.value() if node.meta is not None else None
    title = meta.get("title") if isinstance(meta, dict) else None
    if isinstance(title, str) and title != node.class_type:
        body["title"] = title
    body["properties"] = {"Node name for S&R": node.class_type}
    body["widgets_values"] = widget_values(node, schema)
    return body


def editor_file(workflow: Workflow, catalog: Catalog, order: list[str]) -> dict[str, Any]:
    """The UI-format JSON of a writable workflow (`order`: a topological order of its ids)."""
    boxes = _layout(workflow, catalog, order)
    links = _links(workflow, catalog)
    position = {node_id: k for k, node_id in enumerate(order)}
    nodes = [
        _ui_node(node, catalog[node.class_type], links, boxes[node.id], position[node.id])
        for node in workflow
    ]
    return {
        "last_node_id": max((int(node.id) for node in workflow), default=0),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }
