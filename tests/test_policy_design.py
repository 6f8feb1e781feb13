"""`design`: API JSON with prompt and seed filled in, UI JSON, ranking, honest refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from policy_helpers import TINY, ForceText, library_texts, memorize, tiny_tokenizer

from flowforge.policy.design import DesignError, design, fixed_design, load_designer
from flowforge.policy.model import (
    PolicyLoadError,
    PolicyModelConfig,
    build_tiny_model,
    save_policy,
)
from flowforge.policy.tokenizer import new_tokenizer
from flowforge.policy.vocab import VocabConfig, fit_vocab
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.validate import validate

TOKENIZER = tiny_tokenizer()
TEXT = next(t for t in library_texts() if "KSampler " in t and "LoraLoader" in t)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny policy that has memorized one workflow for the prompt "a cat"."""
    folder = tmp_path_factory.mktemp("policy")
    save_policy(memorize(TOKENIZER, "a cat", TEXT), TOKENIZER, folder)
    return folder


def test_design_returns_api_json_with_prompt_and_seed_filled_in(policy_dir: Path) -> None:
    result = design("a cat", policy_dir, seed=1234, temperature=0, negative="blurry")
    assert result.text == TEXT and result.seed == 1234
    encoders = [n for n in result.api.values() if n["class_type"] == "CLIPTextEncode"]
    assert {n["inputs"]["text"] for n in encoders} >= {"a cat"}
    assert any(n["inputs"]["text"].startswith("blurry") for n in encoders)
    samplers = [n for n in result.api.values() if n["class_type"] == "KSampler"]
    assert samplers and all(n["inputs"]["seed"] == 1234 for n in samplers)
    assert result.ui is None and 0 < result.seconds < 60


def test_design_writes_ui_json_when_asked(policy_dir: Path) -> None:
    result = design("a cat", policy_dir, seed=1, temperature=0, ui=True)
    assert result.ui is not None
    assert len(result.ui["nodes"]) == len(result.api) and result.ui["links"]


class _PreferLonger:
    def predict(self, prompts: list[str], workflows: list[str]) -> list[float]:
        assert prompts == ["a cat"] * len(workflows)
        return [float(len(w)) for w in workflows]


def test_reward_model_ranks_the_candidates(policy_dir: Path) -> None:
    texts = sorted(library_texts()[:3], key=len)
    force = ForceText([TOKENIZER.encode_workflow(t) for t in texts], TOKENIZER.eos_id)
    designer = load_designer(policy_dir, extra_processors=[force])
    result = designer.design("a cat", samples=3, seed=0, reward=_PreferLonger())
    assert result.text == texts[-1]
    assert [c.predicted_reward for c in result.candidates] == [float(len(t)) for t in texts]


def test_the_delivered_workflow_leaves_out_nodes_no_output_reads(policy_dir: Path) -> None:
    lines = TEXT.split("\n")
    dead = f"{len(lines) + 1} EmptyLatentImage batch_size=1 height=512 width=512"
    written = "\n".join([*lines, dead])
    force = ForceText([TOKENIZER.encode_workflow(written)], TOKENIZER.eos_id)
    result = load_designer(policy_dir, extra_processors=[force]).design("a cat", ui=True)
    assert result.text == written  # what the policy wrote
    assert len(result.api) == len(lines) == len(result.ui["nodes"])  # type: ignore[index]
    report = validate(result.workflow, default_catalog())
    assert report.ok and not report.warnings


@pytest.mark.parametrize("runtime", ["numpy", "transformers"])
def test_guidance_from_the_policy_itself_changes_nothing(policy_dir: Path, runtime: str) -> None:
    guided = design(
        "a cat", policy_dir, reference_dir=policy_dir, guidance=2.5, temperature=0,
        runtime=runtime,  # type: ignore[arg-type]
    )  # fmt: skip
    assert guided.text == TEXT
    with pytest.raises(DesignError, match="both a reference policy and a guidance weight"):
        design("a cat", policy_dir, guidance=1.5)


@pytest.mark.parametrize("runtime", ["numpy", "transformers"])
def test_an_untrained_policy_designs_valid_workflows_under_the_constraint(
    tmp_path: Path, runtime: str
) -> None:
    save_policy(build_tiny_model(TOKENIZER, TINY, seed=0), TOKENIZER, tmp_path)
    designer = load_designer(tmp_path, runtime=runtime)  # type: ignore[arg-type]
    assert designer.runtime == runtime
    result = designer.design("a cat", samples=3, seed=4)
    assert len(result.candidates) == 3
    assert all(candidate.valid for candidate in result.candidates)


def test_both_runtimes_decode_the_same_greedy_workflows(policy_dir: Path) -> None:
    """Same model, same constraint: the numpy and transformers runtimes agree token for
    token at temperature 0, on prompts the policy did not memorize."""
    fast = load_designer(policy_dir, runtime="numpy")
    slow = load_designer(policy_dir, runtime="transformers")
    for prompt in ("a dog on a beach", "portrait of an old sailor, oil painting", "a cat"):
        assert fast.design(prompt, temperature=0).text == slow.design(prompt, temperature=0).text


def test_the_default_runtime_is_numpy_and_extra_processors_need_transformers(
    policy_dir: Path,
) -> None:
    assert load_designer(policy_dir).runtime == "numpy"
    force = ForceText([TOKENIZER.encode_workflow(TEXT)], TOKENIZER.eos_id)
    assert load_designer(policy_dir, extra_processors=[force]).runtime == "transformers"
    with pytest.raises(DesignError, match="need the transformers runtime"):
        load_designer(policy_dir, extra_processors=[force], runtime="numpy")


def test_the_numpy_runtime_draws_reproducibly_per_seed(tmp_path: Path) -> None:
    save_policy(build_tiny_model(TOKENIZER, TINY, seed=0), TOKENIZER, tmp_path)
    designer = load_designer(tmp_path)
    first = [c.text for c in designer.design("a cat", samples=4, seed=7).candidates]
    again = [c.text for c in designer.design("a cat", samples=4, seed=7).candidates]
    other = [c.text for c in designer.design("a cat", samples=4, seed=8).candidates]
    assert first == again and first != other and len(set(first)) > 1


def test_no_valid_candidate_is_an_error(tmp_path: Path) -> None:
    save_policy(build_tiny_model(TOKENIZER, TINY, seed=0), TOKENIZER, tmp_path)
    with pytest.raises(DesignError, match="none of 2 sampled workflows is valid"):
        design("a cat", tmp_path, samples=2, constrained=False)


def test_an_empty_prompt_is_refused(policy_dir: Path) -> None:
    designer = load_designer(policy_dir)
    for prompt in ("", "  \n"):
        with pytest.raises(DesignError, match="the prompt is empty"):
            designer.design(prompt)
        with pytest.raises(DesignError, match="the prompt is empty"):
            fixed_design(prompt, "1 EmptyLatentImage", catalog=designer.catalog)


def test_malformed_policy_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="not a policy directory"):
        design("a cat", tmp_path)


def test_a_reference_of_another_tokenizer_is_refused_by_both_runtimes(
    policy_dir: Path, tmp_path: Path
) -> None:
    other_vocab = fit_vocab(
        ["1 SaveImage filename_prefix=x"], ["a cat", "a cat"], default_catalog(),
        VocabConfig(max_lines=8),
    )  # fmt: skip
    other = new_tokenizer(other_vocab)
    small = build_tiny_model(other, PolicyModelConfig(hidden_size=16, num_attention_heads=2))
    save_policy(small, other, tmp_path / "other")
    for runtime in ("numpy", "transformers"):
        with pytest.raises(DesignError, match="tokenizer differs"):
            load_designer(
                policy_dir, reference_dir=tmp_path / "other", guidance=1.5,
                runtime=runtime,  # type: ignore[arg-type]
            )  # fmt: skip
