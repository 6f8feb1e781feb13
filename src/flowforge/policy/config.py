"""Settings of policy training runs: frozen, checked, saved as JSON with every run.

`SFTRunConfig` is phase-1 SFT on library pairs, `ComfyGenFTConfig` the score-conditioned
baseline; both share `TrainSettings`. One name per setting everywhere: the dataclass field is
the JSON key and (with dashes) the CLI flag.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..settings import added_setting, without_retired
from .model import LoraSettings, PolicyModelConfig
from .vocab import VocabConfig


class SFTError(ValueError):
    """A run that cannot start or resume as configured."""


@dataclass(frozen=True)
class TrainSettings:
    """How the policy is trained; shared by vocabulary SFT and ComfyGen-FT."""

    #: Passes over the examples (fractions allowed).
    epochs: float = 1.0
    #: Peak AdamW learning rate (a tiny model from scratch takes ~2e-3; LoRA 2e-4).
    learning_rate: float = 2e-3
    #: Examples per optimizer step.
    batch_size: int = 32
    #: Longest example in tokens; a longer one is an error, never truncated.
    max_length: int = 384
    #: Share of the steps with a linear warm-up, then cosine decay.
    warmup_ratio: float = 0.05
    #: AdamW weight decay.
    weight_decay: float = 0.01
    #: bf16 autocast. Off by default: for a model this small on CPU, fp32 measured as fast or
    #: faster (the casts cost more than the matmuls save); on a GPU turn it on.
    bf16: bool = False
    #: Batch examples of similar length (random megabatches, sorted within): about half the
    #: padding of random batches, since workflows run from ~60 to ~280 tokens.
    group_by_length: bool = True
    #: TRL's chunked LM head (saves memory for a large vocabulary on a GPU). Off: the model's
    #: own loss, the same number, 35% less CPU per step for the tiny model (sft.py).
    fused_lm_head: bool = False
    #: Recompute activations in the backward pass (TRL's default is on: it saves GPU memory
    #: for large models). Off: the tiny model fits many times over and skips the recompute.
    activation_checkpointing: bool = False
    #: Seed of the pairing, the initial weights and the data order.
    seed: int = 0
    #: Checkpoint every this many steps (resume point after a kill).
    save_steps: int = 250
    #: Log loss every this many steps.
    logging_steps: int = 25
    #: Shape of the tiny model (ignored with `base_model`).
    model: PolicyModelConfig = field(default_factory=PolicyModelConfig)
    #: How the tokenizer is fitted.
    vocab: VocabConfig = field(default_factory=VocabConfig)
    #: A local pretrained model directory to train with LoRA instead of the tiny model.
    base_model: str | None = None
    #: LoRA settings (only with `base_model`).
    lora: LoraSettings = field(default_factory=LoraSettings)

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise SFTError("epochs and learning_rate must be > 0")
        if self.batch_size < 1 or self.save_steps < 1 or self.logging_steps < 1:
            raise SFTError("batch_size, save_steps and logging_steps must be >= 1")
        if not 0 <= self.warmup_ratio < 1 or self.weight_decay < 0:
            raise SFTError("warmup_ratio must be in [0, 1) and weight_decay >= 0")
        if self.base_model is None and self.max_length > self.model.max_position_embeddings:
            raise SFTError(
                f"max_length {self.max_length} exceeds the model's max_position_embeddings "
                f"{self.model.max_position_embeddings}; raise model.max_position_embeddings"
            )

    @staticmethod
    def from_json(data: dict[str, Any]) -> TrainSettings:
        return TrainSettings(
            **{
                **data,
                "model": PolicyModelConfig(**data["model"]),
                "vocab": VocabConfig(**data["vocab"]),
                "lora": LoraSettings(**data["lora"]),
            }
        )


#: The ways `SFTRunConfig.pairing` pairs prompts with workflows.
PAIRINGS = ("random", "ensemble")


def pairing_problem(pairing: str, temperature: float, top_k: int = 0) -> str | None:
    """What is wrong with these pairing settings, or None (`SFTRunConfig` and the pipeline's
    SFT stage, which checks them before any stage runs)."""
    if pairing not in PAIRINGS:
        return f"pairing must be one of {', '.join(PAIRINGS)}, got {pairing!r}"
    if not temperature > 0:
        return f"pairing_temperature must be > 0, got {temperature}"
    if top_k < 0:
        return f"pairing_top_k must be >= 0 (0: every candidate), got {top_k}"
    return None


@dataclass(frozen=True)
class SFTRunConfig:
    """Phase-1 SFT on (prompt, workflow) pairs from an augmented library."""

    #: The run directory; it becomes the policy directory when training ends.
    out_dir: str
    #: Training pairs (paper: 500K; default sized for 15 minutes on 2 CPU cores).
    pairs: int = 50_000
    #: Workflows in the augmented library built from the seeds (ignored with `library_dir`).
    library_size: int = 20_000
    #: Seed of the library's random walk.
    library_seed: int = 0
    #: A saved library (directory of API JSON, ``flowforge library build``) to use instead.
    library_dir: str | None = None
    #: A ComfyUI /object_info dump; None is the shipped catalog.
    object_info: str | None = None
    #: Training settings.
    train: TrainSettings = field(default_factory=TrainSettings)
    #: How prompts meet workflows: "random" (any train prompt with any library workflow: the
    #: language of workflows only) or "ensemble" (each prompt with library workflows drawn by
    #: the reward ensemble's predictions for it, `pairing_temperature`; needs `reward_dir`).
    pairing: str = "random"
    #: The reward ensemble directory for ``pairing = "ensemble"``.
    reward_dir: str | None = None
    #: Softmax temperature over the ensemble's rewards (training-score units, std ~1 over
    #: judged pairs) for ``pairing = "ensemble"``: 0.15 pairs a prompt with about 16
    #: workflows effectively (median over prompts; docs/policy.md), 1 with most of them.
    pairing_temperature: float = 0.15
    #: For ``pairing = "ensemble"``: draw a prompt's workflow only among its `pairing_top_k`
    #: best-predicted candidates (0: among all). Why: with the judged `designs` (thousands,
    #: many alike) the temperature alone paired a prompt with ~700 candidates effectively.
    pairing_top_k: int = added_setting(0)
    #: Judged designs to pair prompts with beside the library's workflows: Parquet tables
    #: with the export's columns (the refine rounds' ``judged.parquet``); each distinct
    #: ``workflow_text`` judged without error joins the candidates. For "ensemble" pairing,
    #: whose ensemble was refitted on those judgements, so it knows the designs it rates.
    designs: tuple[str, ...] = added_setting(())
    #: With `designs` and ensemble pairing: the largest share of the pairs that may pair a
    #: library workflow. 1: no cap (the library's workflows are candidates like the judged
    #: designs); 0: the library's workflows are no candidates, so prompts are paired only
    #: with the judged designs that are not library workflows; in between, the library pairs
    #: beyond the share (chosen at random) are drawn again for the same prompt among those
    #: judged designs (`examples.capped_pairs`). Why: a policy wide enough to copy its
    #: targets writes the library workflows among them verbatim, and the refine rounds'
    #: re-paired SFT draws about half its pairs from the library (`library_pair_share`;
    #: docs/evaluation.md, "What was tried").
    library_share: float = added_setting(1.0)

    def __post_init__(self) -> None:
        if self.pairs < 1 or self.library_size < 1:
            raise SFTError("pairs and library_size must be >= 1")
        if not 0 <= self.library_share <= 1:
            raise SFTError(f"library_share must be in [0, 1], got {self.library_share}")
        if self.library_share < 1 and not (self.designs and self.pairing == "ensemble"):
            raise SFTError(
                "library_share < 1 needs designs and ensemble pairing (judged designs to pair "
                "with instead of library workflows)"
            )
        problem = pairing_problem(self.pairing, self.pairing_temperature, self.pairing_top_k)
        if problem is not None:
            raise SFTError(problem)
        if self.pairing == "ensemble" and self.reward_dir is None:
            raise SFTError('pairing = "ensemble" needs reward_dir (a reward ensemble directory)')

    @staticmethod
    def from_json(data: dict[str, Any]) -> SFTRunConfig:
        data = without_retired(data)  # a record of session 36 (`library_candidates`)
        return SFTRunConfig(
            **{
                **data,
                "train": TrainSettings.from_json(data["train"]),
                "designs": tuple(data.get("designs", ())),
            }
        )


@dataclass(frozen=True)
class ComfyGenFTConfig:
    """The ComfyGen-FT baseline: (prompt, score bin) -> workflow on judged triplets."""

    #: The run directory; it becomes the policy directory when training ends.
    out_dir: str
    #: Triplets: a collection run directory, a Parquet export or a saved HF dataset.
    triplets: str
    #: Scores averaged into the training score; never the judge's held-out scorer.
    score_names: tuple[str, ...] = ("aesthetic", "alignment", "preference")
    #: A ComfyUI /object_info dump; None is the shipped catalog.
    object_info: str | None = None
    #: Training settings (`vocab.score_bins` sets the number of score bins).
    train: TrainSettings = field(default_factory=TrainSettings)
    #: A policy directory to fine-tune (its weights and tokenizer; `train.model` and
    #: `train.base_model` are then unused), e.g. the run's phase-1 SFT policy: ComfyGen
    #: fine-tunes an LLM that already knows language, and so starts where FlowRL's GRPO does.
    #: None: a new model as `train` says.
    init_from: str | None = None

    def __post_init__(self) -> None:
        if not self.score_names:
            raise SFTError("score_names must name at least one training score")
        if self.init_from is not None and self.train.base_model is not None:
            raise SFTError("init_from and train.base_model both name a starting model; keep one")

    @staticmethod
    def from_json(data: dict[str, Any]) -> ComfyGenFTConfig:
        return ComfyGenFTConfig(
            **{
                **data,
                "score_names": tuple(data["score_names"]),
                "train": TrainSettings.from_json(data["train"]),
            }
        )
