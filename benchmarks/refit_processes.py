"""Time the refine rounds' ensemble refit with its members trained in 1 and in N processes.

Usage: ``python benchmarks/refit_processes.py --run RUN [--round 1] [--processes 1 2]``

RUN is a finished ``flowforge run`` with refine rounds. The refit of round R trains the
run's reward settings on the run's triplets plus the judgements of rounds 1..R (what
`pipeline.refine` does); this trains it once per value of ``--processes`` into a temporary
directory and prints the seconds of each and whether the members' predictions agree.
Results: docs/benchmarks.md ("Two GRPO seeds per refine round").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from machine import stamped

from flowforge.data.export import run_table
from flowforge.pipeline.config import load_run_config
from flowforge.pipeline.layout import REFINE, round_dir
from flowforge.pipeline.refine import JUDGED
from flowforge.reward.train import train_ensemble
from flowforge.workflow.schema import load_catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    parser.add_argument("--round", type=int, default=1, help="whose refit to time")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    config = load_run_config(args.run / "config.json")
    catalog = load_catalog(args.run / "library" / "object_info.json")
    data, _ = run_table(args.run / "collect")
    for number in range(1, args.round + 1):
        judged = pq.read_table(args.run / REFINE / round_dir(number) / JUDGED)
        data = pa.concat_tables([data, judged.select(data.column_names)])
    timings, predictions = {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        rows = Path(scratch) / "refit-data.parquet"
        pq.write_table(data, rows)
        for processes in args.processes:
            started = time.perf_counter()
            result = train_ensemble(
                rows, Path(scratch) / f"p{processes}", config.reward, catalog=catalog,
                processes=processes,
            )  # fmt: skip
            timings[processes] = round(time.perf_counter() - started, 1)
            sample = data.slice(0, 256)
            predictions[processes] = result.ensemble.predict_detail(
                sample.column("prompt").to_pylist(), sample.column("workflow_text").to_pylist()
            ).members
            print(f"processes {processes}: {timings[processes]} s", flush=True)
    first = predictions[args.processes[0]]
    same = all(np.array_equal(first, p, equal_nan=True) for p in predictions.values())
    results = {"rows": data.num_rows, "seconds": timings, "same_members": same}
    print(json.dumps(stamped(results), indent=1))


if __name__ == "__main__":
    main()
