"""The text form as a token grammar: which next tokens keep a workflow valid (issue 5).

`TextFormGrammar` is a pure state machine over the policy's atomic tokens (``vocab.py``):
``allowed(state)`` gives the token ids that keep the text completable to a workflow that
*validates* against the catalog (``validate(...).ok``), ``advance(state, token)`` the next
state. ``constraint.py`` wraps it as a Hugging Face logits processor; GRPO and tests use it
directly. It knows the text form's layout (``textform.py``): ``"k "`` line ids, one class,
then ``" name="`` / value pairs, ``"\\n"`` between lines and ``<eos>`` at the end.

What a state allows:
- **class**: a catalog class of the vocabulary whose required link inputs can all be fed by
  outputs of earlier lines (links point to earlier lines only), whose required widgets have
  at least one value token, and after which a valid end is still reachable in budget;
- **input name**: inputs in the canonical order (sorted by name, as ``to_text`` writes them),
  each at most once; a required input cannot be skipped, so "required input missing" cannot
  happen; an optional link input only when its type is available;
- **value**: enum choices; ints / floats of the grids within min..max (a FLOAT input takes
  float tokens only: ``7.0``, the one spelling ``to_text`` gives a float); ``true``/``false``;
  ``$SEED...`` for seed inputs; ``$PROMPT...``/``$NEGATIVE...`` (and negative-embedding
  templates) for multiline prompt texts; any plain string token for other strings; links
  ``@N.S`` to earlier outputs whose type matches (`types_match`). Links into widget inputs
  are never offered (the text form can say them, the library never does);
- **end of line** once every required input is written; **<eos>** only at the end of a line
  and when some line is an output node (``prompt_no_outputs``). Cycles cannot be written.

Budget: with ``budget`` (the generation's ``max_new_tokens``) the state counts tokens left
and only allows a token if the shortest valid completion after it still fits, so a policy
that never wants to stop (an untrained one) is still led to ``<eos>`` in time. The same
reasoning keeps the line count within the line ids the vocabulary has (``max_lines``). The
shortest completion is exact: a Dijkstra search over the sets of output types the earlier
lines offer (`_finish`), memoized per set; there are few such sets.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from flowforge.workflow.schema import Catalog
from flowforge.workflow.validate import types_match

from .rules import ClassRule, ValueTokens, class_rules
from .tokenizer import PolicyTokenizer
from .vocab import line_text

#: Token ids, as the grammar hands them out (1-D int64; `torch.from_numpy` shares them).
TokenIds = NDArray[np.int64]

INF = math.inf


StateT = TypeVar("StateT")


class Grammar(Protocol[StateT]):
    """A token grammar: the contract the decoders rely on (``constraint.GrammarConstraint``, GRPO's
    rollout, ``numpy_sampler``).

    `allowed` must never be empty for a state reached from `initial_state` through allowed
    tokens, and must hold only ``<eos>`` once the text is finished.
    """

    def initial_state(self, budget: int | None = None) -> StateT:
        """The state before the first token; `budget` caps the tokens, <eos> included."""
        ...

    def allowed(self, state: StateT) -> NDArray[np.int64]:
        """Allowed next token ids (1-D int64 array)."""
        ...

    def advance(self, state: StateT, token: int) -> StateT:
        """The state after `token` (an error for a token `allowed` does not hold)."""
        ...


class GrammarError(ValueError):
    """A token the grammar does not allow here, or a vocabulary that cannot write a workflow."""


class Phase(IntEnum):
    """What the next token is: a line id, a class, an input name (or end), a value, nothing."""

    LINE_ID = 0
    CLASS = 1
    KEY = 2
    VALUE = 3
    DONE = 4


@dataclass(frozen=True, eq=False)
class Context:
    """What the completed lines offer: output types (for links) and whether one is an output.

    One object per completed prefix of lines, shared by the states of that prefix; it caches
    the link tokens per input type (a pure function of the fields).
    """

    types: frozenset[str]
    has_output: bool
    links: tuple[tuple[str, int], ...]  # (output type, link token id) of earlier lines
    _link_ids: dict[str, tuple[TokenIds, frozenset[int]]] = field(default_factory=dict, repr=False)

    def link_ids(self, input_type: str) -> tuple[TokenIds, frozenset[int]]:
        """Link tokens to earlier outputs that can feed `input_type`, as array and set."""
        found = self._link_ids.get(input_type)
        if found is None:
            ids = [token for out, token in self.links if types_match(out, input_type)]
            found = (np.asarray(ids, dtype=np.int64), frozenset(ids))
            self._link_ids[input_type] = found
        return found


@dataclass(frozen=True, slots=True)
class GrammarState:
    """Where a row is: phase, line number, class, input position, earlier lines, budget.

    `line` is the current line (0 before the first, the completed count in LINE_ID);
    `pos` the last input written (KEY, -1 after the class) or the chosen input (VALUE).
    `remaining` counts tokens still allowed, ``<eos>`` included (None: no budget).
    """

    phase: Phase
    line: int
    rule: int
    pos: int
    context: Context
    remaining: int | None


class _ClassTable:
    """Per (types, has_output): each class's cost once written (inf if not writable)."""

    def __init__(self, ids: list[int], after: list[float], later: list[float]) -> None:
        self.ids: TokenIds = np.asarray(ids, dtype=np.int64)  # class token ids
        self.after_list = after  # tokens needed after the class token, <eos> included
        self.later_list = later  # tokens of the lines still needed after this one
        self._after = np.asarray(after, dtype=np.float64)
        self._later = np.asarray(later, dtype=np.float64)
        # Past these, a larger line room or budget changes nothing: the memo keys are clamped.
        self._room_cap = max((v for v in later if v < INF), default=0.0)
        self._budget_cap = max((v for v in after if v < INF), default=0.0) + 1
        self._memo: dict[tuple[float, float], TokenIds] = {}

    def ids_within(self, line_room: float, budget: float) -> TokenIds:
        """Ids of classes whose later lines fit `line_room` and whose tokens fit `budget`."""
        key = (min(line_room, self._room_cap), min(budget, self._budget_cap))
        found = self._memo.get(key)
        if found is None:
            found = self.ids[(self._later <= key[0]) & (self._after + 1 <= key[1])]
            self._memo[key] = found
        return found


class TextFormGrammar:
    """The text form over `tokenizer`'s atomic tokens, checked against `catalog`.

    Build once per (tokenizer, catalog) (about 0.1 s); states are immutable and cheap.
    """

    def __init__(self, tokenizer: PolicyTokenizer, catalog: Catalog) -> None:
        self.tokenizer = tokenizer
        self.eos = tokenizer.eos_id
        self.newline = tokenizer.newline_id
        values = ValueTokens.of(tokenizer)
        self.rules: tuple[ClassRule, ...] = class_rules(tokenizer, catalog, values)
        if not self.rules:
            raise GrammarError("the tokenizer's vocabulary has no class of the catalog")
        self._by_token = {rule.token: index for index, rule in enumerate(self.rules)}
        self.max_lines = self._line_limit()
        self._line_ids = [tokenizer.line_id(k) for k in range(1, self.max_lines + 1)]
        self._line_arrays = [np.asarray([i], dtype=np.int64) for i in self._line_ids]
        self._eos_array = np.asarray([self.eos], dtype=np.int64)
        self._finish_memo: dict[frozenset[str], float] = {}
        self._table_memo: dict[tuple[frozenset[str], bool], _ClassTable] = {}
        self._union_memo: dict[tuple[frozenset[str], int], frozenset[str]] = {}
        self._satisfied_memo: dict[frozenset[str], frozenset[str]] = {}
        self._arrays: dict[tuple[int, ...], TokenIds] = {}
        self._cheapest_memo: dict[tuple[frozenset[str], bool, int], float] = {}
        self._link_types = frozenset(
            slot.link_type for rule in self.rules for slot in rule.slots if slot.link_type
        )
        self._empty = Context(frozenset(), False, ())

    def _line_limit(self) -> int:
        """The most lines whose ids and links to them all have tokens (vocab ``max_lines``)."""
        atoms = self.tokenizer.atom_ids
        slots = max(len(rule.outputs) for rule in self.rules)
        lines = 0
        while line_text(lines + 1) in atoms and all(
            f"@{lines}.{s}" in atoms for s in range(slots) if lines > 0
        ):
            lines += 1
        if lines < 1:
            raise GrammarError("the tokenizer has no line id tokens")
        return lines

    # --- public interface -----------------------------------------------------------------
    def initial_state(self, budget: int | None = None) -> GrammarState:
        """The state before the first token; `budget` = max tokens, ``<eos>`` included."""
        state = GrammarState(Phase.LINE_ID, 0, -1, -1, self._empty, budget)
        needed = self.need(state)
        if needed == INF or (budget is not None and needed > budget):
            raise GrammarError(
                f"no valid workflow fits: the shortest needs {needed} tokens, budget {budget}"
            )
        return state

    def need(self, state: GrammarState) -> float:
        """Tokens of the shortest valid completion from `state`, ``<eos>`` included."""
        if state.phase == Phase.DONE:
            return 0
        if state.phase in (Phase.LINE_ID, Phase.CLASS):
            line = state.line + 1 if state.phase == Phase.LINE_ID else state.line
            opening = self._cheapest_class(state.context.types, state.context.has_output, line)
            return opening + (1 if state.phase == Phase.LINE_ID else 0)
        rule = self.rules[state.rule]
        after = rule.required_after[state.pos + 1] * 2 + (state.phase == Phase.VALUE)
        return after + self._finish_after(state.context, state.rule)

    def allowed(self, state: GrammarState) -> TokenIds:
        """Token ids allowed next (1-D int64 array, never empty for a reachable state)."""
        if state.phase == Phase.DONE:
            return self._eos_array
        if state.phase == Phase.LINE_ID:
            return self._line_arrays[state.line]
        if state.phase == Phase.CLASS:
            table = self._table(state.context.types, state.context.has_output)
            budget = INF if state.remaining is None else state.remaining
            return table.ids_within(3 * (self.max_lines - state.line), budget)
        if state.phase == Phase.VALUE:
            slot = self.rules[state.rule].slots[state.pos]
            return state.context.link_ids(slot.link_type)[0] if slot.link_type else slot.values
        options = self._key_options(state)
        found = self._arrays.get(options)
        if found is None:
            found = self._arrays[options] = np.asarray(options, dtype=np.int64)
        return found

    def advance(self, state: GrammarState, token: int) -> GrammarState:
        """The state after `token`; GrammarError if `allowed(state)` does not hold it."""
        left = None if state.remaining is None else state.remaining - 1
        phase = state.phase
        if phase == Phase.DONE:
            return state
        if phase == Phase.LINE_ID:
            if token != self._line_ids[state.line]:
                raise self._refused(state, token)
            return GrammarState(Phase.CLASS, state.line + 1, -1, -1, state.context, left)
        if phase == Phase.CLASS:
            index = self._by_token.get(token, -1)
            if index < 0 or not self._class_ok(state, index):
                raise self._refused(state, token)
            return GrammarState(Phase.KEY, state.line, index, -1, state.context, left)
        if phase == Phase.VALUE:
            slot = self.rules[state.rule].slots[state.pos]
            ok = (
                token in state.context.link_ids(slot.link_type)[1]
                if slot.link_type
                else token in slot.value_set
            )
            if not ok:
                raise self._refused(state, token)
            return GrammarState(Phase.KEY, state.line, state.rule, state.pos, state.context, left)
        if token not in self._key_options(state):
            raise self._refused(state, token)
        if token == self.eos:
            return GrammarState(Phase.DONE, state.line, -1, -1, state.context, left)
        if token == self.newline:
            context = self._complete_line(state)
            return GrammarState(Phase.LINE_ID, state.line, -1, -1, context, left)
        index = self.rules[state.rule].key_slot[token]
        return GrammarState(Phase.VALUE, state.line, state.rule, index, state.context, left)

    def shortest_completion(self, state: GrammarState) -> list[int]:
        """Tokens of a shortest valid completion of `state` (through ``<eos>``)."""
        out: list[int] = []
        while state.phase != Phase.DONE:
            options = self.allowed(state).tolist()
            if state.phase == Phase.VALUE:
                token = options[0]  # every value costs the same
            else:
                token = min(options, key=lambda t: self.need(self.advance(state, t)))
            out.append(token)
            state = self.advance(state, token)
        return out

    # --- keys, classes and their costs -------------------------------------------------------
    def _refused(self, state: GrammarState, token: int) -> GrammarError:
        surface = self.tokenizer.token_text(token)
        return GrammarError(
            f"token {token} ({surface!r}) is not allowed at line {state.line} "
            f"({state.phase.name}); was a processor applied after the constraint?"
        )

    def _key_options(self, state: GrammarState) -> tuple[int, ...]:
        """Allowed tokens after a class or a value: next input names, newline, <eos>."""
        rule = self.rules[state.rule]
        following = rule.next_slots[state.pos + 1]
        if len(following) == 1 and rule.required_after[state.pos + 1]:
            # The next required input, alone: always on a shortest completion, so in budget.
            return (rule.slots[following[0]].key,)
        finish = self._finish_after(state.context, state.rule)
        left = INF if state.remaining is None else state.remaining
        options = []
        for index in rule.next_slots[state.pos + 1]:
            slot = rule.slots[index]
            if slot.link_type and slot.link_type not in self._satisfied(state.context.types):
                continue
            if 2 + 2 * rule.required_after[index + 1] + finish <= left:
                options.append(slot.key)
        if rule.required_after[state.pos + 1] == 0:
            if state.context.has_output or rule.output_node:
                options.append(self.eos)
            if state.line < self.max_lines:
                types = self._union(state.context.types, state.rule)
                has = state.context.has_output or rule.output_node
                if 2 + self._cheapest_class(types, has, state.line + 1) <= left:
                    options.append(self.newline)
        return tuple(options)

    def _class_ok(self, state: GrammarState, index: int) -> bool:
        table = self._table(state.context.types, state.context.has_output)
        after, later = table.after_list[index], table.later_list[index]
        left = INF if state.remaining is None else state.remaining
        return later <= 3 * (self.max_lines - state.line) and after + 1 <= left

    def _cheapest_class(self, types: frozenset[str], has_output: bool, line: int) -> float:
        """Tokens from a class token (included) to <eos> with the best class for `line`."""
        key = (types, has_output, line)
        found = self._cheapest_memo.get(key)
        if found is None:
            table = self._table(types, has_output)
            limit = 3 * (self.max_lines - line)
            pairs = zip(table.after_list, table.later_list, strict=True)
            found = 1 + min((a for a, b in pairs if b <= limit), default=INF)
            self._cheapest_memo[key] = found
        return found

    def _finish_after(self, context: Context, index: int) -> float:
        """Tokens from the end of the current line (class `index`) to <eos>, included."""
        if context.has_output or self.rules[index].output_node:
            return 1
        return self._finish(self._union(context.types, index))

    def _complete_line(self, state: GrammarState) -> Context:
        rule = self.rules[state.rule]
        atoms = self.tokenizer.atom_ids
        new = tuple((out, atoms[f"@{state.line}.{s}"]) for s, out in enumerate(rule.outputs))
        return Context(
            self._union(state.context.types, state.rule),
            state.context.has_output or rule.output_node,
            state.context.links + new,
        )

    def _union(self, types: frozenset[str], index: int) -> frozenset[str]:
        """`types` plus class `index`'s outputs, one shared object per result (hash memo)."""
        key = (types, index)
        found = self._union_memo.get(key)
        if found is None:
            found = types | frozenset(self.rules[index].outputs)
            self._union_memo[key] = found
        return found

    def _satisfied(self, types: frozenset[str]) -> frozenset[str]:
        """Input types some output in `types` can feed."""
        found = self._satisfied_memo.get(types)
        if found is None:
            found = frozenset(t for t in self._link_types if any(types_match(o, t) for o in types))
            self._satisfied_memo[types] = found
        return found

    def _writable(self, types: frozenset[str]) -> list[int]:
        fed = self._satisfied(types)
        return [i for i, rule in enumerate(self.rules) if rule.required_links <= fed]

    def _finish(self, types: frozenset[str]) -> float:
        """Fewest tokens of new lines (``\\n`` id class inputs) + <eos> to reach an output
        node from line-end with outputs `types` and none yet: Dijkstra over type sets."""
        memo = self._finish_memo.get(types)
        if memo is not None:
            return memo
        best = INF
        seen = {types: 0}
        heap: list[tuple[int, int, frozenset[str]]] = [(0, 0, types)]
        pushed = 0
        while heap:
            cost, _, current = heapq.heappop(heap)
            if cost >= best:
                break
            if cost > seen[current]:
                continue
            for index in self._writable(current):
                rule = self.rules[index]
                step = cost + 3 + 2 * rule.required
                if rule.output_node:
                    best = min(best, step + 1)
                    continue
                grown = current | frozenset(rule.outputs)
                if grown != current and step < seen.get(grown, INF):
                    seen[grown] = step
                    pushed += 1
                    heapq.heappush(heap, (step, pushed, grown))
        self._finish_memo[types] = best
        return best

    def _table(self, types: frozenset[str], has_output: bool) -> _ClassTable:
        key = (types, has_output)
        table = self._table_memo.get(key)
        if table is None:
            writable = set(self._writable(types))
            after, later = [], []
            for index, rule in enumerate(self.rules):
                if index not in writable:
                    after.append(INF)
                    later.append(INF)
                    continue
                finish = (
                    1 if has_output or rule.output_node else self._finish(self._union(types, index))
                )
                after.append(2 * rule.required + finish)
                later.append(finish - 1)
            table = _ClassTable([rule.token for rule in self.rules], after, later)
            self._table_memo[key] = table
        return table
