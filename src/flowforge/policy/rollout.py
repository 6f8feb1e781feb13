"""GRPO's sampler: groups of workflows per prompt, and the distribution each token came from.

`sample_groups` draws `group_size` completions per prompt with plain ancestral sampling
(temperature only, as ``sample.py``), optionally through a token grammar
(``grammar.TextFormGrammar``: every finished sample validates), and returns what the update
needs: the token ids, which tokens were allowed at each position, and the sampler's own
log-probability of each token. The update scores the same distribution (logits / T, then
restricted to the allowed tokens), so its log-probabilities are the sampler's up to float
rounding (tests/test_grpo.py checks it).

Two runtimes draw the samples (`runtime`): the numpy Llama (``numpy_llama.py``, the default
whenever it supports the model; built from the policy's current weights at every call) and
transformers. Why numpy: a group of the default tiny policy is a few hundred one-token steps,
and a transformers forward call costs ~6 ms of Python per step whatever the batch, so
sampling was half of a GRPO step (1.3 of 2.6 s, cProfile); numpy brought it to 0.9 s
(docs/grpo.md, "Speed"). Both run the prompts at once, left-padded, with positions counted
from each row's first real token as ``generate`` counts them (numpy runs each prompt once
and fans it out to its group), drop a row from the batch and its KV cache when it writes
``<eos>``, and sample by Gumbel-max over the masked scores. For one seed they draw different
samples (different generators), each deterministic in its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import DynamicCache, PreTrainedModel

from .constraint import Grammar
from .model import numpy_copy, with_cache
from .numpy_llama import NumpyLlama, Runtime, UnsupportedModel
from .numpy_sampler import decode
from .tokenizer import PolicyTokenizer


@dataclass(frozen=True)
class Rollout:
    """Samples of one step (B = prompts * group_size rows, prompt-major; T = longest)."""

    prompts: list[str]  # (B,) the prompt of each row
    input_ids: torch.Tensor  # (B, L + T) left-padded prompt, completion, <pad> after <eos>
    attention_mask: torch.Tensor  # (B, L + T) 0 on the prompt's left padding
    completion_mask: torch.Tensor  # (B, T) 1 up to and including <eos>
    allowed: torch.Tensor | None  # (B, T, V) tokens the grammar allowed; None: all
    logps: torch.Tensor  # (B, T) the sampler's log-probability of each token (0 after <eos>)
    texts: list[str]  # (B,) text forms, up to <eos>
    finished: list[bool]  # (B,) wrote <eos> within the budget


def _allowed(grammar: Grammar[Any], states: Sequence[Any], vocab: int) -> torch.Tensor:
    mask = torch.zeros((len(states), vocab), dtype=torch.bool)  # (b, V)
    for row, state in enumerate(states):
        mask[row, torch.from_numpy(grammar.allowed(state))] = True
    return mask


def sample_groups(
    model: PreTrainedModel,
    tokenizer: PolicyTokenizer,
    prompts: Sequence[str],
    group_size: int,
    *,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    grammar: Grammar[Any] | None,
    runtime: Runtime = "auto",
) -> Rollout:
    """`group_size` samples of each prompt (module docstring); deterministic in `seed` and
    `runtime`. `runtime` "numpy" raises UnsupportedModel for a model it cannot run."""
    if runtime != "transformers":
        try:
            fast = numpy_copy(model)
        except UnsupportedModel:
            if runtime == "numpy":
                raise
        else:
            return _sample_numpy(
                fast, tokenizer, prompts, group_size, max_new_tokens, temperature, seed, grammar
            )
    return _sample_transformers(
        model, tokenizer, prompts, group_size, max_new_tokens, temperature, seed, grammar
    )


def _sample_numpy(
    model: NumpyLlama,
    tokenizer: PolicyTokenizer,
    prompts: Sequence[str],
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    grammar: Grammar[Any] | None,
) -> Rollout:
    segments = [tokenizer.encode_segment(tokenizer.prompt_segment(p)) for p in prompts]
    decoded = decode(
        model,
        segments,
        group_size,
        temperature=temperature,
        rng=np.random.default_rng(seed),
        max_new_tokens=max_new_tokens,
        eos_id=tokenizer.eos_id,
        grammar=grammar,
        keep_allowed=True,
    )
    rows, tokens = len(prompts) * group_size, decoded.tokens
    width, prompt_width = max(map(len, tokens)), max(map(len, segments))
    prompt_ids = torch.full((rows, prompt_width), tokenizer.pad_id)  # (B, L) left-padded
    prompt_mask = torch.zeros((rows, prompt_width), dtype=torch.long)
    completion = torch.full((rows, width), tokenizer.pad_id)  # (B, T)
    completion_mask = torch.zeros((rows, width), dtype=torch.long)
    logps = torch.zeros((rows, width))
    allowed = torch.zeros((rows, width, model.vocab_size), dtype=torch.bool) if grammar else None
    for row, written in enumerate(tokens):  # prompt-major
        ids = segments[row // group_size]
        prompt_ids[row, prompt_width - len(ids) :] = torch.tensor(ids)
        prompt_mask[row, prompt_width - len(ids) :] = 1
        completion[row, : len(written)] = torch.tensor(written)
        completion_mask[row, : len(written)] = 1
        logps[row, : len(written)] = torch.tensor(decoded.logps[row])
        if allowed is not None and decoded.allowed is not None:
            for position, permitted in enumerate(decoded.allowed[row]):
                allowed[row, position, torch.from_numpy(permitted)] = True
    return Rollout(
        prompts=[prompt for prompt in prompts for _ in range(group_size)],
        input_ids=torch.cat([prompt_ids, completion], dim=1),
        attention_mask=torch.cat([prompt_mask, torch.ones_like(completion)], dim=1),
        completion_mask=completion_mask,
        allowed=allowed,
        logps=logps,
        texts=[tokenizer.decode_workflow(ids) for ids in tokens],
        finished=[t[-1] == tokenizer.eos_id for t in tokens],
    )


def _sample_transformers(
    model: PreTrainedModel,
    tokenizer: PolicyTokenizer,
    prompts: Sequence[str],
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    seed: int,
    grammar: Grammar[Any] | None,
) -> Rollout:
    rows = [prompt for prompt in prompts for _ in range(group_size)]
    segments = [tokenizer.prompt_segment(prompt) for prompt in rows]
    batch = tokenizer.hf(segments, add_special_tokens=False, padding=True, return_tensors="pt")
    prompt_ids, prompt_mask = batch["input_ids"], batch["attention_mask"]  # (B, L)
    generator = torch.Generator().manual_seed(seed)
    cache = DynamicCache(config=model.config)
    position = (prompt_mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, L)
    with torch.no_grad():
        out = model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=position,
            **with_cache(model, cache),
            use_cache=True,
            logits_to_keep=1,
        )
    vocab = out.logits.shape[-1]
    completion = torch.full((len(rows), max_new_tokens), tokenizer.pad_id)  # (B, T)
    logps = torch.zeros((len(rows), max_new_tokens))  # (B, T)
    allowed = (  # (B, T, V)
        torch.zeros((len(rows), max_new_tokens, vocab), dtype=torch.bool) if grammar else None
    )
    active = torch.arange(len(rows))  # (b,) the rows still going
    states = [grammar.initial_state(max_new_tokens)] * len(rows) if grammar else []
    mask, position = prompt_mask, position[:, -1:]
    for step in range(max_new_tokens):
        scores = out.logits[:, -1].float() / temperature  # (b, V)
        if grammar is not None and allowed is not None:
            allowed[active, step] = _allowed(grammar, states, vocab)
            scores = torch.where(allowed[active, step], scores, float("-inf"))
        logprobs = torch.log_softmax(scores, dim=-1)  # (b, V)
        noise = torch.rand(logprobs.shape, generator=generator).clamp_(min=1e-20)
        token = (logprobs - torch.log(-torch.log(noise))).argmax(dim=-1)  # Gumbel-max
        completion[active, step] = token
        logps[active, step] = logprobs.gather(-1, token[:, None]).squeeze(-1)
        if grammar is not None:
            states = [grammar.advance(s, t) for s, t in zip(states, token.tolist(), strict=True)]
        going = token != tokenizer.eos_id  # (b,)
        if not bool(going.any()):
            break
        if not bool(going.all()):  # finished rows leave the batch and the cache
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, token, mask, position = active[keep], token[keep], mask[keep], position[keep]
            if grammar is not None:
                states = [s for s, g in zip(states, going.tolist(), strict=True) if g]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        position = position + 1
        with torch.no_grad():
            out = model(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=position,
                **with_cache(model, cache),
                use_cache=True,
            )
    width = step + 1
    completion = completion[:, :width]
    is_eos = completion == tokenizer.eos_id
    finished = is_eos.any(dim=1)
    last = torch.where(finished, is_eos.int().argmax(dim=1), width - 1)
    completion_mask = (torch.arange(width)[None, :] <= last[:, None]).long()  # (B, T)
    return Rollout(
        prompts=rows,
        input_ids=torch.cat([prompt_ids, completion], dim=1),
        attention_mask=torch.cat([prompt_mask, torch.ones_like(completion)], dim=1),
        completion_mask=completion_mask,
        allowed=allowed[:, :width] if allowed is not None else None,
        logps=logps[:, :width] * completion_mask,
        texts=[tokenizer.decode_workflow(ids) for ids in completion.tolist()],
        finished=finished.tolist(),
    )
