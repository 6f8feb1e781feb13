"""What a policy directory holds, and reading its parts without torch.

A *policy directory*: ``config.json`` + ``*.safetensors`` (+ ``generation_config.json``),
the tokenizer (``tokenizer.json``, ``flowforge_tokenizer.json``) and, after training,
``flowforge_run.json`` (the resolved run config). ``model.load_policy`` loads one with
transformers; ``design`` loads one with the numpy forward pass when it can. Both check it
here first, so a wrong directory gets the same message either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .tokenizer import META_FILE, PolicyTokenizer, load_tokenizer
from .vocab import VocabError

RUN_FILE = "flowforge_run.json"
WEIGHTS_FILE = "model.safetensors"


class PolicyLoadError(ValueError):
    """A policy directory that cannot be loaded; the message says what is missing."""


def require_policy_files(directory: Path) -> None:
    """PolicyLoadError unless `directory` has a config, weights and a policy tokenizer."""
    if not directory.is_dir():
        raise PolicyLoadError(f"{directory}: no such policy directory")
    missing = [name for name in ("config.json", META_FILE) if not (directory / name).is_file()]
    if not any(directory.glob("*.safetensors")):
        missing.append("*.safetensors weights")
    if missing:
        raise PolicyLoadError(
            f"{directory}: not a policy directory (missing {', '.join(missing)}); "
            "train one with `flowforge sft` or pass the directory it wrote"
        )


def load_policy_tokenizer(directory: Path) -> PolicyTokenizer:
    """The tokenizer of a policy directory, after checking the directory holds a policy
    (PolicyLoadError names what is missing or wrong)."""
    require_policy_files(directory)
    try:
        return load_tokenizer(directory)
    except VocabError as err:
        raise PolicyLoadError(str(err)) from None


def check_embedding_rows(directory: Path, rows: int, tokenizer: PolicyTokenizer) -> None:
    """PolicyLoadError when a model has fewer token embeddings than its tokenizer has tokens."""
    if rows < len(tokenizer):
        raise PolicyLoadError(
            f"{directory}: the model has {rows} token embeddings but the tokenizer "
            f"{len(tokenizer)}; they were not saved together"
        )


def read_run_config(directory: Path | str) -> dict[str, Any] | None:
    """The run config saved with a policy, or None for a policy saved without one."""
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def policy_kind(directory: Path | str) -> str:
    """What trained the policy (``flowforge_run.json`` kind: sft, comfygen_ft, grpo), or
    "unknown" for a policy saved without a run config."""
    return str((read_run_config(directory) or {}).get("kind", "unknown"))


def design_score_bin(directory: Path | str, tokenizer: PolicyTokenizer) -> int | None:
    """The score bin a design request asks of the policy: a ComfyGen-FT policy is asked for
    its top bin (like ComfyGen's high target score); any other policy for none."""
    if policy_kind(directory) != "comfygen_ft":
        return None
    return tokenizer.vocab.config.score_bins - 1
