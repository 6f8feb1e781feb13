"""Hypothesis strategies for random workflow graphs (shared by property tests)."""

from __future__ import annotations

import random

from hypothesis import strategies as st

from flowforge.workflow.graph import JsonLiteral, Link, Node, Value, Workflow

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
scalars: st.SearchStrategy[Value] = st.one_of(
    st.integers(min_value=-1000, max_value=1000),
    st.integers(min_value=0, max_value=200).map(lambda k: k / 20),
    st.booleans(),
    st.none(),
    st.text(max_size=12),
    st.dictionaries(names, st.integers(), max_size=2).map(JsonLiteral.of),
)


@st.composite
def workflows(draw: st.DrawFn, max_nodes: int = 8) -> Workflow:
    """A random DAG: node k may link to any earlier node; ids are random distinct strings."""
    count = draw(st.integers(min_value=1, max_value=max_nodes))
    ids = draw(
        st.lists(
            st.text(alphabet="0123456789abc", min_size=1, max_size=4),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    nodes = []
    for k in range(count):
        input_names = draw(st.lists(names, max_size=4, unique=True))
        inputs: list[tuple[str, Value]] = []
        for name in input_names:
            if k > 0 and draw(st.booleans()):
                source = ids[draw(st.integers(min_value=0, max_value=k - 1))]
                inputs.append((name, Link(source, draw(st.integers(0, 2)))))
            else:
                inputs.append((name, draw(scalars)))
        class_type = draw(st.sampled_from(["Loader", "Sampler", "Encode", "Decode", "Save"]))
        nodes.append(Node(ids[k], class_type, tuple(inputs)))
    return Workflow(tuple(nodes))


def relabel(workflow: Workflow, rng: random.Random) -> Workflow:
    """The same graph with fresh random ids, shuffled node order and shuffled input order."""
    fresh = [f"n{rng.randrange(10**6)}_{i}" for i in range(len(workflow))]
    mapping = dict(zip(workflow.ids(), fresh, strict=True))
    nodes = []
    for node in workflow:
        inputs = [
            (name, Link(mapping[v.node], v.slot) if isinstance(v, Link) else v)
            for name, v in node.inputs
        ]
        rng.shuffle(inputs)
        nodes.append(Node(mapping[node.id], node.class_type, tuple(inputs)))
    rng.shuffle(nodes)
    return Workflow(tuple(nodes))
