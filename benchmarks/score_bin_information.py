"""How much does ComfyGen-FT's score token say about which workflow to write?

Usage: ``python benchmarks/score_bin_information.py --data RUN/comfygen_data [--data
RUN/collect ...] [--score aesthetic --score alignment --score preference]``. For each data
source (a collection run, Parquet export or HF dataset), makes ComfyGen-FT's examples the
way ``run_comfygen_ft`` does (scores averaged over a pair's seeds, the training score the
mean of `--score`, 10 quantile bins) and prints: the mutual information between the bin and
the workflow (plug-in estimate, in nats), the same with the bins shuffled (what the estimate
gives when the bin says nothing: it is biased upward when each workflow has few examples),
and the share of the top bin's examples that its 5 most frequent workflows hold, against
their share if the bin said nothing (5 / workflows).

Why: on a ComfyGen-shaped grid (80 workflows x 125 prompts) the analogue wrote the same
workflow for bins 0 and 9 (``comfygen_ft_bins.py``). This says whether the data carried
the signal it ignored, or the label said nothing about the workflow to begin with.
"""

from __future__ import annotations

import argparse
import random
from collections import Counter
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np
from machine import command_line, describe_machine

from flowforge.data.export import load_triplets
from flowforge.policy.examples import scored_examples, seed_means
from flowforge.policy.vocab import VocabConfig


def mutual_information(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Plug-in mutual information of two paired samples, in nats."""
    n = len(a)
    count_a, count_b, joint = Counter(a), Counter(b), Counter(zip(a, b, strict=True))
    return float(
        sum(c / n * np.log(c * n / (count_a[x] * count_b[y])) for (x, y), c in joint.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="judged triplets")
    parser.add_argument("--score", action="append", help="training scorer (repeatable)")
    args = parser.parse_args()
    names = tuple(args.score or ("aesthetic", "alignment", "preference"))
    bins = VocabConfig().score_bins

    print("| data | examples | workflows | prompts | I(workflow; bin) | shuffled bins | "
          "top bin: 5 commonest workflows | if the bin said nothing |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for source in args.data:
        triplets = load_triplets(Path(source))
        rows = seed_means(
            [(t.prompt, t.workflow_text, dict(t.scores)) for t in triplets if t.scores]
        )
        examples, _ = scored_examples(rows, names, bins)
        workflows = [e.workflow_text for e in examples]
        labels = [e.score_bin for e in examples]
        shuffled = random.Random(0).sample(labels, len(labels))
        top = Counter(w for w, b in zip(workflows, labels, strict=True) if b == bins - 1)
        top_share = sum(c for _, c in top.most_common(5)) / sum(top.values())
        distinct, prompts = len(set(workflows)), len({e.prompt for e in examples})
        print(
            f"| {source} | {len(examples):,} | {distinct:,} | {prompts:,} "
            f"| {mutual_information(workflows, labels):.3f} "
            f"| {mutual_information(workflows, shuffled):.3f} "
            f"| {top_share:.1%} | {min(1.0, 5 / distinct):.1%} |"
        )
    print()
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
