"""Augmentations of the model side: checkpoint, family, LoRAs, LCM, FreeU, CLIP skip, VAE,
negative embeddings.

Each function is an augmentation (``(workflow, catalog, rng) -> workflow``, see
`augment.py`): pure, random only through `rng`, and raising `NotApplicableError` (with the
reason) when the graph offers nothing to change. Model files are drawn from the catalog's
choices that the family knowledge (`families.py`) covers, always of the base checkpoint's
family; a change of distillation (e.g. to a turbo checkpoint, or adding an LCM LoRA) redraws
the sampler settings from the new regime (`settings.py`).
"""

from __future__ import annotations

import math
import random

from .anatomy import (
    Anatomy,
    NotApplicableError,
    bypass,
    embeddings_in,
    insert,
    link,
    read_anatomy,
    replace_embedding,
    source,
)
from .families import ModelFamilies, default_families
from .graph import Link, Node, Value, Workflow
from .schema import Catalog
from .settings import (
    FREEU_CLASSES,
    FREEU_PARAMS,
    LATENT_SCALES,
    LORA_STRENGTHS,
    MAX_EMBEDDINGS,
    MAX_LORAS,
    REGIMES,
    apply_regime,
    checkpoint_info,
    pick,
    refit,
    regime_of,
    set_size,
)

_LORA_PASSES = {0: "model", 1: "clip"}
_TEXT_INPUTS = ("text", "text_g", "text_l")


def _is_lcm(families: ModelFamilies, lora: Node) -> bool:
    info = families.loras.get(str(lora.get("lora_name")))
    return info is not None and info.distilled == "lcm"


def _choices(catalog: Catalog, class_type: str, name: str) -> tuple[str, ...]:
    return catalog.choices(class_type, name)


# --- checkpoint and family ------------------------------------------------------------


def swap_checkpoint(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Another base checkpoint of the same family (a refiner is never a base)."""
    families, anatomy = default_families(), read_anatomy(workflow)
    info, before = checkpoint_info(anatomy, families), regime_of(anatomy, families)
    keep_normal = anatomy.refiner is not None or before.name == "lcm"
    options = [
        name
        for name in families.base_checkpoints(
            info.family, _choices(catalog, "CheckpointLoaderSimple", "ckpt_name")
        )
        if not (keep_normal and families.checkpoints[name].distilled)
    ]
    name = pick(rng, options, anatomy.checkpoint.get("ckpt_name"), "base checkpoint")
    workflow = workflow.replace_node(anatomy.checkpoint.with_inputs(ckpt_name=name))
    return refit(workflow, before, catalog, rng)


def switch_family(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """A checkpoint of the other family, with everything family-bound moved along.

    LoRAs, VAEs and embeddings are swapped for unused ones of the new family, or dropped
    when there are none left; the size moves to the new family's bucket of nearest aspect;
    latent hires scales and FreeU parameters follow; a distillation change redraws settings.
    """
    families, anatomy = default_families(), read_anatomy(workflow)
    if anatomy.refiner is not None:
        raise NotApplicableError("an SDXL refiner stage has no SD1.5 counterpart")
    info, before = checkpoint_info(anatomy, families), regime_of(anatomy, families)
    family = "sd15" if info.family == "sdxl" else "sdxl"
    options = [
        name
        for name in families.base_checkpoints(
            family, _choices(catalog, "CheckpointLoaderSimple", "ckpt_name")
        )
        if not (before.name == "lcm" and families.checkpoints[name].distilled)
    ]
    if not options:
        raise NotApplicableError(f"no {family} base checkpoint in the catalog")
    lora_choices = _choices(catalog, "LoraLoader", "lora_name")
    if before.name == "lcm" and not families.loras_of(family, lora_choices, lcm=True):
        raise NotApplicableError(f"no {family} LCM LoRA to replace the current one")
    workflow = workflow.replace_node(anatomy.checkpoint.with_inputs(ckpt_name=rng.choice(options)))
    workflow = _move_loras(workflow, anatomy, family, lora_choices, rng)
    workflow = _move_vaes(workflow, anatomy, family, catalog, rng)
    workflow = _move_embeddings(workflow, family, catalog, rng)
    workflow = _move_size_and_patches(workflow, family, rng)
    return refit(workflow, before, catalog, rng)


def _move_loras(
    workflow: Workflow,
    anatomy: Anatomy,
    family: str,
    choices: tuple[str, ...],
    rng: random.Random,
) -> Workflow:
    families = default_families()
    used: list[str] = []
    for lora in anatomy.loras:
        lcm = _is_lcm(families, lora)
        options = [n for n in families.loras_of(family, choices, lcm=lcm) if n not in used]
        if options:
            used.append(rng.choice(options))
            workflow = workflow.replace_node(lora.with_inputs(lora_name=used[-1]))
        else:
            workflow = bypass(workflow, lora, _LORA_PASSES)
    return workflow


def _move_vaes(
    workflow: Workflow, anatomy: Anatomy, family: str, catalog: Catalog, rng: random.Random
) -> Workflow:
    options = default_families().vaes_of(family, _choices(catalog, "VAELoader", "vae_name"))
    for node in workflow.by_class("VAELoader"):
        if options:
            workflow = workflow.replace_node(node.with_inputs(vae_name=rng.choice(options)))
        else:
            workflow = workflow.rewire(Link(node.id, 0), Link(anatomy.checkpoint.id, 2))
            workflow = workflow.remove_nodes([node.id])
    return workflow


def _move_embeddings(
    workflow: Workflow, family: str, catalog: Catalog, rng: random.Random
) -> Workflow:
    installed = catalog.embeddings or ()
    pool = [name for name in default_families().embeddings_of(family) if name in installed]
    for node in workflow:
        changes: dict[str, str] = {}
        for name in _TEXT_INPUTS:
            text = node.get(name)
            if not isinstance(text, str):
                continue
            for old in embeddings_in(text):
                free = [e for e in pool if e not in embeddings_in(text)]
                text = replace_embedding(text, old, rng.choice(free) if free else None)
            if text != node.get(name):
                changes[name] = text
        if changes:
            workflow = workflow.replace_node(node.with_inputs(**changes))
    return workflow


def _move_size_and_patches(workflow: Workflow, family: str, rng: random.Random) -> Workflow:
    families, anatomy = default_families(), read_anatomy(workflow)
    width, height = anatomy.latent.get("width"), anatomy.latent.get("height")
    aspect = width / height if isinstance(width, int) and isinstance(height, int) else 1.0
    size = min(
        families.native_resolutions[family],
        key=lambda wh: abs(math.log(wh[0] / wh[1]) - math.log(aspect)),
    )
    workflow = set_size(workflow, anatomy, *size)
    for node in workflow:
        if (
            node.class_type == "LatentUpscaleBy"
            and node.get("scale_by") not in LATENT_SCALES[family]
        ):
            scale = rng.choice(LATENT_SCALES[family])
            workflow = workflow.replace_node(node.with_inputs(scale_by=scale))
        elif node.class_type in FREEU_CLASSES:
            params = FREEU_PARAMS[(node.class_type, family)]
            workflow = workflow.replace_node(node.with_inputs(**params))
    return workflow


# --- LoRAs ----------------------------------------------------------------------------


def insert_lora(
    workflow: Workflow, catalog: Catalog, anatomy: Anatomy, name: str, strength: float
) -> Workflow:
    """Put a LoRA at the sampler end of the stack (after the checkpoint if there is none)."""
    tail = anatomy.loras[0] if anatomy.loras else anatomy.checkpoint
    outputs = [Link(tail.id, 0), Link(tail.id, 1)]
    inputs: dict[str, Value] = {
        "model": outputs[0],
        "clip": outputs[1],
        "lora_name": name,
        "strength_model": strength,
        "strength_clip": strength,
    }
    workflow, _ = insert(workflow, catalog, "LoraLoader", inputs, outputs)
    return workflow


def _stack_room(anatomy: Anatomy) -> None:
    if len(anatomy.loras) >= MAX_LORAS:
        raise NotApplicableError(f"the LoRA stack is full ({MAX_LORAS})")


def _plain_loras(anatomy: Anatomy) -> list[Node]:
    families = default_families()
    loras = [lora for lora in anatomy.loras if not _is_lcm(families, lora)]
    if not loras:
        raise NotApplicableError("no (non-LCM) LoRA in the stack")
    return loras


def _free_loras(anatomy: Anatomy, catalog: Catalog) -> list[str]:
    families = default_families()
    family = checkpoint_info(anatomy, families).family
    used = {str(lora.get("lora_name")) for lora in anatomy.loras}
    choices = _choices(catalog, "LoraLoader", "lora_name")
    return [name for name in families.loras_of(family, choices) if name not in used]


def add_lora(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """One more family-compatible LoRA (stack of at most three)."""
    anatomy = read_anatomy(workflow)
    _stack_room(anatomy)
    options = _free_loras(anatomy, catalog)
    if not options:
        raise NotApplicableError("every LoRA of the family is already in the stack")
    return insert_lora(workflow, catalog, anatomy, rng.choice(options), rng.choice(LORA_STRENGTHS))


def remove_lora(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Drop one (non-LCM) LoRA from the stack."""
    lora = rng.choice(_plain_loras(read_anatomy(workflow)))
    return bypass(workflow, lora, _LORA_PASSES)


def swap_lora(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Replace one (non-LCM) LoRA by an unused one of the family."""
    anatomy = read_anatomy(workflow)
    lora = rng.choice(_plain_loras(anatomy))
    name = pick(rng, _free_loras(anatomy, catalog), None, "LoRA of the family")
    return workflow.replace_node(lora.with_inputs(lora_name=name))


def set_lora_strength(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """New strengths for one (non-LCM) LoRA; the CLIP strength usually follows the model's."""
    lora = rng.choice(_plain_loras(read_anatomy(workflow)))
    strength = pick(rng, LORA_STRENGTHS, lora.get("strength_model"), "LoRA strength")
    clip = strength if rng.random() < 0.7 else rng.choice(LORA_STRENGTHS)
    return workflow.replace_node(lora.with_inputs(strength_model=strength, strength_clip=clip))


def add_lcm(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """An LCM LoRA with the lcm sampler, 4-8 steps and CFG 1-2."""
    families, anatomy = default_families(), read_anatomy(workflow)
    info = checkpoint_info(anatomy, families)
    if info.distilled or regime_of(anatomy, families).name != "normal":
        raise NotApplicableError("the model is already distilled for few steps")
    if anatomy.refiner is not None:
        raise NotApplicableError("an LCM base does not hand over to the refiner")
    _stack_room(anatomy)
    options = families.loras_of(info.family, _choices(catalog, "LoraLoader", "lora_name"), lcm=True)
    if not options:
        raise NotApplicableError(f"no {info.family} LCM LoRA in the catalog")
    workflow = insert_lora(workflow, catalog, anatomy, rng.choice(options), 1.0)
    return apply_regime(workflow, read_anatomy(workflow), REGIMES["lcm"], catalog, rng)


def drop_lcm(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Remove the LCM LoRA and go back to ordinary sampler settings."""
    families, anatomy = default_families(), read_anatomy(workflow)
    lcm = [lora for lora in anatomy.loras if _is_lcm(families, lora)]
    if not lcm:
        raise NotApplicableError("no LCM LoRA in the stack")
    before = regime_of(anatomy, families)
    for lora in lcm:
        workflow = bypass(workflow, lora, _LORA_PASSES)
    return refit(workflow, before, catalog, rng)


# --- FreeU, CLIP skip, VAE -------------------------------------------------------------


def add_freeu(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """FreeU or FreeU_V2 right before the samplers, with the family's published values."""
    families, anatomy = default_families(), read_anatomy(workflow)
    if any(node.class_type in FREEU_CLASSES for node in anatomy.model_chain):
        raise NotApplicableError("the model already goes through FreeU")
    family = checkpoint_info(anatomy, families).family
    class_type = rng.choice(FREEU_CLASSES)
    target = link(anatomy.base, "model")
    inputs: dict[str, Value] = {"model": target, **FREEU_PARAMS[(class_type, family)]}
    workflow, _ = insert(workflow, catalog, class_type, inputs, [target])
    return workflow


def drop_freeu(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    nodes = [n for n in read_anatomy(workflow).model_chain if n.class_type in FREEU_CLASSES]
    if not nodes:
        raise NotApplicableError("no FreeU on the model")
    return bypass(workflow, rng.choice(nodes), {0: "model"})


def add_clip_skip(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """CLIPSetLastLayer -2 before the prompt encoders (as anime models expect)."""
    anatomy = read_anatomy(workflow)
    if any(node.class_type == "CLIPSetLastLayer" for node in anatomy.clip_chain):
        raise NotApplicableError("the CLIP already skips layers")
    target = link(anatomy.positive, "clip")
    inputs: dict[str, Value] = {"clip": target, "stop_at_clip_layer": -2}
    workflow, _ = insert(workflow, catalog, "CLIPSetLastLayer", inputs, [target])
    return workflow


def drop_clip_skip(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    nodes = [n for n in read_anatomy(workflow).clip_chain if n.class_type == "CLIPSetLastLayer"]
    if not nodes:
        raise NotApplicableError("no CLIPSetLastLayer on the CLIP")
    return bypass(workflow, rng.choice(nodes), {0: "clip"})


def _vae_loader(workflow: Workflow, anatomy: Anatomy) -> Node | None:
    node = source(workflow, anatomy.final_decode, "vae")
    return node if node.class_type == "VAELoader" else None


def _family_vaes(anatomy: Anatomy, catalog: Catalog) -> tuple[str, ...]:
    families = default_families()
    family = checkpoint_info(anatomy, families).family
    return families.vaes_of(family, _choices(catalog, "VAELoader", "vae_name"))


def add_vae(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """A separate VAELoader of the family instead of the checkpoint's own VAE."""
    anatomy = read_anatomy(workflow)
    if _vae_loader(workflow, anatomy) is not None:
        raise NotApplicableError("the image is already decoded with a separate VAE")
    if not any(found.slot == 2 for _, _, found in workflow.consumers(anatomy.checkpoint.id)):
        raise NotApplicableError("nothing reads the checkpoint's VAE")
    name = pick(rng, _family_vaes(anatomy, catalog), None, "VAE of the family")
    target = Link(anatomy.checkpoint.id, 2)
    workflow, _ = insert(workflow, catalog, "VAELoader", {"vae_name": name}, [target])
    return workflow


def drop_vae(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    anatomy = read_anatomy(workflow)
    loader = _vae_loader(workflow, anatomy)
    if loader is None:
        raise NotApplicableError("no separate VAELoader")
    workflow = workflow.rewire(Link(loader.id, 0), Link(anatomy.checkpoint.id, 2))
    return workflow.remove_nodes([loader.id])


def swap_vae(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    anatomy = read_anatomy(workflow)
    loader = _vae_loader(workflow, anatomy)
    if loader is None:
        raise NotApplicableError("no separate VAELoader")
    name = pick(rng, _family_vaes(anatomy, catalog), loader.get("vae_name"), "VAE")
    return workflow.replace_node(loader.with_inputs(vae_name=name))


# --- negative embeddings ---------------------------------------------------------------


def _negative_text(anatomy: Anatomy) -> str:
    text = anatomy.negative.get("text")
    if not isinstance(text, str):
        raise NotApplicableError(f"the negative prompt ({anatomy.negative.class_type}) has no text")
    return text


def add_embedding(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    """Append ``, embedding:NAME`` (a negative embedding of the family) to the negative."""
    families, anatomy = default_families(), read_anatomy(workflow)
    text = _negative_text(anatomy)
    present = embeddings_in(text)
    if len(present) >= MAX_EMBEDDINGS:
        raise NotApplicableError(f"the negative already has {len(present)} embeddings")
    installed = catalog.embeddings or ()
    family = checkpoint_info(anatomy, families).family
    options = [e for e in families.embeddings_of(family) if e in installed and e not in present]
    name = pick(rng, options, None, "negative embedding of the family")
    text = f"{text}, embedding:{name}" if text.strip() else f"embedding:{name}"
    return workflow.replace_node(anatomy.negative.with_inputs(text=text))


def drop_embedding(workflow: Workflow, catalog: Catalog, rng: random.Random) -> Workflow:
    anatomy = read_anatomy(workflow)
    text = _negative_text(anatomy)
    present = embeddings_in(text)
    if not present:
        raise NotApplicableError("the negative prompt uses no embedding")
    text = replace_embedding(text, rng.choice(present), None)
    return workflow.replace_node(anatomy.negative.with_inputs(text=text))
