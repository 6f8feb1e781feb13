"""The simulated world: Judge conformance, what it rewards and punishes, and its audit.

One sentence encoder (and one temporary embedding cache) serves the whole module: loading
MiniLM is the slow part.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from strategies import relabel

from flowforge.judge.base import Judge, JudgeItem
from flowforge.judge.loader import load_judge
from flowforge.judge.sim import SimJudge, make_sim_judge
from flowforge.judge.sim.audit import AuditConfig, audit, default_library, with_prompt
from flowforge.judge.sim.embed import PromptEncoder, default_cache_dir
from flowforge.judge.sim.pipeline import read_pipeline
from flowforge.judge.sim.scorers import HELDOUT_SCORER, SCORERS
from flowforge.workflow.canonical import canonicalize
from flowforge.workflow.families import default_families
from flowforge.workflow.graph import Link, Node, Workflow
from flowforge.workflow.library import load_seed_library

PROMPTS = (
    "a close-up photo of an old fisherman with a weathered face",
    "pixel art of a castle on a hill",
    "an anime girl with a sword under cherry blossoms",
    "a minimalist logo for a bakery with the word BREAD",
    "a vast mountain landscape at dawn, highly detailed",
)
SCORER_NAMES = {scorer.name for scorer in SCORERS}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim-cache")


@pytest.fixture(scope="module")
def encoder(cache_dir: Path) -> PromptEncoder:
    return PromptEncoder(cache_dir)


@pytest.fixture(scope="module")
def judges(encoder: PromptEncoder) -> dict[int, SimJudge]:
    return {seed: SimJudge(seed, encoder=encoder) for seed in (0, 1)}


@pytest.fixture(scope="module")
def seeds() -> dict[str, Workflow]:
    return load_seed_library()


def items_for(
    workflow: Workflow, prompts: tuple[str, ...] = PROMPTS, seed: int = 0
) -> list[JudgeItem]:
    return [JudgeItem(prompt, with_prompt(workflow, prompt), seed) for prompt in prompts]


def edited(workflow: Workflow, class_type: str, **inputs: Any) -> Workflow:
    """The workflow with `inputs` set on every node of `class_type`."""
    for node in workflow.by_class(class_type):
        workflow = workflow.replace_node(node.with_inputs(**inputs))
    return workflow


def quality(judge: SimJudge, items: list[JudgeItem]) -> np.ndarray:
    values = judge.true_quality(items)
    assert all(value is not None for value in values)
    return np.array(values, dtype=float)


# --- the Judge contract ---------------------------------------------------------------------


def test_sim_judge_is_a_judge_with_the_default_catalog(judges: dict[int, SimJudge]) -> None:
    judge = judges[0]
    assert isinstance(judge, Judge)
    info = judge.object_info()
    assert "KSampler" in info and "CheckpointLoaderSimple" in info
    info.clear()  # a copy: the judge's own stays intact
    assert "KSampler" in judge.object_info()


def test_one_result_per_item_in_order_with_errors_in_place(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    good = items_for(seeds["sdxl_base"])[:2]
    broken = with_prompt(edited(seeds["sdxl_base"], "KSampler", sampler_name="warp_drive"), "x")
    items = [good[0], JudgeItem("x", broken, 0), good[1], JudgeItem("", good[0].workflow, 0)]
    results = judges[0].score(items)
    assert len(results) == 4
    assert [r.error is None for r in results] == [True, False, True, False]
    assert "value_not_in_list" in (results[1].error or "")
    for result in (results[0], results[2]):
        assert result.scores is not None and set(result.scores) == SCORER_NAMES
        assert all(0.0 < value < 1.0 for value in result.scores.values())
    assert judges[0].score([]) == []


def test_schema_invalid_workflows_get_errors_never_scores(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    base = seeds["sd15_base"]
    bad = [
        edited(base, "CheckpointLoaderSimple", ckpt_name="missing.safetensors"),
        edited(base, "KSampler", steps=0),
        edited(base, "EmptyLatentImage", width="wide"),
    ]
    results = judges[0].score([JudgeItem("a cat", with_prompt(w, "a cat"), 0) for w in bad])
    assert all(r.scores is None and (r.error or "").startswith("invalid workflow") for r in results)
    assert judges[0].true_quality([JudgeItem("a cat", with_prompt(bad[0], "a cat"), 0)]) == [None]


def test_valid_workflows_the_world_does_not_model_get_errors(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    base = seeds["sd15_base"]
    sampler = base.by_class("KSampler")[0]
    patched = base.add_node(
        Node(
            "99",
            "ModelSamplingDiscrete",
            (("model", sampler.get("model")), ("sampling", "eps"), ("zsnr", False)),
        )
    )
    patched = patched.replace_node(sampler.with_inputs(model=Link("99", 0)))
    prompt = PROMPTS[0]
    two_outputs = with_prompt(base, prompt)
    decode = base.by_class("VAEDecode")[0].id
    two_outputs["98"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [decode, 0], "filename_prefix": "again"},
    }
    items = [JudgeItem(prompt, with_prompt(patched, prompt), 0), JudgeItem(prompt, two_outputs, 0)]
    items.append(JudgeItem("a different prompt", items_for(base)[0].workflow, 0))
    results = judges[0].score(items)
    assert all(r.scores is None and "cannot judge" in (r.error or "") for r in results)
    assert "ModelSamplingDiscrete" in (results[0].error or "")
    assert "SaveImage" in (results[1].error or "")
    assert "does not contain the item's prompt" in (results[2].error or "")


def test_scores_are_deterministic_across_calls_and_judges(
    judges: dict[int, SimJudge], encoder: PromptEncoder, cache_dir: Path, seeds: dict[str, Workflow]
) -> None:
    items = [item for name in ("sd15_base", "sdxl_turbo") for item in items_for(seeds[name])]
    first = judges[0].score(items)
    assert judges[0].score(items) == first
    fresh = SimJudge(0, cache_dir=cache_dir)  # new judge, embeddings from the disk cache
    assert fresh.score(items) == first


def test_node_ids_and_seed_literals_do_not_change_scores(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    workflow = seeds["sdxl_base_refiner"]
    renamed = relabel(canonicalize(workflow), random.Random(3))
    reseeded = edited(workflow, "KSamplerAdvanced", noise_seed=12345)
    prompt = PROMPTS[0]
    items = [JudgeItem(prompt, with_prompt(w, prompt), 7) for w in (workflow, renamed, reseeded)]
    results = judges[0].score(items)
    assert results[0] == results[1] == results[2]


def test_seed_changes_scores_not_quality(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    items = [items_for(seeds["sdxl_base"], seed=s)[0] for s in range(6)]
    scores = [r.scores[HELDOUT_SCORER] for r in judges[0].score(items) if r.scores]
    assert len(set(scores)) == 6
    assert len(set(judges[0].true_quality(items))) == 1


def test_different_world_seeds_are_different_worlds(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    items = [item for workflow in seeds.values() for item in items_for(workflow)]
    q0, q1 = quality(judges[0], items), quality(judges[1], items)
    assert np.corrcoef(q0, q1)[0, 1] < 0.9
    assert np.argmax(q0) != np.argmax(q1) or np.abs(q0 - q1).max() > 0.1


def test_factory_and_loader_build_the_sim(cache_dir: Path) -> None:
    judge = make_sim_judge(seed="3", cache_dir=str(cache_dir))
    assert judge.seed == 3
    with pytest.raises(TypeError, match="unknown sim option"):
        make_sim_judge(temperature="1")
    loaded = load_judge("sim:2")
    assert loaded.judge_id == "sim:2" and isinstance(loaded.judge, SimJudge)


def test_embeddings_are_cached_on_disk_as_safetensors(
    cache_dir: Path, encoder: PromptEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = "a lighthouse on a cliff in a storm"
    first = encoder.encode([text])
    fresh = PromptEncoder(cache_dir)
    assert np.array_equal(fresh.encode([text]), first)
    assert not fresh.model_loaded  # served from disk: no model, no torch work
    files = [p for p in cache_dir.rglob("*") if p.is_file()]
    assert files and all(p.suffix == ".safetensors" for p in files)
    monkeypatch.setenv("FLOWFORGE_CACHE", "/somewhere")
    assert default_cache_dir() == Path("/somewhere/sim")


def test_a_prompts_vector_depends_on_its_text_alone() -> None:
    """Not on the texts encoded beside it (batched, MiniLM's padding moved the last bits)
    nor on torch's thread count: else every stage after the first encode depended on the
    cache's history (embed.py's docstring)."""
    import torch

    text = "a lighthouse on a cliff in a storm"
    others = [f"a {word} painted in the style of an old master, {word}" * 3 for word in "ab"]
    alone = PromptEncoder(disk=False).encode([text])[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        among = PromptEncoder(disk=False).encode([others[0], text, others[1]])[1]
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(alone, among) and torch.get_num_threads() == threads


# --- what the world rewards and punishes ----------------------------------------------------


def test_pipeline_is_read_by_links_not_ids(seeds: dict[str, Workflow]) -> None:
    families = default_families()
    for workflow in seeds.values():
        shuffled = relabel(canonicalize(workflow), random.Random(0))
        assert read_pipeline(workflow, families, None) == read_pipeline(shuffled, families, None)
    refined = read_pipeline(seeds["sdxl_refiner_lora_upscale"], families, None)
    assert refined.refiner == "sd_xl_refiner_1.0.safetensors"
    assert refined.refiner_switch == pytest.approx(28 / 35)
    assert refined.upscale_factor == pytest.approx(2.0) and refined.loras
    hires = read_pipeline(seeds["sd15_hires_model"], families, None)
    assert (hires.hires_kind, hires.hires_scale, hires.hires_denoise) == ("model", 2.0, 0.4)


def test_paraphrases_are_judged_alike(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    from flowforge.data.prompts import load_paraphrases

    pairs = load_paraphrases()[:12]
    workflows = list(seeds.values())
    for judge in judges.values():
        for (prompt, paraphrase), (other, _) in zip(pairs, pairs[1:] + pairs[:1], strict=True):
            profile = [
                quality(judge, [items_for(w, (p,))[0] for w in workflows])
                for p in (prompt, paraphrase, other)
            ]
            same = np.corrcoef(profile[0], profile[1])[0, 1]
            assert same > 0.6
            assert same > np.corrcoef(profile[0], profile[2])[0, 1] - 0.1


def test_lora_of_the_wrong_family_is_penalized(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    workflow = seeds["sdxl_nijistyle_lora"]
    lora = workflow.by_class("LoraLoader")[0]
    wrong = workflow.replace_node(lora.with_inputs(lora_name="add_detail.safetensors"))
    for judge in judges.values():
        right_q, wrong_q = quality(judge, items_for(workflow)), quality(judge, items_for(wrong))
        assert np.all(wrong_q < 0.5 * right_q)  # a clear penalty at every quality level


def test_turbo_wants_few_steps_and_low_cfg(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    turbo = seeds["sdxl_turbo"]
    good = edited(turbo, "KSampler", steps=6, cfg=2.0)
    bad = edited(turbo, "KSampler", steps=30, cfg=8.0)
    for judge in judges.values():
        good_q, bad_q = quality(judge, items_for(good)), quality(judge, items_for(bad))
        assert np.all(bad_q < 0.02) and np.all(good_q > 5 * bad_q)


def test_a_negative_that_is_the_positive_gives_no_guidance(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    """Both conditionings the same (one encoder, or one text): CFG 1 whatever it says."""
    base = seeds["sdxl_base"]
    sampler = base.by_class("KSampler")[0]
    one_encoder = base.replace_node(sampler.with_inputs(negative=sampler.get("positive")))
    negative = base.node(sampler.get("negative").node)
    unguided = edited(base, "KSampler", cfg=1.0)
    families = default_families()
    assert read_pipeline(one_encoder, families, None).cfg == 1.0
    assert read_pipeline(base, families, None).cfg == sampler.get("cfg") > 1.0
    for judge in judges.values():
        same_text = [
            JudgeItem(p, with_prompt(base.replace_node(negative.with_inputs(text=p)), p), 0)
            for p in PROMPTS
        ]
        q_unguided = quality(judge, items_for(unguided))
        assert np.allclose(quality(judge, items_for(one_encoder)), q_unguided)
        assert np.allclose(quality(judge, same_text), q_unguided)
        assert np.all(q_unguided < 0.5 * quality(judge, items_for(base)))


def test_a_second_pass_guided_by_the_negative_undoes_the_image(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    """A hires pass whose positive is the base pass's negative (and negative its positive)
    re-draws its denoise share of the image away from the prompt: GRPO found this wiring in
    session 30 when the world still priced a hires pass by scale, denoise and steps alone."""
    base = seeds["sdxl_hires_latent"]
    _, hires = base.by_class("KSampler")  # the base pass, then the hires pass
    swapped = base.replace_node(
        hires.with_inputs(positive=hires.get("negative"), negative=hires.get("positive"))
    )
    families = default_families()
    assert read_pipeline(base, families, None).reversed_share == 0.0
    assert read_pipeline(swapped, families, None).reversed_share == hires.get("denoise") == 0.5
    for judge in judges.values():
        assert np.all(quality(judge, items_for(swapped)) < 0.5 * quality(judge, items_for(base)))
    # no shipped seed and no library workflow wires a second pass this way
    library = [*seeds.values(), *default_library(300)]
    assert all(read_pipeline(w, families, None).reversed_share == 0.0 for w in library)


def test_lcm_lora_wants_the_lcm_sampler(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    lcm = seeds["sd15_lcm_lora"]
    wrong = edited(lcm, "KSampler", sampler_name="dpmpp_2m")
    for judge in judges.values():
        assert np.all(quality(judge, items_for(wrong)) < 0.5 * quality(judge, items_for(lcm)))


def test_prompt_decides_which_design_is_best(
    judges: dict[int, SimJudge], seeds: dict[str, Workflow]
) -> None:
    names = list(seeds)
    for judge in judges.values():
        grid = np.stack([quality(judge, items_for(seeds[name])) for name in names])  # (W, P)
        assert len(set(grid.argmax(axis=0))) >= 3  # no single workflow wins every prompt


# --- the audit ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_audit_properties_hold(seed: int, encoder: PromptEncoder) -> None:
    config = AuditConfig(n_prompts=60, library_size=200, scorer_items=3000)
    result = audit(
        seed,
        config,
        library=default_library(config.library_size),
        judge=SimJudge(seed, encoder=encoder),
    )
    table = "\n".join(" | ".join(row) for row in result.rows())
    assert result.passed, f"world {seed} fails its audit:\n{table}"
    assert result.n_prompts == 60 and result.library_size == 200
