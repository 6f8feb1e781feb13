"""The shipped prompt sets, their fixed train / held-out split, and user prompt files.

flowforge is measured on prompts that no training stage has seen (method.md), so the split is
part of the data, not of a run: it is a pure function of the prompt id, the same on every
machine and in every stage, and documented in docs/prompts.md.

- PartiPrompts (Apache-2.0): 1,632 prompts in 12 categories, ids ``parti-0000`` ...
  ``parti-1631`` in file order. A prompt is held out when the first 8 bytes of
  ``sha256("flowforge-split-v1:" + id)``, read as a fraction of 2**64, are below
  `HELDOUT_SHARE` (0.2): about 20% of every category, chosen independently of its text.
  When that fraction is below `HELDOUT_SHARE + VALIDATION_SHARE` (0.3) instead, the prompt
  is a *validation* prompt (131 of them, 247 with GenEval's below): no stage trains on it
  either, and the run's choices (which GRPO seed to keep, which guidance weight to use) are
  judged on it. Why not on train
  prompts: a GRPO policy scored 1.14 by the judge on the train prompts it was optimised on
  and 0.00 on the held-out PartiPrompts (docs/evaluation.md), a gap a choice on train prompts
  cannot see.
- GenEval (MIT): 553 templated prompts (``a photo of two cows``), ids ``geneval-0000`` ...
  ``geneval-0552``, **never trained on**. GenEval is an evaluation benchmark whose prompts come
  from six templates over 80 object names; any share of it in training would put near-copies
  of the held-out prompts into SFT, reward and GRPO data, and ComfyGen reports it as an
  evaluation. A GenEval prompt whose fraction (the same hash) is below
  `GENEVAL_VALIDATION_SHARE` (0.2, 116 prompts) is a validation prompt, the rest are held
  out. Why (session 29, docs/prompts.md): two thirds of the evaluation's held-out prompts are
  GenEval's, and a run's policy wins or loses against the best fixed workflow there (on
  world 0, 39% to 70% of spare held-out GenEval prompts over five runs), where a choice
  judged on PartiPrompts alone preferred the policy in every run. Choosing among a handful of
  policies and weights is not training: it is what validation prompts drawn like the test
  prompts are for.

The two files are shipped unchanged under ``resources/prompts/`` with their licences (see
``ATTRIBUTION.md`` there).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal, get_args

Split = Literal["train", "validation", "heldout", "all"]
SPLITS: tuple[Split, ...] = get_args(Split)
SOURCES = ("parti", "geneval")
#: The share of PartiPrompts held out (GenEval: all but its validation share, see below).
HELDOUT_SHARE = 0.2
#: The share of PartiPrompts kept for validation: never trained on, used by a run's choices.
VALIDATION_SHARE = 0.1
#: The share of GenEval kept for validation (the rest held out; none is ever trained on).
GENEVAL_VALIDATION_SHARE = 0.2
_SPLIT_SALT = "flowforge-split-v1:"
#: Which prompts each split holds, per split: a new value whenever a prompt moves into or
#: out of that split. A ``flowforge run`` stage's key includes the versions of the splits it
#: reads (`Stage.splits`), so a resumed run redoes exactly the stages a moved prompt reaches
#: (GenEval's validation share, session 29: the choices and the evaluation, not the 25
#: minutes of training on an unchanged train split) rather than keep data collected on
#: prompts that are now validation or held-out prompts.
SPLIT_VERSIONS: dict[str, str] = {
    "train": "2-validation",
    "validation": "3-geneval-validation",
    "heldout": "3-geneval-validation",
}
_MAX_PROMPT_CHARS = 2_000
_MAX_FILE_BYTES = 64 * 1024 * 1024


class PromptFileError(ValueError):
    """A prompt file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class Prompt:
    """One prompt: a stable id (the key everywhere a prompt is stored), its text and origin."""

    id: str
    text: str
    source: str
    category: str


def split_of(prompt: Prompt) -> Literal["train", "validation", "heldout"]:
    """The fixed split of a shipped prompt (see the module docstring)."""
    digest = hashlib.sha256((_SPLIT_SALT + prompt.id).encode("utf-8")).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    if prompt.source == "geneval":
        return "validation" if fraction < GENEVAL_VALIDATION_SHARE else "heldout"
    if fraction < HELDOUT_SHARE:
        return "heldout"
    return "validation" if fraction < HELDOUT_SHARE + VALIDATION_SHARE else "train"


def _resource_text(name: str) -> str:
    return resources.files("flowforge").joinpath("resources", "prompts", name).read_text("utf-8")


@cache
def _parti() -> tuple[Prompt, ...]:
    rows = csv.DictReader(io.StringIO(_resource_text("PartiPrompts.tsv")), delimiter="\t")
    return tuple(
        Prompt(f"parti-{index:04d}", row["Prompt"].strip(), "parti", row["Category"])
        for index, row in enumerate(rows)
    )


@cache
def _geneval() -> tuple[Prompt, ...]:
    lines = _resource_text("geneval_evaluation_metadata.jsonl").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return tuple(
        Prompt(f"geneval-{index:04d}", str(record["prompt"]).strip(), "geneval", record["tag"])
        for index, record in enumerate(records)
    )


def load_prompts(split: Split = "all", source: str | None = None) -> list[Prompt]:
    """The shipped prompts of one split ("train", "validation", "heldout" or "all"),
    optionally one source.

    Order is file order, Parti first; the same on every call and machine.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if source is not None and source not in SOURCES:
        raise ValueError(f"unknown prompt source {source!r}: use one of {', '.join(SOURCES)}")
    prompts = [
        prompt
        for prompt in (*_parti(), *_geneval())
        if (source is None or prompt.source == source)
        and (split == "all" or split_of(prompt) == split)
    ]
    return prompts


@cache
def split_size(split: Split) -> int:
    """How many shipped prompts `split` holds (validation: 247): what a config asking for a
    sample of a split is checked against, so a count the split cannot give fails when the
    config is read, not silently capped by `fixed_sample`."""
    return len(load_prompts(split))


def sample_count_problem(name: str, count: int | None, split: Split, least: int = 1) -> str | None:
    """What is wrong with the setting `name` asking for `count` prompts of `split` (None:
    all of them), or None when nothing is: below `least` (0 where 0 switches the step off)
    or more than the split holds (`split_size`). One wording for every such setting (the
    refine choice's, the guidance choice's, the hand-over guard's)."""
    available = split_size(split)
    if count is None or least <= count <= available:
        return None
    return (
        f"{name} is {count}: {least} to the {split} split's {available} prompts, or unset for all"
    )


def fixed_sample(prompts: Sequence[Prompt], count: int | None = None) -> list[Prompt]:
    """The first `count` of `prompts` in sha256(id) order (all when None): a sample that is
    the same on every machine and for every seed, and grows by adding, never reshuffling.
    The evaluation, the sim's audit and reference texts and ``flowforge run``'s collection
    prompts all draw their samples this way."""
    ranked = sorted(prompts, key=lambda p: hashlib.sha256(p.id.encode("utf-8")).digest())
    return ranked if count is None else ranked[:count]


def load_paraphrases() -> list[tuple[str, str]]:
    """The shipped (prompt, paraphrase) pairs: same meaning, different words (for the audit)."""
    pairs = []
    for line in _resource_text("paraphrases.jsonl").splitlines():
        if line.strip():
            record = json.loads(line)
            pairs.append((str(record["prompt"]), str(record["paraphrase"])))
    return pairs


def prompt_id_for(text: str) -> str:
    """A content id for a user's prompt: the same text gets the same id in every file."""
    return "user-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _checked_text(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise PromptFileError(f"{where}: the prompt must be a string, found {type(text).__name__}")
    text = text.strip()
    if not text:
        raise PromptFileError(f"{where}: the prompt is empty")
    if len(text) > _MAX_PROMPT_CHARS:
        raise PromptFileError(f"{where}: the prompt is longer than {_MAX_PROMPT_CHARS} characters")
    return text


def _from_json_line(line: str, where: str, source: str) -> Prompt:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        raise PromptFileError(f"{where}: not JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(record, dict):
        raise PromptFileError(f"{where}: expected a JSON object with a 'prompt' or 'text' field")
    fields = [name for name in ("prompt", "text") if name in record]
    if len(fields) != 1:
        found = "both" if fields else "neither"
        raise PromptFileError(
            f"{where}: expected exactly one of the fields 'prompt' or 'text', found {found}"
        )
    text = _checked_text(record[fields[0]], where)
    given_id = record.get("id")
    if given_id is not None and (not isinstance(given_id, str) or not given_id.strip()):
        raise PromptFileError(f"{where}: 'id' must be a non-empty string")
    category = record.get("category", "")
    return Prompt(given_id or prompt_id_for(text), text, source, str(category))


def load_prompt_file(path: Path | str) -> list[Prompt]:
    """A user's prompts: ``.txt`` (one prompt per line; blank lines and ``#`` lines skipped) or
    ``.jsonl`` (one object per line with a ``prompt`` or ``text`` field, optional ``id`` and
    ``category``).

    Ids are given ids or content ids (`prompt_id_for`), so results stored under a prompt id stay
    valid when lines are added or reordered. A repeated id or text is an error naming both lines,
    as is anything else unreadable: nothing is skipped silently.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise PromptFileError(
            f"{path}: unknown prompt file type {path.suffix!r}; use .txt (one prompt per line) "
            "or .jsonl (objects with a 'prompt' or 'text' field)"
        )
    try:
        if path.stat().st_size > _MAX_FILE_BYTES:
            raise PromptFileError(f"{path}: larger than {_MAX_FILE_BYTES:,} bytes")
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise PromptFileError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError:
        raise PromptFileError(f"{path}: not UTF-8 text") from None
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (suffix == ".txt" and line.lstrip().startswith("#")):
            continue
        where = f"{path}:{number}"
        if suffix == ".txt":
            text = _checked_text(line, where)
            prompt = Prompt(prompt_id_for(text), text, path.stem, "")
        else:
            prompt = _from_json_line(line, where, path.stem)
        for key in (f"id {prompt.id}", f"text {prompt.text!r}"):
            if key in seen:
                raise PromptFileError(f"{where}: repeats the {key.split()[0]} of line {seen[key]}")
            seen[key] = number
        prompts.append(prompt)
    if not prompts:
        raise PromptFileError(f"{path}: no prompts in the file")
    return prompts
