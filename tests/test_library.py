"""The seed library and library building: valid, coherent, distinct, diverse, deterministic."""

from __future__ import annotations

import collections
import filecmp
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from flowforge.workflow.anatomy import embeddings_in, read_anatomy
from flowforge.workflow.api import load_api
from flowforge.workflow.augment import AUGMENTATIONS
from flowforge.workflow.canonical import workflow_hash
from flowforge.workflow.coherence import coherence_problems
from flowforge.workflow.families import default_families
from flowforge.workflow.graph import Workflow
from flowforge.workflow.library import (
    LibraryEntry,
    LibraryError,
    build_library,
    load_seed_library,
    load_workflow_dir,
    save_library,
)
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.settings import regime_of
from flowforge.workflow.textform import to_text
from flowforge.workflow.validate import validate

CATALOG = default_catalog()
FAMILIES = default_families()
SEEDS = load_seed_library()
SEED_DIR = Path(__file__).resolve().parents[1] / "src" / "flowforge" / "resources" / "seeds"
SAMPLE = Path(__file__).parent / "data" / "library_sample"


@pytest.fixture(scope="module")
def library() -> list[LibraryEntry]:
    return build_library(SEEDS, CATALOG, 1000, 0)


def features(workflow: Workflow) -> set[str]:
    """The structural options a workflow shows."""
    anatomy = read_anatomy(workflow)
    found = {f"regime:{regime_of(anatomy, FAMILIES).name}", f"loras:{len(anatomy.loras)}"}
    found |= {f"class:{node.class_type}" for node in workflow}
    if anatomy.hires_kind:
        found.add(f"hires:{anatomy.hires_kind}")
    if anatomy.refiner is not None:
        found.add("refiner")
    if anatomy.final_upscale is not None:
        found.add("final_upscale")
    if embeddings_in(str(anatomy.negative.get("text"))):
        found.add("embeddings")
    return found


STRUCTURAL_OPTIONS = {
    "hires:latent",
    "hires:model",
    "refiner",
    "final_upscale",
    "embeddings",
    "regime:normal",
    "regime:turbo",
    "regime:lightning",
    "regime:lcm",
    "loras:0",
    "loras:1",
    "loras:2",
    "loras:3",
    "class:FreeU",
    "class:FreeU_V2",
    "class:CLIPSetLastLayer",
    "class:VAELoader",
    "class:CLIPTextEncodeSDXLRefiner",
    "class:SelfAttentionGuidance",
    "class:ImageScaleBy",
}


# --- seeds ------------------------------------------------------------------------------


def test_seed_library_has_both_families_and_every_structural_option() -> None:
    assert len(SEEDS) >= 24
    families = collections.Counter(
        FAMILIES.checkpoints[str(read_anatomy(wf).checkpoint.get("ckpt_name"))].family
        for wf in SEEDS.values()
    )
    assert families["sd15"] >= 10 and families["sdxl"] >= 10
    shown = set().union(*(features(wf) for wf in SEEDS.values()))
    assert shown >= STRUCTURAL_OPTIONS, STRUCTURAL_OPTIONS - shown


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_is_valid_coherent_and_has_a_text_form(name: str) -> None:
    workflow = SEEDS[name]
    problems = [*validate(workflow, CATALOG).problems, *coherence_problems(workflow)]
    assert not problems, "; ".join(str(p) for p in problems)
    assert workflow.by_class("SaveImage"), "every seed ends in SaveImage"
    to_text(workflow, CATALOG)  # raises on a number off the grids


def test_seeds_share_prompt_negative_and_noise_seed() -> None:
    prompts, negatives, seeds = set(), set(), set()
    for workflow in SEEDS.values():
        anatomy = read_anatomy(workflow)
        prompts.add(anatomy.positive.get("text"))
        negative = str(anatomy.negative.get("text"))
        for name in embeddings_in(negative):
            negative = negative.replace(f", embedding:{name}", "")
        negatives.add(negative)
        seeds |= {n.get("seed") for n in workflow.by_class("KSampler")}
        seeds |= {n.get("noise_seed") for n in workflow.by_class("KSamplerAdvanced")}
    assert len(prompts) == len(negatives) == len(seeds) == 1


def test_seed_readme_lists_every_seed() -> None:
    readme = (SEED_DIR / "README.md").read_text("utf-8")
    for name in SEEDS:
        assert f"`{name}.json`" in readme
    assert "Apache-2.0" in readme


def test_load_workflow_dir_reads_the_seed_folder_like_the_package() -> None:
    loaded = load_workflow_dir(SEED_DIR)
    assert {k: workflow_hash(v) for k, v in loaded.items()} == {
        k: workflow_hash(v) for k, v in SEEDS.items()
    }


def test_load_workflow_dir_rejects_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(LibraryError, match="no"):
        load_workflow_dir(tmp_path)


# --- building ---------------------------------------------------------------------------


def test_library_has_1000_distinct_valid_coherent_workflows(library: list[LibraryEntry]) -> None:
    assert len(library) == 1000
    assert len({entry.hash for entry in library}) == 1000
    assert [entry.origin for entry in library[: len(SEEDS)]] == sorted(SEEDS)
    for entry in library:
        assert workflow_hash(entry.workflow) == entry.hash
        assert validate(entry.workflow, CATALOG).ok
        assert not coherence_problems(entry.workflow)
    texts = {to_text(entry.workflow, CATALOG)[0] for entry in library}
    assert len(texts) == 1000, "distinct hashes are distinct designs, not request texts"


def test_library_is_deterministic(library: list[LibraryEntry]) -> None:
    again = build_library(SEEDS, CATALOG, 1000, 0)
    assert [entry.hash for entry in again] == [entry.hash for entry in library]
    other = build_library(SEEDS, CATALOG, 100, 1)
    assert [e.hash for e in other] != [e.hash for e in library[:100]]


def test_library_is_diverse(library: list[LibraryEntry]) -> None:
    used = collections.Counter()
    for entry in library:
        for node in entry.workflow:
            for key in ("ckpt_name", "lora_name", "model_name", "vae_name"):
                if isinstance(node.get(key), str):
                    used[node.get(key)] += 1
    checkpoints = CATALOG.choices("CheckpointLoaderSimple", "ckpt_name")
    assert all(used[name] for name in checkpoints), [n for n in checkpoints if not used[n]]
    loras = CATALOG.choices("LoraLoader", "lora_name")
    assert sum(1 for name in loras if used[name]) >= len(loras) - 1
    assert all(used[name] for name in CATALOG.choices("UpscaleModelLoader", "model_name"))
    assert all(used[name] for name in CATALOG.choices("VAELoader", "vae_name"))
    shown = set().union(*(features(entry.workflow) for entry in library[len(SEEDS) :]))
    assert STRUCTURAL_OPTIONS - {"class:SelfAttentionGuidance"} <= shown
    applied = {op for entry in library for op in entry.ops}
    assert applied == set(AUGMENTATIONS)


def test_build_library_reports_progress() -> None:
    counts: list[int] = []
    build_library(SEEDS, CATALOG, 40, 3, counts.append)
    assert counts[0] == len(SEEDS) and counts[-1] == 40
    assert counts == sorted(counts)


def test_build_library_gives_up_with_a_clear_error() -> None:
    with pytest.raises(LibraryError, match="distinct workflows after 5 augmentations"):
        build_library(SEEDS, CATALOG, 1000, 0, max_attempts=5)


def test_build_library_raises_on_an_invalid_seed() -> None:
    seed = SEEDS["sd15_base"]
    sampler = seed.by_class("KSampler")[0]
    broken = seed.replace_node(sampler.with_inputs(sampler_name="no_such_sampler"))
    with pytest.raises(LibraryError, match="value_not_in_list"):
        build_library({"broken": broken}, CATALOG, 10, 0)


def test_save_library_writes_files_by_hash_and_an_index(
    library: list[LibraryEntry], tmp_path: Path
) -> None:
    index_path = save_library(library[:40], tmp_path)
    assert index_path.name == "index.jsonl"
    index = [json.loads(line) for line in index_path.read_text("utf-8").splitlines()]
    assert [row["hash"] for row in index] == [entry.hash for entry in library[:40]]
    for row, entry in zip(index, library, strict=False):
        assert row["origin"] == entry.origin and row["ops"] == list(entry.ops)
        assert workflow_hash(load_api(tmp_path / row["file"])) == entry.hash
    assert set(load_workflow_dir(tmp_path)) == {entry.hash for entry in library[:40]}


# --- the checked-in sample --------------------------------------------------------------


def _make_sample() -> ModuleType:
    spec = importlib.util.spec_from_file_location("make_sample", SAMPLE / "make_sample.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_sample"] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["make_sample"]
    return module


def test_checked_in_sample_matches_what_the_code_builds(tmp_path: Path) -> None:
    written = _make_sample().write(tmp_path)
    assert len(written) == 51
    checked_in = sorted([p.name for p in SAMPLE.glob("*.json")] + ["index.jsonl"])
    assert checked_in == written, "rerun tests/data/library_sample/make_sample.py"
    _, mismatch, errors = filecmp.cmpfiles(SAMPLE, tmp_path, written, shallow=False)
    assert not mismatch and not errors, f"rerun make_sample.py: {mismatch + errors}"
    for name in written:
        if name != "index.jsonl":
            assert validate(load_api(SAMPLE / name), CATALOG).ok
