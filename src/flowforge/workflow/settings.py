"""Sensible sampler settings per sampling regime, and the value grids augmentation keeps.

A regime is what the checkpoint and LoRA stack demand of the samplers: ordinary models
("normal") want 20-40 steps at CFG 4.5-8; turbo and lightning checkpoints, and any model
with an LCM LoRA, are distilled for 4-8 steps at CFG 1-2.5 (LCM also wants the ``lcm``
sampler). Augmentation draws values only from these tables, so every value it writes is
sensible for the graph and lies on the text form's grids (floats multiples of 0.05 written
as floats, ints within +-65536 except seeds).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from .anatomy import Anatomy, NotApplicableError, read_anatomy
from .families import CheckpointInfo, ModelFamilies, default_families
from .graph import Workflow
from .schema import Catalog

T = TypeVar("T")

FLOAT_STEP = 0.05
INT_LIMIT = 65_536
SEED_INPUTS = ("seed", "noise_seed")
MAX_LORAS = 3
MAX_EMBEDDINGS = 2
REFINER_SHARE = 0.8  # the base sampler runs the first 80% of the steps, the refiner the rest


@dataclass(frozen=True)
class Regime:
    """The sampler settings a sampling regime allows; `max_*` bound distilled regimes."""

    name: str
    steps: tuple[int, ...]
    cfg: tuple[float, ...]
    samplers: tuple[str, ...]
    schedulers: tuple[str, ...]
    hires_steps: tuple[int, ...]
    max_steps: int | None = None
    max_cfg: float | None = None


def _distilled(name: str) -> Regime:
    """Turbo and lightning checkpoints: few steps, low CFG, SDE/Euler samplers."""
    return Regime(
        name=name,
        steps=(4, 5, 6, 8),
        cfg=(1.0, 1.5, 2.0, 2.5),
        samplers=("dpmpp_sde", "dpmpp_sde_gpu", "euler", "euler_ancestral", "dpmpp_2m_sde"),
        schedulers=("karras", "sgm_uniform", "simple"),
        hires_steps=(4, 5, 6),
        max_steps=8,
        max_cfg=2.5,
    )


REGIMES: dict[str, Regime] = {
    "normal": Regime(
        name="normal",
        steps=(20, 25, 30, 35, 40),
        cfg=(4.5, 5.0, 5.5, 6.0, 6.5, 7.0, 7.5, 8.0),
        samplers=(
            "euler",
            "euler_ancestral",
            "heun",
            "dpm_2",
            "dpmpp_2s_ancestral",
            "dpmpp_sde",
            "dpmpp_2m",
            "dpmpp_2m_sde",
            "dpmpp_3m_sde",
            "ddim",
            "uni_pc",
        ),
        schedulers=("normal", "karras", "exponential", "sgm_uniform", "simple"),
        hires_steps=(10, 12, 15, 20),
    ),
    "turbo": _distilled("turbo"),
    "lightning": _distilled("lightning"),
    "lcm": Regime(
        name="lcm",
        steps=(4, 5, 6, 8),
        cfg=(1.0, 1.5, 2.0),
        samplers=("lcm",),
        schedulers=("sgm_uniform", "simple", "normal"),
        hires_steps=(4, 5, 6),
        max_steps=8,
        max_cfg=2.0,
    ),
}

LORA_STRENGTHS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
LATENT_SCALES = {"sd15": (1.5, 1.75, 2.0), "sdxl": (1.25, 1.5)}
HIRES_TARGETS = (1.5, 2.0)  # overall factor of a model-upscale hires pass
HIRES_DENOISE = {"latent": (0.5, 0.55, 0.6), "model": (0.3, 0.35, 0.4, 0.45, 0.5)}
LATENT_METHODS = ("nearest-exact", "bilinear", "bicubic", "bislerp")
IMAGE_METHODS = ("lanczos", "bicubic", "bilinear", "area")
#: FreeU parameters per (class, family): the values the FreeU authors publish.
FREEU_PARAMS: dict[tuple[str, str], dict[str, float]] = {
    ("FreeU", "sd15"): {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2},
    ("FreeU", "sdxl"): {"b1": 1.1, "b2": 1.2, "s1": 0.6, "s2": 0.4},
    ("FreeU_V2", "sd15"): {"b1": 1.5, "b2": 1.6, "s1": 0.9, "s2": 0.2},
    ("FreeU_V2", "sdxl"): {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2},
}
FREEU_CLASSES = ("FreeU", "FreeU_V2")


def on_grid(value: float) -> bool:
    """Whether a float is a multiple of 0.05 (the text form's float grid)."""
    return abs(value * 20 - round(value * 20)) < 1e-9


def pick(rng: random.Random, options: Sequence[T], current: object, what: str) -> T:
    """A random option different from `current`; NotApplicableError if there is none."""
    candidates = [option for option in options if option != current]
    if not candidates:
        raise NotApplicableError(f"no other {what} to choose than {current!r}")
    return rng.choice(candidates)


def allowed(catalog: Catalog, name: str, options: Sequence[str]) -> tuple[str, ...]:
    """The options that the catalog's KSampler accepts for input `name`."""
    accepted = catalog.choices("KSampler", name)
    return tuple(option for option in options if option in accepted)


def regime_of(anatomy: Anatomy, families: ModelFamilies) -> Regime:
    """The sampling regime the base checkpoint and LoRA stack demand."""
    name = anatomy.checkpoint.get("ckpt_name")
    info = families.checkpoints.get(name) if isinstance(name, str) else None
    if info is not None and info.distilled in ("turbo", "lightning"):
        return REGIMES[info.distilled]
    for lora in anatomy.loras:
        lora_name = lora.get("lora_name")
        lora_info = families.loras.get(lora_name) if isinstance(lora_name, str) else None
        if lora_info is not None and lora_info.distilled == "lcm":
            return REGIMES["lcm"]
    return REGIMES["normal"]


def switch_step(steps: int) -> int:
    """The step at which the refiner takes over from the base sampler."""
    return round(steps * REFINER_SHARE)


def set_steps(workflow: Workflow, anatomy: Anatomy, steps: int) -> Workflow:
    """Set the base sampler's steps (and the refiner's, with the switch step)."""
    base = anatomy.base.with_inputs(steps=steps)
    if anatomy.refiner is not None:
        switch = switch_step(steps)
        base = base.with_inputs(end_at_step=switch)
        refiner = anatomy.refiner.with_inputs(steps=steps, start_at_step=switch)
        workflow = workflow.replace_node(refiner)
    return workflow.replace_node(base)


def set_on_samplers(workflow: Workflow, anatomy: Anatomy, **values: str | float) -> Workflow:
    """Set the same inputs (cfg, sampler_name, scheduler) on every sampler of the path."""
    for sampler in anatomy.samplers:
        workflow = workflow.replace_node(workflow.node(sampler.id).with_inputs(**values))
    return workflow


def apply_regime(
    workflow: Workflow, anatomy: Anatomy, regime: Regime, catalog: Catalog, rng: random.Random
) -> Workflow:
    """Draw fresh steps, CFG, sampler and scheduler for every sampler from a regime."""
    workflow = set_steps(workflow, anatomy, rng.choice(regime.steps))
    workflow = set_on_samplers(
        workflow,
        anatomy,
        cfg=rng.choice(regime.cfg),
        sampler_name=rng.choice(allowed(catalog, "sampler_name", regime.samplers)),
        scheduler=rng.choice(allowed(catalog, "scheduler", regime.schedulers)),
    )
    if anatomy.hires is not None:
        hires = workflow.node(anatomy.hires.id)
        workflow = workflow.replace_node(hires.with_inputs(steps=rng.choice(regime.hires_steps)))
    return workflow


def set_size(workflow: Workflow, anatomy: Anatomy, width: int, height: int) -> Workflow:
    """Set the image size on the empty latent and on every size-conditioned prompt encoder."""
    workflow = workflow.replace_node(anatomy.latent.with_inputs(width=width, height=height))
    for node in workflow:
        changes: dict[str, int] = {}
        if node.class_type == "CLIPTextEncodeSDXLRefiner":
            changes = {"width": width, "height": height}
        elif node.class_type == "CLIPTextEncodeSDXL":
            changes = {
                "width": width,
                "height": height,
                "target_width": width,
                "target_height": height,
            }
        if changes:
            workflow = workflow.replace_node(node.with_inputs(**changes))
    return workflow


def checkpoint_info(anatomy: Anatomy, families: ModelFamilies) -> CheckpointInfo:
    """Family knowledge about the base checkpoint (NotApplicableError if it has none)."""
    name = anatomy.checkpoint.get("ckpt_name")
    info = families.checkpoints.get(name) if isinstance(name, str) else None
    if info is None:
        raise NotApplicableError(f"checkpoint {name!r} has no known model family")
    return info


def refit(workflow: Workflow, before: Regime, catalog: Catalog, rng: random.Random) -> Workflow:
    """Redraw sampler settings if a model change moved the graph into another regime."""
    anatomy = read_anatomy(workflow)
    after = regime_of(anatomy, default_families())
    if after.name == before.name:
        return workflow
    return apply_regime(workflow, anatomy, after, catalog, rng)
