"""Active-learning rounds after GRPO (``[refine]``, two by default): judge the policy's own
designs, refit the ensemble on the triplets plus those judgements, GRPO again from SFT; the
next round judges that policy.

Why: the ensemble learned from library workflows, and GRPO leaves the library. On some seeds
it climbs into a family of new designs every member overrates (docs/benchmarks.md, "GRPO's
spread over seeds"); on others it stalls. Judging what the GRPO policy writes, on the train
prompts, shows the ensemble its errors near the policy's path; GRPO from SFT then optimises
against the refitted ensemble. Measured with `benchmarks/refine_round.py` (the same
computation): on sim world 0 one round took GRPO seeds 0, 1 and 2 to 0.507, 0.503 and 0.320
held-out (0.479, 0.305 and 0.030 on the run's own ensemble), and two rounds took them to
0.504, 0.377 and 0.509; on world 1 two rounds gave seeds 0 and 1 0.456 and 0.607 (0.497 and
0.487 without; docs/benchmarks.md, "Two active-learning rounds"). A round
costs `samples` x `seeds` judge calls per train prompt (2,660 by default, 13% of the
collection), charged to every GRPO method's data calls in the evaluation.

``RUN/refine/round-N/``: ``judged.parquet`` (the round's judgements, the export's columns;
written atomically, so a killed round does not judge again), ``reward/`` (the refitted
ensemble, retrained from nothing after a kill), ``grpo/`` (the round's GRPO run, resumed
from its checkpoints); ``RUN/refine/refine.json`` (what the rounds did, written last).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from ..data.collect import check_results
from ..data.export import run_table
from ..data.plan import SEED_LIMIT, RequestTemplate
from ..evaluate.designers import PolicyDesigner, SamplingSettings, derive_seed, load_for_design
from ..evaluate.methods import audit_calls
from ..files import write_text_atomic
from ..judge.base import JudgeItem, JudgeResult
from ..judge.loader import LoadedJudge
from ..policy.audit import Auditor
from ..policy.grpo import GRPORunConfig, train_grpo
from ..policy.sampled import Sample
from ..reward.config import RewardConfig
from ..reward.store import CONFIG_FILE as REWARD_CONFIG
from ..reward.train import train_ensemble
from ..workflow.schema import Catalog
from ..workflow.textform import design_hash
from .config import RefineStageConfig
from .layout import GRPO_DIR, REFINE_SUMMARY, REWARD_DIR, round_dir

JUDGED = "judged.parquet"
PROMPT_CHUNK = 64  # prompts per sampling call (one progress line each)


@dataclass(frozen=True)
class RefinePaths:
    """What the round reads (the run's stages) and where it writes."""

    collect: Path
    sft: Path
    grpo: Path  # the run's GRPO policy, whose designs the first round judges
    library: Path  # the run's library (API JSON), for GRPO's novelty
    out: Path


def refine(
    paths: RefinePaths,
    config: RefineStageConfig,
    reward: RewardConfig,
    grpo: GRPORunConfig,
    judge: LoadedJudge,
    catalog: Catalog,
    negative: str,
    say: Callable[[str], None] = print,
    auditor: Callable[[Path], Auditor] | None = None,
) -> dict[str, Any]:
    """`config.rounds` rounds of judge, refit, GRPO again (resuming whatever a killed run
    finished); the summary. Round k judges the policy of round k-1 (the run's GRPO for the
    first) and refits on the triplets plus every round's judgements so far, so the ensemble
    keeps what earlier rounds showed it. `auditor` makes the judge of each round's GRPO
    audits from that round's refitted ensemble directory; it is called only when
    ``grpo.audit_every > 0`` (and then needed)."""
    paths.out.mkdir(parents=True, exist_ok=True)
    triplets, _ = run_table(paths.collect)
    data, policy, rounds = triplets, paths.grpo, []
    for number in range(1, config.rounds + 1):
        here = paths.out / round_dir(number)
        say(f"refine: round {number}/{config.rounds}")
        judged = _judged(
            here,
            policy,
            data,
            config,
            number,
            judge,
            catalog,
            negative,
            grpo.max_completion_length,
            say,
        )
        data = pa.concat_tables([data, judged.select(data.column_names)])
        reward_dir = here / REWARD_DIR
        if not (reward_dir / REWARD_CONFIG).is_file():
            _refit(data, here, reward_dir, reward, catalog, say)
        policy = here / GRPO_DIR
        again = replace(
            grpo,
            sft_dir=str(paths.sft),
            reward_dir=str(reward_dir),
            out=str(policy),
            library_dir=str(paths.library),
        )
        say(f"refine: round {number}: GRPO again from SFT against the refitted ensemble")
        audited = auditor if grpo.audit_every > 0 else None
        train_grpo(again, auditor=audited(reward_dir) if audited is not None else None)
        errors = judged.column("error").to_pylist()
        rounds.append(
            {
                "judge_calls": judged.num_rows,
                "judge_errors": sum(e is not None for e in errors),
                "distinct_designs": len(set(judged.column("workflow_hash").to_pylist())),
            }
        )
    # Every GRPO run before the last shaped the final policy through the designs a round
    # judged; their audits count like the judged designs. The evaluation reads the last run's
    # audits from its own record (`evaluate.methods.audit_calls`).
    earlier = [paths.grpo] + [paths.out / round_dir(n) / GRPO_DIR for n in range(1, config.rounds)]
    audits = sum(audit_calls(p) for p in earlier)
    judged_calls = sum(r["judge_calls"] for r in rounds)
    summary = {
        "judge_calls": judged_calls + audits,
        "judged_designs_calls": judged_calls,
        "earlier_audit_calls": audits,
        "final": round_dir(config.rounds),
        "rounds": rounds,
    }
    write_text_atomic(paths.out / REFINE_SUMMARY, json.dumps(summary, indent=1) + "\n")
    return summary


def _judged(
    here: Path,
    policy: Path,
    data: Any,
    config: RefineStageConfig,
    number: int,
    judge: LoadedJudge,
    catalog: Catalog,
    negative: str,
    max_new_tokens: int,
    say: Callable[[str], None],
) -> Any:
    """The round's judgements of `policy`'s designs: read back when a killed run had them
    (the file is written atomically, so a half-judged round judges again from the start)."""
    path = here / JUDGED
    if not path.is_file():
        here.mkdir(parents=True, exist_ok=True)
        table = judge_designs(
            policy, data, config, judge, catalog, negative, max_new_tokens, say, number
        )
        partial = path.with_name(path.name + ".partial")
        pq.write_table(table, partial)
        os.replace(partial, path)
    return pq.read_table(path)


def _refit(
    data: Any,
    here: Path,
    reward_dir: Path,
    reward: RewardConfig,
    catalog: Catalog,
    say: Callable[[str], None],
) -> None:
    """Train the ensemble again from nothing on `data` (the run's reward settings)."""
    combined = here / "refit-data.parquet"  # the refit's data, removed afterwards
    pq.write_table(data, combined)
    say(f"refine: refitting the ensemble on {data.num_rows} judgements")
    started = time.perf_counter()
    try:
        train_ensemble(combined, reward_dir, reward, catalog=catalog)
    finally:
        combined.unlink(missing_ok=True)
    say(f"refine: ensemble refitted in {time.perf_counter() - started:.0f} s")


def judge_designs(
    policy: Path,
    triplets: Any,
    config: RefineStageConfig,
    judge: LoadedJudge,
    catalog: Catalog,
    negative: str,
    max_new_tokens: int,
    say: Callable[[str], None] = print,
    round_number: int = 1,
) -> Any:
    """`config.samples` designs of `policy` for each train prompt of `triplets` (a table with
    the export's columns), each judged on `config.seeds` render seeds, as a table with the same
    columns (item numbers continue the triplets'; invalid designs are not judged). Sampling
    and render seeds follow `config.seed` and `round_number`, so rounds draw independently."""
    prompts = dict(
        zip(
            triplets.column("prompt_id").to_pylist(),
            triplets.column("prompt").to_pylist(),
            strict=True,
        )
    )
    ids = sorted(prompts)
    designer = PolicyDesigner(
        load_for_design(policy),
        catalog,
        SamplingSettings(config.temperature, True, max_new_tokens, PROMPT_CHUNK, negative),
    )
    samples: list[tuple[str, Sample]] = []
    for start in range(0, len(ids), PROMPT_CHUNK):
        chunk = ids[start : start + PROMPT_CHUNK]
        seeds = [derive_seed("refine", config.seed, round_number, i) for i in chunk]
        drawn = designer.sample([prompts[i] for i in chunk], seeds, config.samples)
        samples += [(chunk[k // config.samples], s) for k, s in enumerate(drawn)]
        say(f"refine: sampled designs for {start + len(chunk)}/{len(ids)} train prompts")
    rng = np.random.default_rng([config.seed, round_number, 0x5EED])
    rows: list[dict[str, Any]] = []
    items: list[JudgeItem] = []
    for prompt_id, sample in samples:
        if not sample.valid or sample.workflow is None:
            continue
        template = RequestTemplate(sample.text, negative)
        for seed in rng.integers(0, SEED_LIMIT, config.seeds):
            api = template.fill(sample.prompt, int(seed))
            items.append(JudgeItem(sample.prompt, api, int(seed)))
            rows.append(
                {
                    "prompt_id": prompt_id,
                    "prompt": sample.prompt,
                    "negative": negative,
                    "workflow_hash": design_hash(sample.workflow, catalog),
                    "workflow_api": json.dumps(api, separators=(",", ":"), ensure_ascii=False),
                    "workflow_text": sample.text,
                    "seed": int(seed),
                    "judge_id": judge.judge_id,
                }
            )
    results: list[JudgeResult] = []
    for start in range(0, len(items), 256):
        batch = judge.judge.score(items[start : start + 256])
        check_results(judge.judge_id, batch, len(items[start : start + 256]))
        results += batch
    say(f"refine: judged {len(items)} renders of {len(samples)} sampled designs")
    return _table(triplets, rows, results)


def _table(like: Any, rows: Sequence[dict[str, Any]], results: Sequence[JudgeResult]) -> Any:
    """Rows and their results as a table of `like`'s schema (the export's columns)."""
    first = (max(like.column("item").to_pylist()) + 1) if like.num_rows else 0
    names = [n for n in like.column_names if n.startswith("score_")]
    now = int(time.time() * 1e6)
    columns: dict[str, list[Any]] = {n: [] for n in like.column_names}
    for offset, (row, result) in enumerate(zip(rows, results, strict=True)):
        scores = result.scores or {}
        values = {
            **row,
            "item": first + offset,
            "error": result.error,
            "attempts": 1,
            "judged_at": now,
            **{name: scores.get(name.removeprefix("score_")) for name in names},
        }
        for name in like.column_names:
            columns[name].append(values[name])
    return pa.table(columns, schema=like.schema)
