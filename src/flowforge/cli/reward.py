"""Reward commands: train an ensemble, evaluate it (docs/reward.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..reward.config import MINILM, RewardConfig, parse_score_weights
from .app import ObjectInfoOption, app, catalog_option, out, progress_bar, user_errors

reward_app = typer.Typer(help="The reward-model ensemble: train, evaluate.", no_args_is_help=True)
app.add_typer(reward_app, name="reward")
_D = RewardConfig()


@reward_app.command("train")
def reward_train_command(
    data: Annotated[Path, typer.Option("--data", help="Run dir, .parquet or HF dataset dir.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to create.")],
    members: Annotated[int, typer.Option("--members", min=1)] = _D.members,
    backbone: Annotated[str, typer.Option("--backbone", help="minilm-frozen or hf:DIR")] = MINILM,
    score_weight: Annotated[
        list[str] | None, typer.Option("--score-weight", help="NAME=W (repeatable).")
    ] = None,
    heldout_scorer: Annotated[str, typer.Option("--heldout-scorer")] = _D.heldout_scorer,
    score_transform: Annotated[str, typer.Option("--score-transform")] = _D.score_transform,
    holdout_workflows: Annotated[float, typer.Option("--holdout-workflows")] = _D.holdout_workflows,
    bootstrap: Annotated[bool, typer.Option("--bootstrap/--no-bootstrap")] = _D.bootstrap,
    seed: Annotated[int, typer.Option("--seed")] = _D.seed,
    epochs: Annotated[int, typer.Option("--epochs")] = _D.epochs,
    kappa: Annotated[float, typer.Option("--kappa")] = _D.kappa,
    floor: Annotated[float, typer.Option("--floor")] = _D.floor,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    object_info: ObjectInfoOption = None,
) -> None:
    """Train K reward members on judged triplets (docs/reward.md)."""
    from ..reward.train import train_ensemble  # torch: imported only when this command runs

    with user_errors():
        config = RewardConfig(
            members=members,
            backbone=backbone,
            score_weights=parse_score_weights(score_weight or []),
            heldout_scorer=heldout_scorer,
            score_transform=score_transform,  # type: ignore[arg-type]  # checked by the config
            holdout_workflows=holdout_workflows,
            bootstrap=bootstrap,
            seed=seed,
            epochs=epochs,
            kappa=kappa,
            floor=floor,
        )
        catalog = catalog_option(object_info)
    progress = progress_bar()
    task = progress.add_task("training", total=config.members * config.epochs)
    with user_errors(), progress:
        result = train_ensemble(
            data,
            out_dir,
            config,
            catalog=catalog,
            overwrite=overwrite,
            on_progress=lambda k, epoch, loss: progress.advance(task),
        )
    out.print(
        f"trained {config.members} members on {result.rows:,} triplets ({result.prompts:,} "
        f"prompts, {result.designs:,} designs, {result.heldout_designs} held out) in "
        f"{result.seconds:.0f} s -> {result.model_dir}"
    )


@reward_app.command("eval")
def reward_eval_command(
    model: Annotated[Path, typer.Option("--model", help="A reward model directory.")],
    data: Annotated[list[Path], typer.Option("--data", help="Judged triplets (repeatable).")],
    out_dir: Annotated[Path | None, typer.Option("--out", help="Default: MODEL/eval.")] = None,
    reference: Annotated[
        str, typer.Option("--reference", help="auto, true_quality or heldout")
    ] = "auto",
    kappa: Annotated[float | None, typer.Option("--kappa")] = None,
    floor: Annotated[float | None, typer.Option("--floor")] = None,
    object_info: ObjectInfoOption = None,
) -> None:
    """Within-prompt Spearman, pairwise accuracy, top-1 regret, error by spread, per split."""
    from ..reward.ensemble import load_ensemble
    from ..reward.evaluate import evaluate_ensemble

    with user_errors():
        ensemble = load_ensemble(
            model, catalog=catalog_option(object_info), kappa=kappa, floor=floor
        )
        result = evaluate_ensemble(
            ensemble,
            data,
            out_dir or model / "eval",
            reference=reference,  # type: ignore[arg-type]
        )
    for split, m in result.report["splits"].items():
        e, a = m["ensemble"], m["member_average"]
        out.print(
            f"{split}: {m['units']:,} units, {m['prompts']:,} prompts | ensemble Spearman "
            f"{e['spearman']:.3f} pairwise {e['pairwise_accuracy']:.3f} regret "
            f"{e['top1_regret']:.4f} | single member Spearman {a['spearman']:.3f} pairwise "
            f"{a['pairwise_accuracy']:.3f}"
        )
    out.print(f"wrote {', '.join(str(f) for f in result.files)}")
