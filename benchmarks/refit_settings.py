"""Which reward settings score the policies' new designs best? A screen on train prompts only.

Usage: ``python benchmarks/refit_settings.py --run RUN [--variant NAME:key=value,...]...
[--share 0.2] [--processes 2] [--out OUT.json]``. RUN is a finished ``flowforge run``
with refine rounds. The data is what the last refit read: the collection's triplets (train
prompts x library workflows) and every round's judged designs (train prompts x the GRPO
policies' samples, mostly new designs). A share of the *train* prompts (sha256 of the prompt
id) is set aside; each variant of the run's reward settings is trained on the rest and
ranks, within each set-aside prompt, the judged rows against the held-out scorer (the one
the evaluation's win rates are on, never in the training score) and against the observed
training score.

Why: the refitted ensemble is what GRPO climbs and what best-of-N ranks, and the skill
that matters is scoring designs no member has seen for prompts no member has seen, next to
the library's. The reward settings (widths, epochs) were chosen on library workflows alone.
No held-out prompt of the evaluation is read here, so a setting chosen by this screen is not
chosen on the evaluation's prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from machine import command_line, describe_machine

from flowforge.data.export import Triplet, load_triplets
from flowforge.reward.config import RewardConfig
from flowforge.reward.evaluate import build_units
from flowforge.reward.metrics import within_prompt
from flowforge.reward.train import train_ensemble


def set_aside(prompt_id: str, share: float) -> bool:
    """Whether a train prompt is kept out of the variant's training (a hash rule)."""
    digest = hashlib.sha256(f"refit-screen:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """``NAME:key=value,key=value`` (values read as JSON, else as text); ``NAME`` alone is
    the run's own settings."""
    name, _, body = text.partition(":")
    changes: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        try:
            changes[key.strip()] = json.loads(value)
        except ValueError:
            changes[key.strip()] = value.strip()
    return name, changes


def data_of(run: Path) -> list[tuple[str, Triplet]]:
    """(source, triplet): ``library`` for the collection, ``designs`` for the rounds'."""
    rows = [("library", t) for t in load_triplets(run / "collect")]
    for path in sorted((run / "refine").glob("round-*/judged.parquet")):
        rows += [("designs", t) for t in load_triplets(path)]
    return rows


def score_variant(
    config: RewardConfig,
    train: Sequence[Triplet],
    held: Sequence[tuple[str, Triplet]],
    processes: int,
) -> dict[str, Any]:
    """Train on `train`, rank the `held` rows per prompt; metrics per source and overall."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train_ensemble(list(train), Path(tmp) / "reward", config, processes=processes)
    seconds = time.perf_counter() - started
    ensemble = result.ensemble
    units = build_units(ensemble, [t for _, t in held], "heldout")
    source_of = {(t.prompt, t.workflow_text): s for s, t in held}
    sources = np.array([source_of[(p, x)] for p, x in zip(units.prompts, units.texts, strict=True)])
    prediction = ensemble.predict_detail(units.prompts, units.texts)
    mean, std = prediction.members.mean(axis=1), prediction.members.std(axis=1)
    reward = mean - config.kappa * std
    ok = prediction.valid & ~np.isnan(units.actual) & ~np.isnan(units.observed)
    out: dict[str, Any] = {"train_seconds": round(seconds, 1)}
    for subset in ("designs", "library", "all"):
        chosen = ok & ((sources == subset) if subset != "all" else True)
        groups: dict[str, list[int]] = defaultdict(list)
        for i in np.flatnonzero(chosen):
            groups[units.prompts[i]].append(int(i))
        lists = list(groups.values())
        heldout = within_prompt(lists, reward, units.actual)
        observed = within_prompt(lists, reward, units.observed)
        gap = float(np.mean(mean[chosen] - units.observed[chosen]))
        ceiling = within_prompt(lists, units.observed, units.actual)
        out[subset] = {
            "units": int(chosen.sum()),
            "prompts": heldout.prompts,
            "heldout_spearman": round(heldout.spearman, 4),
            "heldout_pairwise": round(heldout.pairwise_accuracy, 4),
            "heldout_top1_regret": round(heldout.top1_regret, 4),
            "training_spearman": round(observed.spearman, 4),
            "training_pairwise": round(observed.pairwise_accuracy, 4),
            "mean_minus_observed": round(gap, 4),
            # the judged training score's own ranking against the held-out scorer: what a
            # perfect training-score model would reach (the same renders: an upper bound)
            "ceiling_heldout_pairwise": round(ceiling.pairwise_accuracy, 4),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value,...")
    parser.add_argument("--share", type=float, default=0.2)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    base = RewardConfig.from_json(json.loads((args.run / "config.json").read_text())["reward"])
    rows = data_of(args.run)
    held = [(s, t) for s, t in rows if set_aside(t.prompt_id, args.share)]
    train = [t for s, t in rows if not set_aside(t.prompt_id, args.share)]
    print(
        f"{len(train):,} training rows, {len(held):,} set-aside rows "
        f"({len({t.prompt_id for _, t in held})} prompts)"
    )
    results: dict[str, Any] = {}
    for text in args.variant or ["default"]:
        name, changes = parse_variant(text)
        config = dataclasses.replace(base, **changes)
        results[name] = {"changes": changes} | score_variant(config, train, held, args.processes)
        r = results[name]
        print(
            f"{name:>14}: designs heldout rho {r['designs']['heldout_spearman']:.3f} "
            f"pair {r['designs']['heldout_pairwise']:.3f} | all heldout rho "
            f"{r['all']['heldout_spearman']:.3f} pair {r['all']['heldout_pairwise']:.3f} "
            f"regret {r['all']['heldout_top1_regret']:.3f} | training pair "
            f"{r['all']['training_pairwise']:.3f} | gap {r['designs']['mean_minus_observed']:+.3f}"
            f" | ceiling pair {r['designs']['ceiling_heldout_pairwise']:.3f} / "
            f"{r['all']['ceiling_heldout_pairwise']:.3f}"
            f" | {r['train_seconds']:.0f} s",
            flush=True,
        )
    record = {"machine": describe_machine(), "command": command_line(), "results": results}
    if args.out is not None:
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
