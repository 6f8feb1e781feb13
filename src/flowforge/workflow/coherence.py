"""Coherence of a text-to-image design beyond what node schemas can check.

ComfyUI accepts an SDXL LoRA on an SD1.5 checkpoint (it loads it silently with missing
keys), a 512x512 latent for an SDXL model, or 30 steps at CFG 7 for a 4-step lightning
model: all valid, all poor designs. These checks state the family rules of the primer's
"Model families" section, plus the text form's number grids, as `Problem`s (the validation
report's type), so that library building can assert them for every workflow it emits and
the lead can surface them as warnings.

Kinds: ``not_text_to_image`` (the graph's parts cannot be found), ``unknown_model_file``
(no family knowledge), ``refiner_as_base``, ``family_mismatch`` (LoRA, VAE, embedding or
refiner of another family), ``resolution_not_native``, ``too_many_loras``,
``distilled_settings`` (steps, CFG or sampler outside the distilled regime, or the lcm
sampler without an LCM LoRA), ``mixed_distillation`` (an LCM LoRA on a turbo/lightning
checkpoint, or a distilled base handing over to a refiner), ``off_grid``.
"""

from __future__ import annotations

from .anatomy import Anatomy, AnatomyError, embeddings_in, read_anatomy
from .families import ModelFamilies, default_families
from .graph import Node, Workflow
from .settings import FLOAT_STEP, INT_LIMIT, MAX_LORAS, SEED_INPUTS, on_grid, regime_of
from .validate import Problem


def _problem(kind: str, message: str, node: Node | None = None, name: str | None = None) -> Problem:
    if node is None:
        return Problem(kind, message)
    return Problem(kind, message, node.id, node.class_type, name)


def _file_family(families: ModelFamilies, node: Node) -> tuple[str, str | None] | None:
    """(input name, family) for a node that loads a family-bound model file."""
    if node.class_type in ("LoraLoader", "LoraLoaderModelOnly"):
        info = families.loras.get(str(node.get("lora_name")))
        return "lora_name", info.family if info else None
    if node.class_type == "VAELoader":
        return "vae_name", families.vaes.get(str(node.get("vae_name")))
    return None


def _family_problems(
    workflow: Workflow, anatomy: Anatomy, families: ModelFamilies
) -> list[Problem]:
    name = str(anatomy.checkpoint.get("ckpt_name"))
    info = families.checkpoints.get(name)
    if info is None:
        return [_problem("unknown_model_file", f"no family known for {name}", anatomy.checkpoint)]
    problems = []
    if info.role != "base":
        problems.append(_problem("refiner_as_base", f"{name} is a {info.role}", anatomy.checkpoint))
    for node in workflow:
        found = _file_family(families, node)
        if found is not None and found[1] != info.family:
            message = f"{node.get(found[0])} is {found[1] or 'unknown'}, the base is {info.family}"
            problems.append(_problem("family_mismatch", message, node, found[0]))
        for key, value in node.inputs:
            if not isinstance(value, str):
                continue
            for embedding in embeddings_in(value):
                family = families.embeddings.get(embedding)
                if family != info.family:
                    message = (
                        f"embedding {embedding} is {family or 'unknown'}, the base {info.family}"
                    )
                    problems.append(_problem("family_mismatch", message, node, key))
    if anatomy.refiner_checkpoint is not None:
        refiner = families.checkpoints.get(str(anatomy.refiner_checkpoint.get("ckpt_name")))
        if refiner is None or refiner.family != info.family:
            message = f"the refiner is not a {info.family} model"
            problems.append(_problem("family_mismatch", message, anatomy.refiner_checkpoint))
    width, height = anatomy.latent.get("width"), anatomy.latent.get("height")
    if not (isinstance(width, int) and isinstance(height, int)) or not families.is_native(
        info.family, width, height
    ):
        message = f"{width}x{height} is not a native {info.family} size"
        problems.append(_problem("resolution_not_native", message, anatomy.latent))
    if len(anatomy.loras) > MAX_LORAS:
        problems.append(_problem("too_many_loras", f"{len(anatomy.loras)} LoRAs > {MAX_LORAS}"))
    return problems


def _regime_problems(anatomy: Anatomy, families: ModelFamilies) -> list[Problem]:
    regime = regime_of(anatomy, families)
    info = families.checkpoints.get(str(anatomy.checkpoint.get("ckpt_name")))
    problems = []
    lcm_loras = [
        lora
        for lora in anatomy.loras
        if (found := families.loras.get(str(lora.get("lora_name")))) and found.distilled == "lcm"
    ]
    if lcm_loras and info is not None and info.distilled:
        message = f"an LCM LoRA on a {info.distilled} checkpoint"
        problems.append(_problem("mixed_distillation", message, lcm_loras[0]))
    if regime.name != "normal" and anatomy.refiner is not None:
        message = f"a {regime.name} base hands over to a refiner"
        problems.append(_problem("mixed_distillation", message, anatomy.refiner))
    for sampler in anatomy.samplers:
        steps, cfg, name = sampler.get("steps"), sampler.get("cfg"), sampler.get("sampler_name")
        if regime.max_steps is not None and isinstance(steps, int) and steps > regime.max_steps:
            message = f"{steps} steps for a {regime.name} model (at most {regime.max_steps})"
            problems.append(_problem("distilled_settings", message, sampler, "steps"))
        if regime.max_cfg is not None and isinstance(cfg, float | int) and cfg > regime.max_cfg:
            message = f"CFG {cfg} for a {regime.name} model (at most {regime.max_cfg})"
            problems.append(_problem("distilled_settings", message, sampler, "cfg"))
        if (regime.name == "lcm") != (name == "lcm"):
            message = f"sampler {name} in the {regime.name} regime"
            problems.append(_problem("distilled_settings", message, sampler, "sampler_name"))
    return problems


def _grid_problems(workflow: Workflow) -> list[Problem]:
    problems = []
    for node in workflow:
        for name, value in node.inputs:
            if isinstance(value, bool) or name in SEED_INPUTS:
                continue
            if isinstance(value, float) and not on_grid(value):
                message = f"{value!r} is not a multiple of {FLOAT_STEP}"
                problems.append(_problem("off_grid", message, node, name))
            elif isinstance(value, int) and abs(value) > INT_LIMIT:
                message = f"{value} is beyond +-{INT_LIMIT}"
                problems.append(_problem("off_grid", message, node, name))
    return problems


def coherence_problems(
    workflow: Workflow, families: ModelFamilies | None = None
) -> tuple[Problem, ...]:
    """Every family, regime and grid problem of a text-to-image workflow."""
    families = families or default_families()
    try:
        anatomy = read_anatomy(workflow)
    except AnatomyError as error:
        return (_problem("not_text_to_image", str(error)),)
    problems = _family_problems(workflow, anatomy, families)
    problems += _regime_problems(anatomy, families)
    problems += _grid_problems(workflow)
    return tuple(problems)
