"""Sampling: batched, left-padded, processors reach generate, samples parsed and validated."""

from __future__ import annotations

import torch
from policy_helpers import TINY, ForceText, library_texts, tiny_tokenizer

from flowforge.policy.model import build_tiny_model
from flowforge.policy.sample import RowSampling, sample_workflows
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


def test_prompt_seeds_make_a_prompts_samples_independent_of_its_batch_mates() -> None:
    """With one seed per prompt, a prompt's samples are a function of the prompt and its
    seed: alone, beside another prompt, or in another batch size they are the same (what
    lets ``flowforge design PROMPT --seed SEED`` reproduce an evaluation's design)."""
    other = "an old map of a harbour town"
    together = sample_workflows(
        MODEL, TOKENIZER, [*PROMPTS, other], n=2, prompt_seeds=[11, 12, 13], max_new_tokens=12
    )
    alone = [
        sample_workflows(MODEL, TOKENIZER, [p], n=2, prompt_seeds=[s], max_new_tokens=12)
        for p, s in zip([*PROMPTS, other], [11, 12, 13], strict=True)
    ]
    assert [s.token_ids for s in together] == [s.token_ids for one in alone for s in one]
    small = sample_workflows(
        MODEL, TOKENIZER, [*PROMPTS, other], n=2, prompt_seeds=[11, 12, 13], batch_size=3,
        max_new_tokens=12,
    )  # fmt: skip
    assert [s.token_ids for s in small] == [s.token_ids for s in together]
    # the seed decides: another seed for the second prompt moves its samples, not the first's
    moved = sample_workflows(
        MODEL, TOKENIZER, PROMPTS, n=2, prompt_seeds=[11, 99], max_new_tokens=12
    )
    assert [s.token_ids for s in moved[:2]] == [s.token_ids for s in together[:2]]
    assert [s.token_ids for s in moved[2:]] != [s.token_ids for s in together[2:4]]
    # the two rows of a prompt are two draws, not one repeated
    assert together[0].token_ids != together[1].token_ids


def test_row_sampling_draws_the_softmax_distribution() -> None:
    """`RowSampling` is sampling at the temperature: drawn frequencies match the softmax."""
    logits = torch.tensor([[2.0, 0.0, float("-inf"), 1.0]])
    generator = torch.Generator().manual_seed(0)
    sampler = RowSampling([generator], temperature=0.5)
    counts = torch.zeros(4)
    for _ in range(4000):
        only = sampler(torch.zeros((1, 1), dtype=torch.long), logits.clone())
        assert torch.isfinite(only).sum() == 1
        counts[only[0].argmax()] += 1
    expected = torch.softmax(logits[0] / 0.5, dim=-1)
    assert counts[2] == 0
    assert torch.allclose(counts / 4000, expected, atol=0.03)
