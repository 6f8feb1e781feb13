"""Validation of a workflow against node schemas: every problem, never a repair.

Problems use ComfyUI's own error type names where ComfyUI has one (``value_not_in_list``,
``return_type_mismatch``, ``required_input_missing``, ...), so a report reads like the
server's answer, and name the node id, class, input, what was expected and what was found.

Kinds (severity):
- ``unknown_class_type`` (error): the class is not in the catalog; its inputs and outputs
  are unknown, so links from it are not type-checked and it may be an output node.
- ``required_input_missing``, ``invalid_input_type`` (wrong literal type, or a literal where
  a link is required), ``value_smaller_than_min``, ``value_bigger_than_max``,
  ``value_not_in_list`` (enum: sampler, scheduler, model file...), ``bad_linked_input``
  (missing source node, slot out of range, malformed link), ``return_type_mismatch``,
  ``cycle``, ``prompt_no_outputs`` (errors: a real ComfyUI rejects all of these).
- ``unknown_input``: a warning for a literal (ComfyUI ignores inputs a node does not declare,
  so the value is silently lost; typically a workflow for a newer version of that node), an
  error for a link (ComfyUI passes it to the node as an argument and the run fails). The
  editor's ``upload`` value on image-upload nodes is part of every export and not reported.
- ``unreachable_node`` (warning): feeds no output node, so ComfyUI never runs it.
- ``unknown_embedding`` (warning): ComfyUI skips an ``embedding:NAME`` it does not have.

Model-file enums (checkpoints, LoRAs, upscale models, uploaded images) describe one
installation; ``check_model_files=False`` skips them to judge structure alone.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from .graph import JsonLiteral, Link, Node, Value, Workflow
from .schema import Catalog, InputSpec

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one node (or the whole graph when `node_id` is None)."""

    kind: str
    message: str
    node_id: str | None = None
    class_type: str | None = None
    input: str | None = None
    expected: str | None = None
    found: str | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = f"node {self.node_id} ({self.class_type})" if self.node_id else "workflow"
        if self.input:
            where += f" input {self.input!r}"
        detail = ""
        if self.expected is not None or self.found is not None:
            detail = f": expected {self.expected}, found {self.found}"
        return f"{self.severity} {self.kind} at {where}: {self.message}{detail}"


@dataclass(frozen=True)
class ValidationReport:
    """All problems found; valid when there is no error (warnings do not fail a workflow)."""

    problems: tuple[Problem, ...]

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")


EMBEDDING_PATTERN = re.compile(r"embedding:([A-Za-z0-9_.\-]+)")
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin", ".pth")


def types_match(output_type: str, input_type: str) -> bool:
    """ComfyUI's rule: "*" matches anything; comma-separated types match if they share one."""
    if output_type == "*" or input_type == "*":
        return True
    return bool(set(output_type.split(",")) & set(input_type.split(",")))


def _found(value: Value) -> str:
    if isinstance(value, Link):
        return f"link to node {value.node} slot {value.slot}"
    if isinstance(value, JsonLiteral):
        return value.text if len(value.text) <= 60 else value.text[:57] + "..."
    return f"{json.dumps(value, ensure_ascii=False)} ({type(value).__name__})"


def _check_literal(
    node: Node, spec: InputSpec, value: Value, check_model_files: bool
) -> list[Problem]:
    """Problems of a literal value against a widget spec (type, range, enum)."""

    def problem(kind: str, message: str, expected: str) -> list[Problem]:
        return [
            Problem(kind, message, node.id, node.class_type, spec.name, expected, _found(value))
        ]

    if isinstance(value, JsonLiteral) and isinstance(value.value(), list):
        # ComfyUI reads every list as a link; one that is not ["id", slot] is malformed.
        return problem("bad_linked_input", "malformed link", '["node id", output slot]')
    if spec.kind == "link":
        return problem("invalid_input_type", "a literal where a link is required", spec.describe())
    if isinstance(value, JsonLiteral):
        return problem("invalid_input_type", "an object literal", spec.describe())
    type_ok = {
        "INT": type(value) is int,
        "FLOAT": type(value) in (int, float),
        "STRING": isinstance(value, str),
        "BOOLEAN": isinstance(value, bool),
        "ENUM": isinstance(value, str),
    }[spec.kind]
    if not type_ok:
        return problem("invalid_input_type", f"wrong literal type for {spec.kind}", spec.describe())
    if spec.kind in ("INT", "FLOAT"):
        assert isinstance(value, int | float)
        if spec.min is not None and value < spec.min:
            return problem("value_smaller_than_min", "value below the minimum", spec.describe())
        if spec.max is not None and value > spec.max:
            return problem("value_bigger_than_max", "value above the maximum", spec.describe())
    if spec.kind == "ENUM" and value not in spec.choices:
        if spec.is_model_file and not check_model_files:
            return []
        what = "model file not installed" if spec.is_model_file else "value not in the list"
        return problem("value_not_in_list", what, spec.describe())
    return []


def _check_link(
    workflow: Workflow, catalog: Catalog, node: Node, spec: InputSpec, link: Link
) -> list[Problem]:
    """Problems of a link: missing source, slot out of range, type mismatch."""

    def problem(kind: str, message: str, expected: str) -> list[Problem]:
        return [Problem(kind, message, node.id, node.class_type, spec.name, expected, _found(link))]

    if link.node not in workflow:
        return problem("bad_linked_input", "link to a node that does not exist", "an existing node")
    source = catalog.get(workflow.node(link.node).class_type)
    if source is None:
        return []  # an unknown class is reported on its own node; its outputs are unknown
    if not 0 <= link.slot < len(source.outputs):
        return problem(
            "bad_linked_input",
            f"output slot out of range for {source.class_type}",
            f"slot 0..{len(source.outputs) - 1}",
        )
    produced = source.outputs[link.slot]
    wanted = spec.type if spec.kind == "link" else ("COMBO" if spec.kind == "ENUM" else spec.kind)
    if not types_match(produced, wanted):
        return [
            Problem(
                "return_type_mismatch",
                f"{source.class_type} output {link.slot} is {produced}",
                node.id,
                node.class_type,
                spec.name,
                wanted,
                f"{produced} from node {link.node} slot {link.slot}",
            )
        ]
    return []


def _check_embeddings(node: Node, name: str, text: str, catalog: Catalog) -> list[Problem]:
    if catalog.embeddings is None:
        return []
    known = set(catalog.embeddings)
    problems = []
    for match in EMBEDDING_PATTERN.finditer(text):
        embedding = match.group(1)
        stem = next(
            (embedding[: -len(s)] for s in EMBEDDING_SUFFIXES if embedding.endswith(s)), embedding
        )
        if embedding not in known and stem not in known:
            problems.append(
                Problem(
                    "unknown_embedding",
                    "ComfyUI ignores an embedding it does not have",
                    node.id,
                    node.class_type,
                    name,
                    "an installed embedding",
                    embedding,
                    "warning",
                )
            )
    return problems


def _check_node(
    workflow: Workflow, catalog: Catalog, node: Node, check_model_files: bool
) -> list[Problem]:
    schema = catalog.get(node.class_type)
    if schema is None:
        return [
            Problem(
                "unknown_class_type",
                "node class not in the catalog",
                node.id,
                node.class_type,
                None,
                f"a node class of {catalog.source}",
                node.class_type,
            )
        ]
    problems: list[Problem] = []
    for name, value in node.inputs:
        spec = schema.input(name)
        if spec is None:
            if name == "upload" and schema.has_upload_widget():
                continue  # the editor's upload button value, part of every API export
            # ComfyUI ignores a literal it does not declare (the setting is silently lost:
            # a warning, typically a workflow for a newer node version), but passes a linked
            # one to the node as an argument, which fails when the prompt runs: an error.
            linked = isinstance(value, Link)
            problems.append(
                Problem(
                    "unknown_input",
                    f"{node.class_type} has no input of this name; "
                    + (
                        "ComfyUI passes the link and the node fails"
                        if linked
                        else "ComfyUI ignores it"
                    ),
                    node.id,
                    node.class_type,
                    name,
                    ", ".join(s.name for s in schema.inputs),
                    _found(value) if linked else name,
                    "error" if linked else "warning",
                )
            )
        elif isinstance(value, Link):
            problems += _check_link(workflow, catalog, node, spec, value)
        else:
            problems += _check_literal(node, spec, value, check_model_files)
            if spec.kind == "STRING" and isinstance(value, str):
                problems += _check_embeddings(node, name, value, catalog)
    given = {name for name, _ in node.inputs}
    for spec in schema.required():
        if spec.name not in given:
            problems.append(
                Problem(
                    "required_input_missing",
                    "required input not given",
                    node.id,
                    node.class_type,
                    spec.name,
                    spec.describe(),
                    "nothing",
                )
            )
    return problems


def _cycles(workflow: Workflow) -> list[list[str]]:
    """Strongly connected components with a cycle (Tarjan), over links to existing nodes."""
    edges = {
        node.id: [link.node for _, link in node.links() if link.node in workflow]
        for node in workflow
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:
        work = [(start, iter(edges[start]))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(edges[child])))
                elif child in on_stack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[current])
            if low[current] == index[current]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == current:
                        break
                if len(component) > 1 or current in edges[current]:
                    found.append(sorted(component))

    for node_id in edges:
        if node_id not in index:
            visit(node_id)
    return found


def _graph_problems(workflow: Workflow, catalog: Catalog) -> list[Problem]:
    problems = []
    for component in _cycles(workflow):
        first = workflow.node(component[0])
        problems.append(
            Problem(
                "cycle",
                f"cycle through nodes {', '.join(component)}",
                first.id,
                first.class_type,
                None,
                "an acyclic graph",
                " -> ".join(component),
            )
        )
    unknown = [n.id for n in workflow if n.class_type not in catalog]
    outputs = [n.id for n in workflow if (s := catalog.get(n.class_type)) and s.output_node]
    if not outputs and not unknown:
        problems.append(
            Problem(
                "prompt_no_outputs",
                "no output node (e.g. SaveImage), nothing would run",
                expected="at least one output node",
                found="none",
            )
        )
        return problems
    # A node of unknown class may be an output node, so it counts as one here.
    reached = set(outputs) | set(unknown)
    frontier = list(reached)
    while frontier:
        node = workflow.node(frontier.pop())
        for _, link in node.links():
            if link.node in workflow and link.node not in reached:
                reached.add(link.node)
                frontier.append(link.node)
    for node in workflow:
        if node.id not in reached:
            problems.append(
                Problem(
                    "unreachable_node",
                    "feeds no output node; ComfyUI will not run it",
                    node.id,
                    node.class_type,
                    severity="warning",
                )
            )
    return problems


def validate(
    workflow: Workflow, catalog: Catalog, *, check_model_files: bool = True
) -> ValidationReport:
    """Every problem of `workflow` against `catalog`, node by node, then graph-wide.

    `check_model_files=False` skips enum checks of model-file inputs (checkpoints, LoRAs,
    ...): those lists describe one installation, so a workflow written for another one is
    still structurally sound.
    """
    problems: list[Problem] = []
    for node in workflow:
        problems += _check_node(workflow, catalog, node, check_model_files)
    problems += _graph_problems(workflow, catalog)
    return ValidationReport(tuple(problems))
