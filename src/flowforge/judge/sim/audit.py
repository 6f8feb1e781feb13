"""`flowforge sim audit`: measure that a world is a hard, honest learning problem.

A world that one fixed workflow wins, or whose best designs are all in the library already,
would make the later stages meaningless (issue 3, design.md). The audit measures, over
held-out prompts and a library (default: 300 workflows built from the shipped seeds, library
seed 0), using the noise-free hidden quality q (evaluation-only):

(a) ``per_prompt_gain``: mean over prompts of (best library q for the prompt) minus the mean q
    of the best single fixed library workflow (the one with the highest mean over these same
    prompts: the strongest fixed baseline there is), in units of the *spread*: the std of q
    over the library, averaged over prompts. Required >= 0.5.
(b) ``beyond_library``: the share of prompts for which a search beyond the library finds a
    workflow whose q beats the prompt's best library q by >= 0.3 spread. The search is a
    greedy hill climb per prompt: start at the prompt's best library workflow, try
    `search_steps` single augmentations (`workflow.augment`, 50 by default: 5,000 for 100
    prompts) and keep each that improves q. Required >= 0.7.
(c) ``corr_<scorer>``: Pearson correlation of each scorer with q over random (prompt,
    library workflow, seed) items judged through `SimJudge.score`. Required in [0.6, 0.95]:
    informative, but not a copy of q.
(d) ``paraphrase_corr``: mean over the shipped paraphrase pairs of the correlation, over the
    library, of the quality profile of a prompt and of its paraphrase. Required >= 0.8.

Held-out prompts are the first `n_prompts` of the held-out split (Parti and GenEval) in the
order of sha256(prompt id): a fixed, seed-independent sample.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from rich.table import Table

from ...data.prompts import fixed_sample, load_paraphrases, load_prompts
from ...workflow.anatomy import AnatomyError, NotApplicableError, prompt_inputs
from ...workflow.api import to_api
from ...workflow.augment import augment
from ...workflow.graph import Workflow
from ...workflow.library import build_library, load_seed_library
from ...workflow.schema import default_catalog
from ..base import JudgeItem
from .judge import SimJudge
from .pipeline import UnsupportedWorkflowError, read_pipeline
from .scorers import SCORERS
from .terms import group_utilities, pipeline_row, quality


@dataclass(frozen=True)
class AuditConfig:
    """What the audit measures on; defaults are the documented audit (docs/sim.md)."""

    #: Held-out prompts audited.
    n_prompts: int = 100
    #: Size and seed of the default library (ignored when a library is given).
    library_size: int = 300
    library_seed: int = 0
    #: Hill-climbing augmentations per prompt for (b).
    search_steps: int = 50
    #: Random (prompt, library workflow, seed) items judged for (c).
    scorer_items: int = 10_000

    def __post_init__(self) -> None:
        if self.n_prompts < 2 or self.library_size < 2:
            raise ValueError("the audit needs at least 2 prompts and 2 library workflows")
        if self.search_steps < 1 or self.scorer_items < 10:
            raise ValueError("search_steps must be >= 1 and scorer_items >= 10")


@dataclass(frozen=True)
class AuditProperty:
    """One measured property and the range it must lie in."""

    name: str
    value: float
    low: float
    high: float | None
    meaning: str

    @property
    def passed(self) -> bool:
        return self.value >= self.low and (self.high is None or self.value <= self.high)

    def required(self) -> str:
        return f">= {self.low:g}" if self.high is None else f"{self.low:g} .. {self.high:g}"


@dataclass(frozen=True)
class AuditResult:
    """The audit of one world: its properties, the spread unit and the sizes used."""

    seed: int
    n_prompts: int
    library_size: int
    spread: float
    properties: tuple[AuditProperty, ...]
    seconds: float

    HEADER = ("property", "measured", "required", "pass", "meaning")

    @property
    def passed(self) -> bool:
        return all(p.passed for p in self.properties)

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """Table rows (see HEADER), ready for rich or plain printing."""
        return [
            (p.name, f"{p.value:.3f}", p.required(), "yes" if p.passed else "NO", p.meaning)
            for p in self.properties
        ]

    def value(self, name: str) -> float:
        return next(p.value for p in self.properties if p.name == name)

    def table(self) -> Table:
        """A rich table of `rows`, titled with the world, sizes and verdict."""
        verdict = "all properties hold" if self.passed else "SOME PROPERTIES FAIL"
        table = Table(
            title=f"sim:{self.seed} audit: {self.n_prompts} held-out prompts, "
            f"{self.library_size} library workflows, spread {self.spread:.3f} ({verdict})"
        )
        for column in self.HEADER:
            table.add_column(column)
        for row in self.rows():
            table.add_row(*row, style=None if row[3] == "yes" else "bold red")
        return table


def audit_prompts(n: int) -> list[str]:
    """The first `n` held-out prompts in sha256(id) order (fixed, seed-independent)."""
    return [prompt.text for prompt in fixed_sample(load_prompts("heldout"), n)]


def default_library(size: int = 300, seed: int = 0) -> list[Workflow]:
    """The library the audit uses by default: built from the shipped seeds."""
    entries = build_library(load_seed_library(), default_catalog(), size, seed)
    return [entry.workflow for entry in entries]


def with_prompt(workflow: Workflow, prompt: str) -> dict[str, object]:
    """API JSON of `workflow` with `prompt` written into its positive prompt inputs."""
    for node_id, name in prompt_inputs(workflow):
        workflow = workflow.replace_node(workflow.node(node_id).with_inputs(**{name: prompt}))
    return to_api(workflow)


def _rows(judge: SimJudge, workflows: Sequence[Workflow]) -> NDArray[np.float64]:
    world = judge.world
    return np.stack(
        [pipeline_row(world, read_pipeline(w, world.families, None)) for w in workflows]
    )


def _quality_grid(
    judge: SimJudge, rows: NDArray[np.float64], texts: Sequence[str]
) -> NDArray[np.float64]:
    traits = judge.prompt_traits(texts)
    return quality(judge.world, group_utilities(judge.world, rows, traits, grid=True))


def _climb(
    judge: SimJudge, start: Workflow, start_q: float, text: str, steps: int, rng: random.Random
) -> float:
    """Greedy hill climb over single augmentations; the best q reached."""
    world, catalog = judge.world, judge.catalog
    traits = judge.prompt_traits([text])
    current, best = start, start_q
    for _ in range(steps):
        try:
            candidate = augment(current, catalog, rng, 1)
            row = pipeline_row(world, read_pipeline(candidate, world.families, None))
        except (NotApplicableError, AnatomyError, UnsupportedWorkflowError):
            continue
        q = float(quality(world, group_utilities(world, row[None], traits, grid=True))[0, 0])
        if q > best:
            current, best = candidate, q
    return best


def _scorer_correlations(
    judge: SimJudge, library: Sequence[Workflow], texts: Sequence[str], n: int, seed: int
) -> dict[str, float]:
    """(c): each scorer's Pearson r with q over `n` random items judged through `score`."""
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        text, workflow = texts[rng.randrange(len(texts))], library[rng.randrange(len(library))]
        items.append(JudgeItem(text, with_prompt(workflow, text), rng.randrange(2**31)))
    pairs = [
        (result.scores, truth)
        for result, truth in zip(judge.score(items), judge.true_quality(items), strict=True)
        if result.scores is not None and truth is not None
    ]
    q = np.array([truth for _, truth in pairs])
    return {
        scorer.name: float(np.corrcoef([scores[scorer.name] for scores, _ in pairs], q)[0, 1])
        for scorer in SCORERS
    }


def _search(
    judge: SimJudge,
    library: Sequence[Workflow],
    grid: NDArray[np.float64],
    texts: Sequence[str],
    steps: int,
) -> NDArray[np.float64]:
    """(b): per prompt, the q a hill climb from its best library workflow reaches."""
    rng = random.Random(judge.seed)
    best = grid.max(axis=1)
    return np.array(
        [
            _climb(judge, library[int(grid[p].argmax())], float(best[p]), text, steps, rng)
            for p, text in enumerate(texts)
        ]
    )


def _paraphrase_corr(judge: SimJudge, rows: NDArray[np.float64]) -> float:
    """(d): mean r of the quality profiles over the library of a prompt and its paraphrase."""
    pairs = load_paraphrases()
    first = _quality_grid(judge, rows, [a for a, _ in pairs])
    second = _quality_grid(judge, rows, [b for _, b in pairs])
    return float(np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(first, second, strict=True)]))


def _properties(
    gain: float, beyond: float, correlations: dict[str, float], paraphrase: float
) -> tuple[AuditProperty, ...]:
    return (
        AuditProperty("per_prompt_gain", gain, 0.5, None, "(a) best per prompt vs best fixed"),
        AuditProperty(
            "beyond_library", beyond, 0.7, None, "(b) share of prompts a search improves by 0.3"
        ),
        *(
            AuditProperty(f"corr_{name}", value, 0.6, 0.95, f"(c) Pearson r of {name} with q")
            for name, value in correlations.items()
        ),
        AuditProperty("paraphrase_corr", paraphrase, 0.8, None, "(d) prompt vs paraphrase r"),
    )


def audit(
    seed: int = 0,
    config: AuditConfig | None = None,
    *,
    library: Sequence[Workflow] | None = None,
    judge: SimJudge | None = None,
    on_step: Callable[[str], None] | None = None,
) -> AuditResult:
    """Measure properties (a)-(d) of world `seed` (see the module docstring).

    `library` defaults to `default_library`; `judge` (whose seed must be `seed`) lets callers
    share an encoder; `on_step` is called with the name of each stage as it starts.
    """
    started = time.perf_counter()
    config = config or AuditConfig()
    step = on_step or (lambda _: None)
    judge = judge or SimJudge(seed)
    if judge.seed != seed:
        raise ValueError(f"the judge is world sim:{judge.seed}, the audit asks for sim:{seed}")
    step("library")
    if library is None:
        library = default_library(config.library_size, config.library_seed)
    texts = audit_prompts(config.n_prompts)
    step("quality grid")
    rows = _rows(judge, library)
    grid = _quality_grid(judge, rows, texts)  # (P, W)
    spread = float(grid.std(axis=1).mean())
    best = grid.max(axis=1)
    gain = float((best.mean() - grid.mean(axis=0).max()) / spread)
    step("search beyond the library")
    found = _search(judge, library, grid, texts, config.search_steps)
    beyond = float(np.mean((found - best) / spread >= 0.3))
    step("scorers")
    correlations = _scorer_correlations(judge, library, texts, config.scorer_items, seed)
    step("paraphrases")
    paraphrase = _paraphrase_corr(judge, rows)
    return AuditResult(
        seed=seed,
        n_prompts=len(texts),
        library_size=len(library),
        spread=spread,
        properties=_properties(gain, beyond, correlations, paraphrase),
        seconds=time.perf_counter() - started,
    )
