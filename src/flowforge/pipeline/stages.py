"""The stages of ``flowforge run``, each a call into the package that owns it.

library -> collect -> reward -> SFT -> ComfyGen data -> ComfyGen-FT -> GRPO -> refine
(unless disabled) -> evaluate. A stage reads its section of the `RunConfig` and the outputs
of earlier stages (fixed directories of the run) and writes only ``RUN/<its name>``; it
returns a JSON summary that the runner stores in the stage's done marker. `resumable`
stages continue a run cut short (the collection journals, the SFT and GRPO checkpoints, the
refine rounds' judgements);
the others are restarted from nothing by the runner.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..data.collect import CollectConfig, collect, judge_catalog
from ..data.export import load_triplets
from ..data.prompts import Split, fixed_sample, load_prompts
from ..evaluate.compare import evaluate
from ..evaluate.config import EvalInputs
from ..judge.loader import JudgeSource, LoadedJudge
from ..policy.audit import JudgeAuditor
from ..policy.config import ComfyGenFTConfig
from ..policy.grpo import train_grpo
from ..policy.sft import run_comfygen_ft, run_sft
from ..reward.model import cpu_threads
from ..reward.train import train_ensemble
from ..workflow.library import build_library, load_seed_library, save_library
from ..workflow.schema import Catalog
from .config import REPAIRED_SFT_SETTINGS, RunConfig
from .layout import (
    COLLECT,
    COMFYGEN_DATA,
    COMFYGEN_FT,
    EVALUATE,
    GRPO_DIR,
    LIBRARY,
    REFINE,
    REWARD_DIR,
    SFT_DIR,
    final_models,
)
from .refine import AuditJudge, RefinePaths, refine

WORKFLOWS = "workflows"  # RUN/library/workflows: the library's API JSON files
OBJECT_INFO = "object_info.json"  # RUN/library/object_info.json: the judge's catalog
PROMPTS_FILE = "prompts.jsonl"  # RUN/collect/prompts.jsonl: the train prompts collected on


@dataclass
class StageContext:
    """What a stage is given: the run directory, the config, the judge, a message sink."""

    run: Path
    config: RunConfig
    say: Callable[[str], None]

    @property
    def judge_source(self) -> JudgeSource:
        """The run's judge spec and options, for a helper process to load its own judge."""
        return JudgeSource.of(self.config.judge, dict(self.config.judge_opt))

    @cached_property
    def judge(self) -> LoadedJudge:
        """The run's judge, loaded once on first use (a real judge may connect)."""
        return self.judge_source.load()

    def catalog(self) -> Catalog:
        return judge_catalog(self.judge.judge, self.judge.judge_id)

    def path(self, *parts: str) -> Path:
        return self.run.joinpath(*parts)


StageFn = Callable[[StageContext], dict[str, Any]]


def _reads_all(config: RunConfig) -> frozenset[str]:
    return frozenset()


#: How much lower a yielding stage's CPU priority is (`os.nice` increment; 10 gives it about
#: a tenth of a core that another busy process wants).
YIELD_NICENESS = 10


@dataclass(frozen=True)
class Stage:
    """A step of the run: its name (= its directory), what its key covers, how it runs."""

    name: str
    sections: tuple[str, ...]  # config sections (or dotted settings) in its key
    inputs: tuple[str, ...]  # earlier stages whose outputs it may read
    resumable: bool
    run: StageFn
    #: The inputs a config makes it skip (SFT reads the ensemble only for ensemble
    #: pairing): left out of its key, so redoing them does not redo this stage needlessly.
    unread: Callable[[RunConfig], frozenset[str]] = _reads_all
    #: The prompt splits whose contents its output depends on (`data.prompts.SPLIT_VERSIONS`
    #: in its key): the library none but is keyed like the training stages that build on it.
    splits: tuple[Split, ...] = ("train",)
    #: Off the chain the rest of the run waits on: in a process of its own (``jobs > 1``)
    #: it runs at lower CPU priority (`YIELD_NICENESS`), so the stages beside it keep the
    #: cores they need and it takes what they leave. ComfyGen-FT: only the evaluation, the
    #: last stage, reads it, and it ran beside GRPO and the first refine round, which it
    #: slowed (three busy processes on two cores: the round's two GRPO runs took 319 s
    #: instead of ~245 s in the 5199c09 run from nothing; docs/benchmarks.md).
    yields: bool = False
    #: Dotted settings (``section.name``) a resumable stage checks against its own output
    #: when it resumes, redoing what they decide: a change in only these resumes the stage
    #: instead of clearing it (`runner`). The refine rounds: which of the last round's
    #: policies the judge keeps depends on `choose_prompts` and `choose_temperature`, the
    #: ~20 minutes of rounds before it do not (`pipeline.choose.chosen` judges again); the
    #: re-paired SFT's settings (`REPAIRED_SFT_SETTINGS`) decide only that SFT, the last
    #: round's GRPO and the choice (`pipeline.refine.refit_sft` redoes them).
    rechecked: tuple[str, ...] = ()

    def reads(self, config: RunConfig) -> tuple[str, ...]:
        """The earlier stages whose outputs it reads under `config` (its key covers these)."""
        skipped = self.unread(config)
        return tuple(name for name in self.inputs if name not in skipped)


def library_stage(ctx: StageContext) -> dict[str, Any]:
    """Augment the shipped seeds into the run's library, for the judge's catalog."""
    c = ctx.config.library
    entries = build_library(load_seed_library(), ctx.catalog(), c.size, c.seed)
    save_library(entries, ctx.path(LIBRARY, WORKFLOWS))
    info = json.dumps(ctx.judge.judge.object_info(), ensure_ascii=False)
    ctx.path(LIBRARY, OBJECT_INFO).write_text(info, encoding="utf-8")
    return {"workflows": len(entries), "judge_id": ctx.judge.judge_id}


def collect_stage(ctx: StageContext) -> dict[str, Any]:
    """Judge the plan of (train prompt, library workflow, seed) items (resumes its journal)."""
    c = ctx.config.collect
    out = ctx.path(COLLECT)
    prompts = "train"
    if c.prompts is not None:
        out.mkdir(parents=True, exist_ok=True)
        prompts = str(_write_prompts(out / PROMPTS_FILE, c.prompts))
    return _collect_into(ctx, out, prompts, pairs=c.pairs)


def _collect_into(
    ctx: StageContext,
    out: Path,
    prompts: str,
    *,
    pairs: int | None = None,
    grid: bool = False,
    library_sample: int | None = None,
) -> dict[str, Any]:
    """Collect into `out` on the run's judge and library with ``[collect]``'s seeds, seed,
    negative and batching: `pairs` random pairs, or the `grid` of `library_sample`
    workflows (`CollectConfig`). The summary a stage's marker keeps."""
    c = ctx.config.collect
    config = CollectConfig(
        out=out,
        judge=ctx.config.judge,
        judge_opt=ctx.config.judge_opt,
        prompts=prompts,
        library=ctx.path(LIBRARY, WORKFLOWS),
        seeds=c.seeds,
        seed=c.seed,
        negative=c.negative,
        batch_size=c.batch_size,
        max_attempts=c.max_attempts,
        pairs=pairs,
        grid=grid,
        library_sample=library_sample,
    )
    summary = collect(config, ctx.judge)
    return {
        "total": summary.total,
        "scored_this_call": summary.scored,
        "errors_by_kind": summary.run_errors_by_kind,
        "rate": round(summary.rate, 1),
    }


def _write_prompts(path: Path, count: int) -> Path:
    """The first `count` train prompts in sha256(id) order, as a prompt file (ids kept)."""
    lines = [
        json.dumps({"id": p.id, "prompt": p.text, "category": p.category})
        for p in fixed_sample(load_prompts("train"), count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def reward_stage(ctx: StageContext) -> dict[str, Any]:
    """Train the reward ensemble on the collected triplets."""
    result = train_ensemble(
        ctx.path(COLLECT), ctx.path(REWARD_DIR), ctx.config.reward, catalog=ctx.catalog()
    )
    return result.summary()


def sft_stage(ctx: StageContext) -> dict[str, Any]:
    """Phase-1 SFT on the run's library (resumes from its checkpoints)."""
    config = ctx.config.sft.run_config(
        ctx.path(SFT_DIR),
        ctx.path(LIBRARY, WORKFLOWS),
        ctx.path(LIBRARY, OBJECT_INFO),
        ctx.path(REWARD_DIR),
    )
    with cpu_threads(ctx.config.sft_threads or torch.get_num_threads()):
        result = run_sft(config, progress=False, say=ctx.say)
    return _policy_result(asdict(result))


def comfygen_data_stage(ctx: StageContext) -> dict[str, Any]:
    """ComfyGen-FT's own data, a ComfyGen-shaped grid (`ComfyGenGridConfig`): a sample of
    the library's workflows, each judged on the same train prompts with ``[collect]``'s
    seeds (resumes its journal). Nothing when the baseline is off or learns the triplets."""
    c = ctx.config.comfygen_ft
    if not c.enabled or c.data != "grid":
        return {"enabled": False}
    out = ctx.path(COMFYGEN_DATA)
    out.mkdir(parents=True, exist_ok=True)
    prompts = str(_write_prompts(out / PROMPTS_FILE, c.grid.prompts))
    return _collect_into(ctx, out, prompts, grid=True, library_sample=c.grid.workflows)


def comfygen_ft_stage(ctx: StageContext) -> dict[str, Any]:
    """The ComfyGen-FT baseline on its data (the grid or the triplets), or nothing when
    disabled."""
    c = ctx.config.comfygen_ft
    if not c.enabled:
        return {"enabled": False}
    data = ctx.path(COMFYGEN_DATA if c.data == "grid" else COLLECT)
    names = c.score_names or _training_scorers(data, ctx.config.evaluate.heldout_scorer)
    config = ComfyGenFTConfig(
        out_dir=str(ctx.path(COMFYGEN_FT)),
        triplets=str(data),
        score_names=names,
        object_info=str(ctx.path(LIBRARY, OBJECT_INFO)),
        train=c.train,
        init_from=str(ctx.path(SFT_DIR)) if c.from_sft else None,
    )
    result = run_comfygen_ft(config, progress=False, say=ctx.say)
    return _policy_result(asdict(result))


def labelled(name: str, say: Callable[[str], None]) -> Callable[[str], None]:
    """`say` with the stage's name in front of each message that does not begin with it
    already (two stages may print at once). `workers.execute` gives every stage such a
    context, in its own process or the runner's, so a stage's lines read the same either way."""
    own = (f"{name}:", f"{name} ")
    return lambda text: say(text if text.startswith(own) else f"{name}: {text}")


def _training_scorers(data: Path, heldout_scorer: str) -> tuple[str, ...]:
    """Every score name of the judged items in `data` except the held-out scorer."""
    names: set[str] = set()
    for triplet in load_triplets(data):
        names |= set(triplet.scores or {})
    return tuple(sorted(names - {heldout_scorer}))


def _policy_result(result: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in result.items()}


def grpo_stage(ctx: StageContext) -> dict[str, Any]:
    """GRPO from the SFT policy against the ensemble (resumes from its checkpoints)."""
    config = replace(
        ctx.config.grpo,
        sft_dir=str(ctx.path(SFT_DIR)),
        reward_dir=str(ctx.path(REWARD_DIR)),
        out=str(ctx.path(GRPO_DIR)),
    )
    last: dict[str, float] = {}
    every = max(1, config.steps // 20)  # about 20 lines per run; log.jsonl has every step

    def on_log(line: dict[str, float]) -> None:
        last.update(line)
        step = int(line["step"])
        if step % every == 0 or step == config.steps:
            ctx.say(
                f"grpo step {step}/{config.steps}: reward {line['reward_mean']:+.3f}, "
                f"kl {line['kl']:.3f}, novel {line['novel_share']:.0%}"
            )

    auditor = _auditor(ctx, ctx.path(REWARD_DIR)) if config.audit_every > 0 else None
    policy = train_grpo(config, on_log=on_log, auditor=auditor)
    return {"policy": str(policy), "last_step": last}


def _auditor(ctx: StageContext, reward_dir: Path) -> JudgeAuditor:
    """The judge of GRPO's audits: the run's judge, the ensemble's training score."""
    return JudgeAuditor.for_ensemble(ctx.judge.judge, reward_dir, ctx.config.collect.negative)


def refine_stage(ctx: StageContext) -> dict[str, Any]:
    """The active-learning rounds (`pipeline.refine`), or nothing when disabled."""
    c = ctx.config
    if not c.refine.enabled:
        return {"enabled": False}
    paths = RefinePaths(
        collect=ctx.path(COLLECT),
        sft=ctx.path(SFT_DIR),
        grpo=ctx.path(GRPO_DIR),
        library=ctx.path(LIBRARY, WORKFLOWS),
        object_info=ctx.path(LIBRARY, OBJECT_INFO),
        out=ctx.path(REFINE),
        reward=ctx.path(REWARD_DIR),  # an input through GRPO_DIR, which trained against it
    )
    return refine(
        paths,
        c.refine,
        c.reward,
        c.grpo,
        c.sft,
        ctx.judge,
        ctx.catalog(),
        c.collect.negative,
        ctx.say,
        AuditJudge(ctx.judge_source, c.collect.negative),  # used only with audits on
        processes=c.jobs,
        sft_threads=c.sft_threads,
    )


def run_inputs(run: Path, comfygen_ft: bool = True) -> EvalInputs:
    """What a run's evaluation compares: its library, triplets, ensemble and policies
    (``flowforge evaluate --run RUN`` evaluates them again, e.g. with other settings). After
    refine rounds, the last round's refitted ensemble and GRPO policy, and their judge calls."""
    models = final_models(run)
    return EvalInputs(
        library=run / LIBRARY / WORKFLOWS,
        triplets=run / COLLECT,
        reward=models.reward,
        sft=run / SFT_DIR,
        start=None if models.start == run / SFT_DIR else models.start,
        comfygen_ft=run / COMFYGEN_FT if comfygen_ft else None,
        grpo=models.policy,
        grpo_data_calls=models.refine_judge_calls,
    )


def evaluate_stage(ctx: StageContext) -> dict[str, Any]:
    """Every method on the held-out prompts; the report in ``RUN/evaluate``."""
    inputs = run_inputs(ctx.run, ctx.config.comfygen_ft.enabled)
    c = ctx.config
    report = evaluate(
        c.evaluate, inputs, ctx.judge, ctx.path(EVALUATE), on_progress=ctx.say, processes=c.jobs
    )
    return {"report": str(report.out), "methods": len(report.summaries)}


def _sft_unread(config: RunConfig) -> frozenset[str]:
    """Random pairing does not read the ensemble; ensemble pairing does."""
    return frozenset() if config.sft.pairing == "ensemble" else frozenset({REWARD_DIR})


def _comfygen_ft_unread(config: RunConfig) -> frozenset[str]:
    """Disabled, it reads nothing; it reads the grid or the triplets (`data`), not both;
    without `from_sft` it starts from a new model, not SFT."""
    c = config.comfygen_ft
    if not c.enabled:
        return frozenset({COMFYGEN_DATA, COLLECT, SFT_DIR})
    other_data = COLLECT if c.data == "grid" else COMFYGEN_DATA
    return frozenset({other_data} if c.from_sft else {other_data, SFT_DIR})


def _comfygen_data_unread(config: RunConfig) -> frozenset[str]:
    """Without a grid to collect, it reads nothing."""
    c = config.comfygen_ft
    return frozenset() if c.enabled and c.data == "grid" else frozenset({LIBRARY})


def _refine_unread(config: RunConfig) -> frozenset[str]:
    """Disabled, the rounds read nothing."""
    if config.refine.enabled:
        return frozenset()
    return frozenset({LIBRARY, COLLECT, SFT_DIR, GRPO_DIR})


STAGES: tuple[Stage, ...] = (
    Stage(LIBRARY, ("library", "judge"), (), False, library_stage),
    Stage(COLLECT, ("collect", "judge"), (LIBRARY,), True, collect_stage),
    Stage(REWARD_DIR, ("reward",), (COLLECT,), False, reward_stage),
    Stage(SFT_DIR, ("sft",), (LIBRARY, REWARD_DIR), True, sft_stage, _sft_unread),
    Stage(
        COMFYGEN_DATA,
        # what the grid is made of; not `[collect]`'s batch size or tries (how, not what,
        # is judged) nor the baseline's training settings: a real judge's grid is hours
        (
            "comfygen_ft.enabled",
            "comfygen_ft.data",
            "comfygen_ft.grid",
            "collect.seeds",
            "collect.seed",
            "collect.negative",
            "judge",
        ),
        (LIBRARY,),
        True,  # its journal resumes, as the collection's
        comfygen_data_stage,
        _comfygen_data_unread,
    ),
    Stage(
        COMFYGEN_FT,
        ("comfygen_ft", "evaluate.heldout_scorer"),
        (COMFYGEN_DATA, COLLECT, SFT_DIR),  # one of the data (`data`); SFT with `from_sft`
        True,
        comfygen_ft_stage,
        _comfygen_ft_unread,
        yields=True,  # a baseline only the evaluation reads
    ),
    Stage(GRPO_DIR, ("grpo",), (SFT_DIR, REWARD_DIR), True, grpo_stage),
    Stage(
        REFINE,
        ("refine",),  # its reward, GRPO and negative settings reach it through GRPO_DIR
        (LIBRARY, COLLECT, SFT_DIR, GRPO_DIR),
        True,  # judged designs and each round's GRPO run resume (pipeline.refine)
        refine_stage,
        _refine_unread,
        ("train", "validation"),  # the judge's choice among the last round's policies
        rechecked=(
            "refine.choose_prompts",
            "refine.choose_temperature",
            *(f"refine.{name}" for name in REPAIRED_SFT_SETTINGS),
        ),
    ),
    Stage(
        EVALUATE,
        ("evaluate", "judge"),
        (LIBRARY, COLLECT, REWARD_DIR, SFT_DIR, COMFYGEN_FT, GRPO_DIR, REFINE),
        False,
        evaluate_stage,
        splits=("train", "validation", "heldout"),  # the w choice reads validation prompts
    ),
)
