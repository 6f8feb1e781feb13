"""`ComfyUIJudge`: the Judge contract on real ComfyUI servers and image preference scorers.

For each item the judge writes the item's seed into the workflow's seed inputs (the
collection already did; an outside caller may not have), renders it on a server of the pool,
rewrites the PNG's text chunks so the file holds exactly the judged workflow (and the UI
graph, when flowforge can lay one out) and keeps it under ``image_dir`` if one is given, then
scores the images of a batch together with the scorer set (see `flowforge.judge.scorers`).

Errors follow the collection's convention: ``transient:`` when every try failed for reasons
that may pass (a dead or busy server), ``invalid:`` when ComfyUI's validation refused the
prompt (the node errors are in the text, node by node and input by input), ``render:`` when
it ran and failed. Scores of an item with several images (a batch_size > 1 latent) are the
means over its images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from ...workflow.api import WorkflowFormatError, from_api
from ...workflow.canonical import canonicalize
from ...workflow.graph import GraphError
from ...workflow.schema import Catalog, catalog_from_object_info
from ...workflow.textform import SEED_INPUTS
from ...workflow.ui import to_ui
from ..base import JudgeItem, JudgeResult
from ..scorers.base import ScorerSet
from .client import ComfyUIClient
from .png import decode, save_atomic, with_workflow
from .pool import Outcome, ServerPool


def with_seed(workflow: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """A copy of API-format `workflow` with `seed` in every integer seed input (``seed``,
    ``noise_seed``: textform's SEED_INPUTS, the same inputs the text form writes as $SEED)."""
    copied: dict[str, Any] = json.loads(json.dumps(workflow))
    for body in copied.values():
        inputs = body.get("inputs") if isinstance(body, dict) else None
        if not isinstance(inputs, dict):
            continue
        for name in SEED_INPUTS & set(inputs):
            if type(inputs[name]) is int:  # a link or a converted widget stays as it is
                inputs[name] = seed
    return copied


@dataclass(frozen=True)
class Render:
    """What one server render produced for one item: the PNG files, chunks rewritten."""

    pngs: tuple[bytes, ...]
    server: str


class Renderer:
    """Turns an item into a `Render` on one client: seed in, UI graph attached, chunks set."""

    def __init__(self, catalog: Catalog | None, render_timeout: float) -> None:
        self.catalog, self.render_timeout = catalog, render_timeout

    def __call__(self, client: ComfyUIClient, item: JudgeItem) -> Render:
        workflow = with_seed(item.workflow, item.seed)
        ui = self.ui_graph(workflow)
        extra = {"workflow": ui} if ui is not None else None
        pngs = client.render(workflow, self.render_timeout, extra_pnginfo=extra)
        request = {"prompt": item.prompt, "seed": item.seed}
        return Render(
            tuple(with_workflow(p, workflow, ui, {"flowforge": request}) for p in pngs), client.url
        )

    def ui_graph(self, workflow: Mapping[str, Any]) -> dict[str, Any] | None:
        """The editor's graph for the PNG's ``workflow`` chunk, or None when the catalog
        cannot lay it out (then ComfyUI loads the ``prompt`` chunk instead)."""
        if self.catalog is None:
            return None
        try:
            return to_ui(canonicalize(from_api(workflow)), self.catalog)
        except (WorkflowFormatError, GraphError):
            return None


class Evaluator:
    """Scores a batch's renders together and keeps their PNGs (see module docstring)."""

    def __init__(self, scorers: ScorerSet, image_dir: Path | None) -> None:
        self.scorers, self.image_dir = scorers, image_dir

    def __call__(
        self, items: Sequence[JudgeItem], outcomes: Sequence[Outcome[Render]]
    ) -> list[JudgeResult]:
        images, prompts, owners = [], [], []
        for position, (item, outcome) in enumerate(zip(items, outcomes, strict=True)):
            if outcome.value is None:
                continue
            for index, png in enumerate(outcome.value.pngs):
                if self.image_dir is not None:
                    save_atomic(png, self.image_dir / f"{image_name(item)}_{index}.png")
                images.append(decode(png))
                prompts.append(item.prompt)
                owners.append(position)
        per_image = self.scorers.score(images, prompts)
        results = []
        for position, outcome in enumerate(outcomes):
            if outcome.value is None:
                results.append(JudgeResult(None, outcome.error or "render: no image"))
                continue
            mine = [
                scores for owner, scores in zip(owners, per_image, strict=True) if owner == position
            ]
            names = mine[0].keys() if mine else ()
            results.append(JudgeResult({n: sum(s[n] for s in mine) / len(mine) for n in names}))
        return results


def image_name(item: JudgeItem) -> str:
    """A file stem fixed by the request, so a render done twice overwrites, never duplicates."""
    text = json.dumps([item.prompt, item.workflow, item.seed], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:24]


class Executor(Protocol):
    """Where a batch is rendered and scored: this process (`LocalExecutor`) or Ray actors."""

    def object_info(self) -> dict[str, Any]: ...

    def judge(self, items: Sequence[JudgeItem]) -> list[JudgeResult]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """Renders on a thread pool over the servers, scores in this process."""

    def __init__(
        self,
        pool: ServerPool,
        evaluator: Evaluator,
        catalog_for: Callable[[Mapping[str, Any]], Catalog | None],
    ) -> None:
        self.pool, self.evaluator, self._catalog_for = pool, evaluator, catalog_for
        self._renderer: Renderer | None = None

    def object_info(self) -> dict[str, Any]:
        return self.pool.first(lambda client: client.object_info())

    def judge(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        if self._renderer is None:
            catalog = self._catalog_for(self.object_info())
            self._renderer = Renderer(catalog, self.pool.config.render_timeout)
        return self.evaluator(items, self.pool.map(self._renderer, items))

    def close(self) -> None:
        self.pool.close()


class ComfyUIJudge:
    """The Judge of ``--judge comfyui``: renders on ComfyUI servers, scores the images."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._object_info: dict[str, Any] | None = None

    def object_info(self) -> dict[str, Any]:
        """The first answering server's ``/object_info`` (read once)."""
        if self._object_info is None:
            self._object_info = self.executor.object_info()
        return self._object_info

    def score(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        """One result per item, in order: scores, or a ``transient:``/``invalid:``/``render:``
        error."""
        return self.executor.judge(list(items)) if items else []

    def close(self) -> None:
        self.executor.close()


def ui_catalog(object_info: Mapping[str, Any]) -> Catalog | None:
    """The server's catalog with widget declaration orders (a live server keeps them; the
    shipped table fills in for dumps that lost them), to lay out the PNG's UI graph."""
    order_file = resources.files("flowforge").joinpath("resources", "comfyui", "input_order.json")
    order = json.loads(order_file.read_text("utf-8"))
    return catalog_from_object_info(object_info, source="ComfyUI server", input_order=order)
