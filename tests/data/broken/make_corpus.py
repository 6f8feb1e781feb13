"""Build the broken-workflow corpus: one planted fault per file, from two valid base graphs.

Run from anywhere: ``python tests/data/broken/make_corpus.py [OUT_DIR]``. It reads
``_valid_base_sd15.json`` and ``_valid_base_sdxl.json`` (next to this script), writes one
``NAME.json`` per fault below into OUT_DIR (default: this directory) and ``manifest.json``,
which lists for every file the one problem validation must report: ``kind``, ``node_id``,
``input`` (or null) and ``severity``. A cycle entry also lists ``cycle_nodes``: any of them
is an acceptable ``node_id``.

Each fault is a single visible edit of a base graph, made on the raw JSON (not through
flowforge), so that malformed values such as ``["3"]`` can be written as they are.

Node ids of the SD1.5 base: 4 checkpoint, 10 LoraLoader, 11 CLIPSetLastLayer, 6/7 positive/
negative prompts, 5 EmptyLatentImage, 3 KSampler, 8 VAEDecode, 9 SaveImage.
SDXL base: 4 base checkpoint, 12 refiner checkpoint, 49 VAELoader, 6/7 base prompts, 15/16
refiner prompts, 5 EmptyLatentImage, 10/11 KSamplerAdvanced (base, refiner), 17 VAEDecode,
50 UpscaleModelLoader, 51 ImageUpscaleWithModel, 52 ImageScaleBy, 19 SaveImage.
"""

from __future__ import annotations

import copy
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BASES = {"sd15": "_valid_base_sd15.json", "sdxl": "_valid_base_sdxl.json"}

Api = dict[str, Any]
Edit = Callable[[Api], None]


# --- edits: each changes exactly one thing -----------------------------------------------


def set_input(node: str, name: str, value: Any) -> Edit:
    def edit(wf: Api) -> None:
        assert name in wf[node]["inputs"], f"{node}.{name} is not in the base"
        wf[node]["inputs"][name] = value

    return edit


def add_input(node: str, name: str, value: Any) -> Edit:
    def edit(wf: Api) -> None:
        assert name not in wf[node]["inputs"]
        wf[node]["inputs"][name] = value

    return edit


def drop_input(node: str, name: str) -> Edit:
    def edit(wf: Api) -> None:
        del wf[node]["inputs"][name]

    return edit


def set_class(node: str, class_type: str) -> Edit:
    def edit(wf: Api) -> None:
        wf[node]["class_type"] = class_type

    return edit


def drop_node(node: str) -> Edit:
    def edit(wf: Api) -> None:
        del wf[node]

    return edit


def add_node(node: str, class_type: str, title: str, **inputs: Any) -> Edit:
    def edit(wf: Api) -> None:
        assert node not in wf
        wf[node] = {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}

    return edit


def both(*edits: Edit) -> Edit:
    """Several edits that together plant one fault (e.g. insert a node and close a loop)."""

    def edit(wf: Api) -> None:
        for one in edits:
            one(wf)

    return edit


# --- the faults --------------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    name: str
    base: str
    edit: Edit
    kind: str
    node_id: str | None
    input: str | None
    description: str
    severity: str = "error"
    cycle_nodes: tuple[str, ...] = ()


NOT_IN_LIST = "value_not_in_list"
TOO_SMALL = "value_smaller_than_min"
TOO_BIG = "value_bigger_than_max"
BAD_TYPE = "invalid_input_type"
MISMATCH = "return_type_mismatch"
BAD_LINK = "bad_linked_input"
MISSING = "required_input_missing"

# One fault per entry: (file name, base, edit, kind, node_id, input, description).
# fmt: off
FAULTS: tuple[Fault, ...] = (
    # value_not_in_list: vocabularies and installed model files
    Fault("sd15_unknown_sampler", "sd15", set_input("3", "sampler_name", "euler_a"),
          NOT_IN_LIST, "3", "sampler_name", "A1111 sampler name 'euler_a'"),
    Fault("sd15_unknown_scheduler", "sd15", set_input("3", "scheduler", "beta"),
          NOT_IN_LIST, "3", "scheduler", "scheduler 'beta' from a newer ComfyUI"),
    Fault("sd15_unknown_ckpt", "sd15",
          set_input("4", "ckpt_name", "v1-5-pruned-emaonly.ckpt"),
          NOT_IN_LIST, "4", "ckpt_name", "checkpoint not installed (.ckpt, not .safetensors)"),
    Fault("sd15_unknown_lora", "sd15",
          set_input("10", "lora_name", "detail_tweaker_lora.safetensors"),
          NOT_IN_LIST, "10", "lora_name", "LoRA not installed"),
    Fault("sdxl_unknown_vae", "sdxl", set_input("49", "vae_name", "sdxl_vae_fp16.safetensors"),
          NOT_IN_LIST, "49", "vae_name", "VAE not installed"),
    Fault("sdxl_unknown_upscale_model", "sdxl",
          set_input("50", "model_name", "4x-UltraSharp.safetensors"),
          NOT_IN_LIST, "50", "model_name", "upscale model not installed (wrong extension)"),
    Fault("sdxl_unknown_upscale_method", "sdxl", set_input("52", "upscale_method", "bislerp"),
          NOT_IN_LIST, "52", "upscale_method", "'bislerp' is a latent method, not an image one"),
    Fault("sdxl_sampler_display_name", "sdxl", set_input("11", "sampler_name", "Euler a"),
          NOT_IN_LIST, "11", "sampler_name", "A1111 display name 'Euler a'"),
    Fault("sdxl_add_noise_yes", "sdxl", set_input("10", "add_noise", "yes"),
          NOT_IN_LIST, "10", "add_noise", "'yes' for an enable/disable enum"),
    # value_smaller_than_min / value_bigger_than_max
    Fault("sd15_steps_zero", "sd15", set_input("3", "steps", 0),
          TOO_SMALL, "3", "steps", "steps 0 (min 1)"),
    Fault("sd15_seed_negative", "sd15", set_input("3", "seed", -1),
          TOO_SMALL, "3", "seed", "seed -1 meaning 'random' in other UIs (min 0)"),
    Fault("sd15_cfg_150", "sd15", set_input("3", "cfg", 150.0),
          TOO_BIG, "3", "cfg", "cfg 150 (max 100)"),
    Fault("sd15_denoise_1_5", "sd15", set_input("3", "denoise", 1.5),
          TOO_BIG, "3", "denoise", "denoise 1.5 (max 1)"),
    Fault("sd15_width_9000", "sd15", set_input("5", "width", 9000),
          TOO_BIG, "5", "width", "width 9000 (max 8192)"),
    Fault("sd15_strength_model_25", "sd15", set_input("10", "strength_model", 25.0),
          TOO_BIG, "10", "strength_model", "LoRA strength 25 (max 20)"),
    Fault("sd15_clip_skip_positive", "sd15", set_input("11", "stop_at_clip_layer", 2),
          TOO_BIG, "11", "stop_at_clip_layer", "clip skip written as +2 (max -1)"),
    Fault("sdxl_height_8", "sdxl", set_input("5", "height", 8),
          TOO_SMALL, "5", "height", "height 8 (min 16)"),
    Fault("sdxl_batch_size_zero", "sdxl", set_input("5", "batch_size", 0),
          TOO_SMALL, "5", "batch_size", "batch_size 0 (min 1)"),
    Fault("sdxl_start_at_step_negative", "sdxl", set_input("11", "start_at_step", -5),
          TOO_SMALL, "11", "start_at_step", "start_at_step -5 (min 0)"),
    # invalid_input_type
    Fault("sd15_steps_string", "sd15", set_input("3", "steps", "20"),
          BAD_TYPE, "3", "steps", "a string in an INT input"),
    Fault("sd15_steps_float", "sd15", set_input("3", "steps", 20.5),
          BAD_TYPE, "3", "steps", "a non-integral float in an INT input"),
    Fault("sd15_model_literal", "sd15", set_input("3", "model", 5),
          BAD_TYPE, "3", "model", "a literal 5 where a MODEL link is required"),
    Fault("sdxl_cfg_bool", "sdxl", set_input("10", "cfg", True),
          BAD_TYPE, "10", "cfg", "a boolean in a FLOAT input"),
    Fault("sdxl_noise_seed_string", "sdxl", set_input("10", "noise_seed", "random"),
          BAD_TYPE, "10", "noise_seed", "the word 'random' in an INT input"),
    # return_type_mismatch
    Fault("sd15_model_into_vae", "sd15", set_input("8", "vae", ["4", 0]),
          MISMATCH, "8", "vae", "MODEL output wired into a VAE input"),
    Fault("sd15_clip_into_model", "sd15", set_input("3", "model", ["4", 1]),
          MISMATCH, "3", "model", "CLIP output wired into a MODEL input"),
    Fault("sd15_conditioning_into_latent", "sd15", set_input("3", "latent_image", ["6", 0]),
          MISMATCH, "3", "latent_image", "CONDITIONING wired into a LATENT input"),
    Fault("sdxl_clip_into_model", "sdxl", set_input("11", "model", ["12", 1]),
          MISMATCH, "11", "model", "refiner CLIP wired into the refiner sampler's model"),
    Fault("sd15_latent_into_steps", "sd15", set_input("3", "steps", ["5", 0]),
          MISMATCH, "3", "steps", "a LATENT link into the INT widget input steps"),
    Fault("sdxl_vae_into_samples", "sdxl", set_input("17", "samples", ["49", 0]),
          MISMATCH, "17", "samples", "VAE wired into VAEDecode's LATENT input"),
    # bad_linked_input
    Fault("sd15_checkpoint_slot_5", "sd15", set_input("8", "vae", ["4", 5]),
          BAD_LINK, "8", "vae", "slot 5 of a checkpoint loader (it has 3 outputs)"),
    Fault("sd15_link_to_missing_node", "sd15", set_input("3", "positive", ["99", 0]),
          BAD_LINK, "3", "positive", "link to node 99, which does not exist"),
    Fault("sdxl_upscale_loader_slot_1", "sdxl", set_input("51", "upscale_model", ["50", 1]),
          BAD_LINK, "51", "upscale_model", "slot 1 of a one-output loader"),
    Fault("sdxl_malformed_link_short", "sdxl", set_input("17", "vae", ["49"]),
          BAD_LINK, "17", "vae", "link-like list without a slot: ['49']"),
    Fault("sdxl_malformed_link_long", "sdxl", set_input("10", "positive", ["6", 0, 1]),
          BAD_LINK, "10", "positive", "link-like list with three items: ['6', 0, 1]"),
    # required_input_missing
    Fault("sd15_missing_seed", "sd15", drop_input("3", "seed"),
          MISSING, "3", "seed", "KSampler without a seed"),
    Fault("sd15_missing_latent_image", "sd15", drop_input("3", "latent_image"),
          MISSING, "3", "latent_image", "KSampler without a latent_image link"),
    Fault("sdxl_missing_vae", "sdxl", drop_input("17", "vae"),
          MISSING, "17", "vae", "VAEDecode without a vae link"),
    Fault("sdxl_missing_text", "sdxl", drop_input("15", "text"),
          MISSING, "15", "text", "CLIPTextEncode without text"),
    # unknown_input
    Fault("sd15_unknown_input", "sd15", add_input("3", "noise_seed", 5),
          "unknown_input", "3", "noise_seed", "KSamplerAdvanced's input name given to KSampler",
          severity="warning"),
    Fault("sdxl_unknown_input", "sdxl", add_input("19", "format", "png"),
          "unknown_input", "19", "format", "SaveImage has no 'format' input",
          severity="warning"),
    # unknown_class_type
    Fault("sd15_unknown_class", "sd15", set_class("8", "VAEDecoder"),
          "unknown_class_type", "8", None, "typo in a class_type"),
    Fault("sdxl_unknown_class_community", "sdxl", set_class("52", "ImageResize+"),
          "unknown_class_type", "52", None, "a community node the catalog lacks"),
    # cycle
    Fault("sd15_cycle_two_nodes", "sd15",
          both(
              add_node("12", "LoraLoaderModelOnly", "Load LoRA (model only)",
                       lora_name="epi_noiseoffset2.safetensors", strength_model=0.5,
                       model=["10", 0]),
              set_input("10", "model", ["12", 0]),
          ),
          "cycle", "10", None, "LoraLoader 10 and LoraLoaderModelOnly 12 feed each other",
          cycle_nodes=("10", "12")),
    Fault("sdxl_cycle_self_loop", "sdxl",
          both(
              add_node("53", "LoraLoaderModelOnly", "Load LoRA (model only)",
                       lora_name="add-detail-xl.safetensors", strength_model=0.7,
                       model=["53", 0]),
              set_input("10", "model", ["53", 0]),
          ),
          "cycle", "53", None, "a LoRA loader whose model input is its own output",
          cycle_nodes=("53",)),
    # prompt_no_outputs
    Fault("sd15_no_output_node", "sd15", drop_node("9"),
          "prompt_no_outputs", None, None, "SaveImage removed: nothing is an output"),
    # warnings
    Fault("sd15_dangling_lora", "sd15",
          add_node("12", "LoraLoader", "Load LoRA (unused)", lora_name="add_detail.safetensors",
                   strength_model=1.0, strength_clip=1.0, model=["4", 0], clip=["4", 1]),
          "unreachable_node", "12", None, "a LoraLoader whose outputs nothing reads",
          severity="warning"),
    Fault("sdxl_unused_prompt", "sdxl",
          add_node("20", "CLIPTextEncode", "CLIP Text Encode (unused)",
                   text="an extra prompt nobody reads", clip=["4", 1]),
          "unreachable_node", "20", None, "a prompt encoder whose output nothing reads",
          severity="warning"),
    Fault("sd15_unknown_embedding", "sd15",
          set_input("7", "text", "embedding:FastNegativeV2, blurry, lowres, watermark"),
          "unknown_embedding", "7", "text", "an embedding the catalog does not list",
          severity="warning"),
)
# fmt: on


def build(out_dir: Path = HERE) -> list[dict[str, Any]]:
    """Write every fault file and the manifest into `out_dir`; return the manifest."""
    bases = {key: json.loads((HERE / name).read_text("utf-8")) for key, name in BASES.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [fault.name for fault in FAULTS]
    assert len(names) == len(set(names)), "fault names must be unique"
    manifest = []
    for fault in FAULTS:
        workflow = copy.deepcopy(bases[fault.base])
        fault.edit(workflow)
        assert workflow != bases[fault.base]
        filename = f"{fault.name}.json"
        (out_dir / filename).write_text(json.dumps(workflow, indent=2) + "\n", encoding="utf-8")
        entry: dict[str, Any] = {
            "file": filename,
            "base": BASES[fault.base],
            "description": fault.description,
            "kind": fault.kind,
            "node_id": fault.node_id,
            "input": fault.input,
            "severity": fault.severity,
        }
        if fault.cycle_nodes:
            entry["cycle_nodes"] = list(fault.cycle_nodes)
        manifest.append(entry)
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")
    return manifest


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    written = build(target)
    print(f"wrote {len(written)} broken workflows and manifest.json to {target}")
