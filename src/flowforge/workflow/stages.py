"""Augmentations of the pipeline's stages: hires fix, final upscale model, SDXL refiner.

Each function is an augmentation (``(workflow, catalog, rng) -> workflow``, see
`augment.py`): pure, random only through `rng`, raising `NotApplicableError` when the stage
is already there (add) or absent (drop). Stages are spliced into the image/latent path that
`anatomy.read_anatomy` finds, and dropped by reconnecting the path around them and pruning
what no output needs any more. The second sampler of a hires pass reuses the base sampler's
model, prompts, seed, sampler and CFG, with the regime's few hires steps and a denoise that
suits the kind of upscale (latent upscales need more).
"""

from __future__ import annotations

import random

from .anatomy import (
    Anatomy,
    NotApplicableError,
    append,
    embeddings_in,
    insert,
    link,
    make_node,
    prune,
    read_anatomy,
    replace_embedding,
    sampler_seed,
    source,
)
from .families import default_families
from .graph import Link, Node, Value, Workflow
from .schema import Catalog
from .settings import (
    HIRES_DENOISE,
    HIRES_TARGETS,
    IMAGE_METHODS,
    LATENT_METHODS,
    LATENT_SCALES,
    checkpoint_info,
    on_grid,
    pick,
    regime_of,
    switch_step,
)

_SHARED = ("model", "cfg", "sampler_name", "scheduler", "positive", "negative")


def _upscale_models(catalog: Catalog) -> list[str]:
    scales = default_families().upscale_models
    return [m for m in catalog.choices("UpscaleModelLoader", "model_name") if m in scales]


# --- hires fix --------------------------------------------------------------------------


def _model_upscale_latent(
    workflow: Workflow, catalog: Catalog, anatomy: Anatomy, start: Link, rng: random.Random
) -> tuple[Workflow, Link]:
    """Decode, upscale with a model, scale down to a 1.5x/2x total, encode again."""
    scales = default_families().upscale_models
    pairs = [
        (model, target)
        for model in _upscale_models(catalog)
        for target in HIRES_TARGETS
        if on_grid(target / scales[model])
    ]
    if not pairs:
        raise NotApplicableError("no upscale model gives a 1.5x or 2x hires pass")
    model, target = rng.choice(pairs)
    vae = link(anatomy.final_decode, "vae")
    workflow, image = append(workflow, catalog, "VAEDecode", {"samples": start, "vae": vae})
    workflow, loader = append(workflow, catalog, "UpscaleModelLoader", {"model_name": model})
    workflow, image = append(
        workflow, catalog, "ImageUpscaleWithModel", {"upscale_model": loader, "image": image}
    )
    scale_by: dict[str, Value] = {
        "image": image,
        "upscale_method": rng.choice(IMAGE_METHODS),
        "scale_by": target / scales[model],
    }
    workflow, image = append(workflow, catalog, "ImageScaleBy", scale_by)
    return append(workflow, catalog, "VAEEncode", {"pixels": image, "vae": vae})


def _add_hires(workflow: Workflow, catalog: Catalog, rng: random.Random, kind: str) -> Workflow:
    families, anatomy = default_families(), read_anatomy(workflow)
    if anatomy.hires is not None:
        raise NotApplicableError(f"there is already a {anatomy.hires_kind} hires pass")
    family = checkpoint_info(anatomy, families).family
    regime = regime_of(anatomy, families)
    start = Link(anatomy.last_sampler.id, 0)
    if kind == "latent":
        inputs: dict[str, Value] = {
            "samples": start,
            "upscale_method": rng.choice(LATENT_METHODS),
            "scale_by": rng.choice(LATENT_SCALES[family]),
        }
        workflow, latent = append(workflow, catalog, "LatentUpscaleBy", inputs)
    else:
        workflow, latent = _model_upscale_latent(workflow, catalog, anatomy, start, rng)
    base = anatomy.base
    sampler: dict[str, Value] = {name: base.get(name) for name in _SHARED}
    sampler.update(
        seed=sampler_seed(base),
        steps=rng.choice(regime.hires_steps),
        latent_image=latent,
        denoise=rng.choice(HIRES_DENOISE[kind]),
    )
    workflow, hires = append(workflow, catalog, "KSampler", sampler)
    return workflow.replace_node(anatomy.final_decode.with_inputs(samples=hires))


def add_hires_latent(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Hires fix in latent space: LatentUpscaleBy, then a second KSampler at denoise ~0.55."""
    return _add_hires(workflow, catalog, rng, "latent")


def add_hires_model(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Hires fix through pixels: decode, upscale model, scale down, encode, second KSampler."""
    return _add_hires(workflow, catalog, rng, "model")


def drop_hires(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    anatomy = read_anatomy(workflow)
    if anatomy.hires is None or anatomy.hires_from is None:
        raise NotApplicableError("there is no hires pass")
    workflow = workflow.rewire(Link(anatomy.hires.id, 0), anatomy.hires_from)
    return prune(workflow, catalog)


def set_hires_denoise(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    anatomy = read_anatomy(workflow)
    if anatomy.hires is None or anatomy.hires_kind is None:
        raise NotApplicableError("there is no hires pass")
    options = HIRES_DENOISE[anatomy.hires_kind]
    denoise = pick(rng, options, anatomy.hires.get("denoise"), "hires denoise")
    return workflow.replace_node(anatomy.hires.with_inputs(denoise=denoise))


# --- final upscale ----------------------------------------------------------------------


def add_upscale(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """An upscale model on the final image (a 4x one sometimes scaled back to 2x)."""
    anatomy = read_anatomy(workflow)
    if anatomy.final_upscale is not None:
        raise NotApplicableError("the final image is already upscaled")
    models = _upscale_models(catalog)
    if not models:
        raise NotApplicableError("no upscale model in the catalog")
    model = rng.choice(models)
    workflow, loader = append(workflow, catalog, "UpscaleModelLoader", {"model_name": model})
    inputs: dict[str, Value] = {"upscale_model": loader, "image": link(anatomy.output, "images")}
    workflow, image = append(workflow, catalog, "ImageUpscaleWithModel", inputs)
    if default_families().upscale_models[model] == 4 and rng.random() < 0.5:
        inputs = {
            "image": image,
            "upscale_method": rng.choice(IMAGE_METHODS),
            "scale_by": 0.5,
        }
        workflow, image = append(workflow, catalog, "ImageScaleBy", inputs)
    return workflow.replace_node(anatomy.output.with_inputs(images=image))


def drop_upscale(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    anatomy = read_anatomy(workflow)
    if anatomy.final_upscale is None:
        raise NotApplicableError("the final image is not upscaled")
    workflow = workflow.replace_node(
        anatomy.output.with_inputs(images=Link(anatomy.final_decode.id, 0))
    )
    return prune(workflow, catalog)


def swap_upscale_model(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Another final upscale model (of the same factor when the image is scaled after it)."""
    anatomy = read_anatomy(workflow)
    if anatomy.final_upscale is None:
        raise NotApplicableError("the final image is not upscaled")
    scales = default_families().upscale_models
    loader = source(workflow, anatomy.final_upscale, "upscale_model")
    current = loader.get("model_name")
    after = anatomy.path[anatomy.path.index(anatomy.final_upscale) + 1 :]
    scaled = any(node.class_type in ("ImageScaleBy", "ImageScale") for node in after)
    options = [
        m for m in _upscale_models(catalog) if not scaled or scales[m] == scales.get(str(current))
    ]
    name = pick(rng, options, current, "upscale model")
    return workflow.replace_node(loader.with_inputs(model_name=name))


# --- SDXL refiner -----------------------------------------------------------------------


def _advanced(catalog: Catalog, sampler: Node, steps: int, end: int) -> Node:
    """The base sampler as a KSamplerAdvanced that stops at `end` and keeps its noise."""
    inputs: dict[str, Value] = {name: sampler.get(name) for name in (*_SHARED, "latent_image")}
    inputs.update(
        add_noise="enable",
        noise_seed=sampler_seed(sampler),
        steps=steps,
        start_at_step=0,
        end_at_step=end,
        return_with_leftover_noise="enable",
    )
    return make_node(catalog, sampler.id, "KSamplerAdvanced", inputs)


def _simple(catalog: Catalog, sampler: Node) -> Node:
    """The base sampler as a plain KSampler running all its steps."""
    inputs: dict[str, Value] = {
        name: sampler.get(name) for name in (*_SHARED, "latent_image", "steps")
    }
    inputs.update(seed=sampler_seed(sampler), denoise=1.0)
    return make_node(catalog, sampler.id, "KSampler", inputs)


def _refiner_prompts(
    workflow: Workflow, catalog: Catalog, anatomy: Anatomy, clip: Link, rng: random.Random
) -> tuple[Workflow, Link, Link]:
    """Positive and negative prompts from the refiner's CLIP (embeddings left out)."""
    positive, negative = anatomy.positive.get("text"), anatomy.negative.get("text")
    if not isinstance(positive, str) or not isinstance(negative, str):
        raise NotApplicableError("the base prompts are not plain text encoders")
    for name in embeddings_in(negative):
        negative = replace_embedding(negative, name, None)
    class_type = rng.choice(("CLIPTextEncodeSDXLRefiner", "CLIPTextEncode"))
    links = []
    for text, ascore in ((positive, 6.0), (negative, 2.5)):
        inputs: dict[str, Value] = {"clip": clip, "text": text}
        if class_type == "CLIPTextEncodeSDXLRefiner":
            size = {k: anatomy.latent.get(k) for k in ("width", "height")}
            inputs.update(ascore=ascore, **size)
        workflow, encoded = append(workflow, catalog, class_type, inputs)
        links.append(encoded)
    return workflow, links[0], links[1]


def add_refiner(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """SDXL refiner for the last 20% of the steps (KSamplerAdvanced base -> refiner)."""
    families, anatomy = default_families(), read_anatomy(workflow)
    if anatomy.refiner is not None:
        raise NotApplicableError("there is already a refiner stage")
    if checkpoint_info(anatomy, families).family != "sdxl":
        raise NotApplicableError("the refiner belongs to SDXL")
    regime = regime_of(anatomy, families)
    if regime.name != "normal":
        raise NotApplicableError(f"a {regime.name} base does not hand over to the refiner")
    refiners = families.refiners("sdxl", catalog.choices("CheckpointLoaderSimple", "ckpt_name"))
    if not refiners:
        raise NotApplicableError("no SDXL refiner checkpoint in the catalog")
    steps = anatomy.base.get("steps")
    if not isinstance(steps, int) or steps not in regime.steps:
        steps = rng.choice(regime.steps)
    base = _advanced(catalog, anatomy.base, steps, switch_step(steps))
    workflow = workflow.replace_node(base)
    workflow, model = append(
        workflow, catalog, "CheckpointLoaderSimple", {"ckpt_name": rng.choice(refiners)}
    )
    clip = Link(model.node, 1)
    workflow, positive, negative = _refiner_prompts(workflow, catalog, anatomy, clip, rng)
    inputs: dict[str, Value] = {name: base.get(name) for name in _SHARED}
    inputs.update(
        model=model,
        positive=positive,
        negative=negative,
        add_noise="disable",
        noise_seed=sampler_seed(base),
        steps=steps,
        latent_image=Link(base.id, 0),
        start_at_step=switch_step(steps),
        end_at_step=10000,
        return_with_leftover_noise="disable",
    )
    workflow, _ = insert(workflow, catalog, "KSamplerAdvanced", inputs, [Link(base.id, 0)])
    return workflow


def drop_refiner(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Remove the refiner stage; the base sampler runs all its steps again."""
    anatomy = read_anatomy(workflow)
    if anatomy.refiner is None:
        raise NotApplicableError("there is no refiner stage")
    workflow = workflow.rewire(Link(anatomy.refiner.id, 0), Link(anatomy.base.id, 0))
    workflow = workflow.replace_node(_simple(catalog, anatomy.base))
    return prune(workflow, catalog)
