"""Meaning tokens: a prompt's sentence embedding, quantised into a few tokens the policy reads.

Why: the reward ensemble reads a prompt through MiniLM (a 384-d sentence embedding) and knows
per prompt which designs suit it; the tiny default policy reads whole words from random
embeddings, each word seen in a handful of the 1,330 train prompts. Measured on the refitted
ensembles of the session-24 runs (docs/policy.md, "Meaning tokens"): the ensemble's own pick
per held-out prompt scores far above what the policy trained on those picks writes, and the
gap is the prompt reading. Words are sparse; the leading directions of the embedding are
dense (every prompt has a value on each), so a few quantised coordinates give the policy
tokens that recur across many prompts, which SFT and GRPO can learn from.

How: the train prompts' unit embeddings are centred and projected on their `dims` leading
principal components (numpy SVD); each component is cut into `bins` equally filled bins at
its train quantiles. A prompt becomes `dims` tokens ``<m{d}_{b}>`` (component d in bin b),
written after ``<bos>`` (and a ComfyGen-FT score token) and before the prompt's words.
Held-out prompts are placed by the same projection and edges, fitted on train prompts only.

The codec is plain floats (saved in the tokenizer's JSON), and a prompt's projection is
computed one prompt at a time with element-wise sums, so its code does not depend on which
prompts it was encoded with (a BLAS product rounds differently with the batch size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from flowforge.reward.backbone import TextEncoder


class MeaningError(ValueError):
    """A meaning codec that cannot be fitted or read."""


def meaning_token(dim: int, bin_index: int) -> str:
    """The special token of principal component `dim` in bin `bin_index`."""
    return f"<m{dim}_{bin_index}>"


@dataclass(frozen=True)
class MeaningCodec:
    """The fitted projection and bin edges (module docstring). Tuples of floats, so two
    codecs compare equal exactly when they code every prompt the same way."""

    mean: tuple[float, ...]  # (384,) the train prompts' mean embedding
    components: tuple[tuple[float, ...], ...]  # (dims, 384) leading principal directions
    edges: tuple[tuple[float, ...], ...]  # (dims, bins - 1) inner bin edges, ascending

    @property
    def dims(self) -> int:
        return len(self.components)

    @property
    def bins(self) -> int:
        return len(self.edges[0]) + 1 if self.edges else 1

    def tokens(self) -> tuple[str, ...]:
        """Every meaning token, component-major: ``<m0_0>``, ``<m0_1>``, ..."""
        return tuple(meaning_token(d, b) for d in range(self.dims) for b in range(self.bins))

    def project(self, embedding: NDArray[np.floating[Any]]) -> tuple[float, ...]:
        """One prompt's unit embedding on each component (element-wise sums, no BLAS)."""
        centred = np.asarray(embedding, np.float64) - np.asarray(self.mean)
        return tuple(float(np.sum(centred * np.asarray(d))) for d in self.components)

    def code(self, embedding: NDArray[np.floating[Any]]) -> tuple[int, ...]:
        """The bin of each component for one prompt's unit embedding."""
        values = self.project(embedding)
        return tuple(
            int(np.searchsorted(np.asarray(edges), value, side="right"))
            for value, edges in zip(values, self.edges, strict=True)
        )

    def segment(self, embedding: NDArray[np.floating[Any]]) -> str:
        """The tokens a prompt with this embedding is read with, as one string."""
        return "".join(meaning_token(d, b) for d, b in enumerate(self.code(embedding)))

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "components": [list(c) for c in self.components],
            "edges": [list(e) for e in self.edges],
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> MeaningCodec:
        try:
            codec = MeaningCodec(
                tuple(float(x) for x in data["mean"]),
                tuple(tuple(float(x) for x in c) for c in data["components"]),
                tuple(tuple(float(x) for x in e) for e in data["edges"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise MeaningError(f"not a meaning codec: {err}") from None
        widths = {len(c) for c in codec.components} | {len(codec.mean)}
        if len(widths) != 1 or len(codec.edges) != codec.dims or not codec.dims:
            raise MeaningError("not a meaning codec: its shapes disagree")
        return codec


def fit_meaning(
    prompts: Sequence[str], dims: int, bins: int, encoder: TextEncoder | None = None
) -> MeaningCodec:
    """Fit the codec on `prompts` (train prompts only; distinct texts are used once)."""
    if dims < 1 or bins < 2:
        raise MeaningError(f"meaning needs dims >= 1 and bins >= 2, got {dims} and {bins}")
    texts = sorted(set(prompts))
    if len(texts) < max(dims + 1, bins):
        raise MeaningError(
            f"fitting {dims} meaning components in {bins} bins needs at least "
            f"{max(dims + 1, bins)} distinct prompts, got {len(texts)}"
        )
    vectors = np.asarray((encoder or shared_encoder()).encode(texts), np.float64)
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    _, _, rows = np.linalg.svd(centred, full_matrices=False)
    directions = rows[:dims]
    # A direction's sign is arbitrary in an SVD; fix it so refits agree (largest entry > 0).
    signs = np.sign(directions[np.arange(dims), np.abs(directions).argmax(axis=1)])
    directions = directions * signs[:, None]
    codec = MeaningCodec(tuple(mean.tolist()), tuple(tuple(d) for d in directions.tolist()), ())
    values = np.array([codec.project(v) for v in vectors])  # as `code` will compute them
    inner = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    edges = np.quantile(values, inner, axis=0).T  # (dims, bins - 1)
    return MeaningCodec(codec.mean, codec.components, tuple(tuple(e) for e in edges.tolist()))


_ENCODER: list[TextEncoder] = []


def shared_encoder() -> TextEncoder:
    """One MiniLM encoder per process (loaded on first use, its cache shared on disk)."""
    if not _ENCODER:
        from flowforge.reward.backbone import default_encoder

        _ENCODER.append(default_encoder())
    return _ENCODER[0]
