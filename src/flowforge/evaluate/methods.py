"""Which designers an evaluation compares, built from its inputs (docs/evaluation.md).

In report order: (1) the default single workflow, (2) the best fixed library workflow,
(3) retrieval over similar train prompts (ComfyGen-IC analogue), (4) ComfyGen-FT,
(5) SFT alone, (6) GRPO, (7) GRPO with guidance for each w, then with w chosen by the judge
on train prompts, (8) best-of-N by predicted reward; then the diagnostics when asked (the
ensemble's own choices from the library: per prompt, and one fixed workflow) and the library
oracle for reference.
A method whose input is missing is listed in `not_run` with the reason, never silently left
out.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.prompts import fixed_sample, load_prompts
from ..policy.directory import read_run_config
from ..reward.ensemble import RewardEnsemble
from ..reward.target import TrainingScore
from ..workflow.library import load_seed_library
from ..workflow.schema import Catalog
from ..workflow.textform import to_text
from .baselines import RetrievalTable, ScoredRow, best_fixed
from .config import EvalConfig, EvalError, EvalInputs
from .designers import (
    BestOfNDesigner,
    Designer,
    EnsembleFixedDesigner,
    EnsemblePickDesigner,
    FixedDesigner,
    OracleDesigner,
    PolicyDesigner,
    RetrievalDesigner,
    Sampler,
    SamplingSettings,
    SelectedWeightDesigner,
    TextEncoder,
    WeightChoice,
    load_for_design,
)
from .judging import JudgeSession

#: The baselines every method's win rate is reported against (issue 6: methods 1-5).
BASELINES = ("default", "best_fixed", "retrieval", "comfygen_ft", "sft")
#: The policy GRPO started from when that is not the SFT baseline (`EvalInputs.start`).
START, START_LABEL = "grpo_start", "SFT re-paired by the refitted ensemble (GRPO's start)"
#: Train prompts the ensemble's fixed choice averages over (library x this many predictions).
ENSEMBLE_FIXED_PROMPTS = 200


@dataclass(frozen=True)
class Method:
    """A designer with its report name, label and the training judgements behind it."""

    name: str
    label: str
    designer: Designer
    data_calls: int


@dataclass(frozen=True)
class MethodSources:
    """What the designers are built from (read once by the evaluation)."""

    config: EvalConfig
    inputs: EvalInputs
    catalog: Catalog
    rows: list[ScoredRow]  # scored train triplets with their training scores
    data_calls: int  # judgements in the triplets (errors included)
    library: list[str]  # canonical text forms of the library
    ensemble: RewardEnsemble | None
    training_score: TrainingScore
    session: JudgeSession
    encoder: TextEncoder


def guidance_name(weight: float) -> str:
    return f"grpo_w{weight:g}"


def default_text(name: str, catalog: Catalog) -> str:
    """The text form of a shipped seed workflow."""
    seeds = load_seed_library()
    if name not in seeds:
        raise EvalError(f"default_workflow {name!r} is not a shipped seed; one of {sorted(seeds)}")
    return to_text(seeds[name], catalog)[0]


def ensemble_fixed_prompts(
    rows: Sequence[ScoredRow], count: int = ENSEMBLE_FIXED_PROMPTS
) -> list[str]:
    """The train prompts over which the ensemble's fixed choice averages: the first `count`
    distinct prompts of the triplets in sha256 order (a fixed sample, as the evaluation's)."""
    distinct = {row.prompt for row in rows}
    return sorted(distinct, key=lambda p: hashlib.sha256(p.encode("utf-8")).hexdigest())[:count]


def ensemble_paired(policy: Path) -> bool:
    """Whether an SFT policy learned from ensemble-preferred pairs: it then owes the judged
    data the ensemble was trained on, as GRPO does (random pairs need no judging)."""
    config = (read_run_config(policy) or {}).get("config", {})
    return bool(config.get("pairing") == "ensemble")


def trained_judgements(policy: Path, default: int) -> int:
    """The judged items a score-conditioned (ComfyGen-FT) policy learned from, as its run
    record counts them (``data.triplets``, failed renders included): its own ComfyGen-shaped
    grid (``[comfygen_ft] data``) or the run's triplets. `default` for a record without."""
    data = (read_run_config(policy) or {}).get("data") or {}
    return int(data.get("triplets", default))


def audit_calls(policy: Path | None) -> int:
    """Judge calls a GRPO run spent on its audits (0 without audits, or for another policy):
    judgements its designs learned from, on top of the triplets behind the ensemble."""
    if policy is None:
        return 0
    result = (read_run_config(policy) or {}).get("result") or {}
    return int(result.get("audit_calls", 0))


def build_methods(
    src: MethodSources, choice: WeightChoice | None = None
) -> tuple[list[Method], dict[str, str]]:
    """The methods to run, in report order, and the ones not run with the reason.

    `choice` is a guidance weight already chosen for these sources (a helper process of the
    evaluation builds the methods again: `evaluate.designing`); None: the judge chooses."""
    c, n = src.config, src.data_calls
    fixed = best_fixed(src.rows, c.min_prompts)
    methods = [
        Method(
            "default",
            f"default ({c.default_workflow})",
            FixedDesigner(default_text(c.default_workflow, src.catalog)),
            0,
        ),
        Method("best_fixed", "best fixed workflow", FixedDesigner(fixed.text), n),
        Method(
            "retrieval",
            f"retrieval (IC-like, k={c.retrieval_k})",
            RetrievalDesigner(RetrievalTable(src.rows), src.encoder, c.retrieval_k),
            n,
        ),
    ]
    not_run: dict[str, str] = {}
    methods += _policy_methods(src, not_run, choice)
    if c.ensemble_pick and src.ensemble is not None:
        pick = EnsemblePickDesigner(src.library, src.ensemble)
        methods.append(
            Method("ensemble_pick", "ensemble's pick from the library (reference)", pick, n)
        )
        own = EnsembleFixedDesigner(src.library, src.ensemble, ensemble_fixed_prompts(src.rows))
        methods.append(
            Method("ensemble_fixed", "ensemble's best fixed workflow (reference)", own, n)
        )
    elif c.ensemble_pick:
        not_run["ensemble_pick"] = not_run["ensemble_fixed"] = "needs a reward ensemble"
    if c.oracle:
        oracle = OracleDesigner(
            src.library, src.session.score, src.session.item, src.training_score, c.oracle_seeds
        )
        methods.append(Method("oracle", "library oracle (reference)", oracle, 0))
    else:
        not_run["oracle"] = "oracle = false in the evaluation config"
    return methods, not_run


def _policy_methods(
    src: MethodSources, not_run: dict[str, str], choice: WeightChoice | None
) -> list[Method]:
    c, inputs, n = src.config, src.inputs, src.data_calls
    # what GRPO and everything built on it learned from: the triplets, a refine round, audits
    g = n + inputs.grpo_data_calls + audit_calls(inputs.grpo)
    settings = SamplingSettings(
        c.temperature, c.constrained, c.max_new_tokens, c.batch_size, c.negative
    )

    def designer(path: Path) -> PolicyDesigner:
        return PolicyDesigner(load_for_design(path), src.catalog, settings)

    methods: list[Method] = []
    policies: dict[str, PolicyDesigner] = {}
    for name, label, path, calls in (
        (
            "comfygen_ft",
            "ComfyGen-FT (score-conditioned SFT)",
            inputs.comfygen_ft,
            n if inputs.comfygen_ft is None else trained_judgements(inputs.comfygen_ft, n),
        ),
        ("sft", "SFT", inputs.sft, n if inputs.sft and ensemble_paired(inputs.sft) else 0),
        (START, START_LABEL, inputs.start, n + inputs.grpo_data_calls),  # no GRPO audit
        ("grpo", "GRPO", inputs.grpo, g),
    ):
        if path is None:
            if name != START:  # only a run whose GRPO did not start from `sft` has one
                not_run[name] = f"no {name} policy given"
            continue
        policies[name] = designer(path)
        methods.append(Method(name, label, policies[name], calls))
    guided = _guided(src, policies, settings, not_run, g)
    methods += guided
    selected = _selected(src, guided, not_run, g, choice)
    if selected is not None:
        methods.append(selected)
    sources: dict[str, tuple[Sampler, int, str]] = {  # best-of-N ranks with the ensemble
        name: (policy, g if name == "grpo" else n, name) for name, policy in policies.items()
    }
    if selected is not None and isinstance(selected.designer, SelectedWeightDesigner):
        w = selected.designer.choice.weight
        sources["selected"] = (selected.designer, selected.data_calls, f"GRPO + guidance w={w:g}")
    source = sources.get(c.best_of_source)
    best_name = f"best_of_{c.best_of_n}"
    if source is None or src.ensemble is None:
        missing = "a reward ensemble" if source is not None else f"a {c.best_of_source} policy"
        not_run[best_name] = f"needs {missing}"
    else:
        sampler, calls, what = source
        label = f"best-of-{c.best_of_n} by predicted reward ({what})"
        best = BestOfNDesigner(sampler, src.ensemble, c.best_of_n)
        methods.append(Method(best_name, label, best, calls))  # the ensemble learned from n
    return methods


def _selected(
    src: MethodSources,
    guided: list[Method],
    not_run: dict[str, str],
    data_calls: int,
    choice: WeightChoice | None,
) -> Method | None:
    """GRPO + guidance at the w the judge prefers on validation prompts
    (`SelectedWeightDesigner`)."""
    c = src.config
    if c.select_prompts == 0:
        not_run["grpo_wsel"] = "select_prompts = 0 in the evaluation config"
        return None
    if not guided:
        not_run["grpo_wsel"] = "guidance needs both the GRPO and the SFT policy"
        return None
    candidates = {}
    for method in guided:
        if isinstance(method.designer, PolicyDesigner) and method.designer.weight is not None:
            candidates[method.designer.weight] = method.designer
    if choice is not None:
        designer = SelectedWeightDesigner(candidates, choice)
    else:
        prompts = [p.text for p in fixed_sample(load_prompts("validation"), c.select_prompts)]
        designer = SelectedWeightDesigner.judged(
            candidates,
            prompts,
            c.select_seeds,
            src.session.score,
            src.session.item,
            src.training_score,
        )
        choice = designer.choice
    label = (
        f"GRPO + guidance, w chosen on {choice.prompts} validation prompts (w={choice.weight:g})"
    )
    return Method("grpo_wsel", label, designer, data_calls + choice.judge_calls)


def _guided(
    src: MethodSources,
    policies: dict[str, PolicyDesigner],
    settings: SamplingSettings,
    not_run: dict[str, str],
    data_calls: int,
) -> list[Method]:
    grpo, sft = policies.get("grpo"), policies.get(START, policies.get("sft"))
    if grpo is None or sft is None:
        for weight in src.config.guidance_weights:
            not_run[guidance_name(weight)] = "guidance needs both the GRPO and the SFT policy"
        return []
    return [
        Method(
            guidance_name(weight),
            f"GRPO + guidance w={weight:g}" + (" (= GRPO)" if weight == 1 else ""),
            PolicyDesigner(
                grpo.policy,
                src.catalog,
                settings,
                reference=sft.policy.model,
                weight=weight,
                grammar=grpo.grammar if settings.constrained else None,
            ),
            data_calls,
        )
        for weight in src.config.guidance_weights
    ]
