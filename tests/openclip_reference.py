"""OpenCLIP's CLIP (ViT image tower + causal text transformer), written down for the tests.

PyPI's torchvision cannot be imported beside this machine's CPU torch, and open_clip needs it,
so ``open_clip`` itself is not a test dependency. This module is the same model, written from
open_clip's ``model.py`` / ``transformer.py`` (3.3.0) with its module names, so its state dict
has OpenCLIP's keys: the converter's test runs on it always, and on open_clip itself where that
imports (tests/test_convert_openclip.py also checks that the two agree there).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm block: x + attn(ln_1(x)), then x + mlp(ln_2(x)); q, k, v in ``in_proj_*``."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, quick_gelu: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        act: nn.Module = QuickGELU() if quick_gelu else nn.GELU()
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, hidden)),
                    ("gelu", act),
                    ("c_proj", nn.Linear(hidden, width)),
                ]
            )
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        out: torch.Tensor = x + self.mlp(self.ln_2(x))
        return out


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float, quick: bool) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, mlp_ratio, quick) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, mask)
        return x


class VisionTransformer(nn.Module):
    """conv1 patches (no bias), class token, positions, ln_pre, blocks, ln_post on the class
    token, ``@ proj``."""

    def __init__(self, cfg: dict[str, Any], embed_dim: int, quick_gelu: bool) -> None:
        super().__init__()
        width, patch, size = cfg["width"], cfg["patch_size"], cfg["image_size"]
        heads = width // cfg.get("head_width", 64)
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width**-0.5)
        self.positional_embedding = nn.Parameter(
            torch.randn((size // patch) ** 2 + 1, width) * width**-0.5
        )
        self.ln_pre = nn.LayerNorm(width)
        mlp_ratio = cfg.get("mlp_ratio", 4.0)
        self.transformer = Transformer(width, cfg["layers"], heads, mlp_ratio, quick_gelu)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding
        x = self.ln_post(self.transformer(self.ln_pre(x)))
        return x[:, 0] @ self.proj


class ReferenceCLIP(nn.Module):
    """OpenCLIP's `CLIP` with a built-in text tower (top-level text keys, as ViT-H-14)."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        embed_dim, quick = config["embed_dim"], bool(config.get("quick_gelu", False))
        text = config["text_cfg"]
        self.visual = VisionTransformer(config["vision_cfg"], embed_dim, quick)
        width, context = text["width"], text["context_length"]
        self.token_embedding = nn.Embedding(text["vocab_size"], width)
        self.positional_embedding = nn.Parameter(torch.randn(context, width) * 0.01)
        mlp_ratio = text.get("mlp_ratio", 4.0)
        self.transformer = Transformer(width, text["layers"], text["heads"], mlp_ratio, quick)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed_dim) * width**-0.5)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        self.attn_mask: torch.Tensor
        mask = torch.full((context, context), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)  # type: ignore[no-any-return]

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        length = text.shape[1]
        x = self.token_embedding(text) + self.positional_embedding[:length]
        x = self.ln_final(self.transformer(x, self.attn_mask[:length, :length]))
        pooled: torch.Tensor = x[torch.arange(x.shape[0]), text.argmax(dim=-1)]
        return pooled @ self.text_projection
