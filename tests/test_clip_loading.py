import json
import pickle

import numpy as np
import open_clip
import pytest
import torch
from conftest import TEST_MODELS
from open_clip.model import resize_pos_embed, resize_text_pos_embed
from safetensors.torch import save_file

from freelabel.clip.checkpoint import CorruptCheckpointError, IncompatibleWeightsError, UnsafeCheckpointError
from freelabel.clip.loading import TOY_MODEL, UnknownModelError, WeightsNotFoundError, load_clip, resolve_source
from freelabel.errors import FreelabelError


@pytest.mark.parametrize("name", [*TEST_MODELS, TOY_MODEL])
def test_every_registered_model_runs_forward(name):
    clip = load_clip(name, "random")
    images = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    x = clip.images_to_tensor(images)
    assert x.shape == (2, 3, *clip.image_size)
    image_features = clip.encode_images(x)
    text_features = clip.encode_labels(["red circle", "cat"])
    dim = open_clip.get_model_config(name)["embed_dim"]
    assert image_features.shape == (2, dim) and text_features.shape == (2, dim)
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(2), atol=1e-4)


def test_text_embeddings_are_cached_per_label():
    clip = load_clip("test-tiny-vit", "random", text_cache="off")  # the memory cache alone
    first = clip.encode_labels(["a", "b"])
    calls = []
    clip.model.token_embedding.register_forward_hook(lambda *_: calls.append(1))  # one per text-tower pass
    assert torch.equal(clip.encode_labels(["b", "a"]), first.flip(0))
    assert not calls
    clip.forget_text()  # after the text tower changes, labels are encoded again
    assert torch.allclose(clip.encode_labels(["a"]), first[:1]) and calls


def _save_random(name, path, fmt):
    model = open_clip.create_model(name, pretrained=None, load_weights=False)
    state = model.state_dict()
    if fmt == "safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    return state


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_local_checkpoint_file_loads_exactly(tmp_path, fmt):
    path = tmp_path / f"weights.{fmt}"
    state = _save_random("test-tiny-vit", path, fmt)
    clip = load_clip("test-tiny-vit", str(path))
    for key, value in clip.model.state_dict().items():
        assert torch.equal(value, state[key]), key


class _Payload:  # an object a malicious pickle could carry
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Payload()}, f)
    with pytest.raises(UnsafeCheckpointError, match="weights_only=True"):
        load_clip("test-tiny-vit", str(path))


def test_wrong_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "other.safetensors"
    _save_random("test-tiny-vit-avgpool", path, "safetensors")
    with pytest.raises(IncompatibleWeightsError, match="does not fit test-tiny-vit") as info:
        load_clip("test-tiny-vit", str(path))
    assert "shape" in str(info.value)


def test_missing_file_and_unknown_names(tmp_path):
    with pytest.raises(WeightsNotFoundError, match="no file at"):
        load_clip("test-tiny-vit", str(tmp_path / "nope.safetensors"))
    with pytest.raises(UnknownModelError, match="Unknown model 'ViT-Z-99'"):
        resolve_source("ViT-Z-99")
    with pytest.raises(UnknownModelError, match="Known tags: .*openai"):
        resolve_source("ViT-B-16", "no-such-tag", offline=True)


def test_offline_tag_without_cache_says_what_to_place_where(tmp_path):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_source("ViT-B-16", "openai", cache_dir=tmp_path, offline=True)
    message = str(info.value)
    assert "offline" in message and "vit_base_patch16_clip_224.openai" in message
    assert "open_clip_model.safetensors" in message and "--pretrained" in message
    assert "\n" not in message  # one paragraph


def test_offline_mode_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FREELABEL_OFFLINE", "1")
    monkeypatch.setenv("FREELABEL_CACHE_DIR", str(tmp_path))
    with pytest.raises(WeightsNotFoundError, match="offline mode"):
        resolve_source("hf-hub:someone/some-clip")


def test_offline_tag_found_in_hub_cache(tmp_path):
    repo = tmp_path / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    weights = repo / "snapshots" / "abc123" / "open_clip_model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"placeholder")
    source = resolve_source("ViT-B-16", "openai", cache_dir=tmp_path, offline=True)
    assert source.checkpoint == weights and source.open_clip_name == "ViT-B-16"


def test_local_folder_in_open_clip_layout(tmp_path):
    import json

    config = open_clip.get_model_config("test-tiny-vit")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
    with pytest.raises(WeightsNotFoundError, match="no checkpoint file"):
        resolve_source(f"local-dir:{tmp_path}")
    state = _save_random("test-tiny-vit", tmp_path / "open_clip_model.safetensors", "safetensors")
    clip = load_clip(str(tmp_path))
    assert torch.equal(clip.model.state_dict()["visual.proj"], state["visual.proj"])
    assert clip.encode_labels(["cat"]).shape == (1, config["embed_dim"])


def test_many_labels_are_encoded_in_batches_with_the_same_result(monkeypatch):
    import freelabel.clip.loading

    labels = [f"thing {i}" for i in range(7)]
    whole = load_clip("test-tiny-vit", "random", text_cache="off")
    expected = whole.encode_labels(labels)
    batched = load_clip("test-tiny-vit", "random", text_cache="off")
    batched.model.load_state_dict(whole.model.state_dict())
    sizes = []
    batched.model.token_embedding.register_forward_hook(lambda _, inputs, __: sizes.append(len(inputs[0])))
    monkeypatch.setattr(freelabel.clip.loading, "TEXT_BATCH", 2 * len(batched.templates))
    assert torch.allclose(batched.encode_labels(labels), expected, atol=1e-5)
    assert sizes == [2 * len(batched.templates)] * 3 + [len(batched.templates)]


# --- checkpoints that are not what they claim: one clear FreelabelError before any image is processed ---


def _tiny_state():
    model = open_clip.create_model("test-tiny-vit", pretrained=None, load_weights=False)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def _clear_error(error_type, path, *problem):
    """Load ``path`` into test-tiny-vit; the error must be ``error_type``, one paragraph naming the file, the
    problem (each of ``problem`` in it, case-insensitive) and what to do."""
    with pytest.raises(error_type) as info:
        load_clip("test-tiny-vit", str(path))
    assert isinstance(info.value, FreelabelError)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for words in problem:
        assert words.lower() in message.lower(), message
    assert any(fix in message for fix in ("Re-download", "convert", "Rename", "--pretrained")), message
    return message


def _cut(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def test_pickle_named_safetensors_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.safetensors"
    torch.save(_tiny_state(), path)
    message = _clear_error(CorruptCheckpointError, path, "not a safetensors file", "pickle")
    assert "Rename it to .pt" in message


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file(_tiny_state(), str(path))
    size = path.stat().st_size
    _cut(path)
    message = _clear_error(CorruptCheckpointError, path, "truncated", "Re-download")
    assert f"where its header describes {size}" in message


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_truncated_pt_is_a_clear_error(tmp_path, zipped):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": _tiny_state()}, path, _use_new_zipfile_serialization=zipped)
    _cut(path)
    _clear_error(CorruptCheckpointError, path, "truncated or damaged", "Re-download")


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>"], ids=["empty", "html"])
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_empty_or_foreign_file_is_corrupt_not_unsafe(tmp_path, content, suffix):
    path = tmp_path / f"weights{suffix}"
    path.write_bytes(content)
    _clear_error(CorruptCheckpointError, path, "empty" if not content else "safetensors file", "Re-download")


def test_safetensors_named_pt_is_a_clear_error(tmp_path):
    path = tmp_path / "weights.pt"
    save_file(_tiny_state(), str(path))
    _clear_error(CorruptCheckpointError, path, "is a safetensors file", "Rename it to .safetensors")


def _save_with_bad_values(path, value):
    state = _tiny_state()
    state["visual.proj"][0, :3] = value
    state["text_projection"][1, 1] = value
    save_file(state, str(path))


@pytest.mark.parametrize("value,kind", [(float("nan"), "NaN"), (float("inf"), "inf"), (float("-inf"), "inf")])
def test_non_finite_weights_are_a_clear_error(tmp_path, value, kind):
    path = tmp_path / "weights.safetensors"
    _save_with_bad_values(path, value)
    message = _clear_error(CorruptCheckpointError, path, "holds 4 non-finite values in 2 tensor(s)", "Re-download")
    assert f"3 {kind} in visual.proj" in message


def test_non_finite_half_precision_weights_are_caught(tmp_path):
    state = {k: v.half() for k, v in _tiny_state().items()}
    state["positional_embedding"][2, 2] = float("nan")
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    _clear_error(CorruptCheckpointError, path, "1 non-finite values", "positional_embedding")


def test_large_finite_float16_weights_are_not_mistaken_for_inf(tmp_path):
    state = {k: v.half() for k, v in _tiny_state().items()}
    state["visual.proj"].fill_(60000.0)  # finite in float16, but its float16 sum overflows to inf
    assert not torch.isfinite(state["visual.proj"].sum())
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    clip = load_clip("test-tiny-vit", str(path))
    assert (clip.model.state_dict()["visual.proj"] == 60000.0).all()


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_non_floating_tensor_is_a_clear_error(tmp_path, dtype):
    state = _tiny_state()
    state["visual.proj"] = state["visual.proj"].to(dtype)
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    _clear_error(IncompatibleWeightsError, path, "does not fit test-tiny-vit",
                 f"visual.proj is {str(dtype).removeprefix('torch.')} where the model expects a floating tensor")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoint_loads(tmp_path, dtype):
    state = _tiny_state()
    path = tmp_path / "weights.safetensors"
    save_file({k: v.to(dtype) for k, v in state.items()}, str(path))
    clip = load_clip("test-tiny-vit", str(path))
    for key, value in clip.model.state_dict().items():
        assert value.dtype == state[key].dtype and torch.equal(value, state[key].to(dtype).to(value.dtype)), key


def test_bundled_float16_toy_weights_still_load():
    clip = load_clip(TOY_MODEL)
    assert all(torch.isfinite(p).all() for p in clip.model.parameters())


def test_non_finite_checkpoint_through_the_cli_is_one_error_line_and_no_mask(tmp_path):
    from click.testing import CliRunner

    from freelabel.pipelines.cli import main
    from freelabel.io import write_image

    write_image(tmp_path / "images" / "a.png", np.full((16, 16, 3), 128, np.uint8))
    path = tmp_path / "weights.safetensors"
    _save_with_bad_values(path, float("nan"))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", str(tmp_path / "images"), "--labels", "cat", "--out", str(out),
                                       "--model", "test-tiny-vit", "--pretrained", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and str(path) in errors[0] and "non-finite" in errors[0], result.output
    assert not out.exists() or not any(out.rglob("*.png")), "no mask may be written"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_checkpoint_at_another_resolution_and_context_length_is_resized_as_open_clip_does(tmp_path, dtype):
    other = open_clip.create_model("test-tiny-vit", pretrained=None, load_weights=False, force_image_size=48,
                                   force_context_length=12)
    state = {k: v.to(dtype).contiguous() for k, v in other.state_dict().items()}
    state["logit_scale"] = state["logit_scale"].reshape(1)  # a 1-d logit scale, as some checkpoints hold it
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    clip = load_clip("test-tiny-vit", str(path))
    loaded = clip.model.state_dict()
    assert state["visual.positional_embedding"].shape[0] == 37 and loaded["visual.positional_embedding"].shape[0] == 17
    assert state["positional_embedding"].shape[0] == 12 and loaded["positional_embedding"].shape[0] == 16
    expected = {k: v.float() for k, v in state.items()}
    resize_pos_embed(expected, clip.model)
    resize_text_pos_embed(expected, clip.model)
    for key, value in loaded.items():  # resized in float32, stored in the checkpoint's dtype
        assert torch.equal(value, expected[key].to(dtype).to(value.dtype).reshape(value.shape)), key


def test_a_checkpoint_of_a_custom_text_model_in_the_older_layout_is_converted(tmp_path):
    config = {"model_cfg": {**open_clip.get_model_config("test-tiny-vit"), "custom_text": True}, "preprocess_cfg": {}}
    (tmp_path / "open_clip_config.json").write_text(json.dumps(config))
    state = _tiny_state()  # the CLIP layout: text tower at the top level, where a custom-text model has it in text.
    save_file(state, str(tmp_path / "open_clip_model.safetensors"))
    clip = load_clip(f"local-dir:{tmp_path}")
    loaded = clip.model.state_dict()
    assert "text.token_embedding.weight" in loaded and "token_embedding.weight" not in loaded
    assert torch.equal(loaded["text.text_projection"], state["text_projection"])
    assert torch.equal(loaded["visual.proj"], state["visual.proj"])
