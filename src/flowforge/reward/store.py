"""The model directory: safetensors weights + JSON, read back without unpickling anything.

::

    DIR/
      config.json          {"format": "flowforge-reward", "format_version": 1,
                            "config": RewardConfig, "training_score": TrainingScore,
                            "summary": {...}, "versions": {...}}
      members.safetensors  every member's tensors, keys "member{k}.{parameter}"
      vocab.json           minilm-frozen: workflow token vocabulary and scalar statistics
      backbone/            hf:<dir>: the backbone's config and tokenizer (JSON), no weights
      training_set.json    what the members saw: prompt-text digests and design ids, so that
                           evaluation can tell held-out prompts and workflows from seen ones

Writing goes to ``DIR.partial`` and is renamed at the end: a directory is complete or absent.
Reading checks every part and raises `RewardModelError` (a ValueError) with one line naming
the directory and what is wrong; weights are read with ``safetensors.torch.load_file``
(``torch.load`` never runs).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .config import RewardConfig
from .features import Vocab
from .target import TrainingScore

FORMAT = "flowforge-reward"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "members.safetensors"
VOCAB_FILE = "vocab.json"
BACKBONE_DIR = "backbone"
TRAINING_SET_FILE = "training_set.json"


class RewardModelError(ValueError):
    """A reward model directory that cannot be used. One line: the directory and the fault."""


def prompt_digest(text: str) -> str:
    """The key of a prompt text in ``training_set.json`` (16 hex digits of SHA-256)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def design_id(text: str) -> str:
    """A design's identity: SHA-256 of its text form, 32 hex digits (for a canonical text
    this is `workflow.textform.design_hash` of its workflow)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass(frozen=True)
class TrainingSet:
    """What the members were trained on (all members together), as digests."""

    prompts: frozenset[str]  # prompt_digest of each training prompt text
    designs: frozenset[str]  # design_id of each training design

    def to_json(self) -> dict[str, Any]:
        return {"prompts": sorted(self.prompts), "designs": sorted(self.designs)}


@dataclass(frozen=True)
class SavedModel:
    """Everything in a model directory except the backbone object itself."""

    directory: Path
    config: RewardConfig
    training_score: TrainingScore
    summary: dict[str, Any]
    member_states: list[dict[str, Tensor]]
    vocab: Vocab | None  # minilm-frozen
    backbone_dir: Path | None  # hf:
    training_set: TrainingSet


def save_model(
    directory: Path,
    header: dict[str, Any],
    members: Sequence[nn.Module],
    vocab: Vocab | None,
    save_backbone: Any,
    training_set: TrainingSet,
) -> Path:
    """Write a model directory atomically (``save_backbone(path)`` writes ``backbone/``)."""
    from safetensors.torch import save_file

    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    tensors = {
        f"member{k}.{name}": tensor.detach().contiguous().cpu()
        for k, member in enumerate(members)
        for name, tensor in member.state_dict().items()
    }
    save_file(tensors, str(partial / WEIGHTS_FILE))
    _write_json(
        partial / CONFIG_FILE, {"format": FORMAT, "format_version": FORMAT_VERSION, **header}
    )
    _write_json(partial / TRAINING_SET_FILE, training_set.to_json())
    if vocab is not None:
        _write_json(partial / VOCAB_FILE, vocab.to_json())
    if save_backbone is not None:
        (partial / BACKBONE_DIR).mkdir()
        save_backbone(partial / BACKBONE_DIR)
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(partial, directory)
    return directory


def json_format(path: Path) -> str | None:
    """The ``format`` tag of a JSON file, None if it has none or is not JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    tag = data.get("format") if isinstance(data, dict) else None
    return tag if isinstance(tag, str) else None


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _read_json(directory: Path, name: str) -> Any:
    path = directory / name
    if not path.is_file():
        raise RewardModelError(f"{directory}: not a reward model directory (no {name})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RewardModelError(f"{directory}: {name} is not valid JSON ({error})") from None


def read_model(directory: Path) -> SavedModel:
    """Read and check a model directory; RewardModelError (one line) for any fault."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RewardModelError(f"{directory}: no such reward model directory")
    header = _read_json(directory, CONFIG_FILE)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise RewardModelError(f"{directory}: {CONFIG_FILE} is not a flowforge reward model")
    if header.get("format_version") != FORMAT_VERSION:
        raise RewardModelError(
            f"{directory}: model format {header.get('format_version')!r}, this flowforge reads "
            f"{FORMAT_VERSION}"
        )
    try:
        config = RewardConfig.from_json(header.get("config"))
        training_score = TrainingScore.from_json(header.get("training_score"))
        training_set = _training_set(_read_json(directory, TRAINING_SET_FILE))
        vocab = (
            Vocab.from_json(_read_json(directory, VOCAB_FILE)) if config.hf_dir is None else None
        )
    except RewardModelError:
        raise
    except ValueError as error:  # RewardConfigError and the parts' own one-line errors
        raise RewardModelError(f"{directory}: {error}") from None
    backbone_dir = directory / BACKBONE_DIR if config.hf_dir is not None else None
    if backbone_dir is not None and not (backbone_dir / "config.json").is_file():
        raise RewardModelError(f"{directory}: an hf: model needs {BACKBONE_DIR}/config.json")
    states = _member_states(directory, config.members)
    summary = header.get("summary", {})
    return SavedModel(
        directory, config, training_score, summary, states, vocab, backbone_dir, training_set
    )


def _training_set(data: Any) -> TrainingSet:
    try:
        return TrainingSet(
            frozenset(map(str, data["prompts"])), frozenset(map(str, data["designs"]))
        )
    except (KeyError, TypeError):
        raise ValueError(f"{TRAINING_SET_FILE} needs 'prompts' and 'designs' lists") from None


def _member_states(directory: Path, members: int) -> list[dict[str, Tensor]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise RewardModelError(f"{directory}: not a reward model directory (no {WEIGHTS_FILE})")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise RewardModelError(f"{directory}: {WEIGHTS_FILE} is unreadable ({error})") from None
    states: list[dict[str, Tensor]] = [{} for _ in range(members)]
    for key, tensor in tensors.items():
        member, _, name = key.partition(".")
        index = int(member[len("member") :]) if member[len("member") :].isdigit() else -1
        if not member.startswith("member") or not 0 <= index < members or not name:
            raise RewardModelError(f"{directory}: unexpected tensor {key!r} in {WEIGHTS_FILE}")
        states[index][name] = tensor
    if any(not state for state in states):
        raise RewardModelError(
            f"{directory}: {WEIGHTS_FILE} holds fewer than the {members} members of its config"
        )
    return states


def load_state(directory: Path, member: nn.Module, state: dict[str, Tensor], index: int) -> None:
    """Load one member's tensors into a freshly built module, strictly (names and shapes)."""
    try:
        member.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else "mismatch"
        raise RewardModelError(
            f"{directory}: member {index}'s tensors do not fit the model its config describes "
            f"({first})"
        ) from None
