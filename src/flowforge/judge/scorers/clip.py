"""The CLIP-based scorers, on transformers' `CLIPModel`: aesthetic, CLIP score, HPS, PickScore.

Each is one CLIP model and a formula on its embeddings, as their authors compute them:
- ``aesthetic`` (LAION improved aesthetic predictor v2, on CLIP ViT-L/14): an MLP head
  (768-1024-128-64-16-1, the original ``layers.N`` keys) on the L2-normalized image embedding;
- ``clip`` (CLIP score, as torchmetrics): ``100 * max(cos(image, text), 0)``;
- ``hps`` (HPS v2.1, a fine-tuned CLIP ViT-H/14): ``cos(image, text)`` (HPSv2's
  ``image_features @ text_features.T`` with normalized features);
- ``pickscore`` (PickScore v1, a fine-tuned CLIP ViT-H/14): ``exp(logit_scale) * cos``.

Images are preprocessed as CLIP does (bicubic resize of the short side, centre crop, the
OpenAI mean and std) at the model's own image size; prompts are truncated to the text
model's positions (77 for real CLIPs).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from transformers import AutoTokenizer, CLIPModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from .base import ImageScorer, ScorerError, ScorerSpec, resolve_model

#: The LAION aesthetic head's layer widths (input: CLIP ViT-L/14's 768-d image embedding).
AESTHETIC_WIDTHS = (1024, 128, 64, 16)


def mlp_head(width: int) -> nn.Sequential:
    """The MLP of the LAION aesthetic predictor and of ImageReward (same shape, same keys:
    ``layers.0/2/4/6/7``); dropout layers do nothing in eval mode but keep the indices."""
    widths = (width, *AESTHETIC_WIDTHS)
    layers: list[nn.Module] = []
    for index, (a, b) in enumerate(itertools.pairwise(widths)):
        layers.append(nn.Linear(a, b))
        if index < 3:
            layers.append(nn.Dropout((0.2, 0.2, 0.1)[index]))
    layers.append(nn.Linear(widths[-1], 1))
    return nn.Sequential(*layers)


class Head(nn.Module):
    """A module whose state dict reads ``layers.N.weight``, as the published heads do."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.layers = mlp_head(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # type: ignore[no-any-return]


def load_head(path: Path, width: int, device: str) -> Head:
    """A head from a safetensors file, every key checked (a wrong file fails loudly)."""
    head = Head(width)
    try:
        head.load_state_dict(load_file(str(path)), strict=True)
    except (OSError, RuntimeError) as error:
        raise ScorerError(f"head {path}: {' '.join(str(error).split())[:300]}") from None
    return head.to(device).eval()


def clip_preprocessor(image_size: int) -> CLIPImageProcessorPil:
    """CLIP's preprocessing at `image_size` (224 for the real models): resize, crop, OpenAI
    mean/std; the same for every CLIP-based scorer and ImageReward."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )


Formula = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: score from (normalized image embeddings (B, D), normalized text embeddings (B, D), logit scale)
FORMULAS: dict[str, Formula] = {
    "clip": lambda i, t, s: 100 * (i * t).sum(-1).clamp(min=0),
    "hps": lambda i, t, s: (i * t).sum(-1),
    "pickscore": lambda i, t, s: s.exp() * (i * t).sum(-1),
}


class ClipScorer:
    """One CLIP model and a formula (or the aesthetic head) on its embeddings."""

    def __init__(
        self, spec: ScorerSpec, model: CLIPModel, tokenizer: object, head: Head | None, device: str
    ) -> None:
        self.spec, self.model, self.tokenizer, self.head = spec, model, tokenizer, head
        self.device = device
        config: Any = model.config  # transformers types sub-configs loosely
        self.processor = clip_preprocessor(int(config.vision_config.image_size))
        self.max_length = int(config.text_config.max_position_embeddings)

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        image = _normalized(self.model.get_image_features(pixel_values=pixels.to(self.device)))
        if self.head is not None:  # aesthetic: the image alone
            return [float(v) for v in self.head(image).squeeze(-1).float().cpu()]
        tokens = self.tokenizer(  # type: ignore[operator]
            list(prompts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        text = _normalized(self.model.get_text_features(**tokens))
        values = FORMULAS[self.spec.name](image, text, self.model.logit_scale)
        return [float(v) for v in values.float().cpu()]


def _normalized(features: Any) -> torch.Tensor:
    """L2-normalized embeddings; transformers 5 wraps them in an output's ``pooler_output``."""
    tensor: torch.Tensor = (
        features if isinstance(features, torch.Tensor) else features.pooler_output
    )
    normalized: torch.Tensor = tensor / tensor.norm(dim=-1, keepdim=True)
    return normalized


def load_clip_scorer(spec: ScorerSpec, device: str) -> ImageScorer:
    """Load a CLIP-based scorer from its directory (or the HF cache), without downloading."""
    path = resolve_model(spec.model)
    try:
        model = CLIPModel.from_pretrained(path, local_files_only=True)
        model = model.to(device).eval()  # type: ignore[arg-type]
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ScorerError(f"scorer {spec.name}: cannot load CLIP from {path}: {error}") from None
    head = None
    if spec.name == "aesthetic":
        if spec.head is None:
            raise ScorerError("the aesthetic scorer needs its MLP head: give head=FILE.safetensors")
        head = load_head(Path(spec.head).expanduser(), model.config.projection_dim, device)
    elif spec.head is not None:
        raise ScorerError(f"scorer {spec.name} has no head; remove head={spec.head!r}")
    return ClipScorer(spec, model, tokenizer, head, device)
