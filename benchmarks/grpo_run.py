"""GRPO from a small SFT policy against a reward ensemble trained on sim data, measured.

Usage::

    python benchmarks/grpo_run.py --prepare /tmp/grpo-bench     # once: collect, reward, SFT
    python benchmarks/grpo_run.py --inputs /tmp/grpo-bench --out /tmp/grpo-bench/grpo [--quick]
        [--steps N] [--beta B] [--kappa K] [--learning-rate LR] [--eval-prompts 128]

``--prepare DIR`` makes the inputs with the package's own functions, each skipped if already
there: ``DIR/collect`` (the sim judge, 10,000 pairs x 2 seeds over a 1,000-workflow library),
``DIR/reward`` (the default 5-member ensemble on it), ``DIR/sft`` (SFT of the default tiny
policy on 8,000 pairs of a 3,000-workflow library). Then GRPO runs into ``--out`` (resumed if
it holds the same run) and the script prints:

- the reward curve (batch mean reward in ten windows of steps), KL, valid share, distinct
  workflows per batch and the share not in the SFT library, from ``out/log.jsonl``;
- time per step (mean, median, p90) and the whole run;
- SFT vs GRPO on held-out prompts (never trained on), constrained samples with the same
  seeds: predicted reward (the run's kappa), the sim judge's scores (training scorers
  and the held-out scorer), GRPO's per-prompt win rate on the held-out scorer, validity,
  distinct designs and the share not in the library;
- the machine, the load average (the 2 cores are shared with other engineers' jobs, so
  times vary run to run) and the command.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP (benchmarks/sft_speed.py measured why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from machine import command_line, describe_machine

from flowforge.data.prompts import load_prompts
from flowforge.judge import JudgeItem
from flowforge.judge.loader import load_judge
from flowforge.judge.sim.scorers import HELDOUT_SCORER
from flowforge.policy.constraint import schema_constraint
from flowforge.policy.grpo import QUICK, GRPORunConfig, train_grpo
from flowforge.policy.model import load_policy
from flowforge.policy.sample import Sample, sample_workflows
from flowforge.reward.ensemble import RewardEnsemble, load_ensemble
from flowforge.workflow.api import to_api
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import design_hash

CATALOG = default_catalog()


def prepare(root: Path) -> None:
    """Collect sim triplets, train the ensemble and the SFT policy (each only if missing)."""
    from flowforge.policy.config import SFTRunConfig, TrainSettings
    from flowforge.policy.sft import run_sft
    from flowforge.reward.config import RewardConfig
    from flowforge.reward.train import train_ensemble

    if not (root / "collect").is_dir():
        import subprocess

        subprocess.run(
            ["flowforge", "collect", "--judge", "sim", "--pairs", "10000", "--seeds", "2",
             "--library-size", "1000", "--out", str(root / "collect")],
            check=True,
        )  # fmt: skip
    if not (root / "reward" / "config.json").is_file():
        start = time.perf_counter()
        train_ensemble(root / "collect", root / "reward", RewardConfig())
        print(f"reward ensemble: {time.perf_counter() - start:.0f} s", flush=True)
    sft = SFTRunConfig(str(root / "sft"), pairs=8_000, library_size=3_000, train=TrainSettings())
    start = time.perf_counter()
    run_sft(sft, progress=False)
    print(f"SFT policy: {time.perf_counter() - start:.0f} s", flush=True)


def _windows(values: list[float], count: int = 10) -> list[float]:
    return [float(np.mean(chunk)) for chunk in np.array_split(np.asarray(values), count)]


def summarize_log(out: Path) -> None:
    lines = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
    rewards = [line["reward_mean"] for line in lines]
    seconds = [line["step_seconds"] for line in lines]
    n = len(lines)
    print(f"steps: {n}")
    shown = " ".join(f"{v:+.3f}" for v in _windows(rewards, min(10, n)))
    print(f"reward curve (batch mean, {min(10, n)} windows of steps): {shown}")
    keys = ("kl", "reward_spread", "valid_share", "usable_share", "distinct", "novel_share")
    for key in (*keys, "ensemble_std"):
        values = _windows([line[key] for line in lines], min(10, n))
        print(f"{key}: first window {values[0]:.3f}, last window {values[-1]:.3f}")
    print(
        f"time per step: mean {statistics.mean(seconds):.2f} s, median "
        f"{statistics.median(seconds):.2f} s, p90 {np.percentile(seconds, 90):.2f} s; "
        f"run {lines[-1]['wall_seconds'] / 60:.1f} min"
    )


def _designs(samples: list[Sample], library: frozenset[str]) -> tuple[int, float]:
    hashes = [design_hash(s.workflow, CATALOG) for s in samples if s.workflow and s.valid]
    novel = sum(h not in library for h in hashes) / len(hashes) if hashes else 0.0
    return len(set(hashes)), novel


def evaluate(
    policy_dir: Path,
    prompts: list[str],
    samples_per_prompt: int,
    ensemble: RewardEnsemble,
    library: frozenset[str],
) -> dict[str, Any]:
    """Constrained samples for held-out prompts, scored by the ensemble and the sim judge."""
    model, tokenizer = load_policy(policy_dir)
    constraint = schema_constraint(tokenizer, CATALOG, 384)
    samples = sample_workflows(
        model, tokenizer, prompts, n=samples_per_prompt, seed=7,
        logits_processors=[constraint], catalog=CATALOG,
    )  # fmt: skip
    predicted = ensemble.predict([s.prompt for s in samples], [s.text for s in samples])
    judge = load_judge("sim").judge
    items = [JudgeItem(s.prompt, to_api(s.workflow), 7) for s in samples if s.workflow]
    results = judge.score(items)
    scored = [r.scores for r in results if r.scores is not None]
    heldout: dict[str, list[float]] = {}
    for item, result in zip(items, results, strict=True):
        if result.scores is not None:
            heldout.setdefault(item.prompt, []).append(result.scores[HELDOUT_SCORER])
    distinct, novel = _designs(samples, library)
    return {
        "valid": sum(s.valid for s in samples) / len(samples),
        "predicted": float(np.mean(predicted)),
        "scores": {k: float(np.mean([s[k] for s in scored])) for k in sorted(scored[0])},
        "heldout": {prompt: float(np.mean(v)) for prompt, v in heldout.items()},
        "failed": len(results) - len(scored),
        "distinct": distinct,
        "novel": novel,
    }


def _win(a: float, b: float) -> float:
    return 1.0 if a > b else 0.5 if a == b else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", type=Path, help="make DIR/{collect,reward,sft} and stop")
    parser.add_argument("--inputs", type=Path, default=Path("/tmp/grpo-bench"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/grpo-bench/grpo"))
    parser.add_argument("--quick", action="store_true", help="the QUICK preset")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--beta", type=float)
    parser.add_argument("--kappa", type=float)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--group-size", type=int)
    parser.add_argument("--prompts-per-step", type=int)
    parser.add_argument("--eval-prompts", type=int, default=128)
    parser.add_argument("--eval-samples", type=int, default=4, help="samples per prompt")
    args = parser.parse_args()
    if args.prepare is not None:
        prepare(args.prepare)
        return
    settings: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in ("steps", "beta", "kappa", "learning_rate", "group_size", "prompts_per_step"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    config = GRPORunConfig(
        sft_dir=str(args.inputs / "sft"),
        reward_dir=str(args.inputs / "reward"),
        out=str(args.out),
        **settings,
    )
    load_before = os.getloadavg()
    print(f"config: {json.dumps(asdict(config))}", flush=True)
    start = time.perf_counter()

    def report(line: dict[str, float]) -> None:
        if line["step"] == 1 or line["step"] % 10 == 0:
            shown = {k: round(v, 3) for k, v in line.items()}
            print(f"  {json.dumps(shown)}", flush=True)

    train_grpo(config, report)
    elapsed = time.perf_counter() - start
    print(f"train_grpo: {elapsed / 60:.1f} min wall (loading and library included)")
    summarize_log(args.out)
    library = frozenset(json.loads((args.out / "library_designs.json").read_text()))
    ensemble = load_ensemble(args.inputs / "reward", catalog=CATALOG, kappa=config.kappa)
    prompts = [p.text for p in load_prompts("heldout", source="parti")][: args.eval_prompts]
    n = args.eval_samples
    sft = evaluate(args.inputs / "sft", prompts, n, ensemble, library)
    grpo = evaluate(args.out, prompts, n, ensemble, library)
    print(f"held-out prompts: {len(prompts)} (PartiPrompts held-out split), {n} samples each")
    for name, result in (("SFT", sft), ("GRPO", grpo)):
        judged = ", ".join(f"{k} {v:.4f}" for k, v in result["scores"].items())
        print(
            f"{name:5s} valid {result['valid']:.2f} | predicted reward {result['predicted']:+.3f}"
            f" | judged: {judged} | distinct {result['distinct']}/{len(prompts) * n}, "
            f"not in library {result['novel']:.2f} | failed renders {result['failed']}"
        )
    both = [p for p in prompts if p in grpo["heldout"] and p in sft["heldout"]]
    wins = np.mean([_win(grpo["heldout"][p], sft["heldout"][p]) for p in both])
    print(f"GRPO vs SFT per-prompt win rate on {HELDOUT_SCORER} ({len(both)} prompts): {wins:.2f}")
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
        "(2 cores shared with other engineers' jobs: times vary run to run)"
    )
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
