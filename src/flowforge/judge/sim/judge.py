"""`SimJudge`: the simulated world behind the Judge contract (``--judge sim`` / ``sim:SEED``).

It stands in for "render the workflow with ComfyUI, then score the image with preference
models": `score` returns the simulated scorers of `scorers.py` for each (prompt, workflow,
seed), computed from the prompt's meaning (`embed.py`, `traits.py`), the workflow's pipeline
(`pipeline.py`) and the seeded hidden world (`world.py`, `terms.py`). Scores depend on the
prompt text, the workflow and the seed only.

What a real server would refuse, the judge refuses: a workflow that does not validate against
the judge's catalog gets ``JudgeResult(error=...)``, as does one the world does not model
(`UnsupportedWorkflowError`); neither ever gets a score.

As a real judge would, it writes the item's seed into the samplers, so a workflow's own seed
literals do not matter. Speed comes from caching: each distinct design (the workflow with the
item's prompt and the sampler seeds blanked out) is validated and read once; each prompt text
is embedded once (and kept on disk). A batch is then priced with a few numpy operations.

`true_quality` exposes the noise-free hidden quality. It is for tests, the audit and
benchmarks only: **no training, selection or tuning stage may call it** (design.md: everything
that learns sees the world only through `score`). The judge is not thread-safe.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ...workflow.api import WorkflowFormatError, from_api
from ...workflow.canonical import workflow_hash
from ...workflow.graph import GraphError
from ...workflow.schema import Catalog, catalog_from_object_info, default_catalog
from ...workflow.validate import validate
from ..base import JudgeItem, JudgeResult
from .embed import PromptEncoder
from .pipeline import UnsupportedWorkflowError, read_pipeline
from .scorers import key_of, score_all
from .terms import ROW, group_utilities, pipeline_row, quality
from .traits import K, TraitModel, build_trait_model
from .world import World, WorldConfig

#: What the item's prompt is replaced by in a design's cache key.
PLACEHOLDER = "\x00PROMPT\x00"
_SEED_INPUTS = {"KSampler": "seed", "KSamplerAdvanced": "noise_seed"}
_TEXT_INPUTS = frozenset({"text", "text_g", "text_l"})
_MAX_ERRORS_SHOWN = 5


@cache
def default_object_info() -> Mapping[str, Any]:
    """The shipped ``/object_info`` JSON (the default catalog), read once."""
    path = resources.files("flowforge").joinpath("resources", "comfyui", "object_info.json")
    data: Mapping[str, Any] = json.loads(path.read_text("utf-8"))
    return data


class _Rows:
    """An append-only float table that grows by doubling (rows of the caches)."""

    def __init__(self, width: int) -> None:
        self.data = np.zeros((64, width))
        self.count = 0

    def append(self, row: NDArray[np.float64]) -> int:
        if self.count == len(self.data):
            self.data = np.concatenate([self.data, np.zeros_like(self.data)])
        self.data[self.count] = row
        self.count += 1
        return self.count - 1


def design_key(workflow: Mapping[str, Any], prompt: str) -> tuple[dict[str, Any], bool]:
    """The workflow with prompt texts equal to `prompt` made `PLACEHOLDER`, sampler seeds 0,
    no ``_meta``: what decides the design's quality, whatever the request.

    Returns the normalised API JSON and whether the prompt was found as a whole input value.
    Anything that is not API-shaped is returned as is, for `from_api` to report.
    """
    normalised: dict[str, Any] = {}
    replaced = False
    for node_id, body in workflow.items():
        if not isinstance(body, Mapping) or not isinstance(body.get("inputs", {}), Mapping):
            return dict(workflow), False
        class_type = body.get("class_type")
        seed_input = _SEED_INPUTS.get(class_type) if isinstance(class_type, str) else None
        inputs: dict[str, Any] = {}
        for name, value in body.get("inputs", {}).items():
            if name in _TEXT_INPUTS and value == prompt:
                inputs[name], replaced = PLACEHOLDER, True
            elif name == seed_input:
                inputs[name] = 0
            else:
                inputs[name] = value
        normalised[node_id] = {"class_type": class_type, "inputs": inputs}
    return normalised, replaced


class SimJudge:
    """The embedded simulated world as a Judge (see module docstring).

    `seed` picks the world; `object_info` is a ``/object_info`` JSON to validate against and
    to return (default: the shipped catalog); `cache_dir` holds prompt embeddings (default
    ``$FLOWFORGE_CACHE/sim`` or ``~/.cache/flowforge/sim``); `encoder` shares one encoder
    between judges.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        object_info: Mapping[str, Any] | None = None,
        cache_dir: Path | str | None = None,
        encoder: PromptEncoder | None = None,
        config: WorldConfig | None = None,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"the world seed must be an int, got {seed!r}")
        self.seed = seed
        self._object_info = object_info if object_info is not None else default_object_info()
        self.catalog: Catalog = (
            default_catalog()
            if object_info is None
            else catalog_from_object_info(object_info, source="SimJudge object_info")
        )
        self.world = World(seed, config, catalog=self.catalog)
        self._encoder = encoder if encoder is not None else PromptEncoder(cache_dir)
        self._trait_model: TraitModel | None = None
        self._prompts: dict[str, int] = {}
        self._traits = _Rows(K)
        self._prompt_keys: list[int] = []
        self._designs: dict[bytes, int | str] = {}
        self._by_hash: dict[str, int] = {}
        self._rows = _Rows(ROW)
        self._design_keys: list[int] = []

    def object_info(self) -> dict[str, Any]:
        """The catalog's ``/object_info`` JSON (a copy: callers may change it freely)."""
        return copy.deepcopy(dict(self._object_info))

    # --- prompts -------------------------------------------------------------------------

    @property
    def trait_model(self) -> TraitModel:
        if self._trait_model is None:
            self._trait_model = build_trait_model(self._encoder)
        return self._trait_model

    def prompt_traits(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """(N, K) prompt traits, embedding unseen texts in one batch. Simulator-internal."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._prompts))
        if missing:
            traits = self.trait_model.traits(self._encoder.encode(missing))
            for text, row in zip(missing, traits, strict=True):
                self._prompts[text] = self._traits.append(row)
                self._prompt_keys.append(key_of(text))
        return self._traits.data[[self._prompts[t] for t in texts]]

    # --- designs -------------------------------------------------------------------------

    def _design(self, item: JudgeItem) -> int | str:
        """Row index of the item's design in the cache, or the error message for it."""
        if not isinstance(item.prompt, str) or not item.prompt.strip():
            return "the item's prompt must be a non-empty string"
        if isinstance(item.seed, bool) or not isinstance(item.seed, int):
            return f"the item's seed must be an int, got {item.seed!r}"
        if not isinstance(item.workflow, Mapping):
            return f"the workflow must be API-format JSON (an object), got {type(item.workflow)}"
        normalised, replaced = design_key(item.workflow, item.prompt)
        text = json.dumps(normalised, sort_keys=True, ensure_ascii=False, default=repr)
        if not replaced:
            text = item.prompt + "\x00" + text  # the prompt is part of a longer text
        key = hashlib.sha1(text.encode("utf-8")).digest()
        entry = self._designs.get(key)
        if entry is None:
            marks = (PLACEHOLDER, item.prompt) if replaced else (item.prompt,)
            entry = self._read_design(normalised, marks)
            self._designs[key] = entry
        return entry

    def _read_design(self, data: dict[str, Any], marks: tuple[str, ...]) -> int | str:
        try:
            workflow = from_api(data, "workflow")
        except (WorkflowFormatError, GraphError) as error:
            return f"invalid workflow: {error}"
        report = validate(workflow, self.catalog)
        if not report.ok:
            shown = "; ".join(str(problem) for problem in report.errors[:_MAX_ERRORS_SHOWN])
            more = len(report.errors) - _MAX_ERRORS_SHOWN
            return f"invalid workflow: {shown}" + (f" (and {more} more)" if more > 0 else "")
        digest = workflow_hash(workflow)
        if digest in self._by_hash:
            return self._by_hash[digest]
        try:
            row = pipeline_row(self.world, read_pipeline(workflow, self.world.families, marks))
        except UnsupportedWorkflowError as error:
            return f"the simulator cannot judge this workflow: {error}"
        index = self._rows.append(row)
        self._design_keys.append(int(digest[:16], 16))
        self._by_hash[digest] = index
        return index

    # --- judging -------------------------------------------------------------------------

    def _utilities(
        self, items: Sequence[JudgeItem]
    ) -> tuple[list[int | str], list[int], NDArray[np.float64], list[int]]:
        """Per item: design row or error; the judgeable items, their group utilities and
        design rows."""
        entries = [self._design(item) for item in items]
        ok = [i for i, entry in enumerate(entries) if isinstance(entry, int)]
        design_rows = [int(entries[i]) for i in ok]
        traits = self.prompt_traits([items[i].prompt for i in ok])
        utilities = group_utilities(self.world, self._rows.data[design_rows], traits, grid=False)
        return entries, ok, utilities, design_rows

    def score(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        """One result per item, same order: scorer name -> score in 0..1, or an error."""
        entries, ok, utilities, design_rows = self._utilities(items)
        results = [
            JudgeResult(None, entry) if isinstance(entry, str) else None for entry in entries
        ]
        if ok:
            scores = score_all(
                utilities,
                self.world.config.offset,
                np.array(
                    [self._prompt_keys[self._prompts[items[i].prompt]] for i in ok], np.uint64
                ),
                np.array([self._design_keys[r] for r in design_rows], np.uint64),
                np.array([items[i].seed & (2**64 - 1) for i in ok], np.uint64),
                self.seed,
            )
            columns = {name: values.tolist() for name, values in scores.items()}
            for j, i in enumerate(ok):
                results[i] = JudgeResult({name: column[j] for name, column in columns.items()})
        return [result for result in results if result is not None]

    def true_quality(self, items: Sequence[JudgeItem]) -> list[float | None]:
        """The noise-free hidden quality (0..1) of each item; None where `score` errs.

        FOR TESTS, THE AUDIT AND BENCHMARKS ONLY. No training, selection or tuning stage may
        call it: those see the world only through `score` (design.md). The seed is ignored.
        """
        _, ok, utilities, _ = self._utilities(items)
        values = quality(self.world, utilities).tolist()
        out: list[float | None] = [None] * len(items)
        for j, i in enumerate(ok):
            out[i] = values[j]
        return out


def make_sim_judge(**options: Any) -> SimJudge:
    """Factory for ``--judge flowforge.judge.sim:make_sim_judge`` style loading.

    Options may be strings (as given on a command line): ``seed`` is converted to int,
    ``cache_dir`` to a path.
    """
    known = {"seed", "cache_dir"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"unknown sim option(s) {', '.join(unknown)}; known: seed, cache_dir")
    seed = options.get("seed", 0)
    cache_dir = options.get("cache_dir")
    return SimJudge(
        int(seed) if isinstance(seed, str) else seed,
        cache_dir=Path(cache_dir) if cache_dir is not None else None,
    )
