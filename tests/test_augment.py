"""Augmentations: each gives a different, valid, coherent workflow, or says it does not apply."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import relabel

from flowforge.workflow.anatomy import embeddings_in, prompt_inputs, read_anatomy
from flowforge.workflow.api import to_api
from flowforge.workflow.augment import (
    AUGMENTATIONS,
    NotApplicableError,
    augment,
    augment_with_ops,
)
from flowforge.workflow.canonical import workflow_hash
from flowforge.workflow.coherence import coherence_problems
from flowforge.workflow.families import default_families
from flowforge.workflow.graph import Workflow
from flowforge.workflow.library import load_seed_library
from flowforge.workflow.schema import default_catalog
from flowforge.workflow.validate import validate

CATALOG = default_catalog()
FAMILIES = default_families()
SEEDS = load_seed_library()
SEED_NAMES = sorted(SEEDS)


def assert_sound(workflow: Workflow, what: str) -> None:
    """Valid (no error, no warning) and coherent (families, regimes, grids)."""
    problems = [*validate(workflow, CATALOG).problems, *coherence_problems(workflow)]
    assert not problems, f"{what}: " + "; ".join(str(p) for p in problems)


def family(workflow: Workflow) -> str:
    anatomy = read_anatomy(workflow)
    return FAMILIES.checkpoints[str(anatomy.checkpoint.get("ckpt_name"))].family


def apply(name: str, seed: str, rng_seed: int = 0) -> Workflow:
    return AUGMENTATIONS[name](SEEDS[seed], CATALOG, random.Random(rng_seed))


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_augmentation_gives_a_different_valid_coherent_workflow(name: str) -> None:
    applied = 0
    for seed in SEED_NAMES:
        before = to_api(SEEDS[seed])
        for rng_seed in range(3):
            try:
                out = apply(name, seed, rng_seed)
            except NotApplicableError as error:
                assert str(error), f"{name} on {seed}: a NotApplicableError must say why"
                continue
            applied += 1
            assert workflow_hash(out) != workflow_hash(SEEDS[seed]), f"{name} on {seed}"
            assert_sound(out, f"{name} on {seed}")
            assert to_api(SEEDS[seed]) == before, f"{name} changed its input"
    assert applied, f"{name} applies to no seed"


@pytest.mark.parametrize(
    ("name", "seed"),
    [
        ("drop_refiner", "sd15_base"),
        ("add_refiner", "sd15_base"),
        ("add_refiner", "sdxl_turbo"),
        ("add_refiner", "sdxl_base_refiner"),
        ("switch_family", "sdxl_base_refiner"),
        ("add_lora", "sdxl_lora_stack"),
        ("remove_lora", "sdxl_base"),
        ("add_lcm", "sdxl_lightning"),
        ("drop_lcm", "sd15_base"),
        ("drop_hires", "sd15_base"),
        ("add_hires_model", "sd15_hires_latent"),
        ("drop_upscale", "sdxl_base"),
        ("add_upscale", "sd15_upscale"),
        ("drop_freeu", "sd15_base"),
        ("add_freeu", "sd15_freeu"),
        ("drop_clip_skip", "sd15_base"),
        ("add_clip_skip", "sd15_anime_clip_skip"),
        ("drop_vae", "sd15_base"),
        ("add_vae", "sdxl_ssd1b_vae"),
        ("swap_vae", "sd15_revanimated_clip_skip_vae"),
        ("drop_embedding", "sd15_base"),
        ("add_embedding", "sdxl_animagine_embeddings"),
        ("set_sampler", "sd15_lcm_lora"),
    ],
)
def test_augmentation_that_does_not_apply_says_so(name: str, seed: str) -> None:
    with pytest.raises(NotApplicableError):
        apply(name, seed)


def test_swap_to_distilled_checkpoint_uses_few_steps_and_low_cfg() -> None:
    distilled = 0
    for rng_seed in range(40):
        out = apply("swap_checkpoint", "sdxl_base", rng_seed)
        anatomy = read_anatomy(out)
        info = FAMILIES.checkpoints[str(anatomy.checkpoint.get("ckpt_name"))]
        assert info.family == "sdxl" and info.role == "base"
        if info.distilled:
            distilled += 1
            for sampler in anatomy.samplers:
                assert sampler.get("steps") <= 8 and sampler.get("cfg") <= 2.5  # type: ignore[operator]
    assert distilled, "no draw picked a turbo or lightning checkpoint"


def test_switch_family_moves_loras_vaes_embeddings_and_size() -> None:
    for seed in ("sd15_anime_clip_skip", "sd15_lora_stack", "sd15_revanimated_clip_skip_vae"):
        out = apply("switch_family", seed)
        assert family(out) == "sdxl"
        anatomy = read_anatomy(out)
        assert (anatomy.latent.get("width"), anatomy.latent.get("height")) in (
            FAMILIES.native_resolutions["sdxl"]
        )
        for node in out.by_class("LoraLoader"):
            assert FAMILIES.loras[str(node.get("lora_name"))].family == "sdxl"
        for node in out.by_class("VAELoader"):
            assert FAMILIES.vaes[str(node.get("vae_name"))] == "sdxl"
        for name in embeddings_in(str(anatomy.negative.get("text"))):
            assert FAMILIES.embeddings[name] == "sdxl"
    # SDXL -> SD1.5 with three LoRAs: the family has only two plain ones, so one is dropped.
    out = apply("switch_family", "sdxl_lora_stack")
    assert family(out) == "sd15" and len(read_anatomy(out).loras) == 2


def test_lcm_lora_sets_the_lcm_regime_and_dropping_it_restores_normal_settings() -> None:
    out = apply("add_lcm", "sd15_hires_latent")
    for sampler in read_anatomy(out).samplers:
        assert sampler.get("sampler_name") == "lcm"
        assert sampler.get("steps") <= 8 and sampler.get("cfg") <= 2.0  # type: ignore[operator]
    back = AUGMENTATIONS["drop_lcm"](out, CATALOG, random.Random(1))
    anatomy = read_anatomy(back)
    assert anatomy.base.get("sampler_name") != "lcm" and anatomy.base.get("steps") >= 20  # type: ignore[operator]
    assert not anatomy.loras


def test_refiner_takes_over_for_the_last_fifth_of_the_steps() -> None:
    for rng_seed in range(4):
        out = apply("add_refiner", "sdxl_hires_latent", rng_seed)
        anatomy = read_anatomy(out)
        assert anatomy.refiner is not None and anatomy.refiner_checkpoint is not None
        base, refiner = anatomy.base, anatomy.refiner
        assert base.class_type == "KSamplerAdvanced"
        assert base.get("return_with_leftover_noise") == "enable"
        assert refiner.get("add_noise") == "disable"
        assert base.get("end_at_step") == refiner.get("start_at_step")
        assert refiner.get("start_at_step") == round(0.8 * base.get("steps"))  # type: ignore[operator]
        assert FAMILIES.checkpoints[str(anatomy.refiner_checkpoint.get("ckpt_name"))].role == (
            "refiner"
        )
        assert anatomy.hires_kind == "latent", "the hires pass stays after the refiner"
        # base and refiner prompts (the hires pass shares the base's)
        assert len(prompt_inputs(out)) == 2
        dropped = AUGMENTATIONS["drop_refiner"](out, CATALOG, random.Random(0))
        assert read_anatomy(dropped).base.class_type == "KSampler"
        assert not [n for n in dropped if n.get("ckpt_name") == "sd_xl_refiner_1.0.safetensors"]


def test_model_hires_pass_scales_by_one_and_a_half_or_two() -> None:
    for rng_seed in range(8):
        out = apply("add_hires_model", "sdxl_base", rng_seed)
        loader = out.by_class("UpscaleModelLoader")[0]
        scale = FAMILIES.upscale_models[str(loader.get("model_name"))]
        (down,) = out.by_class("ImageScaleBy")
        assert scale * down.get("scale_by") in (1.5, 2.0)  # type: ignore[operator]
        assert read_anatomy(out).hires_kind == "model"
        dropped = AUGMENTATIONS["drop_hires"](out, CATALOG, random.Random(0))
        assert workflow_hash(dropped) == workflow_hash(SEEDS["sdxl_base"])


def test_add_then_drop_restores_the_seed() -> None:
    pairs = [
        ("add_lora", "remove_lora", "sd15_base"),
        ("add_freeu", "drop_freeu", "sdxl_base"),
        ("add_clip_skip", "drop_clip_skip", "sd15_base"),
        ("add_vae", "drop_vae", "sdxl_base"),
        ("add_embedding", "drop_embedding", "sd15_base"),
        ("add_upscale", "drop_upscale", "sdxl_base"),
        ("add_hires_latent", "drop_hires", "sd15_base"),
    ]
    for add, drop, seed in pairs:
        out = AUGMENTATIONS[drop](apply(add, seed), CATALOG, random.Random(0))
        assert workflow_hash(out) == workflow_hash(SEEDS[seed]), f"{add} then {drop}"


def test_augment_is_deterministic_for_a_given_rng_seed() -> None:
    first = augment(SEEDS["sdxl_base"], CATALOG, random.Random(7), 6)
    second = augment(SEEDS["sdxl_base"], CATALOG, random.Random(7), 6)
    assert to_api(first) == to_api(second)


def test_augment_raises_when_no_named_augmentation_applies() -> None:
    with pytest.raises(NotApplicableError):
        augment_with_ops(SEEDS["sd15_base"], CATALOG, random.Random(0), 1, ["drop_refiner"])


@settings(max_examples=200, deadline=None)
@given(
    seed=st.sampled_from(SEED_NAMES),
    names=st.lists(st.sampled_from(sorted(AUGMENTATIONS)), min_size=1, max_size=10),
    rng_seed=st.integers(0, 2**32 - 1),
)
def test_random_augmentation_sequences_stay_valid_and_coherent(
    seed: str, names: list[str], rng_seed: int
) -> None:
    rng = random.Random(rng_seed)
    workflow = SEEDS[seed]
    for name in names:
        try:
            workflow = AUGMENTATIONS[name](workflow, CATALOG, rng)
        except NotApplicableError:
            continue
        assert_sound(workflow, f"{seed} after {name}")


@settings(max_examples=100, deadline=None)
@given(
    seed=st.sampled_from(SEED_NAMES),
    n_ops=st.integers(1, 6),
    rng_seed=st.integers(0, 2**32 - 1),
)
def test_augmentation_follows_links_not_node_ids(seed: str, n_ops: int, rng_seed: int) -> None:
    """Renamed ids and shuffled node order give the same result (up to canonical form)."""
    renamed = relabel(SEEDS[seed], random.Random(rng_seed))
    original = augment_with_ops(SEEDS[seed], CATALOG, random.Random(rng_seed), n_ops)
    relabelled = augment_with_ops(renamed, CATALOG, random.Random(rng_seed), n_ops)
    assert original.ops == relabelled.ops
    assert workflow_hash(original.workflow) == workflow_hash(relabelled.workflow)
