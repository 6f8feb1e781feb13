"""Measure an ensemble: ``flowforge reward eval --model DIR --data RUN [--data RUN ...]``.

What GRPO needs from the ensemble is the *order* of workflows for a prompt it has never
seen, including workflows no member has seen. So:

- **Units.** Judged triplets are grouped by (prompt, design); seeds of a pair are one unit.
- **Reference.** With a sim judge (judge id ``sim:SEED``) the noise-free hidden quality,
  recomputed as ``SimJudge(SEED).true_quality`` from the stored prompt, API JSON and seed
  (evaluation only; no training stage calls it). Otherwise the mean of the held-out scorer
  over the unit's seeds, which no member was trained on.
- **Splits**, by what the members saw (``training_set.json``): ``heldout_prompts`` (prompt
  unseen, design seen), ``heldout_workflows`` (prompt seen, design unseen), ``heldout_both``,
  and ``train`` (both seen: the fit, for reference).
- **Metrics** per split (`metrics.py`): within-prompt Spearman, pairwise accuracy and top-1
  regret for the ensemble mean, the reward (mean - kappa * std), every single member and
  their average; error by spread quantile (error = ensemble mean minus the unit's observed
  training score, in training-score units) and the Spearman of std against |error|.

Writes ``eval.json`` and two PNG plots (`plots.py`) to the output directory.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..data.export import Triplet, load_triplets
from .ensemble import RewardEnsemble, describe
from .metrics import error_by_spread, spearman, within_prompt
from .store import design_id, prompt_digest

Reference = Literal["auto", "true_quality", "heldout"]
SPLITS = ("heldout_prompts", "heldout_workflows", "heldout_both", "train")
EVAL_FILE = "eval.json"
_SIM_ID = re.compile(r"sim:(-?[0-9]+)")


class RewardEvalError(ValueError):
    """Evaluation data that cannot be used as asked; one line."""


@dataclass(frozen=True)
class Units:
    """One entry per (judge, prompt, design) of the evaluation data."""

    judge_ids: list[str]
    prompts: list[str]
    texts: list[str]
    actual: NDArray[np.float64]  # the reference score
    observed: NDArray[np.float64]  # mean training score over seeds (NaN if not computable)
    splits: list[str]
    reference: str  # "true_quality" or "heldout:<scorer>"


def _group(triplets: Sequence[Triplet]) -> dict[tuple[str, str, str], list[Triplet]]:
    """Scored triplets by (judge id, prompt, design): one unit each (judges never mix)."""
    groups: dict[tuple[str, str, str], list[Triplet]] = defaultdict(list)
    for t in triplets:
        if t.scores is not None:
            groups[(t.judge_id, t.prompt, t.workflow_text)].append(t)
    return groups


def _true_quality(groups: list[list[Triplet]]) -> NDArray[np.float64]:
    """Noise-free quality of each unit from its sim world (evaluation only)."""
    from ..judge.base import JudgeItem
    from ..judge.sim import SimJudge

    by_world: dict[int, list[int]] = defaultdict(list)
    for i, group in enumerate(groups):
        match = _SIM_ID.fullmatch(group[0].judge_id)
        assert match is not None  # checked by the caller
        by_world[int(match.group(1))].append(i)
    actual = np.full(len(groups), math.nan)
    for world, index in by_world.items():
        first = [groups[i][0] for i in index]
        items = [JudgeItem(t.prompt, json.loads(t.workflow_api), t.seed) for t in first]
        values = SimJudge(world).true_quality(items)
        actual[index] = [math.nan if v is None else v for v in values]
    return actual


def _reference(
    groups: list[list[Triplet]], reference: Reference, heldout: str
) -> tuple[NDArray[np.float64], str]:
    is_sim = all(_SIM_ID.fullmatch(t.judge_id) for group in groups for t in group)
    if reference == "true_quality" or (reference == "auto" and is_sim):
        if not is_sim:
            raise RewardEvalError("true_quality needs data judged by the sim (judge id sim:SEED)")
        return _true_quality(groups), "true_quality"
    values = [[t.scores[heldout] for t in g if t.scores and heldout in t.scores] for g in groups]
    if any(not v for v in values):
        raise RewardEvalError(f"the held-out scorer {heldout!r} is missing from some triplets")
    return np.array([float(np.mean(v)) for v in values]), f"heldout:{heldout}"


def build_units(
    ensemble: RewardEnsemble, triplets: Sequence[Triplet], reference: Reference
) -> Units:
    """Evaluation units with their reference score, observed training score and split."""
    grouped = _group(triplets)
    if not grouped:
        raise RewardEvalError("no scored triplets in the evaluation data")
    keys, groups = list(grouped), list(grouped.values())
    actual, name = _reference(groups, reference, ensemble.config.heldout_scorer)
    score = ensemble.training_score
    observed = np.array(
        [
            np.mean([score(t.scores) for t in g if t.scores is not None])
            if all(score.has_scores(t.scores) for t in g)
            else math.nan
            for g in groups
        ]
    )
    seen = ensemble.training_set
    splits = [
        split_of(prompt_digest(p) in seen.prompts, design_id(t) in seen.designs) for _, p, t in keys
    ]
    return Units(
        judge_ids=[j for j, _, _ in keys],
        prompts=[p for _, p, _ in keys],
        texts=[t for _, _, t in keys],
        actual=actual,
        observed=observed,
        splits=splits,
        reference=name,
    )


def split_of(prompt_seen: bool, design_seen: bool) -> str:
    """The split of a unit by what the members saw of it."""
    if prompt_seen:
        return "train" if design_seen else "heldout_workflows"
    return "heldout_prompts" if design_seen else "heldout_both"


def _ranking(
    groups: list[list[int]], predicted: NDArray[np.float64], actual: NDArray[np.float64]
) -> dict[str, Any]:
    return asdict(within_prompt(groups, predicted, actual))


def split_metrics(
    index: NDArray[np.int64],
    units: Units,
    members: NDArray[np.float64],
    kappa: float,
    spread_bins: int,
) -> dict[str, Any]:
    """Every metric of one split (module docstring); `index` selects its valid units."""
    by_prompt: dict[tuple[str, str], list[int]] = defaultdict(list)
    for j, i in enumerate(index):
        by_prompt[(units.judge_ids[i], units.prompts[i])].append(j)
    groups = list(by_prompt.values())
    actual = units.actual[index]
    m = members[index]  # (n, K)
    mean, std = m.mean(axis=1), m.std(axis=1)
    singles = [_ranking(groups, m[:, k], actual) for k in range(m.shape[1])]
    observed = units.observed[index]
    known = ~np.isnan(observed)
    error = mean[known] - observed[known]
    return {
        "units": len(index),
        "prompts": len(groups),
        "ensemble": _ranking(groups, mean, actual),
        "reward": _ranking(groups, mean - kappa * std, actual),
        "member_average": {key: float(np.nanmean([s[key] for s in singles])) for key in singles[0]},
        "members": singles,
        "spearman_global": spearman(mean, actual),
        "mean_abs_error": float(np.abs(error).mean()) if error.size else math.nan,
        "spread_error_spearman": spearman(std[known], np.abs(error)) if error.size else math.nan,
        "error_by_spread": [asdict(b) for b in error_by_spread(std[known], error, spread_bins)]
        if error.size
        else [],
    }


@dataclass(frozen=True)
class EvalResult:
    """The report (as written to ``eval.json``) and the files written."""

    report: dict[str, Any]
    files: tuple[Path, ...]


def evaluate_ensemble(
    ensemble: RewardEnsemble,
    data: Sequence[Path],
    out: Path | None,
    *,
    reference: Reference = "auto",
    spread_bins: int = 5,
) -> EvalResult:
    """Metrics of `ensemble` on the triplets of `data` (runs, Parquet files, HF datasets)."""
    triplets = [t for path in data for t in load_triplets(path)]
    return evaluate_triplets(
        ensemble, triplets, out, reference=reference, spread_bins=spread_bins, sources=data
    )


def evaluate_triplets(
    ensemble: RewardEnsemble,
    triplets: Sequence[Triplet],
    out: Path | None,
    *,
    reference: Reference = "auto",
    spread_bins: int = 5,
    sources: Sequence[Path] = (),
) -> EvalResult:
    """Metrics of `ensemble` on `triplets`, per split; ``eval.json`` and plots to `out`."""
    if reference not in ("auto", "true_quality", "heldout"):
        raise RewardEvalError(f"reference must be auto, true_quality or heldout, not {reference!r}")
    units = build_units(ensemble, triplets, reference)
    prediction = ensemble.predict_detail(units.prompts, units.texts)
    valid = prediction.valid & ~np.isnan(units.actual)
    report: dict[str, Any] = {
        "model": describe(ensemble),
        "data": [str(path) for path in sources],
        "reference": units.reference,
        "units": len(units.prompts),
        "invalid_for_model": int((~prediction.valid).sum()),
        "splits": {},
    }
    split_index: dict[str, NDArray[np.int64]] = {}
    for split in SPLITS:
        index = np.flatnonzero(valid & (np.array(units.splits) == split))
        if len(index):
            split_index[split] = index
            report["splits"][split] = split_metrics(
                index, units, prediction.members, ensemble.kappa, spread_bins
            )
    report = _json_ready(report)
    files = () if out is None else _write(out, report, units, prediction.mean, split_index)
    return EvalResult(report, files)


def _json_ready(value: Any) -> Any:
    """NaN (an undefined metric, e.g. no prompt with 3 designs) becomes null: strict JSON."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_ready(item) for item in value]
    return value


def _write(
    out: Path,
    report: dict[str, Any],
    units: Units,
    mean: NDArray[np.float64],
    split_index: dict[str, NDArray[np.int64]],
) -> tuple[Path, ...]:
    from .plots import plot_error_vs_spread, plot_predicted_vs_actual

    out.mkdir(parents=True, exist_ok=True)
    report_file = out / EVAL_FILE
    report_file.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return (
        report_file,
        plot_predicted_vs_actual(out, units, mean, split_index),
        plot_error_vs_spread(out, report["splits"]),
    )
