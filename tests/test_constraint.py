"""Schema-constrained decoding: every allowed token keeps the text completable to a workflow
that validates; sampling under the constraint always gives valid workflows."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from functools import cache

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_helpers import CATALOG, TINY, library_texts, tiny_tokenizer, train_prompts
from transformers import GenerationConfig, LogitsProcessorList

from flowforge.policy.constraint import Grammar, GrammarConstraint, schema_constraint
from flowforge.policy.grammar import GrammarError, GrammarState, Phase, TextFormGrammar
from flowforge.policy.model import build_tiny_model
from flowforge.policy.sample import sample_workflows
from flowforge.policy.tokenizer import PolicyTokenizer, new_tokenizer
from flowforge.policy.vocab import WorkflowVocab, fit_vocab, literal_text
from flowforge.workflow.textform import Bindings, from_text
from flowforge.workflow.validate import validate

TOKENIZER = tiny_tokenizer()
GRAMMAR = TextFormGrammar(TOKENIZER, CATALOG)
REQUEST = Bindings.request("a cat on a mat", "blurry", 7)
#: A workflow with an optional input (LatentCompositeMasked's mask, between required ones).
MASKED = (
    "1 SolidMask height=64 value=1.0 width=64\n"
    "2 EmptyLatentImage batch_size=1 height=64 width=64\n"
    "3 LatentCompositeMasked destination=@2.0 mask=@1.0 resize_source=false source=@2.0 x=0 y=0"
)


@cache
def masked_tokenizer() -> PolicyTokenizer:
    return new_tokenizer(fit_vocab([*library_texts(), MASKED], train_prompts(), CATALOG))


def text_of(tokenizer: PolicyTokenizer, ids: list[int]) -> str:
    return tokenizer.decode_workflow([*ids, tokenizer.eos_id])


def is_valid(tokenizer: PolicyTokenizer, ids: list[int]) -> bool:
    workflow = from_text(text_of(tokenizer, ids), REQUEST)
    return validate(workflow, CATALOG).ok


def walk(grammar: TextFormGrammar, state: GrammarState, ids: list[int]) -> GrammarState:
    for token in ids:
        state = grammar.advance(state, token)
    return state


def random_walk(
    grammar: Grammar[GrammarState], budget: int | None, seed: int
) -> list[tuple[GrammarState, list[int]]]:
    """The states of one random walk through allowed tokens, with the prefix before each."""
    rng = random.Random(seed)
    state, prefix, visited = grammar.initial_state(budget), [], []
    while state.phase != Phase.DONE:
        allowed = grammar.allowed(state).tolist()
        assert allowed, f"dead end after {prefix}"
        visited.append((state, list(prefix)))
        token = rng.choice(allowed)
        prefix.append(token)
        state = grammar.advance(state, token)
    visited.append((state, prefix))
    return visited


# --- the grammar: soundness ----------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), budget=st.sampled_from([None, 30, 60, 120, 384]))
def test_random_walks_never_dead_end_and_complete_to_valid_workflows(
    seed: int, budget: int | None
) -> None:
    visited = random_walk(GRAMMAR, budget, seed)
    final, ids = visited[-1]
    assert final.phase == Phase.DONE
    assert ids[-1] == TOKENIZER.eos_id and is_valid(TOKENIZER, ids[:-1])
    assert budget is None or len(ids) <= budget
    rng = random.Random(seed)
    for state, prefix in rng.sample(visited[:-1], min(8, len(visited) - 1)):
        completion = GRAMMAR.shortest_completion(state)
        assert len(completion) == GRAMMAR.need(state)
        assert state.remaining is None or len(completion) <= state.remaining
        assert is_valid(TOKENIZER, [*prefix, *completion][:-1])


@pytest.mark.parametrize("seed", [0, 1])
def test_every_allowed_token_keeps_the_prefix_completable(seed: int) -> None:
    visited = random_walk(GRAMMAR, 120, seed)
    for state, prefix in visited[:-1:3]:
        for token in GRAMMAR.allowed(state).tolist():
            after = GRAMMAR.advance(state, token)
            completion = GRAMMAR.shortest_completion(after)
            ids = [*prefix, token, *completion]
            assert len(ids) <= 120 and is_valid(TOKENIZER, ids[:-1]), text_of(TOKENIZER, ids)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_optional_inputs_keep_canonical_order_and_need_their_link_type(seed: int) -> None:
    tokenizer = masked_tokenizer()
    grammar = TextFormGrammar(tokenizer, CATALOG)
    _, ids = random_walk(grammar, 200, seed)[-1]
    assert is_valid(tokenizer, ids[:-1])

    def allowed_after(text: str) -> list[str]:
        state = walk(grammar, grammar.initial_state(), tokenizer.encode_workflow(text))
        return tokenizer.hf.convert_ids_to_tokens(grammar.allowed(state).tolist())

    with_mask = MASKED.split(" mask=")[0]
    assert allowed_after(with_mask) == [" mask=", " resize_source="]
    without = "1 EmptyLatentImage batch_size=1 height=64 width=64\n2 LatentCompositeMasked"
    assert allowed_after(without + " destination=@1.0") == [" resize_source="]


# --- the grammar: what it allows -------------------------------------------------------------
def test_every_library_text_is_allowed_token_by_token() -> None:
    for text in library_texts():
        state = walk(GRAMMAR, GRAMMAR.initial_state(), TOKENIZER.encode_workflow(text))
        assert GRAMMAR.advance(state, TOKENIZER.eos_id).phase == Phase.DONE


def allowed_after(text: str) -> list[str]:
    ids = TOKENIZER.encode_workflow(text)
    state = walk(GRAMMAR, GRAMMAR.initial_state(), ids)
    return TOKENIZER.hf.convert_ids_to_tokens(GRAMMAR.allowed(state).tolist())


def test_inputs_come_in_name_order_and_required_ones_cannot_be_skipped() -> None:
    text = library_texts()[0].split("\n")
    sampler = next(i for i, line in enumerate(text) if " KSampler " in line)
    prefix = "\n".join([*text[:sampler], text[sampler].split(" cfg=")[0]])
    assert allowed_after(prefix) == [" cfg="]
    assert allowed_after(prefix + " cfg=7.0") == [" denoise="]


def test_classes_need_their_link_types_from_earlier_lines() -> None:
    first = "1 CheckpointLoaderSimple ckpt_name=sd_xl_base_1.0.safetensors"
    classes = set(allowed_after(first + "\n2 "))
    assert {"EmptyLatentImage", "CLIPTextEncode", "LoraLoader", "VAELoader"} <= classes
    assert not classes & {"KSampler", "VAEDecode", "SaveImage", "ImageScaleBy"}
    links = allowed_after(first + "\n2 CLIPTextEncode clip=")
    assert links == ["@1.1"]  # the checkpoint's CLIP; MODEL and VAE do not match


def test_values_are_enum_choices_grid_numbers_in_range_and_placeholders() -> None:
    base = "1 CheckpointLoaderSimple ckpt_name="
    choices = CATALOG.choices("CheckpointLoaderSimple", "ckpt_name")
    assert set(allowed_after(base)) == {literal_text(c) for c in choices}
    sizes = allowed_after(base + "sd_xl_base_1.0.safetensors\n2 EmptyLatentImage batch_size=")
    assert all(1 <= int(v) <= 4096 for v in sizes) and "0" not in sizes
    encoder = "\n2 CLIPTextEncode clip=@1.1 text="
    texts = allowed_after(base + "sd_xl_base_1.0.safetensors" + encoder)
    assert "$PROMPT" in texts and "$NEGATIVE" in texts and "$SEED" not in texts
    assert any(t.startswith('"$NEGATIVE, embedding:') for t in texts)


def test_end_of_text_only_once_an_output_node_is_written() -> None:
    first = "1 CheckpointLoaderSimple ckpt_name=sd_xl_base_1.0.safetensors"
    assert allowed_after(first) == ["\n"]
    text = library_texts()[0]
    ids = TOKENIZER.encode_workflow(text)
    state = walk(GRAMMAR, GRAMMAR.initial_state(), ids)
    assert TOKENIZER.eos_id in GRAMMAR.allowed(state).tolist()


def test_a_refused_token_and_a_too_small_budget_are_errors() -> None:
    with pytest.raises(GrammarError, match="not allowed"):
        GRAMMAR.advance(GRAMMAR.initial_state(), TOKENIZER.eos_id)
    shortest = int(GRAMMAR.need(GRAMMAR.initial_state()))
    GRAMMAR.initial_state(shortest)
    with pytest.raises(GrammarError, match="no valid workflow fits"):
        GRAMMAR.initial_state(shortest - 1)


def test_a_budget_at_the_minimum_forces_a_shortest_workflow() -> None:
    shortest = int(GRAMMAR.need(GRAMMAR.initial_state()))
    _, ids = random_walk(GRAMMAR, shortest, seed=3)[-1]
    assert len(ids) == shortest and is_valid(TOKENIZER, ids[:-1])


def test_the_line_limit_of_the_vocabulary_is_kept() -> None:
    for seed in range(5):
        _, ids = random_walk(GRAMMAR, None, seed)[-1]
        assert text_of(TOKENIZER, ids).count("\n") < GRAMMAR.max_lines


# --- the logits processor ------------------------------------------------------------------
MODEL = build_tiny_model(TOKENIZER, TINY, seed=0).eval()


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a busy 2-core machine two threads make a tiny model's
    generation 10-30x slower (they wait on each other); docs/policy.md, "Decoding"."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_1000_samples_of_an_untrained_model_all_validate() -> None:
    prompts = list(train_prompts()[:40])
    constraint = GrammarConstraint(GRAMMAR, max_new_tokens=96)
    samples = sample_workflows(
        MODEL, TOKENIZER, prompts, n=25, seed=0, logits_processors=[constraint],
        max_new_tokens=96, batch_size=250,
    )  # fmt: skip
    assert len(samples) == 1000
    bad = [(s.text, s.error) for s in samples if not s.valid]
    assert not bad, bad[:3]
    assert len({s.text for s in samples}) > 900  # sampled, not one forced path


def test_constraint_with_the_default_budget_and_left_padded_prompts() -> None:
    prompts = ["a cat", "an old stone castle on a green hill at night , with many stars"]
    samples = sample_workflows(
        MODEL, TOKENIZER, prompts, n=8, seed=1, batch_size=5,
        logits_processors=[schema_constraint(TOKENIZER, CATALOG, 384)],
    )  # fmt: skip
    assert all(s.valid and s.finished for s in samples), [s.error for s in samples]


def test_constraint_with_num_return_sequences_and_greedy_decoding() -> None:
    batch = TOKENIZER.hf(
        [TOKENIZER.prompt_segment(p) for p in ["a dog", "two red apples on a wooden table"]],
        add_special_tokens=False,
        padding=True,
        return_tensors="pt",
    )
    constraint = GrammarConstraint(GRAMMAR, max_new_tokens=64)
    for do_sample, returns in ((True, 3), (False, 1)):
        config = GenerationConfig(
            do_sample=do_sample,
            num_return_sequences=returns,
            max_new_tokens=64,
            pad_token_id=TOKENIZER.pad_id,
            eos_token_id=TOKENIZER.eos_id,
        )
        with torch.inference_mode():
            out = MODEL.generate(
                **batch,
                generation_config=config,
                logits_processor=LogitsProcessorList([constraint]),
            )
        rows = out[:, batch["input_ids"].shape[1] :].tolist()
        assert len(rows) == 2 * returns
        for row in rows:
            assert TOKENIZER.eos_id in row
            assert is_valid(TOKENIZER, row[: row.index(TOKENIZER.eos_id)])


def steps_allowed(tokenizer: PolicyTokenizer) -> list[int]:
    """The values the grammar offers for a KSampler's steps (the last of its inputs)."""
    text = next(t for t in library_texts() if " KSampler " in t).split("\n")
    sampler = next(i for i, line in enumerate(text) if " KSampler " in line)
    prefix = "\n".join([*text[:sampler], text[sampler].split(" steps=")[0] + " steps="])
    grammar = TextFormGrammar(tokenizer, CATALOG)
    state = walk(grammar, grammar.initial_state(), tokenizer.encode_workflow(prefix))
    return [int(v) for v in tokenizer.hf.convert_ids_to_tokens(grammar.allowed(state).tolist())]


def test_numbers_stay_within_the_corpus_range_stretched_not_the_catalogs() -> None:
    corpus = {int(v) for t in library_texts() for v in re.findall(r" KSampler .* steps=(\d+)", t)}
    allowed = steps_allowed(TOKENIZER)
    assert max(allowed) <= 1.5 * max(corpus) and min(allowed) >= min(corpus) / 1.5
    assert 1376 not in allowed  # a width on the grid: the catalog allows up to 10,000 steps
    assert set(allowed) - corpus  # values the corpus never used are still writable
    assert corpus <= set(allowed)


def test_a_vocabulary_without_number_ranges_writes_the_catalogs_ranges() -> None:
    saved = TOKENIZER.vocab.to_json()
    del saved["number_ranges"]
    old = new_tokenizer(WorkflowVocab.from_json(saved))
    assert 1376 in steps_allowed(old) and max(steps_allowed(old)) <= 10_000
