"""What the reward model reads of a workflow: weighted tokens of its text form.

A workflow text (``workflow/textform.py``) is parsed into the IR and validated against the
catalog once (`read_design`); a text that fails either is *invalid* and gets the floor
reward, never a prediction. A valid design becomes a bag of weighted tokens
(`workflow_tokens`), read by an ``EmbeddingBag`` (`model.MemberNet`). Tokens, not a fixed
feature list, so that any node class and input a catalog offers is read, and unseen
*compositions* of known parts are scored from their parts:

- ``C`` and ``C#k`` for a node of class C, the k-th of its class in canonical (topological)
  order: the role of a node (base sampler ``KSampler#1``, hires sampler ``KSampler#2``);
- ``C.name=value`` and ``C#k.name=value`` for every literal (numbers on their text-form
  grids, so a value is a finite vocabulary word);
- ``C#k.name<-S#j.slot`` for a link: the structure of the graph;
- for a number, also ``C#k.name#`` with weight z and ``C#k.name#2`` with weight z**2, where z
  is the value standardized with the training designs' mean and std of that input: a
  smooth scale and a "sweet spot" shape that extend to values never seen;
- ``a&b`` for every pair of the workflow's categorical settings (checkpoint x LoRA, sampler
  x scheduler, ...), since quality lives in combinations (second-order crosses, as in
  factorization machines); optional (`RewardConfig.crosses`);
- ``nodes=N``.

`Vocab` maps tokens to embedding rows: tokens seen in at least ``min_count`` training designs
get their own row; any other token is hashed (stable BLAKE2b, not Python's salted ``hash``)
into one of ``hash_buckets`` shared rows, so an unseen token still carries a (shared,
learned) signal. Row 0 is padding.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..workflow.graph import GraphError, JsonLiteral, Link, Workflow
from ..workflow.schema import Catalog
from ..workflow.textform import Bindings, TextFormError, from_text
from ..workflow.validate import validate

#: What the placeholders are filled with to read a design: constant, so they carry nothing.
PROMPT_MARK = "<prompt>"
_BINDINGS = Bindings.request(PROMPT_MARK, "", 0)
_Z_LIMIT = 5.0
_MAX_ERRORS_SHOWN = 3

Token = tuple[str, float | None]  # (token, raw number for a scalar token, else None)


def read_design(text: str, catalog: Catalog) -> Workflow | str:
    """The workflow a text form says, or why it is invalid (does not parse or validate)."""
    try:
        workflow = from_text(text, _BINDINGS)
    except (TextFormError, GraphError) as error:
        return f"does not parse: {error}"
    report = validate(workflow, catalog)
    if not report.ok:
        shown = "; ".join(str(problem) for problem in report.errors[:_MAX_ERRORS_SHOWN])
        more = len(report.errors) - _MAX_ERRORS_SHOWN
        return f"does not validate: {shown}" + (f" (and {more} more)" if more > 0 else "")
    return workflow


def _literal_text(value: Any) -> str:
    if isinstance(value, JsonLiteral):
        return value.text
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return repr(value) if isinstance(value, float) else str(value)


def workflow_tokens(workflow: Workflow, crosses: bool = True) -> list[Token]:
    """The weighted tokens of a design (module docstring); scalar tokens carry raw numbers."""
    seen: Counter[str] = Counter()
    role: dict[str, str] = {}
    tokens: list[Token] = [(f"nodes={len(workflow)}", None)]
    categorical: set[str] = set()
    for node in workflow:
        cls = node.class_type
        seen[cls] += 1
        qualified = role[node.id] = f"{cls}#{seen[cls]}"
        tokens += [(cls, None), (qualified, None)]
        for name, value in node.inputs:
            if isinstance(value, Link):
                tokens.append((f"{qualified}.{name}<-{role[value.node]}.{value.slot}", None))
                continue
            text = _literal_text(value)
            tokens += [(f"{cls}.{name}={text}", None), (f"{qualified}.{name}={text}", None)]
            if isinstance(value, int | float) and not isinstance(value, bool):
                tokens.append((f"{qualified}.{name}#", float(value)))
            elif isinstance(value, str) and value not in ("", PROMPT_MARK):
                categorical.add(f"{name}={text}")
    if crosses:
        tokens += [(f"{a}&{b}", None) for a, b in itertools.combinations(sorted(categorical), 2)]
    return tokens


def _bucket(token: str, buckets: int) -> int:
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


class Vocab:
    """Token -> embedding row, and the standardization of each scalar token (see above).

    Immutable by convention: built by `fit_vocab` or `from_json`, never changed.
    """

    def __init__(
        self, tokens: Sequence[str], scalars: dict[str, tuple[float, float]], hash_buckets: int
    ) -> None:
        self.tokens = tuple(tokens)  # token i has row i + 1 (row 0 is padding)
        self.scalars = dict(scalars)  # scalar token -> (mean, std) over training designs
        self.hash_buckets = hash_buckets
        self._rows = {token: i + 1 for i, token in enumerate(self.tokens)}

    @property
    def size(self) -> int:
        """Rows of the embedding table: padding, the vocabulary, the hash buckets."""
        return 1 + len(self.tokens) + self.hash_buckets

    def row(self, token: str) -> int:
        found = self._rows.get(token)
        if found is None:
            return 1 + len(self.tokens) + _bucket(token, self.hash_buckets)
        return found

    def encode(self, tokens: Sequence[Token]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Embedding rows and weights of one design's tokens: 1 for an indicator, z and z**2
        for a scalar with known statistics (a scalar never seen in training is dropped)."""
        rows: list[int] = []
        weights: list[float] = []
        for token, number in tokens:
            if number is None:
                rows.append(self.row(token))
                weights.append(1.0)
            elif token in self.scalars:
                mean, std = self.scalars[token]
                z = max(-_Z_LIMIT, min(_Z_LIMIT, (number - mean) / std))
                rows += [self.row(token), self.row(token + "2")]
                weights += [z, z * z]
        return np.asarray(rows, np.int64), np.asarray(weights, np.float32)

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": list(self.tokens),
            "scalars": {k: list(v) for k, v in sorted(self.scalars.items())},
            "hash_buckets": self.hash_buckets,
        }

    @staticmethod
    def from_json(data: Any) -> Vocab:
        """The vocabulary saved by `to_json`; ValueError (one line) for anything else."""
        try:
            tokens = tuple(str(t) for t in data["tokens"])
            scalars = {str(k): (float(v[0]), float(v[1])) for k, v in data["scalars"].items()}
            buckets = int(data["hash_buckets"])
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            raise ValueError("not a reward vocabulary (tokens, scalars, hash_buckets)") from None
        if buckets < 1 or any(not std > 0 for _, std in scalars.values()):
            raise ValueError("a reward vocabulary needs hash_buckets >= 1 and positive stds")
        return Vocab(tokens, scalars, buckets)


def fit_vocab(designs: Iterable[Sequence[Token]], min_count: int, hash_buckets: int) -> Vocab:
    """The vocabulary of the training designs (each design counted once, whatever its rows).

    A scalar token's mean and std are over the designs that have it; a constant input gets
    std 1, so its z is 0 and only its indicator tokens speak.
    """
    counts: Counter[str] = Counter()
    values: dict[str, list[float]] = {}
    for tokens in designs:
        counts.update({token for token, _ in tokens})
        counts.update({token + "2" for token, number in tokens if number is not None})
        for token, number in tokens:
            if number is not None:
                values.setdefault(token, []).append(number)
    kept = tuple(sorted(t for t, c in counts.items() if c >= min_count))
    scalars = {}
    for token, numbers in values.items():
        std = float(np.std(numbers))
        usable = std > 1e-9 and math.isfinite(std)
        scalars[token] = (float(np.mean(numbers)), std if usable else 1.0)
    return Vocab(kept, scalars, hash_buckets)
