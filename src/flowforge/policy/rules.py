"""What each node class accepts, spelled in the policy's tokens (for ``grammar.py``).

The decoding grammar asks, token by token, "which input names may come next, which values
may this input take". This module answers once per (tokenizer, catalog), by reading every
value token the way ``from_text`` reads it (so the grammar and the parser cannot disagree)
and every input spec the way ``validate`` checks it (kind, min/max, enum choices).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from flowforge.workflow.graph import Value
from flowforge.workflow.schema import Catalog, InputSpec, NodeSchema
from flowforge.workflow.textform import SEED_INPUTS, Bindings, TextFormError, from_text

from .tokenizer import PolicyTokenizer
from .vocab import key_text, literal_text

# Two different requests: a value token whose meaning changes between them is a placeholder.
_REQUESTS = (Bindings.request("a", "b", 1), Bindings.request("c", "d", 2))


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class Slot:
    """One input of a class as the grammar sees it (only inputs the vocabulary can write)."""

    name: str
    key: int  # token id of `` name=``
    required: bool
    link_type: str | None  # input type of a link input; None for widgets
    values: NDArray[np.int64]  # value token ids of a widget input (empty for links)
    value_set: frozenset[int]


@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class ClassRule:
    """A class the grammar can write: its token, inputs in canonical order, outputs."""

    class_type: str
    token: int
    slots: tuple[Slot, ...]
    outputs: tuple[str, ...]
    output_node: bool
    required_links: frozenset[str]
    #: Per position p (-1 = right after the class, at index p + 1): the inputs that may come
    #: next (up to and including the first required one) and how many required ones remain.
    next_slots: tuple[tuple[int, ...], ...]
    required_after: tuple[int, ...]
    key_slot: dict[int, int] = field(compare=False)

    @property
    def required(self) -> int:
        return self.required_after[0]


def _meaning(surface: str) -> tuple[Value, Value] | None:
    """The value `surface` parses to under two different requests; None if it is no value."""
    try:
        return tuple(  # type: ignore[return-value]
            from_text(f"1 X v={surface}", request).nodes[0].inputs[0][1] for request in _REQUESTS
        )
    except TextFormError:
        return None


@dataclass(frozen=True)
class ValueTokens:
    """The vocabulary's value tokens sorted by what they parse to."""

    atom_ids: dict[str, int]
    ints: tuple[tuple[int, int], ...]  # (token id, value)
    floats: tuple[tuple[int, float], ...]
    bools: tuple[int, ...]
    strings: tuple[int, ...]  # plain string literals (no placeholder)
    texts: tuple[int, ...]  # $PROMPT..., $NEGATIVE..., negative templates
    seeds: tuple[int, ...]  # $SEED...

    @staticmethod
    def of(tokenizer: PolicyTokenizer) -> ValueTokens:
        ints: list[tuple[int, int]] = []
        floats: list[tuple[int, float]] = []
        bools: list[int] = []
        strings: list[int] = []
        texts: list[int] = []
        seeds: list[int] = []
        for surface in tokenizer.vocab.values:
            meaning = _meaning(surface)
            if meaning is None:
                continue
            token, (first, second) = tokenizer.atom_ids[surface], meaning
            if first != second or type(first) is not type(second):
                (seeds if type(first) is int else texts).append(token)
            elif isinstance(first, bool):
                bools.append(token)
            elif isinstance(first, int):
                ints.append((token, first))
            elif isinstance(first, float):
                floats.append((token, first))
            elif isinstance(first, str):
                strings.append(token)
        return ValueTokens(
            tokenizer.atom_ids,
            tuple(ints),
            tuple(floats),
            tuple(bools),
            tuple(strings),
            tuple(texts),
            tuple(seeds),
        )

    def for_input(self, spec: InputSpec, within: tuple[float, float] | None = None) -> list[int]:
        """Value tokens a literal of widget input `spec` may be (what validates, one spelling);
        a number also `within` (low, high) when given (`WorkflowVocab.number_range`)."""
        if spec.kind == "ENUM":
            surfaces = (literal_text(choice) for choice in spec.choices)
            return [self.atom_ids[s] for s in surfaces if s in self.atom_ids]
        if spec.kind == "INT" and spec.name in SEED_INPUTS:
            return list(self.seeds)
        if spec.kind in ("INT", "FLOAT"):
            low = -float("inf") if spec.min is None else spec.min
            high = float("inf") if spec.max is None else spec.max
            if within is not None:
                low, high = max(low, within[0]), min(high, within[1])
            numbers = self.ints if spec.kind == "INT" else self.floats
            return [token for token, value in numbers if low <= value <= high]
        if spec.kind == "BOOLEAN":
            return list(self.bools)
        if spec.kind == "STRING":
            return list(self.texts if spec.multiline else self.strings)
        return []


def _slots(schema: NodeSchema, tokenizer: PolicyTokenizer, values: ValueTokens) -> list[Slot]:
    """Writable inputs in canonical (name) order; [] if a required one cannot be written."""
    slots = []
    for spec in sorted(schema.inputs, key=lambda s: s.name):
        key = tokenizer.atom_ids.get(key_text(spec.name))
        within = None
        if spec.kind in ("INT", "FLOAT"):
            within = tokenizer.vocab.number_range(schema.class_type, spec.name)
        ids = [] if spec.kind == "link" else values.for_input(spec, within)
        if key is None or (spec.kind != "link" and not ids):
            if spec.required:
                return []
            continue
        slots.append(
            Slot(
                spec.name,
                key,
                spec.required,
                spec.type if spec.kind == "link" else None,
                np.asarray(ids, dtype=np.int64),
                frozenset(ids),
            )
        )
    return slots


def _rule(class_type: str, token: int, schema: NodeSchema, slots: list[Slot]) -> ClassRule:
    next_slots, required_after = [], []
    for position in range(-1, len(slots)):
        following: list[int] = []
        for index in range(position + 1, len(slots)):
            following.append(index)
            if slots[index].required:
                break
        next_slots.append(tuple(following))
        required_after.append(sum(s.required for s in slots[position + 1 :]))
    return ClassRule(
        class_type,
        token,
        tuple(slots),
        schema.outputs,
        schema.output_node,
        frozenset(s.link_type for s in slots if s.required and s.link_type),
        tuple(next_slots),
        tuple(required_after),
        {slot.key: index for index, slot in enumerate(slots)},
    )


def class_rules(
    tokenizer: PolicyTokenizer, catalog: Catalog, values: ValueTokens
) -> tuple[ClassRule, ...]:
    """A rule per vocabulary class that the catalog knows and the vocabulary can write."""
    rules = []
    for surface in tokenizer.vocab.classes:
        class_type = json.loads(surface) if surface.startswith('"') else surface
        schema = catalog.get(class_type)
        if schema is None:
            continue
        slots = _slots(schema, tokenizer, values)
        if len(slots) < len(schema.required()):
            continue  # some required input has no key or no value token
        rules.append(_rule(class_type, tokenizer.atom_ids[surface], schema, slots))
    return tuple(rules)
