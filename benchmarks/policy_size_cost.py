"""What a wider policy would cost: SFT and GRPO seconds per step at several widths.

Usage: ``python benchmarks/policy_size_cost.py --run RUN [--widths 128,256] [--pairs 3200]
[--grpo-steps 10] [--out /tmp/flowforge-bench/policy-size]``. For each width (hidden size
w, MLP 3w, heads w/32, the default's 4 blocks) it trains SFT on `pairs` random pairs of the
run's library (torch's default threads, as the run's SFT), then `grpo-steps` GRPO steps from
that policy against the run's ensemble (one thread, as each GRPO run of the refine rounds),
and prints seconds per step of each, parameters, the machine and the command. `--out` must
be empty or absent (SFT and GRPO resume what they find there).

Why: a larger policy is the lever the issue-6 notes keep naming as untried, and `flowforge
run` must stay within 45 minutes; its SFT (three times: phase 1, ComfyGen-FT, the re-paired
SFT) and GRPO (five runs: phase 1 and two per refine round) scale with these per-step costs.
The quality of a wider policy is not measured here.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP (see sft_speed.py): passive waiting on a shared machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import time
from pathlib import Path

import torch
from machine import command_line, describe_machine

from flowforge.policy.config import SFTRunConfig, TrainSettings
from flowforge.policy.grpo import GRPORunConfig, train_grpo
from flowforge.policy.model import PolicyModelConfig
from flowforge.policy.sft import run_sft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", type=Path, required=True, help="a `flowforge run` directory")
    parser.add_argument("--widths", default="128,256")
    parser.add_argument("--pairs", type=int, default=3200)
    parser.add_argument("--grpo-steps", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("/tmp/flowforge-bench/policy-size"))
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        # SFT and GRPO resume what they find: a second run would time no training at all
        parser.error(f"--out {args.out} holds an earlier measurement; remove it or give another")
    library, reward = args.run / "library", args.run / "reward"
    load_before = os.getloadavg()
    for width in (int(w) for w in args.widths.split(",")):
        model = PolicyModelConfig(
            hidden_size=width, intermediate_size=3 * width, num_attention_heads=width // 32
        )
        sft_dir = args.out / f"sft-{width}"
        start = time.perf_counter()
        result = run_sft(
            SFTRunConfig(
                out_dir=str(sft_dir),
                pairs=args.pairs,
                library_dir=str(library / "workflows"),
                object_info=str(library / "object_info.json"),
                train=TrainSettings(model=model),
            ),
            progress=False,
        )
        sft_seconds = time.perf_counter() - start
        grpo_dir = args.out / f"grpo-{width}"
        train_grpo(
            GRPORunConfig(
                sft_dir=str(sft_dir),
                reward_dir=str(reward),
                out=str(grpo_dir),
                steps=args.grpo_steps,
                library_dir=str(library / "workflows"),
            )
        )
        steps = [json.loads(line) for line in (grpo_dir / "log.jsonl").read_text().splitlines()]
        per_step = [s["step_seconds"] for s in steps if "step_seconds" in s]
        print(
            f"width {width}: {result.parameters:,} parameters; SFT {result.steps} steps in "
            f"{sft_seconds:.0f} s ({sft_seconds / max(result.steps, 1):.2f} s/step, "
            f"{torch.get_num_threads()} threads); GRPO {len(per_step)} steps, "
            f"{sum(per_step) / max(len(per_step), 1):.2f} s/step (1 thread)"
        )
    load_after = os.getloadavg()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
