"""Checking designed texts and judging them: the only place an evaluation talks to a judge.

A designed text is first read as a workflow (`check_design`: parse with the request's
placeholders, validate against the judge's catalog). A text that fails never reaches the
judge: it is an invalid design, and its outcome carries the validation error. A valid
design is written into a request exactly as collection does (`data.plan.RequestTemplate`:
prompt, negative and render seed) and judged through the Judge contract.

`JudgeSession` sends items in batches, retries transient errors (``transient: ...`` or an
exception raised by ``Judge.score``) like collection does, and keeps every result by
(prompt, design, seed): two methods that design the same workflow for a prompt share one
render. It counts the distinct items it sent (`calls`); each method is charged for all of
its own items whether or not another method paid for them first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..data.plan import RequestTemplate
from ..judge.base import JudgeItem, JudgeResult
from ..judge.loader import LoadedJudge
from ..judge.sim.judge import SimJudge
from ..workflow.graph import GraphError
from ..workflow.schema import Catalog
from ..workflow.textform import Bindings, TextFormError, design_hash, from_text, to_text
from ..workflow.validate import validate

TRANSIENT = "transient:"
_READ_BINDINGS = Bindings.request("prompt", "", 0)  # a design's identity ignores the request


@dataclass(frozen=True)
class CheckedDesign:
    """A designed text read as a workflow: its canonical text and key, or why it is invalid."""

    text: str  # as designed
    canonical: str | None  # canonical text form (None: it does not parse)
    key: str | None  # design key (`textform.design_hash`); None: it does not parse
    error: str | None  # parse or first validation error; None: a valid design

    @property
    def valid(self) -> bool:
        return self.error is None

    @property
    def judgeable(self) -> bool:
        """Valid, and so with a canonical text: a design a judge is asked about (the
        second test only tells the type checker what the first implies)."""
        return self.error is None and self.canonical is not None


def check_design(text: str, catalog: Catalog) -> CheckedDesign:
    """Parse `text` and validate it against `catalog`; nothing is repaired."""
    try:
        workflow = from_text(text, _READ_BINDINGS)
        canonical = to_text(workflow, catalog)[0]
    except (TextFormError, GraphError) as err:
        return CheckedDesign(text, None, None, f"invalid: {err}")
    report = validate(workflow, catalog)
    problem = None if report.ok else f"invalid: {report.errors[0]}"
    return CheckedDesign(text, canonical, design_hash(workflow, catalog), problem)


def judged_requests(
    designs: Sequence[CheckedDesign],
    prompts: Sequence[str],
    render_seeds: Sequence[Sequence[int]],
) -> list[Key]:
    """The (text, prompt, seed) requests of the valid designs, one per render seed: each
    design **as written**, not its canonical text. Why: the canonical form names a design
    (its key, novelty, similarity) but can read its text slots differently from how a
    request fills them: a slot written "$NEGATIVE, embedding:X" that conditions both a
    negative and a positive input is a second $PROMPT there, and filled from a request both
    conditionings became the user's prompt. The judge renders what the policy wrote, as
    `flowforge design` hands it over and as collection and the refine rounds judge it."""
    return [
        (design.text, prompt, seed)
        for design, prompt, seeds in zip(designs, prompts, render_seeds, strict=True)
        if design.judgeable
        for seed in seeds
    ]


def error_kind(error: str) -> str:
    """The text before the first ':' (``invalid``, ``transient``, ``render``...)."""
    return error.split(":", 1)[0].strip() or "error"


Key = tuple[str, str, int]  # (design text, prompt, render seed)
RenderKey = tuple[str, str, int]  # (filled API JSON, prompt, render seed)


def _request_key(item: JudgeItem) -> RenderKey:
    """What makes two requests the same render: the filled API JSON, prompt and seed."""
    return (json.dumps(item.workflow, sort_keys=True, ensure_ascii=False), item.prompt, item.seed)


class JudgeSession:
    """Batched, cached, retrying access to a judge (module docstring)."""

    def __init__(
        self,
        judge: LoadedJudge,
        negative: str,
        batch: int,
        max_attempts: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.judge = judge
        self.negative = negative
        self.batch = batch
        self.max_attempts = max_attempts
        self.sleep = sleep
        self.calls = 0
        self._results: dict[RenderKey, JudgeResult] = {}
        self._templates: dict[str, RequestTemplate] = {}

    def item(self, text: str, prompt: str, seed: int) -> JudgeItem:
        """The request a judge receives for a design on a prompt with a render seed."""
        template = self._templates.get(text)
        if template is None:
            template = self._templates[text] = RequestTemplate(text, self.negative)
        return JudgeItem(prompt, template.fill(prompt, seed), seed)

    def judge_designs(self, requests: Sequence[Key]) -> list[JudgeResult]:
        """Results for (design text, prompt, seed) requests, judging only new ones: the
        cache is keyed by the filled request (`_request_key`), so two methods whose texts
        fill to the same API JSON (the same text, or one spelled with other spaces or
        quotes) share its render. The same graph with its nodes in another order is
        another request: policies write the canonical order they were trained on."""
        items = {request: self.item(*request) for request in dict.fromkeys(requests)}
        keys = {request: _request_key(item) for request, item in items.items()}
        todo = list({keys[r]: items[r] for r in items if keys[r] not in self._results}.items())
        for start in range(0, len(todo), self.batch):
            chunk = todo[start : start + self.batch]
            results = self.score([item for _, item in chunk])
            self._results.update(zip([key for key, _ in chunk], results, strict=True))
        return [self._results[keys[request]] for request in requests]

    def score(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        """Judge `items` (uncached), retrying transient errors up to `max_attempts` tries."""
        self.calls += len(items)
        results = self._call(items)
        for attempt in range(1, self.max_attempts):
            retry = [i for i, r in enumerate(results) if r.error and r.error.startswith(TRANSIENT)]
            if not retry:
                break
            self.sleep(min(2.0 ** (attempt - 1), 30.0))
            for i, result in zip(retry, self._call([items[i] for i in retry]), strict=True):
                results[i] = result
        return results

    def _call(self, items: Sequence[JudgeItem]) -> list[JudgeResult]:
        try:
            results = self.judge.judge.score(items)
        except Exception as error:  # a judge is outside code; its failure is transient
            message = f"{TRANSIENT} {type(error).__name__}: {error}"
            return [JudgeResult(None, message) for _ in items]
        if len(results) != len(items) or not all(isinstance(r, JudgeResult) for r in results):
            raise RuntimeError(
                f"judge {self.judge.judge_id} broke the Judge contract: "
                f"{len(results)} results for {len(items)} items"
            )
        return list(results)

    def true_quality(self, requests: Sequence[tuple[str, str, int]]) -> list[float | None] | None:
        """The sim's noise-free quality of each request, or None for any other judge.

        Evaluation only (docs/sim.md): no stage that learns or selects reads it."""
        judge = self.judge.judge
        if not isinstance(judge, SimJudge):
            return None
        return judge.true_quality([self.item(*request) for request in requests])
