"""Sampling: batched, left-padded, processors reach generate, samples parsed and validated."""

from __future__ import annotations

from policy_helpers import TINY, ForceText, library_texts, tiny_tokenizer

from flowforge.policy.model import build_tiny_model
from flowforge.policy.sample import sample_workflows
from flowforge.workflow.api import to_api

TOKENIZER = tiny_tokenizer()
MODEL = build_tiny_model(TOKENIZER, TINY, seed=0).eval()
PROMPTS = ["a red cat", "a very old stone castle on a green hill at night , with stars"]


def test_sampling_returns_parsed_workflows_with_the_request_filled_in() -> None:
    texts = [library_texts()[1], library_texts()[7]]
    force = ForceText([TOKENIZER.encode_workflow(t) for t in texts], TOKENIZER.eos_id)
    samples = sample_workflows(
        MODEL, TOKENIZER, PROMPTS, n=1, seed=7, logits_processors=[force], negative="blurry"
    )
    assert [s.text for s in samples] == texts
    assert all(s.valid and s.finished and s.error is None for s in samples)
    assert [s.prompt for s in samples] == PROMPTS
    first = samples[0].workflow
    assert first is not None
    api = to_api(first)
    texts_written = {n["inputs"]["text"] for n in api.values() if "text" in n["inputs"]}
    assert "a red cat" in texts_written
    seeds = [n["inputs"]["seed"] for n in api.values() if "seed" in n["inputs"]]
    assert seeds and set(seeds) == {7}


def test_untrained_policy_samples_are_reported_not_repaired() -> None:
    samples = sample_workflows(MODEL, TOKENIZER, PROMPTS, n=2, seed=0, max_new_tokens=12)
    assert len(samples) == 4
    assert not any(s.valid for s in samples)
    assert all(s.error for s in samples) and all(s.workflow is None for s in samples)
    assert all(len(s.token_ids) <= 12 for s in samples)


def test_samples_come_prompt_major_and_reproduce_for_a_seed() -> None:
    first = sample_workflows(MODEL, TOKENIZER, PROMPTS, n=3, seed=5, max_new_tokens=10)
    again = sample_workflows(MODEL, TOKENIZER, PROMPTS, n=3, seed=5, max_new_tokens=10)
    assert [s.prompt for s in first] == [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    assert [s.token_ids for s in first] == [s.token_ids for s in again]


def test_left_padding_does_not_change_greedy_samples() -> None:
    alone = [
        sample_workflows(MODEL, TOKENIZER, [p], temperature=0, max_new_tokens=16)[0]
        for p in PROMPTS
    ]
    batched = sample_workflows(MODEL, TOKENIZER, PROMPTS, temperature=0, max_new_tokens=16)
    assert [s.token_ids for s in batched] == [s.token_ids for s in alone]
