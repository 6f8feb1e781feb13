"""Shipped prompt sets, their fixed splits, the paraphrase set and user prompt files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from flowforge.data.prompts import (
    GENEVAL_VALIDATION_SHARE,
    HELDOUT_SHARE,
    VALIDATION_SHARE,
    Prompt,
    PromptFileError,
    load_paraphrases,
    load_prompt_file,
    load_prompts,
    prompt_id_for,
    split_of,
)


def test_shipped_sets_have_every_prompt_with_unique_stable_ids() -> None:
    prompts = load_prompts("all")
    assert len(load_prompts("all", "parti")) == 1632
    assert len(load_prompts("all", "geneval")) == 553
    assert len({p.id for p in prompts}) == len(prompts)
    assert prompts[0] == Prompt("parti-0000", "bond", "parti", "Abstract")
    assert load_prompts("all", "geneval")[0] == Prompt(
        "geneval-0000", "a photo of a bench", "geneval", "single_object"
    )


def test_splits_are_disjoint_and_cover_everything() -> None:
    splits = [load_prompts(name) for name in ("train", "validation", "heldout")]
    for k, one in enumerate(splits):
        for other in splits[k + 1 :]:
            assert {p.id for p in one}.isdisjoint({p.id for p in other})
            assert {p.text.lower() for p in one}.isdisjoint({p.text.lower() for p in other})
    assert sum(len(s) for s in splits) == len(load_prompts("all"))


def test_split_is_the_documented_hash_rule_and_never_changes() -> None:
    # The rule of docs/prompts.md, restated independently of the module under test.
    for prompt in load_prompts("all", "parti"):
        digest = hashlib.sha256(f"flowforge-split-v1:{prompt.id}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        assert (split_of(prompt) == "heldout") == (fraction < HELDOUT_SHARE)
        validation = HELDOUT_SHARE <= fraction < HELDOUT_SHARE + VALIDATION_SHARE
        assert (split_of(prompt) == "validation") == validation
    # Pinned so that a change to the rule or the files shows up as a failing test.
    assert len(load_prompts("heldout", "parti")) == 302
    held = [p.id for p in load_prompts("heldout", "parti")[:5]]
    assert held == ["parti-0007", "parti-0008", "parti-0010", "parti-0011", "parti-0017"]
    assert len(load_prompts("validation", "parti")) == 131 and len(load_prompts("train")) == 1199


def test_geneval_is_never_trained_on_and_a_fifth_of_it_validates() -> None:
    assert load_prompts("train", "geneval") == []
    for prompt in load_prompts("all", "geneval"):  # the same hash as PartiPrompts'
        digest = hashlib.sha256(f"flowforge-split-v1:{prompt.id}".encode()).digest()
        fraction = int.from_bytes(digest[:8], "big") / 2**64
        assert (split_of(prompt) == "validation") == (fraction < GENEVAL_VALIDATION_SHARE)
    # Pinned: the evaluation's held-out GenEval prompts and the choices' validation ones.
    assert len(load_prompts("validation", "geneval")) == 116
    assert len(load_prompts("heldout", "geneval")) == 437
    assert len(load_prompts("validation")) == 247 and len(load_prompts("heldout")) == 739
    # every GenEval template is among the validation prompts (the choices see each kind)
    tags = {p.category for p in load_prompts("all", "geneval")}
    assert {p.category for p in load_prompts("validation", "geneval")} == tags


def test_every_parti_category_is_in_both_splits() -> None:
    train = {p.category for p in load_prompts("train", "parti")}
    heldout = {p.category for p in load_prompts("heldout", "parti")}
    assert train == heldout and len(train) == 12
    assert len({p.category for p in load_prompts("validation", "parti")}) == 12


def test_unknown_split_or_source_is_an_error() -> None:
    with pytest.raises(ValueError, match="split"):
        load_prompts("test")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="source"):
        load_prompts("all", "coco")


def test_paraphrase_set_has_forty_distinct_pairs() -> None:
    pairs = load_paraphrases()
    assert len(pairs) >= 40
    assert all(a != b for a, b in pairs)
    assert len({a for a, _ in pairs}) == len(pairs)


def test_txt_prompt_file_skips_blank_and_comment_lines(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("# my prompts\na red fox\n\n  a blue whale  \n", encoding="utf-8")
    prompts = load_prompt_file(path)
    assert [p.text for p in prompts] == ["a red fox", "a blue whale"]
    assert prompts[0] == Prompt(prompt_id_for("a red fox"), "a red fox", "mine", "")


def test_jsonl_prompt_file_reads_prompt_or_text_and_optional_id(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    lines = [
        {"prompt": "a red fox", "id": "fox", "category": "animals"},
        {"text": "a blue whale"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    prompts = load_prompt_file(path)
    assert prompts[0] == Prompt("fox", "a red fox", "mine", "animals")
    assert prompts[1].id == prompt_id_for("a blue whale")


def test_content_ids_survive_reordering(tmp_path: Path) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("one\ntwo\n", encoding="utf-8")
    second.write_text("two\none\n", encoding="utf-8")
    ids = {p.text: p.id for p in load_prompt_file(first)}
    assert all(ids[p.text] == p.id for p in load_prompt_file(second))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.csv", "a,b\n", "unknown prompt file type"),
        ("p.jsonl", "{not json}\n", r"p.jsonl:1: not JSON"),
        ("p.jsonl", '{"caption": "x"}\n', "exactly one of the fields 'prompt' or 'text'"),
        ("p.jsonl", '{"prompt": "x", "text": "y"}\n', "found both"),
        ("p.jsonl", '{"prompt": 3}\n', "must be a string"),
        ("p.jsonl", '["x"]\n', "expected a JSON object"),
        ("p.jsonl", '{"prompt": "x", "id": 7}\n', "'id' must be a non-empty string"),
        ("p.txt", "a cat\nb dog\na cat\n", r"p.txt:3: repeats the id of line 1"),
        ("p.txt", "# only a comment\n\n", "no prompts in the file"),
    ],
)
def test_bad_prompt_files_are_named_errors(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(PromptFileError, match=message):
        load_prompt_file(path)


def test_missing_prompt_file_is_a_named_error(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="cannot read"):
        load_prompt_file(tmp_path / "absent.txt")


def test_a_fixed_sample_is_sha256_ordered_and_grows_by_adding() -> None:
    import hashlib

    from flowforge.data.prompts import fixed_sample

    held = load_prompts("heldout")
    sample = fixed_sample(held, 40)
    digests = [hashlib.sha256(p.id.encode("utf-8")).digest() for p in sample]
    assert digests == sorted(digests) and len(sample) == 40
    assert fixed_sample(held, 60)[:40] == sample
    assert fixed_sample(list(reversed(held)), 40) == sample  # input order does not matter
    assert len(fixed_sample(held)) == len(held)
