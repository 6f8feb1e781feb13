"""SFT of the default tiny policy on one torch thread and on two: what `sft_threads` buys.

Usage: ``python benchmarks/sft_threads.py --run RUN [--pairs 3000] [--threads 1,2]
[--work /tmp/flowforge-bench/sft-threads]``. RUN is a ``flowforge run`` directory (its
library and object_info are read). For each thread count it trains the run's default SFT
settings from nothing on `--pairs` random pairs into ``WORK/t<N>`` (removed first) and prints
the wall time and the final loss, with the machine and the command.

Why: ``flowforge run`` keeps every stage on one thread, because two stages share the two
cores and a second OpenMP thread waiting for a busy core is slower than none. SFT is the
exception: it runs while the other core idles. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI sets it

import argparse
import dataclasses
import shutil
import time
from pathlib import Path

from machine import command_line, describe_machine

from flowforge.pipeline.config import RunConfig
from flowforge.policy.sft import run_sft
from flowforge.reward.model import cpu_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--work", type=Path, default=Path("/tmp/flowforge-bench/sft-threads"))
    args = parser.parse_args()
    sft = dataclasses.replace(RunConfig().sft, pairs=args.pairs)
    library = args.run / "library" / "workflows"
    object_info = args.run / "library" / "object_info.json"
    print(describe_machine())
    print(command_line())
    for threads in (int(t) for t in args.threads.split(",")):
        out = args.work / f"t{threads}"
        shutil.rmtree(out, ignore_errors=True)
        config = sft.run_config(out, library, object_info, args.run / "reward", "random")
        started = time.perf_counter()
        with cpu_threads(threads):
            result = run_sft(config, progress=False, say=lambda line: None)
        seconds = time.perf_counter() - started
        print(
            f"{threads} thread(s): {seconds:.1f} s for {result.steps} steps "
            f"({result.examples} pairs), loss {result.train_loss:.8f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
