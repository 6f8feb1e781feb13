"""Image scorers on tiny random models, through the real loading and scoring code on CPU."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from tiny_scorers import make_tiny_clip, make_tiny_head, make_tiny_imagereward

from flowforge.judge.scorers import COMBINED, ScorerError, ScorerSet, ScorerSetConfig, ScorerSpec
from flowforge.judge.scorers.clip import clip_preprocessor
from flowforge.judge.scorers.imagereward import MAX_TOKENS, REWARD_MEAN, REWARD_STD

IMAGES = [Image.new("RGB", (48 + 8 * i, 40), (30 * i, 255 - 20 * i, 90)) for i in range(5)]
PROMPTS = ["a red barn", "two cats", "a city at night", "an apple", "fog over a lake"]


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_tiny_clip(root / "clip")
    make_tiny_head(root / "head.safetensors")
    return root


def specs(root: Path) -> tuple[ScorerSpec, ...]:
    clip = str(root / "clip")
    return (
        ScorerSpec("aesthetic", clip, head=str(root / "head.safetensors")),
        ScorerSpec("clip", clip),
        ScorerSpec("hps", clip),
        ScorerSpec("pickscore", clip),
    )


def test_every_clip_scorer_scores_alike_in_any_batch_size(models: Path) -> None:
    one = ScorerSet(ScorerSetConfig(specs(models), batch_size=1)).score(IMAGES, PROMPTS)
    big = ScorerSet(ScorerSetConfig(specs(models), batch_size=5)).score(IMAGES, PROMPTS)
    assert len(one) == 5 and set(one[0]) == {"aesthetic", "clip", "hps", "pickscore", COMBINED}
    for a, b in zip(one, big, strict=True):
        # float32 matmuls differ with the batch shape by a few ulps: relative tolerance,
        # since CLIP score is 100 x cos (an ulp there is ~4e-6; abs=1e-5 failed on a Xeon)
        assert a == pytest.approx(b, rel=1e-5, abs=1e-5)
    assert len({round(s["hps"], 6) for s in one}) == 5  # the images and prompts matter


def test_clip_formulas_follow_their_papers(models: Path) -> None:
    """CLIP score = 100 max(cos, 0); HPS = cos; PickScore = exp(logit_scale) cos."""
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(models / "clip").eval()
    tokens = AutoTokenizer.from_pretrained(models / "clip")(
        PROMPTS, padding=True, return_tensors="pt"
    )
    pixels = clip_preprocessor(32)(images=IMAGES, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values=pixels, **tokens)
    cos = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    scores = ScorerSet(ScorerSetConfig(specs(models)[1:])).score(IMAGES, PROMPTS)
    for i, s in enumerate(scores):
        assert s["hps"] == pytest.approx(float(cos[i]), abs=1e-5)
        assert s["clip"] == pytest.approx(100 * max(float(cos[i]), 0.0), abs=1e-3)
        assert s["pickscore"] == pytest.approx(
            float(model.logit_scale.exp().detach() * cos[i]), abs=1e-4
        )


def test_standardization_and_weights_make_the_combined_score(models: Path) -> None:
    raw = ScorerSet(ScorerSetConfig(specs(models)[1:3])).score(IMAGES[:2], PROMPTS[:2])
    clip, hps = specs(models)[1:3]
    config = ScorerSetConfig(
        (
            ScorerSpec("clip", clip.model, mean=10, std=4, weight=0.5),
            ScorerSpec("hps", hps.model, mean=0.1, std=0.5, weight=2),
        )
    )
    for r, s in zip(raw, ScorerSet(config).score(IMAGES[:2], PROMPTS[:2]), strict=True):
        assert s["clip"] == pytest.approx((r["clip"] - 10) / 4)
        assert s["hps"] == pytest.approx((r["hps"] - 0.1) / 0.5)
        assert s[COMBINED] == pytest.approx(0.5 * s["clip"] + 2 * s["hps"])


def test_imagereward_loads_the_converted_release_and_scores_as_blip(tmp_path: Path) -> None:
    path, (vision, text, head) = make_tiny_imagereward(tmp_path / "ir")
    [scores] = [ScorerSet(ScorerSetConfig((ScorerSpec("imagereward", str(path)),))).score(
        IMAGES, PROMPTS)]  # fmt: skip
    from transformers import AutoTokenizer

    tokens = AutoTokenizer.from_pretrained(path)(PROMPTS, padding="max_length",
                                                 max_length=MAX_TOKENS, truncation=True,
                                                 return_tensors="pt")  # fmt: skip
    pixels = clip_preprocessor(32)(images=IMAGES, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        embeds = vision(pixel_values=pixels)[0]
        hidden = text(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"],
                      encoder_hidden_states=embeds).last_hidden_state[:, 0]  # fmt: skip
        expected = (head(hidden).squeeze(-1) - REWARD_MEAN) / REWARD_STD
    assert [s["imagereward"] for s in scores] == pytest.approx(expected.tolist(), abs=1e-5)


def test_a_model_not_on_disk_is_an_error_never_a_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ScorerError, match="neither a directory nor in the Hugging Face cache"):
        ScorerSet(ScorerSetConfig((ScorerSpec("clip", "no-such-org/no-such-clip"),)))


def test_bad_configurations_fail_in_one_line(models: Path, tmp_path: Path) -> None:
    clip = str(models / "clip")
    with pytest.raises(ScorerError, match="unknown scorer 'vibes'"):
        ScorerSpec("vibes", clip)
    with pytest.raises(ScorerError, match="needs its MLP head"):
        ScorerSet(ScorerSetConfig((ScorerSpec("aesthetic", clip),)))
    save_file({"wrong.weight": torch.zeros(2, 2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ScorerError, match="Missing key"):
        ScorerSet(
            ScorerSetConfig(
                (ScorerSpec("aesthetic", clip, head=str(tmp_path / "bad.safetensors")),)
            )
        )
    with pytest.raises(ScorerError, match="std must be positive"):
        ScorerSpec("clip", clip, std=0)
    with pytest.raises(ScorerError, match="unknown scorer setting"):
        ScorerSetConfig.from_json(json.loads('{"scorers": [], "devcie": "cpu"}'))
