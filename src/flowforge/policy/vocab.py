"""The policy's token inventory: one atomic token per workflow word, and prompt words.

A schema-constrained decoder (issue 5) decides token by token which continuations keep a
workflow valid. That is only simple if every word of the text form is exactly one token, so
the text form is cut into *pieces* by one regular expression (`TOKEN_PATTERN`), used both
here (Python ``re``) and inside the Hugging Face tokenizer (its pre-tokenizer):

- line id with its trailing space, ``"12 "`` (line ids and int values never share a token);
- class name, bare or JSON-quoted, ``"KSampler"``;
- input name with its leading space and ``=``, ``" cfg="``;
- value, exactly as `to_text` writes it: ``"7.0"``, ``"25"``, ``"@3.1"``, ``"$PROMPT"``,
  ``"true"``, ``"dpmpp_2m"``, ``'"$NEGATIVE, embedding:EasyNegative"'``;
- newline ``"\\n"`` between lines (no trailing newline; ``<eos>`` ends the workflow);
- prompt word with its leading space, ``" cat"`` (a prompt is lower-cased and re-spaced by
  `format_prompt` first, so every prompt piece starts with a space and none can be mistaken
  for a workflow piece).

Concatenating pieces gives the text back exactly, so decoding is concatenation.

The vocabulary of values is fitted from a corpus of text forms (an augmented library), plus
what the catalog says the used classes accept (every enum choice, every input name), plus
number grids, so that the policy *can* write workflows that are not in its corpus:
ints -64..256, multiples of 8 up to 4096 and of 64 up to 8192 (sizes); floats k/20 for
-20..20 (strengths, denoise, cfg) and k/2 up to 100 (cfg's range), written as Python repr
like the text form; links ``@N.S`` to every earlier line and output slot; placeholders
``$PROMPT``/``$NEGATIVE``/``$SEED`` with suffixes up to ``_4``; negative templates with one or
two of the catalog's embeddings. Prompt words are fitted on the *train* prompts only (held-out
prompts are never read by a training stage); words seen fewer than ``prompt_min_count``
times become ``<unk>``, so ``<unk>`` is trained and unseen words at test time map to it.

The grid is shared by every number input, so on its own it would let ``steps`` take a width
(1376 steps: GRPO found that the sim world and the ensemble do not mind, a ComfyUI server
would render it 45 times slower than 30). So the vocabulary also records each number input's
range in the corpus (`number_ranges`, per class and input), and the grammar keeps a value
within that range stretched by ``number_stretch`` (`number_range`): new values and new
combinations, but no further from human practice than the ensemble has data to judge.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowforge.settings import added_setting
from flowforge.workflow.graph import Node, Value, Workflow
from flowforge.workflow.schema import Catalog
from flowforge.workflow.textform import number_literal, to_text

from .meaning import MeaningCodec, MeaningError, fit_meaning

if TYPE_CHECKING:
    from flowforge.reward.backbone import TextEncoder

_QUOTED = r'"(?:[^"\\\n]|\\.)*"'
_BARE = r"[A-Za-z0-9_][A-Za-z0-9_.\-+/:]*"
#: The pieces of a text (module docstring). Alternatives are tried in order at each position;
#: the last one takes any single character so that every text is covered (as ``<unk>``).
#: In the tokenizer's regex engine (Oniguruma, Ruby syntax) ``^`` always anchors at line
#: starts; Python needs ``re.MULTILINE``, given by the inline ``(?m)``.
TOKEN_PATTERN = (
    rf"(?m)^[1-9][0-9]* | (?:{_BARE}|{_QUOTED})=|json:{_QUOTED}|{_QUOTED}"
    r'|\n|[^ \n"=]+| [^ \n]+|[^\n]'
)
_PIECES = re.compile(TOKEN_PATTERN)
_LINE_ID = re.compile(r"[1-9][0-9]* ")
_PROMPT_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[^\w\s]|_")

PAD, BOS, EOS, SEP, UNK = "<pad>", "<bos>", "<eos>", "<sep>", "<unk>"
NEWLINE = "\n"
PLACEHOLDER_KINDS = ("PROMPT", "NEGATIVE", "SEED")
MAX_PLACEHOLDER_SUFFIX = 4


def score_token(index: int) -> str:
    """The special token of score bin `index` (ComfyGen-FT conditioning, ``sft.py``)."""
    return f"<score_{index}>"


class VocabError(ValueError):
    """A vocabulary that cannot be fitted or read, or a text it cannot spell."""


@dataclass(frozen=True)
class VocabConfig:
    """How the token inventory is fitted (saved with the tokenizer)."""

    #: Longest workflow the policy can write, in lines (nodes); line ids are 1..max_lines.
    max_lines: int = 64
    #: Prompt words seen fewer times than this in the train prompts become <unk>.
    prompt_min_count: int = 2
    #: Prompts are cut to this many words (PartiPrompts' longest has 62).
    max_prompt_words: int = 64
    #: Score bins for ComfyGen-FT conditioning; every tokenizer carries these special tokens.
    score_bins: int = 10
    #: A number input may take values within its range in the corpus stretched by this
    #: factor (x1.5 above its largest, /1.5 below its smallest; a range with zero in it
    #: widens by half its span each side), and the catalog's min..max. None or 0: the
    #: catalog's min..max only (what vocabularies saved before the stretch existed do; 0 is
    #: the spelling a TOML config has, which has no null).
    number_stretch: float | None = 1.5
    #: Meaning tokens (`policy.meaning`): the prompt's MiniLM embedding on this many leading
    #: principal components of the train prompts', each cut into `meaning_bins` bins, read
    #: as one token per component before the prompt's words. 0: none (words only).
    meaning_dims: int = added_setting(0)
    #: Bins per meaning component (equally filled over the train prompts).
    meaning_bins: int = added_setting(5)
    #: Meaning clusters (`policy.meaning`): the train prompts' MiniLM embeddings grouped by
    #: spherical k-means into this many clusters; a prompt reads one token, its nearest
    #: centroid's, after any component tokens. 0: none.
    meaning_clusters: int = added_setting(0)

    def __post_init__(self) -> None:
        if not 2 <= self.max_lines <= 999:
            raise VocabError(f"max_lines must be in 2..999, got {self.max_lines}")
        if self.prompt_min_count < 1:
            raise VocabError(f"prompt_min_count must be >= 1, got {self.prompt_min_count}")
        if self.max_prompt_words < 1:
            raise VocabError(f"max_prompt_words must be >= 1, got {self.max_prompt_words}")
        if not 2 <= self.score_bins <= 100:
            raise VocabError(f"score_bins must be in 2..100, got {self.score_bins}")
        if self.number_stretch not in (None, 0) and not self.number_stretch >= 1:
            raise VocabError(
                f"number_stretch must be >= 1, or 0 or None (no stretch), got {self.number_stretch}"
            )
        if not 0 <= self.meaning_dims <= 64 or not 2 <= self.meaning_bins <= 32:
            raise VocabError(
                f"meaning_dims must be in 0..64 and meaning_bins in 2..32, got "
                f"{self.meaning_dims} and {self.meaning_bins}"
            )
        if not 0 <= self.meaning_clusters <= 4096 or self.meaning_clusters == 1:
            raise VocabError(
                f"meaning_clusters must be 0 (none) or in 2..4096, got {self.meaning_clusters}"
            )

    @property
    def meaning(self) -> bool:
        """Whether prompts are read with meaning tokens (components or clusters)."""
        return self.meaning_dims > 0 or self.meaning_clusters > 0


def split_pieces(text: str) -> list[str]:
    """The pieces of a text form (or a formatted prompt); ``"".join`` gives `text` back."""
    return _PIECES.findall(text)


def prompt_words(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks of a prompt, in order."""
    return _PROMPT_WORD.findall(text.lower())


def format_prompt(text: str, max_words: int) -> str:
    """The prompt as the policy reads it: lower-cased words, each with one leading space.

    Every stage that feeds a prompt to the policy (SFT, GRPO, sampling) must go through this
    so the tokenizer sees the same pieces it was fitted on.
    """
    return "".join(" " + word for word in prompt_words(text)[:max_words])


def literal_text(value: Value) -> str:
    """How `to_text` writes `value` as an input value (asked of `to_text`, never re-derived)."""
    text, _ = to_text(Workflow((Node("1", "Literal", (("v", value),)),)))
    return text.removeprefix("1 Literal v=")


def class_text(class_type: str) -> str:
    """How `to_text` writes a class name (bare, or JSON-quoted)."""
    text, _ = to_text(Workflow((Node("1", class_type),)))
    return text.removeprefix("1 ")


def key_text(input_name: str) -> str:
    """The input-name piece: leading space, the name as `to_text` writes it, ``=``."""
    # A string value: an int would come back as $SEED for the seed inputs.
    text, _ = to_text(Workflow((Node("1", "Literal", ((input_name, "x"),)),)))
    return text.removeprefix("1 Literal").removesuffix("x")


def line_text(line: int) -> str:
    """The line-id piece of line `line` (1-based): the number and one space."""
    return f"{line} "


@dataclass
class _Corpus:
    """What the text forms of a corpus hold: classes, keys, values, the most lines, and the
    smallest and largest number of each (class surface, key surface)."""

    classes: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)
    values: set[str] = field(default_factory=set)
    most: int = 0
    numbers: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)


def _corpus_roles(texts: Iterable[str]) -> _Corpus:
    """Read a corpus of text forms (`_Corpus`)."""
    corpus = _Corpus()
    for text in texts:
        for line in text.split("\n"):
            pieces = split_pieces(line)
            if len(pieces) < 2 or not _LINE_ID.fullmatch(pieces[0]):
                raise VocabError(f"not a text-form line: {line!r}")
            corpus.classes.add(pieces[1])
            for key, value in zip(pieces[2::2], pieces[3::2], strict=True):
                corpus.keys.add(key)
                corpus.values.add(value)
                number = number_literal(value)
                if number is not None:
                    low, high = corpus.numbers.get((pieces[1], key), (number, number))
                    corpus.numbers[(pieces[1], key)] = (min(low, number), max(high, number))
        corpus.most = max(corpus.most, text.count("\n") + 1)
    return corpus


def _surface_name(surface: str) -> str:
    """A class or input name from its piece: ``KSampler`` / ``" cfg="`` -> ``cfg``."""
    name = surface.strip().removesuffix("=")
    return str(json.loads(name)) if name.startswith('"') else name


def stretched(low: float, high: float, stretch: float) -> tuple[float, float]:
    """The range a number input may take, from its corpus range (`VocabConfig.number_stretch`)."""
    if low > 0:
        return low / stretch, high * stretch
    if high < 0:
        return low * stretch, high / stretch
    margin = (stretch - 1) * (high - low)
    return low - margin, high + margin


def _grid_values() -> list[Value]:
    ints = set(range(-64, 257)) | set(range(0, 4097, 8)) | set(range(0, 8193, 64))
    floats = {k / 20 for k in range(-400, 401)} | {k / 2 for k in range(40, 201)}
    return [*sorted(ints), *sorted(floats)]


def _special_values(catalog: Catalog) -> list[str]:
    placeholders = [
        f"${kind}" + (f"_{k}" if k > 1 else "")
        for kind in PLACEHOLDER_KINDS
        for k in range(1, MAX_PLACEHOLDER_SUFFIX + 1)
    ]
    embeddings = catalog.embeddings or ()
    templates = [
        json.dumps("$NEGATIVE, " + ", ".join(f"embedding:{name}" for name in chosen))
        for size in (1, 2)
        for chosen in itertools.permutations(embeddings, size)
    ]
    return [*placeholders, "true", "false", "null", *templates]


def _catalog_words(catalog: Catalog, classes: Iterable[str]) -> tuple[set[str], set[str], int]:
    """Keys and enum values the catalog declares for `classes`, and their most outputs."""
    keys: set[str] = set()
    values: set[str] = set()
    slots = 1
    for class_type in classes:
        schema = catalog.get(class_type)
        if schema is None:
            continue
        slots = max(slots, len(schema.outputs))
        for spec in schema.inputs:
            keys.add(key_text(spec.name))
            values.update(literal_text(choice) for choice in spec.choices)
    return keys, values, slots


@dataclass(frozen=True)
class WorkflowVocab:
    """The fitted inventory: what each atomic token means. Saved beside the tokenizer.

    Token surfaces are the pieces of `split_pieces`. `values` excludes surfaces that are
    also classes (one token then plays both roles; the line position tells them apart).
    """

    config: VocabConfig
    classes: tuple[str, ...]
    keys: tuple[str, ...]
    values: tuple[str, ...]
    prompt_words: tuple[str, ...]
    #: (class, input, smallest, largest) of every number input in the corpus, sorted.
    number_ranges: tuple[tuple[str, str, float, float], ...] = ()
    #: The meaning tokens' codec (`policy.meaning`), fitted on the train prompts; None when
    #: ``config.meaning_dims`` and ``config.meaning_clusters`` are 0.
    meaning: MeaningCodec | None = None
    _atoms: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _ranges: dict[tuple[str, str], tuple[float, float]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        lines = tuple(line_text(k) for k in range(1, self.config.max_lines + 1))
        atoms = (NEWLINE, *lines, *self.classes, *self.keys, *self.values, *self.prompt_words)
        if len(set(atoms)) != len(atoms):
            dupes = [token for token, n in Counter(atoms).items() if n > 1]
            raise VocabError(f"tokens listed twice in the vocabulary: {dupes[:5]}")
        object.__setattr__(self, "_atoms", atoms)
        ranges = {(c, i): (lo, hi) for c, i, lo, hi in self.number_ranges}
        object.__setattr__(self, "_ranges", ranges)
        config = self.config
        if (self.meaning is not None) != config.meaning or (
            self.meaning is not None
            and (
                self.meaning.dims != config.meaning_dims
                or (config.meaning_dims and self.meaning.bins != config.meaning_bins)
                or self.meaning.clusters != config.meaning_clusters
            )
        ):
            raise VocabError(
                "the vocabulary's meaning codec does not match its meaning_dims/bins/clusters"
            )

    def number_range(self, class_type: str, input_name: str) -> tuple[float, float] | None:
        """The values the grammar lets number input `input_name` of `class_type` take, before
        the catalog's min..max: its corpus range stretched (`stretched`); for a class the
        corpus never used, the widest stretched range of that input name over the classes
        it did use (``steps`` means steps everywhere); None without a stretch (None or 0) or
        when the corpus never wrote that input."""
        stretch = self.config.number_stretch
        if not stretch:
            return None
        found = self._ranges.get((class_type, input_name))
        if found is not None:
            return stretched(*found, stretch)
        same = [stretched(*r, stretch) for (_, i), r in self._ranges.items() if i == input_name]
        if not same:
            return None
        return min(lo for lo, _ in same), max(hi for _, hi in same)

    @property
    def specials(self) -> tuple[str, ...]:
        """Special tokens, in id order: pad, bos, eos, sep, unk, the score bins, then the
        meaning tokens (if any)."""
        scores = tuple(score_token(k) for k in range(self.config.score_bins))
        meaning = self.meaning.tokens() if self.meaning is not None else ()
        return (PAD, BOS, EOS, SEP, UNK, *scores, *meaning)

    def tokens(self) -> tuple[str, ...]:
        """Every token surface in id order: specials, newline, line ids, classes, keys,
        values, prompt words."""
        return (*self.specials, *self._atoms)

    def workflow_tokens(self) -> tuple[str, ...]:
        """The pieces a workflow is written in: newline, line ids, classes, keys, values."""
        return self._atoms[: len(self._atoms) - len(self.prompt_words)]

    def to_json(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "classes": list(self.classes),
            "keys": list(self.keys),
            "values": list(self.values),
            "prompt_words": list(self.prompt_words),
            "number_ranges": [list(r) for r in self.number_ranges],
            **({"meaning": self.meaning.to_json()} if self.meaning is not None else {}),
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> WorkflowVocab:
        """Read `to_json`'s dict. A vocabulary saved before number ranges existed has none
        and no stretch: its policy writes what it always could."""
        try:
            config = dict(data["config"])
            if "number_ranges" not in data:
                config["number_stretch"] = None
            return WorkflowVocab(
                VocabConfig(**config),
                tuple(data["classes"]),
                tuple(data["keys"]),
                tuple(data["values"]),
                tuple(data["prompt_words"]),
                tuple(
                    (str(c), str(i), float(lo), float(hi))
                    for c, i, lo, hi in data.get("number_ranges", ())
                ),
                MeaningCodec.from_json(data["meaning"]) if "meaning" in data else None,
            )
        except (KeyError, TypeError, ValueError) as err:
            raise VocabError(f"not a workflow vocabulary: {err}") from None


def fit_vocab(
    workflow_texts: Iterable[str],
    prompts: Iterable[str],
    catalog: Catalog,
    config: VocabConfig | None = None,
    encoder: TextEncoder | None = None,
) -> WorkflowVocab:
    """Fit the inventory (module docstring) on text forms, train prompts and the catalog;
    with ``config.meaning_dims`` or ``meaning_clusters`` also the meaning codec, on the same
    prompts through `encoder` (None: MiniLM, `meaning.shared_encoder`).

    Raises VocabError when a corpus text has more lines than ``config.max_lines``.
    """
    config = VocabConfig() if config is None else config
    prompts = list(prompts)
    corpus = _corpus_roles(workflow_texts)
    classes, keys, values, most = corpus.classes, corpus.keys, corpus.values, corpus.most
    if most > config.max_lines:
        raise VocabError(
            f"a corpus workflow has {most} lines; raise max_lines ({config.max_lines})"
        )
    catalog_keys, catalog_values, slots = _catalog_words(
        catalog, {json.loads(c) if c.startswith('"') else c for c in classes}
    )
    links = [f"@{n}.{s}" for n in range(1, config.max_lines) for s in range(slots)]
    grid = [literal_text(v) for v in _grid_values()]
    all_values = values | catalog_values | set(links) | set(grid) | set(_special_values(catalog))
    counts = Counter(word for text in prompts for word in prompt_words(text))
    kept = [word for word, n in counts.items() if n >= config.prompt_min_count]
    words = sorted(kept, key=lambda word: (-counts[word], word))  # frequent words first
    return WorkflowVocab(
        config,
        tuple(sorted(classes)),
        tuple(sorted(keys | catalog_keys)),
        tuple(sorted(all_values - classes)),
        tuple(" " + word for word in words),
        tuple(
            sorted(
                (_surface_name(c), _surface_name(k), lo, hi)
                for (c, k), (lo, hi) in corpus.numbers.items()
            )
        ),
        _fit_meaning(prompts, config, encoder),
    )


def _fit_meaning(
    prompts: list[str], config: VocabConfig, encoder: TextEncoder | None
) -> MeaningCodec | None:
    if not config.meaning:
        return None
    try:
        return fit_meaning(
            prompts, config.meaning_dims, config.meaning_bins, encoder, config.meaning_clusters
        )
    except MeaningError as err:
        raise VocabError(str(err)) from None


def save_vocab(vocab: WorkflowVocab, path: Path) -> None:
    path.write_text(json.dumps(vocab.to_json(), indent=1, ensure_ascii=False), encoding="utf-8")


def load_vocab(path: Path) -> WorkflowVocab:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise VocabError(f"{path}: cannot read the workflow vocabulary ({err})") from None
    return WorkflowVocab.from_json(data)
