"""The judge's choice among the last refine round's GRPO policies (``[refine] policies``).

Each GRPO seed of a round optimises the same refitted ensemble, and they can end far apart
(docs/benchmarks.md, "Two GRPO seeds per refine round": 1.21 against 0.61 in training score
on world 0). The ensemble rates both highly, which is why the judge chooses: on the
validation prompts (`flowforge.data.prompts`), which no stage trained on, so the choice
sees what the evaluation's held-out prompts will show (they stay unseen). It judged train
prompts until session 27, and kept a policy scoring 1.14 there and 0.00 on held-out
PartiPrompts: GRPO and the rounds' refits had learnt those very prompts.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data.prompts import Prompt, fixed_sample, load_prompts
from ..evaluate.designers import SamplingSettings, derive_seed, mean_filling_worst
from ..files import write_text_atomic
from ..policy.audit import JudgeAuditor
from .config import RefineStageConfig
from .draws import PROMPT_CHUNK, Draw, RoundTools, draw
from .layout import REWARD_DIR

CHOICE = "choice.json"  # round-N/choice.json of the last round: the judge's choice


def chosen(
    here: Path,
    policies: Sequence[Path],
    config: RefineStageConfig,
    tools: RoundTools,
) -> dict[str, Any]:
    """The judge's choice among the last round's policies (`choose`), read back when an
    earlier call made it on the same prompts at the same temperature (``round-N/choice.json``,
    written atomically); made again when `choose_prompts` or `choose_temperature` changed
    since (the runner resumes the stage for those, `Stage.rechecked`)."""
    path = here / CHOICE
    say = tools.say
    picked = choice_prompts(config)
    if path.is_file():
        recorded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if recorded.get("prompt_ids") == [p.id for p in picked] and recorded.get("temperature") == (
            config.choose_temperature
        ):
            return recorded
        say("refine: the choice's prompts or temperature changed: judging the policies again")
    made = choose(policies, picked, config, here / REWARD_DIR, tools)
    scores = ", ".join(f"{name} {value:.3f}" for name, value in made["scores"].items())
    say(
        f"refine: judged the last round's policies on {made['prompts']} validation prompts: "
        f"{scores}"
    )
    say(f"refine: keeping {made['chosen']}")
    write_text_atomic(path, json.dumps(made, indent=1) + "\n")
    return made


def choice_prompts(config: RefineStageConfig) -> list[Prompt]:
    """The validation prompts the choice judges: the first `config.choose_prompts` in
    sha256(id) order, all when None."""
    return fixed_sample(load_prompts("validation"), config.choose_prompts)


def choose(
    policies: Sequence[Path],
    picked: Sequence[Prompt],
    config: RefineStageConfig,
    reward_dir: Path,
    tools: RoundTools,
) -> dict[str, Any]:
    """Which of `policies` designs best, by the judge: each designs once for the same
    validation prompts `picked` (`choice_prompts`: no stage trained on them, and the
    evaluation's held-out prompts are never looked at) at
    `config.choose_temperature` with the same sampling and render seeds, each design judged
    once; the best mean training score (the ensemble in `reward_dir` defines it) wins, ties
    to the earlier policy. A design that cannot be judged (invalid, or a judge error) counts
    as the worst score seen.

    Why the judge and not the ensemble: the runs differ most where one climbed into designs
    every member overrates (docs/evaluation.md), which is exactly what the ensemble cannot
    see. Why validation prompts: see the module docstring."""
    prompts = [p.text for p in picked]
    design_seeds = [derive_seed("refine-choose", config.seed, p.id) for p in picked]
    render_seeds = [derive_seed("refine-choose-render", config.seed, p.id) for p in picked]
    auditor = JudgeAuditor.for_ensemble(tools.judge.judge, reward_dir, tools.negative)
    settings = SamplingSettings(
        config.choose_temperature, True, tools.max_new_tokens, PROMPT_CHUNK, tools.negative
    )
    chunks = range(0, len(prompts), PROMPT_CHUNK)
    draws = [
        Draw(
            policy,
            tuple(prompts[start : start + PROMPT_CHUNK]),
            tuple(design_seeds[start : start + PROMPT_CHUNK]),
            1,
        )
        for policy in policies
        for start in chunks
    ]
    drawn = draw(draws, tools.catalog, settings, tools.processes)
    scores, calls = {}, 0
    for place, policy in enumerate(policies):
        mine = drawn[place * len(chunks) : (place + 1) * len(chunks)]
        samples = [sample for found in mine for sample in found]
        valid = [k for k, s in enumerate(samples) if s.valid and s.workflow is not None]
        judged = auditor.judge(
            [prompts[k] for k in valid],
            [samples[k].text for k in valid],
            [render_seeds[k] for k in valid],
        )
        calls += len(valid)
        per_prompt: list[float | None] = [None] * len(prompts)
        for k, value in zip(valid, judged, strict=True):
            per_prompt[k] = value
        scores[policy.name] = mean_filling_worst(per_prompt)
    chosen = max(scores, key=lambda name: scores[name])  # max keeps the first of equals
    return {
        "prompts": len(prompts),
        "prompt_ids": [p.id for p in picked],  # validation prompts (checked by a test)
        "judge_calls": calls,
        "temperature": config.choose_temperature,
        "scores": scores,
        "chosen": chosen,
    }
