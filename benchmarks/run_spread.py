"""How much a finished run's result depends on its GRPO draw: rerun it with other GRPO seeds.

Usage: ``python benchmarks/run_spread.py --run RUN --out OUT --grpo-seeds 2,4
[--config SETTING.toml] [--at-once 2] [--json OUT/spread.json]``

Each seed gets a copy of RUN (``OUT/seed-K``) whose config is RUN's own ``config.json`` with
``[grpo] seed = K``, and ``flowforge run`` on it: library, collection, reward, SFT and
ComfyGen-FT keep their stage keys and are skipped; GRPO, the refine rounds (GRPO seeds K and
K + 1, the re-paired SFT, the choice) and the evaluation run again. So the spread is what
the GRPO seeds alone move, on the run's own data and ensemble: the draw the run's guards
(the judge's choice of policy and of guidance weight on validation prompts) have to survive.
Runs go ``--at-once`` at a time (each is a whole ``flowforge run``; on 2 cores one at a time
takes ~30 minutes, two at once ~45).

With ``--config FILE`` (TOML or JSON, as ``flowforge run --config`` reads) its settings are
laid over RUN's in every copy: a setting measured over GRPO draws on the run's own data
(RUN's own seed among ``--grpo-seeds`` is then a draw too). Stages whose settings it changes
are redone, with what reads them (e.g. ``[sft.train.vocab]`` redoes SFT and ComfyGen-FT).

Prints, for RUN and each copy: the kept policy and its choice scores, the chosen w, and the
held-out score and win rate against the best fixed workflow of GRPO's start, GRPO, GRPO +
guidance at the chosen w and best-of-8; writes them as JSON with the machine and command.
Results: docs/benchmarks.md ("Spread over GRPO seeds").
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from machine import stamped

from flowforge.pipeline.config import RunConfig, RunConfigError, load_run_config
from flowforge.pipeline.overrides import ConfigFileError, apply, read_config_file

#: Stage outputs a copy needs: the rest (GRPO, refine, evaluate) is cleared and redone.
KEPT = ("library", "collect", "reward", "sft", "comfygen_ft", "stages", "config.json")
METHODS = ("grpo_start", "grpo", "grpo_wsel", "best_of_8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="a finished `flowforge run`")
    parser.add_argument("--out", required=True, type=Path, help="directory for the copies")
    parser.add_argument(
        "--grpo-seeds",
        required=True,
        help="comma-separated GRPO seeds, e.g. 2,4 (RUN's own: only with --config)",
    )
    parser.add_argument(
        "--config", type=Path, default=None, help="settings laid over RUN's in every copy"
    )
    parser.add_argument("--at-once", type=int, default=1, help="copies run at the same time")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    try:
        seeds = [int(s) for s in args.grpo_seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--grpo-seeds: comma-separated integers, got {args.grpo_seeds!r}")
    if not seeds or args.at_once < 1:
        parser.error("give at least one --grpo-seeds value and --at-once >= 1")
    if not (args.run / "evaluate" / "report.json").is_file():
        parser.error(f"{args.run}: not a finished run (no evaluate/report.json)")
    try:  # the run's settings with the file's over them, checked before anything runs
        changes = read_config_file(args.config) if args.config is not None else {}
        settings = apply(load_run_config(args.run / "config.json"), changes)
    except (ConfigFileError, RunConfigError) as error:
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    copies = [
        _prepared_copy(
            args.run, args.out / f"seed-{seed}", apply(settings, {"grpo": {"seed": seed}})
        )
        for seed in seeds
    ]
    started = time.perf_counter()
    _run_all(copies, args.at_once)
    rows = [_row(args.run, "RUN")] + [
        _row(copy, f"grpo seed {seed}") for copy, seed in zip(copies, seeds, strict=True)
    ]
    _print(rows)
    if args.json is not None:
        seconds = time.perf_counter() - started
        record = {"run": str(args.run), "config": changes, "rows": rows, "seconds": seconds}
        args.json.write_text(json.dumps(stamped(record), indent=1) + "\n", encoding="utf-8")


def _prepared_copy(run: Path, copy: Path, settings: RunConfig) -> Path:
    """`copy` holding RUN's stages up to SFT and `settings` as its config (kept as it is
    when a killed benchmark left it, so the copy's run resumes)."""
    config = copy / "spread.json"
    if config.is_file():
        return copy
    copy.mkdir(parents=True, exist_ok=True)
    for name in KEPT:
        source = run / name
        if source.is_dir():
            shutil.copytree(source, copy / name, dirs_exist_ok=True)
        elif source.is_file():
            shutil.copy2(source, copy / name)
    config.write_text(json.dumps(settings.to_json(), indent=1) + "\n", encoding="utf-8")
    return copy


def _run_all(copies: list[Path], at_once: int) -> None:
    """``flowforge run`` on every copy, `at_once` at a time, each logging to COPY.log."""
    waiting = list(copies)
    running: list[tuple[Path, subprocess.Popen[bytes]]] = []
    while waiting or running:
        while waiting and len(running) < at_once:
            copy = waiting.pop(0)
            command = [sys.executable, "-m", "flowforge", "run", "--out", str(copy)]
            command += ["--config", str(copy / "spread.json")]
            print(f"running: {' '.join(command)}", flush=True)
            with copy.with_suffix(".log").open("a", encoding="utf-8") as log:  # the child's
                running.append((copy, subprocess.Popen(command, stdout=log, stderr=log)))
        time.sleep(5)
        for copy, process in list(running):
            if process.poll() is not None:
                running.remove((copy, process))
                if process.returncode != 0:
                    sys.exit(f"{copy}: flowforge run failed ({process.returncode}); see its .log")


def _row(run: Path, name: str) -> dict[str, Any]:
    report = json.loads((run / "evaluate" / "report.json").read_text(encoding="utf-8"))
    refine = json.loads((run / "refine" / "refine.json").read_text(encoding="utf-8"))
    by_name = {m["name"]: m for m in report["methods"]}
    wins = report["win_rates"]["heldout"]
    choice = refine.get("choice") or {}
    row: dict[str, Any] = {
        "name": name,
        "kept": refine.get("policy"),
        "choice_scores": choice.get("scores"),
        "choice_prompts": choice.get("prompts"),
        "w": (report.get("guidance_choice") or {}).get("weight"),
        "best_fixed": by_name["best_fixed"]["heldout"],
    }
    for method in METHODS:
        if method in by_name:
            row[method] = by_name[method]["heldout"]
            row[f"{method}_win"] = wins[method]["best_fixed"]
    return row


def _print(rows: list[dict[str, Any]]) -> None:
    head = "| draw | kept (choice scores) | w | best fixed | " + " | ".join(METHODS) + " |"
    print(head)
    print("|" + "---|" * (4 + len(METHODS)))
    for row in rows:
        scores = row["choice_scores"] or {}
        kept = f"{row['kept']} ({', '.join(f'{k} {v:.3f}' for k, v in scores.items())})"
        cells = [f"{row[m]:.3f} / {row[f'{m}_win']:.0%}" if m in row else "-" for m in METHODS]
        print(
            f"| {row['name']} | {kept} | {row['w']} | {row['best_fixed']:.3f} | "
            + " | ".join(cells)
            + " |"
        )
    for method in METHODS:
        values = [row[method] for row in rows if method in row]
        if len(values) > 1:
            print(
                f"{method}: mean {statistics.mean(values):.3f}, "
                f"min {min(values):.3f}, max {max(values):.3f} over {len(values)} draws"
            )


if __name__ == "__main__":
    main()
