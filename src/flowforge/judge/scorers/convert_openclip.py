"""Convert an OpenCLIP CLIP checkpoint (HPS v2.1's release) to a transformers `CLIPModel` folder.

HPS v2.1 (``HPS_v2.1_compressed.pt``) is an OpenCLIP ViT-H-14 fine-tuned by its authors and
published only as OpenCLIP tensors; flowforge's scorers read transformers' CLIP layout. The
two compute the same thing under other names, so the conversion is a renaming plus:

- attention: OpenCLIP's ``nn.MultiheadAttention`` keeps q, k and v stacked in
  ``attn.in_proj_weight`` / ``in_proj_bias`` (3 * width rows, in that order); transformers has
  ``self_attn.q_proj`` / ``k_proj`` / ``v_proj``;
- projections: OpenCLIP multiplies ``x @ visual.proj`` and ``x @ text_projection`` (width x
  embed); transformers' ``visual_projection`` / ``text_projection`` are bias-free ``nn.Linear``
  (embed x width): transposed;
- ``visual.class_embedding``, ``visual.positional_embedding``, ``visual.conv1`` (no bias),
  ``visual.ln_pre`` / ``ln_post``, ``token_embedding``, ``positional_embedding``, ``ln_final`` and
  ``logit_scale`` map one to one (``logit_scale`` of shape [1] becomes a scalar);
- the text tower is causal in both; OpenCLIP pools at ``text.argmax(-1)`` (the highest token id,
  ``<|endoftext|>`` = 49407 = vocab_size - 1 in CLIP's vocabulary), transformers at the first
  ``eos_token_id``. The config's ``eos_token_id`` is therefore vocab_size - 1, which selects the
  same position for any tokenization that ends each prompt with that token; a tokenizer copied
  into the directory must agree (checked). Padding after it changes nothing (causal attention).

What transformers' CLIP cannot express is refused with a one-line `ScorerError` (layer scale,
attentional pooling, custom attention blocks, SigLIP's ``logit_bias``, a Hugging Face or timm
tower, ...), and every checkpoint key must be used and every model weight filled.

Loading: the release is a torch pickle, and flowforge never unpickles what a user hands it, so
``.pt`` / ``.pth`` / ``.bin`` files go through ``torch.load(..., weights_only=True)`` (torch's
restricted unpickler: tensors and plain containers only, no code runs) and anything it refuses
is a one-line error; ``.safetensors`` files are read as such. Model shapes come from an OpenCLIP
model config (open_clip's ``model_configs/NAME.json`` format): a name below, a JSON file, or a
name found in an installed ``open_clip`` package (read as a file, never imported).

Command line (to be wired as ``flowforge scorers convert-openclip``; until then ``python -m
flowforge.judge.scorers.convert_openclip``): ``--checkpoint FILE --model-config ViT-H-14 --out
DIR [--tokenizer DIR] [--dtype float32]``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import pickle
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, CLIPConfig, CLIPModel

from .base import ScorerError

#: OpenCLIP's shipped model configs (open_clip 3.3.0, ``open_clip/model_configs/NAME.json``)
#: for the CLIPs this converter is meant for; ViT-H-14 is HPS v2.1's (and PickScore's) model.
OPENCLIP_CONFIGS: dict[str, dict[str, Any]] = {
    "ViT-H-14": {
        "embed_dim": 1024,
        "vision_cfg": {"image_size": 224, "layers": 32, "width": 1280, "head_width": 80,
                       "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1024, "heads": 16,
                     "layers": 24},
    },
    "ViT-L-14": {
        "embed_dim": 768,
        "vision_cfg": {"image_size": 224, "layers": 24, "width": 1024, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 768, "heads": 12,
                     "layers": 12},
    },
    "ViT-B-16": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                     "layers": 12},
    },
    "ViT-B-32": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8,
                     "layers": 12},
    },
    "ViT-bigG-14": {
        "embed_dim": 1280,
        "vision_cfg": {"image_size": 224, "layers": 48, "width": 1664, "head_width": 104,
                       "mlp_ratio": 4.9231, "patch_size": 14},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 1280, "heads": 20,
                     "layers": 32},
    },
}  # fmt: skip

#: Options that change the computation, with the only value transformers' CLIP can match
#: (OpenCLIP's defaults); any other value is refused.
_MUST: dict[str, Any] = {
    "ls_init_value": None,  # layer scale
    "act_kwargs": None,
    "qk_norm": False,
    "scaled_cosine_attn": False,
    "scale_heads": False,
    "scale_attn_inner": False,
    "scale_attn": False,
    "scale_fc": False,
}
_VISION_MUST = _MUST | {
    "attentional_pool": False,
    "no_ln_pre": False,
    "pos_embed_type": "learnable",
    "pool_type": "tok",
    "timm_model_name": None,
    "input_patchnorm": False,  # older open_clip
    "global_average_pool": False,  # older open_clip
}
_TEXT_MUST = _MUST | {
    "embed_cls": False,
    "no_causal_mask": False,
    "proj_bias": False,
    "proj_type": "linear",
    "hf_model_name": None,
}
#: Options read while building the config (shapes, activation, pooling, norm eps), or that
#: change nothing here: ``final_ln_after_pool`` (a LayerNorm per token commutes with picking
#: one token), ``block_type`` "default", and training or tokenizer settings.
_READ = {"layers", "width", "mlp_ratio", "norm_kwargs", "final_ln_after_pool", "block_type"}
_READ |= {"output_tokens"}
_VISION_READ = _READ | {"image_size", "head_width", "patch_size", "patch_dropout"}
_VISION_READ |= {"attn_pooler_queries", "attn_pooler_heads", "timm_model_pretrained"}
_VISION_READ |= {"timm_pool", "timm_proj", "timm_proj_bias", "timm_drop", "timm_drop_path"}
_TEXT_READ = _READ | {"context_length", "vocab_size", "heads", "eos_id", "pad_id", "pool_type"}
_TEXT_READ |= {"hf_tokenizer_name", "tokenizer_mode", "tokenizer_kwargs"}
_TEXT_READ |= {"hf_model_pretrained", "hf_proj_type", "hf_pooler_type"}
_TOP_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "custom_text"}
_TOP_KEYS |= {"nonscalar_logit_scale", "init_logit_bias"}

#: Files of a transformers CLIP tokenizer / processor that `--tokenizer DIR` copies if present.
TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: Keys a checkpoint may carry that no weight corresponds to (the causal mask buffer of old
#: open_clip versions; the shape hints of OpenAI's checkpoints).
_IGNORED_KEYS = {"attn_mask", "input_resolution", "context_length", "vocab_size"}

_BLOCK = re.compile(r"^(visual\.)?transformer\.resblocks\.(\d+)\.(.+)$")
_BLOCK_PARTS = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
}
_TOP = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
}
_TRANSPOSED = {
    "visual.proj": "visual_projection.weight",
    "text_projection": "text_projection.weight",
}


def load_openclip_config(model_config: str | Path) -> dict[str, Any]:
    """An OpenCLIP model config: a JSON file, a name of `OPENCLIP_CONFIGS`, or a name in the
    ``model_configs`` folder of an installed ``open_clip`` (located, not imported)."""
    path = Path(model_config).expanduser()
    if isinstance(model_config, Path) or path.suffix == ".json" or path.is_file():
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ScorerError(f"OpenCLIP model config {path}: {error}") from None
        return data
    name = str(model_config)
    if name in OPENCLIP_CONFIGS:
        copied: dict[str, Any] = json.loads(json.dumps(OPENCLIP_CONFIGS[name]))  # a deep copy
        return copied
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.origin is not None:
        shipped = Path(spec.origin).parent / "model_configs" / f"{name}.json"
        if shipped.is_file():
            return load_openclip_config(shipped)
    known = ", ".join(OPENCLIP_CONFIGS)
    raise ScorerError(
        f"unknown OpenCLIP model config {name!r}: give one of {known}, or a JSON file in "
        "open_clip's model_configs format"
    )


def _check_options(
    section: str, cfg: Mapping[str, Any], must: Mapping[str, Any], read: set[str]
) -> None:
    unknown = sorted(set(cfg) - set(must) - read)
    if unknown:
        raise ScorerError(
            f"OpenCLIP {section} has option(s) this converter does not know: {', '.join(unknown)}"
        )
    for key, value in cfg.items():
        if key in must and value != must[key]:
            raise ScorerError(
                f"OpenCLIP {section} {key}={value!r}: transformers' CLIP has no equivalent"
            )
    if cfg.get("block_type") not in (None, "default"):
        raise ScorerError(f"OpenCLIP {section} block_type={cfg['block_type']!r}: no equivalent")


def _layer_norm_eps(section: str, cfg: Mapping[str, Any]) -> float:
    norm = cfg.get("norm_kwargs") or {}
    if set(norm) - {"eps"}:
        raise ScorerError(f"OpenCLIP {section} norm_kwargs {norm!r}: only eps converts")
    return float(norm.get("eps", 1e-5))  # torch's LayerNorm default, as OpenCLIP's


def _square(section: str, value: Any) -> int:
    if isinstance(value, list | tuple):
        if len(value) != 2 or value[0] != value[1]:
            raise ScorerError(f"OpenCLIP {section} size {value!r}: only square sizes convert")
        value = value[0]
    return int(value)


def clip_config(
    openclip: Mapping[str, Any],
    *,
    dtype: torch.dtype = torch.float32,
    bos_token_id: int | None = None,
    pad_token_id: int | None = None,
) -> CLIPConfig:
    """transformers' `CLIPConfig` for an OpenCLIP model config (see module docstring)."""
    unknown = sorted(set(openclip) - _TOP_KEYS)
    if unknown:
        raise ScorerError(f"OpenCLIP model config has unknown key(s): {', '.join(unknown)}")
    if openclip.get("init_logit_bias") is not None:
        raise ScorerError("OpenCLIP config has init_logit_bias (SigLIP-style): no equivalent")
    vision, text = openclip.get("vision_cfg") or {}, openclip.get("text_cfg") or {}
    _check_options("vision_cfg", vision, _VISION_MUST, _VISION_READ)
    _check_options("text_cfg", text, _TEXT_MUST, _TEXT_READ)
    if not isinstance(vision.get("layers", 12), int):
        raise ScorerError("OpenCLIP vision_cfg layers is a list (a ResNet tower): ViTs only")
    embed_dim = int(openclip["embed_dim"])
    act = "quick_gelu" if openclip.get("quick_gelu") else "gelu"  # OpenCLIP: QuickGELU or nn.GELU

    vision_width = int(vision.get("width", 768))
    head_width = int(vision.get("head_width", 64))
    if vision_width % head_width:
        raise ScorerError(f"OpenCLIP vision width {vision_width} is not a multiple of {head_width}")
    vision_config = {
        "hidden_size": vision_width,
        "intermediate_size": int(vision_width * float(vision.get("mlp_ratio", 4.0))),
        "num_hidden_layers": int(vision.get("layers", 12)),
        "num_attention_heads": vision_width // head_width,
        "image_size": _square("vision_cfg image", vision.get("image_size", 224)),
        "patch_size": _square("vision_cfg patch", vision.get("patch_size", 16)),
        "hidden_act": act,
        "layer_norm_eps": _layer_norm_eps("vision_cfg", vision),
        "projection_dim": embed_dim,
    }

    vocab_size = int(text.get("vocab_size", 49408))
    pool = text.get("pool_type", "argmax")
    if pool == "argmax":  # OpenCLIP pools at the highest id: <|endoftext|> in CLIP's vocabulary
        eos = vocab_size - 1
    elif pool == "eos":
        eos = int(text.get("eos_id", 2))
        if eos == 2 and vocab_size - 1 != 2:  # transformers' CLIP pools at argmax for eos id 2
            raise ScorerError("OpenCLIP text pool_type 'eos' with eos_id 2 does not convert")
    else:
        raise ScorerError(f"OpenCLIP text pool_type {pool!r}: only 'argmax' and 'eos' convert")
    text_width, text_heads = int(text.get("width", 512)), int(text.get("heads", 8))
    if text_width % text_heads:
        raise ScorerError(
            f"OpenCLIP text width {text_width} is not a multiple of {text_heads} heads"
        )
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": text_width,
        "intermediate_size": int(text_width * float(text.get("mlp_ratio", 4.0))),
        "num_hidden_layers": int(text.get("layers", 12)),
        "num_attention_heads": text_heads,
        "max_position_embeddings": int(text.get("context_length", 77)),
        "hidden_act": act,
        "layer_norm_eps": _layer_norm_eps("text_cfg", text),
        "projection_dim": embed_dim,
        "eos_token_id": eos,
        "bos_token_id": vocab_size - 2 if bos_token_id is None else bos_token_id,
        "pad_token_id": int(text.get("pad_id", 0)) if pad_token_id is None else pad_token_id,
    }
    dtype_name = str(dtype).removeprefix("torch.")
    return CLIPConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=embed_dim,
        dtype=dtype_name,
    )


def load_openclip_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The tensors of an OpenCLIP checkpoint: a ``.safetensors`` file, or a torch file read with
    ``weights_only=True`` holding a state dict, possibly under ``state_dict`` (training
    checkpoints, HPS) and with DistributedDataParallel's ``module.`` prefix."""
    if not checkpoint.is_file():
        raise ScorerError(f"checkpoint {checkpoint}: no such file")
    if checkpoint.suffix == ".safetensors":
        try:
            return load_file(str(checkpoint))
        except Exception as error:  # safetensors raises its own error types
            raise ScorerError(
                f"checkpoint {checkpoint}: not a safetensors file ({error})"
            ) from None
    try:
        data = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:  # torch's restricted unpickler refused it
        why = _why(error)
        if "Unsupported global" in why:
            raise ScorerError(
                f"checkpoint {checkpoint} holds objects other than tensors and plain containers "
                f"({why}); flowforge loads torch files with weights_only=True only: re-save its "
                "state dict where you trust the file, or give a .safetensors file"
            ) from None
        raise ScorerError(
            f"checkpoint {checkpoint}: torch.load(weights_only=True) cannot read it ({why}); "
            "not a torch file of tensors?"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise ScorerError(f"checkpoint {checkpoint}: not a torch file ({_why(error)})") from None
    if isinstance(data, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(data.get(key), Mapping):
                data = data[key]
                break
    if not isinstance(data, Mapping) or not data:
        raise ScorerError(f"checkpoint {checkpoint}: no state dict in it")
    state: dict[str, torch.Tensor] = {}
    for key, value in data.items():
        if not isinstance(value, torch.Tensor):
            raise ScorerError(f"checkpoint {checkpoint}: entry {key!r} is not a tensor")
        state[str(key).removeprefix("module.")] = value
    return state


def _why(error: BaseException) -> str:
    """The informative line of a torch.load error, shortened (torch's run to many lines)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line[:200]
    return (lines[0] if lines else type(error).__name__)[:200]


def convert_openclip_state(
    state: Mapping[str, torch.Tensor], config: CLIPConfig, *, dtype: torch.dtype = torch.float32
) -> dict[str, torch.Tensor]:
    """OpenCLIP tensors under transformers' `CLIPModel` names, in `dtype`, checked against the
    model `config` describes: every weight filled with the right shape, every key used."""
    converted: dict[str, torch.Tensor] = {}
    unused: list[str] = []

    def put(name: str, tensor: torch.Tensor) -> None:
        if not tensor.is_floating_point():
            raise ScorerError(f"checkpoint tensor for {name} is {tensor.dtype}, not floating point")
        converted[name] = tensor.detach().to(dtype).clone().contiguous()

    for raw_key, tensor in state.items():
        key = raw_key.removeprefix("text.")  # CustomTextCLIP keeps its text tower under text.
        block = _BLOCK.match(key)
        if key in _TOP:
            put(_TOP[key], tensor)
        elif key in _TRANSPOSED:
            if tensor.dim() != 2:
                raise ScorerError(f"checkpoint {raw_key} has shape {list(tensor.shape)}, not 2-d")
            put(_TRANSPOSED[key], tensor.t())
        elif key == "logit_scale":
            put("logit_scale", tensor.reshape(()))
        elif block is not None:
            tower = "vision_model" if block.group(1) else "text_model"
            prefix = f"{tower}.encoder.layers.{block.group(2)}."
            part = block.group(3)
            if part in ("attn.in_proj_weight", "attn.in_proj_bias"):
                kind = part.rsplit("_", 1)[1]  # weight or bias
                if tensor.shape[0] % 3:
                    raise ScorerError(
                        f"checkpoint {raw_key}: {tensor.shape[0]} rows, not 3 * width"
                    )
                for name, chunk in zip(("q", "k", "v"), tensor.chunk(3, dim=0), strict=True):
                    put(f"{prefix}self_attn.{name}_proj.{kind}", chunk)
                continue
            module, _, leaf = part.rpartition(".")
            if module in _BLOCK_PARTS and leaf in ("weight", "bias"):
                put(f"{prefix}{_BLOCK_PARTS[module]}.{leaf}", tensor)
            else:
                unused.append(raw_key)
        elif key not in _IGNORED_KEYS:
            unused.append(raw_key)
    if unused:
        shown = ", ".join(sorted(unused)[:6]) + (" ..." if len(unused) > 6 else "")
        raise ScorerError(
            f"{len(unused)} checkpoint key(s) have no place in transformers' CLIP "
            f"(an OpenCLIP feature it lacks, or not an OpenCLIP CLIP): {shown}"
        )
    _check_shapes(converted, config)
    return converted


def _check_shapes(converted: Mapping[str, torch.Tensor], config: CLIPConfig) -> None:
    with torch.device("meta"):  # the model's names and shapes, no memory, no initialization
        expected = {k: tuple(v.shape) for k, v in CLIPModel(config).state_dict().items()}
    missing = sorted(set(expected) - set(converted))
    if missing:
        shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
        raise ScorerError(
            f"the checkpoint lacks {len(missing)} weight(s) of this model config (wrong "
            f"--model-config?): {shown}"
        )
    for name, shape in expected.items():
        if tuple(converted[name].shape) != shape:
            raise ScorerError(
                f"{name}: the checkpoint has shape {list(converted[name].shape)}, the model "
                f"config wants {list(shape)}; wrong --model-config?"
            )


def _tokenizer_ids(tokenizer: Path, config: CLIPConfig) -> tuple[int | None, int | None]:
    """Check a tokenizer folder against the converted model; its bos and pad ids."""
    present = [name for name in TOKENIZER_FILES if (tokenizer / name).is_file()]
    if not {"vocab.json", "tokenizer.json"} & set(present):
        raise ScorerError(f"tokenizer {tokenizer}: no vocab.json or tokenizer.json in it")
    try:
        loaded: Any = AutoTokenizer.from_pretrained(tokenizer, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ScorerError(f"tokenizer {tokenizer}: cannot load it ({_why(error)})") from None
    text: Any = config.text_config
    if loaded.eos_token_id != text.eos_token_id:
        raise ScorerError(
            f"tokenizer {tokenizer}: its end-of-text id is {loaded.eos_token_id}, but the model "
            f"pools at id {text.eos_token_id} (OpenCLIP: the highest id); not this model's"
        )
    if len(loaded) > text.vocab_size:
        raise ScorerError(
            f"tokenizer {tokenizer}: {len(loaded)} tokens, the model has {text.vocab_size}"
        )
    return loaded.bos_token_id, loaded.pad_token_id


def convert_openclip_checkpoint(
    checkpoint: Path,
    out: Path,
    *,
    model_config: str | Path,
    tokenizer: Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write `out` (created; files in it are overwritten) as a transformers `CLIPModel`
    directory: ``config.json``, ``model.safetensors`` (`dtype`), and the tokenizer / processor
    files of `tokenizer` if given (a transformers CLIP tokenizer folder, e.g. a local copy of
    ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, which HPS v2.1 shares). Without one, copy those
    files in before scoring (docs/comfyui.md). Returns `out`; any problem is a `ScorerError`."""
    checkpoint, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    openclip = load_openclip_config(model_config)
    config = clip_config(openclip, dtype=dtype)
    bos = pad = None
    if tokenizer is not None:
        tokenizer = Path(tokenizer).expanduser()
        bos, pad = _tokenizer_ids(tokenizer, config)
        config = clip_config(openclip, dtype=dtype, bos_token_id=bos, pad_token_id=pad)
    converted = convert_openclip_state(load_openclip_state(checkpoint), config, dtype=dtype)
    scale = float(converted["logit_scale"])
    config.logit_scale_init_value = scale if math.isfinite(scale) else 2.6592
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    save_file(converted, str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        for name in TOKENIZER_FILES:
            if (tokenizer / name).is_file() and tokenizer.resolve() != out.resolve():
                shutil.copyfile(tokenizer / name, out / name)
    return out
