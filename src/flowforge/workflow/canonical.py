"""Canonical form and content hash of a workflow.

Two files that describe the same graph (different node ids, different key order, different
``_meta`` titles) must become the same canonical workflow and the same hash: the hash is
the identity of a workflow everywhere in flowforge (library deduplication, the collection
journal's key, "is this design new?").

The canonical form:
- drops ``_meta`` (editor decoration);
- sorts each node's inputs by name;
- orders nodes topologically, breaking ties by a structural key that does not depend on ids:
  the node's *upstream* hash (its class, literals and, recursively, what feeds it) and its
  *downstream* hash (what it feeds, recursively), so the order is stable under renaming;
- renumbers ids "1".."n" in that order.
Literals keep their exact JSON type: ``7`` and ``7.0`` are different workflows here, as they
are different files.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import defaultdict
from collections.abc import Callable

from .api import to_api
from .graph import GraphError, JsonLiteral, Link, Node, Value, Workflow

#: Maps (node, input name, literal) to the value the ordering should see. The text form uses
#: one to hide per-request values (prompt texts, seeds), so that one design gets one node
#: order whatever prompt was written into it.
Mask = Callable[[Node, str, Value], Value]


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def _literal_text(value: Value) -> str:
    if isinstance(value, JsonLiteral):
        return "J" + value.text
    return json.dumps(value, ensure_ascii=False)


def topological_order(workflow: Workflow) -> list[str]:
    """Node ids in an order where every node comes after the nodes it reads from.

    Raises GraphError naming the nodes of a cycle, or a link to a node that does not exist.
    Order among independent nodes follows the file; `canonicalize` uses its own tie-break.
    """
    indegree = {node.id: 0 for node in workflow}
    children: dict[str, list[str]] = defaultdict(list)
    for node in workflow:
        for name, link in node.links():
            if link.node not in indegree:
                raise GraphError(
                    f"node {node.id} ({node.class_type}) input {name!r} links to missing "
                    f"node {link.node!r}"
                )
            indegree[node.id] += 1
            children[link.node].append(node.id)
    ready = [node.id for node in workflow if indegree[node.id] == 0]
    order: list[str] = []
    while ready:
        current = ready.pop(0)
        order.append(current)
        for child in children[current]:
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)
    if len(order) != len(workflow):
        stuck = sorted(node_id for node_id, degree in indegree.items() if degree > 0)
        raise GraphError(f"cycle through nodes {', '.join(stuck)}")
    return order


def _structural_keys(
    workflow: Workflow, order: list[str], mask: Mask | None
) -> dict[str, tuple[str, str]]:
    """(upstream hash, downstream hash) per node: id-free descriptions of its position."""
    up: dict[str, str] = {}
    for node_id in order:
        node = workflow.node(node_id)
        parts = [node.class_type]
        for name, value in sorted(node.inputs, key=lambda item: item[0]):
            if isinstance(value, Link):
                parts.append(f"{name}=@{up[value.node]}.{value.slot}")
            else:
                seen = value if mask is None else mask(node, name, value)
                parts.append(f"{name}={_literal_text(seen)}")
        up[node_id] = _digest("\x1f".join(parts))
    feeds: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    for node in workflow:
        for name, link in node.links():
            feeds[link.node].append((node.id, name, link.slot))
    down: dict[str, str] = {}
    for node_id in reversed(order):
        edges = sorted(f"{down[c]}:{name}:{slot}" for c, name, slot in feeds[node_id])
        down[node_id] = _digest(up[node_id] + "|" + ",".join(edges))
    return {node_id: (up[node_id], down[node_id]) for node_id in order}


def canonical_order(workflow: Workflow, mask: Mask | None = None) -> list[str]:
    """Node ids in the canonical topological order (independent of ids and file order).

    With `mask`, ties are broken on the masked literals, so values the mask hides cannot
    change the order.
    """
    order = topological_order(workflow)
    keys = _structural_keys(workflow, order, mask)
    indegree = {node.id: sum(1 for _ in node.links()) for node in workflow}
    children: dict[str, list[str]] = defaultdict(list)
    for node in workflow:
        for _, link in node.links():
            children[link.node].append(node.id)
    heap = [(keys[i], i) for i in indegree if indegree[i] == 0]
    heapq.heapify(heap)
    result: list[str] = []
    while heap:
        _, current = heapq.heappop(heap)
        result.append(current)
        for child in children[current]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(heap, (keys[child], child))
    return result


def canonicalize(workflow: Workflow, mask: Mask | None = None) -> Workflow:
    """The canonical form: topological order, ids "1".."n", inputs sorted, no ``_meta``.

    `mask` only steers the order (see `canonical_order`); values are kept as they are.
    """
    order = canonical_order(workflow, mask)
    new_id = {old: str(position + 1) for position, old in enumerate(order)}
    nodes = []
    for old in order:
        node = workflow.node(old)
        inputs = tuple(
            (name, Link(new_id[value.node], value.slot) if isinstance(value, Link) else value)
            for name, value in sorted(node.inputs, key=lambda item: item[0])
        )
        nodes.append(Node(id=new_id[old], class_type=node.class_type, inputs=inputs))
    return Workflow(tuple(nodes))


def canonical_json(workflow: Workflow) -> str:
    """Compact JSON of the canonical form: the exact bytes the content hash is taken of."""
    return json.dumps(
        to_api(canonicalize(workflow), meta=False), separators=(",", ":"), ensure_ascii=False
    )


def workflow_hash(workflow: Workflow) -> str:
    """Content hash (32 hex digits) of the canonical form; equal for id/order variants."""
    return hashlib.sha256(canonical_json(workflow).encode("utf-8")).hexdigest()[:32]
