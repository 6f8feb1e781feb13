"""The compact text form of a workflow: what the LLM reads and writes.

A policy designs workflows as text, so a text must say exactly one workflow and a workflow
on the grids exactly one text (the model learns one spelling): ``to_text`` and ``from_text``
are inverse, ``to_api(from_text(*to_text(wf)))`` equals
``to_api(canonicalize(wf, request_mask(catalog)))`` as JSON (the canonical form, ordered
without looking at prompt texts and seeds, so that one design has one text whatever prompt
was written into it; for most workflows this is exactly ``canonicalize(wf)``).

Lines: the workflow is canonicalized (``canonical.canonicalize``: topological order, ids
"1".."n", inputs sorted by name, no ``_meta``) and node ``k`` is line ``k``,
``{id} {class_type} name=value ...`` (just ``{id} {class_type}`` without inputs), joined by
"\\n" without a trailing newline. A class type or input name that is not a bare word (below)
is JSON-quoted: ``"KSampler (Efficient)"``.

Values, schema-free and unambiguous:
- link ``@{node}.{slot}`` (``model=@1.0``): design.md sketches a bare ``1.0``, which collides
  with the float 1.0; the ``@`` is the one departure from it.
- int: decimal; float: Python ``repr`` (always has a ``.`` or an ``e``, so ``7`` and ``7.0``
  stay apart); ``true`` / ``false`` / ``null``; an object or list literal (`JsonLiteral`):
  ``json:`` then its JSON text as a JSON string, verbatim (``$`` is not special in it).
- string: bare if it matches ``[A-Za-z0-9_][A-Za-z0-9_.\\-+/:]*`` and cannot read as anything
  else (number-like, true/false/null, ``json:...``), else ``json.dumps(ensure_ascii=False)``.
  In a string value ``$`` starts a placeholder; a literal ``$`` is written ``$$``.

Placeholders keep per-request values out of the text (the policy never copies a prompt or a
seed); ``to_text`` returns the `Bindings` that give them their values:
- ``$SEED``: every int (not bool) literal of an input named ``seed`` or ``noise_seed``.
- ``$PROMPT`` / ``$NEGATIVE``: every string literal of an input the catalog declares a
  multiline STRING (``CLIPTextEncode.text``, ...) on a node of a known class. Role: follow
  links downstream, stopping at inputs named ``positive`` or ``negative`` (there the
  conditioning has its role; ControlNetApplyAdvanced & co. pass both on and would mix them);
  NEGATIVE if the inputs reached include ``negative`` and not ``positive``, else PROMPT (a
  prompt also zeroed out into ``negative``, as in Flux graphs, stays the PROMPT).
- Distinct values of a kind get ``$X``, ``$X_2``, ``$X_3``, ... in canonical order (nodes,
  then inputs by name); equal values share a placeholder.
- Negative embeddings belong to the workflow. A NEGATIVE value ending in a run of
  ``embedding:NAME`` (NAME = ``[A-Za-z0-9_.\\-]+``) tokens separated by commas/whitespace
  splits as ``head + sep + tail``: ``head`` non-empty, not ending in a separator; ``sep`` the
  separators before the run; ``tail`` the run with any trailing separators. It binds
  ``head`` and is written ``"$NEGATIVE" + sep + tail``: "blurry, ugly, embedding:EasyNegative"
  binds "blurry, ugly" as ``text="$NEGATIVE, embedding:EasyNegative"``. A value that is only
  such a run binds "" as ``"$NEGATIVE, " + value``; any other binds whole (``text=$NEGATIVE``).
- Filling: a bare placeholder gives its value (an int for ``$SEED...``). In a quoted template
  a placeholder (its name ends before the first character that is not a letter, digit or
  ``_``) becomes its value as text, and one whose value is empty also removes the separator
  run (commas, whitespace) after it. So the template above gives "blurry,
  embedding:EasyNegative" for the user negative "blurry", "embedding:EasyNegative" for "",
  and every split above round-trips exactly.
- An unbound ``$X_k`` falls back to ``$X``, so a policy that writes ``$PROMPT_2`` still gets
  the user's prompt from ``Bindings.request``.

Grids keep the number vocabulary finite: a float must be exactly the float nearest to a
multiple of 0.05 (``v == round(v*20) / 20``, so each grid point has one spelling) with
``|v| <= 10000``, an int ``|v| <= 65536`` (seed
inputs are exempt). ``to_text`` raises `TextFormError` naming node, class, input, value and
grid for a value off its grid; nothing is rounded here (`off_grid` lists such values).

Parsing is strict and schema-free (schemas are ``validate.py``'s job): ids 1..n in order, a
link points to an earlier line (so every text is acyclic), numbers on the grids and in the
forms above; duplicate inputs, unknown or unbound placeholders, a lone ``$``, malformed
tokens and unterminated quotes raise `TextFormError` with the line number. Blank lines and
extra spaces between tokens are ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass

from .canonical import Mask, canonicalize
from .graph import JsonLiteral, Link, Node, Value, Workflow
from .schema import Catalog, default_catalog

FLOAT_STEP = 0.05
_STEPS_PER_UNIT = 20  # 1 / FLOAT_STEP, exact
FLOAT_LIMIT = 10_000
INT_LIMIT = 65_536
SEED_INPUTS = frozenset({"seed", "noise_seed"})

_BARE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-+/:]*")
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:e[+-][0-9]+)?|e[+-][0-9]+)")
_NUMBER_LIKE = re.compile(r"[+-]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9]+)?")
_LINK = re.compile(r"@([1-9][0-9]*)\.(0|[1-9][0-9]*)")
_PLACEHOLDER = re.compile(r"\$(PROMPT|NEGATIVE|SEED)(?:_([2-9]|[1-9][0-9]+))?")
_NAME_CHARS = re.compile(r"[A-Za-z0-9_]+")
_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LEADING_SEPARATORS = re.compile(r"^[\s,]+")
_SPACES = re.compile(r"[ \t]*")
_SEPARATORS = re.compile(r"[ \t]+")
#: `_Line.until`'s scanners, one per set of stop characters the parser uses.
_UNTIL = {stops: re.compile(f"[^{stops}]*") for stops in (" \t", " \t=")}
_EMB = r"embedding:[A-Za-z0-9_.\-]+"
_EMB_SPLIT = re.compile(
    rf"(?:(?P<head>.*?[^\s,])(?P<sep>[\s,]+))??(?P<tail>{_EMB}(?:[\s,]+{_EMB})*[\s,]*)", re.DOTALL
)
_KEYWORDS = {"true": True, "false": False, "null": None}


class TextFormError(ValueError):
    """A text that is not a workflow, or a workflow that has no text. One line, no traceback."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


@dataclass(frozen=True)
class Bindings:
    """Placeholder -> value (``("$PROMPT", "a cat")``, ``("$SEED", 42)``), hashable.

    Names are ``$PROMPT``, ``$NEGATIVE``, ``$SEED``, optionally suffixed ``_2``, ``_3``, ...;
    seed values are ints, prompt and negative values strings.
    """

    pairs: tuple[tuple[str, str | int], ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for name, value in self.pairs:
            match = _PLACEHOLDER.fullmatch(name)
            if match is None:
                raise TextFormError(f"{name!r} is not a placeholder name ($PROMPT, $SEED_2, ...)")
            if name in seen:
                raise TextFormError(f"placeholder {name} is bound twice")
            seen.add(name)
            wants_int = match.group(1) == "SEED"
            if not (type(value) is int if wants_int else isinstance(value, str)):
                kind = "an int" if wants_int else "a string"
                raise TextFormError(f"placeholder {name} must be bound to {kind}, not {value!r}")

    @staticmethod
    def request(prompt: str, negative: str = "", seed: int = 0) -> Bindings:
        """The bindings of a new request: the user's prompt, negative prompt and seed."""
        return Bindings((("$PROMPT", prompt), ("$NEGATIVE", negative), ("$SEED", seed)))

    def as_dict(self) -> dict[str, str | int]:
        return dict(self.pairs)

    def lookup(self, placeholder: str) -> str | int:
        """The value of ``$X_k``, falling back to ``$X``; KeyError if neither is bound."""
        values = self.as_dict()
        if placeholder in values:
            return values[placeholder]
        match = _PLACEHOLDER.fullmatch(placeholder)
        if match is not None and f"${match.group(1)}" in values:
            return values[f"${match.group(1)}"]
        raise KeyError(placeholder)


def _grid_problem(name: str, value: Value) -> str | None:
    """Which grid `value` misses (as words), or None when it is on its grid or not gridded."""
    if type(value) is int:
        if name in SEED_INPUTS or abs(value) <= INT_LIMIT:
            return None
        return f"the int grid (|v| <= {INT_LIMIT})"
    if isinstance(value, float):
        # Exactly the float nearest to k/20, so each grid point has one spelling (repr) and
        # 0.35000000000000003 (float noise from arithmetic) is off the grid, not a new token.
        if (
            math.isfinite(value)
            and abs(value) <= FLOAT_LIMIT
            and value == round(value * _STEPS_PER_UNIT) / _STEPS_PER_UNIT
        ):
            return None
        return f"the float grid (multiples of {FLOAT_STEP}, |v| <= {FLOAT_LIMIT})"
    return None


def off_grid(workflow: Workflow) -> list[str]:
    """One message per literal off its grid (node ids as in `workflow`); [] when all are on."""
    problems = []
    for node in workflow:
        for name, value in node.inputs:
            grid = _grid_problem(name, value)
            if grid is not None:
                problems.append(
                    f"node {node.id} ({node.class_type}) input {name!r} = {value!r} is not on "
                    f"{grid}; round it first"
                )
    return problems


def number_literal(token: str) -> float | None:
    """The number an unquoted value of the text form spells (``20``, ``-3``, ``7.0``), None
    for any other value: the same spellings `from_text` reads as numbers."""
    if _INT.fullmatch(token) or _FLOAT.fullmatch(token):
        return float(token)
    return None


def _is_bare(text: str) -> bool:
    return (
        _BARE.fullmatch(text) is not None
        and _NUMBER_LIKE.fullmatch(text) is None
        and text not in _KEYWORDS
        and not text.startswith("json:")
    )


def _word(text: str) -> str:
    """A class type or input name: bare, or JSON-quoted (names are not templates)."""
    return text if _is_bare(text) else json.dumps(text, ensure_ascii=False)


def _literal(value: Value) -> str:
    if isinstance(value, Link):
        return f"@{value.node}.{value.slot}"
    if isinstance(value, JsonLiteral):
        return "json:" + json.dumps(value.text, ensure_ascii=False)
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return value if _is_bare(value) else json.dumps(value.replace("$", "$$"), ensure_ascii=False)


def _negative_texts(workflow: Workflow) -> set[str]:
    """Ids of nodes whose conditioning reaches ``negative`` and not ``positive`` (see above)."""
    consumers: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for node in workflow:
        for name, link in node.links():
            consumers[link.node].append((node.id, name))
    reached: dict[str, frozenset[str]] = {}
    for node in reversed(workflow.nodes):  # canonical order: consumers come later
        hits: set[str] = set()
        for consumer, name in consumers[node.id]:
            hits |= {name} if name in ("positive", "negative") else reached[consumer]
        reached[node.id] = frozenset(hits)
    return {node_id for node_id, hits in reached.items() if hits == {"negative"}}


class _Allocator:
    """Hands out ``$X``, ``$X_2``, ... per kind, one per distinct value, in call order."""

    def __init__(self) -> None:
        self._names: dict[tuple[str, str | int], str] = {}
        self._counts: dict[str, int] = defaultdict(int)

    def name(self, kind: str, value: str | int) -> str:
        key = (kind, value)
        if key not in self._names:
            self._counts[kind] += 1
            count = self._counts[kind]
            self._names[key] = f"${kind}" if count == 1 else f"${kind}_{count}"
        return self._names[key]

    def bindings(self) -> Bindings:
        return Bindings(tuple((name, value) for (_, value), name in self._names.items()))


def _is_text_input(catalog: Catalog, class_type: str, name: str) -> bool:
    schema = catalog.get(class_type)
    spec = schema.input(name) if schema is not None else None
    return spec is not None and spec.kind == "STRING" and spec.multiline


def _text_value(value: str, negative: bool, allocator: _Allocator) -> str:
    split = _EMB_SPLIT.fullmatch(value) if negative else None
    if split is not None:  # head "" (only embeddings) is written with the separator ", "
        name = allocator.name("NEGATIVE", split["head"] or "")
        return json.dumps(name + (split["sep"] or ", ") + split["tail"], ensure_ascii=False)
    return allocator.name("NEGATIVE" if negative else "PROMPT", value)


def request_mask(catalog: Catalog) -> Mask:
    """The canonical-order mask that hides per-request values (seeds, prompt texts).

    Without it, the node order (and so the text) of one design would depend on the prompt
    written into it: two encoders are ordered by their texts when nothing else separates
    them. Negative-embedding tails stay visible: they belong to the design.
    """

    def mask(node: Node, name: str, value: Value) -> Value:
        if name in SEED_INPUTS and type(value) is int:
            return "$SEED"
        if isinstance(value, str) and _is_text_input(catalog, node.class_type, name):
            split = _EMB_SPLIT.fullmatch(value)
            return "$TEXT" + (split["tail"] if split is not None else "")
        return value

    return mask


def design_hash(workflow: Workflow, catalog: Catalog | None = None) -> str:
    """Identity of a design: the hash of its text form, blind to prompt texts and seeds.

    `canonical.workflow_hash` identifies a workflow file (prompt included); this identifies
    what the policy designs, so "is this design in the library?" compares these.
    """
    return text_hash(to_text(workflow, catalog)[0])


def text_hash(text: str) -> str:
    """`design_hash` of the workflow whose text form is `text` (for a text already written
    by `to_text`, e.g. a library workflow's stored text, without parsing it again)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def to_text(workflow: Workflow, catalog: Catalog | None = None) -> tuple[str, Bindings]:
    """The text form of the canonical workflow and the bindings of its placeholders.

    `catalog` (default: the shipped one) tells which inputs are prompt texts. Raises
    TextFormError for a literal off its grid or an empty workflow, GraphError for a graph
    that is not a DAG.
    """
    if not len(workflow):
        raise TextFormError("a workflow without nodes has no text form")
    problems = off_grid(workflow)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise TextFormError(problems[0] + more)
    catalog = default_catalog() if catalog is None else catalog
    canonical = canonicalize(workflow, request_mask(catalog))
    negatives = _negative_texts(canonical)
    allocator = _Allocator()
    lines = []
    for node in canonical:
        parts = [node.id, _word(node.class_type)]
        for name, value in node.inputs:
            if name in SEED_INPUTS and type(value) is int:
                text = allocator.name("SEED", value)
            elif isinstance(value, str) and _is_text_input(catalog, node.class_type, name):
                text = _text_value(value, node.id in negatives, allocator)
            else:
                text = _literal(value)
            parts.append(f"{_word(name)}={text}")
        lines.append(" ".join(parts))
    return "\n".join(lines), allocator.bindings()


class _Line:
    """A cursor over one line of text, raising TextFormError with the line number."""

    def __init__(self, text: str, number: int, bindings: Bindings) -> None:
        self.text, self.lineno, self.bindings, self.pos = text, number, bindings, 0

    def error(self, message: str) -> TextFormError:
        return TextFormError(message, self.lineno)

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def spaces(self, what: str) -> None:
        """Skip the spaces after a token; at least one is needed unless the line ends."""
        start = self.pos
        self.pos = _SPACES.match(self.text, start).end()  # type: ignore[union-attr]
        if self.pos == start and not self.at_end():
            raise self.error(f"expected a space after {what}, found {self.text[self.pos :]!r}")

    def quoted(self) -> str:
        match = _QUOTED.match(self.text, self.pos)
        if match is None:
            raise self.error(f"unterminated quoted string {self.text[self.pos :]!r}")
        self.pos = match.end()
        try:
            decoded: str = json.loads(match.group())
        except json.JSONDecodeError as err:
            raise self.error(f"malformed quoted string {match.group()!r}: {err.msg}") from None
        return decoded

    def until(self, stops: str) -> str:
        """The text up to (not including) the next character of `stops`, or the line's end.

        A regex scan (`_UNTIL`): the character loop it replaced was a fifth of the reward
        ensemble's time on never-seen designs."""
        start = self.pos
        self.pos = _UNTIL[stops].match(self.text, start).end()  # type: ignore[union-attr]
        return self.text[start : self.pos]

    def word(self, what: str, stops: str = " \t") -> str:
        if self.text.startswith('"', self.pos):
            return self.quoted()
        token = self.until(stops)
        if not _is_bare(token):
            found = repr(token) if token else "nothing"
            raise self.error(f"expected {what} (a bare word or a quoted string), found {found}")
        return token

    def placeholder(self, name: str) -> str | int:
        if _PLACEHOLDER.fullmatch(name) is None:
            raise self.error(f"unknown placeholder {name} (use $PROMPT, $NEGATIVE, $SEED, $X_2)")
        try:
            return self.bindings.lookup(name)
        except KeyError:
            raise self.error(f"placeholder {name} is not bound") from None

    def fill(self, template: str) -> str:
        """A quoted string: ``$$`` -> ``$``, placeholders -> their values (see the docs)."""
        out: list[str] = []
        pos, drop = 0, False
        while True:
            dollar = template.find("$", pos)
            chunk = template[pos:] if dollar < 0 else template[pos:dollar]
            if drop:
                chunk = _LEADING_SEPARATORS.sub("", chunk, count=1)
            out.append(chunk)
            if dollar < 0:
                return "".join(out)
            if template.startswith("$$", dollar):
                out.append("$")
                pos, drop = dollar + 2, False
                continue
            name = _NAME_CHARS.match(template, dollar + 1)
            if name is None:
                raise self.error(f"lone '$' in {template!r} (write '$$' for a literal '$')")
            value = str(self.placeholder("$" + name.group()))
            out.append(value)
            pos, drop = name.end(), value == ""

    def grid_number(self, token: str, name: str, value: int | float) -> int | float:
        grid = _grid_problem(name, value)
        if grid is not None:
            raise self.error(f"input {name!r} = {token} is not on {grid}")
        return value

    def value(self, name: str, node_number: int) -> Value:
        if self.text.startswith('"', self.pos):
            return self.fill(self.quoted())
        if self.text.startswith('json:"', self.pos):
            self.pos += len("json:")
            text = self.quoted()
            try:
                json.loads(text)
            except (json.JSONDecodeError, RecursionError):
                raise self.error(f"input {name!r}: json: text is not valid JSON") from None
            return JsonLiteral(text)
        return self.token_value(self.until(" \t"), name, node_number)

    def token_value(self, token: str, name: str, node_number: int) -> Value:
        """The value an unquoted token says (a link, placeholder, keyword, number, word)."""
        if not token:
            raise self.error(f"input {name!r} has no value")
        if token.startswith("@"):
            link = _LINK.fullmatch(token)
            if link is None:
                raise self.error(f"malformed link {token!r} (write @NODE.SLOT, e.g. @1.0)")
            if int(link.group(1)) >= node_number:
                raise self.error(
                    f"input {name!r} links to node {link.group(1)}, which is not an earlier line"
                )
            return Link(link.group(1), int(link.group(2)))
        if token.startswith("$"):
            return self.placeholder(token)
        if token in _KEYWORDS:
            return _KEYWORDS[token]
        if _INT.fullmatch(token):
            return self.grid_number(token, name, int(token))
        if _FLOAT.fullmatch(token):
            return self.grid_number(token, name, float(token))
        if _NUMBER_LIKE.fullmatch(token):
            raise self.error(f"malformed number {token!r} (write e.g. 20, -3, 7.0, 0.55)")
        if token.startswith("json:"):
            raise self.error(f"input {name!r}: json: must be followed by a quoted JSON text")
        if not _BARE.fullmatch(token):
            raise self.error(f"malformed value {token!r} (quote strings with such characters)")
        return token


def _parse_plain_line(line: _Line, expected_id: int) -> Node | None:
    """The fast path of `_parse_line` for a line without quotes whose tokens are all
    ``name=value`` pairs of distinct bare names; None for anything else, which the cursor
    parser then reads (and reports, with its exact message). Most lines of a workflow
    qualify; the reward ensemble parses every never-seen design, so this is its hot path."""
    if '"' in line.text:
        return None
    tokens = _SEPARATORS.split(line.text)
    if len(tokens) < 2 or tokens[0] != str(expected_id) or not _is_bare(tokens[1]):
        return None
    inputs: dict[str, Value] = {}
    for token in tokens[2:]:
        name, equals, value = token.partition("=")
        if not equals or name in inputs or not _is_bare(name):
            return None
        inputs[name] = line.token_value(value, name, expected_id)
    return Node(id=str(expected_id), class_type=tokens[1], inputs=tuple(inputs.items()))


def _parse_line(line: _Line, expected_id: int) -> Node:
    token = line.until(" \t")
    if token != str(expected_id):
        found = repr(token) if token else "nothing"
        raise line.error(f"expected node id {expected_id}, found {found}")
    line.spaces("the node id")
    if line.at_end():
        raise line.error(f"node {expected_id} has no class type")
    class_type = line.word("a class type")
    if not class_type:
        raise line.error(f"node {expected_id} has an empty class type")
    line.spaces("the class type")
    inputs: dict[str, Value] = {}
    while not line.at_end():
        name = line.word("an input name", stops=" \t=")
        if not line.text.startswith("=", line.pos):
            raise line.error(f"expected '=' after input name {name!r}")
        line.pos += 1
        if name in inputs:
            raise line.error(f"input {name!r} is given twice")
        inputs[name] = line.value(name, expected_id)
        line.spaces(f"the value of {name!r}")
    return Node(id=str(expected_id), class_type=class_type, inputs=tuple(inputs.items()))


def from_text(text: str, bindings: Bindings, catalog: Catalog | None = None) -> Workflow:
    """The workflow a text says, placeholders filled from `bindings`.

    Schema-free: `catalog` is accepted for symmetry with `to_text` and not read. Raises
    TextFormError (with the line number) for any text outside the grammar above.
    """
    del catalog
    nodes: list[Node] = []
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip(" \t\r")
        if stripped:
            line = _Line(stripped, number, bindings)
            node = _parse_plain_line(line, len(nodes) + 1)
            nodes.append(node if node is not None else _parse_line(line, len(nodes) + 1))
    if not nodes:
        raise TextFormError("empty text: no node lines", 1)
    return Workflow(tuple(nodes))
