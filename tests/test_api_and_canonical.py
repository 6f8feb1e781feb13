"""API-format JSON in/out and the canonical form: exact round trips, id-free identity."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import relabel, workflows

from flowforge.workflow.api import (
    WorkflowFormatError,
    from_api,
    load_api,
    parse_json_text,
    to_api,
)
from flowforge.workflow.canonical import canonicalize, topological_order, workflow_hash
from flowforge.workflow.graph import GraphError, JsonLiteral, Link, Node, Workflow


def test_every_real_workflow_round_trips_to_identical_json(comfymind_files: list[Path]) -> None:
    for path in comfymind_files:
        raw = path.read_text(encoding="utf-8")
        workflow = load_api(path)
        assert json.dumps(to_api(workflow), indent=2, ensure_ascii=False) == json.dumps(
            json.loads(raw), indent=2, ensure_ascii=False
        ), path.name


def test_every_real_workflow_canonicalizes_idempotently(comfymind_files: list[Path]) -> None:
    for path in comfymind_files:
        canonical = canonicalize(load_api(path))
        assert to_api(canonicalize(canonical)) == to_api(canonical), path.name
        assert canonical.ids() == tuple(str(i) for i in range(1, len(canonical) + 1))


def test_literal_types_survive_exactly() -> None:
    data = {
        "1": {
            "inputs": {
                "a": 7,
                "b": 7.0,
                "c": True,
                "d": None,
                "e": "x",
                "f": {"k": [1, 2]},
                "g": ["1", 0],
            },
            "class_type": "X",
        }
    }
    text = json.dumps(to_api(from_api(data)))
    assert text == json.dumps(data)
    node = from_api(data).node("1")
    assert node.get("g") == Link("1", 0)
    assert isinstance(node.get("f"), JsonLiteral)


def test_hash_distinguishes_int_from_float_and_bool() -> None:
    def one(value: object) -> Workflow:
        return from_api({"1": {"class_type": "X", "inputs": {"v": value}}})

    hashes = {workflow_hash(one(v)) for v in (1, 1.0, True)}
    assert len(hashes) == 3


@settings(max_examples=150, deadline=None)
@given(workflows(), st.randoms(use_true_random=False))
def test_canonical_form_ignores_ids_and_order(workflow: Workflow, rng: random.Random) -> None:
    other = relabel(workflow, rng)
    assert workflow_hash(other) == workflow_hash(workflow)
    assert to_api(canonicalize(other)) == to_api(canonicalize(workflow))


@settings(max_examples=150, deadline=None)
@given(workflows())
def test_canonicalize_is_idempotent_and_keeps_the_api_round_trip(workflow: Workflow) -> None:
    canonical = canonicalize(workflow)
    assert canonicalize(canonical) == canonical
    assert from_api(to_api(workflow)) == workflow
    order = {node_id: k for k, node_id in enumerate(canonical.ids())}
    for node in canonical:
        for _, link in node.links():
            assert order[link.node] < order[node.id], "links must point backwards"


def test_hash_changes_when_a_value_changes() -> None:
    base = from_api(
        {
            "1": {"class_type": "X", "inputs": {"v": 1}},
            "2": {"class_type": "Y", "inputs": {"x": ["1", 0]}},
        }
    )
    changed = base.replace_node(base.node("1").with_inputs(v=2))
    rewired = base.replace_node(base.node("2").with_inputs(x=Link("1", 1)))
    assert len({workflow_hash(w) for w in (base, changed, rewired)}) == 3


def test_cycle_is_reported_with_node_ids() -> None:
    cyclic = Workflow(
        (Node("a", "X", (("i", Link("b", 0)),)), Node("b", "X", (("i", Link("a", 0)),)))
    )
    with pytest.raises(GraphError, match="cycle through nodes a, b"):
        topological_order(cyclic)


def test_duplicate_ids_are_rejected() -> None:
    with pytest.raises(GraphError, match="duplicate node id"):
        Workflow((Node("1", "X"), Node("1", "Y")))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "malformed JSON at line 1"),
        ("[1, 2]", "not a ComfyUI workflow"),
        ('{"prompt": {"1": {"class_type": "X", "inputs": {}}}}', "/prompt request body"),
        ('{"nodes": [], "links": []}', "UI-format workflow"),
        ("[" * 5000 + "]" * 5000, "nested deeper than"),
        ('{"a": ' * 100 + "1" + "}" * 100, "nested deeper than"),
    ],
)
def test_bad_input_gives_one_readable_line(text: str, message: str) -> None:
    with pytest.raises(WorkflowFormatError, match=message) as caught:
        from_api(parse_json_text(text, "f.json"), "f.json")
    assert "\n" not in str(caught.value)
