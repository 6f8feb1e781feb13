"""Augmentation: new valid workflows derived from a seed workflow and a catalog.

An augmentation is a pure function ``(workflow, catalog, rng) -> workflow``: it never edits
its input (graphs are immutable), draws randomness only from the `random.Random` it is
given, and finds what to change by following links (`anatomy.read_anatomy`), never by node
ids. When it does not apply to a graph (drop a refiner that is not there, add a fourth
LoRA, swap to a second VAE when the family has one) it raises `NotApplicableError` saying
why; it never returns its input unchanged. A graph whose parts cannot be found at all
raises `AnatomyError`.

Every augmentation keeps a valid workflow valid and keeps it coherent (`coherence.py`):
model files stay within the base checkpoint's SD1.5/SDXL family, sizes on the family's
native buckets, distilled models (turbo, lightning, LCM LoRA) on few steps and low CFG, and
every number on the text form's grids. `AUGMENTATIONS` names them all; `augment` applies a
number of randomly chosen applicable ones.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import patches, stages
from .anatomy import AnatomyError, NotApplicableError, read_anatomy
from .families import default_families
from .graph import Workflow
from .schema import Catalog
from .settings import (
    allowed,
    checkpoint_info,
    pick,
    regime_of,
    set_on_samplers,
    set_size,
    set_steps,
)

__all__ = [
    "AUGMENTATIONS",
    "AnatomyError",
    "AugmentResult",
    "Augmentation",
    "NotApplicableError",
    "augment",
    "augment_with_ops",
]

Augmentation = Callable[[Workflow, Catalog, random.Random], Workflow]


def set_sampler(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Another sampler of the regime, on every sampler of the path."""
    anatomy = read_anatomy(workflow)
    options = allowed(catalog, "sampler_name", regime_of(anatomy, default_families()).samplers)
    name = pick(rng, options, anatomy.base.get("sampler_name"), "sampler")
    return set_on_samplers(workflow, anatomy, sampler_name=name)


def set_scheduler(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    anatomy = read_anatomy(workflow)
    options = allowed(catalog, "scheduler", regime_of(anatomy, default_families()).schedulers)
    name = pick(rng, options, anatomy.base.get("scheduler"), "scheduler")
    return set_on_samplers(workflow, anatomy, scheduler=name)


def set_steps_op(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Other base steps from the regime (the refiner switch moves along)."""
    anatomy = read_anatomy(workflow)
    options = regime_of(anatomy, default_families()).steps
    return set_steps(workflow, anatomy, pick(rng, options, anatomy.base.get("steps"), "steps"))


def set_cfg(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    anatomy = read_anatomy(workflow)
    options = regime_of(anatomy, default_families()).cfg
    return set_on_samplers(
        workflow, anatomy, cfg=pick(rng, options, anatomy.base.get("cfg"), "CFG")
    )


def set_resolution(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Another native size (aspect bucket) of the checkpoint's family."""
    families, anatomy = default_families(), read_anatomy(workflow)
    family = checkpoint_info(anatomy, families).family
    current = (anatomy.latent.get("width"), anatomy.latent.get("height"))
    width, height = pick(rng, families.native_resolutions[family], current, "native size")
    return set_size(workflow, anatomy, width, height)


AUGMENTATIONS: dict[str, Augmentation] = {
    "swap_checkpoint": patches.swap_checkpoint,
    "switch_family": patches.switch_family,
    "add_lora": patches.add_lora,
    "remove_lora": patches.remove_lora,
    "swap_lora": patches.swap_lora,
    "set_lora_strength": patches.set_lora_strength,
    "add_lcm": patches.add_lcm,
    "drop_lcm": patches.drop_lcm,
    "set_sampler": set_sampler,
    "set_scheduler": set_scheduler,
    "set_steps": set_steps_op,
    "set_cfg": set_cfg,
    "set_resolution": set_resolution,
    "add_hires_latent": stages.add_hires_latent,
    "add_hires_model": stages.add_hires_model,
    "drop_hires": stages.drop_hires,
    "set_hires_denoise": stages.set_hires_denoise,
    "add_upscale": stages.add_upscale,
    "drop_upscale": stages.drop_upscale,
    "swap_upscale_model": stages.swap_upscale_model,
    "add_refiner": stages.add_refiner,
    "drop_refiner": stages.drop_refiner,
    "add_freeu": patches.add_freeu,
    "drop_freeu": patches.drop_freeu,
    "add_clip_skip": patches.add_clip_skip,
    "drop_clip_skip": patches.drop_clip_skip,
    "add_vae": patches.add_vae,
    "drop_vae": patches.drop_vae,
    "swap_vae": patches.swap_vae,
    "add_embedding": patches.add_embedding,
    "drop_embedding": patches.drop_embedding,
}


@dataclass(frozen=True)
class AugmentResult:
    """An augmented workflow and the names of the augmentations applied, in order."""

    workflow: Workflow
    ops: tuple[str, ...]


def augment_with_ops(
    workflow: Workflow,
    catalog: Catalog,
    rng: random.Random,
    n_ops: int,
    names: Sequence[str] | None = None,
) -> AugmentResult:
    """Apply `n_ops` augmentations, each drawn at random among those that apply.

    `names` restricts the draw to some entries of `AUGMENTATIONS` (default: all). Raises
    `NotApplicableError` if at some step none of them applies.
    """
    pool = sorted(names if names is not None else AUGMENTATIONS)
    applied: list[str] = []
    for _ in range(n_ops):
        for name in rng.sample(pool, len(pool)):
            try:
                workflow = AUGMENTATIONS[name](workflow, catalog, rng)
            except NotApplicableError:
                continue
            applied.append(name)
            break
        else:
            raise NotApplicableError(f"none of {len(pool)} augmentations applies after {applied}")
    return AugmentResult(workflow, tuple(applied))


def augment(workflow: Workflow, catalog: Catalog, rng: random.Random, n_ops: int) -> Workflow:
    """`workflow` after `n_ops` random applicable augmentations (see `augment_with_ops`)."""
    return augment_with_ops(workflow, catalog, rng, n_ops).workflow
