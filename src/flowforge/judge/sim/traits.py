"""Prompt traits: what a prompt asks for, read off its embedding through anchor texts.

A trait is a direction in embedding space named by a few anchor texts ("a photorealistic
photograph", "pixel art", ...) embedded by the same encoder as the prompts. A prompt's trait
value is its cosine similarity to the trait's mean anchor, standardised by the mean and spread
of that similarity over a fixed reference set of training prompts (256 PartiPrompts of the
train split), so that 0 means "as much as a typical prompt" and 2 means "clearly this".
Because traits come from meaning, a paraphrase gets nearly the same traits as its original,
and an unseen prompt is placed sensibly.

The anchor texts are the world's structure (the same for every seed); how much each component
likes each trait is drawn per seed (`world.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray

from ...data.prompts import fixed_sample, load_prompts, split_of
from .embed import PromptEncoder

#: Trait name -> anchor texts. Order is the trait axis of every (..., K) array in the world.
ANCHORS: dict[str, tuple[str, ...]] = {
    "photo": ("a photorealistic photograph", "a realistic photo taken with a DSLR camera"),
    "anime": ("an anime illustration", "a manga style drawing of a character"),
    "pixel": ("pixel art", "a retro 8-bit video game sprite"),
    "portrait": ("a portrait of a person", "a close-up of a human face"),
    "landscape": ("a wide landscape with mountains and sky", "a scenic view of nature"),
    "text": ("a logo with text", "a sign with written words and letters"),
    "fantasy": ("fantasy concept art", "a magical creature in an enchanted world"),
    "product": ("a product photo on a white background", "an advertisement shot of an object"),
    "detail": ("an intricate, highly detailed scene", "a complex scene with many small objects"),
    "painting": ("an oil painting", "a watercolor artwork on paper"),
    "animal": ("a cute animal", "a wildlife photo of an animal"),
    "city": ("a city street with buildings", "architecture and urban scenery"),
    "food": ("a plate of food", "a delicious meal on a table"),
    "abstract": ("an abstract concept", "an abstract pattern of shapes and colors"),
    "render": ("a 3D render", "a CGI model rendered in Blender"),
    "scifi": ("a futuristic science fiction scene", "robots and spaceships"),
    "dark": ("a dark moody scene at night", "dramatic low-key lighting in the dark"),
}
TRAITS: tuple[str, ...] = tuple(ANCHORS)
K = len(TRAITS)
REFERENCE_SIZE = 256
#: Trait values saturate softly at +-SATURATION: an extreme cosine says "very much", not
#: "unboundedly".
SATURATION = 2.5


def trait_index(name: str) -> int:
    return TRAITS.index(name)


@cache
def reference_texts() -> tuple[str, ...]:
    """A fixed sample of the PartiPrompts that are not held out (the same on every machine)
    to standardise against. Validation prompts are among them: the worlds were defined
    before the validation split was carved from the train prompts, and must not move."""
    seen = [p for p in load_prompts("all", source="parti") if split_of(p) != "heldout"]
    return tuple(prompt.text for prompt in fixed_sample(seen, REFERENCE_SIZE))


@dataclass(frozen=True)
class TraitModel:
    """Anchor directions (K, 384) and the reference mean / spread of each trait's cosine."""

    directions: NDArray[np.float64]
    mean: NDArray[np.float64]
    std: NDArray[np.float64]

    def traits(self, embeddings: NDArray[np.floating]) -> NDArray[np.float64]:
        """(N, 384) unit embeddings -> (N, K) standardised, softly saturated trait values."""
        vectors = np.asarray(embeddings, np.float64)
        # Row by row sums, not a matrix product: a BLAS product may round differently with
        # the batch size, and a prompt's traits must not depend on what it was batched with.
        cosine = np.stack([(vectors * direction).sum(axis=1) for direction in self.directions], 1)
        out: NDArray[np.float64] = SATURATION * np.tanh(
            (cosine - self.mean) / self.std / SATURATION
        )
        return out


def build_trait_model(encoder: PromptEncoder) -> TraitModel:
    """Embed the anchors and the reference prompts (cached like any prompt) into a TraitModel."""
    rows = []
    for texts in ANCHORS.values():
        vectors = encoder.encode(list(texts)).astype(np.float64)
        mean = vectors.mean(axis=0)
        rows.append(mean / np.linalg.norm(mean))
    directions = np.stack(rows)
    reference = encoder.encode(list(reference_texts())).astype(np.float64) @ directions.T
    return TraitModel(directions, reference.mean(axis=0), reference.std(axis=0) + 1e-6)
