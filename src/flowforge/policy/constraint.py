"""Schema-constrained decoding: a logits processor that only lets valid workflows through.

`GrammarConstraint` runs a token grammar (`Grammar`, e.g. ``grammar.TextFormGrammar``)
beside ``model.generate``: one grammar state per row of the batch, advanced by the token the
row just generated, and every token the state does not allow set to -inf. With
`TextFormGrammar` every finished sample parses and validates against the catalog, and with
``max_new_tokens`` given, every sample finishes within it (docs/policy.md, "Decoding").

Rows: ``generate`` hands the processor ``input_ids`` of shape (rows, prompt + generated); a
batch is left-padded, so the generated part starts at the same column for every row, and
``num_return_sequences`` has already repeated each prompt, so each row is simply one
sample. A finished row is continued with ``<pad>`` by ``generate``; its state stays done
and allows ``<eos>`` only (never an all -inf row, which would make sampling fail).

A new ``generate`` call is recognised because its ``input_ids`` are not the previous call's
plus one column; the processor can be reused across calls and batches. Compose it last:
``[guidance, constraint]``, so nothing after it can re-enable a masked token.
"""

from __future__ import annotations

from typing import Generic

import numpy as np
import torch
from transformers import LogitsProcessor

from flowforge.workflow.schema import Catalog

from .grammar import Grammar, GrammarState, StateT, TextFormGrammar
from .tokenizer import PolicyTokenizer

__all__ = ["Grammar", "GrammarConstraint", "schema_constraint"]


class GrammarConstraint(LogitsProcessor, Generic[StateT]):
    """Masks every token the grammar does not allow, row by row (module docstring).

    `max_new_tokens` must be the generation's own (it is the grammar's budget); None lets
    the grammar run to its own limit (the vocabulary's line count), which ``generate`` may
    cut short.
    """

    def __init__(self, grammar: Grammar[StateT], max_new_tokens: int | None = None) -> None:
        self.grammar = grammar
        self.max_new_tokens = max_new_tokens
        self._states: list[StateT] = []
        self._seen: torch.Tensor | None = None

    @property
    def states(self) -> tuple[StateT, ...]:
        """The grammar state of each row after the last call (for GRPO and diagnostics)."""
        return tuple(self._states)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._step(input_ids)
        allowed = [self.grammar.allowed(state) for state in self._states]
        counts = torch.tensor([len(ids) for ids in allowed])
        rows = torch.repeat_interleave(torch.arange(len(allowed)), counts).to(scores.device)
        cols = torch.from_numpy(np.concatenate(allowed)).to(scores.device)
        masked = torch.full_like(scores, float("-inf"))
        masked[rows, cols] = scores[rows, cols]
        return masked  # type: ignore[return-value]

    def _step(self, input_ids: torch.Tensor) -> None:
        """Start states for a new ``generate`` call, or advance each row by its new token."""
        seen = self._seen
        continues = (
            seen is not None
            and input_ids.shape[0] == seen.shape[0]
            and input_ids.shape[1] == seen.shape[1] + 1
            and torch.equal(input_ids[:, :-1], seen)
        )
        if continues:
            tokens = input_ids[:, -1].tolist()
            advance = self.grammar.advance
            self._states = [advance(s, t) for s, t in zip(self._states, tokens, strict=True)]
        else:
            start = self.grammar.initial_state(self.max_new_tokens)
            self._states = [start] * input_ids.shape[0]
        self._seen = input_ids


def schema_constraint(
    tokenizer: PolicyTokenizer, catalog: Catalog, max_new_tokens: int | None = None
) -> GrammarConstraint[GrammarState]:
    """The schema constraint of the text form for `tokenizer` and `catalog` (most callers).

    It builds a new grammar (~0.1 s, memos cold): to decode often, hold one `TextFormGrammar`
    and make a `GrammarConstraint(grammar, max_new_tokens)` per generation (or reuse one).
    """
    return GrammarConstraint(TextFormGrammar(tokenizer, catalog), max_new_tokens)
