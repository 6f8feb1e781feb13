"""Time a run's evaluation with its methods designed in 1 and in 2 processes.

Usage: ``python benchmarks/evaluate_processes.py --run RUN [--processes 1 2]``

RUN is a finished ``flowforge run``. This evaluates what it built (`stages.run_inputs`, the
run's own evaluation settings and judge: what ``flowforge evaluate --run RUN --jobs N``
does) once per value of ``--processes`` into a temporary directory, and prints the wall
seconds of each, every method's design seconds, and whether the reports agree with their
times taken out. Results: docs/benchmarks.md ("The evaluation's methods two at a time").
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from machine import stamped

from flowforge.evaluate.compare import evaluate
from flowforge.evaluate.report import REPORT_JSON
from flowforge.judge.loader import load_judge
from flowforge.pipeline.config import load_run_config
from flowforge.pipeline.stages import run_inputs


def without_times(value: Any) -> Any:
    """A report's JSON without its wall times and creation time."""
    if isinstance(value, dict):
        skip = ("seconds", "created_at")
        return {k: without_times(v) for k, v in value.items() if k not in skip}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    config = load_run_config(args.run / "config.json")
    inputs = run_inputs(args.run, config.comfygen_ft.enabled)
    timings: dict[int, float] = {}
    design: dict[int, dict[str, float]] = {}
    reports = {}
    with tempfile.TemporaryDirectory() as scratch:
        for processes in args.processes:
            judge = load_judge(config.judge, dict(config.judge_opt))
            started = time.perf_counter()
            evaluate(
                config.evaluate, inputs, judge, Path(scratch) / f"p{processes}",
                processes=processes,
            )  # fmt: skip
            timings[processes] = round(time.perf_counter() - started, 1)
            path = Path(scratch) / f"p{processes}" / REPORT_JSON
            reports[processes] = json.loads(path.read_text(encoding="utf-8"))
            design[processes] = {
                m["name"]: round(m["seconds"], 1) for m in reports[processes]["methods"]
            }
            print(f"processes {processes}: {timings[processes]} s", flush=True)
    first = without_times(reports[args.processes[0]])
    same = all(without_times(r) == first for r in reports.values())
    results = {"seconds": timings, "design_seconds": design, "same_report": same}
    print(json.dumps(stamped(results), indent=1))


if __name__ == "__main__":
    main()
