"""Policy commands: SFT (workflow vocabulary), the ComfyGen-FT baseline, design."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..pipeline.layout import RunDesign
    from ..policy.config import TrainSettings
    from ..policy.design import DesignResult

from .app import ObjectInfoOption, app, catalog_option, err, fail, out, user_errors

# The policy packages import torch and transformers: they are imported inside the commands
# so that every other command (validate, convert, ...) starts in a fraction of a second.
# Training options shared by `sft` and `comfygen-ft`; unset means the TrainSettings default,
# which show_default names (a test holds them equal; "[default: ...]" inside a help text
# would be eaten by rich as markup).
Epochs = Annotated[
    float | None, typer.Option("--epochs", help="Passes over the examples.", show_default="1.0")
]
LearningRate = Annotated[
    float | None, typer.Option("--learning-rate", help="Peak AdamW rate.", show_default="2e-3")
]
BatchSize = Annotated[
    int | None, typer.Option("--batch-size", help="Examples per step.", show_default="32", min=1)
]
Seed = Annotated[
    int | None,
    typer.Option("--seed", help="Pairing, initial weights, data order.", show_default="0"),
]


def _settings(
    epochs: float | None, learning_rate: float | None, batch_size: int | None, seed: int | None
) -> TrainSettings:
    from ..policy.config import TrainSettings

    base = TrainSettings()
    return replace(
        base,
        epochs=base.epochs if epochs is None else epochs,
        learning_rate=base.learning_rate if learning_rate is None else learning_rate,
        batch_size=base.batch_size if batch_size is None else batch_size,
        seed=base.seed if seed is None else seed,
    )


@app.command("sft")
def sft_command(
    output: Annotated[Path, typer.Option("--out", help="Policy directory (resumed if it exists).")],
    pairs: Annotated[
        int, typer.Option("--pairs", help="(prompt, workflow) pairs.", min=1)
    ] = 50_000,
    library_size: Annotated[
        int, typer.Option("--library-size", help="Augmented library to draw workflows from.")
    ] = 20_000,
    library: Annotated[
        Path | None,
        typer.Option("--library", help="Use this library directory instead.", file_okay=False),
    ] = None,
    epochs: Epochs = None,
    learning_rate: LearningRate = None,
    batch_size: BatchSize = None,
    seed: Seed = None,
    object_info: ObjectInfoOption = None,
) -> None:
    """Teach the policy the workflow vocabulary: SFT on (prompt, workflow) pairs.

    Pairs need no rendering: library workflows are paired at random with train prompts
    (docs/policy.md). Kill it and run it again to resume from the last checkpoint.
    """
    from ..policy.config import SFTRunConfig
    from ..policy.sft import run_sft

    with user_errors():
        catalog_option(object_info)  # a bad --object-info fails here, before training
        config = SFTRunConfig(
            out_dir=str(output),
            pairs=pairs,
            library_size=library_size,
            library_dir=str(library) if library else None,
            object_info=str(object_info) if object_info else None,
            train=_settings(epochs, learning_rate, batch_size, seed),
        )
        result = run_sft(config)
    out.print(
        f"{'resumed' if result.resumed else 'trained'} {result.parameters:,}-parameter policy on "
        f"{result.examples:,} pairs, {result.steps:,} steps, loss {result.train_loss:.3f}, "
        f"{result.seconds:.0f} s -> {result.policy_dir}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("comfygen-ft")
def comfygen_ft_command(
    triplets: Annotated[Path, typer.Option("--data", help="Run dir, .parquet or HF dataset.")],
    output: Annotated[Path, typer.Option("--out", help="Policy directory.")],
    score: Annotated[
        list[str] | None,
        typer.Option("--score", help="Scorer averaged into the training score (repeatable)."),
    ] = None,
    epochs: Epochs = None,
    learning_rate: LearningRate = None,
    batch_size: BatchSize = None,
    seed: Seed = None,
    object_info: ObjectInfoOption = None,
    init_from: Annotated[
        Path | None,
        typer.Option(
            "--init-from",
            help="Fine-tune this policy directory (e.g. the SFT policy of the library the "
            "triplets came from) instead of training a new tiny model.",
        ),
    ] = None,
) -> None:
    """The ComfyGen-FT baseline: SFT on (prompt, score) -> workflow, queried with a high score.

    One example per judged (prompt, workflow) pair, its score averaged over the pair's seeds.
    """
    from ..policy.config import ComfyGenFTConfig
    from ..policy.sft import run_comfygen_ft

    with user_errors():
        config = ComfyGenFTConfig(
            out_dir=str(output),
            triplets=str(triplets),
            object_info=str(object_info) if object_info else None,
            train=_settings(epochs, learning_rate, batch_size, seed),
            init_from=str(init_from) if init_from else None,
            **({"score_names": tuple(score)} if score else {}),
        )
        result = run_comfygen_ft(config)
    out.print(
        f"trained ComfyGen-FT on {result.examples:,} pairs, loss {result.train_loss:.3f} "
        f"-> {result.policy_dir}",
        highlight=False,
    )


@app.command("design")
def design_command(
    prompt: Annotated[str, typer.Argument(help="What the image should show.")],
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Policy directory (SFT or GRPO).")
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            "--run",
            help="A finished `flowforge run` directory: its GRPO policy, guided from its SFT "
            "policy with the w its evaluation chose, ranked by its reward ensemble (given "
            "options override each part).",
        ),
    ] = None,
    reference: Annotated[
        Path | None,
        typer.Option("--reference", help="Reference policy for guidance (usually the SFT one)."),
    ] = None,
    guidance: Annotated[
        float | None,
        typer.Option("--guidance", help="w in ref + w (policy - ref); 1 is the policy alone."),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples", help="Candidates to draw.", show_default="1; 8 with --run", min=1
        ),
    ] = None,
    reward: Annotated[
        Path | None,
        typer.Option("--reward", help="Reward ensemble ranking the candidates (no rendering)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Sampling seed, written into the graph.")] = 0,
    negative: Annotated[str, typer.Option("--negative", help="Negative prompt.")] = "",
    temperature: Annotated[
        float | None,
        typer.Option(
            "--temperature", help="Sampling temperature (docs/policy.md).", show_default="0.7"
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write API JSON here (else stdout).")
    ] = None,
    ui: Annotated[bool, typer.Option("--ui", help="Also write the editor's UI JSON.")] = False,
    object_info: ObjectInfoOption = None,
) -> None:
    """Design the ComfyUI workflow for PROMPT: API JSON ready for POST /prompt.

    Decoding is constrained by the node schemas, so the workflow always validates. With
    --reference and --guidance, decoding extrapolates from the reference towards the policy
    (method.md); with --samples N and --reward, the N candidates are ranked by predicted
    reward. --run RUN sets all of these from a finished run (and 8 samples unless given).
    """
    if run is not None:
        from ..pipeline.layout import run_design

        with user_errors():
            setup = run_design(run)
        if setup.fixed is not None and policy is None:
            _hand_over_fixed(prompt, run, setup, seed, negative, output, ui, object_info)
            return
        policy = policy or setup.policy
        if reference is None and guidance is None:
            reference, guidance = setup.reference, setup.guidance
        reward = reward or setup.reward
        samples = samples or (8 if reward is not None else 1)
        err.print(
            f"--run {run}: policy {policy}, guidance "
            + (f"w={guidance:g} from {reference}" if guidance is not None else "none")
            + f", {samples} sample(s)"
            + (f" ranked by {reward}" if reward is not None else ""),
            highlight=False,
            soft_wrap=True,
        )
    if policy is None:
        fail("give --policy DIR (a trained policy) or --run RUN (a finished `flowforge run`)")
    samples = samples or 1
    if (reference is None) != (guidance is None):
        fail("--reference and --guidance go together")
    from ..policy.design import DESIGN_TEMPERATURE, design

    with user_errors():
        catalog = catalog_option(object_info)
        scorer = None
        if reward is not None:  # imports torch: only when asked (docs/benchmarks.md)
            from ..reward.ensemble import load_ensemble

            scorer = load_ensemble(reward, catalog=catalog)
        result = design(
            prompt, policy, samples=samples, seed=seed, catalog=catalog,
            reference_dir=reference, guidance=guidance, reward=scorer, negative=negative,
            temperature=DESIGN_TEMPERATURE if temperature is None else temperature, ui=ui,
        )  # fmt: skip
    _deliver(result, output, ui)


def _deliver(result: DesignResult, output: Path | None, ui: bool) -> None:
    """API JSON to `output` (and UI JSON beside it with `ui`), else to stdout."""
    text = json.dumps(result.api, indent=2, ensure_ascii=False)
    if output is None:
        print(text)
    else:
        output.write_text(text + "\n", encoding="utf-8")
        if ui and result.ui is not None:
            ui_path = output.with_name(output.stem + "_ui.json")
            ui_path.write_text(json.dumps(result.ui, indent=2, ensure_ascii=False) + "\n")
            err.print(f"wrote {ui_path}", highlight=False)
        err.print(f"wrote {output}", highlight=False)
    err.print(f"designed in {result.seconds:.2f} s", highlight=False)


def _hand_over_fixed(
    prompt: str,
    run: Path,
    setup: RunDesign,
    seed: int,
    negative: str,
    output: Path | None,
    ui: bool,
    object_info: Path | None,
) -> None:
    """``design --run`` when the run's hand-over guard found its best fixed workflow better
    than its policy on validation prompts (docs/evaluation.md): that workflow, filled in."""
    from ..policy.design import fixed_design

    assert setup.fixed is not None and setup.guard_scores is not None
    mine, fixed = setup.guard_scores
    err.print(
        f"--run {run}: its policy scored {mine:.3f} on validation prompts against its best "
        f"fixed workflow's {fixed:.3f} (the hand-over guard, RUN/evaluate/report.md), so this "
        "is that workflow; give --policy DIR to design with the policy anyway",
        highlight=False,
        soft_wrap=True,
    )
    with user_errors():
        catalog = catalog_option(object_info)
        result = fixed_design(
            prompt, setup.fixed, catalog=catalog, seed=seed, negative=negative, ui=ui
        )
    _deliver(result, output, ui)
