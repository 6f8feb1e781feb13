"""How much does a reward ensemble know per prompt? Its own choices from the library, judged.

Usage: ``python benchmarks/ensemble_choice.py --run RUN --judge sim:1 --out OUT
[--reward DIR] [--clusters 1,8,32] [--kappa K]``. Evaluates, with ``flowforge evaluate``'s
protocol (300 held-out prompts, 2 render seeds, the held-out scorer; no policy), the
baselines of the run and the ensemble's choices from the run's library:

- ``ensemble_pick``: per prompt, the library workflow the ensemble predicts best;
- ``ensemble_fixed``: the one workflow it predicts best on average over train prompts;
- ``cluster_k`` for each k of ``--clusters``: the train prompts cut into k clusters (k-means,
  cosine, on the MiniLM prompt embeddings the ensemble reads); per cluster, the library
  workflow with the best mean predicted reward over its train prompts; a held-out prompt
  takes its nearest centroid's workflow.

Why: a policy optimised against the ensemble can at best find what the ensemble ranks high.
If the ensemble's per-prompt pick does not beat the best fixed workflow, GRPO has nothing
per prompt to learn; the clusters show how much of the per-prompt knowledge survives when a
prompt is reduced to a coarse type. ``--reward`` compares another ensemble trained on the
same triplets (``flowforge reward train --data RUN/collect ...``); ``--kappa`` re-scores.
The report is ``OUT/report.md`` (win rates vs best fixed are in its second table).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from machine import command_line, describe_machine
from numpy.typing import NDArray

import flowforge.evaluate.compare as compare
from flowforge.data.prompts import load_prompts
from flowforge.evaluate.config import EvalConfig
from flowforge.evaluate.designers import TextEncoder
from flowforge.evaluate.methods import Method, MethodSources, build_methods
from flowforge.judge.loader import load_judge
from flowforge.pipeline.stages import run_inputs

#: Library workflows kept for the cluster tables: the best by mean reward over a sample of
#: train prompts (a workflow outside them is never a cluster's best in practice).
SHORTLIST = 300


def unit_rows(matrix: NDArray[np.float64]) -> NDArray[np.float64]:
    rows: NDArray[np.float64] = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    return rows


def spherical_kmeans(x: NDArray[np.float64], k: int, seed: int = 0) -> NDArray[np.float64]:
    """k unit centroids of unit rows `x` (cosine k-means, 50 rounds from k random rows)."""
    if k == 1:
        return unit_rows(x.mean(axis=0, keepdims=True))
    centroids = x[np.random.default_rng(seed).choice(len(x), k, replace=False)].copy()
    for _ in range(50):
        nearest = np.argmax(x @ centroids.T, axis=1)
        for j in range(k):
            if (nearest == j).any():
                centroids[j] = unit_rows(x[nearest == j].mean(axis=0, keepdims=True))[0]
    return centroids


class ClusterDesigner:
    """The workflow of the held-out prompt's nearest centroid."""

    judge_calls = 0

    def __init__(
        self, centroids: NDArray[np.float64], picks: list[str], encoder: TextEncoder
    ) -> None:
        self.centroids, self.picks, self.encoder = centroids, picks, encoder

    def design(self, prompts: Sequence[str], seeds: Sequence[int]) -> list[str]:
        embedded = unit_rows(np.asarray(self.encoder.encode(list(prompts)), np.float64))
        return [self.picks[j] for j in np.argmax(embedded @ self.centroids.T, axis=1)]


def cluster_methods(src: MethodSources, clusters: Sequence[int]) -> list[Method]:
    ensemble = src.ensemble
    assert ensemble is not None
    train = [prompt.text for prompt in load_prompts("train")]
    library = src.library
    sample = np.random.default_rng(0).choice(len(train), 200, replace=False)
    mean = sum(np.asarray(ensemble.predict([train[i]] * len(library), library)) for i in sample)
    short = [library[i] for i in np.argsort(-np.asarray(mean))[:SHORTLIST]]
    rewards = np.stack([np.asarray(ensemble.predict([p] * len(short), short)) for p in train])
    embedded = unit_rows(np.asarray(src.encoder.encode(train), np.float64))
    methods = []
    for k in clusters:
        centroids = spherical_kmeans(embedded, k)
        nearest = np.argmax(embedded @ centroids.T, axis=1)
        picks = [
            short[int(np.argmax(rewards[nearest == j].mean(axis=0)))]
            if (nearest == j).any()
            else short[0]
            for j in range(k)
        ]
        label = f"ensemble pick per prompt cluster, k={k} ({len(set(picks))} workflows)"
        designer = ClusterDesigner(centroids, picks, src.encoder)
        methods.append(Method(f"cluster_{k}", label, designer, src.data_calls))
    return methods


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a `flowforge run` directory")
    parser.add_argument("--judge", default="sim", help="the run's judge (sim, sim:1, ...)")
    parser.add_argument("--out", required=True, type=Path, help="report directory")
    parser.add_argument("--reward", type=Path, help="another ensemble (default RUN/reward)")
    parser.add_argument("--clusters", default="1,8,32", help="k values, comma-separated")
    parser.add_argument("--kappa", type=float, help="re-score the ensemble with this kappa")
    args = parser.parse_args()
    clusters = [int(k) for k in args.clusters.split(",") if k]

    def methods(src: MethodSources) -> tuple[list[Method], dict[str, str]]:
        if args.kappa is not None and src.ensemble is not None:
            src = dataclasses.replace(src, ensemble=src.ensemble.with_scoring(kappa=args.kappa))
        chosen, not_run = build_methods(src)
        return chosen + cluster_methods(src, clusters), not_run

    inputs = run_inputs(args.run)
    inputs = dataclasses.replace(
        inputs, reward=args.reward or inputs.reward, sft=None, comfygen_ft=None, grpo=None
    )
    compare.build_methods = methods  # type: ignore[assignment]  # the evaluation, plus clusters
    config = EvalConfig(oracle=False, ensemble_pick=True)
    compare.evaluate(config, inputs, load_judge(args.judge), args.out, on_progress=print)
    print(f"\nreport: {args.out / 'report.md'}")
    print(f"machine: {describe_machine()}\ncommand: {command_line()}")


if __name__ == "__main__":
    main()
