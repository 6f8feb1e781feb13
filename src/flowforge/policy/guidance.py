"""Guided decoding between two policies: ``logits_ref + w * (logits_policy - logits_ref)``.

The method's step 4 (docs/method.md): classifier-free-guidance-style extrapolation along the
path from the SFT ("reference") model to the GRPO model. w = 0 decodes as the reference,
w = 1 as the policy, w > 1 goes past the policy. Both read the same prefix at every step.

`GuidanceProcessor` is a logits processor given to the *policy's* ``generate``; it holds the
reference model with its own KV cache. At the first step of a ``generate`` call it runs the
reference on the whole left-padded prompt (attention mask: not ``<pad>``; positions counted
from the first real token, as ``generate`` counts them for the policy); afterwards it feeds
the reference only the token each row just got, so the reference costs one extra forward
per token, like the policy itself. Each model's logits are turned into log-probabilities
first (log-softmax), so the mix is between distributions, not arbitrary logit offsets.

Exactness: the mix is ``torch.lerp(ref, policy, w)``, which returns its end points exactly,
so w = 1 gives the policy's log-probabilities bit for bit (the same distribution as its raw
logits) and w = 0 the reference's. A token that either model gives probability 0 (-inf,
e.g. masked by an earlier processor) stays impossible. Compose as ``[guidance, constraint]``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DynamicCache, LogitsProcessor, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from .model import embedding_rows, load_policy, with_cache
from .tokenizer import PolicyTokenizer, tokenizer_mismatch


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A `DynamicLayer` that appends into a buffer doubled when full, instead of concatenating.

    ``DynamicLayer.update`` is ``torch.cat``: every step copies the whole cache, O(T^2) memory
    traffic over a generation and, measured here, the largest single cost of decoding a small
    model on CPU (a third of the time). Here a step writes only its new keys and values; the
    layer returns views of the same values, so attention computes the same numbers.
    """

    _key_buffer: torch.Tensor | None = None
    _value_buffer: torch.Tensor | None = None
    _length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self._length + key_states.shape[-2]
        if (
            self._key_buffer is None
            or self._value_buffer is None
            or end > self._key_buffer.shape[-2]
        ):
            self._key_buffer, self._value_buffer = self._grown(key_states, value_states, end)
        self._key_buffer[..., self._length : end, :] = key_states
        self._value_buffer[..., self._length : end, :] = value_states
        self._length = end
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values

    def _grown(
        self, key_states: torch.Tensor, value_states: torch.Tensor, end: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        capacity = max(2 * end, 64)
        buffers = []
        for new, old in ((key_states, self._key_buffer), (value_states, self._value_buffer)):
            buffer = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
            if old is not None and self._length:
                buffer[..., : self._length, :] = old[..., : self._length, :]
            buffers.append(buffer)
        return buffers[0], buffers[1]


def growing_cache(config: PretrainedConfig) -> DynamicCache:
    """A `DynamicCache` for `config` whose full-attention layers are `GrowingLayer`s."""
    cache = DynamicCache(config=config)
    cache.layers = [
        GrowingLayer() if type(layer) is DynamicLayer else layer  # type: ignore[no-untyped-call]
        for layer in cache.layers
    ]
    return cache


class GuidanceError(ValueError):
    """Two models that cannot be mixed (different vocabularies), or a bad weight."""


def guide(
    policy_logits: torch.Tensor, reference_logits: torch.Tensor, weight: float
) -> torch.Tensor:
    """``ref + w * (policy - ref)`` over log-softmax of each (rows, vocab); exact at w=0, 1."""
    policy = torch.log_softmax(policy_logits.float(), dim=-1)  # (B, V)
    reference = torch.log_softmax(reference_logits.float(), dim=-1)  # (B, V)
    mixed = torch.lerp(reference, policy, weight)
    possible = torch.isfinite(policy) & torch.isfinite(reference)
    return mixed.masked_fill(~possible, float("-inf"))


class GuidanceProcessor(LogitsProcessor):
    """Replaces the policy's next-token scores by the guided mix with `reference` (see above).

    `pad_token_id` marks the left padding of prompts. The processor can be reused across
    ``generate`` calls: a call whose ``input_ids`` are not the previous ones plus one column
    starts a new reference cache.
    """

    def __init__(self, reference: PreTrainedModel, weight: float, pad_token_id: int) -> None:
        if not torch.isfinite(torch.tensor(weight)):
            raise GuidanceError(f"guidance weight must be finite, got {weight}")
        self.reference = reference.eval()  # type: ignore[no-untyped-call]
        self.weight = float(weight)
        self.pad_token_id = pad_token_id
        self._tokens = embedding_rows(reference)
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # (B, T) 1 for real tokens; None: no padding
        self._positions: torch.Tensor | None = None  # (B, 1) position of the last token
        self._seen: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self._tokens != scores.shape[-1]:
            raise GuidanceError(
                f"the reference has {self._tokens} tokens and the policy "
                f"{scores.shape[-1]}; guidance needs two models of one tokenizer"
            )
        reference_logits = self._reference_logits(input_ids)
        return guide(scores, reference_logits.to(scores.device), self.weight)  # type: ignore[return-value]

    def _continues(self, input_ids: torch.Tensor) -> bool:
        seen = self._seen
        return (
            seen is not None
            and input_ids.shape[0] == seen.shape[0]
            and input_ids.shape[1] == seen.shape[1] + 1
            and torch.equal(input_ids[:, :-1], seen)
        )

    def _reference_logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The reference's next-token logits for every row (B, V), one step of its cache."""
        device = self.reference.device
        if self._continues(input_ids) and self._positions is not None:
            feed = input_ids[:, -1:]
            if self._mask is not None:
                self._mask = torch.cat([self._mask, self._mask.new_ones((len(feed), 1))], dim=1)
            self._positions = self._positions + 1
            positions = self._positions
        else:  # first step: the whole prompt, positions as generate counts them
            feed = input_ids
            mask = (input_ids != self.pad_token_id).long()
            positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
            self._mask = None if bool(mask.all()) else mask
            self._positions = positions[:, -1:]
            self._cache = growing_cache(self.reference.config)
        self._seen = input_ids
        assert self._cache is not None  # made at the first step, kept while it continues
        with torch.no_grad():
            out = self.reference(
                input_ids=feed.to(device),
                attention_mask=None if self._mask is None else self._mask.to(device),
                position_ids=positions.to(device),
                **with_cache(self.reference, self._cache),
                use_cache=True,
                logits_to_keep=1,
            )
        logits: torch.Tensor = out.logits[:, -1]
        return logits


def load_guidance(
    reference_dir: Path | str, weight: float, tokenizer: PolicyTokenizer
) -> GuidanceProcessor:
    """Guidance towards the policy of `tokenizer` from the reference policy in a directory.

    GuidanceError unless the reference was saved with the same token inventory (GRPO starts
    from the SFT policy, so its reference always is).
    """
    reference, reference_tokenizer = load_policy(reference_dir)
    mismatch = tokenizer_mismatch(reference_tokenizer, tokenizer, reference_dir)
    if mismatch is not None:
        raise GuidanceError(mismatch)
    return GuidanceProcessor(reference, weight, tokenizer.pad_id)
