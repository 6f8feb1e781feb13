"""The policy tokenizer: atomic workflow tokens, exact round trips, grids, saved layout."""

from __future__ import annotations

import random
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_helpers import CATALOG, library_texts, tiny_tokenizer, tiny_vocab
from transformers import AutoTokenizer

from flowforge.policy.tokenizer import load_tokenizer
from flowforge.policy.vocab import (
    UNK,
    VocabConfig,
    VocabError,
    WorkflowVocab,
    format_prompt,
    key_text,
    literal_text,
    split_pieces,
    stretched,
)
from flowforge.workflow.augment import augment
from flowforge.workflow.graph import Workflow
from flowforge.workflow.library import load_seed_library
from flowforge.workflow.textform import Bindings, from_text, to_text

TOKENIZER = tiny_tokenizer()


def test_every_library_text_round_trips_exactly() -> None:
    for text in library_texts():
        ids = TOKENIZER.encode_workflow(text)
        assert TOKENIZER.decode_workflow(ids) == text
        assert TOKENIZER.hf(text, add_special_tokens=False)["input_ids"] == ids
        from_text(TOKENIZER.decode_workflow(ids), Bindings.request("a cat", "", 1))


def test_every_workflow_word_is_one_token() -> None:
    line = '8 SaveImage filename_prefix=flowforge images=@7.0\n9 X text="$NEGATIVE, a b"'
    pieces = ["8 ", "SaveImage", " filename_prefix=", "flowforge", " images=", "@7.0", "\n"]
    pieces += ["9 ", "X", " text=", '"$NEGATIVE, a b"']
    assert split_pieces(line) == pieces
    text = library_texts()[0]
    ids = TOKENIZER.encode_workflow(text)
    assert [TOKENIZER.hf.convert_ids_to_tokens(i) for i in ids] == split_pieces(text)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=10_000), st.integers(min_value=1, max_value=6))
def test_augmented_workflows_outside_the_corpus_round_trip(seed: int, ops: int) -> None:
    seeds = load_seed_library()
    start = seeds[sorted(seeds)[seed % len(seeds)]]
    workflow = augment(start, CATALOG, random.Random(seed), ops)
    text, _ = to_text(workflow, CATALOG)
    assert TOKENIZER.decode_workflow(TOKENIZER.encode_workflow(text)) == text


def test_grid_value_not_in_the_corpus_still_encodes() -> None:
    corpus = {piece for text in library_texts() for piece in split_pieces(text)}
    assert "13.35" not in corpus and "1600" not in corpus
    workflow = from_text(library_texts()[0], Bindings.request("a cat", "blurry", 1))
    changes = {"KSampler": {"cfg": 13.35}, "EmptyLatentImage": {"width": 1600}}
    edited = Workflow(
        tuple(node.with_inputs(**changes.get(node.class_type, {})) for node in workflow)
    )
    text, _ = to_text(edited, CATALOG)
    assert "cfg=13.35" in text and "width=1600" in text
    assert TOKENIZER.decode_workflow(TOKENIZER.encode_workflow(text)) == text


def test_grid_numbers_are_in_the_vocabulary() -> None:
    values = set(tiny_vocab().values)
    for value in (0, 7, 256, 1600, 4096, 8192, -2, 0.35, 13.35, -20.0, 20.0, 37.5, 100.0):
        assert literal_text(value) in values, value
    assert "@63.2" in values and "$PROMPT_2" in values
    assert '"$NEGATIVE, embedding:badhandv4, embedding:EasyNegative"' in values


def test_every_key_is_one_input_name_piece() -> None:
    keys = tiny_vocab().keys
    assert " seed=" in keys and " noise_seed=" in keys and key_text("a b") == ' "a b"='
    assert all(split_pieces(key) == [key] and key.endswith("=") for key in keys)


def test_value_outside_the_vocabulary_is_named() -> None:
    text = library_texts()[0].replace("steps=", "steps=5000 x=", 1)
    with pytest.raises(VocabError, match="'5000'"):
        TOKENIZER.encode_workflow(text)


def test_line_ids_and_int_values_are_different_tokens() -> None:
    line_two = TOKENIZER.line_id(2)
    value_two = TOKENIZER.atom_ids["2"]
    assert line_two != value_two
    assert TOKENIZER.roles(line_two) == {"line"}
    assert TOKENIZER.roles(value_two) == {"value"}
    assert TOKENIZER.roles(TOKENIZER.atom_ids["KSampler"]) == {"class"}
    assert TOKENIZER.roles(TOKENIZER.atom_ids[" cfg="]) == {"key"}
    assert TOKENIZER.roles(TOKENIZER.newline_id) == {"newline"}
    assert TOKENIZER.roles(TOKENIZER.eos_id) == {"special"}


def test_prompt_is_lower_cased_and_unknown_words_are_unk() -> None:
    segment = TOKENIZER.prompt_segment("A RED Cat, zxqvw!")
    tokens = TOKENIZER.hf.convert_ids_to_tokens(
        TOKENIZER.hf(segment, add_special_tokens=False)["input_ids"]
    )
    assert tokens == ["<bos>", " a", " red", " cat", " ,", UNK, " !", "<sep>"]
    assert format_prompt("Hello,\n  World", 8) == " hello , world"
    assert TOKENIZER.roles(TOKENIZER.atom_ids[" cat"]) == {"prompt"}


def test_example_layout_is_bos_prompt_sep_workflow_eos() -> None:
    text = library_texts()[3]
    segment = TOKENIZER.prompt_segment("a cat", score_bin=9)
    ids = TOKENIZER.hf(segment + text + "<eos>", add_special_tokens=False)["input_ids"]
    sep = ids.index(TOKENIZER.sep_id)
    assert ids[:2] == [TOKENIZER.bos_id, TOKENIZER.atom_ids["<score_9>"]]
    assert ids[sep + 1] == TOKENIZER.line_id(1)
    assert ids[sep + 1 : -1] == TOKENIZER.encode_workflow(text)
    assert ids[-1] == TOKENIZER.eos_id
    with pytest.raises(VocabError, match="score bin"):
        TOKENIZER.prompt_segment("a cat", score_bin=10)


def test_saved_tokenizer_loads_with_autotokenizer(tmp_path: Path) -> None:
    TOKENIZER.save(tmp_path)
    auto = AutoTokenizer.from_pretrained(str(tmp_path))
    again = load_tokenizer(tmp_path)
    text = library_texts()[5]
    assert auto(text, add_special_tokens=False)["input_ids"] == TOKENIZER.encode_workflow(text)
    assert auto.padding_side == "left" and auto.pad_token_id == TOKENIZER.pad_id
    assert again.atom_ids == TOKENIZER.atom_ids and again.vocab == TOKENIZER.vocab
    batch = auto(["<bos> a<sep>", "<bos> a red cat<sep>"], padding=True)["input_ids"]
    assert batch[0][:2] == [TOKENIZER.pad_id, TOKENIZER.pad_id]


def test_directory_without_tokenizer_metadata_is_refused(tmp_path: Path) -> None:
    TOKENIZER.hf.save_pretrained(str(tmp_path))
    with pytest.raises(VocabError, match=r"flowforge_tokenizer\.json"):
        load_tokenizer(tmp_path)


def test_number_ranges_are_the_corpus_extremes_per_class_and_input() -> None:
    steps = [
        int(value)
        for text in library_texts()
        for line in text.split("\n")
        if " KSampler " in line
        for value in re.findall(r" steps=(\d+)", line)
    ]
    ranges = {(c, i): (lo, hi) for c, i, lo, hi in TOKENIZER.vocab.number_ranges}
    assert ranges[("KSampler", "steps")] == (min(steps), max(steps))
    assert TOKENIZER.vocab.number_range("KSampler", "steps") == (min(steps) / 1.5, max(steps) * 1.5)


def test_stretched_ranges_widen_away_from_zero_or_by_half_the_span() -> None:
    assert stretched(4, 40, 1.5) == (4 / 1.5, 60)
    assert stretched(-2, -2, 1.5) == (-3, -2 / 1.5)
    assert stretched(0, 32, 1.5) == (-16, 48)
    assert stretched(0, 0, 1.5) == (0, 0)


def test_an_input_the_class_never_used_takes_the_widest_range_of_its_name() -> None:
    vocab = replace(
        tiny_vocab(),
        number_ranges=(("KSampler", "steps", 4.0, 40.0), ("Other", "steps", 20.0, 60.0)),
    )
    assert vocab.number_range("KSampler", "steps") == (4 / 1.5, 60)
    assert vocab.number_range("KSamplerAdvanced", "steps") == (4 / 1.5, 90)
    assert vocab.number_range("KSampler", "cfg") is None  # never written: the catalog's range
    for off in (None, 0.0):
        unstretched = replace(vocab, config=replace(vocab.config, number_stretch=off))
        assert unstretched.number_range("KSampler", "steps") is None


def test_a_vocabulary_saved_before_number_ranges_has_no_stretch() -> None:
    saved = TOKENIZER.vocab.to_json()
    assert WorkflowVocab.from_json(saved) == TOKENIZER.vocab
    del saved["number_ranges"], saved["config"]["number_stretch"]
    old = WorkflowVocab.from_json(saved)
    assert old.config.number_stretch is None and old.number_ranges == ()
    assert old.number_range("KSampler", "steps") is None


@pytest.mark.parametrize("stretch", [0.5, 0.999])
def test_a_stretch_below_one_is_refused(stretch: float) -> None:
    with pytest.raises(VocabError, match="number_stretch"):
        VocabConfig(number_stretch=stretch)


def test_a_new_tokenizer_encodes_a_prompt_segment_as_its_wrapper_does() -> None:
    fresh = tiny_tokenizer()  # no wrapper built, nothing saved and loaded
    segment = fresh.prompt_segment("a red cat", score_bin=2)
    ids = fresh.encode_segment(segment)
    assert ids[:2] == [fresh.bos_id, fresh.atom_ids["<score_2>"]]
    assert ids[-2:] == [fresh.atom_ids[" cat"], fresh.sep_id]
    assert ids == fresh.hf(segment, add_special_tokens=False)["input_ids"]
