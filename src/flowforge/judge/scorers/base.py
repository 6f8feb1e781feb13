"""Image scorers and the set the ComfyUI judge scores with: specs, loading, standardization.

A scorer maps (image, prompt text) to one float: the human-preference models behind
ComfyGen's score (LAION aesthetic, ImageReward, HPS v2.1, PickScore) and CLIP score. Their
raw scales differ wildly (aesthetic ~5, HPS ~0.3, PickScore ~21), so each is standardized
with a configured mean and std (measured by the user on their own renders; identity by
default) and the judge also reports their weighted sum as ``score``.

Weights are read from a local directory or from the Hugging Face cache (``org/name``), never
downloaded while judging: loading passes ``local_files_only=True`` everywhere, and heads are
safetensors files only (flowforge never unpickles). docs/comfyui.md names the checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

#: The name under which the weighted sum of the standardized scores is reported.
COMBINED = "score"


class ScorerError(ValueError):
    """A scorer that cannot be configured or loaded. One line saying what to change."""


class ImageScorer(Protocol):
    """Scores images against their prompts, one float per image, higher is better."""

    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class ScorerSpec:
    """One scorer: its kind, where its weights are, and how it enters the combined score."""

    name: str  # aesthetic, imagereward, hps, pickscore or clip
    model: str  # a local directory, or a Hugging Face repo id already in the local cache
    head: str | None = None  # aesthetic only: the MLP head (.safetensors)
    mean: float = 0.0  # standardized score = (raw - mean) / std
    std: float = 1.0
    weight: float = 1.0  # weight of the standardized score in COMBINED

    def __post_init__(self) -> None:
        if self.name not in SCORERS:
            raise ScorerError(f"unknown scorer {self.name!r}; known: {', '.join(sorted(SCORERS))}")
        if not self.std > 0:
            raise ScorerError(f"scorer {self.name}: std must be positive, not {self.std}")


@dataclass(frozen=True)
class ScorerSetConfig:
    """The scorers of a judge and how they run."""

    scorers: tuple[ScorerSpec, ...] = ()
    batch_size: int = 8  # images per forward pass
    device: str = "cpu"  # a torch device: cpu, cuda, cuda:1, ...
    threads: int = 0  # torch CPU threads for this process (0: torch's default); tiny CPU
    # models next to render threads can run 50x faster with 1 (thread contention)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ScorerError(f"scorer batch_size must be at least 1, not {self.batch_size}")
        names = [spec.name for spec in self.scorers]
        if len(set(names)) != len(names):
            raise ScorerError(f"a scorer is listed twice in {names}")

    def digest(self) -> str:
        """A short hash of what decides the scores (not batch size or device): part of the
        judge id, so runs with other models or standardization are other judges."""
        text = json.dumps([asdict(spec) for spec in self.scorers], sort_keys=True)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    @staticmethod
    def from_json(data: Mapping[str, Any], base: Path | None = None) -> ScorerSetConfig:
        """From a scorer config file's JSON (docs/comfyui.md): ``{"batch_size", "device",
        "scorers": [{"name", "model", "head", "mean", "std", "weight"}, ...]}``; relative
        paths are taken from `base`."""
        unknown = sorted(set(data) - {"batch_size", "device", "threads", "scorers"})
        if unknown:
            raise ScorerError(f"unknown scorer setting(s): {', '.join(unknown)}")
        specs = []
        for entry in data.get("scorers", []):
            try:
                spec = ScorerSpec(**entry)
            except TypeError as error:
                raise ScorerError(f"scorer entry {entry!r}: {error}") from None
            specs.append(_relative_to(spec, base))
        return ScorerSetConfig(
            tuple(specs),
            int(data.get("batch_size", 8)),
            str(data.get("device", "cpu")),
            int(data.get("threads", 0)),
        )


def _relative_to(spec: ScorerSpec, base: Path | None) -> ScorerSpec:
    def resolve(location: str | None) -> str | None:
        if location is None or base is None or Path(location).is_absolute():
            return location
        candidate = base / location
        return str(candidate) if candidate.exists() else location  # else a repo id

    return ScorerSpec(**{**asdict(spec), "model": resolve(spec.model), "head": resolve(spec.head)})


def resolve_model(location: str) -> Path:
    """A local directory: `location` itself, or its snapshot in the Hugging Face cache.
    Never downloads (HF_HUB_OFFLINE or not): a missing model is a ScorerError saying so."""
    path = Path(location).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(location, local_files_only=True))
    except Exception as error:  # not a repo id, or not in the cache
        raise ScorerError(
            f"scorer model {location!r} is neither a directory nor in the Hugging Face cache "
            f"({type(error).__name__}); download it first (docs/comfyui.md)"
        ) from None


class ScorerSet:
    """Loaded scorers; `score` gives each image its standardized scores and COMBINED."""

    def __init__(self, config: ScorerSetConfig) -> None:
        self.config = config
        if config.threads > 0:
            import torch

            torch.set_num_threads(config.threads)
        self.scorers: dict[str, ImageScorer] = {
            spec.name: SCORERS[spec.name](spec, config.device) for spec in config.scorers
        }

    def score(
        self, images: Sequence[Image.Image], prompts: Sequence[str]
    ) -> list[dict[str, float]]:
        """Per image: ``{name: (raw - mean) / std, ..., "score": sum of weight * those}``
        (no COMBINED when there are no scorers: then every image scores ``{}``)."""
        if len(images) != len(prompts):
            raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
        results: list[dict[str, float]] = [{} for _ in images]
        size = self.config.batch_size
        for spec in self.config.scorers:
            scorer = self.scorers[spec.name]
            for start in range(0, len(images), size):
                raw = scorer(images[start : start + size], prompts[start : start + size])
                for offset, value in enumerate(raw):
                    results[start + offset][spec.name] = (value - spec.mean) / spec.std
        if self.config.scorers:
            for scores in results:
                scores[COMBINED] = sum(
                    spec.weight * scores[spec.name] for spec in self.config.scorers
                )
        return results


ScorerFactory = Callable[[ScorerSpec, str], ImageScorer]


def _clip_scorer(spec: ScorerSpec, device: str) -> ImageScorer:
    from .clip import load_clip_scorer

    return load_clip_scorer(spec, device)


def _imagereward(spec: ScorerSpec, device: str) -> ImageScorer:
    from .imagereward import load_imagereward

    return load_imagereward(spec, device)


#: Scorer kinds by name; torch and transformers are imported only when one is loaded.
SCORERS: dict[str, ScorerFactory] = {
    "aesthetic": _clip_scorer,
    "clip": _clip_scorer,
    "hps": _clip_scorer,
    "pickscore": _clip_scorer,
    "imagereward": _imagereward,
}
