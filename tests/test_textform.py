"""The text form: exact round trips, placeholders, embeddings, grids and strict parsing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import relabel

from flowforge.workflow.api import from_api, load_api, to_api
from flowforge.workflow.canonical import canonicalize
from flowforge.workflow.graph import JsonLiteral, Link, Node, Value, Workflow
from flowforge.workflow.library import load_seed_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.textform import (
    Bindings,
    TextFormError,
    design_hash,
    from_text,
    off_grid,
    request_mask,
    to_text,
)


def api_text(workflow: Workflow) -> str:
    return json.dumps(to_api(workflow), ensure_ascii=False)


def assert_round_trip(workflow: Workflow) -> tuple[str, Bindings]:
    text, bindings = to_text(workflow)
    back = from_text(text, bindings)
    assert api_text(back) == api_text(canonicalize(workflow, request_mask(default_catalog())))
    assert to_text(back) == (text, bindings)
    return text, bindings


def grid_misses(workflow: Workflow) -> list[tuple[str, str, str, object]]:
    """The grid rule, restated independently of the module under test."""
    misses: list[tuple[str, str, str, object]] = []
    for node in workflow:
        for name, v in node.inputs:
            if isinstance(v, bool):
                continue
            if isinstance(v, int) and name not in ("seed", "noise_seed") and abs(v) > 65536:
                misses.append((node.id, node.class_type, name, v))
            if isinstance(v, float) and not (abs(v) <= 10000 and round(v * 20) / 20 == v):
                misses.append((node.id, node.class_type, name, v))
    return misses


def test_real_workflows_round_trip_or_name_their_off_grid_value(
    comfymind_files: list[Path],
) -> None:
    off = set()
    for path in comfymind_files:
        workflow = load_api(path)
        misses = grid_misses(workflow)
        if not misses:
            assert_round_trip(workflow)
            continue
        off.add(path.name[:3])
        node_id, class_type, name, value = misses[0]
        with pytest.raises(TextFormError) as err:
            to_text(workflow)
        assert str(err.value).startswith(
            f"node {node_id} ({class_type}) input {name!r} = {value!r}"
        )
        assert len(off_grid(workflow)) == len(misses)
    # 8 files hold genuinely off-grid values (cfg 2.52, 0.182, an INT constant 57987127...);
    # 12 more hold float noise such as 0.7000000000000001, which is not the grid value 0.7.
    assert off == {"003", "005", "012", "019", "020", "022", "029", "046"} | {
        "007",
        "028",
        "030",
        "035",
        "038",
        "042",
        "044",
        "045",
        "047",
        "052",
        "053",
        "056",
    }


def test_real_workflow_filled_for_a_new_request(comfymind_files: list[Path]) -> None:
    text, bindings = to_text(load_api(comfymind_files[0]))  # 001: SD1.5 txt2img
    assert bindings.as_dict() == {
        "$PROMPT": "%%PROMPT1%%",
        "$NEGATIVE": "blurry, illustration",
        "$SEED": 618152324787924,
    }
    filled = from_text(text, Bindings.request("a red fox", "ugly", seed=7))
    assert [n.get("text") for n in filled.by_class("CLIPTextEncode")] == ["a red fox", "ugly"]
    assert filled.by_class("KSampler")[0].get("seed") == 7


SD15: dict[str, Any] = {
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": 156680208700286, "steps": 20, "cfg": 8.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0],
            "negative": ["7", 0], "latent_image": ["5", 0],
        },
    },
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
    "5": {"class_type": "EmptyLatentImage",
          "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat, 4k", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, ugly", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "Comfy UI", "images": ["8", 0]}},
}  # fmt: skip


def test_sd15_txt2img_text_line_by_line() -> None:
    text, bindings = assert_round_trip(from_api(SD15))
    assert text.split("\n") == [
        "1 CheckpointLoaderSimple ckpt_name=v1-5.safetensors",
        "2 CLIPTextEncode clip=@1.1 text=$PROMPT",
        "3 CLIPTextEncode clip=@1.1 text=$NEGATIVE",
        "4 EmptyLatentImage batch_size=1 height=512 width=512",
        "5 KSampler cfg=8.0 denoise=1 latent_image=@4.0 model=@1.0 negative=@3.0 positive=@2.0"
        " sampler_name=euler scheduler=normal seed=$SEED steps=20",
        "6 VAEDecode samples=@5.0 vae=@1.2",
        '7 SaveImage filename_prefix="Comfy UI" images=@6.0',
    ]
    assert bindings == Bindings(
        (("$PROMPT", "a cat, 4k"), ("$NEGATIVE", "blurry, ugly"), ("$SEED", 156680208700286))
    )
    assert not text.endswith("\n") and hash(bindings) == hash(Bindings(bindings.pairs))
    assert from_text(text + "\n", bindings) == from_text(text, bindings)


def with_negative(text: str) -> Workflow:
    data = json.loads(json.dumps(SD15))
    data["7"]["inputs"]["text"] = text
    return from_api(data)


def negative_line(text: str) -> tuple[str, str]:
    """(id, rest of the line) of the node that feeds the sampler's negative input."""
    lines = text.split("\n")
    sampler = next(line for line in lines if " KSampler " in line)
    node_id = sampler.split("negative=@")[1].split(".")[0]
    return node_id, lines[int(node_id) - 1].split(" ", 1)[1]


def test_negative_embeddings_stay_in_the_workflow() -> None:
    text, bindings = assert_round_trip(with_negative("blurry, ugly, embedding:EasyNegative"))
    node_id, line = negative_line(text)
    assert line == 'CLIPTextEncode clip=@1.1 text="$NEGATIVE, embedding:EasyNegative"'
    assert bindings.lookup("$NEGATIVE") == "blurry, ugly"
    for user, expected in [
        ("blurry", "blurry, embedding:EasyNegative"),
        ("", "embedding:EasyNegative"),
    ]:
        filled = from_text(text, Bindings.request("a dog", user))
        assert filled.node(node_id).get("text") == expected


def test_only_embeddings_bind_empty_and_runs_keep_their_separators() -> None:
    text, bindings = assert_round_trip(with_negative("embedding:A embedding:b.pt"))
    assert (
        negative_line(text)[1]
        == 'CLIPTextEncode clip=@1.1 text="$NEGATIVE, embedding:A embedding:b.pt"'
    )
    assert bindings.lookup("$NEGATIVE") == ""
    text, bindings = assert_round_trip(with_negative("low\n,embedding:A,embedding:B, "))
    assert (
        negative_line(text)[1]
        == r'CLIPTextEncode clip=@1.1 text="$NEGATIVE\n,embedding:A,embedding:B, "'
    )
    assert bindings.lookup("$NEGATIVE") == "low"
    for plain in [" , embedding:A", "xembedding:A", "embedding:A (x)", "embedding:"]:
        text, bindings = assert_round_trip(with_negative(plain))
        assert negative_line(text)[1] == "CLIPTextEncode clip=@1.1 text=$NEGATIVE"
        assert bindings.lookup("$NEGATIVE") == plain


def test_literal_dollar_is_doubled_and_prompts_are_bound_raw() -> None:
    data = json.loads(json.dumps(SD15))
    data["9"]["inputs"]["filename_prefix"] = "cost$5 $PROMPT"
    data["6"]["inputs"]["text"] = "price: $$5"
    text, bindings = assert_round_trip(from_api(data))
    assert text.split("\n")[6] == '7 SaveImage filename_prefix="cost$$5 $$PROMPT" images=@6.0'
    assert bindings.lookup("$PROMPT") == "price: $$5"


def node(node_id: str, class_type: str, **inputs: Value) -> Node:
    return Node(node_id, class_type, tuple(inputs.items()))


def test_roles_follow_conditioning_to_its_first_positive_or_negative() -> None:
    controlnet = Workflow.of([
        node("p", "CLIPTextEncode", text="cat"),
        node("n", "CLIPTextEncode", text="bad"),
        node("c", "ControlNetApplyAdvanced", positive=Link("p", 0), negative=Link("n", 0)),
        node("k", "KSampler", positive=Link("c", 0), negative=Link("c", 1), seed=5),
    ])  # fmt: skip
    assert to_text(controlnet)[1].as_dict() == {"$NEGATIVE": "bad", "$PROMPT": "cat", "$SEED": 5}
    flux = Workflow.of([
        node("p", "CLIPTextEncode", text="cat"),
        node("z", "ConditioningZeroOut", conditioning=Link("p", 0)),
        node("k", "KSampler", positive=Link("p", 0), negative=Link("z", 0)),
    ])  # fmt: skip
    assert to_text(flux) == ("1 CLIPTextEncode text=$PROMPT\n2 ConditioningZeroOut "
                             "conditioning=@1.0\n3 KSampler negative=@2.0 positive=@1.0",
                             Bindings((("$PROMPT", "cat"),)))  # fmt: skip


def test_placeholders_are_numbered_per_distinct_value_and_fall_back() -> None:
    workflow = Workflow.of([
        node("a", "KSampler", seed=9, noise_seed=9),
        node("b", "KSampler", m=Link("a", 0), seed=4, noise_seed=True),
        node("c", "Unknown", m=Link("b", 0), seed=3, text="kept literally"),
    ])  # fmt: skip
    text, bindings = assert_round_trip(workflow)
    assert bindings.as_dict() == {"$SEED": 9, "$SEED_2": 4, "$SEED_3": 3}
    assert "noise_seed=true" in text and 'text="kept literally"' in text
    request = Bindings.request("cat", "bad", 11)
    assert [request.lookup(p) for p in ("$PROMPT_2", "$NEGATIVE_7", "$SEED_3")] == [
        "cat",
        "bad",
        11,
    ]
    filled = from_text('1 X a=$SEED_2 b="s$SEED t$PROMPT_3" c=$NEGATIVE', request)
    assert filled.node("1").inputs == (("a", 11), ("b", "s11 tcat"), ("c", "bad"))
    with pytest.raises(KeyError):
        Bindings().lookup("$PROMPT")


@pytest.mark.parametrize(
    "pairs",
    [(("$SEED", "7"),), (("PROMPT", "x"),), (("$PROMPT", True),), (("$SEED", 1), ("$SEED", 2))],
)
def test_bindings_reject_bad_pairs(pairs: Any) -> None:
    with pytest.raises(TextFormError):
        Bindings(pairs)


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("euler", "euler"), ("v1-5/x+y:z.bin", "v1-5/x+y:z.bin"), ("1girl", "1girl"),
        ("true", '"true"'), ("null", '"null"'), ("20", '"20"'), ("7.0", '"7.0"'), ("007", '"007"'),
        ("1e5", '"1e5"'), ("json:x", '"json:x"'), ("a b", '"a b"'), ("", '""'), ("ü", '"ü"'),
        ('"q"', r'"\"q\""'), ("-x", '"-x"'), (7, "7"), (-0.0, "-0.0"), (0.15, "0.15"),
        (1e4, "10000.0"), (False, "false"), (None, "null"),
        (Link("a", 3), "@1.3"), (JsonLiteral('{"a": [1, "$"]}'), r'json:"{\"a\": [1, \"$\"]}"'),
    ],
)  # fmt: skip
def test_literal_spelling(value: Value, written: str) -> None:
    workflow = Workflow.of([node("a", "N"), node("b", "N", l=Link("a", 0), v=value)])
    text, _ = assert_round_trip(workflow)
    assert text.split("\n")[1] == f"2 N l=@1.0 v={written}"


def test_names_and_classes_are_quoted_when_not_bare() -> None:
    workflow = Workflow.of([node("a", "KSampler (Efficient)", **{"➕ Add Lora": 1, "true": 2})])
    assert assert_round_trip(workflow)[0] == '1 "KSampler (Efficient)" "true"=2 "➕ Add Lora"=1'


def test_empty_workflow_has_no_text() -> None:
    with pytest.raises(TextFormError, match="without nodes"):
        to_text(Workflow(()))


def test_off_grid_values_are_named_never_rounded() -> None:
    workflow = Workflow.of([node("3", "KSampler", cfg=7.13, steps=70000, seed=10**15, x=2.5)])
    with pytest.raises(TextFormError) as err:
        to_text(workflow)
    assert str(err.value) == (
        "node 3 (KSampler) input 'cfg' = 7.13 is not on the float grid (multiples of 0.05, "
        "|v| <= 10000); round it first (and 1 more)"
    )
    assert off_grid(workflow)[1] == (
        "node 3 (KSampler) input 'steps' = 70000 is not on the int grid (|v| <= 65536); "
        "round it first"
    )
    assert off_grid(Workflow.of([node("1", "N", a=10000.0, b=-65536, c=float("nan"))])) == [
        "node 1 (N) input 'c' = nan is not on the float grid (multiples of 0.05, |v| <= 10000); "
        "round it first"
    ]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("", 1, "empty text"),
        ("\n  \n", 1, "empty text"),
        ("1 A\n3 B", 2, "expected node id 2, found '3'"),
        ("2 A", 1, "expected node id 1"),
        ("1", 1, "no class type"),
        ('1 ""', 1, "empty class type"),
        ("1 A x=@1.0", 1, "links to node 1, which is not an earlier line"),
        ("1 A\n\n2 B x=@3.0", 3, "links to node 3"),
        ("1 A\n2 B x=1.0", 2, None),
        ("1 A x=@1", 1, "malformed link"),
        ("1 A x=1 x=2", 1, "input 'x' is given twice"),
        ("1 A x=$FOO", 1, "unknown placeholder $FOO"),
        ("1 A x=$PROMPT_1", 1, "unknown placeholder"),
        ('1 A x="a$b"', 1, "unknown placeholder $b"),
        ('1 A x="a$ b"', 1, "lone '$'"),
        ('1 A x="abc', 1, "unterminated quoted string"),
        ('1 A x="\\q"', 1, "malformed quoted string"),
        ("1 A x=7.13", 1, "not on the float grid"),
        ("1 A x=70000", 1, "not on the int grid"),
        ("1 A x=007", 1, "malformed number"),
        ("1 A x=1.", 1, "malformed number"),
        ("1 A x=", 1, "has no value"),
        ("1 A x", 1, "expected '='"),
        ("1 A =1", 1, "expected an input name"),
        ("1 A x=json:{}", 1, "json: must be followed"),
        ('1 A x=json:"{"', 1, "not valid JSON"),
        ('1 A x=a"b', 1, "malformed value"),
        ('1 A x="a"y=1', 1, "expected a space after the value of 'x'"),
        ("1 A(x)", 1, "expected a class type"),
        ("1 A x=$NEGATIVE", 1, "placeholder $NEGATIVE is not bound"),
    ],
)
def test_malformed_text_names_the_line(text: str, line: int, fragment: str | None) -> None:
    if fragment is None:  # control: the same shape parses
        assert from_text(text, Bindings()).node("2").get("x") == 1.0
        return
    with pytest.raises(TextFormError) as err:
        from_text(text, Bindings((("$PROMPT", "p"),)))
    assert err.value.line == line
    assert str(err.value).startswith(f"line {line}: ") and fragment in str(err.value)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- property tests

SPECIAL = ["", "true", "null", "1.5", "007", "json:x", "$PROMPT", "a$b", "$$", '"', "\\",
           "@1.0", "embedding:X", "bad, embedding:X", " , embedding:X ,", "x\u2028y\r\n",
           "日本 語"]  # fmt: skip
strings = st.one_of(st.text(max_size=16), st.sampled_from(SPECIAL))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
grid_floats = st.one_of(
    st.integers(-200_000, 200_000).map(lambda k: k / 20),
    st.sampled_from([-0.0, 10000.0, -10000.0]),
)
literals: st.SearchStrategy[Value] = st.one_of(
    st.integers(-65536, 65536), grid_floats, st.booleans(), st.none(), strings,
    json_values.filter(lambda v: isinstance(v, list | dict)).map(JsonLiteral.of),
)  # fmt: skip
input_names = st.one_of(
    st.sampled_from(["text", "text_g", "seed", "noise_seed", "positive", "negative", "cfg"]),
    st.text(max_size=8),
)
class_names = st.one_of(
    st.sampled_from(["CLIPTextEncode", "CLIPTextEncodeSDXL", "KSampler", "SaveImage"]),
    st.text(min_size=1, max_size=12),
)


@st.composite
def grid_workflows(draw: st.DrawFn) -> Workflow:
    """A random DAG over on-grid literals: node k links only to earlier nodes."""
    count = draw(st.integers(1, 7))
    nodes = []
    for k in range(count):
        inputs: list[tuple[str, Value]] = []
        for name in draw(st.lists(input_names, max_size=5, unique=True)):
            if k and draw(st.integers(0, 2)) == 0:
                inputs.append(
                    (name, Link(str(draw(st.integers(0, k - 1))), draw(st.integers(0, 3))))
                )
            elif name in ("seed", "noise_seed") and draw(st.booleans()):
                inputs.append((name, draw(st.integers(-(2**63), 2**64))))
            else:
                inputs.append((name, draw(literals)))
        nodes.append(Node(str(k), draw(class_names), tuple(inputs)))
    return Workflow(tuple(nodes))


@settings(max_examples=300, deadline=None)
@given(grid_workflows())
def test_random_workflows_round_trip_exactly(workflow: Workflow) -> None:
    assert grid_misses(workflow) == []
    assert_round_trip(workflow)


@settings(max_examples=150, deadline=None)
@given(grid_workflows(), st.randoms(use_true_random=False))
def test_text_is_invariant_under_renaming_and_shuffling(
    workflow: Workflow, rng: random.Random
) -> None:
    assert to_text(relabel(workflow, rng)) == to_text(workflow)


fragments = st.sampled_from(
    ["embedding:A", "embedding:b.pt", ",", " ", ", ", "\n", "bad", "$", "x"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(fragments, max_size=8).map("".join), strings)
def test_negative_templates_round_trip_and_fill(negative: str, user: str) -> None:
    text, bindings = assert_round_trip(with_negative(negative))
    filled = from_text(text, Bindings.request("p", user)).node(negative_line(text)[0]).get("text")
    assert isinstance(filled, str)
    if bindings.lookup("$NEGATIVE") == negative:
        assert filled == user
    else:  # an embeddings run was kept: the user's text comes first, then the run
        tail = negative[len(str(bindings.lookup("$NEGATIVE"))) :]
        assert filled.startswith(user) and filled.endswith(tail.lstrip(" ,\n"))


def test_one_design_has_one_text_whatever_prompt_is_written_into_it() -> None:
    """Two encoders tie on structure; their order must not follow the prompt texts."""
    seed = load_seed_library()["sd15_base"]
    encoders = [n for n in seed if n.class_type == "CLIPTextEncode"]
    texts = set()
    hashes = set()
    for positive, negative, value in [("a cat", "blurry", 1), ("zebra", "aaa", 99), ("", "", 0)]:
        filled = seed
        for node in encoders:
            role_negative = any(
                name == "negative"
                for consumer in seed
                for name, link in consumer.links()
                if link.node == node.id
            )
            filled = filled.replace_node(
                node.with_inputs(text=negative if role_negative else positive)
            )
        sampler = next(n for n in filled if n.class_type == "KSampler")
        filled = filled.replace_node(sampler.with_inputs(seed=value))
        text, _ = to_text(filled)
        texts.add(text)
        hashes.add(design_hash(filled))
    assert len(texts) == 1 and len(hashes) == 1


_NAMES = ["x", "steps", "cfg", "", "1a", "true", "a.b", "json:x", "-", "x=y"]
_VALUES = ["1", "20", "-3", "7.5", "7.55", "1e5", "1.", "0.05", "@1.0", "@2.1", "@0.1", "@1",
           "$PROMPT", "$SEED", "$X", "$NEGATIVE_2", "true", "null", "json:", "json:{}", "",
           "euler", "a=b", "+", "@", ".", "x/y:z", '"q"', '"a b"', '"$PROMPT, $X"']  # fmt: skip
_pairs = st.tuples(
    st.sampled_from(_NAMES), st.sampled_from(["=", "=", ""]), st.sampled_from(_VALUES)
)
_plain_lines = st.tuples(
    st.sampled_from(["1", "2", "KSampler", "1 KSampler", "1 null", "1 json:x", "1 \tA"]),
    st.lists(st.tuples(st.sampled_from([" ", "\t", "  "]), _pairs), max_size=6),
).map(lambda t: t[0] + "".join(sep + "".join(pair) for sep, pair in t[1]))


@settings(max_examples=500, deadline=None)
@given(_plain_lines)
def test_the_fast_line_path_reads_a_line_exactly_as_the_cursor_parser(line: str) -> None:
    """`_parse_plain_line` (the quote-free fast path) returns the cursor parser's node, or
    raises its error, or declines (None) and leaves the line to it."""
    from flowforge.workflow.textform import _Line, _parse_line, _parse_plain_line

    bindings = Bindings.request("a cat", "", 7)
    stripped = line.strip(" \t\r")
    try:
        expected: Node | str = _parse_line(_Line(stripped, 1, bindings), 1)
    except TextFormError as error:
        expected = str(error)
    try:
        fast: Node | str | None = _parse_plain_line(_Line(stripped, 1, bindings), 1)
    except TextFormError as error:
        fast = str(error)
    assert fast is None or fast == expected
