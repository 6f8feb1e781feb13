"""A Llama forward pass in numpy, for answering design requests without torch.

Why: a ``flowforge design`` command spends ~4.7 s importing torch and transformers before it
does 0.3 s of work (docs/benchmarks.md, "design latency"); numpy imports in 0.1 s. The policy
is small (the embedded default has ~1.5M parameters), so a numpy forward pass decodes it as
fast as torch does, and several times faster for a token at a time: GRPO samples its groups
with it (``rollout.py``). Training (and GRPO's update) and the evaluation use transformers.

What it computes is ``transformers``' ``LlamaForCausalLM`` at inference, in float32: token
embedding; per block RMSNorm, attention with rotary position embeddings (the "default" rope
type, grouped-query heads allowed), RMSNorm and the SwiGLU MLP, each with its residual; a
final RMSNorm and the output head (tied or not). `tests/test_numpy_llama.py` holds it to
transformers' logits on random models. `supports` says which configs it covers (plain Llama
and the pretrained SmolLM2 path); anything else (other architectures, scaled rope, biases)
is refused with the reason, and `flowforge design` then uses transformers.

Weights are read from ``model.safetensors`` with ``safetensors.numpy`` (never unpickled).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from safetensors.numpy import load_file

Array = NDArray[np.float32]

#: Which runtime samples a policy. ``auto``: this module when it supports the model (and no
#: transformers-only decoding hook is asked for), else transformers.
Runtime = Literal["auto", "numpy", "transformers"]


class UnsupportedModel(ValueError):
    """A model this forward pass does not implement; the message says which setting."""


@dataclass(frozen=True)
class LlamaShape:
    """The settings of a Llama config that the forward pass uses."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    rope_theta: float
    tied: bool


def supports(config: dict[str, Any]) -> LlamaShape:
    """The shape of a ``config.json`` this module can run, or UnsupportedModel saying why."""
    if config.get("model_type") != "llama":
        raise UnsupportedModel(f"model_type {config.get('model_type')!r} is not 'llama'")
    if config.get("hidden_act", "silu") != "silu":
        raise UnsupportedModel(f"hidden_act {config.get('hidden_act')!r} is not 'silu'")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise UnsupportedModel("attention or MLP biases")
    if config.get("pretraining_tp", 1) != 1:
        raise UnsupportedModel("pretraining_tp != 1")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise UnsupportedModel(f"rope type {rope.get('rope_type', rope.get('type'))!r}")
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    return LlamaShape(
        layers=int(config["num_hidden_layers"]),
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        head_dim=int(config.get("head_dim") or hidden // heads),
        eps=float(config.get("rms_norm_eps", 1e-6)),
        rope_theta=float(theta),
        tied=bool(config.get("tie_word_embeddings", True)),
    )


@dataclass
class KVCache:
    """Keys and values per layer, (members, rows, kv_heads, capacity, head_dim), filled to
    `length`; `pad` (rows,): each row's left padding (None: no row has any)."""

    keys: list[Array]
    values: list[Array]
    length: int
    pad: NDArray[np.intp] | None = None

    @property
    def rows(self) -> int:
        return int(self.keys[0].shape[1])

    def select(self, rows: NDArray[np.intp]) -> KVCache:
        """The cache of some rows (in the given order: repeat a row to fan a prompt out).

        Copies only the filled positions: rows leave a GRPO batch one by one, and copying
        the whole capacity each time cost more than the forward passes."""
        pad = None if self.pad is None else self.pad[rows]
        return KVCache(
            _rows(self.keys, rows, self.length),
            _rows(self.values, rows, self.length),
            self.length,
            pad,
        )


def _rows(layers: list[Array], rows: NDArray[np.intp], length: int) -> list[Array]:
    out = []
    for layer in layers:
        selected = np.empty((layer.shape[0], len(rows), *layer.shape[2:]), dtype=layer.dtype)
        selected[:, :, :, :length] = layer[:, rows, :, :length]
        out.append(selected)
    return out


def _rms_norm(x: Array, weight: Array, eps: float) -> Array:
    variance: Array = np.mean(x * x, axis=-1, keepdims=True)
    normed: Array = (x / np.sqrt(variance + np.float32(eps))) * weight
    return normed


def _silu(x: Array) -> Array:
    activated: Array = (x / (1.0 + np.exp(-x))).astype(np.float32, copy=False)
    return activated


def _rotate_half(x: Array) -> Array:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def _member_weights(shape: LlamaShape, weights: dict[str, Array]) -> dict[str, Array]:
    """One model's weights, laid out for `forward` (fused q|k|v and gate|up, transposed)."""
    out = {
        "embed": weights["model.embed_tokens.weight"],
        "head": weights["model.embed_tokens.weight" if shape.tied else "lm_head.weight"].T,
        "norm": weights["model.norm.weight"],
    }
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        qkv = [weights[f"{p}self_attn.{n}_proj.weight"].T for n in ("q", "k", "v")]
        gate_up = [weights[f"{p}mlp.{n}_proj.weight"].T for n in ("gate", "up")]
        out[f"{i}.norm1"] = weights[f"{p}input_layernorm.weight"]
        out[f"{i}.norm2"] = weights[f"{p}post_attention_layernorm.weight"]
        out[f"{i}.qkv"] = np.concatenate(qkv, axis=1)
        out[f"{i}.o"] = weights[f"{p}self_attn.o_proj.weight"].T
        out[f"{i}.gate_up"] = np.concatenate(gate_up, axis=1)
        out[f"{i}.down"] = weights[f"{p}mlp.down_proj.weight"].T
    return out


def _is_norm(key: str) -> bool:
    return key.endswith(("norm", "norm1", "norm2"))


def _layout(key: str, stacked: Array) -> Array:
    return np.ascontiguousarray(stacked[:, None] if _is_norm(key) else stacked)


def _member(key: str, laid_out: Array, index: int) -> Array:
    one: Array = laid_out[index, 0] if _is_norm(key) else laid_out[index]
    return one


class NumpyLlama:
    """One Llama, or several of one shape run side by side (`stack`): guided decoding runs
    the policy and its reference as two members of one forward pass, so the second model
    costs its arithmetic but not a second round of numpy calls (for a model this small the
    calls, not the arithmetic, are most of a step)."""

    def __init__(self, shape: LlamaShape, members: list[dict[str, Array]]) -> None:
        self.shape = shape
        self.members = len(members)
        # Activations are (members, rows * positions, features), so each linear layer is one
        # matrix product per member: norms (M, 1, H), matrices (M, in, out), embedding
        # (M, vocab, H).
        self._w = {k: _layout(k, np.stack([m[k] for m in members])) for k in members[0]}
        self._head_rows = np.ascontiguousarray(self._w["head"].transpose(0, 2, 1))  # (M, V, H)
        dim = shape.head_dim
        self._inv_freq = 1.0 / (shape.rope_theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))

    @classmethod
    def load(cls, directory: Path) -> NumpyLlama:
        """The model of a policy directory (UnsupportedModel if this module cannot run it)."""
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        supports(config)
        files = sorted(directory.glob("*.safetensors"))
        if len(files) != 1:
            raise UnsupportedModel(f"{len(files)} safetensors files (one expected)")
        return cls.from_weights(config, load_file(files[0]))

    @classmethod
    def from_weights(cls, config: dict[str, Any], weights: dict[str, NDArray[Any]]) -> NumpyLlama:
        """The model of a config dict and its state dict as arrays (a ``model.safetensors``'s
        names). GRPO builds one from the torch policy it trains, every step, to sample
        with (UnsupportedModel if this module cannot run the config)."""
        shape = supports(config)
        weights = {k: v.astype(np.float32, copy=False) for k, v in weights.items()}
        if not shape.tied and "lm_head.weight" not in weights:
            raise UnsupportedModel("an untied model without lm_head.weight")
        return cls(shape, [_member_weights(shape, weights)])

    @classmethod
    def stack(cls, models: list[NumpyLlama]) -> NumpyLlama:
        """`models` as members of one (ValueError unless they have one shape and vocabulary)."""
        first = models[0]
        if any(m.shape != first.shape or m.vocab_size != first.vocab_size for m in models):
            raise ValueError("only models of one shape and vocabulary run side by side")
        members = [
            {k: _member(k, v, i) for k, v in m._w.items()} for m in models for i in range(m.members)
        ]
        return cls(first.shape, members)

    @property
    def vocab_size(self) -> int:
        return int(self._w["embed"].shape[1])

    def new_cache(self, rows: int, capacity: int, pad: NDArray[np.intp] | None = None) -> KVCache:
        """An empty cache; `pad` (rows,) for prompts of different lengths, left-padded: the
        first `pad[row]` positions of a row are padding, never attended to by its real
        tokens, and the row's positions count from its first real token."""
        s = self.shape
        size = (self.members, rows, s.kv_heads, capacity, s.head_dim)
        keys = [np.zeros(size, dtype=np.float32) for _ in range(s.layers)]
        values = [np.zeros(size, dtype=np.float32) for _ in range(s.layers)]
        return KVCache(keys, values, 0, None if pad is None else np.asarray(pad, dtype=np.intp))

    def _rope_and_mask(
        self, start: int, end: int, pad: NDArray[np.intp] | None
    ) -> tuple[Array, Array, Array]:
        """cos and sin to broadcast over (members, rows, heads, T, D), and the additive
        attention mask over (members, rows, kv, group, T, S) for positions start..end."""
        absolute = np.arange(start, end)
        if pad is None:
            angles = absolute.astype(np.float64)[:, None] * self._inv_freq[None, :]  # (T, D/2)
            causal = np.triu(np.full((end - start, end), -np.inf, dtype=np.float32), k=start + 1)
        else:  # per row: positions from the first real token; padding seen only by itself
            positions = np.maximum(absolute[None, :] - pad[:, None], 0)  # (B, T)
            angles = positions.astype(np.float64)[:, None, :, None] * self._inv_freq
            keys, queries = np.arange(end), absolute[:, None]
            seen = (keys <= queries) & ((keys >= pad[:, None, None]) | (keys == queries))
            causal = np.where(seen, np.float32(0), np.float32(-np.inf))[:, None, None]
        angles = np.concatenate([angles, angles], axis=-1)  # as transformers' rope
        return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32), causal

    def forward(self, ids: NDArray[np.int64], cache: KVCache) -> Array:
        """Next-token logits (members, rows, vocab) after feeding `ids` (rows, T) to every
        member at the cache's end.

        Rows of prompts of different lengths are left-padded, with the padding given to
        `new_cache`. The cache grows by T in place.
        """
        return self.head(self.hidden(ids, cache))

    def head(self, hidden: Array) -> Array:
        """Logits (members, rows, vocab) of `hidden`'s states."""
        logits: Array = hidden @ self._w["head"]
        return logits

    def logits_at(self, hidden: Array, rows: NDArray[np.intp], tokens: NDArray[np.int64]) -> Array:
        """(members, k) logits of token ``tokens[i]`` for row ``rows[i]`` of `hidden`
        (`hidden`'s output): what a grammar-constrained sampler needs, when most positions
        allow a handful of the vocabulary's tokens (the full head was most of a step)."""
        picked: Array = np.einsum("mkh,mkh->mk", hidden[:, rows], self._head_rows[:, tokens])
        return picked

    def hidden(self, ids: NDArray[np.int64], cache: KVCache) -> Array:
        """The final normed hidden state (members, rows, H) of each row's last position, as
        `forward` (its logits are this times the output head)."""
        s, w = self.shape, self._w
        rows, steps = ids.shape
        start = cache.length
        end = start + steps
        if end > cache.keys[0].shape[3]:
            raise ValueError(f"the cache holds {cache.keys[0].shape[3]} positions, not {end}")
        cos, sin, causal = self._rope_and_mask(start, end, cache.pad)
        m, heads, kv, dim = self.members, s.heads, s.kv_heads, s.head_dim
        q_size, kv_size, group = heads * dim, kv * dim, heads // kv
        scale = np.float32(1.0 / np.sqrt(dim))
        x = w["embed"][:, ids.reshape(-1)]  # (M, B*T, H)
        for layer in range(s.layers):
            qkv = _rms_norm(x, w[f"{layer}.norm1"], s.eps) @ w[f"{layer}.qkv"]  # (M, B*T, .)
            q = qkv[..., :q_size].reshape(m, rows, steps, heads, dim).transpose(0, 1, 3, 2, 4)
            k = qkv[..., q_size : q_size + kv_size]
            k = k.reshape(m, rows, steps, kv, dim).transpose(0, 1, 3, 2, 4)
            v = qkv[..., q_size + kv_size :].reshape(m, rows, steps, kv, dim)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            cache.keys[layer][:, :, :, start:end] = k
            cache.values[layer][:, :, :, start:end] = v.transpose(0, 1, 3, 2, 4)
            keys = cache.keys[layer][:, :, :, :end]  # (M, B, KV, S, D)
            values = cache.values[layer][:, :, :, :end]
            q = q.reshape(m, rows, kv, group * steps, dim)
            scores = (q @ keys.swapaxes(-1, -2)) * scale  # (M, B, KV, G*T, S)
            scores = scores.reshape(m, rows, kv, group, steps, end) + causal
            scores = scores - scores.max(axis=-1, keepdims=True)
            weights = np.exp(scores)
            weights /= weights.sum(axis=-1, keepdims=True)
            attended = weights.reshape(m, rows, kv, group * steps, end) @ values
            attended = attended.reshape(m, rows, heads, steps, dim).transpose(0, 1, 3, 2, 4)
            x = x + attended.reshape(m, rows * steps, q_size) @ w[f"{layer}.o"]
            gate_up = _rms_norm(x, w[f"{layer}.norm2"], s.eps) @ w[f"{layer}.gate_up"]
            gate, up = np.split(gate_up, 2, axis=-1)
            x = x + (_silu(gate) * up) @ w[f"{layer}.down"]
        cache.length = end
        last = x.reshape(m, rows, steps, -1)[:, :, -1]  # (M, B, H)
        normed: Array = _rms_norm(last, w["norm"], s.eps)
        return normed
