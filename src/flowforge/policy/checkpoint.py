"""Run directories that resume exactly after a kill: the run record, checkpoints, the log.

A run directory holds ``flowforge_run.json`` (kind, resolved config, finished or not,
versions), ``log.jsonl`` (one JSON line per step) and ``checkpoints/step-NNNNNN/``: a policy
directory (``model.py``: safetensors weights, tokenizer, the run record with its step) plus
``optimizer.pt`` and ``trainer_state.json`` (step, wall seconds so far).

- A checkpoint is written as ``step-N.partial`` and renamed when complete, so a kill while
  writing leaves the previous checkpoint as the newest complete one; the older ones beyond
  `KEEP` are deleted afterwards.
- Resuming restores the model from the newest checkpoint (`latest_checkpoint`, loaded by
  the caller with ``load_policy``), the optimizer state, and cuts the log back to the
  checkpoint's step: the steps after it are run again, identically.
- ``optimizer.pt`` is a torch file read back with ``weights_only=True`` (tensors and plain
  containers only, no code), the weights are safetensors.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from ..files import write_text_atomic
from ..settings import changed_settings
from .model import RUN_FILE, save_policy
from .tokenizer import PolicyTokenizer

LOG_FILE = "log.jsonl"
CHECKPOINTS = "checkpoints"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "trainer_state.json"
#: Checkpoints kept (the newest ones).
KEEP = 2


class RunDirError(ValueError):
    """A directory that holds another run, or something that is not a run."""


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a kill leaves the old file or the new one, never half)."""
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False))


def versions(*more: str) -> dict[str, str]:
    """Versions of the packages a run depends on (recorded with every run and checkpoint),
    and of `more` packages a kind of run also uses (SFT: trl, tokenizers, peft); one not
    installed is left out."""
    found = {}
    for name in ("flowforge", "torch", "transformers", "numpy", *more):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def run_record(kind: str, config: dict[str, Any], finished: bool, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "config": config, "finished": finished, **extra, "versions": versions()}


def open_run(
    out: Path,
    kind: str,
    config: dict[str, Any],
    added: Mapping[str, Any] | None = None,
    *,
    create: bool = True,
    out_key: str = "out",
) -> dict[str, Any] | None:
    """Create the run (writing its record) or check a resumed one: the same kind and config
    (the setting `out_key` aside, so a run can be moved); the record of a finished run, None
    otherwise. `added`: settings that came after runs existed
    (`flowforge.settings.added_defaults`), with the value a record written before them
    stands for. `create=False` only checks: a caller reads its inputs between the check and
    the creation, so a mistyped input leaves no record behind that would refuse the
    corrected command as "other settings". GRPO and SFT (and ComfyGen-FT) runs both open
    their directories here."""
    path = out / RUN_FILE
    if path.is_file():
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        changed = _changes(record, kind, config, added, out_key)
        if changed:
            raise RunDirError(
                f"{out} holds a {record.get('kind')} run with other settings "
                f"({', '.join(changed)}); use a new --out or the same settings"
            )
        return record if record.get("finished") else None
    if out.exists() and any(out.iterdir()):
        raise RunDirError(f"{out} exists and is not a {kind} run; choose an empty --out")
    if not create:
        return None
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, run_record(kind, config, finished=False))
    return None


def recorded_changes(
    out: Path,
    kind: str,
    config: dict[str, Any],
    added: Mapping[str, Any] | None = None,
    out_key: str = "out",
) -> list[str]:
    """What `open_run` would refuse: the settings (sorted; ``["kind"]`` for another kind of
    run) in which the run recorded in `out` differs from `config`; empty when none is
    recorded there or it is the same run. Lets a caller that owns `out` redo a run whose
    settings changed instead of refusing it (the refine rounds' re-paired SFT)."""
    path = out / RUN_FILE
    if not path.is_file():
        return []
    return _changes(json.loads(path.read_text(encoding="utf-8")), kind, config, added, out_key)


def _changes(
    record: dict[str, Any],
    kind: str,
    config: dict[str, Any],
    added: Mapping[str, Any] | None,
    out_key: str,
) -> list[str]:
    if record.get("kind") != kind:
        return ["kind"]
    return changed_settings(record.get("config", {}), config, out_key, added)


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    found = _checkpoints(out)
    return found[-1] if found else None


def _checkpoints(out: Path) -> list[Path]:
    folder = out / CHECKPOINTS
    found = folder.glob("step-*") if folder.is_dir() else []
    return sorted(p for p in found if p.is_dir() and not p.name.endswith(".partial"))


def save_checkpoint(
    out: Path,
    step: int,
    model: PreTrainedModel,
    tokenizer: PolicyTokenizer,
    optimizer: torch.optim.Optimizer,
    record: dict[str, Any],
    wall_seconds: float,
    files: Mapping[str, str] | None = None,
) -> Path:
    """Write ``checkpoints/step-N`` (module docstring) and drop the older ones. `files`
    (name -> text) are written into it too, inside the same atomic rename (a run's other
    state, such as GRPO's audits)."""
    final = out / CHECKPOINTS / f"step-{step:06d}"
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    save_policy(model, tokenizer, partial, run_config={**record, "checkpoint_step": step})
    torch.save(optimizer.state_dict(), partial / OPTIMIZER_FILE)
    write_json(partial / STATE_FILE, {"step": step, "wall_seconds": wall_seconds})
    for name, text in (files or {}).items():
        (partial / name).write_text(text, encoding="utf-8")
    partial.replace(final)
    for old in _checkpoints(out)[:-KEEP]:
        shutil.rmtree(old)
    return final


def restore(
    out: Path, optimizer: torch.optim.Optimizer, checkpoint: Path | None
) -> tuple[int, float]:
    """Load the optimizer state of `checkpoint` and cut the log back to its step (an empty
    log without one); returns (step, wall seconds so far)."""
    log = out / LOG_FILE
    if checkpoint is None:
        log.write_text("", encoding="utf-8")
        return 0, 0.0
    state = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    optimizer.load_state_dict(torch.load(checkpoint / OPTIMIZER_FILE, weights_only=True))
    step = int(state["step"])
    lines = log.read_text(encoding="utf-8").splitlines() if log.is_file() else []
    kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
    log.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    return step, float(state["wall_seconds"])
