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

Runtimes (`load_designer`'s ``runtime``): a Llama policy (the embedded default, and the
pretrained SmolLM2 path) is run by ``numpy_llama`` with ``numpy_sampler``, so a design
request imports neither torch nor transformers (~4.7 s of a cold command otherwise,
docs/benchmarks.md "design latency"); any other model, or extra logits processors, runs on
transformers (``sample.py``). Both decode the same distribution (the numpy forward pass is
held to transformers' logits by a test), with different random draws for the same seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flowforge.workflow.anatomy import prune
from flowforge.workflow.api import to_api
from flowforge.workflow.graph import Workflow
from flowforge.workflow.schema import Catalog, default_catalog
from flowforge.workflow.ui import to_ui

from .directory import check_embedding_rows, design_score_bin, load_policy_tokenizer
from .grammar import TextFormGrammar
from .numpy_llama import NumpyLlama, Runtime, UnsupportedModel
from .numpy_sampler import sample_candidates
from .sampled import DEFAULT_MAX_NEW_TOKENS, Sample, parse_request
from .tokenizer import PolicyTokenizer, tokenizer_mismatch

if TYPE_CHECKING:  # torch and transformers load only for the transformers runtime
    from transformers import LogitsProcessor, PreTrainedModel

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
    text: str  # text form (placeholders) of the chosen workflow, as the policy wrote it
    workflow: Workflow  # with prompt, negative and seed filled in; nodes no output reads dropped
    api: dict[str, Any]  # ComfyUI API JSON, ready for POST /prompt
    ui: dict[str, Any] | None  # ComfyUI editor JSON, when asked for
    candidates: tuple[Candidate, ...]
    seconds: float  # wall time of this request (model load included for `design`)


def processors_for(
    tokenizer: PolicyTokenizer, reference_dir: Path | None, guidance: float | None
) -> list[LogitsProcessor]:
    """The transformers decoding processors of a request: guidance towards this policy from
    the reference policy in `reference_dir` with weight `guidance`, or none. (The schema
    constraint comes from the `Designer`'s grammar and always runs last.)"""
    from .guidance import GuidanceError, load_guidance

    _check_guidance(reference_dir, guidance)
    if reference_dir is None or guidance is None:
        return []
    try:
        return [load_guidance(reference_dir, guidance, tokenizer)]
    except GuidanceError as err:
        raise DesignError(str(err)) from None


def _check_guidance(reference_dir: Path | None, guidance: float | None) -> None:
    if (reference_dir is None) != (guidance is None):
        raise DesignError("guided decoding needs both a reference policy and a guidance weight")
    if guidance is not None and not math.isfinite(guidance):
        raise DesignError(f"guidance weight must be finite, got {guidance}")


class CandidateSampler(Protocol):
    """Draws `n` candidate workflows for one prompt (one per runtime, module docstring)."""

    def __call__(
        self, prompt: str, *, n: int, temperature: float, seed: int, negative: str
    ) -> list[Sample]: ...


@dataclass(frozen=True)
class TransformersSampler:
    """Candidates from a transformers model through ``generate`` and logits processors."""

    model: PreTrainedModel
    tokenizer: PolicyTokenizer
    catalog: Catalog
    score_bin: int | None
    processors: tuple[LogitsProcessor, ...]
    grammar: TextFormGrammar | None

    def __call__(
        self, prompt: str, *, n: int, temperature: float, seed: int, negative: str
    ) -> list[Sample]:
        from .sample import sample_workflows

        return sample_workflows(
            self.model,
            self.tokenizer,
            [prompt],
            n=n,
            temperature=temperature,
            prompt_seeds=[seed],  # the evaluation's draws for this prompt and seed
            logits_processors=list(self.processors),
            max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
            score_bin=self.score_bin,
            negative=negative,
            catalog=self.catalog,
            grammar=self.grammar,
        )


@dataclass(frozen=True)
class NumpySampler:
    """Candidates from the numpy Llama (``numpy_sampler``); guided with weight `guidance`
    when `model` holds the policy and its reference as two members."""

    model: NumpyLlama
    tokenizer: PolicyTokenizer
    catalog: Catalog
    score_bin: int | None
    grammar: TextFormGrammar | None
    guidance: float | None = None

    def __call__(
        self, prompt: str, *, n: int, temperature: float, seed: int, negative: str
    ) -> list[Sample]:
        return sample_candidates(
            self.model,
            self.tokenizer,
            prompt,
            n,
            temperature=temperature,
            seed=seed,
            max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
            catalog=self.catalog,
            grammar=self.grammar,
            guidance=self.guidance,
            score_bin=self.score_bin,
            negative=negative,
        )


@dataclass(frozen=True)
class Designer:
    """A loaded policy that answers design requests (load once, design many)."""

    sampler: CandidateSampler
    tokenizer: PolicyTokenizer
    catalog: Catalog
    score_bin: int | None = None
    #: The schema constraint's grammar (None: unconstrained sampling).
    grammar: TextFormGrammar | None = None
    #: Which runtime samples: "numpy" or "transformers".
    runtime: str = "transformers"

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
        _check_prompt(prompt)
        drawn = self.sampler(
            prompt, n=samples, temperature=temperature, seed=seed, negative=negative
        )
        candidates, best = _rank(prompt, drawn, reward)
        if best is None or best.workflow is None:
            shown = "; ".join(sorted({c.error or "" for c in candidates})[:3])
            raise DesignError(
                f"none of {samples} sampled workflows is valid ({shown}); "
                "try --samples with a larger N or another seed"
            )
        return _handed_over(
            prompt, seed, best.text, best.workflow, self.catalog, ui, candidates, start
        )


def fixed_design(
    prompt: str,
    text: str,
    *,
    catalog: Catalog,
    seed: int = 0,
    negative: str = "",
    ui: bool = False,
) -> DesignResult:
    """The workflow of text form `text` for this request, handed over as `design` hands over
    a sampled one (unread nodes pruned; API and, with `ui`, editor JSON): what ``flowforge
    design --run RUN`` gives when RUN's hand-over guard found its best fixed workflow better
    than its policy (`flowforge.evaluate.handover`). DesignError when it does not validate
    against `catalog`."""
    start = time.perf_counter()
    _check_prompt(prompt)
    workflow, error, valid = parse_request(text, prompt, negative, seed, catalog)
    if not valid or workflow is None:
        raise DesignError(f"the run's best fixed workflow does not validate here: {error}")
    candidates = (Candidate(text, True, None, None),)
    return _handed_over(prompt, seed, text, workflow, catalog, ui, candidates, start)


def _check_prompt(prompt: str) -> None:
    """An empty prompt is refused: the workflow would render with no text to follow (an
    unconditional image), which no user asking for a design means."""
    if not prompt.strip():
        raise DesignError("the prompt is empty: say what the image should show")


def _handed_over(
    prompt: str,
    seed: int,
    text: str,
    workflow: Workflow,
    catalog: Catalog,
    ui: bool,
    candidates: tuple[Candidate, ...],
    start: float,
) -> DesignResult:
    """The chosen workflow in every form a user gets. A policy may write nodes nothing reads
    (a second EmptyLatentImage, an unused loader); ComfyUI never runs them and `flowforge
    validate` warns about them, so the workflow handed over leaves them out. The text stays
    what was written. `start`: when the request began (``time.perf_counter``)."""
    delivered = prune(workflow, catalog)
    return DesignResult(
        prompt=prompt,
        seed=seed,
        text=text,
        workflow=delivered,
        api=to_api(delivered),
        ui=to_ui(delivered, catalog) if ui else None,
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
    runtime: Runtime = "auto",
) -> Designer:
    """Load a policy directory for designing (PolicyLoadError names what is missing).

    `extra_processors` (transformers logits processors) run after guidance and before the
    schema constraint; they need the transformers runtime. `runtime` picks the model
    runtime (module docstring); ``numpy`` fails with the reason when it cannot run a model.
    """
    folder = Path(policy_dir)
    reference = Path(reference_dir) if reference_dir is not None else None
    _check_guidance(reference, guidance)
    catalog = default_catalog() if catalog is None else catalog
    if runtime not in ("auto", "numpy", "transformers"):
        raise DesignError(f"runtime must be auto, numpy or transformers, not {runtime!r}")
    if extra_processors and runtime == "numpy":
        raise DesignError("extra logits processors need the transformers runtime")
    if runtime != "transformers" and not extra_processors:
        try:
            return _numpy_designer(folder, catalog, reference, guidance, constrained)
        except UnsupportedModel as err:
            if runtime == "numpy":
                raise DesignError(f"{folder}: the numpy runtime cannot run it ({err})") from None
    return _transformers_designer(
        folder, catalog, reference, guidance, extra_processors, constrained
    )


def _load_numpy(folder: Path) -> tuple[NumpyLlama, PolicyTokenizer]:
    tokenizer = load_policy_tokenizer(folder)
    model = NumpyLlama.load(folder)
    check_embedding_rows(folder, model.vocab_size, tokenizer)
    return model, tokenizer


def _numpy_designer(
    folder: Path,
    catalog: Catalog,
    reference_dir: Path | None,
    guidance: float | None,
    constrained: bool,
) -> Designer:
    model, tokenizer = _load_numpy(folder)
    if reference_dir is not None:  # with a guidance weight (`_check_guidance`)
        reference, reference_tokenizer = _load_numpy(reference_dir)
        mismatch = tokenizer_mismatch(reference_tokenizer, tokenizer, reference_dir)
        if mismatch is not None:
            raise DesignError(mismatch)
        if reference.vocab_size != model.vocab_size:
            raise DesignError(
                f"the reference has {reference.vocab_size} tokens and the policy "
                f"{model.vocab_size}; guidance needs two models of one tokenizer"
            )
        model = NumpyLlama.stack([model, reference])
    score_bin = design_score_bin(folder, tokenizer)
    grammar = TextFormGrammar(tokenizer, catalog) if constrained else None
    sampler = NumpySampler(model, tokenizer, catalog, score_bin, grammar, guidance)
    return Designer(sampler, tokenizer, catalog, score_bin, grammar, "numpy")


def _transformers_designer(
    folder: Path,
    catalog: Catalog,
    reference_dir: Path | None,
    guidance: float | None,
    extra_processors: Sequence[LogitsProcessor],
    constrained: bool,
) -> Designer:
    from .model import load_policy

    model, tokenizer = load_policy(folder)
    score_bin = design_score_bin(folder, tokenizer)
    processors = (*processors_for(tokenizer, reference_dir, guidance), *extra_processors)
    grammar = TextFormGrammar(tokenizer, catalog) if constrained else None
    sampler = TransformersSampler(model, tokenizer, catalog, score_bin, processors, grammar)
    return Designer(sampler, tokenizer, catalog, score_bin, grammar, "transformers")


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
    runtime: Runtime = "auto",
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
        runtime=runtime,
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
