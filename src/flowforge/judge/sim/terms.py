"""The hidden quality of (prompt, pipeline) in one world, as a sum of readable terms.

Utility ``u`` is a sum of three groups of terms, which the scorers weigh differently:

- ``fidelity``: is the image technically sound? base quality of the checkpoint, size versus
  the family's native area and the prompt's preferred aspect, sampler x scheduler, steps,
  CFG versus the checkpoint's sweet spot (shifted by the prompt), distilled regimes (turbo,
  lightning, LCM want 4-8 steps and CFG 1-2.5), and every penalty for an incoherent stack
  (LoRA / VAE / embedding / refiner of the wrong family, overdosed or over-stacked LoRAs).
- ``style``: does it look like what the prompt asks for? checkpoint and LoRA affinities to
  the prompt's traits, sampler flavour, CLIP skip for anime on SD1.5.
- ``detail``: finishing stages whose value depends on the prompt and their settings: hires
  fix (denoise and scale sweet spots), final upscale model, SDXL refiner (switch point),
  FreeU, self-attention guidance, VAE, negative embeddings.

All prompt dependence but two terms is linear in the prompt's traits ``t`` (K,), so each
pipeline is summarised once as a row: constants ``g`` (3,), trait coefficients ``V`` (3, K),
plus log-aspect and CFG residual for the two quadratic terms (aspect and CFG versus the
prompt's preference). `combine` then prices any (prompt, pipeline) pairs, or a whole grid,
with a few numpy operations: this is what makes the judge fast.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from ...workflow.families import LoraInfo
from .pipeline import Pipeline, UnsupportedWorkflowError
from .priors import SECOND_ORDER
from .traits import K, trait_index
from .world import Component, World

GROUPS = ("fidelity", "style", "detail")
FID, STY, DET = 0, 1, 2
#: Row layout: g (3), V (3*K), log aspect, CFG residual, CFG mask.
ROW = 3 + 3 * K + 3
_ASPECT, _CFG, _CFG_MASK = 3 + 3 * K, 4 + 3 * K, 5 + 3 * K
_NATIVE_AREA = {"sd15": 512 * 640, "sdxl": 1024 * 1024}
#: Utility lost per unit of the image a second pass re-draws towards the negative prompt
#: (`Pipeline.reversed_share`): at a hires denoise of 0.5, 3 in fidelity and 1.5 in style,
#: more than any sampler or LoRA setting costs (a reversed pass undoes the image).
REVERSED_FIDELITY, REVERSED_STYLE = 6.0, 3.0
ANIME = trait_index("anime")


def _relu(x: float) -> float:
    return x if x > 0.0 else 0.0


def _bump(x: float, centre: float, width: float) -> float:
    return math.exp(-(((x - centre) / width) ** 2))


class _Row:
    """Accumulates the terms of one pipeline into its row."""

    def __init__(self) -> None:
        self.g = np.zeros(3)
        self.v = np.zeros((3, K))
        self.aspect = 0.0
        self.cfg = 0.0
        self.cfg_mask = 0.0

    def add(self, group: int, component: Component | None = None, scale: float = 1.0) -> None:
        if component is not None:
            self.g[group] += scale * component.base
            self.v[group] += scale * component.affinity

    def penalty(self, amount: float) -> None:
        self.g[FID] -= amount

    def array(self) -> NDArray[np.float64]:
        return np.concatenate([self.g, self.v.ravel(), [self.aspect, self.cfg, self.cfg_mask]])


def _lora_info(world: World, name: str) -> LoraInfo:
    info = world.families.loras.get(name)
    if info is None:
        raise UnsupportedWorkflowError(f"the simulator does not know LoRA {name!r}")
    return info


def _has_lcm(world: World, pipe: Pipeline) -> bool:
    return any(_lora_info(world, lora.name).distilled == "lcm" for lora in pipe.loras)


def regime(world: World, pipe: Pipeline) -> str:
    """ "normal", "turbo", "lightning" or "lcm": what the sampler settings must suit.

    A distilled checkpoint decides; otherwise an LCM LoRA makes the regime "lcm".
    """
    distilled = world.families.checkpoints[pipe.checkpoint].distilled
    if distilled:
        return str(distilled)
    return "lcm" if _has_lcm(world, pipe) else "normal"


def _size(row: _Row, world: World, pipe: Pipeline, family: str) -> None:
    """Area versus the family's native area; aspect kept for the prompt-dependent term."""
    x = math.log(max(pipe.width * pipe.height, 1) / _NATIVE_AREA[family])
    row.penalty(1.5 * _relu(-x - 0.2) ** 2 + 3.0 * _relu(x - 0.25) ** 2)
    if not world.families.is_native(family, pipe.width, pipe.height):
        row.penalty(0.15)  # models are trained on their family's size buckets
    aspect = math.log(max(pipe.height, 1) / max(pipe.width, 1))
    row.aspect = aspect - world.aspect_bias[pipe.checkpoint]


def _sampling(row: _Row, world: World, pipe: Pipeline, kind: str) -> None:
    """Sampler, scheduler, steps and CFG for the regime; the schedule's completeness."""
    key = (pipe.sampler, pipe.scheduler)
    sampler = world.samplers.get(pipe.sampler)
    if sampler is None or key not in world.compat:
        raise UnsupportedWorkflowError(f"the simulator does not know sampler/scheduler {key}")
    row.add(STY, sampler)
    row.add(STY, world.schedulers[pipe.scheduler])
    row.penalty(4.0 * _relu(1.0 - pipe.denoise) + 6.0 * _relu(pipe.unfinished))
    steps, cfg = max(pipe.steps, 1), max(pipe.cfg, 0.05)
    if kind == "normal":
        row.g[FID] += world.compat[key] + world.pair(
            "checkpoint-sampler", pipe.checkpoint, pipe.sampler
        )
        factor = 1.7 if pipe.sampler in SECOND_ORDER else 1.0
        slow = 2.5 * math.exp(-steps * factor / sampler.sweet)
        row.penalty(slow)
        row.v[FID] -= slow * world.step_detail
        row.penalty(1.5 if pipe.sampler == "lcm" else 0.0)
        row.cfg = math.log(cfg) - math.log(world.checkpoints[pipe.checkpoint].sweet)
        row.cfg_mask = 1.0
        return
    row.g[FID] += world.distilled_compat[key]
    if kind == "lcm":
        row.add(STY, world.lcm)
        row.penalty(2.0 if pipe.sampler != "lcm" else 0.0)
        best_steps, best_cfg, max_cfg = world.lcm.sweet, 1.5, 2.0
    else:
        best_steps = world.distilled_steps[kind]
        best_cfg, max_cfg = world.checkpoints[pipe.checkpoint].sweet, 2.5
    row.penalty(0.1 * math.log(steps / best_steps) ** 2 + 0.3 * (min(cfg, max_cfg) - best_cfg) ** 2)
    row.penalty(3.0 * _relu(math.log(steps / 8.0)) ** 2 + (1.0 if steps > 8 else 0.0))
    row.penalty(3.0 * _relu(math.log(4.0 / steps)) ** 2 + (0.5 if steps < 4 else 0.0))
    row.penalty(2.0 * _relu(cfg - max_cfg) + (0.5 if cfg > max_cfg + 0.25 else 0.0))


def _loras(row: _Row, world: World, pipe: Pipeline, family: str) -> None:
    """Family match, strength windows, overdose, style conflict, over-stacking, synergy."""
    checkpoint = world.checkpoints[pipe.checkpoint].affinity
    active: list[tuple[str, float]] = []
    total = 0.0
    for lora in pipe.loras:
        info = _lora_info(world, lora.name)
        if info.family != family:
            row.penalty(1.2 * (abs(lora.strength_model) + 0.5 * abs(lora.strength_clip)) + 0.3)
            continue
        if info.distilled == "lcm":
            row.penalty(1.5 * abs(lora.strength_model - 1.0))
            continue
        params = world.loras[lora.name]
        strength = 0.75 * lora.strength_model + 0.25 * lora.strength_clip
        fit = _bump(strength, params.sweet, 0.2) if strength > 0 else 0.0
        # Prompts that want the LoRA's style a lot want it a little stronger (and vice versa).
        row.g[STY] += params.base * fit
        row.v[STY] += params.affinity * (fit + 0.3 * (strength - params.sweet) * (strength > 0))
        row.penalty(1.2 * _relu(strength - params.sweet - 0.35) ** 2 + 0.5 * _relu(-strength))
        cosine = float(params.affinity @ checkpoint) / (
            float(np.linalg.norm(params.affinity) * np.linalg.norm(checkpoint)) + 1e-9
        )
        row.penalty(0.6 * _relu(-cosine) * fit)
        row.g[FID] += world.pair("checkpoint-lora", pipe.checkpoint, lora.name) * fit
        active.append((lora.name, fit))
        total += _relu(strength)
    row.penalty(0.35 * _relu(len(active) - 2) + 1.0 * _relu(total - 1.5) ** 2)
    for i, (first, fit_a) in enumerate(active):
        for second, fit_b in active[i + 1 :]:
            row.g[FID] += world.pair("lora-lora", first, second) * fit_a * fit_b


def _hires(row: _Row, world: World, pipe: Pipeline, family: str, kind: str) -> None:
    """Hires pass: gain at the sweet spots of denoise and scale, tilted by the prompt."""
    if pipe.hires_kind is None:
        return
    style = world.hires_kind[pipe.hires_kind]
    scale = math.log(max(pipe.hires_scale, 1e-3)) - math.log(world.hires_scale[family])
    gain = _bump(pipe.hires_denoise, style.sweet, 0.1) * _bump(scale, 0.0, 0.35)
    row.add(DET, world.hires, gain)
    row.add(DET, style, gain)
    row.v[DET] += (pipe.hires_denoise - style.sweet) * world.hires_denoise_tilt
    row.v[DET] += scale * world.hires_scale_tilt
    if pipe.hires_model is not None:
        row.add(DET, world.upscalers[pipe.hires_model], 0.5 * gain)
    row.penalty(8.0 * _relu(pipe.hires_denoise - 0.65) ** 2 + 0.5 * _relu(pipe.hires_scale - 2.5))
    if pipe.hires_kind == "latent":
        row.penalty(1.5 * _relu(0.45 - pipe.hires_denoise))
    if kind == "normal":
        row.penalty(0.6 * math.exp(-pipe.hires_steps / 5.0))
    else:
        row.penalty(0.1 * _relu(pipe.hires_steps - 8.0))


def _finish(row: _Row, world: World, pipe: Pipeline, family: str, kind: str) -> None:
    """Final upscale, refiner, FreeU, SAG, CLIP skip, VAE and negative embeddings."""
    if pipe.upscale_model is not None:
        row.add(DET, world.upscalers[pipe.upscale_model])
        row.penalty(0.05 * _relu(math.log2(max(pipe.upscale_factor, 1e-3)) - 1.0))
    if pipe.refiner is not None:
        info = world.families.checkpoints[pipe.refiner]
        if info.role != "refiner":
            row.penalty(0.3 + (2.0 if info.family != family else 0.0))
        elif family != "sdxl" or kind != "normal":
            row.penalty(2.0 if family != "sdxl" else 1.0)
        else:
            row.add(DET, world.refiner, _bump(pipe.refiner_switch, world.refiner.sweet, 0.12))
        row.penalty(3.0 * pipe.refiner_gap)
    if pipe.freeu is not None:
        distance = float(
            np.linalg.norm(np.array(pipe.freeu_params) - world.freeu_sweet[(pipe.freeu, family)])
        )
        row.add(DET, world.freeu[pipe.freeu], math.exp(-((distance / 0.25) ** 2)))
        row.penalty(min(0.6 * distance, 3.0))
    if pipe.sag_scale != 0.0:
        row.add(DET, world.sag, _bump(pipe.sag_scale, world.sag.sweet, 0.3))
        row.penalty(0.1 * abs(pipe.sag_blur - 2.0) + 0.3 * _relu(abs(pipe.sag_scale) - 1.5))
        row.penalty(0.3 if kind != "normal" else 0.0)
    _clip_skip(row, world, pipe, family)
    _vae_and_embeddings(row, world, pipe, family)
    # a second pass guided towards the negative prompt re-draws that share of the image
    # away from the prompt: unsound and off-style (pipeline._reversed)
    row.penalty(REVERSED_FIDELITY * pipe.reversed_share)
    row.g[STY] -= REVERSED_STYLE * pipe.reversed_share


def _clip_skip(row: _Row, world: World, pipe: Pipeline, family: str) -> None:
    """CLIP skip 2 suits SD1.5 anime models (trained with it); SDXL already skips."""
    if pipe.clip_skip == -2 and family == "sd15":
        anime = float(world.checkpoints[pipe.checkpoint].affinity[ANIME])
        row.add(STY, world.clip_skip)
        row.g[STY] += 0.15 * anime
    elif pipe.clip_skip == -2:
        row.penalty(0.08)
    row.penalty(0.15 * _relu(-pipe.clip_skip - 2.0))


def _vae_and_embeddings(row: _Row, world: World, pipe: Pipeline, family: str) -> None:
    if pipe.vae is not None:
        vae_family = world.families.vaes.get(pipe.vae)
        if vae_family is None:
            raise UnsupportedWorkflowError(f"the simulator does not know VAE {pipe.vae!r}")
        if vae_family != family:
            row.penalty(2.5)
        else:
            row.g[DET] += world.vaes[pipe.vae]
    matched = 0
    for name in pipe.negative_embeddings:
        embedding_family = world.families.embeddings.get(name)
        if embedding_family is None:
            continue  # ComfyUI skips an embedding it does not have
        if embedding_family != family:
            row.penalty(0.35)
        elif matched < 2:
            row.add(DET, world.embeddings[name])
            matched += 1
        else:
            row.penalty(0.05)


def pipeline_row(world: World, pipe: Pipeline) -> NDArray[np.float64]:
    """The (ROW,) summary of a pipeline in `world` (see module docstring)."""
    info = world.families.checkpoints[pipe.checkpoint]
    kind = regime(world, pipe)
    row = _Row()
    row.g[FID] += world.checkpoints[pipe.checkpoint].base
    row.v[STY] += world.checkpoints[pipe.checkpoint].affinity
    if info.distilled and _has_lcm(world, pipe):
        row.penalty(1.0)  # mixed distillation: an LCM LoRA on a turbo/lightning model
    _size(row, world, pipe, info.family)
    _sampling(row, world, pipe, kind)
    _loras(row, world, pipe, info.family)
    _hires(row, world, pipe, info.family, kind)
    _finish(row, world, pipe, info.family, kind)
    return row.array()


def group_utilities(
    world: World, rows: NDArray[np.float64], traits: NDArray[np.float64], *, grid: bool
) -> NDArray[np.float64]:
    """Utility per group for pipelines `rows` (W, ROW) and prompts `traits` (P, K).

    `grid`: every prompt with every pipeline, (P, W, 3). Otherwise pairs row i with prompt i,
    (N, 3).
    """
    g = rows[:, :3]  # (W, 3)
    v = rows[:, 3 : 3 + 3 * K].reshape(-1, 3, K)  # (W, 3, K)
    aspect, cfg, mask = rows[:, _ASPECT], rows[:, _CFG], rows[:, _CFG_MASK]
    pref = np.clip((traits * world.aspect).sum(axis=1), -0.6, 0.6)  # (P,)
    shift = np.clip((traits * world.cfg_shift).sum(axis=1), -0.25, 0.25)  # (P,)
    out: NDArray[np.float64]
    if grid:
        out = g[None] + np.einsum("wgk,pk->pwg", v, traits)
        pref, shift = pref[:, None], shift[:, None]
    else:  # elementwise sums: a judgement must not depend on the batch it came in
        out = g + (v * traits[:, None, :]).sum(axis=2)
    out[..., FID] -= world.aspect_weight * (aspect - pref) ** 2
    out[..., FID] -= world.cfg_weight * mask * (cfg - shift) ** 2
    return out


def sigmoid(x: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-x))
    return out


def quality(world: World, utilities: NDArray[np.float64]) -> NDArray[np.float64]:
    """The hidden quality in 0..1 from group utilities (..., 3)."""
    return sigmoid(utilities.sum(axis=-1) + world.config.offset)
