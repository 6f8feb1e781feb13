"""The sampling plan of a collection, and how a request is written into a design.

Pure functions of their inputs (and a seed), so that a plan is reproducible and can be
chosen up front and stored before anything is judged. `collect.plan_collection` calls
`plan_items` with the run's settings.

Writing the prompt into a workflow goes through the text form, the same way a designed
workflow is filled at design time: a library workflow becomes its text (prompt, negative and
seeds as ``$PROMPT``/``$NEGATIVE``/``$SEED``) once, and each item is
``from_text(text, Bindings.request(prompt, negative, seed))``. So what the judge scores is
exactly what the text form says, and two library workflows with the same text are the same
design: the plan keeps the first and counts the others as duplicates.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..workflow.api import to_api
from ..workflow.canonical import canonical_json, workflow_hash
from ..workflow.graph import Workflow
from ..workflow.schema import Catalog
from ..workflow.textform import Bindings, from_text, to_text
from .journal import PlanItem, StoredWorkflow
from .prompts import Prompt

#: Item seeds are drawn from [0, SEED_LIMIT): every ComfyUI seed input accepts them.
SEED_LIMIT = 2**31


class PlanError(ValueError):
    """Inputs that cannot make a plan (repeated prompt ids, a workflow without a prompt)."""


@dataclass(frozen=True)
class Plan:
    """The items to judge (in judging order) and the workflows they use."""

    items: tuple[PlanItem, ...]
    workflows: tuple[StoredWorkflow, ...]
    duplicates: int  # library workflows dropped as the same text form as an earlier one


def fill_workflow(text: str, prompt: str, negative: str, seed: int) -> dict[str, Any]:
    """The API JSON a judge receives: a design's text form with the request written in."""
    return to_api(from_text(text, Bindings.request(prompt, negative, seed)))


class RequestTemplate:
    """`fill_workflow` for one design and negative, made cheap for many prompts and seeds.

    Parsing the text form costs about 0.4 ms per item, as much as the sim judge's budget.
    So the text is filled once with markers for the prompt and the seed, and each request
    replaces the markers in that JSON text and decodes it. The result equals
    `fill_workflow` for every non-empty prompt (an empty one would also drop the separators
    after it, see textform.py; plans never hold one); a test checks that equality.
    """

    _PROMPT = "\ue000flowforge-prompt\ue000"  # private-use characters: in no real text
    _SEED = 10**40 + 271828  # a seed no workflow has: 41 digits

    def __init__(self, text: str, negative: str) -> None:
        filled = fill_workflow(text, self._PROMPT, negative, self._SEED)
        self._json = json.dumps(filled, ensure_ascii=False)

    def fill(self, prompt: str, seed: int) -> dict[str, Any]:
        """The API JSON for one request (a new dict each call: judges may keep it)."""
        if not prompt:
            raise ValueError("a request template needs a non-empty prompt")
        quoted = json.dumps(prompt, ensure_ascii=False)[1:-1]
        text = self._json.replace(str(self._SEED), str(seed)).replace(self._PROMPT, quoted)
        filled: dict[str, Any] = json.loads(text)
        return filled


def describe_library(
    library: Mapping[str, Workflow], catalog: Catalog
) -> tuple[list[StoredWorkflow], int]:
    """Each distinct design of the library (name -> workflow) as stored, in library order,
    and how many workflows were dropped as repeats of an earlier design.

    A workflow must have a prompt text the request can be written into ($PROMPT); one that
    has none, or a number off the text form's grids, is an error naming it.
    """
    stored: list[StoredWorkflow] = []
    texts: set[str] = set()
    for name, workflow in library.items():
        try:
            text, bindings = to_text(workflow, catalog)
        except ValueError as error:  # TextFormError, or GraphError for a cycle
            raise PlanError(f"library workflow {name}: {error}") from None
        if not any(key.startswith("$PROMPT") for key, _ in bindings.pairs):
            raise PlanError(
                f"library workflow {name} has no prompt text input to write the prompt into "
                "(no $PROMPT in its text form)"
            )
        if text in texts:
            continue
        texts.add(text)
        stored.append(StoredWorkflow(workflow_hash(workflow), canonical_json(workflow), text))
    return stored, len(library) - len(stored)


def plan_items(
    prompts: Sequence[Prompt],
    library: Mapping[str, Workflow],
    *,
    pairs: int | None,
    seeds: int,
    seed: int,
    judge_id: str,
    catalog: Catalog,
    library_sample: int | None = None,
) -> Plan:
    """The sampling plan, a pure function of its inputs and `seed`.

    `library_sample` keeps a uniform sample of that many of the library's distinct designs
    (drawn first, with `seed`), the rest of the plan is made over them: a grid of few
    workflows on many prompts is ComfyGen's data shape (every one of its 310 workflows on
    each of 500 prompts), which its fine-tuned baseline learned from (docs/evaluation.md).
    None keeps every design (and draws nothing, so plans made before it are unchanged).

    ``pairs=None`` is the full grid: every prompt with every workflow. Otherwise `pairs`
    (prompt, workflow) pairs spread evenly over the prompts (each gets pairs // P or one more
    workflows, drawn without replacement), as within-prompt comparisons are what reward
    models learn from. Each pair is judged with the prompt's `seeds` seeds, shared by all its
    workflows (paired comparisons, as ComfyGen rendered every workflow of a prompt alike).
    Items are shuffled, so a run stopped early is still a uniform sample of the plan.
    """
    ids = [prompt.id for prompt in prompts]
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise PlanError(f"prompt id {repeated!r} appears twice in the prompt set")
    if any(not prompt.text for prompt in prompts):
        raise PlanError("a prompt has an empty text; every item needs a prompt")
    workflows, duplicates = describe_library(library, catalog)
    if not prompts or not workflows:
        raise PlanError(f"nothing to plan: {len(prompts)} prompts, {len(workflows)} workflows")
    rng = random.Random(seed)
    if library_sample is not None:
        workflows = _sample_designs(rng, workflows, library_sample)
    n_prompts, n_workflows = len(prompts), len(workflows)
    if pairs is None:
        chosen = [(p, w) for p in range(n_prompts) for w in range(n_workflows)]
    else:
        chosen = _stratified_pairs(rng, n_prompts, n_workflows, pairs)
    prompt_seeds = [rng.sample(range(SEED_LIMIT), seeds) for _ in prompts]
    triples = [(p, w, s) for p, w in chosen for s in prompt_seeds[p]]
    rng.shuffle(triples)
    items = tuple(
        PlanItem(index, prompts[p].id, prompts[p].text, workflows[w].hash, s, judge_id)
        for index, (p, w, s) in enumerate(triples)
    )
    return Plan(items=items, workflows=tuple(workflows), duplicates=duplicates)


def _sample_designs(
    rng: random.Random, workflows: list[StoredWorkflow], count: int
) -> list[StoredWorkflow]:
    """`count` of `workflows`, uniformly without replacement, in library order."""
    if not 1 <= count <= len(workflows):
        raise PlanError(
            f"--library-sample {count}: the library has {len(workflows)} distinct workflows; "
            f"sample between 1 and {len(workflows)}"
        )
    return [workflows[i] for i in sorted(rng.sample(range(len(workflows)), count))]


def _stratified_pairs(
    rng: random.Random, n_prompts: int, n_workflows: int, n_pairs: int
) -> list[tuple[int, int]]:
    if n_pairs > n_prompts * n_workflows:
        raise PlanError(
            f"--pairs {n_pairs} is more than the {n_prompts} x {n_workflows} = "
            f"{n_prompts * n_workflows} pairs there are; use --grid for all of them"
        )
    per_prompt = [n_pairs // n_prompts] * n_prompts
    for p in rng.sample(range(n_prompts), n_pairs % n_prompts):
        per_prompt[p] += 1
    return [
        (p, w) for p, m in enumerate(per_prompt) for w in sorted(rng.sample(range(n_workflows), m))
    ]
