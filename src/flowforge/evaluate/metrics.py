"""The numbers a comparison of designers reports, as small pure functions.

Each is checked in tests against hand-computed values. Definitions (docs/evaluation.md):

- win rate of A against B: over prompts, the share where A's score beats B's, a tie
  counting one half (so two identical designers have 0.5, not 0).
- its 95% interval: Wilson's score interval on those wins out of the prompts (each prompt
  an independent draw); the difference in mean score A - B with a normal interval on the
  per-prompt differences. Both say how far another sample of prompts (and of render noise)
  could move the number, not how far another training run could.
- distinct designs: distinct design keys (`textform.design_hash`: the text form, blind to
  prompt texts and seeds) among a designer's outputs.
- share not in the library: the share of outputs whose design key is not a library key.
- nearest-neighbour similarity to the library: for each output, the largest cosine
  similarity between its bag of text-form pieces and a library workflow's bag, averaged over
  outputs. Identical designs have 1.0; ComfyGen reports 0.9995 for its FT model, i.e.
  near-copies of training workflows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from statistics import NormalDist

Bag = Counter[str]


def win_rate(a: Sequence[float], b: Sequence[float]) -> float:
    """Share of paired entries where `a` beats `b`; ties count one half."""
    if len(a) != len(b):
        raise ValueError(f"win_rate needs paired scores, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("win_rate of no pairs is undefined")
    wins = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b, strict=True))
    return wins / len(a)


def _z(level: float) -> float:
    """The two-sided normal quantile of `level` (1.96 for 0.95)."""
    if not 0 < level < 1:
        raise ValueError(f"a confidence level is between 0 and 1, got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a share of `successes` out of `n` (fractional successes
    allowed: a tie is half a win). Why Wilson and not p +- z se: it stays inside [0, 1] and
    keeps its coverage near 0% and 100%, where win rates against weak baselines sit."""
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and {n}, got {successes}")
    z = _z(level)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def win_interval(
    a: Sequence[float], b: Sequence[float], level: float = 0.95
) -> tuple[float, float]:
    """The `level` interval of `win_rate(a, b)` over the paired entries (`wilson_interval`)."""
    return wilson_interval(win_rate(a, b) * len(a), len(a), level)


def paired_difference(
    a: Sequence[float], b: Sequence[float], level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over paired entries and its `level` interval (normal, on the
    sample standard deviation of the differences; at 300 prompts Student's t would move it
    in the fourth digit)."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference needs paired scores, got {len(a)} and {len(b)}")
    if len(a) < 2:
        raise ValueError("paired_difference needs two or more pairs")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean = sum(diffs) / len(diffs)
    spread = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    half = _z(level) * spread / math.sqrt(len(diffs))
    return mean, mean - half, mean + half


def distinct(keys: Iterable[str]) -> int:
    """Number of distinct design keys."""
    return len(set(keys))


def share_not_in(keys: Sequence[str], library: set[str]) -> float:
    """Share of `keys` that are not in `library`."""
    if not keys:
        raise ValueError("share of no designs is undefined")
    return sum(key not in library for key in keys) / len(keys)


def text_bag(text: str) -> Bag:
    """The pieces of a text form without line ids: ``class``, ``class.name=value`` per input.

    Line ids and link targets are renumbered by structure, so a piece names the node class
    with each input; two designs that differ in one setting share every other piece.
    """
    bag: Bag = Counter()
    for line in text.splitlines():
        parts = line.split(" ")
        if len(parts) < 2:
            continue
        class_type = parts[1]
        bag[class_type] += 1
        for part in parts[2:]:
            bag[f"{class_type}.{part}"] += 1
    return bag


def cosine(a: Bag, b: Bag) -> float:
    """Cosine similarity of two bags (0 when either is empty)."""
    dot = sum(count * b[piece] for piece, count in a.items() if piece in b)
    norm = math.sqrt(sum(c * c for c in a.values())) * math.sqrt(sum(c * c for c in b.values()))
    return dot / norm if norm else 0.0


def nearest_similarity(texts: Sequence[str], library_texts: Sequence[str]) -> float:
    """Mean over `texts` of the best cosine similarity to any library text."""
    if not texts or not library_texts:
        raise ValueError("nearest_similarity needs designs and a library")
    library = [text_bag(text) for text in library_texts]
    best = [max(cosine(text_bag(text), other) for other in library) for text in texts]
    return sum(best) / len(best)
