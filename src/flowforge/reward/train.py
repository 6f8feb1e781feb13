"""Train the reward-model ensemble: ``flowforge reward train --data RUN --members K --out DIR``.

The paper's central move: once trained, K members predict image quality from (prompt,
workflow text) without rendering, and GRPO optimises against them. The story, top to bottom:

1. **Data.** Scored triplets (`data.export.load_triplets`: a run directory, a Parquet export
   or a saved HF dataset). Judge errors are skipped.
2. **Held-out designs.** A share ``holdout_workflows`` of designs, chosen by a hash of the
   design id (never by their scores), is removed, so that evaluation can measure "a
   workflow no member has seen" with the same library.
3. **Training score** (`target.py`): the weighted mean of the standardized training
   scorers; the held-out scorer is never part of it.
4. **Inputs.** Each distinct workflow text is read once (parse, validate, tokens); a text
   that fails is skipped and counted. The workflow-token vocabulary is fitted on the
   training designs (MiniLM path); prompts are embedded once per text by the frozen encoder.
5. **Members.** Member k: seed ``seed + k`` (initialisation, dropout, batch order) and,
   with ``bootstrap``, a bootstrap sample of (prompt, design) groups, i.e. all seeds of a
   pair go together since they share the scorers' systematic error. Bootstrap makes
   members disagree where data is thin (designs and regions sampled rarely), which is what
   ``kappa`` needs; seeds alone would make them disagree mostly about nothing. Loss: mean
   squared error on the training score; AdamW with a one-cycle learning-rate schedule.
6. **The model directory** (`store.py`): config, training-score statistics, vocabulary or
   backbone files, weights (safetensors), and the training set's digests.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from ..data.export import Triplet, load_triplets
from ..spawned import worker_pool
from ..workflow.graph import Workflow
from ..workflow.schema import Catalog, default_catalog
from .backbone import Backbone, Design, HFBackbone, MiniLMBackbone, TextEncoder
from .config import RewardConfig
from .ensemble import RewardEnsemble
from .features import fit_vocab, read_design, workflow_tokens
from .model import HFMemberNet, cpu_threads
from .store import (
    CONFIG_FILE,
    FORMAT,
    TrainingSet,
    design_id,
    json_format,
    prompt_digest,
    save_model,
)
from .target import TrainingScore, fit_training_score

#: Called after every epoch of every member: (member, epoch, mean loss of the epoch).
ProgressFn = Callable[[int, int, float], None]
_HOLDOUT_SALT = "flowforge-reward-holdout-v1:"


class RewardTrainError(ValueError):
    """Training data or settings that cannot make an ensemble; the message says why."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished training left in its model directory."""

    model_dir: Path
    rows: int  # scored triplets trained on (before bootstrap)
    prompts: int
    designs: int
    heldout_designs: int  # designs in the data kept out of training by `holdout_workflows`
    skipped: dict[str, int]  # rows not trained on, by reason
    losses: list[list[float]]  # per member, mean training loss per epoch
    seconds: float
    ensemble: RewardEnsemble  # the trained members, ready to score (as loaded from model_dir)

    def summary(self) -> dict[str, Any]:
        """The run's numbers as JSON: what ``config.json`` and a pipeline stage record."""
        return {
            "rows": self.rows,
            "prompts": self.prompts,
            "designs": self.designs,
            "heldout_designs": self.heldout_designs,
            "skipped": self.skipped,
            "final_losses": [member[-1] for member in self.losses],
            "seconds": round(self.seconds, 1),
        }


# --- 1-2. data and held-out designs -------------------------------------------------------
def is_heldout_design(text: str, share: float) -> bool:
    """Whether a design is held out: a hash of its id, read as a fraction, below `share`."""
    digest = design_id(_HOLDOUT_SALT + design_id(text))
    return int(digest[:16], 16) / 2**64 < share


def _select_rows(
    triplets: Sequence[Triplet], config: RewardConfig
) -> tuple[list[Triplet], dict[str, int], int]:
    """Scored rows of designs that are not held out; skip counts; held-out designs."""
    rows, skipped = [], {"judge_error": 0, "heldout_design": 0}
    heldout: set[str] = set()
    for triplet in triplets:
        if triplet.scores is None:
            skipped["judge_error"] += 1
        elif is_heldout_design(triplet.workflow_text, config.holdout_workflows):
            skipped["heldout_design"] += 1
            heldout.add(triplet.workflow_text)
        else:
            rows.append(triplet)
    return rows, skipped, len(heldout)


# --- 4. inputs ----------------------------------------------------------------------------
def _read_designs(texts: Sequence[str], catalog: Catalog) -> dict[str, Workflow | str]:
    """Each distinct text parsed and validated once: its workflow, or why it is invalid."""
    return {text: read_design(text, catalog) for text in texts}


def build_backbone(
    config: RewardConfig, workflows: dict[str, Workflow], encoder: TextEncoder | None
) -> Backbone:
    """The backbone of `config`: for MiniLM with the vocabulary of the valid training designs."""
    hf_dir = config.hf_dir
    if hf_dir is not None:
        try:
            return HFBackbone(config, Path(hf_dir))
        except (OSError, ValueError) as error:
            raise RewardTrainError(f"backbone {config.backbone}: {error}") from None
    tokens = [workflow_tokens(wf, config.crosses) for wf in workflows.values()]
    return MiniLMBackbone(config, fit_vocab(tokens, config.min_count, config.hash_buckets), encoder)


def _check_lengths(backbone: Backbone, rows: Sequence[Triplet], limit: int) -> None:
    if not isinstance(backbone, HFBackbone):
        return
    pairs = {(r.prompt, r.workflow_text) for r in rows}
    lengths = backbone.token_lengths([p for p, _ in pairs], [t for _, t in pairs])
    too_long = sum(length > limit for length in lengths)
    if too_long:
        raise RewardTrainError(
            f"{too_long} of {len(pairs)} (prompt, workflow) pairs are longer than max_length "
            f"{limit} tokens (longest {max(lengths)}); raise max_length"
        )


# --- 5. members ---------------------------------------------------------------------------
def bootstrap_rows(groups: Sequence[Sequence[int]], rng: np.random.Generator) -> NDArray[np.int64]:
    """Row indices of a bootstrap sample of `groups` (drawn with replacement, same count)."""
    drawn = rng.integers(0, len(groups), size=len(groups))
    return np.concatenate([np.asarray(groups[g], np.int64) for g in drawn])


def _optimizer(member: nn.Module, config: RewardConfig) -> torch.optim.Optimizer:
    """AdamW; an hf: backbone gets `backbone_lr`, everything else `lr`."""
    if isinstance(member, HFMemberNet):
        head = list(member.head.parameters())
        groups = [
            {"params": list(member.backbone.parameters()), "lr": config.backbone_lr},
            {"params": head, "lr": config.lr},
        ]
        return torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    return torch.optim.AdamW(member.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def training_step(
    member: nn.Module, optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], y: Tensor
) -> float:
    """One gradient step on the mean squared error; returns the loss before the step."""
    loss = torch.nn.functional.mse_loss(member(**tensors), y)
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.detach())


def fit_member(
    backbone: Backbone,
    prompts: Sequence[str],
    designs: Sequence[Design],
    targets: NDArray[np.float64],
    config: RewardConfig,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[nn.Module, list[float]]:
    """Train one member on these rows (already bootstrapped); the member and epoch losses."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    member = backbone.new_member(pretrained=True)
    member.train()
    optimizer = _optimizer(member, config)
    batch = min(config.batch_size, len(targets))
    steps = config.epochs * (len(targets) // batch)
    max_lr = [group["lr"] for group in optimizer.param_groups]
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr, total_steps=steps, pct_start=0.1
    )
    y_all = torch.tensor(targets, dtype=torch.float32)
    losses = []
    for epoch in range(config.epochs):
        order = rng.permutation(len(targets))
        epoch_losses = []
        for start in range(0, len(order) - batch + 1, batch):  # the ragged tail waits a round
            index = order[start : start + batch]
            tensors = backbone.tensors([prompts[i] for i in index], [designs[i] for i in index])
            epoch_losses.append(training_step(member, optimizer, tensors, y_all[index]))
            schedule.step()
        losses.append(float(np.mean(epoch_losses)))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    member.eval()
    return member, losses


# --- the whole run ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Rows:
    """The usable training rows, with their designs read once and their training scores."""

    rows: list[Triplet]
    workflows: dict[str, Workflow]  # workflow text -> IR, valid designs only
    skipped: dict[str, int]
    heldout_designs: int


def _usable_rows(triplets: Sequence[Triplet], config: RewardConfig, catalog: Catalog) -> _Rows:
    """Steps 1-2 and the validity part of 4: rows to train on, and what was skipped."""
    rows, skipped, heldout_designs = _select_rows(triplets, config)
    read = _read_designs(sorted({r.workflow_text for r in rows}), catalog)
    workflows = {text: wf for text, wf in read.items() if isinstance(wf, Workflow)}
    skipped["invalid_workflow"] = sum(r.workflow_text not in workflows for r in rows)
    rows = [r for r in rows if r.workflow_text in workflows]
    if len(rows) < 2:
        raise RewardTrainError(f"only {len(rows)} usable scored triplets (skipped: {skipped})")
    return _Rows(rows, workflows, skipped, heldout_designs)


def _train_members(
    backbone: Backbone,
    rows: Sequence[Triplet],
    designs: dict[str, Design],
    targets: NDArray[np.float64],
    config: RewardConfig,
    on_progress: ProgressFn | None,
    processes: int = 1,
) -> tuple[list[nn.Module], list[list[float]]]:
    """Step 5: member k on its bootstrap sample of (prompt, design) groups, seed seed + k;
    with `processes` > 1 that many members at once, each in a spawned worker (the members
    are the same: each seeds its own generators and runs on `config.threads` threads)."""
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row.prompt, row.workflow_text)].append(i)
    jobs = []
    for k in range(config.members):
        rng = np.random.default_rng([config.seed, k])
        sample = (
            bootstrap_rows(list(groups.values()), rng) if config.bootstrap else np.arange(len(rows))
        )
        prompts = [rows[i].prompt for i in sample]
        jobs.append((prompts, [designs[rows[i].workflow_text] for i in sample], targets[sample]))
    if processes > 1 and config.members > 1:
        return _train_members_at_once(backbone, jobs, config, on_progress, processes)
    members, losses = [], []
    with cpu_threads(config.threads):
        for k, (prompts, chosen, y) in enumerate(jobs):
            member, member_losses = fit_member(
                backbone,
                prompts,
                chosen,
                y,
                config,
                seed=config.seed + k,
                on_epoch=_member_progress(on_progress, k),
            )
            members.append(member)
            losses.append(member_losses)
    return members, losses


def _train_members_at_once(
    backbone: Backbone,
    jobs: Sequence[tuple[list[str], list[Design], NDArray[np.float64]]],
    config: RewardConfig,
    on_progress: ProgressFn | None,
    processes: int,
) -> tuple[list[nn.Module], list[list[float]]]:
    """`_train_members` over `processes` spawned workers; a member's epochs are reported
    when it is back."""
    workers = min(processes, len(jobs))
    with worker_pool(workers, config.threads, _start_member_worker, (backbone,)) as pool:
        futures = [
            pool.submit(_fit_in_worker, prompts, chosen, y, config, config.seed + k)
            for k, (prompts, chosen, y) in enumerate(jobs)
        ]
        members, losses = [], []
        for k, future in enumerate(futures):
            member, member_losses = future.result()
            members.append(member)
            losses.append(member_losses)
            report = _member_progress(on_progress, k)
            for epoch, loss in enumerate(member_losses):
                if report is not None:
                    report(epoch, loss)
        return members, losses


_WORKER_BACKBONE: list[Backbone] = []  # a member worker's copy of the backbone


def _start_member_worker(backbone: Backbone) -> None:
    _WORKER_BACKBONE.append(backbone)


def _fit_in_worker(
    prompts: list[str],
    designs: list[Design],
    targets: NDArray[np.float64],
    config: RewardConfig,
    seed: int,
) -> tuple[nn.Module, list[float]]:
    return fit_member(_WORKER_BACKBONE[0], prompts, designs, targets, config, seed=seed)


def _member_progress(on_progress: ProgressFn | None, k: int) -> Callable[[int, float], None] | None:
    if on_progress is None:
        return None

    def report(epoch: int, loss: float) -> None:
        on_progress(k, epoch, loss)

    return report


def train_ensemble(
    data: Path | Sequence[Triplet],
    out: Path,
    config: RewardConfig,
    *,
    catalog: Catalog | None = None,
    encoder: TextEncoder | None = None,
    on_progress: ProgressFn | None = None,
    overwrite: bool = False,
    processes: int = 1,
) -> TrainResult:
    """Train `config.members` members on `data` and save them to `out` (module docstring).

    `out` must not exist, unless `overwrite` and it is a reward model directory (replaced
    only once the new model is complete). `encoder` replaces MiniLM (tests). `processes` > 1
    trains that many members at once in spawned workers (the same members: a test checks).
    """
    started = time.perf_counter()
    _check_out(out, overwrite)
    triplets = load_triplets(data) if isinstance(data, Path) else list(data)
    catalog = catalog if catalog is not None else default_catalog()
    usable = _usable_rows(triplets, config, catalog)
    rows = usable.rows
    score = fit_training_score([r.scores for r in rows if r.scores is not None], config)
    targets = np.array([score(r.scores) for r in rows if r.scores is not None])
    backbone = build_backbone(config, usable.workflows, encoder)
    _check_lengths(backbone, rows, config.max_length)
    if isinstance(backbone, MiniLMBackbone):  # every prompt embedded once, in one batch
        backbone.encoder.encode(sorted({r.prompt for r in rows}))
    designs = {text: backbone.design_of(text, wf) for text, wf in usable.workflows.items()}
    members, losses = _train_members(
        backbone, rows, designs, targets, config, on_progress, processes
    )
    training_set = TrainingSet(
        frozenset(prompt_digest(r.prompt) for r in rows),
        frozenset(design_id(text) for text in designs),
    )
    result = TrainResult(
        model_dir=out,
        rows=len(rows),
        prompts=len({r.prompt for r in rows}),
        designs=len(designs),
        heldout_designs=usable.heldout_designs,
        skipped=usable.skipped,
        losses=losses,
        seconds=time.perf_counter() - started,
        ensemble=RewardEnsemble(config, backbone, members, score, training_set, catalog),
    )
    vocab = backbone.vocab if isinstance(backbone, MiniLMBackbone) else None
    save_hf = backbone.save if isinstance(backbone, HFBackbone) else None
    header = _header(config, score, result, triplets, data)
    save_model(out, header, members, vocab, save_hf, training_set)
    return result


def _check_out(out: Path, overwrite: bool) -> None:
    """Refuse to write over anything but a reward model, and over that without `overwrite`."""
    if not out.exists():
        return
    if not overwrite:
        raise RewardTrainError(f"--out {out} already exists; remove it or pass --overwrite")
    if out.is_dir() and not any(out.iterdir()):
        return
    if not (out / CONFIG_FILE).is_file() or json_format(out / CONFIG_FILE) != FORMAT:
        raise RewardTrainError(f"--out {out} exists and is not a reward model; not replacing it")


def _header(
    config: RewardConfig,
    score: TrainingScore,
    result: TrainResult,
    triplets: Sequence[Triplet],
    data: Path | Sequence[Triplet],
) -> dict[str, Any]:
    """``config.json``'s content besides the format tag: config, score, summary, versions."""
    versions = {"flowforge": metadata.version("flowforge"), "torch": torch.__version__}
    if config.hf_dir is not None:
        versions["transformers"] = metadata.version("transformers")
    return {
        "config": config.to_json(),
        "training_score": score.to_json(),
        "summary": {
            "data": str(data) if isinstance(data, Path) else f"{len(triplets)} triplets in memory",
            "judge_ids": sorted({t.judge_id for t in triplets}),
            **result.summary(),
        },
        "versions": versions,
    }
