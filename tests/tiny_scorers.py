"""Tiny random scorer models built from configs, saved the way real checkpoints are laid out.

The tests then load them through flowforge's real loading and scoring code (no weights are
downloaded): a CLIP with a 2-layer, 32-wide tower per modality and a byte-level tokenizer,
an aesthetic head, and an ImageReward directory converted from release-style key names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BertTokenizer, BlipConfig, CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.models.blip.modeling_blip import BlipVisionModel
from transformers.models.blip.modeling_blip_text import BlipTextModel

from flowforge.judge.scorers.clip import Head
from flowforge.judge.scorers.imagereward import convert_imagereward, save_imagereward

CHARS = [chr(i) for i in range(33, 127)]


def make_tiny_clip(out: Path, seed: int = 0) -> Path:
    """A random CLIP (32 px images, 16-d projection) with its tokenizer, in HF layout."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(CHARS)}
    vocab |= {c + "</w>": len(CHARS) + i for i, c in enumerate(CHARS)}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt"))
    torch.manual_seed(seed)
    text = {
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": vocab["<|startoftext|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "pad_token_id": vocab["<|endoftext|>"],
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    CLIPModel(
        CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    ).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def make_tiny_head(path: Path, width: int = 16, seed: int = 0) -> Path:
    """A random aesthetic head (the LAION layer layout) as safetensors."""
    torch.manual_seed(seed)
    save_file(Head(width).state_dict(), str(path))
    return path


def tiny_imagereward_config() -> BlipConfig:
    return BlipConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
            "layer_norm_eps": 1e-6,
        },
        text_config={
            "vocab_size": 40,
            "hidden_size": 24,
            "intermediate_size": 48,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "encoder_hidden_size": 32,
            "max_position_embeddings": 64,
            "pad_token_id": 0,
            "bos_token_id": 2,
            "sep_token_id": 3,
        },
    )


def release_names(
    vision: BlipVisionModel, text: BlipTextModel, head: Head
) -> dict[str, torch.Tensor]:
    """The tensors under ImageReward.pt's names (BLIP's timm-style ViT, BERT, ``mlp.``),
    written from BLIP's module layout independently of flowforge's converter."""
    table = {
        "embeddings.class_embedding": "cls_token",
        "embeddings.position_embedding": "pos_embed",
        "embeddings.patch_embedding.weight": "patch_embed.proj.weight",
        "embeddings.patch_embedding.bias": "patch_embed.proj.bias",
        "post_layernorm.weight": "norm.weight",
        "post_layernorm.bias": "norm.bias",
    }
    state = {}
    for key, tensor in vision.state_dict().items():
        if key in table:
            name = table[key]
        else:
            parts = key.split(".")  # encoder.layers.N.<module>.<...>
            module = {"layer_norm1": "norm1", "layer_norm2": "norm2", "mlp": "mlp"}.get(parts[3])
            if parts[3] == "self_attn":
                module = "attn." + {"qkv": "qkv", "projection": "proj"}[parts[4]]
                parts = parts[:4] + parts[5:]
            name = ".".join(["blocks", parts[2], module, *parts[4:]])
        state[f"blip.visual_encoder.{name}"] = tensor
    state |= {f"blip.text_encoder.{k}": v for k, v in text.state_dict().items()}
    state |= {f"mlp.{k}": v for k, v in head.state_dict().items()}
    state["blip.vision_proj.weight"] = torch.zeros(4, 32)  # in the release, unused by the score
    return state


def make_tiny_imagereward(
    out: Path, seed: int = 0
) -> tuple[Path, tuple[BlipVisionModel, BlipTextModel, Head]]:
    """A random ImageReward, converted from release-style names and saved; also the modules."""
    torch.manual_seed(seed)
    config = tiny_imagereward_config()
    vision = BlipVisionModel(config.vision_config).eval()
    text = BlipTextModel(config.text_config, add_pooling_layer=False).eval()
    head = Head(24).eval()
    save_imagereward(convert_imagereward(release_names(vision, text, head)), config, out)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    (out / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizer(str(out / "vocab.txt")).save_pretrained(out)
    return out, (vision, text, head)


def write_scorers_file(root: Path) -> Path:
    """Every scorer kind on tiny models, with a standardization and weights."""
    clip = make_tiny_clip(root / "clip")
    make_tiny_head(root / "aesthetic_head.safetensors")
    make_tiny_imagereward(root / "imagereward")
    config = {
        "batch_size": 3,
        "threads": 1,
        "scorers": [
            {
                "name": "aesthetic",
                "model": "clip",
                "head": "aesthetic_head.safetensors",
                "mean": 0.1,
                "std": 2.0,
            },
            {"name": "clip", "model": str(clip), "weight": 0.5},
            {"name": "hps", "model": "clip"},
            {"name": "pickscore", "model": "clip"},
            {"name": "imagereward", "model": "imagereward", "weight": 2.0},
        ],
    }
    path = root / "scorers.json"
    path.write_text(json.dumps(config, indent=1))
    return path
