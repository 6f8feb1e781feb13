"""Phase 2 and the whole pipeline: ``flowforge grpo``, ``flowforge evaluate``, ``flowforge run``.

The packages behind these commands import torch and transformers, so they are imported
inside the commands (the CLI itself starts in a fraction of a second).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..evaluate.config import EvalInputs
    from ..policy.audit import Auditor

from ..judge.loader import parse_judge_options
from .app import app, err, fail, out, progress_bar, user_errors

JudgeOption = Annotated[
    str, typer.Option("--judge", help="sim, sim:SEED, comfyui or package.module:factory.")
]
JudgeOptOption = Annotated[
    list[str] | None,
    typer.Option("--judge-opt", help="KEY=VALUE for the judge (repeatable; strings)."),
]
ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML or JSON file of settings over the defaults; it names only what it changes "
        "(docs/evaluation.md lists every setting).",
        dir_okay=False,
    ),
]


@contextmanager
def _interruptible(hint: str) -> Iterator[None]:
    """Ctrl-C prints `hint` (how to go on) instead of a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        fail(f"interrupted; {hint}")


@app.command("grpo")
def grpo_command(
    sft: Annotated[Path, typer.Option("--sft", help="SFT policy directory (start, KL anchor).")],
    reward: Annotated[Path, typer.Option("--reward", help="Reward ensemble directory.")],
    output: Annotated[
        Path, typer.Option("--out", help="Run directory; becomes the GRPO policy (resumed).")
    ],
    steps: Annotated[int | None, typer.Option("--steps", help="Optimizer steps.", min=1)] = None,
    group_size: Annotated[
        int | None, typer.Option("--group-size", help="Samples per prompt (G).", min=2)
    ] = None,
    prompts_per_step: Annotated[
        int | None, typer.Option("--prompts-per-step", help="Prompts per step.", min=1)
    ] = None,
    beta: Annotated[
        float | None, typer.Option("--beta", help="KL tether to the SFT model.", min=0)
    ] = None,
    kappa: Annotated[
        float | None, typer.Option("--kappa", help="Reward = mean - kappa * std.", min=0)
    ] = None,
    learning_rate: Annotated[
        float | None, typer.Option("--learning-rate", help="AdamW learning rate.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Prompt order and samples.")] = None,
    audit_every: Annotated[
        int | None,
        typer.Option(
            "--audit-every",
            help="Judge some of the batch every N steps and correct the reward (needs --judge).",
            min=0,
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option("--judge", help="Judge of the audits: sim, sim:SEED, package.module:factory."),
    ] = None,
    judge_opt: JudgeOptOption = None,
    negative: Annotated[
        str, typer.Option("--negative", help="$NEGATIVE of audited designs (the collection's).")
    ] = "",
    quick: Annotated[
        bool, typer.Option("--quick", help="A one-minute preset (tests, a first look).")
    ] = False,
    config_file: ConfigOption = None,
) -> None:
    """Optimise an SFT policy against the frozen reward ensemble (GRPO, docs/grpo.md).

    Kill it and run the same command to resume from the last checkpoint; each step's
    reward, KL, validity and novelty go to OUT/log.jsonl. Settings: the defaults, then
    --quick, then --config, then the flags. With --audit-every N --judge J, every N steps
    the judge scores a few of the policy's samples and the reward is corrected where the
    ensemble was wrong about them (docs/grpo.md, "Judged audits").
    """
    from ..pipeline.overrides import apply, read_config_file
    from ..policy.grpo import QUICK, GRPORunConfig, train_grpo

    flags: dict[str, Any] = {
        "steps": steps,
        "group_size": group_size,
        "prompts_per_step": prompts_per_step,
        "beta": beta,
        "kappa": kappa,
        "learning_rate": learning_rate,
        "seed": seed,
        "audit_every": audit_every,
    }
    with user_errors():
        config = GRPORunConfig(sft_dir=str(sft), reward_dir=str(reward), out=str(output))
        if quick:
            config = apply(config, QUICK)
        if config_file is not None:
            config = apply(config, read_config_file(config_file))
        config = replace(config, **{k: v for k, v in flags.items() if v is not None})
        auditor = _auditor(config.audit_every, judge, judge_opt, reward, negative)
    progress = progress_bar()
    task = progress.add_task("GRPO", total=config.steps)

    def on_log(line: dict[str, float]) -> None:
        description = (
            f"GRPO reward {line['reward_mean']:+.3f} kl {line['kl']:.4f} "
            f"novel {line['novel_share']:.0%}"
        )
        progress.update(task, completed=int(line["step"]), description=description)

    with user_errors(), progress, _interruptible(f"run the same command to resume {output}"):
        policy = train_grpo(config, on_log=on_log, auditor=auditor)
    out.print(f"GRPO policy -> {policy} (log: {policy / 'log.jsonl'})", highlight=False)


def _auditor(
    audit_every: int, judge: str | None, judge_opt: list[str] | None, reward: Path, negative: str
) -> Auditor | None:
    """The judge of GRPO's audits (a `JudgeAuditor`), None without audits."""
    if audit_every == 0:
        if judge is not None:
            raise ValueError("--judge is for the audits; add --audit-every N (or drop --judge)")
        return None
    if judge is None:
        raise ValueError(f"audit_every = {audit_every} needs --judge (the judge of the audits)")
    from ..judge.loader import load_judge
    from ..policy.audit import JudgeAuditor

    loaded = load_judge(judge, parse_judge_options(judge_opt or []))
    return JudgeAuditor.for_ensemble(loaded.judge, reward, negative)


@app.command("evaluate")
def evaluate_command(
    output: Annotated[Path, typer.Option("--out", help="Report directory.")],
    run: Annotated[
        Path | None,
        typer.Option(
            "--run", help="A `flowforge run` directory: compare what it built.", file_okay=False
        ),
    ] = None,
    library: Annotated[
        Path | None, typer.Option("--library", help="Library directory (API JSON).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Judged train triplets (run dir or Parquet).")
    ] = None,
    reward: Annotated[Path | None, typer.Option("--reward", help="Reward ensemble.")] = None,
    sft: Annotated[Path | None, typer.Option("--sft", help="SFT policy.")] = None,
    comfygen_ft: Annotated[
        Path | None, typer.Option("--comfygen-ft", help="ComfyGen-FT policy.")
    ] = None,
    grpo: Annotated[Path | None, typer.Option("--grpo", help="GRPO policy.")] = None,
    start: Annotated[
        Path | None,
        typer.Option(
            "--start",
            help="The policy GRPO started from, when not --sft (a refine run's re-paired "
            "SFT): guidance's w = 0. --run RUN finds it.",
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            "--judge",
            help="sim, sim:SEED, comfyui or package.module:factory. Default: the run's own "
            "judge with --run (RUN/config.json), else sim.",
        ),
    ] = None,
    judge_opt: JudgeOptOption = None,
    prompts: Annotated[
        int | None, typer.Option("--prompts", help="Held-out prompts compared.", min=2)
    ] = None,
    config_file: ConfigOption = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            help="Methods designed at once (2: one in a helper process; same report).",
            min=1,
            max=2,
        ),
    ] = 2,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Replace the report an earlier evaluation wrote into --out."
        ),
    ] = False,
) -> None:
    """Compare every designer on held-out prompts with one judge; write report.md/json + PNGs.

    Inputs come from --run RUN (what `flowforge run` built) or one flag each; a method whose
    input is missing is reported as not run. Held-out prompts were never seen by any stage.
    An --out that holds a report already is refused unless --overwrite says to replace it.
    """
    from ..evaluate.compare import evaluate
    from ..evaluate.report import REPORT_JSON, results_table
    from ..judge.loader import load_judge
    from ..pipeline.config import load_eval_config

    if (output / REPORT_JSON).exists() and not overwrite:
        fail(
            f"{output} holds an evaluation report already ({REPORT_JSON}); give another --out, "
            "or --overwrite to replace it"
        )
    with user_errors():
        config = load_eval_config(config_file)
        if prompts is not None:
            config = replace(config, prompts=prompts)
        inputs = eval_inputs(run, library, data, reward, sft, comfygen_ft, grpo, start)
        spec, options = evaluation_judge(run, judge, judge_opt)
        if judge is None and run is not None:
            err.print(f"judge: {spec}, the run's own (--judge to use another)", highlight=False)
        loaded = load_judge(spec, options)
    with _interruptible("an evaluation starts over: run the same command again"), user_errors():
        report = evaluate(
            config, inputs, loaded, output, on_progress=lambda m: err.print(m), processes=jobs
        )
    out.print(results_table(report.data), highlight=False, soft_wrap=True)
    out.print(f"report -> {output / 'report.md'}", highlight=False)


def evaluation_judge(
    run: Path | None, judge: str | None, judge_opt: list[str] | None
) -> tuple[str, dict[str, str]]:
    """The judge spec and options an evaluation uses: --judge if given, else the judge the
    run was made with (``RUN/config.json``), else ``sim``; --judge-opt replaces the run's
    options. Why: a run made with ``--judge sim:1`` and evaluated by the default judge would
    report world 0's scores for policies that learned world 1, with nothing to say so."""
    from ..pipeline.config import load_run_config
    from ..pipeline.runner import CONFIG_FILE as RUN_CONFIG_FILE  # torch: import when needed

    options = parse_judge_options(judge_opt) if judge_opt else None
    if judge is not None or run is None:
        return judge or "sim", options or {}
    saved = run / RUN_CONFIG_FILE
    if not saved.is_file():
        raise ValueError(f"--run {run}: no {RUN_CONFIG_FILE}; give --judge")
    try:  # the reader `flowforge run` resumes with, old runs' files included
        config = load_run_config(saved)
    except ValueError as error:
        raise ValueError(f"{saved}: cannot read the run's judge ({error}); give --judge") from None
    return config.judge, options if options is not None else dict(config.judge_opt)


def eval_inputs(
    run: Path | None,
    library: Path | None,
    data: Path | None,
    reward: Path | None,
    sft: Path | None,
    comfygen_ft: Path | None,
    grpo: Path | None,
    start: Path | None = None,
) -> EvalInputs:
    """`EvalInputs` from a run directory, each flag overriding its part. A path given as a
    flag must exist; a part of the run that is missing (a stage not run) is left out."""
    from ..evaluate.config import EvalInputs
    from ..pipeline.stages import run_inputs

    given = {"--library": library, "--data": data, "--reward": reward, "--sft": sft}
    given |= {"--comfygen-ft": comfygen_ft, "--grpo": grpo, "--start": start}
    missing = [f"{flag} {path}" for flag, path in given.items() if path and not path.exists()]
    if missing:
        fail(f"not found: {', '.join(missing)}")
    if run is None:
        if library is None or data is None:
            fail("give --run RUN, or at least --library and --data")
        return EvalInputs(library, data, reward, sft, comfygen_ft, grpo, start=start)
    base = run_inputs(run)
    if not base.library.is_dir() or not base.triplets.is_dir():
        fail(f"--run {run}: no library and triplets in it; is it a `flowforge run` directory?")

    def part(flag: Path | None, in_run: Path | None) -> Path | None:
        return flag or (in_run if in_run is not None and in_run.exists() else None)

    policy = part(grpo, base.grpo)
    reference = part(sft, base.sft)
    if grpo is not None and start is None and policy != base.grpo and reference is not None:
        _warn_other_start(grpo, reference)
    return EvalInputs(
        library=library or base.library,
        triplets=data or base.triplets,
        reward=part(reward, base.reward),
        sft=reference,
        comfygen_ft=part(comfygen_ft, base.comfygen_ft),
        grpo=policy,
        # the refine rounds' judgements shaped the run's own GRPO policy, not another one
        grpo_data_calls=base.grpo_data_calls if policy == base.grpo else 0,
        # and it started from the run's re-paired SFT; another GRPO policy did not
        start=start or (base.start if policy == base.grpo else None),
    )


def _warn_other_start(grpo: Path, sft: Path) -> None:
    """Say so when a GRPO policy given by hand started from another policy than the SFT its
    guidance will extrapolate from: `--start` is not guessed from its record (the record's
    path may be stale in a copied run), but a silent wrong reference moves every guided row."""
    from ..policy.directory import read_run_config

    record = read_run_config(grpo) or {}
    started = (record.get("config") or {}).get("sft_dir")
    if started and Path(started).resolve() != sft.resolve():
        err.print(
            f"warning: --grpo {grpo} started from {started} (its record), not from {sft}: "
            f"guidance (w = 0) and its start's row use {sft} unless you pass --start {started}",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )


@app.command("run")
def run_command(
    output: Annotated[
        Path, typer.Option("--out", help="Run directory (resumed stage by stage).")
    ] = Path("runs/main"),
    config_file: ConfigOption = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Tiny sizes everywhere: a few minutes (tests, CI).")
    ] = False,
    judge: Annotated[
        str | None,
        typer.Option("--judge", help="Override the config's judge (sim, sim:SEED, ...)."),
    ] = None,
    show_config: Annotated[
        bool,
        typer.Option("--show-config", help="Print the resolved config as JSON and exit."),
    ] = False,
) -> None:
    """library -> collect -> reward -> SFT -> ComfyGen-FT -> GRPO -> refine -> evaluate,
    into --out.

    Settings: the embedded defaults (or --quick), then --config FILE, then --judge. Run
    the same command again after a kill, or after changing a setting: finished stages whose
    settings and inputs did not change are skipped, a killed stage resumes from its
    checkpoints, and only what depends on a change is redone. Stages that do not read each
    other run at once, each in its own process (`jobs`, default 2; its output in
    RUN/stages/<stage>.log). Prints the report's table.
    """
    from ..pipeline.config import load_run_config
    from ..pipeline.runner import RunError, run_pipeline
    from ..pipeline.workers import StageProcessError

    with user_errors():
        config = load_run_config(config_file, quick=quick, judge=judge)
    if show_config:
        out.print_json(json.dumps(config.to_json()))
        return
    try:
        with _interruptible(f"run the same command to resume {output}"), user_errors():
            result = run_pipeline(config, output, say=lambda m: err.print(m, highlight=False))
    except (RunError, StageProcessError) as error:
        fail(str(error))
    for stage in result.stages:
        err.print(f"{stage.name:12s} {stage.status:8s} {stage.seconds:8.1f} s", highlight=False)
    if result.table is not None:
        out.print(result.table, highlight=False, soft_wrap=True)
    if result.hand_over is not None:
        out.print(result.hand_over, highlight=False, soft_wrap=True)
    out.print(
        f"run -> {output} in {result.seconds:.0f} s (report: {output / 'evaluate' / 'report.md'})",
        highlight=False,
    )
