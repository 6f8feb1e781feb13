"""What a sampler returns: `Sample`, and how generated token ids become one.

Shared by the transformers sampler (``sample.py``) and the numpy one (``numpy_sampler.py``),
so both parse and validate a generated text the same way: with ``from_text`` (placeholders
filled from ``Bindings.request(prompt, negative, seed)``), then against the catalog. It
imports neither torch nor transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowforge.workflow.graph import GraphError, Workflow
from flowforge.workflow.schema import Catalog
from flowforge.workflow.textform import Bindings, TextFormError, from_text
from flowforge.workflow.validate import validate

from .tokenizer import PolicyTokenizer

#: Room for the longest library workflow (~280 tokens) and then some: every sampler's budget.
DEFAULT_MAX_NEW_TOKENS = 384


@dataclass(frozen=True)
class Sample:
    """One generated workflow: its text, and the parsed workflow or why there is none."""

    prompt: str
    text: str  # the text form as generated (placeholders), up to <eos>
    workflow: Workflow | None  # parsed with the request's prompt, negative and seed
    error: str | None  # parse error, or the first validation error
    valid: bool  # parsed and validates against the catalog
    finished: bool  # the policy wrote <eos> within max_new_tokens
    token_ids: tuple[int, ...]  # generated ids, <eos> and padding excluded


def parse_request(
    text: str, prompt: str, negative: str, seed: int, catalog: Catalog
) -> tuple[Workflow | None, str | None, bool]:
    """A text form read for one request: (workflow or None, error or None, validates)."""
    try:
        workflow = from_text(text, Bindings.request(prompt, negative, seed))
    except (TextFormError, GraphError) as err:
        return None, str(err), False
    report = validate(workflow, catalog)
    return workflow, None if report.ok else str(report.errors[0]), report.ok


def to_sample(
    tokenizer: PolicyTokenizer,
    prompt: str,
    ids: list[int],
    negative: str,
    seed: int,
    catalog: Catalog,
) -> Sample:
    """The `Sample` of one row of generated ids (cut at ``<eos>``, padding dropped)."""
    finished = tokenizer.eos_id in ids
    kept = ids[: ids.index(tokenizer.eos_id)] if finished else ids
    kept = [i for i in kept if i != tokenizer.pad_id]
    text = tokenizer.decode_workflow(kept)
    workflow, error, valid = parse_request(text, prompt, negative, seed, catalog)
    if not finished and error is None:
        error = "no <eos> within max_new_tokens"
    return Sample(prompt, text, workflow, error, valid and finished, finished, tuple(kept))
