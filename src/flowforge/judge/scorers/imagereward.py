"""ImageReward v1.0 on transformers' BLIP modules, with its checkpoint converted (not pickled).

ImageReward (Xu et al. 2023) is BLIP: a ViT-L/16 image encoder at 224 px and a BERT-base
text encoder whose layers cross-attend to the image; the text encoder's first hidden state
goes through an MLP (the aesthetic head's shape, on 768 inputs) and is standardized with the
constants of ImageReward's release. transformers ships the same modules (`BlipVisionModel`,
`BlipTextModel` with cross-attention, the basis of its own BLIP ITM conversions), so the
computation is ImageReward's own; `convert_imagereward` renames the release's keys to them.

Differences from the reference code, all tested or documented in docs/comfyui.md:
- preprocessing is transformers' PIL CLIP pipeline (bicubic resize of the short side, centre
  crop, OpenAI mean/std) where ImageReward uses torchvision's on PIL images: the same
  operations, but the crop offset of an odd margin may differ by one pixel;
- the release is a pickle (``ImageReward.pt``); flowforge loads only the safetensors file
  that `convert_imagereward` writes from its tensors (see docs/comfyui.md for the one-off
  conversion).

Directory layout read here: ``config.json`` (a `BlipConfig`), ``model.safetensors`` (keys
``vision_model.*``, ``text_encoder.*``, ``head.layers.*``) and the BERT tokenizer files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, BlipConfig
from transformers.models.blip.modeling_blip import BlipVisionModel
from transformers.models.blip.modeling_blip_text import BlipTextModel

from .base import ImageScorer, ScorerError, ScorerSpec, resolve_model
from .clip import Head, clip_preprocessor

#: ImageReward v1.0's standardization of the head's output (ImageReward.py: mean, std).
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
#: ImageReward tokenizes prompts to exactly this many tokens (padding="max_length").
MAX_TOKENS = 35
#: Original ViT key fragments -> transformers' BlipVisionModel names (the same renames as
#: transformers' own BLIP conversion script).
_VISION_RENAMES = (
    (".blocks.", ".encoder.layers."),
    (".attn.qkv.", ".self_attn.qkv."),
    (".attn.proj.", ".self_attn.projection."),
    (".norm1.", ".layer_norm1."),
    (".norm2.", ".layer_norm2."),
)
_VISION_TOP = {
    "cls_token": "embeddings.class_embedding",
    "pos_embed": "embeddings.position_embedding",
    "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
    "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
    "norm.weight": "post_layernorm.weight",
    "norm.bias": "post_layernorm.bias",
}


def imagereward_config() -> BlipConfig:
    """BLIP as ImageReward v1.0 builds it: ViT-L/16 at 224 px (LayerNorm eps 1e-6), BERT-base
    text encoder cross-attending to 1024-d image tokens, 30,524 tokens (BERT + [DEC], [ENC])."""
    return BlipConfig(
        vision_config={
            "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
            "num_attention_heads": 16, "image_size": 224, "patch_size": 16,
            "layer_norm_eps": 1e-6, "hidden_act": "gelu",
        },
        text_config={"vocab_size": 30524, "encoder_hidden_size": 1024, "layer_norm_eps": 1e-12},
    )  # fmt: skip


def convert_imagereward(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release's tensors (``blip.visual_encoder.*``, ``blip.text_encoder.*``,
    ``mlp.layers.*``) under the names `load_imagereward` reads; other keys are dropped."""
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith("blip.visual_encoder."):
            name = key.removeprefix("blip.visual_encoder.")
            if name in _VISION_TOP:
                name = _VISION_TOP[name]
            else:
                name = "." + name
                for old, new in _VISION_RENAMES:
                    name = name.replace(old, new)
                name = name[1:]
            converted[f"vision_model.{name}"] = tensor.contiguous()
        elif key.startswith("blip.text_encoder."):
            converted["text_encoder." + key.removeprefix("blip.text_encoder.")] = tensor
        elif key.startswith("mlp.layers."):
            converted["head." + key.removeprefix("mlp.")] = tensor
    return converted


def save_imagereward(state: Mapping[str, torch.Tensor], config: BlipConfig, out: Path) -> None:
    """Write a directory `load_imagereward` reads from converted tensors (add the tokenizer
    files yourself: bert-base-uncased's, as in Salesforce/blip-itm-large-coco)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))


class ImageReward:
    """ImageReward's score: BLIP text-image features of the prompt's [CLS], MLP, standardized."""

    def __init__(
        self,
        vision: BlipVisionModel,
        text: BlipTextModel,
        head: Head,
        tokenizer: object,
        device: str,
    ) -> None:
        self.vision, self.text, self.head = vision, text, head
        self.tokenizer, self.device = tokenizer, device
        self.processor = clip_preprocessor(int(vision.config.image_size))  # type: ignore[arg-type]

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[float]:
        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        image_embeds = self.vision(pixel_values=pixels.to(self.device))[0]  # (B, 1+P, 1024)
        tokens = self.tokenizer(  # type: ignore[operator]
            list(prompts),
            padding="max_length",
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        ).to(self.device)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=self.device)
        hidden = self.text(
            input_ids=tokens["input_ids"],
            attention_mask=tokens["attention_mask"],
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
        ).last_hidden_state[:, 0, :]  # (B, 768)
        rewards = (self.head(hidden.float()).squeeze(-1) - REWARD_MEAN) / REWARD_STD
        return [float(v) for v in rewards.cpu()]


def load_imagereward(spec: ScorerSpec, device: str) -> ImageScorer:
    """Load ImageReward from a converted directory (see module docstring), every key checked."""
    path = resolve_model(spec.model)
    if spec.head is not None:
        raise ScorerError("imagereward's head is inside its model.safetensors; remove head=")
    try:
        config = BlipConfig.from_pretrained(path, local_files_only=True)
        state = load_file(str(path / "model.safetensors"))
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ScorerError(f"imagereward: cannot load {path}: {error}") from None
    sub: Any = config  # transformers types sub-configs loosely
    vision = BlipVisionModel(sub.vision_config)
    text = BlipTextModel(sub.text_config, add_pooling_layer=False)
    head = Head(int(sub.text_config.hidden_size))
    for prefix, module in (("vision_model.", vision), ("text_encoder.", text), ("head.", head)):
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            module.load_state_dict(part, strict=True)
        except RuntimeError as error:
            raise ScorerError(f"imagereward {path}: {' '.join(str(error).split())[:300]}") from None
    vision, text = vision.to(device).eval(), text.to(device).eval()  # type: ignore[arg-type]
    return ImageReward(vision, text, head.to(device).eval(), tokenizer, device)
