"""Does a ComfyGen-FT policy listen to its score token?

Usage: ``python benchmarks/comfygen_ft_bins.py --policy RUN/comfygen_ft --reward RUN/reward
[--prompts 40] [--samples 4]``. For each score bin asked for (0, a third, two thirds, the
top), samples `--samples` workflows for each of the first `--prompts` train prompts (numpy
runtime, temperature 0.7, one seed per prompt shared by every bin) and prints the reward
ensemble's mean prediction over the valid ones and the distinct workflows. Then, per
sample, how often the bottom and the top bin wrote the same workflow. A policy that learned
the conditioning predicts more for the top bin and writes other workflows for it; the
ensemble, not the judge, scores here (no rendering), so this reads what the baseline
learned, not how good it is.
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from machine import command_line, describe_machine

from flowforge.data.prompts import load_prompts
from flowforge.policy.design import load_designer
from flowforge.reward.ensemble import load_ensemble


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, help="a ComfyGen-FT policy directory")
    parser.add_argument("--reward", required=True, help="a reward ensemble directory")
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()

    designer = load_designer(args.policy, runtime="numpy")
    if designer.score_bin is None:
        raise SystemExit(f"{args.policy} is not a score-conditioned (ComfyGen-FT) policy")
    ensemble = load_ensemble(args.reward)
    prompts = [prompt.text for prompt in load_prompts("train")][: args.prompts]
    top = designer.score_bin
    texts_of: dict[int, list[str]] = {}
    print("| score bin | valid | predicted (ensemble mean) | distinct |")
    print("|---|---|---|---|")
    for score_bin in sorted({0, top // 3, 2 * top // 3, top}):
        sampler = dataclasses.replace(designer.sampler, score_bin=score_bin)
        asked, texts = [], []
        for seed, prompt in enumerate(prompts):
            for sample in sampler(prompt, n=args.samples, temperature=0.7, seed=seed, negative=""):
                asked.append(prompt)
                texts.append(sample.text)
        texts_of[score_bin] = texts
        prediction = ensemble.predict_detail(asked, texts)
        valid = np.asarray(prediction.valid)
        members = np.asarray(prediction.members)[valid]
        print(f"| {score_bin} | {valid.mean():.0%} | {members.mean():.3f} | {len(set(texts))} |")
    same = sum(a == b for a, b in zip(texts_of[0], texts_of[top], strict=True))
    print(f"\nsame workflow for bin 0 and bin {top}: {same} of {len(texts_of[0])} samples")
    print(f"\nmachine: {describe_machine()}\ncommand: {command_line()}")


if __name__ == "__main__":
    main()
