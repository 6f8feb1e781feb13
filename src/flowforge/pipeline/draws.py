"""Sampling policies for the refine rounds, spread over processes.

A refine round samples thousands of designs (9,592 by default) on one core while the other
idles, and the choice between the last round's policies samples again. `draw` runs the
sampling calls (`Draw`) in order in this process, or over `processes` spawned worker
processes; every call carries its own seeds, so the samples are the same either way (a test
checks it). Workers ignore Ctrl-C and exit when the stage process dies (`spawned.worker_pool`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..evaluate.designers import PolicyDesigner, SamplingSettings, load_for_design
from ..judge.loader import LoadedJudge
from ..policy.sampled import Sample
from ..spawned import worker_pool
from ..workflow.schema import Catalog

PROMPT_CHUNK = 64  # prompts per sampling call (one progress line each in the rounds)


@dataclass(frozen=True)
class RoundTools:
    """How the refine rounds sample and judge, the same for the rounds' judged designs
    (`refine.judge_designs`) and the choice among the last round's policies (`choose`)."""

    judge: LoadedJudge
    catalog: Catalog
    negative: str  # written into every design's $NEGATIVE (the collection's)
    max_new_tokens: int  # a design's token budget (GRPO's completion length)
    processes: int = 1  # processes that sample (`draw`); the samples do not depend on it
    say: Callable[[str], None] = print


def train_prompts(triplets: Any) -> dict[str, str]:
    """Prompt id -> prompt text of a table with the export's columns (the train prompts)."""
    ids, texts = triplets.column("prompt_id").to_pylist(), triplets.column("prompt").to_pylist()
    return dict(zip(ids, texts, strict=True))


@dataclass(frozen=True)
class Draw:
    """One sampling call: `n` designs for each of `prompts` from the policy in `policy`,
    with one seed per prompt (`PolicyDesigner.sample`)."""

    policy: Path
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    n: int


def draw(
    draws: Sequence[Draw],
    catalog: Catalog,
    settings: SamplingSettings,
    processes: int = 1,
    on_done: Callable[[Draw], None] | None = None,
) -> list[list[Sample]]:
    """Each draw's samples (prompt-major, as `PolicyDesigner.sample`), in the order of
    `draws`; with `processes` > 1 over that many spawned workers (each loads a policy once).
    `on_done` hears of each draw as its samples arrive, in order."""
    if processes <= 1 or len(draws) < 2:
        designers: dict[Path, PolicyDesigner] = {}
        found = []
        for one in draws:
            found.append(_sample(designers, catalog, settings, one))
            if on_done is not None:
                on_done(one)
        return found
    workers = min(processes, len(draws))
    setup = (catalog, settings)
    with worker_pool(workers, torch.get_num_threads(), _start_worker, setup) as pool:
        futures: list[Future[list[Sample]]] = [pool.submit(_work, one) for one in draws]
        found = []
        for one, future in zip(draws, futures, strict=True):
            found.append(future.result())
            if on_done is not None:
                on_done(one)
        return found


def _sample(
    designers: dict[Path, PolicyDesigner], catalog: Catalog, settings: SamplingSettings, one: Draw
) -> list[Sample]:
    designer = designers.get(one.policy)
    if designer is None:
        designer = designers[one.policy] = PolicyDesigner(
            load_for_design(one.policy), catalog, settings
        )
    return designer.sample(list(one.prompts), list(one.seeds), one.n)


_WORKER: dict[str, Any] = {}  # a worker's catalog, settings and loaded policies


def _start_worker(catalog: Catalog, settings: SamplingSettings) -> None:
    _WORKER.update(catalog=catalog, settings=settings, designers={})


def _work(one: Draw) -> list[Sample]:
    return _sample(_WORKER["designers"], _WORKER["catalog"], _WORKER["settings"], one)
