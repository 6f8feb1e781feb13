"""GRPO (phase 2): optimise the SFT policy against the frozen reward ensemble.

``train_grpo(GRPORunConfig)`` samples a group of workflows per training prompt, scores them
with the reward ensemble (no rendering), and moves the policy towards the workflows that
beat their group, with a KL tether to the SFT model. docs/grpo.md has every choice and why.

The story of one run, top to bottom:

1. **The run directory** ``out`` (``checkpoint.py``): created with ``flowforge_run.json``
   (the resolved config), or resumed from its newest checkpoint (same config required).
2. **What a run reads, once** (`_load`): the policy (the SFT model, or the checkpoint) and a
   frozen copy of the SFT model as the KL reference; the reward ensemble; the catalog the SFT
   run used; the design hashes of the library the SFT run saw (for `novel_share`); the
   train split of the prompts (never a held-out prompt).
3. **One step** (`grpo_step`):
   a. `prompts_per_step` prompts, in epochs of a seeded shuffle (`step_prompts`);
   b. `group_size` samples per prompt (``rollout.py``), through the schema constraint
      (every finished sample validates), seeded from (seed, step) (`step_seed`);
   c. rewards: ``mean - kappa * std`` over the ensemble members for a valid workflow, the
      floor `invalid_reward` for anything else (`ensemble_reward`); with `prompt_contrast`
      less that times the design's reward on the step's other prompts (`elsewhere_rewards`);
   d. advantages: rewards normalised within each group (`group_advantages`);
   e. the update (`_update`): the clipped surrogate on the log-probabilities of the
      distribution the tokens were sampled from (constraint mask and temperature applied)
      plus ``beta`` times the k3 estimate of the KL to the reference (`grpo_token_loss`),
      averaged over every completion token of the batch; AdamW, gradient clipping;
   f. a line of ``log.jsonl``: step, rewards, KL, validity, diversity, novelty, wall time.
4. **Checkpoints** every `save_every` steps and after the last. Every random draw of step t
   comes from (seed, t) and nothing else, so a run resumed after a kill repeats exactly what
   the uninterrupted run would have done (tested bit for bit).
5. **The policy directory**: ``out`` itself gets the model (safetensors), the tokenizer and
   the finished run record, like an SFT run, so whatever loads a policy loads this one.

Not TRL's GRPOTrainer: it samples with ``model.generate`` and no hook for a logits
processor (the schema constraint), and computes the ratio and the KL from the unconstrained
softmax, not from the masked distribution the samples come from (docs/grpo.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray
from transformers import PreTrainedModel

from flowforge.data.prompts import load_prompts
from flowforge.reward.ensemble import RewardPrediction, load_ensemble
from flowforge.reward.model import cpu_threads
from flowforge.settings import added_defaults, added_setting
from flowforge.workflow.anatomy import AnatomyError, read_anatomy
from flowforge.workflow.graph import GraphError, Workflow
from flowforge.workflow.library import build_library, load_seed_library, load_workflow_dir
from flowforge.workflow.schema import Catalog, load_catalog
from flowforge.workflow.textform import Bindings, TextFormError, design_hash, from_text
from flowforge.workflow.validate import validate

from .audit import AUDIT_FILE, AuditLog, Auditor
from .checkpoint import (
    LOG_FILE,
    RunDirError,
    latest_checkpoint,
    open_run,
    restore,
    run_record,
    save_checkpoint,
    write_json,
)
from .constraint import Grammar
from .grammar import TextFormGrammar
from .model import (
    RUN_FILE,
    PolicyLoadError,
    load_policy,
    no_progress_bars,
    read_run_config,
    save_policy,
)
from .rollout import Rollout, sample_groups
from .tokenizer import PolicyTokenizer

Floats = NDArray[np.float64]
KIND = "grpo"
LIBRARY_FILE = "library_designs.json"
#: Added to a group's reward std before dividing (a group of equal rewards gets advantage 0).
ADVANTAGE_EPS = 1e-4
#: Texts whose design hash is kept (a converging policy repeats itself).
DESIGN_CACHE = 100_000
#: What $PROMPT is filled with to read a design: `usable` looks for it; the design hash
#: ignores prompts and seeds.
_PROMPT_MARK = "<the user's prompt>"
_DESIGN_BINDINGS = Bindings.request(_PROMPT_MARK, "", 0)


class GRPOError(ValueError):
    """A run that cannot start or resume as configured; the message says what to change."""


@dataclass(frozen=True)
class GRPORunConfig:
    """Settings of one GRPO run; saved as JSON with the run and every checkpoint."""

    #: The SFT policy directory to start from; also the frozen KL reference.
    sft_dir: str
    #: The reward ensemble directory (``flowforge reward train``), frozen.
    reward_dir: str
    #: The run directory; it becomes the GRPO policy directory when training ends.
    out: str
    #: Optimizer steps (one batch of prompts_per_step * group_size samples each).
    steps: int = 200
    #: Samples per prompt (G); advantages are normalised within these groups.
    group_size: int = 8
    #: Prompts per step; a step trains on prompts_per_step * group_size samples. 8 rather
    #: than 4 (docs/grpo.md): on world 1 it lifted GRPO from 0.401 to 0.505 held-out.
    prompts_per_step: int = 8
    #: Weight of the KL tether to the SFT model (k3 estimator, per token); 0 turns it off.
    beta: float = 0.04
    #: reward = mean - kappa * std over the ensemble members; 0 is the plain mean.
    kappa: float = 1.0
    #: Reward of a sample that is unfinished, does not parse or does not validate (the
    #: ensemble's training-score units: mean 0, std about 1).
    invalid_reward: float = -2.0
    #: AdamW learning rate (constant; no weight decay).
    learning_rate: float = 1e-4
    #: Sampling temperature; log-probabilities are of the same tempered distribution.
    temperature: float = 1.0
    #: Tokens a sample may have, <eos> included (the constraint's budget).
    max_completion_length: int = 384
    #: Seed of the prompt order and of every sample.
    seed: int = 0
    #: Checkpoint every this many steps (and after the last); the resume point after a kill.
    save_every: int = 25
    #: Sample through the schema constraint (every finished sample validates). Off: invalid
    #: samples get `invalid_reward` and `valid_share` in the log says how many there were.
    constrained: bool = True
    #: Clip range of the probability ratio (PPO's epsilon).
    epsilon: float = 0.2
    #: Optimizer steps on each sampled batch (1: on-policy, the ratio is 1 and clipping idle).
    updates_per_batch: int = 1
    #: Gradients are clipped to this global norm.
    max_grad_norm: float = 1.0
    #: Rows per forward/backward pass (gradients accumulate; memory only, same result).
    micro_batch: int = 8
    #: A valid workflow that is not a usable design also gets `invalid_reward` (`usable`):
    #: every design the ensemble learned from is usable, elsewhere its prediction is an
    #: extrapolation the policy learns to exploit (measured in docs/grpo.md).
    usable_only: bool = True
    #: torch intra-op threads during the run (restored afterwards); None keeps torch's. On a
    #: shared machine 2 threads measured 20x slower than 1 unless OMP_WAIT_POLICY=PASSIVE
    #: was set before torch was imported (docs/grpo.md).
    threads: int | None = 1
    #: The library the SFT policy was trained on (API JSON directory), for `novel_share`;
    #: None: the one the SFT run's record names (``library_dir`` or its built library).
    library_dir: str | None = None
    #: Judged audits (``audit.py``): every this many steps, `audit_samples` of the batch go
    #: to the judge and a correction model learns where the ensemble is wrong about the
    #: policy's own designs; later rewards subtract its predicted gap. 0: off (no judge).
    audit_every: int = 0
    #: Samples of an audited step sent to the judge (one render each).
    audit_samples: int = 16
    #: Ridge strength of the correction model (larger: more audits before it moves).
    audit_ridge: float = 10.0
    #: Also raise the reward of designs the audits say the ensemble underrates. Off: only
    #: overrating is corrected (pessimism, like kappa). Measured (docs/grpo.md): two-sided,
    #: GRPO chased the correction's own noise on one seed (held-out 0.088 on world 0).
    audit_two_sided: bool = False
    #: Prompt contrast: a scored sample's reward minus this times the same design's reward
    #: on the step's other prompts (`elsewhere_rewards`), so that within a group a design
    #: that suits *this* prompt beats one that is good on every prompt. 0: off (the paper's
    #: reward). Needs prompts_per_step >= 2. Measured in docs/evaluation.md ("What was tried").
    prompt_contrast: float = added_setting(0.0)

    def __post_init__(self) -> None:
        problems = [message for ok, message in self._checks() if not ok]
        if problems:
            raise GRPOError("; ".join(problems))

    def _checks(self) -> list[tuple[bool, str]]:
        finite = all(
            math.isfinite(v) for v in (self.beta, self.kappa, self.invalid_reward, self.epsilon)
        )
        return [
            (bool(self.sft_dir and self.reward_dir and self.out), "sft_dir, reward_dir, out"),
            (Path(self.out).resolve() != Path(self.sft_dir).resolve(), "out must not be sft_dir"),
            (finite, "beta, kappa, invalid_reward and epsilon must be finite numbers"),
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.group_size >= 2, f"group_size must be >= 2 (a group), got {self.group_size}"),
            (self.prompts_per_step >= 1, "prompts_per_step must be >= 1"),
            (self.beta >= 0 and self.kappa >= 0, "beta and kappa must be >= 0"),
            (self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}"),
            (self.temperature > 0, f"temperature must be > 0 (sampling), got {self.temperature}"),
            (self.max_completion_length >= 2, "max_completion_length must be >= 2"),
            (self.save_every >= 1, f"save_every must be >= 1, got {self.save_every}"),
            (0 < self.epsilon < 1, f"epsilon must be in (0, 1), got {self.epsilon}"),
            (self.updates_per_batch >= 1, "updates_per_batch must be >= 1"),
            (self.max_grad_norm > 0, f"max_grad_norm must be > 0, got {self.max_grad_norm}"),
            (self.micro_batch >= 1, f"micro_batch must be >= 1, got {self.micro_batch}"),
            (self.threads is None or self.threads >= 1, "threads must be >= 1 or None"),
            (self.audit_every >= 0, f"audit_every must be >= 0 (0: off), got {self.audit_every}"),
            (self.audit_samples >= 1, f"audit_samples must be >= 1, got {self.audit_samples}"),
            (self.audit_ridge > 0, f"audit_ridge must be > 0, got {self.audit_ridge}"),
            (
                math.isfinite(self.prompt_contrast) and self.prompt_contrast >= 0,
                f"prompt_contrast must be >= 0 (0: off), got {self.prompt_contrast}",
            ),
            (
                self.prompt_contrast == 0 or self.prompts_per_step >= 2,
                "prompt_contrast needs prompts_per_step >= 2 (other prompts to contrast with)",
            ),
        ]

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> GRPORunConfig:
        names = {f.name for f in fields(GRPORunConfig)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise GRPOError(f"unknown GRPO settings: {', '.join(unknown)}")
        return GRPORunConfig(**data)


#: The ``--quick`` preset (tests, CI, the pipeline's quick run): about a minute on 2 cores.
QUICK: Mapping[str, int] = {
    "steps": 8,
    "group_size": 4,
    "prompts_per_step": 2,
    "save_every": 4,
    "max_completion_length": 320,
}


class MemberScorer(Protocol):
    """What GRPO needs of a reward model: per-member scores and validity of each pair.

    `flowforge.reward.ensemble.RewardEnsemble` is one; tests pass fakes.
    """

    def predict_detail(
        self, prompts: Sequence[str], workflows: Sequence[str]
    ) -> RewardPrediction: ...


# --- the maths (pure; tests/test_grpo.py checks them against hand-computed values) ------------
def ensemble_reward(
    members: NDArray[np.float64], valid: NDArray[np.bool_], kappa: float, floor: float
) -> Floats:
    """``mean - kappa * std`` over members (population std) where valid, else `floor`."""
    scores = np.asarray(members, np.float64)  # (N, K)
    reward = np.full(len(scores), float(floor))
    reward[valid] = scores[valid].mean(axis=1) - kappa * scores[valid].std(axis=1)
    return reward


def elsewhere_rewards(
    scorer: MemberScorer,
    step_prompts: Sequence[str],
    prompts: Sequence[str],
    texts: Sequence[str],
    scored: NDArray[np.bool_],
    kappa: float,
) -> Floats:
    """Each scored sample's design rewarded (``mean - kappa * std``) on every prompt of
    `step_prompts` but its own, averaged; 0 where not scored. Subtracted (times
    `prompt_contrast`) from its reward, it leaves what the design gains from its own prompt."""
    rows = [
        (i, other)
        for i in np.flatnonzero(scored).tolist()
        for other in step_prompts
        if other != prompts[i]
    ]
    elsewhere = np.zeros(len(texts))
    if not rows:
        return elsewhere
    prediction = scorer.predict_detail([p for _, p in rows], [texts[i] for i, _ in rows])
    ok = prediction.valid
    rewards = ensemble_reward(prediction.members, ok, kappa, np.nan)
    index = np.array([i for i, _ in rows])
    sums = np.bincount(index[ok], rewards[ok], minlength=len(texts))
    counts = np.bincount(index[ok], minlength=len(texts))
    np.divide(sums, counts, out=elsewhere, where=counts > 0)
    return elsewhere


def group_advantages(rewards: NDArray[np.float64], group_size: int) -> Floats:
    """``(r - mean of its group) / (std of its group + eps)``; groups are consecutive rows."""
    grouped = np.asarray(rewards, np.float64).reshape(-1, group_size)  # (P, G)
    centred = grouped - grouped.mean(axis=1, keepdims=True)
    advantages: Floats = centred / (grouped.std(axis=1, keepdims=True) + ADVANTAGE_EPS)
    return advantages.reshape(-1)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy:
    ``exp(ref - logp) - (ref - logp) - 1`` (unbiased, never negative)."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1


def grpo_token_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    epsilon: float,
    beta: float,
) -> torch.Tensor:
    """Per-token loss (N,): ``-min(ratio * A, clip(ratio, 1 -+ eps) * A) + beta * k3``, from
    each token's log-probability under the policy, the sampling policy and the reference,
    and the advantage of the sample it belongs to."""
    ratio = torch.exp(logp - old_logp)  # (N,)
    clipped = ratio.clamp(1 - epsilon, 1 + epsilon)
    surrogate = torch.minimum(ratio * advantages, clipped * advantages)
    return -surrogate + beta * k3_kl(logp, ref_logp)


def completion_logps(
    logits: torch.Tensor, tokens: torch.Tensor, allowed: torch.Tensor | None, temperature: float
) -> torch.Tensor:
    """Log-probability (N,) of each token under ``softmax(logits / T)`` (logits (N, V))
    restricted to the `allowed` tokens (N, V) of its position: what it was sampled from."""
    scaled = logits.float() / temperature if temperature != 1.0 else logits.float()
    if allowed is not None:
        scaled = torch.where(allowed, scaled, float("-inf"))
    return torch.log_softmax(scaled, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)


def step_prompts(n_prompts: int, per_step: int, seed: int, step: int) -> list[int]:
    """Indices of the prompts of `step` (1-based): epochs of seeded shuffles, concatenated."""
    positions = range((step - 1) * per_step, step * per_step)
    orders: dict[int, NDArray[np.int64]] = {}
    picked = []
    for position in positions:
        epoch, index = divmod(position, n_prompts)
        if epoch not in orders:
            orders[epoch] = np.random.default_rng([seed, epoch]).permutation(n_prompts)
        picked.append(int(orders[epoch][index]))
    return picked


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of `step`: a hash of (seed, step), independent across steps."""
    digest = hashlib.sha256(f"flowforge-grpo:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


# --- 2. what a run reads once -----------------------------------------------------------------
@dataclass
class _Run:
    config: GRPORunConfig
    model: PreTrainedModel
    reference: PreTrainedModel
    tokenizer: PolicyTokenizer
    catalog: Catalog
    scorer: MemberScorer
    prompts: list[str]  # the train split
    library: frozenset[str]  # design hashes of the SFT library
    grammar: Grammar[Any] | None  # the schema constraint, or None (unconstrained)
    auditor: Auditor | None  # the judge of audits (None: audits off)
    audits: AuditLog  # what audits found so far, and the correction fitted to it
    designs: dict[str, tuple[str, bool] | None] = field(default_factory=dict)  # by text


def _sft_record(config: GRPORunConfig) -> dict[str, Any]:
    record = read_run_config(config.sft_dir)
    if record is None:
        raise GRPOError(f"{config.sft_dir}: no run record; pass an SFT run directory")
    return record


def _library_designs(config: GRPORunConfig, sft: dict[str, Any], catalog: Catalog) -> list[str]:
    """Design hashes of the library the SFT policy was trained on (novelty's reference)."""
    sft_config = sft.get("config", {})
    folder = config.library_dir or sft_config.get("library_dir")
    if folder is not None:
        workflows = list(load_workflow_dir(folder).values())
    elif sft.get("kind") == "sft":
        entries = build_library(
            load_seed_library(), catalog, sft_config["library_size"], sft_config["library_seed"]
        )
        workflows = [entry.workflow for entry in entries]
    else:
        raise GRPOError(
            f"{config.sft_dir} is a {sft.get('kind')!r} run whose record names no library; "
            "set library_dir to the library its policy was trained on"
        )
    return sorted({design_hash(workflow, catalog) for workflow in workflows})


def _load(
    config: GRPORunConfig,
    out: Path,
    checkpoint: Path | None,
    scorer: MemberScorer | None,
    auditor: Auditor | None,
) -> _Run:
    sft = _sft_record(config)
    catalog = load_catalog(sft.get("config", {}).get("object_info"))
    model, tokenizer = load_policy(checkpoint or config.sft_dir)
    reference, _ = load_policy(config.sft_dir)
    reference.requires_grad_(False)
    longest = tokenizer.vocab.config.max_prompt_words + 3  # <bos> [<score>] words <sep>
    if longest + config.max_completion_length > model.config.max_position_embeddings:
        raise GRPOError(
            f"prompt ({longest}) + max_completion_length ({config.max_completion_length}) "
            f"exceeds the model's {model.config.max_position_embeddings} positions"
        )
    library_path = out / LIBRARY_FILE  # written by `train_grpo` once the inputs have loaded
    library = frozenset(
        json.loads(library_path.read_text(encoding="utf-8"))
        if library_path.is_file()
        else _library_designs(config, sft, catalog)
    )
    if scorer is None:
        scorer = load_ensemble(config.reward_dir, catalog=catalog)
    grammar = TextFormGrammar(tokenizer, catalog) if config.constrained else None
    prompts = [prompt.text for prompt in load_prompts("train")]
    audits = (
        AuditLog.load(checkpoint, config.audit_ridge)
        if checkpoint is not None
        else AuditLog(config.audit_ridge)
    )
    return _Run(
        config,
        model,
        reference,
        tokenizer,
        catalog,
        scorer,
        prompts,
        library,
        grammar,
        auditor,
        audits,
    )


# --- 3. one step ------------------------------------------------------------------------------
def grpo_step(run: _Run, optimizer: torch.optim.Optimizer, step: int) -> dict[str, float]:
    """Sample, score, update; the step's log line without wall times (module docstring)."""
    c = run.config
    prompts = [
        run.prompts[i] for i in step_prompts(len(run.prompts), c.prompts_per_step, c.seed, step)
    ]
    # No dropout: sampling and update must see one distribution.
    run.model.eval()  # type: ignore[no-untyped-call]
    rollout = sample_groups(
        run.model,
        run.tokenizer,
        prompts,
        c.group_size,
        max_new_tokens=c.max_completion_length,
        temperature=c.temperature,
        seed=step_seed(c.seed, step),
        grammar=run.grammar,
    )
    designs = [  # (design hash, usable) of each sample that finished and validates
        _design(run, text) if done else None
        for text, done in zip(rollout.texts, rollout.finished, strict=True)
    ]
    valid = np.array([d is not None for d in designs])  # (B,)
    good = np.array([d is not None and d[1] for d in designs])  # (B,) usable designs
    prediction = run.scorer.predict_detail(rollout.prompts, rollout.texts)
    scored = (good if c.usable_only else valid) & prediction.valid  # (B,) not the floor
    rewards = ensemble_reward(prediction.members, scored, c.kappa, c.invalid_reward)
    contrast = np.zeros(len(rewards))
    if c.prompt_contrast > 0:
        elsewhere = elsewhere_rewards(
            run.scorer, prompts, rollout.prompts, rollout.texts, scored, c.kappa
        )
        contrast = c.prompt_contrast * elsewhere
        rewards = rewards - contrast
    audit = _audit(run, step, rollout, prediction, scored) if _audits_at(c, step) else {}
    correction = np.zeros(len(rewards))
    if run.audits.gaps:  # the reward minus the gap audits predict for the design
        texts = [rollout.texts[i] for i in np.flatnonzero(scored)]
        predicted_gap = run.audits.correction(texts)
        correction[scored] = predicted_gap if c.audit_two_sided else np.maximum(predicted_gap, 0)
        rewards = rewards - correction
    advantages = group_advantages(rewards, c.group_size)
    stats = _update(run, optimizer, rollout, advantages)
    hashes = [d[0] for d in designs if d is not None]
    members = np.asarray(prediction.members, np.float64)[scored]  # (n, K)
    return {
        "step": step,
        "reward_mean": float(rewards.mean()),
        "reward_spread": float(rewards.reshape(-1, c.group_size).std(axis=1).mean()),
        "kl": stats["kl"],
        "valid_share": float(valid.mean()),
        "usable_share": float(good.mean()),
        "distinct": len(set(hashes)),
        "novel_share": sum(h not in run.library for h in hashes) / len(hashes) if hashes else 0.0,
        "ensemble_std": float(members.std(axis=1).mean()) if len(members) else 0.0,
        "completion_tokens": float(rollout.completion_mask.sum(dim=1).float().mean()),
        "loss": stats["loss"],
        "grad_norm": stats["grad_norm"],
        "clip_share": stats["clip_share"],
        "ensemble_reward_mean": float((rewards + correction + contrast).mean()),
        "contrast_mean": float(contrast[scored].mean()) if scored.any() else 0.0,
        "correction_mean": float(correction[scored].mean()) if scored.any() else 0.0,
        "audit_calls": run.audits.judge_calls,
        **audit,
    }


# --- 3c'. judged audits (audit.py) -----------------------------------------------------------
def _audits_at(config: GRPORunConfig, step: int) -> bool:
    return config.audit_every > 0 and step % config.audit_every == 0


def _audit(
    run: _Run, step: int, rollout: Rollout, prediction: RewardPrediction, scored: NDArray[np.bool_]
) -> dict[str, float]:
    """Judge `audit_samples` of the step's scored samples (drawn from (seed, step)), add
    their gaps to the audit log and refit the correction; the audit's numbers for the log."""
    c = run.config
    if run.auditor is None:
        raise GRPOError("audit_every > 0 needs a judge (the auditor)")
    candidates = np.flatnonzero(scored)
    if len(candidates) == 0:
        return {"audit_judged": 0.0}
    rng = np.random.default_rng([c.seed, step, 0xA0D17])
    picked = rng.choice(candidates, min(c.audit_samples, len(candidates)), replace=False)
    seeds = [int(s) for s in rng.integers(0, 2**31, len(picked))]
    prompts = [rollout.prompts[i] for i in picked]
    texts = [rollout.texts[i] for i in picked]
    judged = run.auditor.judge(prompts, texts, seeds)
    predicted = np.asarray(prediction.members, np.float64)[picked].mean(axis=1)
    gaps = run.audits.record(texts, list(predicted), judged)
    scores = [j for j in judged if j is not None]
    return {
        "audit_judged": float(len(scores)),
        "audit_score": float(np.mean(scores)) if scores else float("nan"),
        "audit_gap": float(np.mean(gaps)) if gaps else float("nan"),
    }


# --- 3b. designs, 3e. the update ------------------------------------------------------------
def usable(workflow: Workflow) -> bool:
    """A text-to-image design of the library's shape (`workflow.anatomy.read_anatomy` finds
    its parts) whose positive prompt encoder writes the user's prompt (read with
    ``$PROMPT`` = `_PROMPT_MARK`). A design that ignores the prompt is no design for it."""
    try:
        anatomy = read_anatomy(workflow)
    except AnatomyError:
        return False
    return any(isinstance(v, str) and _PROMPT_MARK in v for _, v in anatomy.positive.inputs)


def _design(run: _Run, text: str) -> tuple[str, bool] | None:
    """(design hash, usable) of a text that parses and validates, else None; cached."""
    if text in run.designs:
        return run.designs[text]
    if len(run.designs) >= DESIGN_CACHE:
        run.designs.clear()
    try:
        workflow = from_text(text, _DESIGN_BINDINGS)
    except (TextFormError, GraphError):
        run.designs[text] = None
        return None
    ok = validate(workflow, run.catalog).ok
    run.designs[text] = (design_hash(workflow, run.catalog), usable(workflow)) if ok else None
    return run.designs[text]


def token_logps(
    model: PreTrainedModel, rollout: Rollout, rows: torch.Tensor, temperature: float
) -> torch.Tensor:
    """(n,) log-probabilities of the completion tokens of `rows` under `model`, row by row:
    ``completion_logps`` of the model's logits before each token.

    The rows' common left padding and the columns after their longest completion are cut
    off first: they would cost a forward and a softmax each and change nothing. Where the
    grammar allowed one token only (about 60% of positions with the schema grammar) the
    log-probability is exactly 0 whatever the weights, so the output head and the softmax
    run only on the positions with a choice: the head over the whole vocabulary was the
    largest part of the update after the forward pass.
    """
    prompt_width = rollout.input_ids.shape[1] - rollout.completion_mask.shape[1]
    real = rollout.completion_mask[rows].bool()  # (b, T)
    width = int(real.sum(dim=1).max())
    start = prompt_width - int(rollout.attention_mask[rows, :prompt_width].sum(dim=1).max())
    ids = rollout.input_ids[rows, start : prompt_width + width]
    mask = rollout.attention_mask[rows, start : prompt_width + width]
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # as the sampler counts them
    states = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions)
    real = real[:, :width]
    before = states.last_hidden_state[:, -width - 1 : -1][real]  # (n, H) before each token
    tokens = ids[:, -width:][real]  # (n,)
    head = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    if rollout.allowed is None:
        return completion_logps(head(before), tokens, None, temperature)
    allowed = rollout.allowed[rows, :width][real]  # (n, V)
    choice = (allowed.sum(dim=1) > 1).nonzero().squeeze(1)  # (c,)
    chosen = completion_logps(head(before[choice]), tokens[choice], allowed[choice], temperature)
    return torch.zeros(len(tokens), dtype=chosen.dtype).index_put((choice,), chosen)


def _update(
    run: _Run, optimizer: torch.optim.Optimizer, rollout: Rollout, advantages: Floats
) -> dict[str, float]:
    """`updates_per_batch` AdamW steps on the batch; loss, KL, clip share, grad norm.

    The loss is the mean over every completion token of the batch (micro-batches add their
    share of it), so a long workflow weighs as many tokens as it has. Micro-batches hold
    rows of similar length (less padding); the sum does not depend on how rows are grouped.
    """
    c = run.config
    lengths = rollout.completion_mask.sum(dim=1)  # (B,)
    tokens = float(lengths.sum())
    by_length = torch.argsort(lengths, stable=True)
    chunks = list(torch.split(by_length, c.micro_batch))
    real = rollout.completion_mask.bool()  # (B, T)
    adv = torch.tensor(advantages, dtype=torch.float32)[:, None].expand_as(real)  # (B, T)
    adv_of = [adv[k][real[k]] for k in chunks]  # (n,) each, in token_logps' order
    old = [rollout.logps[k][real[k]] for k in chunks]  # the sampling policy's
    with torch.no_grad():
        ref = [token_logps(run.reference, rollout, k, c.temperature) for k in chunks]
    stats = {"loss": 0.0, "kl": 0.0, "clip_share": 0.0, "grad_norm": 0.0}
    for update in range(c.updates_per_batch):
        optimizer.zero_grad()
        for k, chunk in enumerate(chunks):
            logp = token_logps(run.model, rollout, chunk, c.temperature)  # (n,)
            per_token = grpo_token_loss(logp, old[k], ref[k], adv_of[k], c.epsilon, c.beta)
            loss = per_token.sum() / tokens
            loss.backward()  # type: ignore[no-untyped-call]
            with torch.no_grad():
                share = 1 / c.updates_per_batch
                stats["loss"] += float(loss) * share
                clipped = ((logp - old[k]).exp() - 1).abs() > c.epsilon
                stats["clip_share"] += float(clipped.sum()) / tokens * share
                if update == 0:  # KL of the policy that sampled the batch
                    stats["kl"] += float(k3_kl(logp, ref[k]).sum()) / tokens
        norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), c.max_grad_norm)
        stats["grad_norm"] += float(norm) / c.updates_per_batch
        optimizer.step()
    return stats


# --- 1, 4, 5. the run ------------------------------------------------------------------------
@contextmanager
def _settings(threads: int | None) -> Iterator[None]:
    """torch's thread count for the run and no progress bars from saving checkpoints,
    restoring the caller's settings afterwards."""
    with cpu_threads(threads or torch.get_num_threads()), no_progress_bars():
        yield


def train_grpo(
    config: GRPORunConfig,
    on_log: Callable[[dict[str, float]], None] | None = None,
    *,
    scorer: MemberScorer | None = None,
    auditor: Auditor | None = None,
) -> Path:
    """Run GRPO into ``config.out`` (created, resumed, or returned if finished) and return the
    GRPO policy directory (``config.out``). `on_log` gets each step's log line; `scorer`
    replaces the ensemble of ``config.reward_dir`` (tests, custom rewards); `auditor` judges
    the audits ``audit_every > 0`` asks for (`audit.JudgeAuditor` over a Judge)."""
    if config.audit_every > 0 and auditor is None:
        raise GRPOError(
            f"audit_every = {config.audit_every} needs a judge for the audits; pass one "
            "(flowforge grpo --judge) or set audit_every = 0"
        )
    out = Path(config.out)
    settings, added = asdict(config), added_defaults(GRPORunConfig)
    try:
        if open_run(out, KIND, settings, added, create=False):
            return out
        checkpoint = latest_checkpoint(out)
        with _settings(config.threads):
            run = _load(config, out, checkpoint, scorer, auditor)  # a bad input fails here
            open_run(out, KIND, settings, added)  # so only now is a new run's record written
            library_path = out / LIBRARY_FILE
            if not library_path.is_file():
                write_json(library_path, sorted(run.library))
            _train(run, out, checkpoint, on_log)
    except (RunDirError, PolicyLoadError) as err:
        raise GRPOError(str(err)) from None
    return out


def _train(
    run: _Run,
    out: Path,
    checkpoint: Path | None,
    on_log: Callable[[dict[str, float]], None] | None,
) -> None:
    config = run.config
    optimizer = torch.optim.AdamW(run.model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    done, wall = restore(out, optimizer, checkpoint)
    record = run_record(KIND, asdict(config), finished=False)
    with (out / LOG_FILE).open("a", encoding="utf-8") as log:
        for step in range(done + 1, config.steps + 1):
            start = time.perf_counter()
            line = grpo_step(run, optimizer, step)
            seconds = time.perf_counter() - start
            wall += seconds
            line = {**line, "step_seconds": seconds, "wall_seconds": wall}
            log.write(json.dumps(line) + "\n")
            log.flush()
            if step % config.save_every == 0 or step == config.steps:
                audits = {AUDIT_FILE: json.dumps(run.audits.to_json())}
                save_checkpoint(
                    out, step, run.model, run.tokenizer, optimizer, record, wall, files=audits
                )
            if on_log is not None:
                on_log(line)
    result = {
        "steps": config.steps,
        "wall_seconds": wall,
        "resumed": checkpoint is not None,
        "audit_calls": run.audits.judge_calls,
    }
    save_policy(run.model, run.tokenizer, out)
    run.audits.save(out)
    write_json(out / RUN_FILE, run_record(KIND, asdict(config), finished=True, result=result))
