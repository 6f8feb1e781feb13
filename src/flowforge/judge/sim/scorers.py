"""The simulated scorers: several noisy views of the hidden quality, one held out.

A real judge renders an image and scores it with preference models (ComfyGen: LAION
aesthetic, ImageReward, HPS, PickScore; HPS v2.0 held out for evaluation). Each simulated
scorer stands in for one such model. It sees the same hidden utility but

- weighs its three groups differently (`terms.GROUPS`: an aesthetic scorer cares more for
  fidelity and finish than for what was asked, an alignment scorer the other way round);
- has a systematic error per (prompt, workflow): what this scorer gets wrong about this
  design, the same for every seed, so averaging seeds does not remove it;
- has noise per (prompt, workflow, seed): the luck of one render.

Both errors are deterministic functions of the prompt text, the workflow's canonical hash, the
seed and the world seed (a counter-based hash, no global random state), so a judgement can be
repeated exactly. Scores lie in 0..1 (a logistic link, like ComfyGen's 0.1-0.7 range).

`heldout_preference` is held out: training stages must not use it, evaluation reports it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .terms import sigmoid

U64 = NDArray[np.uint64]


@dataclass(frozen=True)
class Scorer:
    """One simulated preference model (see module docstring)."""

    name: str
    weights: tuple[float, float, float]  # fidelity, style, detail
    bias_noise: float  # std of the per-(prompt, workflow) systematic error, utility units
    seed_noise: float  # std of the per-(prompt, workflow, seed) noise, utility units


SCORERS: tuple[Scorer, ...] = (
    Scorer("aesthetic", (1.2, 0.6, 1.4), bias_noise=0.35, seed_noise=0.55),
    Scorer("alignment", (0.7, 1.5, 0.5), bias_noise=0.35, seed_noise=0.55),
    Scorer("preference", (1.0, 1.0, 1.0), bias_noise=0.35, seed_noise=0.6),
    Scorer("heldout_preference", (0.9, 1.1, 1.0), bias_noise=0.35, seed_noise=0.6),
)
#: The scorer held out for evaluation (like ComfyGen's HPS v2.0): never a training target.
HELDOUT_SCORER = "heldout_preference"
TRAINING_SCORERS = tuple(s.name for s in SCORERS if s.name != HELDOUT_SCORER)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def key_of(text: str) -> int:
    """A 64-bit key of a string (prompt text or workflow hash)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def mix(x: U64) -> U64:
    """splitmix64's finaliser: a bijective, well-mixed map of 64-bit keys (wraps on overflow)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def gaussian(keys: U64) -> NDArray[np.float64]:
    """A standard normal per key (Box-Muller on two hashed uniforms)."""
    first, second = mix(keys), mix(keys ^ np.uint64(0xD1B54A32D192ED03))
    u1 = ((first >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    u2 = ((second >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def score_all(
    utilities: NDArray[np.float64],
    offset: float,
    prompt_keys: U64,
    workflow_keys: U64,
    seeds: U64,
    world_seed: int,
) -> dict[str, NDArray[np.float64]]:
    """Every scorer's scores for N items: group utilities (N, 3) and the items' keys (N,)."""
    salt = np.uint64(key_of(f"flowforge-sim-world:{world_seed}"))
    design = mix(mix(prompt_keys ^ salt) ^ workflow_keys)  # (prompt, workflow) in this world
    render = mix(design ^ mix(seeds ^ np.uint64(0x2545F4914F6CDD1D)))
    out = {}
    for scorer in SCORERS:
        tag = np.uint64(key_of(scorer.name))
        noise = scorer.bias_noise * gaussian(design ^ tag) + scorer.seed_noise * gaussian(
            render ^ tag
        )
        weighted = sum(w * utilities[:, g] for g, w in enumerate(scorer.weights))
        out[scorer.name] = sigmoid(weighted + offset + noise)
    return out
