"""The simulator's view of a workflow: which models and settings produce the image.

`read_pipeline` follows the graph from the SaveImage backwards (`workflow.anatomy`, never
node ids) and collects everything the simulated world prices: checkpoint, LoRA stack and
strengths, sampler settings, size, hires pass, final upscale, SDXL refiner and its switch
point, FreeU, CLIP skip, VAE and negative embeddings.

A real ComfyUI would render many graphs the simulator cannot price (ControlNets, img2img,
community nodes). Those get `UnsupportedWorkflowError` naming the node, and the judge returns
an error result for them: a score made up for a graph the world does not model would teach
the learner something false.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ...workflow.anatomy import Anatomy, AnatomyError, embeddings_in, read_anatomy, source
from ...workflow.families import ModelFamilies
from ...workflow.graph import Link, Node, Workflow

MODEL_PATCHES = (
    "LoraLoader",
    "LoraLoaderModelOnly",
    "FreeU",
    "FreeU_V2",
    "SelfAttentionGuidance",
)
CLIP_PATCHES = ("LoraLoader", "CLIPSetLastLayer")
TEXT_ENCODERS: Mapping[str, tuple[str, ...]] = {
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": ("text_g", "text_l"),
}
REFINER_ENCODERS: Mapping[str, tuple[str, ...]] = {
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXLRefiner": ("text",),
}


class UnsupportedWorkflowError(ValueError):
    """A workflow the simulated world does not model; the message names where and why."""


@dataclass(frozen=True)
class Lora:
    """One LoRA as applied: strength on the diffusion model and on the text encoder."""

    name: str
    strength_model: float
    strength_clip: float


@dataclass(frozen=True)
class Pipeline:
    """Everything about a workflow that the simulated world prices (see module docstring)."""

    checkpoint: str
    loras: tuple[Lora, ...]
    sampler: str
    scheduler: str
    steps: int
    cfg: float
    denoise: float  # share of the noise schedule the base pass starts from (1.0 for txt2img)
    unfinished: float  # share of the schedule no sampler runs (0.0 when complete)
    width: int
    height: int
    hires_kind: str | None = None  # "latent" or "model"
    hires_scale: float = 1.0
    hires_denoise: float = 0.0
    hires_steps: int = 0
    hires_model: str | None = None
    upscale_model: str | None = None
    upscale_factor: float = 1.0
    refiner: str | None = None
    refiner_switch: float = 1.0  # share of the steps the base runs before the refiner
    refiner_gap: float = 0.0  # |refiner start share - base end share|: skipped or repeated
    freeu: str | None = None
    freeu_params: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    sag_scale: float = 0.0  # SelfAttentionGuidance scale (0.0: none)
    sag_blur: float = 2.0
    clip_skip: int = -1
    vae: str | None = None
    negative_embeddings: tuple[str, ...] = ()
    #: Share of the image a second pass (hires fix, refiner) denoises while guided by the
    #: base pass's negative conditioning as its positive: towards what the prompt rules out.
    reversed_share: float = 0.0


def _number(node: Node, name: str) -> float:
    value = node.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UnsupportedWorkflowError(
            f"node {node.id} ({node.class_type}) input {name!r} is not a literal number"
        )
    return float(value)


def _text(node: Node, name: str) -> str:
    value = node.get(name)
    if not isinstance(value, str):
        raise UnsupportedWorkflowError(
            f"node {node.id} ({node.class_type}) input {name!r} is not literal text"
        )
    return value


def _prompt_texts(node: Node, encoders: Mapping[str, tuple[str, ...]], role: str) -> list[str]:
    fields = encoders.get(node.class_type)
    if fields is None:
        raise UnsupportedWorkflowError(
            f"the {role} prompt comes from node {node.id} ({node.class_type}); the simulator "
            f"reads prompts only from {', '.join(encoders)}"
        )
    return [_text(node, name) for name in fields]


def _loras(anatomy: Anatomy) -> tuple[Lora, ...]:
    """The LoRA stack, checkpoint side first, with model and CLIP strengths as applied."""
    strengths: dict[str, list[float]] = {}
    names: dict[str, str] = {}
    for node in reversed(anatomy.model_chain):
        if node.class_type not in MODEL_PATCHES:
            raise UnsupportedWorkflowError(
                f"node {node.id} ({node.class_type}) patches the model; the simulator models "
                f"only {', '.join(MODEL_PATCHES)}"
            )
        if node.class_type.startswith("Lora"):
            names[node.id] = _text(node, "lora_name")
            strengths[node.id] = [_number(node, "strength_model"), 0.0]
    for node in reversed(anatomy.clip_chain):
        if node.class_type not in CLIP_PATCHES:
            raise UnsupportedWorkflowError(
                f"node {node.id} ({node.class_type}) patches the CLIP; the simulator models "
                f"only {', '.join(CLIP_PATCHES)}"
            )
        if node.class_type == "LoraLoader":
            names[node.id] = _text(node, "lora_name")
            strengths.setdefault(node.id, [0.0, 0.0])[1] = _number(node, "strength_clip")
    return tuple(Lora(names[i], s[0], s[1]) for i, s in strengths.items())


def _scale_of(node: Node, width: float, height: float) -> float:
    """The linear factor one path node applies to the image (1.0 for non-scaling steps)."""
    if node.class_type in ("LatentUpscaleBy", "ImageScaleBy"):
        return _number(node, "scale_by")
    if node.class_type in ("LatentUpscale", "ImageScale"):
        new_w, new_h = _number(node, "width"), _number(node, "height")
        if new_w > 0:
            return new_w / width
        return new_h / height if new_h > 0 else 1.0
    return 1.0


def _upscale_model(workflow: Workflow, node: Node, families: ModelFamilies) -> tuple[str, float]:
    loader = source(workflow, node, "upscale_model")
    if loader.class_type != "UpscaleModelLoader":
        raise UnsupportedWorkflowError(f"node {node.id} reads its upscale model from {loader.id}")
    name = _text(loader, "model_name")
    if name not in families.upscale_models:
        raise UnsupportedWorkflowError(f"the simulator does not know upscale model {name!r}")
    return name, float(families.upscale_models[name])


def _denoise(sampler: Node) -> float:
    """A second pass's denoise: KSampler's input, or the share of steps KSamplerAdvanced runs."""
    if sampler.class_type == "KSampler":
        return _number(sampler, "denoise")
    steps = max(_number(sampler, "steps"), 1.0)
    return 1.0 - min(_number(sampler, "start_at_step"), steps) / steps


def _stages(workflow: Workflow, anatomy: Anatomy, families: ModelFamilies) -> dict[str, Any]:
    """Hires pass and final upscale: kinds, models, factors, denoise and steps."""
    width, height = _number(anatomy.latent, "width"), _number(anatomy.latent, "height")
    hires_at = anatomy.path.index(anatomy.hires) if anatomy.hires is not None else -1
    final_at = anatomy.path.index(anatomy.final_decode)
    out: dict[str, Any] = {}
    hires_scale, final_scale = 1.0, 1.0
    final_models: list[str] = []
    for position, node in enumerate(anatomy.path):
        factor = _scale_of(node, width * hires_scale, height * hires_scale)
        if node.class_type == "ImageUpscaleWithModel":
            name, factor = _upscale_model(workflow, node, families)
            if position > final_at:
                final_models.append(name)
            else:
                out["hires_model"] = name
        if position > final_at:
            final_scale *= factor
        elif position < hires_at:
            hires_scale *= factor
    if len(final_models) > 1:
        raise UnsupportedWorkflowError("the simulator models at most one final upscale model")
    if anatomy.hires is not None:
        out.update(
            hires_kind=anatomy.hires_kind,
            hires_scale=hires_scale,
            hires_denoise=_denoise(anatomy.hires),
            hires_steps=int(_number(anatomy.hires, "steps")),
        )
    if final_models:
        out.update(upscale_model=final_models[0], upscale_factor=final_scale)
    return out


def _schedule(anatomy: Anatomy) -> dict[str, Any]:
    """Denoise, unfinished share and refiner hand-over of the base (+ refiner) pass."""
    base = anatomy.base
    steps = max(_number(base, "steps"), 1.0)
    if base.class_type == "KSampler":
        return {"denoise": _number(base, "denoise"), "unfinished": 0.0}
    start = min(_number(base, "start_at_step"), steps) / steps
    end = min(_number(base, "end_at_step"), steps) / steps
    noise = base.get("add_noise") == "enable"
    out: dict[str, Any] = {"denoise": (1.0 - start) if noise else 0.0}
    if anatomy.refiner is None:
        out["unfinished"] = 1.0 - end
        return out
    refiner = anatomy.refiner
    r_steps = max(_number(refiner, "steps"), 1.0)
    r_start = min(_number(refiner, "start_at_step"), r_steps) / r_steps
    r_end = min(_number(refiner, "end_at_step"), r_steps) / r_steps
    out.update(unfinished=1.0 - r_end, refiner_switch=end, refiner_gap=abs(r_start - end))
    return out


def _vae(workflow: Workflow, anatomy: Anatomy) -> str | None:
    vae = anatomy.final_decode.get("vae")
    node = workflow.node(vae.node) if isinstance(vae, Link) and vae.node in workflow else None
    if node is None or node.class_type == "CheckpointLoaderSimple":
        return None
    if node.class_type != "VAELoader":
        raise UnsupportedWorkflowError(f"the image is decoded with a VAE from {node.class_type}")
    return _text(node, "vae_name")


def _patch(anatomy: Anatomy, kind: tuple[str, ...]) -> Node | None:
    found = [n for n in (*anatomy.model_chain, *anatomy.clip_chain) if n.class_type in kind]
    if len(found) > 1:
        raise UnsupportedWorkflowError(f"the simulator models at most one {kind[0]} node")
    return found[0] if found else None


def _checkpoints(anatomy: Anatomy, families: ModelFamilies) -> dict[str, Any]:
    fields: dict[str, Any] = {"checkpoint": _text(anatomy.checkpoint, "ckpt_name"), "refiner": None}
    if anatomy.refiner_checkpoint is not None:
        fields["refiner"] = _text(anatomy.refiner_checkpoint, "ckpt_name")
    for name in fields.values():
        if name is not None and name not in families.checkpoints:
            raise UnsupportedWorkflowError(f"the simulator does not know checkpoint {name!r}")
    return fields


def _patches(anatomy: Anatomy) -> dict[str, Any]:
    """FreeU (class and parameters), self-attention guidance and CLIP skip."""
    fields: dict[str, Any] = {}
    freeu = _patch(anatomy, ("FreeU", "FreeU_V2"))
    if freeu is not None:
        fields["freeu"] = freeu.class_type
        fields["freeu_params"] = tuple(_number(freeu, k) for k in ("b1", "b2", "s1", "s2"))
    sag = _patch(anatomy, ("SelfAttentionGuidance",))
    if sag is not None:
        fields["sag_scale"] = _number(sag, "scale")
        fields["sag_blur"] = _number(sag, "blur_sigma")
    skip = _patch(anatomy, ("CLIPSetLastLayer",))
    if skip is not None:
        fields["clip_skip"] = int(_number(skip, "stop_at_clip_layer"))
    return fields


def _cfg(anatomy: Anatomy) -> float:
    """The base pass's CFG, or 1.0 when its negative conditioning is its positive one (the
    same encoder node, or an encoder of the same class and texts).

    Why: classifier-free guidance mixes two predictions, eps_neg + cfg (eps_pos - eps_neg);
    when both come from the same conditioning that is eps_pos whatever the CFG says, i.e.
    CFG 1, which a full (undistilled) checkpoint renders washed out. Before this was read,
    GRPO wired the prompt's encoder into both inputs in over 90% of its designs (no library
    workflow does), and the world scored them as if guided."""
    same = _same_conditioning(anatomy.positive, anatomy.negative)
    return 1.0 if same else _number(anatomy.base, "cfg")


def _same_conditioning(one: Node, other: Node) -> bool:
    """The same encoder node, or text encoders of the same class and texts."""
    return one.id == other.id or (
        one.class_type == other.class_type
        and one.class_type in TEXT_ENCODERS
        and _prompt_texts(one, TEXT_ENCODERS, "positive")
        == _prompt_texts(other, TEXT_ENCODERS, "negative")
    )


def _guided_by_negative(workflow: Workflow, anatomy: Anatomy, sampler: Node) -> bool:
    """Whether `sampler`'s positive conditioning is the base pass's negative one (and not
    also its positive)."""
    if not isinstance(sampler.get("positive"), Link):
        return False
    positive = source(workflow, sampler, "positive")
    return _same_conditioning(positive, anatomy.negative) and not _same_conditioning(
        positive, anatomy.positive
    )


def _reversed(workflow: Workflow, anatomy: Anatomy, schedule: Mapping[str, Any]) -> float:
    """The share of the image second passes denoise with the base pass's negative
    conditioning as their positive one (the same encoder node, or one of the same class and
    texts, that is not also the base's positive): a hires pass's denoise, a refiner's share
    of the steps.

    Why: a second pass guided by "what the image must not be" pulls the image there for as
    much of it as it re-draws. Before this was read, the world priced a hires pass by its
    scale, denoise and steps alone, and GRPO (world 0, session 30) wired the negative encoder
    into a hires pass's positive and the prompt into its negative in 203 of 300 designs (no
    library workflow does), which the world scored like any hires fix."""
    share = 0.0
    if anatomy.hires is not None and _guided_by_negative(workflow, anatomy, anatomy.hires):
        share += _denoise(anatomy.hires)
    if anatomy.refiner is not None and _guided_by_negative(workflow, anatomy, anatomy.refiner):
        share += 1.0 - float(schedule.get("refiner_switch", 1.0))
    return min(share, 1.0)


def _prompts(
    workflow: Workflow, anatomy: Anatomy, prompt: str | tuple[str, ...] | None
) -> dict[str, Any]:
    """Check the prompt is written in (unless `prompt` is None); the negative embeddings."""
    positive = _prompt_texts(anatomy.positive, TEXT_ENCODERS, "positive")
    negative = _prompt_texts(anatomy.negative, TEXT_ENCODERS, "negative")
    marks = (prompt,) if isinstance(prompt, str) else prompt
    if marks is not None and not any(mark in text for mark in marks for text in positive):
        raise UnsupportedWorkflowError(
            f"the positive prompt of node {anatomy.positive.id} does not contain the item's "
            "prompt: write the prompt into the workflow before judging it"
        )
    if anatomy.refiner is not None:
        encoder = source(workflow, anatomy.refiner, "positive")
        _prompt_texts(encoder, REFINER_ENCODERS, "refiner's positive")
    embeddings = tuple(name for text in negative for name in embeddings_in(text))
    return {"negative_embeddings": embeddings}


def read_pipeline(
    workflow: Workflow, families: ModelFamilies, prompt: str | tuple[str, ...] | None
) -> Pipeline:
    """The pipeline of a text-to-image workflow whose positive prompt contains `prompt` (or
    one of several spellings of it; None: a design not yet given a prompt, as in a library).

    Raises `UnsupportedWorkflowError` for anything the world does not model.
    """
    try:
        anatomy = read_anatomy(workflow)
    except AnatomyError as error:
        raise UnsupportedWorkflowError(
            f"not a text-to-image graph the simulator models: {error}"
        ) from None
    base = anatomy.base
    fields: dict[str, Any] = {
        "loras": _loras(anatomy),
        "sampler": _text(base, "sampler_name"),
        "scheduler": _text(base, "scheduler"),
        "steps": int(_number(base, "steps")),
        "cfg": _cfg(anatomy),
        "width": int(_number(anatomy.latent, "width")),
        "height": int(_number(anatomy.latent, "height")),
        "vae": _vae(workflow, anatomy),
    }
    fields.update(_checkpoints(anatomy, families))
    fields.update(_prompts(workflow, anatomy, prompt))
    fields.update(_patches(anatomy))
    fields.update(_schedule(anatomy))
    fields.update(_stages(workflow, anatomy, families))
    fields["reversed_share"] = _reversed(workflow, anatomy, fields)
    return Pipeline(**fields)
