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

Clusters (`clusters` > 0): besides (or instead of) the components, the train prompts' unit
embeddings are grouped by spherical k-means, and a prompt also reads one token ``<c{k}>``,
its nearest centroid (largest cosine). Why: a designer that averages the ensemble's picks
over a prompt's neighbours reaches most of the ensemble's per-prompt knowledge, but the
policy had to combine several component tokens to find those neighbours and did not learn
to; one cluster token names a neighbourhood outright, so "these prompts -> these designs" is
a lookup the tiny model learns from the pairs that share it (docs/policy.md).

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


def cluster_token(index: int) -> str:
    """The special token of cluster `index`."""
    return f"<c{index}>"


@dataclass(frozen=True)
class MeaningCodec:
    """The fitted projection and bin edges (module docstring). Tuples of floats, so two
    codecs compare equal exactly when they code every prompt the same way."""

    mean: tuple[float, ...]  # (384,) the train prompts' mean embedding
    components: tuple[tuple[float, ...], ...]  # (dims, 384) leading principal directions
    edges: tuple[tuple[float, ...], ...]  # (dims, bins - 1) inner bin edges, ascending
    centroids: tuple[tuple[float, ...], ...] = ()  # (clusters, 384) unit vectors

    @property
    def dims(self) -> int:
        return len(self.components)

    @property
    def bins(self) -> int:
        return len(self.edges[0]) + 1 if self.edges else 1

    @property
    def clusters(self) -> int:
        return len(self.centroids)

    def tokens(self) -> tuple[str, ...]:
        """Every meaning token: the components' component-major (``<m0_0>``, ``<m0_1>``,
        ...), then the clusters' (``<c0>``, ...)."""
        components = (meaning_token(d, b) for d in range(self.dims) for b in range(self.bins))
        return (*components, *(cluster_token(k) for k in range(self.clusters)))

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

    def cluster(self, embedding: NDArray[np.floating[Any]]) -> int:
        """The nearest centroid (largest cosine; element-wise sums, no BLAS) of one prompt's
        unit embedding; -1 without clusters."""
        vector = np.asarray(embedding, np.float64)
        cosines = [float(np.sum(vector * np.asarray(c))) for c in self.centroids]
        return int(np.argmax(cosines)) if cosines else -1

    def segment(self, embedding: NDArray[np.floating[Any]]) -> str:
        """The tokens a prompt with this embedding is read with, as one string."""
        components = "".join(meaning_token(d, b) for d, b in enumerate(self.code(embedding)))
        return components + (cluster_token(self.cluster(embedding)) if self.centroids else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "components": [list(c) for c in self.components],
            "edges": [list(e) for e in self.edges],
            **({"centroids": [list(c) for c in self.centroids]} if self.centroids else {}),
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> MeaningCodec:
        try:
            codec = MeaningCodec(
                tuple(float(x) for x in data["mean"]),
                tuple(tuple(float(x) for x in c) for c in data["components"]),
                tuple(tuple(float(x) for x in e) for e in data["edges"]),
                tuple(tuple(float(x) for x in c) for c in data.get("centroids", ())),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise MeaningError(f"not a meaning codec: {err}") from None
        widths = {len(c) for c in (*codec.components, *codec.centroids)} | {len(codec.mean)}
        if (
            len(widths) != 1
            or len(codec.edges) != codec.dims
            or not (codec.dims or codec.clusters)
            or codec.clusters == 1
        ):
            raise MeaningError("not a meaning codec: its shapes disagree")
        return codec


def fit_meaning(
    prompts: Sequence[str],
    dims: int,
    bins: int,
    encoder: TextEncoder | None = None,
    clusters: int = 0,
) -> MeaningCodec:
    """Fit the codec on `prompts` (train prompts only; distinct texts are used once): `dims`
    components in `bins` bins, and `clusters` k-means clusters (0: none)."""
    if dims < 0 or bins < 2 or clusters < 0 or clusters == 1 or not (dims or clusters):
        raise MeaningError(
            "meaning needs dims >= 0, bins >= 2 and clusters 0 or >= 2, not both 0; got "
            f"dims {dims}, bins {bins}, clusters {clusters}"
        )
    texts = sorted(set(prompts))
    need = max(dims + 1, bins if dims else 0, 2 * clusters)
    if len(texts) < need:
        raise MeaningError(
            f"fitting {dims} meaning components in {bins} bins and {clusters} clusters needs "
            f"at least {need} distinct prompts, got {len(texts)}"
        )
    vectors = np.asarray((encoder or shared_encoder()).encode(texts), np.float64)
    centroids = tuple(tuple(c) for c in spherical_kmeans(vectors, clusters).tolist())
    mean = vectors.mean(axis=0)
    if not dims:
        return MeaningCodec(tuple(mean.tolist()), (), (), centroids)
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
    edged = tuple(tuple(e) for e in edges.tolist())
    return MeaningCodec(codec.mean, codec.components, edged, centroids)


def spherical_kmeans(
    vectors: NDArray[np.float64], k: int, iterations: int = 100, seed: int = 0
) -> NDArray[np.float64]:
    """(k, width) unit centroids of `vectors` (rows normalised first) by spherical k-means:
    k-means++ seeding on cosine distance, then Lloyd steps on cosine until no prompt moves.
    Deterministic in `seed`; an emptied cluster is reseeded at the prompt its centroid fits
    worst, so every centroid keeps prompts. k = 0: an empty array."""
    if k == 0:
        return np.zeros((0, vectors.shape[1]))
    if not 0 < k <= len(vectors):
        raise ValueError(f"k-means needs 0 <= k <= {len(vectors)} (the rows), got k = {k}")
    rows = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(rows)))]
    distance = 1.0 - rows @ rows[chosen[0]]
    for _ in range(1, k):
        weights = np.maximum(distance, 0.0) ** 2
        total = weights.sum()
        if total > 0:
            pick = int(rng.choice(len(rows), p=weights / total))
        else:  # every row sits on a seed already (copies): seed at a row not yet chosen
            pick = next(r for r in range(len(rows)) if r not in chosen)
        chosen.append(pick)
        distance = np.minimum(distance, 1.0 - rows @ rows[pick])
    centroids: NDArray[np.float64] = rows[chosen].copy()
    assigned = np.full(len(rows), -1)
    for _ in range(iterations):
        cosines = rows @ centroids.T
        new = cosines.argmax(axis=1)
        for empty in sorted(set(range(k)) - set(new.tolist())):
            worst = int(cosines[np.arange(len(rows)), new].argmin())
            new[worst] = empty
            cosines[worst, empty] = np.inf
        if np.array_equal(new, assigned):
            break
        assigned = new
        for c in range(k):
            total_vector = rows[assigned == c].sum(axis=0)
            centroids[c] = total_vector / max(float(np.linalg.norm(total_vector)), 1e-12)
    return centroids


_ENCODER: list[TextEncoder] = []


def shared_encoder() -> TextEncoder:
    """One MiniLM encoder per process (loaded on first use, its cache shared on disk)."""
    if not _ENCODER:
        from flowforge.reward.backbone import default_encoder

        _ENCODER.append(default_encoder())
    return _ENCODER[0]
