"""How long GRPO's steps and the evaluation's designing take, with each sampling runtime.

Usage::

    python benchmarks/sampling_speed.py --run RUN [--steps 12] [--before OLD/grpo/log.jsonl]
        [--prompts 300]

``RUN`` is a ``flowforge run`` directory (its ``sft/`` and ``reward/`` are read, nothing in it
is written). The script measures, with one torch thread:

1. sampling one step's groups (``rollout.sample_groups``: the step's prompts x group size,
   GRPO's temperature and grammar) from the SFT policy with the numpy runtime and with
   transformers, the same prompts for both, for each of the first ``--steps`` steps;
2. ``--steps`` whole GRPO steps (``train_grpo`` with the run's GRPO settings into a temporary
   directory): ``step_seconds`` from its log, so sampling, rewards and the update;
3. designing ``--prompts`` held-out prompts as the evaluation does (``PolicyDesigner``, one
   design per prompt at temperature 0.7, constrained, batches of 64) with the run's GRPO
   policy, unguided and guided (w = 2, the SFT policy as reference), with each runtime;
4. numpy sampling of the first 4 steps while a busy-looping process holds one core (as
   another stage does in ``flowforge run``), with numpy's BLAS threads left at OpenBLAS's
   default and limited to one (``reward.model.cpu_threads``, what every stage runs in).

``--before`` prints the same steps' ``step_seconds`` of an older run's ``log.jsonl`` beside
them (the same settings and seeds under an earlier version of the code), then the machine,
the load average and the command.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path

import torch
from machine import command_line, describe_machine

from flowforge.data.prompts import load_prompts
from flowforge.evaluate.designers import PolicyDesigner, SamplingSettings, load_for_design
from flowforge.policy.grammar import TextFormGrammar
from flowforge.policy.grpo import GRPORunConfig, step_prompts, step_seed, train_grpo
from flowforge.policy.model import load_policy
from flowforge.policy.rollout import sample_groups
from flowforge.reward.model import cpu_threads
from flowforge.workflow.schema import load_catalog


def _config(run: Path, out: Path, steps: int) -> GRPORunConfig:
    """The run's GRPO settings (its record), pointed at `out` and cut to `steps` steps."""
    record = json.loads((run / "grpo" / "flowforge_run.json").read_text(encoding="utf-8"))
    config = GRPORunConfig.from_json(record["config"])
    return replace(config, sft_dir=str(run / "sft"), reward_dir=str(run / "reward"),
                   out=str(out), steps=steps, save_every=steps)  # fmt: skip


def _sampling(
    config: GRPORunConfig, steps: int, runtimes: tuple[str, ...] = ("numpy", "transformers")
) -> dict[str, list[float]]:
    model, tokenizer = load_policy(config.sft_dir)
    model.eval()  # type: ignore[no-untyped-call]
    sft = json.loads((Path(config.sft_dir) / "flowforge_run.json").read_text(encoding="utf-8"))
    catalog = load_catalog(sft.get("config", {}).get("object_info"))
    grammar = TextFormGrammar(tokenizer, catalog) if config.constrained else None
    prompts = [p.text for p in load_prompts("train")]
    seconds: dict[str, list[float]] = {runtime: [] for runtime in runtimes}
    for step in range(1, steps + 1):
        batch = [prompts[i] for i in step_prompts(len(prompts), config.prompts_per_step,
                                                  config.seed, step)]  # fmt: skip
        for runtime in seconds:
            start = time.perf_counter()
            sample_groups(model, tokenizer, batch, config.group_size,
                          max_new_tokens=config.max_completion_length,
                          temperature=config.temperature, seed=step_seed(config.seed, step),
                          grammar=grammar, runtime=runtime)  # type: ignore[arg-type]  # fmt: skip
            seconds[runtime].append(time.perf_counter() - start)
    return seconds


def _designing(run: Path, config: GRPORunConfig, prompts: int) -> dict[str, float]:
    grpo, sft = load_for_design(run / "grpo"), load_for_design(Path(config.sft_dir))
    record = json.loads((Path(config.sft_dir) / "flowforge_run.json").read_text(encoding="utf-8"))
    catalog = load_catalog(record.get("config", {}).get("object_info"))
    texts = [p.text for p in load_prompts("heldout")[:prompts]]
    settings = SamplingSettings(temperature=0.7, constrained=True, max_new_tokens=384,
                                batch_size=64, negative="")  # fmt: skip
    seconds = {}
    for runtime in ("numpy", "transformers"):
        for weight in (None, 2.0):
            designer = PolicyDesigner(grpo, catalog, settings, runtime=runtime,
                                      reference=None if weight is None else sft.model,
                                      weight=weight)  # fmt: skip
            start = time.perf_counter()
            designer.design(texts, list(range(len(texts))))
            seconds[f"{runtime}, {'unguided' if weight is None else 'w = 2'}"] = (
                time.perf_counter() - start
            )
    return seconds


def _beside_a_busy_core(config: GRPORunConfig) -> dict[str, float]:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        seconds = {}
        limits: dict[str, AbstractContextManager[None]] = {
            "BLAS threads: OpenBLAS's default": nullcontext(),
            "BLAS threads: 1 (cpu_threads)": cpu_threads(1),
        }
        for name, limit in limits.items():
            with limit:
                seconds[name] = statistics.mean(_sampling(config, 4, ("numpy",))["numpy"])
        return seconds
    finally:
        busy.kill()


def _summary(values: list[float]) -> str:
    return f"mean {statistics.mean(values):.2f} s, median {statistics.median(values):.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a flowforge run directory")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--before", type=Path, help="an older run's grpo/log.jsonl to compare")
    parser.add_argument("--prompts", type=int, default=300, help="held-out prompts to design")
    args = parser.parse_args()
    with cpu_threads(1), tempfile.TemporaryDirectory() as tmp:  # as in a stage
        config = _config(args.run, Path(tmp) / "grpo", args.steps)
        sampling = _sampling(config, args.steps)
        train_grpo(config)
        lines = (Path(tmp) / "grpo" / "log.jsonl").read_text(encoding="utf-8").splitlines()
        steps = [json.loads(line)["step_seconds"] for line in lines]
        print(f"GRPO steps 1-{args.steps} ({config.prompts_per_step} prompts x "
              f"{config.group_size}):")  # fmt: skip
        for runtime, values in sampling.items():
            print(f"  sampling with {runtime}: {_summary(values)}")
        print(f"  whole step (sampling, rewards, update): {_summary(steps)}")
        if args.before is not None:
            lines = args.before.read_text(encoding="utf-8").splitlines()[: args.steps]
            before = [json.loads(line)["step_seconds"] for line in lines]
            print(f"  whole step in {args.before}: {_summary(before)}")
        print(f"designing {args.prompts} held-out prompts with {args.run / 'grpo'}:")
        for name, seconds in _designing(args.run, config, args.prompts).items():
            print(f"  {name}: {seconds:.1f} s")
    torch.set_num_threads(1)  # torch as in a stage; numpy's BLAS as each case below says
    print("numpy sampling, steps 1-4, beside a busy-looping process:")
    for name, seconds in _beside_a_busy_core(config).items():
        print(f"  {name}: mean {seconds:.2f} s a step")
    print(f"machine: {describe_machine()}; load average {os.getloadavg()[0]:.2f}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
