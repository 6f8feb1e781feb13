"""How much SFT the ``--quick`` policy would need to write graphs the world can judge.

Usage: ``python benchmarks/quick_sft_judgeable.py --run QUICK_RUN [--variants
32:1:3e-3:800,64:4:5e-3:800] [--out /tmp/flowforge-bench/quick-sft]``. Each variant is
``width:epochs:learning_rate:pairs`` (the quick model's 2 blocks, MLP 2 x width, heads as the
quick model). For each it trains the quick preset's SFT with those changes on the run's
library, designs one workflow for each of the run's held-out prompts (at most 30; the
default sampling, schema-constrained, as `flowforge design`), has the run's judge (sim world
0) score each, and prints the SFT seconds and how many designs the world could judge. `--out`
must be empty or absent (SFT resumes what it finds there).

Why: in a ``--quick`` run every policy design validates against the node schemas, but the
sim cannot read most of them as a text-to-image graph (the empty latent does not feed a
sampler, say), so every policy row reports failures and GRPO's rewards are all the floor.
Whether the preset should train its policy longer is a question of what that costs.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import dataclasses
import json
import time
from pathlib import Path

from machine import command_line, describe_machine

from flowforge.judge.base import JudgeItem
from flowforge.judge.loader import load_judge
from flowforge.pipeline.config import QUICK_MODEL, quick_config
from flowforge.policy.design import load_designer
from flowforge.policy.sft import run_sft


def _variant(text: str) -> tuple[int, float, float, int]:
    width, epochs, lr, pairs = text.split(":")
    return int(width), float(epochs), float(lr), int(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="a `flowforge run --quick` dir")
    parser.add_argument("--variants", default="32:1:3e-3:800,64:4:5e-3:800")
    parser.add_argument("--out", type=Path, default=Path("/tmp/flowforge-bench/quick-sft"))
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty (SFT would resume what it finds)")
    judge = load_judge("sim").judge
    designs = args.run / "evaluate" / "designs.jsonl"
    lines = designs.read_text(encoding="utf-8").splitlines()
    prompts = list(dict.fromkeys(json.loads(line)["prompt"] for line in lines))[:30]
    base = quick_config().sft
    print(describe_machine())
    print(command_line())
    for text in args.variants.split(","):
        width, epochs, lr, pairs = _variant(text)
        model = dataclasses.replace(QUICK_MODEL, hidden_size=width, intermediate_size=2 * width)
        train = dataclasses.replace(base.train, epochs=epochs, learning_rate=lr, model=model)
        section = dataclasses.replace(base, pairs=pairs, train=train)
        out = args.out / text.replace(":", "_")
        config = section.run_config(
            out,
            args.run / "library" / "workflows",
            args.run / "library" / "object_info.json",
            args.run / "reward",
        )
        start = time.perf_counter()
        run_sft(config, progress=False, say=lambda _: None)
        seconds = time.perf_counter() - start
        designer = load_designer(out)
        judged = 0
        for seed, prompt in enumerate(prompts):
            result = designer.design(prompt, samples=1, seed=seed)
            judged += judge.score([JudgeItem(prompt, result.api, seed)])[0].error is None
        print(
            f"width {width}, {epochs:g} epochs, lr {lr:g}, {pairs} pairs: SFT {seconds:.1f} s, "
            f"{judged}/{len(prompts)} designs the world can judge"
        )


if __name__ == "__main__":
    main()
