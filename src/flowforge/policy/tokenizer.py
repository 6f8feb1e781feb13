"""The policy tokenizer: a Hugging Face fast tokenizer whose workflow tokens are atomic.

Two encodings of the same pieces (``vocab.py``):

- ``wordlevel`` (the embedded default): a `tokenizers` WordLevel model over the fitted
  inventory. The pre-tokenizer is ``vocab.TOKEN_PATTERN``; every piece is one token, pieces
  outside the inventory are ``<unk>``; the decoder concatenates (``Fuse``), so decoding is
  exact.
- ``bytelevel`` (a pretrained LLM, `extend_tokenizer`): the LLM's byte-level BPE with every
  workflow piece added as one vocabulary entry and ``ignore_merges`` on, so a piece that is
  in the vocabulary is one token and anything else (prompt words, unseen values) falls back
  to the LLM's own sub-words. The LLM's embeddings of its prompt words are kept.

Both are saved as ``tokenizer.json`` + ``tokenizer_config.json`` (loadable with
``AutoTokenizer.from_pretrained(dir)``) and ``flowforge_tokenizer.json`` (the fitted
`WorkflowVocab` and the encoding), which `PolicyTokenizer` reads to know what every token
means.

Layout of one example (``prompt_segment`` + completion)::

    <bos> [<score_k>] prompt pieces <sep> workflow pieces <eos>

Padding is on the left, for generation.

`PolicyTokenizer` holds the `tokenizers` backend and wraps it in a transformers
``PreTrainedTokenizerFast`` (`PolicyTokenizer.hf`) only when asked: training and
``generate`` need the wrapper, a design request does not, and importing transformers costs a
design command ~2.5 s (docs/benchmarks.md, "design latency").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

if TYPE_CHECKING:  # transformers is imported where the wrapper is built (module docstring)
    from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .meaning import shared_encoder
from .vocab import (
    BOS,
    EOS,
    NEWLINE,
    PAD,
    SEP,
    TOKEN_PATTERN,
    UNK,
    VocabError,
    WorkflowVocab,
    format_prompt,
    line_text,
    score_token,
    split_pieces,
)

Encoding = Literal["wordlevel", "bytelevel"]
META_FILE = "flowforge_tokenizer.json"
_META_FORMAT = 1


def _split() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Split(Regex(TOKEN_PATTERN), behavior="isolated")


def build_tokenizer(vocab: WorkflowVocab) -> Tokenizer:
    """The ``wordlevel`` tokenizer of `vocab` (specials first: pad 0, bos 1, eos 2, ...)."""
    ids = {token: index for index, token in enumerate(vocab.tokens())}
    backend = Tokenizer(models.WordLevel(ids, unk_token=UNK))
    backend.pre_tokenizer = _split()
    backend.decoder = decoders.Fuse()
    # The specials as whole tokens (their ids unchanged), as the transformers wrapper and a
    # saved tokenizer.json have them: without this a new tokenizer's `encode_segment` read
    # "<bos><score_3>" or " cat<sep>" as one unknown piece.
    backend.add_special_tokens([AddedToken(t, special=True) for t in vocab.specials])
    return backend


def _wrap(backend: Tokenizer, vocab: WorkflowVocab) -> PreTrainedTokenizerFast:
    """The transformers wrapper of a policy backend: our specials, left padding."""
    from transformers import PreTrainedTokenizerFast

    scores = list(vocab.specials[5:])
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        sep_token=SEP,
        unk_token=UNK,
        additional_special_tokens=scores,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def _bytelevel(text: str) -> str:
    """`text` in the byte-level alphabet a GPT-2 style BPE vocabulary is written in."""
    pieces = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(
        text
    )
    return "".join(piece for piece, _ in pieces)


def extend_tokenizer(base: PreTrainedTokenizerBase, vocab: WorkflowVocab) -> Tokenizer:
    """The ``bytelevel`` tokenizer: `base` (a byte-level BPE) plus one token per workflow piece.

    New tokens get ids after every id of `base`; the caller resizes the model's embeddings
    to ``len(result)``. Raises VocabError for a `base` that is not a byte-level BPE.
    """
    data: dict[str, Any] = json.loads(base.backend_tokenizer.to_str())
    model = data["model"]
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(data.get("decoder")):
        raise VocabError("a pretrained tokenizer must be a byte-level BPE (GPT-2, Llama-3, SmolLM)")
    table: dict[str, int] = model["vocab"]
    next_id = 1 + max([*table.values(), *(t["id"] for t in data.get("added_tokens", []))])
    for atom in vocab.workflow_tokens():
        surface = _bytelevel(atom)
        if surface not in table:
            table[surface] = next_id
            next_id += 1
    model["ignore_merges"] = True  # a piece in the vocabulary is one token, never merged
    model["dropout"] = None
    data["normalizer"] = data["pre_tokenizer"] = data["post_processor"] = None
    backend = Tokenizer.from_str(json.dumps(data))
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [_split(), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    # Our specials as whole tokens after the pieces (what the transformers wrapper adds).
    backend.add_special_tokens([AddedToken(t, special=True) for t in vocab.specials])
    return backend


@dataclass(frozen=True)
class PolicyTokenizer:
    """A `tokenizers` tokenizer and what each of its workflow tokens means.

    `hf` (its transformers wrapper, built on first use) is what TRL and ``generate`` use.
    The rest is the interface of the constrained and guided decoders: `atom_id` maps a piece
    (``"12 "``, ``"KSampler"``, ``" cfg="``, ``"7.0"``, ``"\\n"``) to its one token id,
    `roles` says which roles a token id can play.
    """

    backend: Tokenizer
    vocab: WorkflowVocab
    encoding: Encoding
    atom_ids: dict[str, int] = field(init=False, repr=False, compare=False)
    _surfaces: dict[int, str] = field(init=False, repr=False, compare=False)
    _meanings: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        table = self.backend.get_vocab(with_added_tokens=True)
        atoms: dict[str, int] = {}
        for token in self.vocab.tokens():
            raw = self.encoding == "wordlevel" or token in self.vocab.specials
            key = token if raw else _bytelevel(token)
            if key in table:
                atoms[token] = table[key]
        needed = (*self.vocab.specials, *self.vocab.workflow_tokens())
        missing = [token for token in needed if token not in atoms]
        if missing:
            raise VocabError(f"tokenizer lacks workflow tokens, e.g. {missing[:3]}; refit it")
        object.__setattr__(self, "atom_ids", atoms)
        object.__setattr__(self, "_surfaces", {i: t for t, i in atoms.items()})
        object.__setattr__(self, "_meanings", {})

    # --- ids of the layout -------------------------------------------------------------
    @property
    def pad_id(self) -> int:
        return self.atom_ids[PAD]

    @property
    def bos_id(self) -> int:
        return self.atom_ids[BOS]

    @property
    def eos_id(self) -> int:
        return self.atom_ids[EOS]

    @property
    def sep_id(self) -> int:
        return self.atom_ids[SEP]

    @property
    def newline_id(self) -> int:
        return self.atom_ids[NEWLINE]

    def line_id(self, line: int) -> int:
        """The token of line id `line` (1-based)."""
        return self.atom_ids[line_text(line)]

    @cached_property
    def hf(self) -> PreTrainedTokenizerFast:
        """The transformers tokenizer over `backend` (imports transformers on first use)."""
        return _wrap(self.backend, self.vocab)

    def __len__(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode_segment(self, segment: str) -> list[int]:
        """Token ids of a prompt segment (`prompt_segment`), as ``hf`` would encode it."""
        return list(self.backend.encode(segment, add_special_tokens=False).ids)

    def token_text(self, token_id: int) -> str | None:
        """The vocabulary entry of `token_id` (None outside the vocabulary)."""
        return self.backend.id_to_token(token_id)

    def roles(self, token_id: int) -> frozenset[str]:
        """What a token can be: special, newline, line, class, key, value, prompt (or {})."""
        surface = self._surfaces.get(token_id)
        if surface is None:
            return frozenset()
        found = {
            role
            for role, members in (
                ("special", self.vocab.specials),
                ("class", self.vocab.classes),
                ("key", self.vocab.keys),
                ("value", self.vocab.values),
                ("prompt", self.vocab.prompt_words),
            )
            if surface in members
        }
        if surface == NEWLINE:
            found.add("newline")
        if surface.endswith(" ") and surface[:-1].isdigit():
            found.add("line")
        return frozenset(found)

    # --- text <-> ids ------------------------------------------------------------------
    def prompt_segment(self, prompt: str, score_bin: int | None = None) -> str:
        """``<bos> [<score_k>] [meaning tokens] prompt <sep>`` as a string (what TRL
        tokenizes as the prompt); the meaning tokens only with a meaning codec."""
        score = "" if score_bin is None else score_token(score_bin)
        if score_bin is not None and not 0 <= score_bin < self.vocab.config.score_bins:
            raise VocabError(f"score bin {score_bin} outside 0..{self.vocab.config.score_bins - 1}")
        words = format_prompt(prompt, self.vocab.config.max_prompt_words)
        return BOS + score + self.meaning_segment(prompt) + words + SEP

    def meaning_segment(self, prompt: str) -> str:
        """The prompt's meaning tokens (`policy.meaning`; "" without a codec), computed once
        per prompt text: MiniLM embeds it (cached in memory and on disk)."""
        codec = self.vocab.meaning
        if codec is None:
            return ""
        found = self._meanings.get(prompt)
        if found is None:
            found = codec.segment(shared_encoder().encode([prompt])[0])
            self._meanings[prompt] = found
        return found

    def encode_workflow(self, text: str) -> list[int]:
        """One id per piece of a text form; VocabError naming the first piece not in it."""
        ids = []
        for piece in split_pieces(text):
            token_id = self.atom_ids.get(piece)
            if token_id is None or piece in self.vocab.prompt_words:
                raise VocabError(f"{piece!r} is not a workflow token of this policy's vocabulary")
            ids.append(token_id)
        return ids

    def decode_workflow(self, ids: list[int]) -> str:
        """The text of generated ids: up to the first ``<eos>``, padding dropped.

        Exact for atomic tokens (their pieces concatenated); other tokens (sub-words of a
        pretrained tokenizer, specials) are written as the tokenizer decodes them, so a
        broken sample still shows what the model wrote.
        """
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        kept = [i for i in ids if i != self.pad_id]
        return str(self.backend.decode(kept, skip_special_tokens=False))

    def save(self, directory: Path) -> None:
        self.hf.save_pretrained(str(directory))
        meta = {"format": _META_FORMAT, "encoding": self.encoding, "vocab": self.vocab.to_json()}
        (directory / META_FILE).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")


def tokenizer_mismatch(
    reference: PolicyTokenizer, policy: PolicyTokenizer, reference_dir: Path | str
) -> str | None:
    """Why guidance cannot mix a policy with the reference in `reference_dir` (their token
    inventories differ), or None when they share one (GRPO starts from the SFT policy)."""
    if (
        reference.vocab != policy.vocab
        or reference.encoding != policy.encoding
        or len(reference) != len(policy)
    ):
        return (
            f"{reference_dir}: its tokenizer differs from the policy's; guidance mixes two "
            "models of one tokenizer (the SFT policy and a GRPO policy trained from it)"
        )
    return None


def load_tokenizer(directory: Path) -> PolicyTokenizer:
    """The policy tokenizer saved in `directory`; VocabError if it is not one."""
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        raise VocabError(f"{directory}: no {META_FILE}; not a flowforge policy tokenizer")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise VocabError(f"{meta_path}: not JSON ({err.msg})") from None
    if meta.get("format") != _META_FORMAT or meta.get("encoding") not in ("wordlevel", "bytelevel"):
        raise VocabError(f"{meta_path}: unknown format {meta.get('format')!r}")
    try:
        backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
    except Exception as err:  # tokenizers raises a bare Exception for a missing or bad file
        raise VocabError(f"{directory}: cannot read tokenizer.json ({err})") from None
    return PolicyTokenizer(backend, WorkflowVocab.from_json(meta["vocab"]), meta["encoding"])


def new_tokenizer(vocab: WorkflowVocab) -> PolicyTokenizer:
    """The embedded default: a ``wordlevel`` tokenizer of `vocab`."""
    return PolicyTokenizer(build_tokenizer(vocab), vocab, "wordlevel")
