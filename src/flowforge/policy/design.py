"""Design one workflow for one request: ``flowforge design "PROMPT" --policy DIR``.

The policy samples `samples` candidate workflows for the prompt; the answer is ComfyUI API
JSON with the user's prompt, negative prompt and seed written in (and UI JSON on request),
ready to queue. With a reward model, candidates are ranked by predicted reward and the best
valid one returned: test-time scaling with no rendering. Without one, the first valid
candidate is returned (extra samples then only guard against an invalid one).

A ComfyGen-FT policy (``flowforge_run.json`` kind ``comfygen_ft``) is asked for the top
score bin, like ComfyGen's high target score.

Decoding (docs/policy.md, "Decoding"): candidates are sampled through the schema constraint
(a ``TextFormGrammar`` built once per `Designer`), so every finished candidate validates;
``constrained=False`` samples the policy alone. With ``reference_dir`` and ``guidance`` w,
decoding is guided between the reference (SFT) policy and this one,
``logits_ref + w * (logits_policy - logits_ref)`` (`processors_for`); the constraint runs
after guidance and after any ``extra_processors``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from transformers import LogitsProcessor, PreTrainedModel

from flowforge.workflow.api import to_api
from flowforge.workflow.graph import Workflow
from flowforge.workflow.schema import Catalog, default_catalog
from flowforge.workflow.ui import to_ui

from .grammar import TextFormGrammar
from .guidance import GuidanceError, load_guidance
from .model import load_policy, read_run_config
from .sample import Sample, sample_workflows
from .tokenizer import PolicyTokenizer

#: Sampling temperature of a design request. Measured on the 50K-pair SFT policy over 500
#: held-out prompts, unconstrained: 72.8% valid at 1.0, 95.8% at 0.7 (every checkpoint, LoRA
#: and structural option of the library still used, 460 distinct workflows), 99.2% at 0.5.
DESIGN_TEMPERATURE = 0.7


class DesignError(ValueError):
    """A request that cannot be answered; the message says why and what to change."""


class RewardScorer(Protocol):
    """Predicts the quality of (prompt, workflow text form) pairs; higher is better.

    The reward ensemble (``flowforge.reward``) is one; any object with this method works.
    """

    def predict(self, prompts: list[str], workflows: list[str]) -> list[float]: ...


@dataclass(frozen=True)
class Candidate:
    """One sampled workflow and, with a reward model, its predicted reward."""

    text: str
    valid: bool
    error: str | None
    predicted_reward: float | None


@dataclass(frozen=True)
class DesignResult:
    """The chosen workflow in every form, and the candidates it was chosen from."""

    prompt: str
    seed: int
    text: str  # text form (placeholders) of the chosen workflow
    workflow: Workflow  # with prompt, negative and seed filled in
    api: dict[str, Any]  # ComfyUI API JSON, ready for POST /prompt
    ui: dict[str, Any] | None  # ComfyUI editor JSON, when asked for
    candidates: tuple[Candidate, ...]
    seconds: float  # wall time of this request (model load included for `design`)


def processors_for(
    tokenizer: PolicyTokenizer, reference_dir: Path | None, guidance: float | None
) -> list[LogitsProcessor]:
    """The decoding processors of a request: guidance towards this policy from the reference
    policy in `reference_dir` with weight `guidance`, or none. (The schema constraint comes
    from the `Designer`'s grammar and always runs last.)"""
    if reference_dir is None and guidance is None:
        return []
    if reference_dir is None or guidance is None:
        raise DesignError("guided decoding needs both a reference policy and a guidance weight")
    try:
        return [load_guidance(reference_dir, guidance, tokenizer)]
    except GuidanceError as err:
        raise DesignError(str(err)) from None


@dataclass(frozen=True)
class Designer:
    """A loaded policy that answers design requests (load once, design many)."""

    model: PreTrainedModel
    tokenizer: PolicyTokenizer
    catalog: Catalog
    score_bin: int | None = None
    processors: tuple[LogitsProcessor, ...] = field(default=())
    #: The schema constraint's grammar (None: unconstrained sampling).
    grammar: TextFormGrammar | None = None

    def design(
        self,
        prompt: str,
        *,
        samples: int = 1,
        seed: int = 0,
        negative: str = "",
        temperature: float = DESIGN_TEMPERATURE,
        reward: RewardScorer | None = None,
        ui: bool = False,
    ) -> DesignResult:
        start = time.perf_counter()
        drawn = sample_workflows(
            self.model,
            self.tokenizer,
            [prompt],
            n=samples,
            temperature=temperature,
            seed=seed,
            logits_processors=list(self.processors),
            score_bin=self.score_bin,
            negative=negative,
            catalog=self.catalog,
            grammar=self.grammar,
        )
        candidates, best = _rank(prompt, drawn, reward)
        if best is None or best.workflow is None:
            shown = "; ".join(sorted({c.error or "" for c in candidates})[:3])
            raise DesignError(
                f"none of {samples} sampled workflows is valid ({shown}); "
                "try --samples with a larger N or another seed"
            )
        return DesignResult(
            prompt=prompt,
            seed=seed,
            text=best.text,
            workflow=best.workflow,
            api=to_api(best.workflow),
            ui=to_ui(best.workflow, self.catalog) if ui else None,
            candidates=candidates,
            seconds=time.perf_counter() - start,
        )


def _rank(
    prompt: str, drawn: list[Sample], reward: RewardScorer | None
) -> tuple[tuple[Candidate, ...], Sample | None]:
    """Candidates in sample order and the chosen sample (best predicted reward if any)."""
    valid = [s for s in drawn if s.valid]
    rewards: dict[int, float] = {}
    if reward is not None and valid:
        predicted = reward.predict([prompt] * len(valid), [s.text for s in valid])
        if len(predicted) != len(valid):
            raise DesignError(f"the reward model returned {len(predicted)} scores for {len(valid)}")
        rewards = {id(s): float(r) for s, r in zip(valid, predicted, strict=True)}
    candidates = tuple(Candidate(s.text, s.valid, s.error, rewards.get(id(s))) for s in drawn)
    if not valid:
        return candidates, None
    best = max(valid, key=lambda s: rewards.get(id(s), 0.0)) if rewards else valid[0]
    return candidates, best


def load_designer(
    policy_dir: Path | str,
    *,
    catalog: Catalog | None = None,
    reference_dir: Path | str | None = None,
    guidance: float | None = None,
    extra_processors: Sequence[LogitsProcessor] = (),
    constrained: bool = True,
) -> Designer:
    """Load a policy directory for designing (PolicyLoadError names what is missing).

    `extra_processors` run after guidance and before the schema constraint.
    """
    model, tokenizer = load_policy(policy_dir)
    catalog = default_catalog() if catalog is None else catalog
    run = read_run_config(policy_dir) or {}
    top_bin = tokenizer.vocab.config.score_bins - 1 if run.get("kind") == "comfygen_ft" else None
    reference = Path(reference_dir) if reference_dir is not None else None
    processors = processors_for(tokenizer, reference, guidance)
    grammar = TextFormGrammar(tokenizer, catalog) if constrained else None
    return Designer(model, tokenizer, catalog, top_bin, (*processors, *extra_processors), grammar)


def design(
    prompt: str,
    policy_dir: Path | str,
    *,
    samples: int = 1,
    seed: int = 0,
    catalog: Catalog | None = None,
    reference_dir: Path | str | None = None,
    guidance: float | None = None,
    reward: RewardScorer | None = None,
    negative: str = "",
    temperature: float = DESIGN_TEMPERATURE,
    ui: bool = False,
    constrained: bool = True,
) -> DesignResult:
    """Load the policy and design one workflow (see the module docstring); `seconds`
    includes loading the policy."""
    start = time.perf_counter()
    designer = load_designer(
        policy_dir,
        catalog=catalog,
        reference_dir=reference_dir,
        guidance=guidance,
        constrained=constrained,
    )
    result = designer.design(
        prompt,
        samples=samples,
        seed=seed,
        negative=negative,
        temperature=temperature,
        reward=reward,
        ui=ui,
    )
    return replace(result, seconds=time.perf_counter() - start)
