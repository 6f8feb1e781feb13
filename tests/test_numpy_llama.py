"""The numpy Llama computes transformers' LlamaForCausalLM, and refuses what it does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.typing import NDArray
from transformers import LlamaConfig, LlamaForCausalLM

from flowforge.policy.numpy_llama import NumpyLlama, UnsupportedModel, supports
from flowforge.policy.numpy_sampler import decode, guide, log_softmax


def _random_llama(folder: Path, kv_heads: int, tied: bool) -> LlamaForCausalLM:
    """A small Llama with large random weights (so wrong maths shows in the logits)."""
    torch.manual_seed(kv_heads)
    config = LlamaConfig(
        vocab_size=211,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        intermediate_size=96,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        rope_theta=500.0,
        rms_norm_eps=1e-5,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(std=0.2)
    model.save_pretrained(str(folder))
    return model


@pytest.mark.parametrize(
    ("kv_heads", "tied"), [(4, True), (2, False), (1, True)], ids=["mha", "gqa", "mqa"]
)
def test_logits_match_transformers_in_prefill_and_cached_steps(
    tmp_path: Path, kv_heads: int, tied: bool
) -> None:
    model = _random_llama(tmp_path, kv_heads, tied)
    ids = torch.randint(0, 211, (3, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(ids).logits.numpy()  # (3, 24, V)
    numpy_model = NumpyLlama.load(tmp_path)
    cache = numpy_model.new_cache(3, 24)
    got = numpy_model.forward(ids[:, :10].numpy(), cache)
    np.testing.assert_allclose(got[0], expected[:, 9], atol=2e-5, rtol=0)
    for step in range(10, 24):
        got = numpy_model.forward(ids[:, step : step + 1].numpy(), cache)
        np.testing.assert_allclose(got[0], expected[:, step], atol=2e-5, rtol=0)
    assert np.abs(expected).max() > 0.5  # the comparison is not between near-zero logits


def test_a_fanned_out_cache_continues_each_row_on_its_own(tmp_path: Path) -> None:
    model = _random_llama(tmp_path, 2, True)
    numpy_model = NumpyLlama.load(tmp_path)
    prompt = np.asarray([[5, 6, 7, 8]])
    cache = numpy_model.new_cache(1, 8)
    numpy_model.forward(prompt, cache)
    fanned = cache.select(np.zeros(2, dtype=np.intp))
    got = numpy_model.forward(np.asarray([[9], [10]]), fanned)
    with torch.no_grad():
        full = model(torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 8, 10]])).logits[:, -1].numpy()
    np.testing.assert_allclose(got[0], full, atol=2e-5, rtol=0)


def test_stacked_models_compute_each_member_as_it_alone_would(tmp_path: Path) -> None:
    """Guidance runs policy and reference as two members of one forward pass."""
    _random_llama(tmp_path / "a", 2, True)
    torch.manual_seed(5)
    _random_llama(tmp_path / "b", 2, True)
    a, b = NumpyLlama.load(tmp_path / "a"), NumpyLlama.load(tmp_path / "b")
    both = NumpyLlama.stack([a, b])
    assert both.members == 2
    ids = np.asarray([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    caches = [m.new_cache(2, 6) for m in (a, b, both)]
    alone = [m.forward(ids, c) for m, c in zip((a, b), caches, strict=False)]
    together = both.forward(ids, caches[2])
    np.testing.assert_array_equal(together[0], alone[0][0])
    np.testing.assert_array_equal(together[1], alone[1][0])
    step = np.asarray([[7], [8]])
    np.testing.assert_array_equal(both.forward(step, caches[2])[1], b.forward(step, caches[1])[0])


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"model_type": "gpt2"}, "model_type"),
        ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4}}, "rope type"),
        ({"attention_bias": True}, "biases"),
        ({"hidden_act": "gelu"}, "hidden_act"),
    ],
)
def test_unsupported_configs_are_refused_with_the_reason(
    change: dict[str, object], reason: str
) -> None:
    config = {"model_type": "llama", "num_attention_heads": 4, "hidden_size": 64}
    config.update({"num_hidden_layers": 1, **change})
    with pytest.raises(UnsupportedModel, match=reason):
        supports(config)


def test_guidance_is_exact_at_its_end_points_and_keeps_impossible_tokens_impossible() -> None:
    rng = np.random.default_rng(0)
    policy = rng.normal(size=(3, 50)).astype(np.float32)
    reference = rng.normal(size=(3, 50)).astype(np.float32)
    reference[0, 7] = -np.inf
    assert np.array_equal(guide(policy, reference, 1.0)[1:], log_softmax(policy)[1:])
    assert np.array_equal(guide(policy, reference, 0.0), log_softmax(reference))
    mixed = guide(policy, reference, 2.0)
    assert mixed[0, 7] == -np.inf and np.isfinite(mixed[1:]).all()
    ref, pol = log_softmax(reference[1:]), log_softmax(policy[1:])
    np.testing.assert_allclose(mixed[1:], ref + 2.0 * (pol - ref), rtol=1e-6)


def test_left_padded_prompts_of_different_lengths_match_each_prompt_run_alone(
    tmp_path: Path,
) -> None:
    """GRPO's groups and the evaluation's batches hold prompts of different lengths."""
    model = _random_llama(tmp_path, 2, True)
    prompts = [[5, 6, 7], [9, 8, 7, 6, 5, 4]]
    numpy_model = NumpyLlama.load(tmp_path)
    pad = np.asarray([3, 0], dtype=np.intp)
    cache = numpy_model.new_cache(2, 9, pad)
    ids = np.asarray([[0, 0, 0, *prompts[0]], prompts[1]])
    got = [numpy_model.forward(ids, cache)[0]]
    steps = [[11, 12], [13, 14], [15, 16]]
    got += [numpy_model.forward(np.asarray([[a], [b]]), cache)[0] for a, b in steps]
    for row, prompt in enumerate(prompts):
        full = torch.tensor([prompt + [step[row] for step in steps]])
        with torch.no_grad():
            expected = model(full).logits[0].numpy()  # (length, V)
        for k, logits in enumerate(got):
            np.testing.assert_allclose(logits[row], expected[len(prompt) - 1 + k], atol=2e-5)


def test_logits_at_are_the_heads_logits_of_those_tokens(tmp_path: Path) -> None:
    _random_llama(tmp_path / "a", 2, False)
    _random_llama(tmp_path / "b", 1, True)
    both = NumpyLlama.stack([NumpyLlama.load(tmp_path / "a"), NumpyLlama.load(tmp_path / "a")])
    for model in (NumpyLlama.load(tmp_path / "b"), both):
        hidden = model.hidden(np.asarray([[3, 1, 4], [1, 5, 9]]), model.new_cache(2, 3))
        full = model.head(hidden)  # (M, 2, V)
        rows, tokens = np.asarray([0, 0, 1, 1, 1]), np.asarray([7, 200, 0, 7, 13])
        np.testing.assert_allclose(
            model.logits_at(hidden, rows, tokens), full[:, rows, tokens], rtol=1e-5, atol=1e-5
        )


class _EveryOtherToken:
    """A grammar over token ids: at even steps token 3 only, at odd steps the ids of its
    step's slice of the vocabulary; token 0 (end) once the budget is spent."""

    def initial_state(self, budget: int | None = None) -> tuple[int, int]:
        return (0, budget or 8)

    def allowed(self, state: tuple[int, int]) -> NDArray[np.int64]:
        step, budget = state
        if step >= budget - 1:
            return np.asarray([0])
        if step % 2 == 0:
            return np.asarray([3])
        return np.arange(10 + 7 * step, 10 + 7 * step + 5 + step)

    def advance(self, state: tuple[int, int], token: int) -> tuple[int, int]:
        assert token in self.allowed(state)
        return (state[0] + 1, state[1])


@pytest.mark.parametrize("guidance", [None, 1.5], ids=["plain", "guided"])
def test_constrained_decoding_draws_from_the_masked_distribution_it_reports(
    tmp_path: Path, guidance: float | None
) -> None:
    """`decode` computes logits of the allowed tokens only; what it reports (the
    log-probability of each token, what GRPO's update must reproduce) is the full
    distribution's, masked and renormalised, and every token is an allowed one."""
    models = [_random_llama(tmp_path / name, 2, True) for name in ("policy", "reference")]
    policy = NumpyLlama.load(tmp_path / "policy")
    if guidance is not None:
        policy = NumpyLlama.stack([policy, NumpyLlama.load(tmp_path / "reference")])
    grammar = _EveryOtherToken()
    prompts = [[5, 6, 7], [9, 8, 7, 6]]
    decoded = decode(
        policy, prompts, 3, temperature=0.8, rng=np.random.default_rng(0), max_new_tokens=7,
        eos_id=0, grammar=grammar, guidance=guidance, keep_allowed=True,
    )  # fmt: skip
    assert decoded.allowed is not None and len(decoded.tokens) == 6
    for row, written in enumerate(decoded.tokens):
        assert written[-1] == 0 and len(written) == 7
        full = torch.tensor([prompts[row // 3] + written])
        with torch.no_grad():
            logits = [m(full).logits[0, -len(written) - 1 : -1].numpy() for m in models]
        scores = logits[0] if guidance is None else guide(logits[0], logits[1], guidance)
        for k, token in enumerate(written):
            permitted = decoded.allowed[row][k]
            assert token in permitted
            expected = log_softmax(scores[k, permitted] / np.float32(0.8))
            assert decoded.logps[row][k] == pytest.approx(
                float(expected[list(permitted).index(token)]), abs=1e-4
            )


class _FromAnOddStep(_EveryOtherToken):
    def initial_state(self, budget: int | None = None) -> tuple[int, int]:
        return (1, 8)  # six tokens allowed


def test_constrained_draws_follow_the_reported_probabilities(tmp_path: Path) -> None:
    _random_llama(tmp_path, 2, True)
    decoded = decode(
        NumpyLlama.load(tmp_path), [[5, 6, 7]], 4000, temperature=1.0,
        rng=np.random.default_rng(1), max_new_tokens=1, eos_id=0, grammar=_FromAnOddStep(),
    )  # fmt: skip
    first = np.asarray([row[0] for row in decoded.tokens])
    pairs = zip(decoded.tokens, decoded.logps, strict=True)
    reported = {row[0]: np.exp(logps[0]) for row, logps in pairs}
    assert set(reported) <= set(_FromAnOddStep().allowed((1, 8)).tolist())
    assert len(reported) >= 4 and sum(reported.values()) > 0.99  # every token was drawn
    for token, probability in reported.items():
        assert np.mean(first == token) == pytest.approx(probability, abs=0.03)
