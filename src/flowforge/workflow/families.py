"""What the schema cannot say about model files: family, role, distillation, scale.

ComfyUI's ``/object_info`` lists installed model files as plain enum choices; whether a file
is an SD1.5 or an SDXL model, a base or a refiner, distilled for few steps (turbo,
lightning, LCM) or an upscaler of factor 2 or 4 is knowledge flowforge ships alongside the
default catalog (``resources/comfyui/model_families.json`` and ``embeddings.json``). The
augmentations and the coherence checks read it through `ModelFamilies`, so that, e.g., an
SDXL LoRA is never put on an SD1.5 checkpoint (ComfyUI would load it silently).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

#: The model families flowforge knows.
FAMILIES = ("sd15", "sdxl")


class FamiliesError(ValueError):
    """A model-family file that cannot be read."""


@dataclass(frozen=True)
class CheckpointInfo:
    """One checkpoint: its family, its role (base or refiner) and its distillation if any."""

    family: str
    role: str = "base"
    distilled: str | None = None


@dataclass(frozen=True)
class LoraInfo:
    """One LoRA: the family it was trained for, and "lcm" for an LCM-distillation LoRA."""

    family: str
    distilled: str | None = None


@dataclass(frozen=True)
class ModelFamilies:
    """Family knowledge about model files, embeddings and native resolutions."""

    checkpoints: Mapping[str, CheckpointInfo]
    loras: Mapping[str, LoraInfo]
    vaes: Mapping[str, str]
    upscale_models: Mapping[str, int]
    embeddings: Mapping[str, str]
    native_resolutions: Mapping[str, tuple[tuple[int, int], ...]]

    def checkpoint_family(self, name: str) -> str | None:
        info = self.checkpoints.get(name)
        return info.family if info else None

    def base_checkpoints(self, family: str, available: tuple[str, ...]) -> tuple[str, ...]:
        """The base (non-refiner) checkpoints of `family` among `available`, in their order."""
        return tuple(
            name
            for name in available
            if name in self.checkpoints
            and self.checkpoints[name].family == family
            and self.checkpoints[name].role == "base"
        )

    def refiners(self, family: str, available: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(
            name
            for name in available
            if name in self.checkpoints
            and self.checkpoints[name].family == family
            and self.checkpoints[name].role == "refiner"
        )

    def loras_of(
        self, family: str, available: tuple[str, ...], *, lcm: bool = False
    ) -> tuple[str, ...]:
        """LoRAs of `family` among `available`: the LCM ones if `lcm`, else the others."""
        return tuple(
            name
            for name in available
            if name in self.loras
            and self.loras[name].family == family
            and (self.loras[name].distilled == "lcm") == lcm
        )

    def vaes_of(self, family: str, available: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(name for name in available if self.vaes.get(name) == family)

    def embeddings_of(self, family: str) -> tuple[str, ...]:
        return tuple(name for name, fam in self.embeddings.items() if fam == family)

    def is_native(self, family: str, width: int, height: int) -> bool:
        return (width, height) in self.native_resolutions.get(family, ())


def _require(mapping: Any, key: str, source: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise FamiliesError(f"{source}: missing {key!r}")
    return mapping[key]


def _family(value: Any, where: str) -> str:
    if value not in FAMILIES:
        raise FamiliesError(f"{where}: family must be one of {FAMILIES}, found {value!r}")
    return str(value)


def families_from_json(
    model_families: Any, embeddings: Any, source: str = "<memory>"
) -> ModelFamilies:
    """Parse decoded ``model_families.json`` and ``embeddings.json``."""
    checkpoints = {
        name: CheckpointInfo(
            family=_family(body.get("family"), f"{source}: checkpoint {name}"),
            role=str(body.get("role", "base")),
            distilled=body.get("distilled"),
        )
        for name, body in _require(model_families, "checkpoints", source).items()
    }
    loras = {
        name: LoraInfo(
            family=_family(body.get("family"), f"{source}: LoRA {name}"),
            distilled=body.get("distilled"),
        )
        for name, body in _require(model_families, "loras", source).items()
    }
    vaes = {
        name: _family(body.get("family"), f"{source}: VAE {name}")
        for name, body in _require(model_families, "vaes", source).items()
    }
    upscale = {
        name: int(body["scale"])
        for name, body in _require(model_families, "upscale_models", source).items()
    }
    native = {
        _family(fam, f"{source}: native_resolutions"): tuple((int(w), int(h)) for w, h in sizes)
        for fam, sizes in _require(model_families, "native_resolutions", source).items()
    }
    embedding_families = {
        str(name): _family(fam, f"{source}: embedding {name}")
        for name, fam in _require(embeddings, "families", "embeddings.json").items()
    }
    return ModelFamilies(checkpoints, loras, vaes, upscale, embedding_families, native)


def _resource_json(name: str) -> Any:
    path = resources.files("flowforge").joinpath("resources", "comfyui", name)
    return json.loads(path.read_text("utf-8"))


@cache
def default_families() -> ModelFamilies:
    """The family knowledge about the default catalog's model files."""
    return families_from_json(
        _resource_json("model_families.json"),
        _resource_json("embeddings.json"),
        source="flowforge default model_families.json",
    )
