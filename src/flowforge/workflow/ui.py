"""ComfyUI UI-format JSON (what the editor saves) in and out of the workflow IR.

Users share UI files: the editor's graph with positions, notes, reroutes and
``widgets_values`` lists that name nothing. Reading one does what the editor does when it
queues a prompt (its ``graphToPrompt``): name widget values by the schema (`widgets.py`),
follow Reroutes to the real source, write PrimitiveNode values into their targets, drop
Notes, drop muted nodes and pass bypassed nodes through. Whatever cannot be mapped
faithfully (an unknown node type, a subgraph or group node, widget values that do not fit
the schema, a link to nothing) is reported, all of it at once, with node id, type and
reason; `from_ui_strict` turns such a report into one `UiFormatError` line for the CLI.

Writing (`to_ui`) lays nodes out in columns by graph depth so the file reads well when
opened, and is the inverse of reading for every workflow whose classes are in the catalog.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .api import MAX_NODES, WorkflowFormatError, detect_format, read_json_file
from .canonical import topological_order
from .graph import GraphError, JsonLiteral, Link, Node, Value, Workflow
from .layout import editor_file, writable_problems
from .schema import Catalog, NodeSchema
from .widgets import name_widget_values, order_known

NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
MODE_MUTED = 2
MODE_BYPASSED = 4


class UiFormatError(WorkflowFormatError):
    """A UI-format file that is malformed or holds things that cannot be mapped. One line."""


@dataclass(frozen=True)
class UiIssue:
    """One thing about one UI node: its id (as in the file), its type, and what happened."""

    node_id: str
    class_type: str
    message: str

    def __str__(self) -> str:
        return f"node {self.node_id} ({self.class_type}): {self.message}"


@dataclass(frozen=True)
class UiImportResult:
    """A UI file read into the IR.

    `issues` are what could not be mapped (the workflow is then not what the editor would
    run: unmappable nodes keep only their links); `notes` are what was dropped exactly as
    the editor drops it (muted and bypassed nodes, and inputs that lose their source).
    """

    workflow: Workflow
    issues: tuple[UiIssue, ...] = ()
    notes: tuple[UiIssue, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.issues


@dataclass(frozen=True)
class _Input:
    name: str  # the input name the API uses (a converted widget's widget name)
    type: str
    link: int | None
    is_widget: bool


@dataclass(frozen=True)
class _UiNode:
    id: str
    type: str
    mode: int
    title: str | None
    inputs: tuple[_Input, ...]
    values: Any  # widgets_values as found: normally a list


@dataclass(frozen=True)
class _UiLink:
    source: str
    slot: int


def _literal(value: Any) -> Value:
    """A widget value is always a literal (a UI list is never a link, unlike API format)."""
    if isinstance(value, list | dict):
        return JsonLiteral.of(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise UiFormatError(f"unsupported JSON value {value!r}")  # pragma: no cover


def _node_id(value: Any, what: str, source: str) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
        raise UiFormatError(f"{source}: {what} must be an integer node id, found {value!r}")
    return str(value)


def _parse_node(raw: Any, source: str) -> _UiNode:
    if not isinstance(raw, dict) or "id" not in raw or not isinstance(raw.get("type"), str):
        raise UiFormatError(f"{source}: every entry of 'nodes' needs an 'id' and a 'type'")
    node_id = _node_id(raw["id"], "a node's 'id'", source)
    inputs = []
    for slot in raw.get("inputs") or []:
        if not isinstance(slot, dict) or not isinstance(slot.get("name"), str):
            raise UiFormatError(f"{source}: node {node_id}: inputs must be {{name, type, link}}")
        widget = slot.get("widget")
        name = widget.get("name") if isinstance(widget, dict) else None
        link = slot.get("link")
        if link is not None and (isinstance(link, bool) or not isinstance(link, int)):
            raise UiFormatError(f"{source}: node {node_id}: input link ids must be integers")
        inputs.append(_Input(name or slot["name"], str(slot.get("type")), link, name is not None))
    title = raw.get("title")
    return _UiNode(
        id=node_id,
        type=raw["type"],
        mode=raw["mode"] if isinstance(raw.get("mode"), int) else 0,
        title=title if isinstance(title, str) else None,
        inputs=tuple(inputs),
        values=raw.get("widgets_values") if raw.get("widgets_values") is not None else [],
    )


def _parse_links(raw: Any, source: str) -> dict[int, _UiLink]:
    """Link id -> source; lists ``[id, src, slot, dst, slot, type]`` or v1 objects."""
    links: dict[int, _UiLink] = {}
    for entry in raw or []:
        if isinstance(entry, list) and len(entry) >= 5:
            link_id, src, slot = entry[0], entry[1], entry[2]
        elif isinstance(entry, dict):
            link_id, src, slot = entry.get("id"), entry.get("origin_id"), entry.get("origin_slot")
        else:
            raise UiFormatError(f"{source}: a link must be [id, src, slot, dst, slot, type]")
        if not isinstance(link_id, int) or not isinstance(slot, int):
            raise UiFormatError(f"{source}: malformed link {entry!r}")
        links[link_id] = _UiLink(_node_id(src, f"link {link_id}'s source", source), slot)
    return links


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Reader:
    """One pass over a parsed UI file, collecting issues and notes as it maps nodes."""

    def __init__(self, nodes: dict[str, _UiNode], links: dict[int, _UiLink], data: Any):
        self.nodes = nodes
        self.links = links
        definitions = data.get("definitions") if isinstance(data.get("definitions"), dict) else {}
        self.subgraphs = {
            str(sub.get("id")): str(sub.get("name", ""))
            for sub in definitions.get("subgraphs") or []
            if isinstance(sub, dict)
        }
        self.issues: list[UiIssue] = []
        self.notes: list[UiIssue] = []

    def issue(self, node: _UiNode, message: str) -> None:
        self.issues.append(UiIssue(node.id, node.type, message))

    def note(self, node: _UiNode, message: str) -> None:
        self.notes.append(UiIssue(node.id, node.type, message))

    def resolve(self, consumer: _UiNode, slot: _Input) -> Value | None:
        """The value an input really receives: a link to a real node, a primitive's literal,
        or None when the editor would drop the input (reported)."""
        link_id, seen = slot.link, set()
        while link_id is not None:
            where = f"input {slot.name!r}"
            if link_id in seen:
                self.issue(consumer, f"{where} loops through reroutes or bypassed nodes")
                return None
            seen.add(link_id)
            link = self.links.get(link_id)
            if link is None:
                self.issue(consumer, f"{where} uses link {link_id}, which is not in 'links'")
                return None
            source = self.nodes.get(link.source)
            if source is None:
                self.issue(consumer, f"{where} links to node {link.source}, which does not exist")
                return None
            if source.type == REROUTE:
                link_id = source.inputs[0].link if source.inputs else None
            elif source.type == PRIMITIVE:
                if not isinstance(source.values, list) or not source.values:
                    self.issue(
                        consumer, f"{where} comes from PrimitiveNode {source.id} without a value"
                    )
                    return None
                return _literal(source.values[0])
            elif source.mode == MODE_MUTED:
                self.note(consumer, f"{where} dropped: its source node {source.id} is muted")
                return None
            elif source.mode == MODE_BYPASSED:
                link_id = self._bypass(source, link.slot, slot.type)
                if link_id is None:
                    self.note(
                        consumer,
                        f"{where} dropped: bypassed node {source.id} has no "
                        f"linked input of type {slot.type} to pass through",
                    )
                    return None
            else:
                return Link(source.id, link.slot)
        self.note(consumer, f"input {slot.name!r} dropped: it comes from a Reroute with no input")
        return None

    @staticmethod
    def _bypass(node: _UiNode, slot: int, wanted: str) -> int | None:
        """The link a bypassed node passes on: the editor tries the input at the output's
        own slot first, then every input, and takes the first of the wanted type."""
        candidates: list[int] = [slot, *range(len(node.inputs))]
        for k in candidates:
            if k < len(node.inputs) and node.inputs[k].type == wanted:
                return node.inputs[k].link
        return None

    def linked(self, node: _UiNode, schema: NodeSchema | None) -> dict[str, Value]:
        """Input name -> resolved value for every linked input (in the node's input order)."""
        out: dict[str, Value] = {}
        for slot in node.inputs:
            if slot.link is None:
                continue
            if schema is not None and schema.input(slot.name) is None:
                self.issue(
                    node,
                    f"input {slot.name!r} is not an input of {node.type} in the "
                    "catalog (a newer version of this node?)",
                )
                continue
            value = self.resolve(node, slot)
            if value is not None:
                out[slot.name] = value
        return out

    def unmappable(self, node: _UiNode, catalog: Catalog) -> str | None:
        """Why a node's widgets cannot be named, or None when its schema is in the catalog."""
        group = node.type.removeprefix("workflow>").removeprefix("workflow/")
        if node.type in self.subgraphs:
            return (
                f"is a subgraph ({self.subgraphs[node.type]!r}); flowforge reads flat graphs "
                "only: unpack it in the editor (right-click > Unpack Subgraph) and save again"
            )
        if group != node.type:
            return f"is a group node ({group!r}); convert it to nodes in the editor and save again"
        if node.type not in catalog:
            return f"node type not in the catalog ({catalog.source}), so its widgets are unknown"
        return None

    def widget_inputs(
        self, node: _UiNode, schema: NodeSchema, linked: dict[str, Value]
    ) -> list[tuple[str, Value]]:
        """The widget inputs in declaration order; a linked widget takes its link."""
        widgets = schema.widgets()
        names = ", ".join(spec.name for spec in widgets)
        links_only = [(spec.name, linked[spec.name]) for spec in widgets if spec.name in linked]
        if len(links_only) < len(widgets) and not order_known(schema):
            why = f"the catalog does not know the declaration order of its widgets ({names})"
            self.issue(node, f"{why}, so widgets_values cannot be named")
            return links_only
        values = node.values if isinstance(node.values, list) else None
        named = name_widget_values(values, widgets) if values is not None else None
        if named is None:
            self.issue(
                node,
                f"widgets_values {_short(node.values)} does not fit the catalog's "
                f"{len(widgets)} widget(s) ({names}) and the editor's control/upload values "
                "(a different version of this node?)",
            )
            return links_only
        return [(spec.name, linked.get(spec.name, _literal(named[spec.name]))) for spec in widgets]

    def node(self, node: _UiNode, catalog: Catalog) -> Node | None:
        """The IR node for one UI node, or None for nodes the editor does not send."""
        if node.type in NOTE_TYPES or node.type in (REROUTE, PRIMITIVE):
            return None
        if node.mode == MODE_MUTED:
            self.note(node, "muted: removed, as the editor does not send it")
            return None
        if node.mode == MODE_BYPASSED:
            self.note(node, "bypassed: removed, its consumers read its inputs of the same type")
            return None
        meta = JsonLiteral.of({"title": node.title or node.type})
        reason = self.unmappable(node, catalog)
        if reason is not None:  # keep what can be kept: the node and its links
            self.issue(node, reason)
            return Node(node.id, node.type, tuple(self.linked(node, None).items()), meta)
        schema = catalog[node.type]
        linked = self.linked(node, schema)
        inputs = self.widget_inputs(node, schema, linked)
        done = {name for name, _ in inputs}
        inputs += [(name, value) for name, value in linked.items() if name not in done]
        return Node(node.id, node.type, tuple(inputs), meta)


def from_ui(data: Any, catalog: Catalog, source: str = "<input>") -> UiImportResult:
    """Read decoded UI-format JSON into the IR, with every unmappable thing reported.

    Raises UiFormatError only when `data` is not a UI-format workflow at all (wrong shape,
    malformed node or link entries, duplicate ids).
    """
    kind = detect_format(data)
    if kind != "ui":
        hint = " (this is API format: read it with from_api)" if kind == "api" else ""
        raise UiFormatError(
            f"{source}: not a UI-format workflow: expected 'nodes' and 'links'{hint}"
        )
    if len(data["nodes"]) > MAX_NODES:
        raise UiFormatError(f"{source}: {len(data['nodes']):,} nodes is more than {MAX_NODES:,}")
    nodes: dict[str, _UiNode] = {}
    for raw in data["nodes"]:
        parsed = _parse_node(raw, source)
        if parsed.id in nodes:
            raise UiFormatError(f"{source}: duplicate node id {parsed.id}")
        nodes[parsed.id] = parsed
    reader = _Reader(nodes, _parse_links(data["links"], source), data)
    mapped = [reader.node(node, catalog) for node in nodes.values()]
    workflow = Workflow(tuple(node for node in mapped if node is not None))
    return UiImportResult(workflow, tuple(reader.issues), tuple(reader.notes))


def from_ui_strict(data: Any, catalog: Catalog, source: str = "<input>") -> Workflow:
    """Like `from_ui`, but any unmappable thing raises one UiFormatError naming them all."""
    result = from_ui(data, catalog, source)
    if result.issues:
        listed = "; ".join(str(issue) for issue in result.issues)
        raise UiFormatError(
            f"{source}: {len(result.issues)} thing(s) in this UI workflow cannot be mapped: "
            f"{listed}"
        )
    return result.workflow


def load_ui(path: Path | str, catalog: Catalog) -> Workflow:
    """Read a UI-format file strictly (the CLI's entry point)."""
    return from_ui_strict(read_json_file(path), catalog, str(path))


def to_ui(workflow: Workflow, catalog: Catalog) -> dict[str, Any]:
    """A UI-format file the ComfyUI editor loads, laid out left to right by graph depth.

    Raises UiFormatError listing every node that cannot be written: ids that are not
    integers (canonicalize first), classes not in the catalog, widgets whose declaration
    order the catalog does not know, missing widget values, undeclared inputs, cycles.
    """
    problems = writable_problems(workflow, catalog)
    try:
        order = topological_order(workflow) if not problems else []
    except GraphError as err:
        problems.append(str(err))
    if problems:
        raise UiFormatError(f"cannot write this workflow as a UI file: {'; '.join(problems)}")
    return editor_file(workflow, catalog, order)


def save_ui(workflow: Workflow, catalog: Catalog, path: Path | str) -> None:
    """Write a UI-format file (see `to_ui`)."""
    text = json.dumps(to_ui(workflow, catalog), indent=2, ensure_ascii=False)
    Path(path).write_text(text + "\n", encoding="utf-8")
