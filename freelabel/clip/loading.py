"""Loading CLIP models through open_clip, and encoding images and label texts with them.

Weights come from one of:
- an open_clip model name and pretrained tag (``ViT-B-16`` + ``openai``), fetched into the cache unless offline;
- a Hugging Face hub id (``hf-hub:org/repo``) holding ``open_clip_config.json`` and weights;
- a local checkpoint file (``--pretrained path.safetensors``) or an open_clip folder (``local-dir:/path``);
- weights a model card bundles, such as the toy model ``freelabel-toy``'s (no download ever).

open_clip parses the names, downloads the weights and converts checkpoints of other layouts; freelabel looks in
the cache first, never downloads in offline mode (``WeightsNotFoundError`` then says what was looked for where and
which file to place where), and reads checkpoints behind its guards (``freelabel.clip.checkpoint``: safetensors
preferred, pickles only with ``torch.load(weights_only=True)``).

A pretrained tag also fixes how the model is built and fed: open_clip's ``get_pretrained_cfg`` gives its
``quick_gelu`` flag and its image preprocessing (mean, std, interpolation, resize mode). The model is built with
both; hub and folder models take theirs from ``open_clip_config.json``. The model's card
(``freelabel.cards``) adds its prompt templates and any preprocessing no open_clip tag describes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import HF_WEIGHTS_NAME
from open_clip.convert import convert_state_dict
from open_clip.factory import parse_model_name
from open_clip.model import convert_to_custom_text_state_dict, resize_pos_embed, resize_text_pos_embed
from open_clip.pretrained import (_get_safe_alternatives, download_pretrained, download_pretrained_from_hf,
                                  get_pretrained_cfg, list_pretrained_tags_by_model)
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from PIL import Image

from freelabel.cards import model_card
from freelabel.clip.config import ClipConfig, check_device
from freelabel.clip.checkpoint import check_fits, read_state_dict
from freelabel.clip.text import TextEmbeddingCache, encode_prompts, text_cache_dir, text_tower_digest
from freelabel.errors import FreelabelError
from freelabel.io.images import check_rgb

MODEL_CONFIG_DIR = Path(__file__).parents[1] / "model_configs"
TOY_MODEL = "freelabel-toy"
RANDOM_INIT = "random"  # the pretrained value that asks for random initialisation (speed benchmarks, tests)
RANDOM_INIT_SEED = 0  # torch seed of a random initialisation
CACHE_ENV = "FREELABEL_CACHE_DIR"
# Folders of extra open_clip model configs (JSON, as open_clip's own), separated by os.pathsep; registered at import,
# so that worker processes know a custom architecture too.
MODEL_CONFIGS_ENV = "FREELABEL_MODEL_CONFIGS"
OFFLINE_ENV = "FREELABEL_OFFLINE"
HF_CONFIG_NAME = "open_clip_config.json"
# Checkpoint names in an open_clip folder, most preferred first.
CHECKPOINT_NAMES = ("open_clip_model.safetensors", "model.safetensors", "open_clip_pytorch_model.bin",
                    "pytorch_model.bin", "open_clip_pytorch_model.pth", "model.pth")
POSITION_IDS = "text.transformer.embeddings.position_ids"  # saved by older Hugging Face text towers
# the position embeddings open_clip resizes to a model's grid and context length (image; text, in either layout)
POSITION_EMBEDDINGS = ("visual.positional_embedding", "positional_embedding", "text.positional_embedding")

open_clip.add_model_config(MODEL_CONFIG_DIR)
for _folder in filter(None, os.environ.get(MODEL_CONFIGS_ENV, "").split(os.pathsep)):
    open_clip.add_model_config(_folder)

TEXT_BATCH = 512  # prompts per text-tower pass when many labels are encoded at once
DISK_SHARD_LABELS = 4096  # labels per on-disk cache shard: a killed run keeps what it encoded, in few files
INTERPOLATIONS = ("bicubic", "bilinear")
RESIZE_MODES = ("shortest", "squash", "longest")


class WeightsNotFoundError(FreelabelError, FileNotFoundError):
    """The requested weights are neither on disk nor obtainable (offline, or the download failed)."""


class UnknownModelError(FreelabelError, KeyError):
    """The model name is not in open_clip's registry, or the pretrained tag is unknown for it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class ClipSource:
    """Where a model's architecture and weights come from, resolved to local paths."""

    open_clip_name: str  # name handed to open_clip.create_model: a registry name or ``local-dir:<path>``
    checkpoint: Path | None  # weights file to load; None for random initialisation
    description: str  # what the user asked for, for messages and manifests
    tag: str | None = None  # the open_clip pretrained tag whose build and preprocessing settings apply, if any


@dataclass
class LoadedClip:
    """A CLIP model ready for inference, with what is needed to feed it.

    The preprocessing fields are those of the model's pretrained tag (or ``open_clip_config.json``), else
    open_clip's defaults, with the model card's ``preprocess`` on top.
    """

    model: torch.nn.Module  # the open_clip model, in eval mode
    tokenizer: object  # open_clip's tokenizer for it: list of str -> (N, context_length) int64
    name: str  # the model name asked for
    pretrained: str  # where the weights came from, for messages and manifests
    mean: tuple[float, float, float]  # per-channel mean subtracted from RGB in [0, 1]
    std: tuple[float, float, float]  # per-channel std that RGB in [0, 1] is divided by, after the mean
    image_size: tuple[int, int]  # (H, W) the model was trained at
    templates: tuple[str, ...]  # prompt templates, each with one '{}' for the label
    interpolation: str = "bicubic"  # resampling filter of every resize below: 'bicubic' or 'bilinear'
    # How whole images become image_size (open_clip's eval transform): 'shortest' scales the shorter side to fit
    # and centre-crops, 'squash' scales each side to fit (aspect ratio lost), 'longest' scales the longer side to
    # fit and pads the rest with black.
    resize_mode: str = "shortest"
    text_cache_dir: Path | None = None  # folder of the on-disk label-embedding cache; None = none
    _text_cache: dict[tuple[str, tuple[str, ...]], torch.Tensor] = field(default_factory=dict, repr=False)
    _disk_caches: dict[tuple[str, ...], TextEmbeddingCache] = field(default_factory=dict, repr=False)
    _text_digest: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, got {self.resize_mode!r}")

    @classmethod
    def from_model(cls, net: torch.nn.Module, name: str, pretrained: str, open_clip_name: str | None = None
                   ) -> "LoadedClip":
        """Wrap an open_clip model (put in eval mode) made by ``open_clip.create_model(open_clip_name or name)``,
        with the preprocessing open_clip attached to it (see the class docstring)."""
        card = model_card(name)
        cfg = PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(size=net.visual.image_size),
                                                    {**open_clip.get_model_preprocess_cfg(net), **card.preprocess}))
        size = cfg.size
        return cls(
            model=net.eval(),
            tokenizer=open_clip.get_tokenizer(open_clip_name or name),
            name=name,
            pretrained=pretrained,
            mean=tuple(float(v) for v in cfg.mean),
            std=tuple(float(v) for v in cfg.std),
            image_size=(size, size) if isinstance(size, int) else tuple(size),
            templates=card.templates,
            # open_clip evaluates its training-only 'random' interpolation as bicubic
            interpolation="bilinear" if cfg.interpolation == "bilinear" else "bicubic",
            resize_mode=cfg.resize_mode,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def images_to_tensor(self, images: np.ndarray | Sequence[np.ndarray], size: tuple[int, int] | None = None
                         ) -> torch.Tensor:
        """Normalise RGB images for the model, resizing each to exactly ``size`` (no cropping).

        images: (N, H, W, 3) uint8, or a list of (H, W, 3) uint8 arrays (sizes may differ). size: (H, W) to
        resize each to, with the model's interpolation (antialiased); by default the model's own image size.
        Returns (N, 3, H', W') float32 on the model's device: RGB in [0, 1], then ``(x - mean) / std``.
        """
        size = tuple(size or self.image_size)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        tensors = []
        for image in images:
            check_rgb(image)
            x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float() / 255
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode=self.interpolation, antialias=True, align_corners=False)
                # bicubic overshoots at edges; the models saw uint8 images resized by PIL, which clips to [0, 255]
                x = x.clamp_(0, 1)
            tensors.append(x)
        if not tensors:
            raise ValueError("no images given")
        return (torch.cat(tensors) - mean) / std

    def whole_images_to_tensor(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """Prepare whole images as open_clip's eval transform does for this model: resize per ``resize_mode``
        with ``interpolation`` (PIL), centre-crop or pad to ``image_size``, normalise.

        images: (N, H, W, 3) uint8, or a list of (H, W, 3) uint8 arrays (sizes may differ). Returns
        (N, 3, *image_size) float32 on the model's device: RGB in [0, 1], then ``(x - mean) / std``.
        """
        transform = image_transform_v2(
            PreprocessCfg(size=self.image_size, mean=self.mean, std=self.std, interpolation=self.interpolation,
                          resize_mode=self.resize_mode), is_train=False)
        tensors = []
        for image in images:
            check_rgb(image)
            tensors.append(transform(Image.fromarray(np.ascontiguousarray(image))))
        if not tensors:
            raise ValueError("no images given")
        return torch.stack(tensors).to(self.device)

    @torch.no_grad()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Global image embeddings: images (N, 3, H, W) from ``images_to_tensor`` or ``whole_images_to_tensor``
        -> (N, D) float32, unit norm."""
        return F.normalize(self.model.encode_image(images).float(), dim=-1)

    @torch.no_grad()
    def encode_labels(self, labels: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """Text embeddings of labels, each the renormalised mean over prompt templates.

        Returns (K, D) float32 with unit rows, one per label; cached per (label, templates) in memory and, when
        ``text_cache_dir`` is set, on disk (``TextEmbeddingCache``), so repeated labels cost no text-tower pass.
        """
        templates = tuple(templates or self.templates)
        missing = [label for label in dict.fromkeys(labels) if (label, templates) not in self._text_cache]
        disk = self._disk_cache(templates) if missing and self.text_cache_dir is not None else None
        if disk is not None:
            found = disk.get(missing)
            self._text_cache.update({(label, templates): e.to(self.device) for label, e in found.items()})
            missing = [label for label in missing if label not in found]
        per_batch = max(1, TEXT_BATCH // len(templates))  # bounds memory for large vocabularies
        for first in range(0, len(missing), DISK_SHARD_LABELS):
            shard = missing[first:first + DISK_SHARD_LABELS]
            for start in range(0, len(shard), per_batch):
                chunk = shard[start:start + per_batch]
                prompts = [template.format(label) for label in chunk for template in templates]
                embeddings = F.normalize(encode_prompts(self.model, self.tokenizer(prompts).to(self.device)), dim=-1)
                embeddings = embeddings.view(len(chunk), len(templates), -1).mean(dim=1)
                for label, embedding in zip(chunk, F.normalize(embeddings, dim=-1)):
                    self._text_cache[(label, templates)] = embedding
            if disk is not None:
                disk.put(shard, torch.stack([self._text_cache[(label, templates)] for label in shard]))
        return torch.stack([self._text_cache[(label, templates)] for label in labels])

    def _disk_cache(self, templates: tuple[str, ...]) -> TextEmbeddingCache:
        """The on-disk cache for ``templates``, keyed by this model's text tower (digest computed once)."""
        if templates not in self._disk_caches:
            if self._text_digest is None:
                self._text_digest = text_tower_digest(self.model)
            tokenizer = self.tokenizer
            key = {"model": self.name, "text_tower_sha256": self._text_digest, "templates": list(templates),
                   "tokenizer": f"{type(tokenizer).__module__}.{type(tokenizer).__qualname__}",
                   "context_length": getattr(tokenizer, "context_length", None)}
            self._disk_caches[templates] = TextEmbeddingCache(self.text_cache_dir, key)
        return self._disk_caches[templates]

    def forget_text(self) -> None:
        """Drop cached label embeddings; needed only when the text tower's weights change (training)."""
        self._text_cache.clear()
        self._disk_caches.clear()
        self._text_digest = None


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def is_offline(offline: bool | None = None) -> bool:
    """Offline mode: the argument if given, else ``FREELABEL_OFFLINE`` or ``HF_HUB_OFFLINE`` from the environment."""
    if offline is not None:
        return offline
    return _truthy(os.environ.get(OFFLINE_ENV)) or _truthy(os.environ.get("HF_HUB_OFFLINE"))


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> str | None:
    """The cache folder: the argument, else ``FREELABEL_CACHE_DIR``, else None (the hub's and open_clip's own)."""
    value = cache_dir or os.environ.get(CACHE_ENV)
    return str(value) if value else None


def _checkpoint_in_dir(folder: Path) -> Path | None:
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _not_found(what: str, fix: str, reason: str | None = None) -> WeightsNotFoundError:
    because = f" ({reason})" if reason else ""
    return WeightsNotFoundError(f"Could not find the CLIP weights for {what}{because}. {fix}")


def _obtain(what: str, cached: Path | None, looked_for: str, fix: str, offline: bool,
            download: Callable[[], str]) -> Path:
    """The cached file if there is one, else what open_clip's ``download`` fetches unless ``offline``;
    ``WeightsNotFoundError`` saying what was looked for where (``looked_for``) and ``fix``."""
    if cached is not None:
        return cached
    if offline:
        raise _not_found(what, fix, f"offline mode; looked for {looked_for}")
    try:
        return Path(download())
    except Exception as error:  # the hub client and urllib raise many types; all mean "not obtained"
        raise _not_found(what, fix, f"download failed: {type(error).__name__}") from None


def _hub_file(repo_id: str, filename: str, cache_dir: str | None, offline: bool) -> Path:
    """``filename`` of hub repo ``repo_id`` as open_clip's ``download_pretrained_from_hf`` gets it (its safetensors
    twin preferred): from the cache, or downloaded unless offline."""
    from huggingface_hub import try_to_load_from_cache

    filenames = [*_get_safe_alternatives(filename), filename]  # the files open_clip tries, in its order
    cached = (try_to_load_from_cache(repo_id, name, cache_dir=cache_dir) for name in filenames)
    found = next((Path(path) for path in cached if isinstance(path, str) and os.path.isfile(path)), None)
    where = f"the Hugging Face cache ({cache_dir or 'HF_HOME, default ~/.cache/huggingface'})"
    fix = (f"Download '{filenames[0]}' from the hub repo '{repo_id}' on a machine with internet access (for example "
           f"`hf download {repo_id} {filenames[0]}`) and copy that cache folder here, point "
           f"--cache-dir / {CACHE_ENV} at it, or pass the file itself with --pretrained PATH.")
    return _obtain(f"hub repo '{repo_id}'", found, f"{', '.join(filenames)} in {where}", fix, offline,
                   lambda: download_pretrained_from_hf(repo_id, filename, cache_dir=cache_dir))


def _hub_folder(repo_id: str, cache_dir: str | None, offline: bool) -> tuple[str, Path]:
    """A hub model's ``open_clip_config.json`` and weights, as open_clip's ``create_model('hf-hub:...')`` gets
    them; returns the config's folder as an open_clip ``local-dir:`` name, and the checkpoint."""
    config = _hub_file(repo_id, HF_CONFIG_NAME, cache_dir, offline)
    checkpoint = _hub_file(repo_id, HF_WEIGHTS_NAME, cache_dir, offline)
    return f"local-dir:{config.parent}", checkpoint


def _tag_checkpoint(name: str, tag: str, cache_dir: str | None, offline: bool) -> Path:
    """The checkpoint of an open_clip pretrained tag, where open_clip's ``download_pretrained`` puts it: from the
    cache, or downloaded unless offline."""
    cfg = get_pretrained_cfg(name, tag)
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])  # 'org/repo/' or 'org/repo/file', split as open_clip does
        return _hub_file(repo_id, filename or HF_WEIGHTS_NAME, cache_dir, offline)
    url = cfg.get("url", "")
    if not url:
        raise _not_found(f"'{name}' tag '{tag}'", "open_clip lists no download location for this tag; pass the "
                         "checkpoint with --pretrained PATH.")
    folder = cache_dir or os.path.expanduser("~/.cache/clip")  # open_clip's own default
    target = Path(folder) / os.path.basename(url)
    fix = (f"Download {url} on a machine with internet access and place it at {target} (or point --cache-dir / "
           f"{CACHE_ENV} at its folder), or pass the file itself with --pretrained PATH.")
    return _obtain(f"'{name}' tag '{tag}'", target if target.is_file() else None, str(target), fix, offline,
                   lambda: download_pretrained(cfg, cache_dir=folder))


def resolve_source(model: str, pretrained: str | None = None, cache_dir: str | os.PathLike | None = None,
                   offline: bool | None = None) -> ClipSource:
    """Resolve a model name and pretrained value to an open_clip name and a local checkpoint path.

    model: an open_clip registry name (``ViT-B-16``), ``hf-hub:org/repo``, ``local-dir:/path`` or a folder path.
    pretrained: None for the model's default weights (its card's bundled ones, else open_clip's first tag); a tag;
    a checkpoint file or folder; or ``"random"`` for random initialisation. Raises ``WeightsNotFoundError`` or
    ``UnknownModelError`` with a message that says how to fix it.
    """
    cache = default_cache_dir(cache_dir)
    offline = is_offline(offline)
    try:
        schema, identifier = parse_model_name(model)
    except ValueError as error:  # 'hf-hub:' or 'local-dir:' with nothing after it
        raise UnknownModelError(f"{error} Use 'hf-hub:org/repo' or 'local-dir:/path'.") from None
    if schema == "hf-hub":
        name, checkpoint = _hub_folder(identifier, cache, offline)
        return ClipSource(name, checkpoint, model)
    if schema == "local-dir" or os.path.isdir(model):
        folder = Path(identifier)
        if not (folder / HF_CONFIG_NAME).is_file():
            raise _not_found(f"folder '{folder}'", f"An open_clip model folder holds {HF_CONFIG_NAME} and one of "
                             f"{', '.join(CHECKPOINT_NAMES)}.", f"no {HF_CONFIG_NAME} there")
        checkpoint = _checkpoint_in_dir(folder)
        if checkpoint is None:
            raise _not_found(f"folder '{folder}'", f"Place one of {', '.join(CHECKPOINT_NAMES)} in it.",
                             "no checkpoint file there")
        return ClipSource(f"local-dir:{folder}", checkpoint, model)
    if model not in open_clip.list_models():
        raise UnknownModelError(f"Unknown model '{model}'. Use an open_clip model name (e.g. ViT-B-16; "
                                f"`python -c 'import open_clip; print(open_clip.list_models())'` lists them), "
                                f"'hf-hub:org/repo', 'local-dir:/path', or '{TOY_MODEL}'.")
    if pretrained == RANDOM_INIT:
        return ClipSource(model, None, f"{model} (random init)")
    bundled = model_card(model).bundled
    if bundled is not None and pretrained in (None, bundled[0]):
        tag, path = bundled
        if not path.is_file():
            raise _not_found(f"'{model}' tag '{tag}'", f"The package ships it at {path}; reinstall freelabel "
                             "or retrain it with `freelabel toy train-clip`.", "file missing")
        return ClipSource(model, path, f"{model}:{tag}")
    tags = list_pretrained_tags_by_model(model)
    if pretrained is None:
        if not tags:
            raise UnknownModelError(f"Model '{model}' has no pretrained tag in open_clip; pass --pretrained with a "
                                    f"checkpoint file, or '{RANDOM_INIT}' for random weights.")
        pretrained = tags[0]
    if pretrained in tags:
        return ClipSource(model, _tag_checkpoint(model, pretrained, cache, offline), f"{model}:{pretrained}",
                          tag=pretrained)
    path = Path(pretrained)
    if path.is_dir():
        checkpoint = _checkpoint_in_dir(path)
        if checkpoint is None:
            raise _not_found(f"'{model}' in folder '{path}'", f"Place one of {', '.join(CHECKPOINT_NAMES)} in it.")
        return ClipSource(model, checkpoint, f"{model}:{checkpoint}")
    if path.suffix in {".safetensors", ".bin", ".pt", ".pth"} or os.sep in pretrained:
        if not path.is_file():
            raise _not_found(f"'{model}'", f"Check the path, or use one of its tags: {', '.join(tags) or 'none'}.",
                             f"no file at {path}")
        return ClipSource(model, path, f"{model}:{path}")
    raise UnknownModelError(f"Unknown pretrained tag '{pretrained}' for '{model}'. Known tags: "
                            f"{', '.join(tags) or 'none'}; or pass a checkpoint file or folder.")


def load_weights(model: torch.nn.Module, path: str | os.PathLike, description: str) -> None:
    """Load a checkpoint into ``model`` strictly, as open_clip's ``load_checkpoint`` does (other layouts converted,
    position embeddings resized to the model's), behind freelabel's guards (``freelabel.clip.checkpoint``): an
    unreadable, unsafe or damaged file raises ``CorruptCheckpointError`` or ``UnsafeCheckpointError``, a mismatch of
    keys, shapes or dtype family ``IncompatibleWeightsError``, NaN or inf weights ``CorruptCheckpointError``.
    description: the model asked for, for messages."""
    state = _open_clip_layout(model, read_state_dict(path))
    check_fits(state, model.state_dict(), path, description)
    model.load_state_dict(state)


def _open_clip_layout(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` made to fit ``model`` by the steps of open_clip's ``load_checkpoint`` between reading a file and
    loading it (that function reads the file itself, without freelabel's guards): third-party layouts converted,
    the text tower moved under ``text.`` for a custom-text model, a 0-d or 1-d logit scale or bias reshaped to the
    model's, stale ``position_ids`` dropped, and the image and text position embeddings resized to the model's grid
    and context length. The input dict is not changed."""
    state = convert_state_dict(model, dict(state))
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    for key in ("logit_scale", "logit_bias"):
        target = getattr(model, key, None)
        if key in state and target is not None and target.ndim != state[key].ndim:
            state[key] = state[key].reshape(target.shape)
    state.pop(POSITION_IDS, None)  # text towers of transformers >= 4.31 have no such buffer
    # (open_clip also adds a zero logit_bias to a CLIP checkpoint loaded into a SigLIP model, to start training one;
    # for inference that checkpoint does not fit, and check_fits says so)
    stored = {key: state[key] for key in POSITION_EMBEDDINGS if key in state}
    resized = {key: value.float() for key, value in stored.items()}  # CPU has no float16 bicubic resize
    try:
        resize_pos_embed(resized, model)
        resize_text_pos_embed(resized, model)
    except (AssertionError, RuntimeError, ValueError):
        return state  # another architecture's embeddings (another width, no square grid): check_fits names them
    state.update({key: value.to(stored[key].dtype) for key, value in resized.items()
                  if value.shape != stored[key].shape})
    return state


def _tag_build_options(name: str, tag: str | None) -> dict:
    """Keyword arguments for ``open_clip.create_model(name, pretrained=None)`` that build and describe the model
    as a load of pretrained tag ``tag`` would; none without a tag (the model config's defaults then hold)."""
    if tag is None:
        return {}
    cfg = get_pretrained_cfg(name, tag)
    # create_model(pretrained=tag) merges the tag's preprocessing the same way; the input size always follows the
    # built model there, so the tag's is left out here too
    preprocess = {key: value for key, value in merge_preprocess_dict({}, cfg).items() if key != "size"}
    # create_model(pretrained=tag) only warns when the tag was trained with QuickGELU and the model config lacks
    # it, but with plain GELU the pretrained features are damaged (open_clip issue 771); a tag without the flag
    # leaves the model config's choice, as open_clip does
    return {"force_quick_gelu": bool(cfg.get("quick_gelu", False)), "force_preprocess_cfg": preprocess}


class _WeightsFollowFilter(logging.Filter):
    """Drops open_clip's "initialized randomly" warning when freelabel loads the weights right after."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


def load_clip(model: str | ClipConfig = "ViT-B-16", pretrained: str | None = None, *,
              device: str | torch.device = "cpu", cache_dir: str | os.PathLike | None = None,
              offline: bool | None = None, text_cache: str | os.PathLike | None = None) -> LoadedClip:
    """Build a CLIP model from open_clip's registry and load its weights (see ``resolve_source``).

    A pretrained tag's preprocessing applies as in ``open_clip.create_model_and_transforms``, and so does its
    QuickGELU flag (which open_clip itself only warns about); hub and folder models take theirs from their
    ``open_clip_config.json``; a checkpoint file given for a registry name has no tag: the config's defaults hold.
    model: a model name, or a ``ClipConfig`` (then the other arguments are ignored). text_cache: the label-embedding
    cache folder, see ``freelabel.clip.text.text_cache_dir``.
    Returns a ``LoadedClip`` in eval mode on ``device``.
    """
    if isinstance(model, ClipConfig):
        model, pretrained, device, cache_dir, offline, text_cache = (
            model.model, model.pretrained, model.device, model.cache_dir, model.offline, model.text_cache)
    source = resolve_source(model, pretrained, cache_dir, offline)
    quiet = _WeightsFollowFilter() if source.checkpoint is not None else None
    if quiet:
        logging.getLogger().addFilter(quiet)
    try:
        # random initialisation is seeded, so every process (tune's workers, a resumed run) builds the same model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            net = open_clip.create_model(source.open_clip_name, pretrained=None, load_weights=False, device="cpu",
                                         cache_dir=default_cache_dir(cache_dir),
                                         **_tag_build_options(source.open_clip_name, source.tag))
    finally:
        if quiet:
            logging.getLogger().removeFilter(quiet)
    if source.checkpoint is not None:
        load_weights(net, source.checkpoint, source.description)
    clip = LoadedClip.from_model(net.to(check_device(device)), model, source.description, source.open_clip_name)
    clip.text_cache_dir = text_cache_dir(text_cache)
    return clip
