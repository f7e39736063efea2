"""A pretrained tag fixes how its CLIP is built and fed (QuickGELU, mean/std, interpolation, resize mode), and
freelabel follows it: real architectures are loaded offline from a fake Hugging Face cache of random weights."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from open_clip.constants import HF_SAFE_WEIGHTS_NAME
from open_clip.pretrained import get_pretrained_cfg
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file

from freelabel.clip.classify import label_similarities
from freelabel.clip.loading import TOY_MODEL, LoadedClip, _tag_build_options, load_clip

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache_file(cache: Path, repo_id: str, filename: str) -> Path:
    """Where huggingface_hub's ``try_to_load_from_cache`` finds ``filename`` of ``repo_id`` at revision main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    path = repo / "snapshots" / COMMIT / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _fake_tag_in_cache(cache: Path, name: str, tag: str) -> dict[str, torch.Tensor]:
    """Random float16 weights for ``name`` saved where open_clip's pretrained cfg of ``tag`` points in the hub.
    Returns the saved state dict."""
    parts = get_pretrained_cfg(name, tag)["hf_hub"].strip("/").split("/")  # 'org/repo/' or 'org/repo/file'
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or HF_SAFE_WEIGHTS_NAME
    state = {key: (value.half() if value.is_floating_point() else value).contiguous()
             for key, value in open_clip.create_model(name, pretrained=None, load_weights=False).state_dict().items()}
    save_file(state, str(_hub_cache_file(cache, repo_id, filename)))
    return state


def _activations(module: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in module.modules() if isinstance(m, (torch.nn.GELU, QuickGELU))]


@pytest.mark.slow
def test_openai_tag_builds_quick_gelu_towers_from_the_offline_hub_cache(tmp_path):
    state = _fake_tag_in_cache(tmp_path, "ViT-B-16", "openai")
    clip = load_clip("ViT-B-16", "openai", cache_dir=tmp_path, offline=True)
    cfg = get_pretrained_cfg("ViT-B-16", "openai")
    assert cfg["quick_gelu"]
    # one activation per MLP of the 12 image and 12 text blocks, each QuickGELU as OpenAI trained them
    towers = {"image": _activations(clip.model.visual), "text": _activations(clip.model.transformer)}
    assert {tower: len(acts) for tower, acts in towers.items()} == {"image": 12, "text": 12}
    assert all(isinstance(act, QuickGELU) for acts in towers.values() for act in acts)
    assert clip.mean == open_clip.OPENAI_DATASET_MEAN and clip.std == open_clip.OPENAI_DATASET_STD
    assert (clip.interpolation, clip.resize_mode) == (cfg["interpolation"], cfg["resize_mode"])
    assert torch.equal(clip.model.state_dict()["visual.proj"], state["visual.proj"].float())
    # the same file given as a path carries no tag: the model config's plain GELU holds
    path = next(tmp_path.rglob(HF_SAFE_WEIGHTS_NAME))
    untagged = load_clip("ViT-B-16", str(path))
    assert all(type(act) is torch.nn.GELU for act in _activations(untagged.model))


@pytest.mark.slow
def test_non_openai_tag_brings_its_mean_std_interpolation_and_resize_mode(tmp_path):
    # a SigLIP tag (ViT-B-16-SigLIP/webli) cannot be built offline: its tokenizer needs `transformers` and the
    # hub's tokenizer files. PE-Core's SimpleTokenizer needs neither, and its tag differs from open_clip's
    # defaults in all four settings.
    name, tag = "PE-Core-T-16-384", "meta"
    cfg = get_pretrained_cfg(name, tag)
    assert (cfg["mean"], cfg["std"], cfg["interpolation"], cfg["resize_mode"]) == (
        (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", "squash")
    _fake_tag_in_cache(tmp_path, name, tag)
    clip = load_clip(name, tag, cache_dir=tmp_path, offline=True)
    assert clip.mean == (0.5, 0.5, 0.5) and clip.std == (0.5, 0.5, 0.5)
    assert (clip.interpolation, clip.resize_mode, clip.image_size) == ("bilinear", "squash", (384, 384))
    grey = np.full((1, 100, 300, 3), 255, dtype=np.uint8)
    assert torch.allclose(clip.whole_images_to_tensor(grey), torch.ones(1, 3, 384, 384))  # (1 - 0.5) / 0.5
    assert label_similarities(clip, grey, ["cat", "dog"]).shape == (1, 2)


@pytest.mark.parametrize("name, tag", [("ViT-B-16", "openai"), ("ViT-B-16-SigLIP", "webli"),
                                       ("PE-Core-B-16", "meta")])
def test_build_options_carry_the_tags_quick_gelu_and_preprocessing(name, tag):
    cfg = get_pretrained_cfg(name, tag)
    options = _tag_build_options(name, tag)
    assert options["force_quick_gelu"] == cfg.get("quick_gelu", False)
    assert options["force_preprocess_cfg"] == {key: cfg[key] for key in ("mean", "std", "interpolation",
                                                                         "resize_mode")}
    assert _tag_build_options(name, None) == {}


def _tiny_config_dir(folder: Path, preprocess: dict) -> None:
    config = {"model_cfg": open_clip.get_model_config("test-tiny-vit"), "preprocess_cfg": preprocess}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    model = open_clip.create_model("test-tiny-vit", pretrained=None, load_weights=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / HF_SAFE_WEIGHTS_NAME))


@pytest.mark.parametrize("where", ["local-dir", "hf-hub"])
def test_open_clip_config_preprocessing_is_honoured(tmp_path, where):
    preprocess = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "interpolation": "bilinear",
                  "resize_mode": "longest"}
    if where == "local-dir":
        _tiny_config_dir(tmp_path, preprocess)
        clip = load_clip(f"local-dir:{tmp_path}")
    else:
        _tiny_config_dir(_hub_cache_file(tmp_path, "someone/tiny-clip", "x").parent, preprocess)
        clip = load_clip("hf-hub:someone/tiny-clip", cache_dir=tmp_path, offline=True)
    assert (clip.mean, clip.std) == ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert (clip.interpolation, clip.resize_mode) == ("bilinear", "longest")


def test_label_similarities_follow_resize_mode():
    clip = load_clip("test-tiny-vit", "random")  # no tag: open_clip's defaults, bicubic and 'shortest'
    assert (clip.interpolation, clip.resize_mode, clip.image_size) == ("bicubic", "shortest", (32, 32))
    rng = np.random.default_rng(0)
    centre = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    sides = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    wide = [np.concatenate([sides[0], centre, sides[1]], axis=1), np.concatenate([sides[2], centre, sides[3]], axis=1)]
    labels = ["red circle", "cat", "blue square"]
    # 'shortest' centre-crops the 32 x 96 images: their wildly different borders do not count
    expected = label_similarities(clip, [centre], labels)
    assert np.allclose(label_similarities(clip, wide, labels), np.repeat(expected, 2, axis=0), atol=1e-6)
    squash = dataclasses.replace(clip, resize_mode="squash")
    squashed = label_similarities(squash, wide, labels)
    assert not np.allclose(squashed[0], squashed[1], atol=1e-3)
    # 'longest' fits 96 wide into 32 and pads above and below with black
    padded = dataclasses.replace(clip, resize_mode="longest").whole_images_to_tensor(wide[:1])[0]
    black = (-torch.tensor(clip.mean) / torch.tensor(clip.std)).view(3, 1)
    assert torch.allclose(padded[:, 0], black.expand(3, 32)) and torch.allclose(padded[:, -1], black.expand(3, 32))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_images_to_tensor_resizes_with_the_models_interpolation(interpolation):
    clip = dataclasses.replace(load_clip("test-tiny-vit", "random"), interpolation=interpolation,
                               resize_mode="squash")
    other = dataclasses.replace(clip, interpolation="bilinear" if interpolation == "bicubic" else "bicubic")
    images = np.random.default_rng(1).integers(0, 256, (2, 90, 70, 3), dtype=np.uint8)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)

    def pixel_difference(a: LoadedClip, b: LoadedClip) -> float:
        """Mean absolute difference in [0, 255] pixel units of the torch resize of ``a`` and the PIL one of ``b``."""
        return ((a.images_to_tensor(images) - b.whole_images_to_tensor(images)) * std).abs().mean().item() * 255

    # torch's antialiased resize matches PIL's (open_clip's eval transform) up to PIL's rounding to uint8
    assert pixel_difference(clip, clip) < 0.5
    assert pixel_difference(other, clip) > 2


def test_toy_model_keeps_bilinear_squash_and_openai_normalisation():
    clip = load_clip(TOY_MODEL, offline=True)
    assert (clip.interpolation, clip.resize_mode) == ("bilinear", "squash")
    assert clip.mean == open_clip.OPENAI_DATASET_MEAN and clip.std == open_clip.OPENAI_DATASET_STD
    images = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    # at the toy's own size (its scenes) classification sees exactly what the dense path sees
    assert torch.equal(clip.whole_images_to_tensor(images), clip.images_to_tensor(images))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    resized = torch.nn.functional.interpolate(x, size=(40, 48), mode="bilinear", antialias=True, align_corners=False)
    mean, std = torch.tensor(clip.mean).view(1, 3, 1, 1), torch.tensor(clip.std).view(1, 3, 1, 1)
    assert torch.equal(clip.images_to_tensor(images, size=(40, 48)), (resized - mean) / std)
