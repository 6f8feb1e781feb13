"""Guided decoding: w = 1 is the policy exactly, w = 0 the reference exactly, with left
padding, batches, num_return_sequences, reuse across calls and the constraint after it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from policy_helpers import CATALOG, TINY, tiny_tokenizer, tiny_vocab
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, PreTrainedModel

from flowforge.policy.constraint import schema_constraint
from flowforge.policy.guidance import GuidanceError, GuidanceProcessor, guide, load_guidance
from flowforge.policy.model import PolicyModelConfig, build_tiny_model, save_policy
from flowforge.policy.sample import sample_workflows
from flowforge.policy.tokenizer import new_tokenizer
from flowforge.policy.vocab import VocabConfig, fit_vocab

TOKENIZER = tiny_tokenizer()
POLICY = build_tiny_model(TOKENIZER, TINY, seed=1).eval()
REFERENCE = build_tiny_model(TOKENIZER, TINY, seed=2).eval()
#: Different lengths, so the batch is left-padded.
PROMPTS = ["a cat", "a red car on a long road in the city at night", "dog"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: two make tiny models 10-30x slower on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Record(LogitsProcessor):
    """Keeps a copy of the scores it sees (a probe before or after another processor)."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self.seen.append(scores.clone())
        return scores


def generate(
    model: PreTrainedModel,
    processors: list[LogitsProcessor],
    *,
    sample: bool,
    returns: int = 1,
    prompts: list[str] = PROMPTS,
) -> torch.Tensor:
    batch = TOKENIZER.hf(
        [TOKENIZER.prompt_segment(p) for p in prompts],
        add_special_tokens=False,
        padding=True,
        return_tensors="pt",
    )
    config = GenerationConfig(
        do_sample=sample,
        top_k=0,
        num_return_sequences=returns,
        max_new_tokens=30,
        pad_token_id=TOKENIZER.pad_id,
        eos_token_id=None,  # every row runs the full 30 steps
    )
    torch.manual_seed(11)
    with torch.inference_mode():
        out: torch.Tensor = model.generate(  # type: ignore[operator]
            **batch, generation_config=config, logits_processor=LogitsProcessorList(processors)
        )
    return out[:, batch["input_ids"].shape[1] :]


def test_batch_is_left_padded() -> None:
    batch = TOKENIZER.hf([TOKENIZER.prompt_segment(p) for p in PROMPTS], padding=True)
    assert {row[0] for row in batch["attention_mask"]} == {0, 1}


def test_weight_one_gives_the_policy_scores_bit_for_bit() -> None:
    before, after = Record(), Record()
    guided = generate(POLICY, [before, GuidanceProcessor(REFERENCE, 1.0, 0), after], sample=False)
    assert torch.equal(guided, generate(POLICY, [], sample=False))
    for raw, mixed in zip(before.seen, after.seen, strict=True):
        assert torch.equal(mixed, torch.log_softmax(raw, dim=-1))


def test_weight_zero_gives_the_reference_scores_bit_for_bit() -> None:
    after, own = Record(), Record()
    guided = generate(POLICY, [GuidanceProcessor(REFERENCE, 0.0, 0), after], sample=False)
    alone = generate(REFERENCE, [own], sample=False)
    assert torch.equal(guided, alone)
    for reference, mixed in zip(own.seen, after.seen, strict=True):
        assert torch.equal(mixed, torch.log_softmax(reference, dim=-1))


@pytest.mark.parametrize(("weight", "model"), [(1.0, POLICY), (0.0, REFERENCE)])
def test_sampled_outputs_match_at_the_end_points_with_num_return_sequences(
    weight: float, model: PreTrainedModel
) -> None:
    guidance = GuidanceProcessor(REFERENCE, weight, TOKENIZER.pad_id)
    guided = generate(POLICY, [guidance], sample=True, returns=3)
    assert guided.shape[0] == 3 * len(PROMPTS)
    assert torch.equal(guided, generate(model, [], sample=True, returns=3))


def test_one_processor_serves_several_generate_calls() -> None:
    guidance = GuidanceProcessor(REFERENCE, 1.0, TOKENIZER.pad_id)
    for prompts in (PROMPTS, PROMPTS[:2], ["a cat"]):
        guided = generate(POLICY, [guidance], sample=False, prompts=prompts)
        assert torch.equal(guided, generate(POLICY, [], sample=False, prompts=prompts))


def test_guide_is_the_line_from_reference_to_policy() -> None:
    policy = torch.tensor([[2.0, 0.0, -1.0]])
    reference = torch.tensor([[0.0, 1.0, float("-inf")]])
    lp, lr = torch.log_softmax(policy, -1), torch.log_softmax(reference, -1)
    half = guide(policy, reference, 0.5)
    assert torch.allclose(half[:, :2], (lp[:, :2] + lr[:, :2]) / 2)
    past = guide(policy, reference, 2.0)
    assert torch.allclose(past[:, :2], 2 * lp[:, :2] - lr[:, :2])
    assert half[0, 2] == float("-inf") and past[0, 2] == float("-inf")  # impossible stays so


def test_guided_and_constrained_samples_all_validate() -> None:
    guidance = GuidanceProcessor(REFERENCE, 2.0, TOKENIZER.pad_id)
    constraint = schema_constraint(TOKENIZER, CATALOG, max_new_tokens=80)
    samples = sample_workflows(
        POLICY, TOKENIZER, PROMPTS, n=8, seed=3, max_new_tokens=80, batch_size=10,
        logits_processors=[guidance, constraint],
    )  # fmt: skip
    assert all(s.valid and s.finished for s in samples), [s.error for s in samples]


def test_models_of_different_vocabularies_are_refused(tmp_path: Path) -> None:
    other_vocab = fit_vocab(
        ["1 SaveImage filename_prefix=x"], ["a cat", "a cat"], CATALOG, VocabConfig(max_lines=8)
    )
    other = new_tokenizer(other_vocab)
    small = build_tiny_model(other, PolicyModelConfig(hidden_size=16, num_attention_heads=2))
    with pytest.raises(GuidanceError, match="one tokenizer"):
        generate(POLICY, [GuidanceProcessor(small, 1.0, TOKENIZER.pad_id)], sample=False)
    save_policy(small, other, tmp_path / "other")
    with pytest.raises(GuidanceError, match="tokenizer differs"):
        load_guidance(tmp_path / "other", 1.5, TOKENIZER)
    save_policy(REFERENCE, new_tokenizer(tiny_vocab()), tmp_path / "same")
    assert load_guidance(tmp_path / "same", 1.5, TOKENIZER).weight == 1.5
