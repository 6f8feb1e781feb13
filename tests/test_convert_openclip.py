"""OpenCLIP -> transformers CLIP conversion (HPS v2.1's path), on tiny random models, on CPU.

Every test runs on `openclip_reference.ReferenceCLIP` (OpenCLIP's model written down with its
module names); where ``open_clip`` itself imports, the same tests also run on a tiny model that
open_clip builds from a custom model config, and the reference is checked against it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from openclip_reference import ReferenceCLIP
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPModel, CLIPTokenizer

from flowforge.judge.scorers import ScorerError, ScorerSet, ScorerSetConfig, ScorerSpec
from flowforge.judge.scorers.clip import clip_preprocessor
from flowforge.judge.scorers.convert_openclip import (
    OPENCLIP_CONFIGS,
    clip_config,
    convert_openclip_checkpoint,
    load_openclip_config,
)

CHARS = [chr(i) for i in range(33, 127)]
VOCAB = 2 * len(CHARS) + 2  # characters, characters</w>, <|startoftext|>, <|endoftext|>
SOT, EOT = VOCAB - 2, VOCAB - 1
#: A tiny OpenCLIP model config in open_clip's format: 32 px images in 8 px patches, 2 layers
#: per tower, 2 vision heads of 16 and 3 text heads of 8; the text width equals embed_dim so a
#: missing transpose of the (square) text projection cannot hide behind a shape error.
TINY: dict[str, Any] = {
    "embed_dim": 24,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": VOCAB, "width": 24, "heads": 3, "layers": 2},
}


def _open_clip() -> Any:
    if importlib.util.find_spec("open_clip") is None:
        return None
    try:
        import open_clip  # type: ignore[import-not-found]
    except Exception:  # e.g. PyPI's torchvision beside a CPU torch: it does not import
        return None
    return open_clip


OPEN_CLIP = _open_clip()
needs_open_clip = pytest.mark.skipif(OPEN_CLIP is None, reason="open_clip does not import here")
BACKENDS = ["reference", pytest.param("open_clip", marks=needs_open_clip)]


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend
    yield
    torch.set_num_threads(threads)


def config_file(root: Path, quick_gelu: bool = False) -> Path:
    name = "ff-tiny-quickgelu" if quick_gelu else "ff-tiny"
    path = root / f"{name}.json"
    path.write_text(json.dumps(TINY | ({"quick_gelu": True} if quick_gelu else {})))
    return path


def build(backend: str, config: Path, seed: int = 0) -> Any:
    """A random OpenCLIP model from `config`, every parameter perturbed so that LayerNorms and
    biases (zero or one at init) count in the comparison."""
    torch.manual_seed(seed)
    data = json.loads(config.read_text())
    if backend == "open_clip":
        OPEN_CLIP.add_model_config(config)
        model: nn.Module = OPEN_CLIP.create_model(config.stem, pretrained=None)
    else:
        model = ReferenceCLIP(data)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model.eval()


def token_ids(lengths: list[int], seed: int = 1) -> torch.Tensor:
    """OpenCLIP-style ids: <|startoftext|>, text, <|endoftext|>, zeros up to context_length."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.zeros(len(lengths), TINY["text_cfg"]["context_length"], dtype=torch.long)
    for row, length in enumerate(lengths):
        ids[row, 0] = SOT
        ids[row, 1 : length + 1] = torch.randint(0, SOT, (length,), generator=generator)
        ids[row, length + 1] = EOT
    return ids


def features(output: Any) -> torch.Tensor:
    """transformers 5 returns the projected embeddings as an output's ``pooler_output``."""
    tensor: torch.Tensor = output if isinstance(output, torch.Tensor) else output.pooler_output
    return tensor


def normalized(x: torch.Tensor) -> torch.Tensor:
    out: torch.Tensor = x / x.norm(dim=-1, keepdim=True)
    return out


def write_tokenizer(out: Path) -> Path:
    """A byte-level CLIP tokenizer whose <|endoftext|> is the highest id, as in CLIP's."""
    out.mkdir(parents=True, exist_ok=True)
    vocab = {c: i for i, c in enumerate(CHARS)}
    vocab |= {c + "</w>": len(CHARS) + i for i, c in enumerate(CHARS)}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = SOT, EOT
    (out / "vocab.json").write_text(json.dumps(vocab))
    (out / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(out / "vocab.json"), str(out / "merges.txt")).save_pretrained(out)
    return out


def save_release(model: nn.Module, path: Path) -> Path:
    """As HPS v2.1 is published: a torch file holding ``{"state_dict": ...}``; the keys carry
    DistributedDataParallel's ``module.`` prefix, as open_clip's training checkpoints do."""
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"epoch": 1, "name": "tiny", "state_dict": state}, path)
    return path


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quickgelu"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_converted_clip_computes_what_openclip_computes(
    tmp_path: Path, backend: str, quick_gelu: bool
) -> None:
    config = config_file(tmp_path, quick_gelu)
    source = build(backend, config)
    out = convert_openclip_checkpoint(
        save_release(source, tmp_path / "release.pt"), tmp_path / "hf", model_config=config
    )
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors"}
    model: Any = CLIPModel.from_pretrained(out, local_files_only=True)
    model.eval()
    assert model.config.text_config.eos_token_id == EOT
    assert model.config.vision_config.hidden_act == ("quick_gelu" if quick_gelu else "gelu")

    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    ids = token_ids([0, 5, 13])
    mask = (torch.arange(ids.shape[1]) <= (ids == EOT).int().argmax(-1, keepdim=True)).long()
    with torch.no_grad():
        image_ref, text_ref = source.encode_image(pixels), source.encode_text(ids)
        logits_ref = source.logit_scale.exp() * normalized(image_ref) @ normalized(text_ref).T
        image = features(model.get_image_features(pixel_values=pixels))
        text = features(model.get_text_features(input_ids=ids, attention_mask=mask))
        logits = model(input_ids=ids, pixel_values=pixels, attention_mask=mask).logits_per_image
        # without the padding mask too: the causal mask alone decides, as in OpenCLIP
        unmasked = features(model.get_text_features(input_ids=ids))
    assert image.shape == image_ref.shape == (3, 24) and text.shape == text_ref.shape == (3, 24)
    torch.testing.assert_close(image, image_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(text, text_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unmasked, text_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, logits_ref, atol=1e-5, rtol=1e-5)
    assert float(model.logit_scale.detach()) == pytest.approx(float(source.logit_scale.detach()))
    assert (logits - logits.mean()).abs().max() > 0.1  # the inputs matter


@pytest.mark.parametrize("backend", BACKENDS)
def test_hps_scorer_scores_a_converted_openclip_model(tmp_path: Path, backend: str) -> None:
    """The converted folder (tokenizer copied in) is what the hps scorer loads; its score is
    OpenCLIP's cos(image, text) on the same pixels and token ids."""
    config = config_file(tmp_path)
    source = build(backend, config, seed=3)
    tokenizer = write_tokenizer(tmp_path / "tokenizer")
    out = convert_openclip_checkpoint(
        save_release(source, tmp_path / "release.pt"),
        tmp_path / "hps",
        model_config=config,
        tokenizer=tokenizer,
    )
    assert (out / "vocab.json").is_file() and (out / "tokenizer_config.json").is_file()
    images = [Image.new("RGB", (40, 32), (200, 40, 90)), Image.new("RGB", (32, 48), (10, 90, 250))]
    prompts = ["a red barn at dusk", "two cats"]
    spec = ScorerSpec("hps", str(out))
    scores = ScorerSet(ScorerSetConfig((spec,), threads=1)).score(images, prompts)

    pixels = clip_preprocessor(32)(images=images, return_tensors="pt")["pixel_values"]
    ids = torch.zeros(2, 16, dtype=torch.long)  # open_clip's tokenizer pads with 0
    for row, tokens in enumerate(CLIPTokenizer.from_pretrained(tokenizer)(prompts)["input_ids"]):
        ids[row, : len(tokens)] = torch.tensor(tokens)
    assert int(ids[0, 0]) == SOT and EOT in ids[1].tolist()
    with torch.no_grad():
        expected = normalized(source.encode_image(pixels)) * normalized(source.encode_text(ids))
    for score, value in zip(scores, expected.sum(-1).tolist(), strict=True):
        assert score["hps"] == pytest.approx(value, abs=1e-5)
        assert score["score"] == pytest.approx(value, abs=1e-5)


@needs_open_clip
def test_reference_model_is_open_clips(tmp_path: Path) -> None:
    """The test's written-down OpenCLIP has open_clip's keys and shapes and computes the same."""
    config = config_file(tmp_path)
    real, reference = build("open_clip", config), build("reference", config, seed=5)
    assert {k: v.shape for k, v in real.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    real.load_state_dict(reference.state_dict(), strict=True)
    pixels, ids = torch.randn(2, 3, 32, 32), token_ids([4, 12])
    with torch.no_grad():
        torch.testing.assert_close(real.encode_image(pixels), reference.encode_image(pixels))
        torch.testing.assert_close(real.encode_text(ids), reference.encode_text(ids))


@needs_open_clip
def test_builtin_configs_are_open_clips_shipped_ones() -> None:
    for name, config in OPENCLIP_CONFIGS.items():
        assert OPEN_CLIP.get_model_config(name) == config, name


def test_vit_h_14_becomes_hps_v2_1s_transformers_config() -> None:
    config: Any = clip_config(load_openclip_config("ViT-H-14"))
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads) == (
        1280,
        32,
        16,
    )
    assert (vision.intermediate_size, vision.patch_size, vision.image_size) == (5120, 14, 224)
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (1024, 24, 16)
    assert (text.intermediate_size, text.max_position_embeddings, text.vocab_size) == (
        4096,
        77,
        49408,
    )
    assert config.projection_dim == 1024 and text.eos_token_id == 49407
    assert vision.hidden_act == text.hidden_act == "gelu"  # laion2B ViT-H-14: nn.GELU
    assert vision.layer_norm_eps == text.layer_norm_eps == 1e-5
    with torch.device("meta"):
        count = sum(p.numel() for p in CLIPModel(config).parameters())
    assert 985e6 < count < 987e6  # OpenCLIP ViT-H-14: 986.1 M parameters


def test_checkpoint_forms_and_dtype(tmp_path: Path) -> None:
    """A bare state dict, a safetensors file; half-precision tensors; a float16 output."""
    config = config_file(tmp_path)
    source = build("reference", config)
    state = {k: v.half() for k, v in source.state_dict().items()}
    torch.save(state, tmp_path / "bare.pt")
    save_file(state, str(tmp_path / "open_clip_model.safetensors"))
    a = convert_openclip_checkpoint(tmp_path / "bare.pt", tmp_path / "a", model_config=config)
    b = convert_openclip_checkpoint(
        tmp_path / "open_clip_model.safetensors",
        tmp_path / "b",
        model_config=config,
        dtype=torch.float16,
    )
    one = CLIPModel.from_pretrained(a, local_files_only=True)
    two = CLIPModel.from_pretrained(b, local_files_only=True, dtype=torch.float16)
    assert one.dtype == torch.float32 and two.dtype == torch.float16
    assert json.loads((b / "config.json").read_text())["dtype"] == "float16"
    for (name, x), (_, y) in zip(one.state_dict().items(), two.state_dict().items(), strict=True):
        assert torch.equal(x.half(), y), name


class _Payload:
    """An object whose unpickling would run code: what weights_only must refuse."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Path.touch, (str(Path(__file__).parent / "PWNED-never-created"),))


def test_refuses_checkpoints_holding_objects_without_running_them(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    state = build("reference", config).state_dict()
    marker = Path(__file__).parent / "PWNED-never-created"
    for extra in (argparse.Namespace(lr=1e-4), _Payload()):
        torch.save({"state_dict": state, "args": extra}, tmp_path / "release.pt")
        with pytest.raises(ScorerError, match="weights_only=True") as error:
            convert_openclip_checkpoint(
                tmp_path / "release.pt", tmp_path / "x", model_config=config
            )
        assert "\n" not in str(error.value) and "Unsupported global" in str(error.value)
    assert not marker.exists() and not (tmp_path / "x").exists()


def test_refuses_what_transformers_clip_cannot_express(tmp_path: Path) -> None:
    config = config_file(tmp_path)
    source = build("reference", config)
    release = save_release(source, tmp_path / "release.pt")

    def fails(match: str, **kwargs: Any) -> None:
        with pytest.raises(ScorerError, match=match) as error:
            convert_openclip_checkpoint(kwargs.pop("checkpoint", release), tmp_path / "x", **kwargs)
        assert "\n" not in str(error.value)

    layer_scale = tmp_path / "ls.json"
    layer_scale.write_text(
        json.dumps(TINY | {"vision_cfg": TINY["vision_cfg"] | {"ls_init_value": 0.1}})
    )
    fails("ls_init_value", model_config=layer_scale)
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps(TINY | {"text_cfg": TINY["text_cfg"] | {"rope": True}}))
    fails("does not know: rope", model_config=unknown)
    fails("wrong --model-config", model_config="ViT-B-32")
    fails("unknown OpenCLIP model config 'ViT-X'", model_config="ViT-X")
    siglip = {f"module.{k}": v for k, v in source.state_dict().items()} | {
        "module.logit_bias": torch.zeros([])
    }
    torch.save({"state_dict": siglip}, tmp_path / "siglip.pt")
    fails(
        "no place in transformers' CLIP.*logit_bias",
        checkpoint=tmp_path / "siglip.pt",
        model_config=config,
    )
    missing = dict(source.state_dict())
    del missing["visual.ln_post.bias"]
    torch.save(missing, tmp_path / "missing.pt")
    fails("lacks 1 weight", checkpoint=tmp_path / "missing.pt", model_config=config)
    fails("no such file", checkpoint=tmp_path / "nothing.pt", model_config=config)
    (tmp_path / "text.pt").write_text("not torch")
    fails("weights_only=True. cannot read it", checkpoint=tmp_path / "text.pt", model_config=config)
    (tmp_path / "empty.pt").write_bytes(b"")
    fails("not a torch file", checkpoint=tmp_path / "empty.pt", model_config=config)
    # a tokenizer whose end-of-text is not the highest id pools elsewhere than OpenCLIP
    other = write_tokenizer(tmp_path / "other")
    vocab = json.loads((other / "vocab.json").read_text())
    vocab["<|endoftext|>"], vocab["!"] = 0, EOT
    (other / "vocab.json").write_text(json.dumps(vocab))
    CLIPTokenizer(str(other / "vocab.json"), str(other / "merges.txt")).save_pretrained(other)
    fails("end-of-text id is 0", model_config=config, tokenizer=other)
    assert not (tmp_path / "x").exists()


def test_command_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flowforge.cli import app

    runner = CliRunner()
    config = config_file(tmp_path)
    release = save_release(build("reference", config), tmp_path / "release.pt")
    args = ["scorers", "convert-openclip", "--checkpoint", str(release)]
    result = runner.invoke(
        app, [*args, "--model-config", str(config), "--out", str(tmp_path / "hf")]
    )
    assert result.exit_code == 0, result.output
    assert "no tokenizer given" in result.output
    assert (tmp_path / "hf" / "model.safetensors").is_file()
    result = runner.invoke(app, [*args, "--model-config", "ViT-X", "--out", str(tmp_path / "y")])
    assert result.exit_code == 2
    assert "error: unknown OpenCLIP model config 'ViT-X'" in result.output
