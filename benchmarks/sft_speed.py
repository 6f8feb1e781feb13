"""Measure phase-1 SFT of the default tiny policy on 50K (prompt, workflow) pairs.

Usage: ``python benchmarks/sft_speed.py [--pairs 50000] [--library-size 20000]
[--out /tmp/flowforge-bench/sft50k]``. Trains from scratch into ``--out`` (which must not hold
another run; an identical finished run is reported, not retrained) and prints the wall time
(library build, tokenizer fit, training, saving), training tokens per second, final loss,
model size, the load average before and after (the machine is shared), the machine and the
command. The policy it writes is what ``policy_vocabulary.py`` and ``design_latency.py`` read.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: on a shared machine, spinning OpenMP threads wait for a thread
# that another user's process has descheduled; measured here 5.5 s vs 0.6 s per step.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import time
from pathlib import Path

import torch
from machine import command_line, describe_machine

from flowforge.policy.config import SFTRunConfig, TrainSettings
from flowforge.policy.model import read_run_config
from flowforge.policy.sft import run_sft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=50_000)
    parser.add_argument("--library-size", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/flowforge-bench/sft50k"))
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    config = SFTRunConfig(
        out_dir=str(args.out),
        pairs=args.pairs,
        library_size=args.library_size,
        train=TrainSettings(),
    )
    start = time.perf_counter()
    result = run_sft(config, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    record = read_run_config(args.out) or {}
    data = record.get("data", {})
    tokens = int(data.get("tokens", 0))
    print(
        f"policy: {result.policy_dir} ({result.parameters:,} parameters, "
        f"vocabulary {data.get('vocab_size')})"
    )
    print(
        f"pairs: {result.examples:,} over {data.get('library_workflows')} library workflows, "
        f"{tokens:,} tokens (longest {data.get('longest')})"
    )
    print(
        f"training: {result.steps} steps, mean loss {result.train_loss:.3f}, "
        f"{result.seconds:.0f} s in the run ({tokens / result.seconds:,.0f} tokens/s), "
        f"{'resumed' if result.resumed else 'from scratch'}"
    )
    cpu = float(record.get("result", {}).get("cpu_seconds", float("nan")))
    print(
        f"wall time of this command: {elapsed:.0f} s ({elapsed / 60:.1f} min); CPU time of "
        f"the run {cpu:.0f} s (all threads), i.e. ~{cpu / 2 / 60:.1f} min on 2 dedicated cores"
    )
    load_after = os.getloadavg()
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} "
        "(shared 2-core machine: other users' jobs slow this down)"
    )
    print(
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(f"machine: {describe_machine()}")
    print(f"command: {command_line()}")


if __name__ == "__main__":
    main()
