"""The world's structure: what each model file and setting is known for, the same in every seed.

These tables say, for instance, that ``pixel-art-xl`` suits pixel-art prompts and hurts
photographs, that the refiner helps photographs and hurts anime, that DPM++ samplers like the
Karras schedule. They are written from the public model cards and common practice, as a
person who knows Stable Diffusion would guess. Each seed's world (`world.py`) starts from these
priors and adds its own random affinities, base qualities and sweet spots on top, so the
priors are a sensible starting point, not the answer: nothing here is tuned to one seed.

Affinities are written as {trait: weight} (traits in `traits.py`); unknown files have none.
"""

from __future__ import annotations

from collections.abc import Mapping

Affinity = Mapping[str, float]
#: Component -> (base effect, affinity).
Table = Mapping[str, tuple[float, Affinity]]

#: Checkpoint -> (base quality, affinity). Quality in utility units (1.0 is a large effect).
CHECKPOINTS: Table = {
    "v1-5-pruned-emaonly.safetensors": (-0.6, {"abstract": 0.1}),
    "dreamshaper_8.safetensors": (-0.1, {"fantasy": 0.4, "portrait": 0.3, "painting": 0.2}),
    "realisticVisionV60B1_v51VAE.safetensors": (
        -0.05,
        {"photo": 0.6, "portrait": 0.4, "anime": -0.4},
    ),
    "revAnimated_v122.safetensors": (-0.15, {"fantasy": 0.5, "render": 0.3, "anime": 0.3}),
    "counterfeitV30_v30.safetensors": (-0.1, {"anime": 0.8, "photo": -0.6, "fantasy": 0.2}),
    "sd_xl_base_1.0.safetensors": (0.0, {"landscape": 0.1, "text": 0.2}),
    "ssd-1b.safetensors": (-0.2, {"product": 0.2}),
    "albedobaseXL_v13.safetensors": (0.2, {"render": 0.2, "detail": 0.2}),
    "crystalClearXL_ccxl.safetensors": (0.15, {"photo": 0.4, "product": 0.4, "food": 0.2}),
    "leosamsHelloworldXL_helloworldXL70.safetensors": (
        0.15,
        {"photo": 0.3, "portrait": 0.3, "city": 0.2},
    ),
    "proteus_v03.safetensors": (0.15, {"fantasy": 0.4, "painting": 0.3, "abstract": 0.2}),
    "realvisxlV40_v40Bakedvae.safetensors": (
        0.25,
        {"photo": 0.7, "portrait": 0.3, "food": 0.2, "anime": -0.5},
    ),
    "animagineXLV3_v30.safetensors": (0.15, {"anime": 1.0, "photo": -0.7, "portrait": 0.1}),
    "sdvn7NijistyleXL_v1.safetensors": (0.1, {"anime": 0.8, "painting": 0.3, "photo": -0.5}),
    "dreamshaperXL_v21TurboDPMSDE.safetensors": (0.1, {"fantasy": 0.4, "portrait": 0.2}),
    "juggernautXL_v9Rdphoto2Lightning.safetensors": (
        0.15,
        {"photo": 0.6, "portrait": 0.3, "city": 0.2, "anime": -0.4},
    ),
    "sd_xl_refiner_1.0.safetensors": (-2.5, {}),  # a refiner is not a base model
}

#: LoRA -> (base effect, affinity). Effects scale with how close the strength is to the sweet spot.
LORAS: Table = {
    "pixel-art-xl.safetensors": (-0.2, {"pixel": 1.3, "photo": -0.6, "detail": -0.3}),
    "LogoRedmondV2-Logo-LogoRedmAF.safetensors": (
        -0.2,
        {"text": 1.1, "product": 0.2, "photo": -0.5},
    ),
    "PerfectEyesXL.safetensors": (0.0, {"portrait": 0.7, "anime": 0.1, "landscape": -0.2}),
    "SDXLFaeTastic2400.safetensors": (-0.05, {"fantasy": 0.9, "painting": 0.2, "photo": -0.3}),
    "add-detail-xl.safetensors": (0.05, {"detail": 0.5, "landscape": 0.2, "text": -0.3}),
    "add_detail.safetensors": (0.05, {"detail": 0.5, "city": 0.2, "text": -0.3}),
    "epi_noiseoffset2.safetensors": (0.0, {"dark": 0.8, "photo": 0.2, "product": -0.2}),
    "JuggerCineXL2.safetensors": (0.0, {"photo": 0.5, "portrait": 0.2, "anime": -0.5}),
    "ral-dissolve-sdxl.safetensors": (-0.15, {"abstract": 0.8, "fantasy": 0.3, "photo": -0.3}),
    "xl_more_art-full_v1.safetensors": (0.0, {"painting": 0.6, "fantasy": 0.3, "photo": -0.3}),
}

#: Upscale model -> (base effect, affinity) as a final upscale and inside a hires pass.
UPSCALERS: Table = {
    "4x-UltraSharp.pth": (0.04, {"photo": 0.12, "detail": 0.12, "anime": -0.08}),
    "4x_NMKD-Superscale-SP_178000_G.pth": (0.03, {"photo": 0.1, "product": 0.1, "food": 0.06}),
    "RealESRGAN_x2plus.pth": (0.03, {"landscape": 0.05}),
    "RealESRGAN_x4plus_anime_6B.pth": (
        0.0,
        {"anime": 0.25, "painting": 0.05, "photo": -0.25, "portrait": -0.1},
    ),
}

#: Negative embedding -> (effect when of the checkpoint's family, affinity).
EMBEDDINGS: Table = {
    "EasyNegative": (0.05, {"anime": 0.08, "photo": -0.04}),
    "badhandv4": (0.04, {"portrait": 0.08}),
    "ng_deepnegative_v1_75t": (0.05, {"photo": 0.05}),
    "negativeXL_D": (0.05, {}),
    "unaestheticXLv31": (0.04, {"anime": 0.05, "painting": 0.04}),
}

#: How much each trait wants from a hires pass, the refiner, FreeU and CLIP skip on SD1.5.
HIRES: Affinity = {
    "detail": 0.25,
    "landscape": 0.12,
    "city": 0.12,
    "photo": 0.08,
    "fantasy": 0.08,
    "portrait": 0.05,
    "pixel": -0.5,
    "text": -0.15,
    "abstract": -0.1,
}
HIRES_KIND: Mapping[str, Affinity] = {
    "latent": {"anime": 0.1, "painting": 0.08, "fantasy": 0.05, "photo": -0.1},
    "model": {"photo": 0.1, "detail": 0.05, "product": 0.05},
}
REFINER: Affinity = {
    "photo": 0.25,
    "portrait": 0.12,
    "product": 0.12,
    "food": 0.08,
    "anime": -0.35,
    "pixel": -0.5,
    "painting": -0.1,
    "text": -0.1,
}
FREEU: Affinity = {"fantasy": 0.08, "painting": 0.08, "anime": 0.05, "photo": -0.08}
SAG: Affinity = {"detail": 0.08, "photo": 0.04, "abstract": -0.05}
CLIP_SKIP: Affinity = {"anime": 0.12, "fantasy": 0.04, "photo": -0.06}
LCM: Affinity = {"detail": -0.15, "photo": -0.05, "abstract": 0.05}
#: Preferred log(height / width) per trait: portraits tall, landscapes and streets wide.
ASPECT: Affinity = {"portrait": 0.25, "landscape": -0.3, "city": -0.12, "animal": -0.05}
#: Shift of the best log-CFG per trait: text needs adherence, photographs less burn.
CFG_SHIFT: Affinity = {"text": 0.12, "photo": -0.08, "portrait": -0.05, "painting": 0.04}

SECOND_ORDER = frozenset(
    {"heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "dpmpp_2s_ancestral", "dpmpp_sde"}
    | {"dpmpp_sde_gpu"}
)
#: Steps a sampler needs (the time constant of its convergence), before per-seed jitter.
STEP_NEEDS: Mapping[str, float] = {"dpm_fast": 12.0, "lms": 10.0, "ddpm": 12.0, "uni_pc": 5.0}
DISTILLED_SAMPLERS = frozenset({"euler", "euler_ancestral", "dpmpp_sde", "dpmpp_sde_gpu"})


def sampler_scheduler_prior(sampler: str, scheduler: str) -> float:
    """Common wisdom about sampler x scheduler pairs (DPM++ with Karras, DDIM with its own...)."""
    sde = "sde" in sampler
    if sampler == "lcm":
        return 0.2 if scheduler == "sgm_uniform" else -0.2
    if scheduler == "karras":
        return 0.15 if sampler.startswith("dpm") else (-0.25 if sampler == "ddim" else 0.0)
    if scheduler == "exponential":
        return 0.1 if sde else (-0.4 if sampler == "ddim" else -0.2)
    if scheduler == "normal":
        return 0.1 if sampler in ("euler", "euler_ancestral", "uni_pc", "heun") else 0.0
    if scheduler == "sgm_uniform":
        return 0.05 if sampler.startswith("euler") else -0.1
    if scheduler == "ddim_uniform":
        return 0.1 if sampler == "ddim" else -0.3
    return -0.1 if sampler == "ddim" else 0.0  # simple


#: Stochastic samplers (ancestral, SDE) add texture: good for art, a little worse for text.
STOCHASTIC_SAMPLER: Affinity = {
    "fantasy": 0.06,
    "painting": 0.06,
    "abstract": 0.05,
    "photo": -0.03,
    "text": -0.06,
}
DETERMINISTIC_SAMPLER: Affinity = {"photo": 0.03, "text": 0.05, "product": 0.03}
SCHEDULERS: Mapping[str, Affinity] = {
    "karras": {"detail": 0.05, "photo": 0.03},
    "exponential": {"painting": 0.03, "dark": 0.03},
}
#: How much more a prompt suffers from too few steps (detail needs convergence).
STEP_DETAIL: Affinity = {"detail": 0.3, "landscape": 0.1, "city": 0.1, "abstract": -0.1}
#: Tilt of the hires denoise / scale optimum per trait: detail wants more re-drawing and size,
#: text and portraits less (faces and letters drift at high denoise).
HIRES_DENOISE_TILT: Affinity = {"detail": 0.4, "fantasy": 0.2, "text": -0.4, "portrait": -0.2}
HIRES_SCALE_TILT: Affinity = {"detail": 0.2, "landscape": 0.15, "portrait": -0.1}
