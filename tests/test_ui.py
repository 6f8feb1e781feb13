"""UI-format JSON in and out: real editor templates, hand-made editor features, round trips.

Real data: the official ComfyUI workflow templates (PyPI ``comfyui-workflow-templates-json``,
MIT) and the ComfyMind API workflows. Hand-made fixtures in ``data/ui`` cover what the
templates do not: reroutes, primitives, bypassed and muted nodes, newer editors' widget
sockets, and every kind of unmappable thing.
"""

from __future__ import annotations

import json
from importlib import resources
from itertools import accumulate, pairwise
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowforge.workflow.api import WorkflowFormatError, load_api, to_api
from flowforge.workflow.graph import JsonLiteral, Link, Node, Value, Workflow
from flowforge.workflow.schema import (
    Catalog,
    InputSpec,
    catalog_from_object_info,
    default_catalog,
)
from flowforge.workflow.ui import (
    UiFormatError,
    UiImportResult,
    from_ui,
    from_ui_strict,
    load_ui,
    save_ui,
    to_ui,
)

DATA = Path(__file__).parent / "data" / "ui"
TEMPLATES = resources.files("comfyui_workflow_templates_json").joinpath("templates")


def template(name: str) -> Any:
    return json.loads(TEMPLATES.joinpath(name).read_text("utf-8"))


def fixture(name: str) -> Any:
    return json.loads((DATA / name).read_text("utf-8"))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return default_catalog()


@pytest.fixture(scope="module")
def ordered() -> Catalog:
    """The shipped dump with the declaration order of a few more nodes (data/ui), which the
    shipped ``input_order.json`` lacks; without it those nodes are reported, not guessed."""
    raw = json.loads(
        resources.files("flowforge").joinpath("resources/comfyui/object_info.json").read_text()
    )
    shipped = json.loads(
        resources.files("flowforge").joinpath("resources/comfyui/input_order.json").read_text()
    )
    extra = {k: v for k, v in fixture("declared_order.json").items() if not k.startswith("_")}
    return catalog_from_object_info(raw, "test", input_order={**shipped, **extra})


def api(result: UiImportResult | Workflow) -> dict[str, Any]:
    workflow = result.workflow if isinstance(result, UiImportResult) else result
    return to_api(workflow, meta=False)


def same_json(a: Workflow, b: Workflow) -> bool:
    """Equal API JSON, literal types included (7 vs 7.0), input order aside."""
    return json.dumps(api(a), sort_keys=True) == json.dumps(api(b), sort_keys=True)


def title(workflow: Workflow, node_id: str) -> Any:
    meta = workflow.node(node_id).meta
    return meta.value()["title"] if meta else None


# --- real templates ------------------------------------------------------------------------


def test_sdxl_simple_template_imports_to_the_api_graph_comfyui_runs(catalog: Catalog) -> None:
    result = from_ui(template("image_sdxl_simple.json"), catalog)
    assert result.ok and result.notes == ()
    assert api(result) == {
        "7": {
            "inputs": {"filename_prefix": "sdxl_simple", "images": ["14", 0]},
            "class_type": "SaveImage",
        },
        "10": {
            "inputs": {"text": api(result)["10"]["inputs"]["text"], "clip": ["15", 1]},
            "class_type": "CLIPTextEncode",
        },
        "11": {
            "inputs": {"text": api(result)["11"]["inputs"]["text"], "clip": ["15", 1]},
            "class_type": "CLIPTextEncode",
        },
        "12": {
            "inputs": {
                "seed": 812045847300606,
                "steps": 25,
                "cfg": 7,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "denoise": 1,
                "model": ["15", 0],
                "positive": ["10", 0],
                "negative": ["11", 0],
                "latent_image": ["13", 0],
            },
            "class_type": "KSampler",
        },
        "13": {
            "inputs": {"width": 1024, "height": 1024, "batch_size": 1},
            "class_type": "EmptyLatentImage",
        },
        "14": {"inputs": {"samples": ["12", 0], "vae": ["15", 2]}, "class_type": "VAEDecode"},
        "15": {
            "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
            "class_type": "CheckpointLoaderSimple",
        },
    }  # the MarkdownNote (16) is gone
    assert api(result)["10"]["inputs"]["text"].startswith("a giant classical marble statue")
    assert title(result.workflow, "10") == "Positive Prompt"
    assert title(result.workflow, "12") == "KSampler"  # no title in the file: the class


def test_sdxl_base_refiner_template_takes_primitive_values(catalog: Catalog) -> None:
    result = from_ui(template("sdxl_simple_example.json"), catalog)
    assert result.ok
    nodes = api(result)
    assert len(nodes) == 11  # 9 Notes/MarkdownNotes and 4 PrimitiveNodes are editor-only
    base, refiner = nodes["10"]["inputs"], nodes["11"]["inputs"]
    assert base["noise_seed"] == 721897303308196 and base["add_noise"] == "enable"
    assert (base["steps"], base["start_at_step"], base["end_at_step"]) == (25, 0, 20)
    assert base["return_with_leftover_noise"] == "enable"
    assert (refiner["steps"], refiner["start_at_step"], refiner["end_at_step"]) == (25, 20, 10000)
    assert refiner["add_noise"] == "disable" and refiner["latent_image"] == ["10", 0]
    assert refiner["model"] == ["12", 0] and nodes["17"]["inputs"]["vae"] == ["12", 2]
    assert nodes["4"]["inputs"]["ckpt_name"] == "sd_xl_base_1.0.safetensors"
    assert nodes["12"]["inputs"]["ckpt_name"] == "sd_xl_refiner_1.0.safetensors"
    galaxy = "evening sunset scenery blue sky nature, glass bottle with a galaxy in it"
    assert nodes["6"]["inputs"]["text"] == nodes["15"]["inputs"]["text"] == galaxy
    assert nodes["7"]["inputs"]["text"] == nodes["16"]["inputs"]["text"] == "text, watermark"
    assert title(result.workflow, "11") == "KSampler (Advanced) - REFINER"


def test_refiner_prompt_template_keeps_separate_refiner_prompts(catalog: Catalog) -> None:
    nodes = api(from_ui_strict(template("sdxl_refiner_prompt_example.json"), catalog))
    assert nodes["6"]["inputs"]["text"] == "daytime sky nature dark blue galaxy bottle"
    assert nodes["15"]["inputs"]["text"].startswith("daytime scenery  sky nature dark blue")
    assert nodes["10"]["inputs"]["steps"] == nodes["11"]["inputs"]["steps"] == 25  # primitive
    assert nodes["10"]["inputs"]["noise_seed"] == 6767725640732
    assert nodes["5"]["inputs"] == {"width": 1024, "height": 1024, "batch_size": 1}


def test_sdxl_turbo_template_maps_custom_sampler_widgets(ordered: Catalog) -> None:
    nodes = api(from_ui_strict(template("sdxlturbo_example.json"), ordered))
    sampler = nodes["13"]["inputs"]
    assert (sampler["add_noise"], sampler["noise_seed"], sampler["cfg"]) == (True, 0, 1)
    assert sampler["sampler"] == ["14", 0] and sampler["sigmas"] == ["22", 0]
    assert nodes["22"]["inputs"] == {"steps": 1, "denoise": 1, "model": ["20", 0]}
    assert nodes["14"]["inputs"] == {"sampler_name": "euler_ancestral"}
    assert nodes["20"]["inputs"]["ckpt_name"] == "sd_xl_turbo_1.0_fp16.safetensors"


def test_widgets_added_by_newer_comfyui_are_reported_as_mismatches(ordered: Catalog) -> None:
    result = from_ui(template("sdxl_revision_text_prompts.json"), ordered)
    # CLIPVisionEncode gained a `crop` widget after early 2024: its value has no input here.
    assert [(i.node_id, i.class_type) for i in result.issues] == [
        ("13", "CLIPVisionEncode"),
        ("36", "CLIPVisionEncode"),
    ]
    assert all('["center"]' in i.message for i in result.issues)
    nodes = api(result)
    assert nodes["13"]["inputs"] == {"clip_vision": ["39", 0], "image": ["34", 0]}
    assert nodes["19"]["inputs"]["strength"] == 0.75
    assert nodes["19"]["inputs"]["noise_augmentation"] == 0
    # LoadImage: the upload button's "image" value is the editor's, not an input.
    assert nodes["34"]["inputs"] == {"image": "sdxl_revision_text_prompts_ref_image1.png"}
    assert nodes["3"]["inputs"]["sampler_name"] == "dpmpp_3m_sde_gpu"


def test_saved_upload_button_object_counts_as_the_upload_value(ordered: Catalog) -> None:
    result = from_ui(template("templates-textured_logo_elements.json"), ordered)
    loads = [node for node in result.workflow if node.class_type == "LoadImage"]
    assert {node.get("image") for node in loads} >= {"comfy_logo_b.png", "furry_ball.png"}
    assert not [i for i in result.issues if i.class_type == "LoadImage"]


def test_subgraph_template_is_reported_with_its_name(catalog: Catalog) -> None:
    data = template("flux_dev_checkpoint_example.json")
    result = from_ui(data, catalog)
    assert [(i.node_id, i.class_type) for i in result.issues] == [
        ("56", "e2a55522-bf16-4d9f-a222-5b8788ef2982")
    ]
    assert "subgraph ('Text to Image (Flux.1 Dev)')" in result.issues[0].message
    with pytest.raises(UiFormatError, match=r"flux\.json: 1 thing\(s\).*node 56 "):
        from_ui_strict(data, catalog, "flux.json")


def test_unknown_node_in_template_is_reported_and_keeps_its_links(catalog: Catalog) -> None:
    result = from_ui(template("flux_schnell.json"), catalog)
    unknown = [i for i in result.issues if "not in the catalog" in i.message]
    assert [i.class_type for i in unknown] == ["EmptySD3LatentImage"]
    latent = result.workflow.by_class("EmptySD3LatentImage")[0]
    assert latent.inputs == ()  # widget values cannot be named; it has no links
    sampler = result.workflow.by_class("KSampler")[0]
    assert sampler.get("latent_image") == Link(latent.id, 0)


def test_every_classic_template_round_trips_through_to_ui(ordered: Catalog) -> None:
    for name in (
        "image_sdxl_simple.json",
        "sdxl_simple_example.json",
        "sdxl_refiner_prompt_example.json",
        "sdxlturbo_example.json",
    ):
        workflow = from_ui_strict(template(name), ordered)
        back = from_ui_strict(json.loads(json.dumps(to_ui(workflow, ordered))), ordered)
        assert same_json(back, workflow), name
        assert [title(back, i) for i in back.ids()] == [title(workflow, i) for i in back.ids()]


# --- hand-made editor features --------------------------------------------------------------


def test_reroutes_are_followed_and_primitives_written_into_targets(catalog: Catalog) -> None:
    result = from_ui(fixture("reroute_primitive.json"), catalog)
    assert result.ok and result.notes == ()
    nodes = api(result)
    assert sorted(nodes, key=int) == ["3", "4", "5", "6", "7", "8", "9"]
    assert nodes["8"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}
    assert nodes["3"]["inputs"]["steps"] == 30  # from PrimitiveNode 30, at its widget's place
    assert list(nodes["3"]["inputs"])[:6] == [
        "seed",
        "steps",
        "cfg",
        "sampler_name",
        "scheduler",
        "denoise",
    ]
    assert nodes["3"]["inputs"]["seed"] == 42 and nodes["3"]["inputs"]["cfg"] == 7.5
    assert nodes["6"]["inputs"] == {"text": "a red fox in the snow, golden hour", "clip": ["4", 1]}
    assert nodes["5"]["inputs"] == {"width": 512, "height": 768, "batch_size": 1}


def test_bypassed_node_passes_its_inputs_and_muted_node_is_dropped(catalog: Catalog) -> None:
    result = from_ui(fixture("bypass_mute.json"), catalog)
    assert result.ok  # both are ComfyUI behaviour, reported as notes
    nodes = api(result)
    assert "10" not in nodes and "11" not in nodes
    assert nodes["3"]["inputs"]["model"] == ["4", 0]  # LoRA bypassed: MODEL in -> MODEL out
    assert nodes["6"]["inputs"]["clip"] == nodes["7"]["inputs"]["clip"] == ["4", 1]
    assert nodes["8"]["inputs"] == {"samples": ["3", 0]}  # its VAE source is muted
    notes = [str(note) for note in result.notes]
    assert "node 10 (LoraLoader): bypassed: removed" in notes[0]
    assert any(n.startswith("node 11 (VAELoader): muted") for n in notes)
    assert any(n.startswith("node 8 (VAEDecode): input 'vae' dropped") for n in notes)


def test_bypassed_node_without_an_input_of_the_type_drops_the_input(catalog: Catalog) -> None:
    data = fixture("bypass_mute.json")
    loader = next(node for node in data["nodes"] if node["id"] == 4)
    loader["mode"] = 4  # its consumers want MODEL and CLIP; it has no inputs at all
    result = from_ui(data, catalog)
    assert "model" not in api(result)["3"]["inputs"]
    assert any("input 'model' dropped: bypassed node 4" in str(n) for n in result.notes)


def test_newer_editor_widget_sockets_and_object_links_are_read(catalog: Catalog) -> None:
    data = fixture("newer_frontend.json")
    expected = {
        "seed": 777,
        "steps": 30,
        "cfg": 5.5,
        "sampler_name": "dpmpp_2m_sde",
        "scheduler": "karras",
        "denoise": 0.9,
        "model": ["1", 0],
        "positive": ["2", 0],
        "negative": ["3", 0],
        "latent_image": ["4", 0],
    }
    assert api(from_ui_strict(data, catalog))["5"]["inputs"] == expected
    data["links"] = [
        {
            "id": i,
            "origin_id": s,
            "origin_slot": ss,
            "target_id": t,
            "target_slot": ts,
            "type": kind,
        }
        for i, s, ss, t, ts, kind in data["links"]
    ]  # the v1 schema's link objects
    assert api(from_ui_strict(data, catalog))["5"]["inputs"] == expected


def test_every_unmappable_thing_is_reported_at_once(catalog: Catalog) -> None:
    result = from_ui(fixture("unmappable.json"), catalog)
    issues = [str(issue) for issue in result.issues]
    assert [issue.node_id for issue in result.issues] == ["2", "3", "4", "5", "6", "6"]
    assert "widgets_values" in issues[0] and '"extra"' in issues[0]
    assert "(seed, steps, cfg, sampler_name, scheduler, denoise)" in issues[0]
    assert issues[1].startswith("node 3 (FooBarUpscaler): node type not in the catalog")
    assert "subgraph ('Decode and sharpen')" in issues[2]
    assert "group node ('Face fix')" in issues[3]
    assert "input 'samples' uses link 99, which is not in 'links'" in issues[4]
    assert "input 'vae' links to node 77, which does not exist" in issues[5]
    # What can be kept is kept: links around the unmappable nodes.
    assert api(result)["2"]["inputs"] == {"model": ["1", 0]}
    assert api(result)["4"]["inputs"] == {"samples": ["3", 0]}
    with pytest.raises(UiFormatError) as caught:
        from_ui_strict(fixture("unmappable.json"), catalog, "bad.json")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("bad.json: 6 thing(s)")
    assert all(f"node {n} (" in message for n in ("2", "3", "4", "5", "6"))


def test_dangling_looping_and_undeclared_inputs_are_reported(catalog: Catalog) -> None:
    data = fixture("reroute_primitive.json")
    nodes = {node["id"]: node for node in data["nodes"]}
    nodes[20]["inputs"][0]["link"] = None  # the first reroute of the VAE chain loses its input
    nodes[7]["inputs"].append({"name": "clip_l", "type": "CLIP", "link": 5})
    result = from_ui(data, catalog)
    assert [str(n) for n in result.notes] == [
        "node 8 (VAEDecode): input 'vae' dropped: it comes from a Reroute with no input"
    ]
    assert [str(i) for i in result.issues] == [
        "node 7 (CLIPTextEncode): input 'clip_l' is not an input of CLIPTextEncode in the "
        "catalog (a newer version of this node?)"
    ]
    nodes[20]["inputs"][0]["link"] = 13  # 21 -> 20 -> 21 ...
    looping = from_ui(data, catalog).issues
    assert "node 8 (VAEDecode): input 'vae' loops through reroutes" in str(looping[-1])


def test_unknown_declaration_order_is_reported_not_guessed() -> None:
    sorted_dump = {
        "Area": {
            "input": {"required": {"height": ["INT", {}], "width": ["INT", {}]}},
            "output": ["INT"],
            "output_name": ["INT"],
        },
    }
    catalog = catalog_from_object_info(sorted_dump, "sorted dump")
    data = {"nodes": [{"id": 1, "type": "Area", "widgets_values": [640, 480]}], "links": []}
    result = from_ui(data, catalog)
    assert "does not know the declaration order of its widgets (height, width)" in str(
        result.issues[0]
    )
    workflow = Workflow((Node("1", "Area", (("width", 640), ("height", 480))),))
    with pytest.raises(UiFormatError, match=r"node 1 \(Area\): the catalog does not know"):
        to_ui(workflow, catalog)


def test_seed_control_value_is_recognised_on_any_int_widget_by_value(catalog: Catalog) -> None:
    data = fixture("newer_frontend.json")
    sampler = next(node for node in data["nodes"] if node["id"] == 5)
    sampler["widgets_values"][1] = 99  # no control value: a mismatch, not a misread
    assert any(i.node_id == "5" for i in from_ui(data, catalog).issues)
    del sampler["widgets_values"][1]  # old files without control values read fine
    assert api(from_ui_strict(data, catalog))["5"]["inputs"]["steps"] == 30


def test_wrong_format_and_malformed_files_raise_one_line_errors(catalog: Catalog) -> None:
    with pytest.raises(UiFormatError, match="this is API format"):
        from_ui({"1": {"class_type": "KSampler", "inputs": {}}}, catalog)
    with pytest.raises(WorkflowFormatError, match="duplicate node id 3"):
        from_ui({"nodes": [{"id": 3, "type": "A"}, {"id": 3, "type": "B"}], "links": []}, catalog)
    with pytest.raises(UiFormatError, match="malformed link"):
        from_ui({"nodes": [], "links": [["x", 1, 0, 2, 0, "MODEL"]]}, catalog)


# --- writing and round trips ---------------------------------------------------------------


def test_to_ui_writes_what_the_editor_expects(catalog: Catalog, tmp_path: Path) -> None:
    workflow = from_ui_strict(fixture("reroute_primitive.json"), catalog)
    data = to_ui(workflow, catalog)
    assert (data["last_node_id"], data["last_link_id"], data["version"]) == (9, 9, 0.4)
    nodes = {node["id"]: node for node in data["nodes"]}
    sampler = nodes[3]
    assert sampler["widgets_values"] == [42, "fixed", 30, 7.5, "euler", "normal", 1]
    assert [s["name"] for s in sampler["inputs"]] == [
        "model",
        "positive",
        "negative",
        "latent_image",
    ]
    assert sampler["outputs"] == [
        {"name": "LATENT", "type": "LATENT", "links": [7], "slot_index": 0}
    ]
    assert nodes[6]["title"] == "Positive" and "title" not in nodes[7]
    for link_id, source, slot, target, target_slot, kind in data["links"]:
        assert nodes[target]["inputs"][target_slot]["link"] == link_id
        assert link_id in nodes[source]["outputs"][slot]["links"]
        assert nodes[source]["outputs"][slot]["type"] == kind
    # Columns by depth: every link goes left to right; nodes in a column do not overlap.
    assert all(nodes[s]["pos"][0] < nodes[t]["pos"][0] for _, s, _, t, _, _ in data["links"])
    column = sorted((n["pos"][1], n["size"][1]) for n in data["nodes"] if n["pos"][0] == 50)
    assert all(top + height < below for (top, height), (below, _) in pairwise(column))
    save_ui(workflow, catalog, tmp_path / "out.json")
    assert same_json(load_ui(tmp_path / "out.json", catalog), workflow)


def test_linked_widget_is_written_as_a_converted_widget_socket(catalog: Catalog) -> None:
    # The early-2024 catalog has no INT output: any output shows the socket shape (link
    # types are validation's business).
    workflow = from_api_like(
        {
            "1": ("CheckpointLoaderSimple", {"ckpt_name": "dreamshaper_8.safetensors"}),
            "2": (
                "KSampler",
                {
                    "seed": Link("4", 0),
                    "steps": 20,
                    "cfg": 7.0,
                    "sampler_name": "euler",
                    "scheduler": "normal",
                    "denoise": 1.0,
                    "model": Link("1", 0),
                },
            ),
            "4": ("LatentUpscaleBy", {"upscale_method": "nearest-exact", "scale_by": 1.5}),
        }
    )
    sampler = next(n for n in to_ui(workflow, catalog)["nodes"] if n["id"] == 2)
    assert sampler["inputs"][-1] == {
        "name": "seed",
        "type": "INT",
        "widget": {"name": "seed"},
        "link": 2,
    }
    assert sampler["widgets_values"][:2] == [0, "fixed"]  # placeholder: the link wins
    assert same_json(from_ui(to_ui(workflow, catalog), catalog).workflow, workflow)


def from_api_like(spec: dict[str, tuple[str, dict[str, Value]]]) -> Workflow:
    return Workflow(tuple(Node(i, cls, tuple(inputs.items())) for i, (cls, inputs) in spec.items()))


def test_to_ui_lists_every_problem_at_once(catalog: Catalog) -> None:
    workflow = from_api_like(
        {
            "a": ("KSampler", {"steps": 20, "model": "not a link", "mystery": 1}),
            "2": ("NoSuchNode", {}),
        }
    )
    with pytest.raises(UiFormatError) as caught:
        to_ui(workflow, catalog)
    message = str(caught.value)
    assert "node a (KSampler): UI node ids are integers (canonicalize first)" in message
    assert "input 'model' needs a link" in message and "input 'mystery' is not declared" in message
    assert "no value for widget(s) seed, cfg, sampler_name, scheduler, denoise" in message
    assert "node 2 (NoSuchNode): node type not in the catalog" in message


def test_comfymind_api_workflows_round_trip_through_ui(
    comfymind_files: list[Path], ordered: Catalog
) -> None:
    known = [p for p in comfymind_files if all(n.class_type in ordered for n in load_api(p))]
    assert {"001_api.json", "007_api.json", "008_api.json", "009_api.json"} <= {
        p.name for p in known
    }
    for path in known:
        workflow = load_api(path)
        data = json.loads(json.dumps(to_ui(workflow, ordered)))
        back = from_ui_strict(data, ordered, path.name)
        # LoadImage's `upload` is the editor's button value that older editors leaked into
        # API exports; ComfyUI ignores it and the UI file keeps it as the button's value.
        expected = Workflow(
            tuple(
                node.without_inputs("upload") if node.class_type == "LoadImage" else node
                for node in workflow
            )
        )
        assert same_json(back, expected), path.name
        assert [title(back, i) for i in back.ids()] == [title(expected, i) for i in back.ids()]


ROUND_TRIP_CLASSES = (
    "CheckpointLoaderSimple",
    "LoraLoader",
    "CLIPSetLastLayer",
    "CLIPTextEncode",
    "EmptyLatentImage",
    "KSampler",
    "KSamplerAdvanced",
    "LatentUpscaleBy",
    "VAEDecode",
    "VAELoader",
    "SaveImage",
    "ImageScale",
    "UpscaleModelLoader",
    "ImageUpscaleWithModel",
    "LoadImage",
    "VAEEncode",
    "CLIPTextEncodeSDXL",
    "FreeU_V2",
    "SamplerCustom",
    "SDTurboScheduler",
    "KSamplerSelect",
)


def widget_value(draw: st.DrawFn, spec: InputSpec) -> Value:
    if spec.kind == "ENUM":
        return draw(st.sampled_from(spec.choices)) if spec.choices else draw(st.text(max_size=8))
    if spec.kind == "INT":
        low = int(spec.min) if spec.min is not None else -(2**31)
        high = int(spec.max) if spec.max is not None else 2**31
        return draw(st.integers(min_value=low, max_value=min(high, 2**53)))
    if spec.kind == "FLOAT":
        return draw(st.sampled_from([0.0, 0.5, 1, 7.5, 1.25e-3]))
    if spec.kind == "BOOLEAN":
        return draw(st.booleans())
    return draw(st.one_of(st.text(max_size=12), st.sampled_from(["fixed", "image", ""])))


@st.composite
def catalog_workflows(draw: st.DrawFn, catalog: Catalog) -> Workflow:
    """A random graph of real node classes: every widget set, links only where types fit."""
    count = draw(st.integers(min_value=1, max_value=7))
    gaps = draw(st.lists(st.integers(1, 60), min_size=count, max_size=count))
    ids = draw(st.permutations(list(accumulate(gaps))))  # distinct ids in any file order
    nodes: list[Node] = []
    for node_id in map(str, ids):
        schema = catalog[draw(st.sampled_from(ROUND_TRIP_CLASSES))]
        inputs: list[tuple[str, Value]] = []
        for spec in schema.inputs:
            if spec.is_widget:
                inputs.append((spec.name, widget_value(draw, spec)))
                continue
            sources = [
                Link(n.id, slot)
                for n in nodes
                for slot, kind in enumerate(catalog[n.class_type].outputs)
                if kind == spec.type
            ]
            if sources and draw(st.booleans()):
                inputs.append((spec.name, draw(st.sampled_from(sources))))
        draw(st.randoms()).shuffle(inputs)
        meta = draw(st.sampled_from([None, JsonLiteral.of({"title": "My node"})]))
        nodes.append(Node(node_id, schema.class_type, tuple(inputs), meta))
    return Workflow(tuple(nodes))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_api_to_ui_to_api_is_the_identity(data: st.DataObject, ordered: Catalog) -> None:
    workflow = data.draw(catalog_workflows(ordered))
    ui = json.loads(json.dumps(to_ui(workflow, ordered)))
    back = from_ui_strict(ui, ordered)
    assert same_json(back, workflow)
    for node in workflow:
        assert title(back, node.id) == (title(workflow, node.id) or node.class_type)
