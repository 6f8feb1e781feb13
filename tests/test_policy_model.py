"""Policy models: tiny from a config, save/load, clear errors; the pretrained path (slow)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from policy_helpers import TINY, library_texts, tiny_tokenizer

from flowforge.policy.model import (
    LoraSettings,
    PolicyLoadError,
    PolicyModelConfig,
    build_tiny_model,
    convert_gguf,
    load_policy,
    merge_adapters,
    parameter_count,
    prepare_pretrained,
    save_policy,
    smollm2_gguf,
)
from flowforge.policy.numpy_llama import NumpyLlama
from flowforge.policy.sample import sample_workflows

TOKENIZER = tiny_tokenizer()


def _batch() -> torch.Tensor:
    segment = TOKENIZER.hf(TOKENIZER.prompt_segment("a cat"), add_special_tokens=False)
    ids = [*segment["input_ids"], *TOKENIZER.encode_workflow(library_texts()[0])]
    return torch.tensor([ids])


def test_tiny_model_matches_its_config_and_vocabulary() -> None:
    model = build_tiny_model(TOKENIZER, TINY)
    assert model.config.vocab_size == len(TOKENIZER)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2
    assert model.generation_config.eos_token_id == TOKENIZER.eos_id
    assert model.generation_config.pad_token_id == TOKENIZER.pad_id
    default = build_tiny_model(TOKENIZER, PolicyModelConfig())
    assert 1_000_000 < parameter_count(default) < 3_000_000


def test_same_seed_builds_the_same_model() -> None:
    first = build_tiny_model(TOKENIZER, TINY, seed=3)
    second = build_tiny_model(TOKENIZER, TINY, seed=3)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_odd_head_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="even integer"):
        PolicyModelConfig(hidden_size=30, num_attention_heads=2)


def test_a_training_step_changes_parameters_and_lowers_the_loss() -> None:
    model = build_tiny_model(TOKENIZER, TINY, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = _batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(input_ids=ids, labels=ids).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)


def test_save_load_round_trip_gives_identical_logits(tmp_path: Path) -> None:
    model = build_tiny_model(TOKENIZER, TINY, seed=1).eval()
    save_policy(model, TOKENIZER, tmp_path, run_config={"kind": "test"})
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))
    loaded, tokenizer = load_policy(tmp_path)
    with torch.no_grad():
        assert torch.equal(model(_batch()).logits, loaded(_batch()).logits)
    assert tokenizer.atom_ids == TOKENIZER.atom_ids


def test_malformed_policy_directory_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="no such policy directory"):
        load_policy(tmp_path / "missing")
    with pytest.raises(PolicyLoadError, match=r"missing config\.json, .*safetensors"):
        load_policy(tmp_path)
    good = tmp_path / "good"
    save_policy(build_tiny_model(TOKENIZER, TINY), TOKENIZER, good)
    no_weights = tmp_path / "no_weights"
    shutil.copytree(good, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(PolicyLoadError, match="safetensors weights"):
        load_policy(no_weights)
    broken = tmp_path / "broken"
    shutil.copytree(good, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(PolicyLoadError, match="cannot load the model"):
        load_policy(broken)
    bad_meta = tmp_path / "bad_meta"
    shutil.copytree(good, bad_meta)
    (bad_meta / "flowforge_tokenizer.json").write_text(json.dumps({"format": 99}))
    with pytest.raises(PolicyLoadError, match="unknown format"):
        load_policy(bad_meta)


@pytest.mark.slow
def test_pretrained_smollm2_with_lora_trains_saves_and_samples(tmp_path: Path) -> None:
    """The GPU user's path, on CPU: GGUF -> model dir -> extended tokenizer + LoRA -> merged."""
    base = convert_gguf(smollm2_gguf(), tmp_path / "smollm2")
    model, tokenizer = prepare_pretrained(base, TOKENIZER.vocab, LoraSettings(r=4, alpha=8))
    text = library_texts()[0]
    assert tokenizer.decode_workflow(tokenizer.encode_workflow(text)) == text
    assert len(tokenizer.encode_workflow(text)) == len(TOKENIZER.encode_workflow(text))
    prompt = tokenizer.hf(tokenizer.prompt_segment("A Red cat"), add_special_tokens=False)
    assert len(prompt["input_ids"]) > 3  # prompt words are the LLM's own sub-words
    ids = torch.tensor([[*prompt["input_ids"], *tokenizer.encode_workflow(text)]])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    losses = []
    for _ in range(3):
        loss = model(input_ids=ids, labels=ids).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0]
    save_policy(merge_adapters(model), tokenizer, tmp_path / "policy")
    loaded, loaded_tokenizer = load_policy(tmp_path / "policy")
    assert loaded_tokenizer.encoding == "bytelevel"
    samples = sample_workflows(loaded, loaded_tokenizer, ["a cat"], n=1, max_new_tokens=8)
    assert len(samples) == 1 and len(samples[0].token_ids) <= 8
    # `flowforge design` runs it without transformers: the numpy forward pass agrees.
    with torch.no_grad():
        expected = loaded(ids).logits[:, -1].numpy()
    numpy_model = NumpyLlama.load(tmp_path / "policy")
    got = numpy_model.forward(ids.numpy(), numpy_model.new_cache(1, ids.shape[1]))[0]
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()
