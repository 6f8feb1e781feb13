"""One seeded simulated world: the hidden parameters that decide how good a design is.

The world is the structure of `priors.py` (what each model file and setting is known for)
plus, per seed, random base qualities, prompt affinities, sweet spots and interactions. Every
random draw comes from a generator keyed by (world seed, what is drawn, the component's name),
so a component's parameters do not depend on which other components exist or in which order
they are listed, and two seeds give two different worlds.

Nothing outside the simulator may read these parameters (design.md): everything that learns
sees the world only through `SimJudge.score`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ...workflow.families import ModelFamilies, default_families
from ...workflow.schema import Catalog, default_catalog
from . import priors
from .traits import TRAITS

Vector = NDArray[np.float64]


@dataclass(frozen=True)
class WorldConfig:
    """Structural constants: how large each kind of effect is (the same for every seed)."""

    #: Std of the per-seed random part of component affinities (per trait).
    affinity_noise: float = 0.06
    #: Multiplier of the priors' checkpoint / LoRA affinities (how much common wisdom holds).
    prior_scale: float = 0.8
    #: Std of the per-seed random part of checkpoint base qualities.
    base_noise: float = 0.25
    #: Std of the per-seed jitter of sampler x scheduler compatibilities.
    compat_noise: float = 0.25
    #: Std of the per-seed random affinities of samplers and schedulers (per trait).
    setting_noise: float = 0.12
    #: Std of pairwise interactions (LoRA x LoRA, checkpoint x LoRA, checkpoint x sampler).
    synergy_noise: float = 0.25
    #: Weight of the squared log-aspect error and the squared log-CFG error.
    aspect_weight: float = 2.5
    cfg_weight: float = 5.0
    #: Added to the utility before the logistic link q = sigmoid(u + offset).
    offset: float = -2.0


@dataclass(frozen=True)
class Component:
    """A model file or setting: base effect, affinity to prompt traits, and its sweet spot."""

    base: float
    affinity: Vector
    sweet: float = 0.0


def vector(affinity: Mapping[str, float]) -> Vector:
    """A {trait: weight} mapping as a (K,) vector over `TRAITS`."""
    unknown = set(affinity) - set(TRAITS)
    if unknown:
        raise ValueError(f"unknown trait(s) {sorted(unknown)} in a prior")
    return np.array([affinity.get(name, 0.0) for name in TRAITS])


def _label(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:4], "big")


class World:
    """The hidden parameters of world `seed` (see module docstring)."""

    def __init__(
        self,
        seed: int,
        config: WorldConfig | None = None,
        families: ModelFamilies | None = None,
        catalog: Catalog | None = None,
    ) -> None:
        self.seed = seed
        self.config = config or WorldConfig()
        self.families = families or default_families()
        catalog = catalog or default_catalog()
        samplers = catalog.choices("KSampler", "sampler_name")
        schedulers = catalog.choices("KSampler", "scheduler")
        fam = self.families
        self.checkpoints = {name: self._checkpoint(name) for name in fam.checkpoints}
        self.aspect_bias = {
            name: float(self.rng("aspect-bias", name).normal(0.0, 0.1)) for name in fam.checkpoints
        }
        self.loras = {name: self._lora(name) for name in fam.loras}
        self.upscalers = {
            n: self._small("upscaler", n, priors.UPSCALERS) for n in fam.upscale_models
        }
        self.embeddings = {
            n: self._small("embedding", n, priors.EMBEDDINGS) for n in fam.embeddings
        }
        self.vaes = {name: float(self.rng("vae", name).normal(0.03, 0.03)) for name in fam.vaes}
        self.samplers = {name: self._sampler(name) for name in samplers}
        self.schedulers = {
            name: Component(0.0, self.affinity("scheduler", name, priors.SCHEDULERS.get(name, {})))
            for name in schedulers
        }
        self.compat = {(a, b): self._compat("compat", a, b) for a in samplers for b in schedulers}
        self.distilled_compat = {
            (a, b): self._compat("distilled-compat", a, b) for a in samplers for b in schedulers
        }
        self._pairs: dict[tuple[str, str, str], float] = {}
        self._draw_hires()
        self._draw_stages()
        self._draw_prompt_geometry()

    # --- random draws --------------------------------------------------------------------

    def rng(self, *labels: str) -> np.random.Generator:
        """The generator for one draw: keyed by the world seed and the labels, never by order."""
        key = self.seed & (2**64 - 1)
        return np.random.default_rng([key & 0xFFFFFFFF, key >> 32, *map(_label, labels)])

    def affinity(
        self, what: str, name: str, prior: Mapping[str, float], noise: float | None = None
    ) -> Vector:
        """A prior affinity plus per-seed noise per trait (std `noise`, default setting_noise)."""
        std = self.config.setting_noise if noise is None else noise
        return vector(prior) + self.rng("affinity", what, name).normal(0.0, std, len(TRAITS))

    def _small(self, what: str, name: str, table: priors.Table) -> Component:
        """A finishing component (upscaler, embedding): small effects, small jitter."""
        base, prior = table.get(name, (0.0, {}))
        jitter = float(self.rng("base", what, name).normal(0.0, 0.03))
        return Component(base + jitter, self.affinity(what, name, prior, noise=0.04))

    def _styled(self, what: str, name: str, prior: Mapping[str, float]) -> Vector:
        """Affinity of a checkpoint or LoRA: scaled prior plus `affinity_noise`."""
        scaled = {trait: self.config.prior_scale * weight for trait, weight in prior.items()}
        return self.affinity(what, name, scaled, noise=self.config.affinity_noise)

    def _checkpoint(self, name: str) -> Component:
        info = self.families.checkpoints[name]
        base, prior = priors.CHECKPOINTS.get(name, (0.0, {}))
        rng = self.rng("checkpoint", name)
        if info.distilled:
            cfg = float(rng.uniform(1.2, 2.0))
        else:
            cfg = (7.0 if info.family == "sd15" else 6.0) * float(np.exp(rng.normal(0.0, 0.2)))
        quality = base + float(rng.normal(0.0, self.config.base_noise))
        return Component(quality, self._styled("checkpoint", name, prior), cfg)

    def _lora(self, name: str) -> Component:
        base, prior = priors.LORAS.get(name, (0.0, {}))
        rng = self.rng("lora", name)
        quality = base + float(rng.normal(0.0, 0.1))
        return Component(quality, self._styled("lora", name, prior), float(rng.uniform(0.5, 0.9)))

    def _sampler(self, name: str) -> Component:
        rng = self.rng("sampler", name)
        need = priors.STEP_NEEDS.get(name, 7.0) * float(np.exp(rng.normal(0.0, 0.2)))
        stochastic = "ancestral" in name or "sde" in name
        prior = priors.STOCHASTIC_SAMPLER if stochastic else priors.DETERMINISTIC_SAMPLER
        return Component(float(rng.normal(0.0, 0.08)), self.affinity("sampler", name, prior), need)

    def _compat(self, what: str, sampler: str, scheduler: str) -> float:
        if what == "compat":
            prior = priors.sampler_scheduler_prior(sampler, scheduler)
        else:  # distilled models: few-step samplers, and the schedules they were distilled on
            prior = (0.1 if sampler in priors.DISTILLED_SAMPLERS else -0.35) + (
                0.05 if scheduler in ("sgm_uniform", "karras") else -0.05
            )
        jitter = self.rng(what, sampler, scheduler).normal(0.0, self.config.compat_noise)
        return prior + float(jitter)

    def pair(self, kind: str, first: str, second: str) -> float:
        """Per-seed interaction of two components ("lora-lora" is symmetric), memoised."""
        if kind == "lora-lora":
            first, second = sorted((first, second))
        key = (kind, first, second)
        if key not in self._pairs:
            draw = self.rng("pair", *key).normal(0.0, self.config.synergy_noise)
            self._pairs[key] = float(draw)
        return self._pairs[key]

    def _draw_hires(self) -> None:
        """Hires fix: its prompt-dependent gain, per-kind sweet denoise, best scale per family."""
        rng = self.rng("hires")
        strength = float(rng.uniform(0.7, 1.3))  # how much this world cares for hires at all
        noise = self.affinity("hires", "", {}, 0.05)
        self.hires = Component(
            float(rng.normal(0.15, 0.05)), noise + strength * vector(priors.HIRES)
        )
        self.hires_kind = {
            kind: Component(
                float(rng.normal(0.0, 0.05)),
                self.affinity("hires", kind, prior, noise=0.05),
                float(rng.uniform(0.5, 0.62) if kind == "latent" else rng.uniform(0.33, 0.5)),
            )
            for kind, prior in priors.HIRES_KIND.items()
        }
        self.hires_scale = {
            "sd15": float(rng.uniform(1.6, 2.0)),
            "sdxl": float(rng.uniform(1.3, 1.7)),
        }
        self.hires_denoise_tilt = self.affinity("hires-denoise", "", priors.HIRES_DENOISE_TILT, 0.1)
        self.hires_scale_tilt = self.affinity("hires-scale", "", priors.HIRES_SCALE_TILT, 0.05)

    def _draw_stages(self) -> None:
        """Refiner, FreeU, SAG, CLIP skip, LCM and distilled steps: effects and sweet spots."""
        rng = self.rng("stages")
        self.refiner = Component(
            float(rng.normal(0.05, 0.05)),
            self.affinity("refiner", "", priors.REFINER, 0.05),
            float(rng.uniform(0.72, 0.85)),
        )
        self.freeu = {
            kind: Component(
                float(rng.normal(0.03, 0.08)), self.affinity("freeu", kind, priors.FREEU, 0.05)
            )
            for kind in ("FreeU", "FreeU_V2")
        }
        self.freeu_sweet = {
            key: np.array([params[k] for k in ("b1", "b2", "s1", "s2")]) + rng.normal(0.0, 0.05, 4)
            for key, params in _FREEU_PUBLISHED.items()
        }
        self.sag = Component(
            float(rng.normal(0.03, 0.06)), self.affinity("sag", "", priors.SAG, 0.05), 0.5
        )
        self.clip_skip = Component(
            float(rng.normal(0.03, 0.03)), self.affinity("clip-skip", "", priors.CLIP_SKIP, 0.04)
        )
        self.lcm = Component(
            float(rng.normal(-0.35, 0.1)),
            self.affinity("lcm", "", priors.LCM, 0.05),
            float(rng.uniform(4.5, 7.0)),
        )
        self.distilled_steps = {k: float(rng.uniform(4.5, 7.0)) for k in ("turbo", "lightning")}
        self.step_detail = self.affinity("steps", "", priors.STEP_DETAIL, 0.05)

    def _draw_prompt_geometry(self) -> None:
        """How prompts move the best aspect ratio and CFG, and how much that matters."""
        rng = self.rng("geometry")
        self.aspect = self.affinity("aspect", "", priors.ASPECT, noise=0.06)
        self.aspect_weight = self.config.aspect_weight * float(rng.uniform(0.8, 1.2))
        self.cfg_shift = self.affinity("cfg", "", priors.CFG_SHIFT, noise=0.04)
        self.cfg_weight = self.config.cfg_weight * float(rng.uniform(0.8, 1.2))


#: FreeU parameters the FreeU authors publish, per (class, family): the centre of the sweet spot.
_FREEU_PUBLISHED: Mapping[tuple[str, str], Mapping[str, float]] = {
    ("FreeU", "sd15"): {"b1": 1.1, "b2": 1.2, "s1": 0.9, "s2": 0.2},
    ("FreeU", "sdxl"): {"b1": 1.1, "b2": 1.2, "s1": 0.6, "s2": 0.4},
    ("FreeU_V2", "sd15"): {"b1": 1.5, "b2": 1.6, "s1": 0.9, "s2": 0.2},
    ("FreeU_V2", "sdxl"): {"b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2},
}
