"""Loading CLIP models through open_clip's own registry, and encoding images and label texts with them.

Weights come from one of:
- an open_clip model name and pretrained tag (``ViT-B-16`` + ``openai``), fetched into the cache unless offline;
- a Hugging Face hub id (``hf-hub:org/repo``) holding ``open_clip_config.json`` and weights;
- a local checkpoint file (``--pretrained path.safetensors``) or an open_clip folder (``local-dir:/path``);
- the bundled toy model ``freelabel-toy`` (no download ever).

safetensors files are preferred; pickled checkpoints are read only with ``torch.load(weights_only=True)``.
Missing weights in offline mode raise ``WeightsNotFoundError``, whose message says what was looked for and
which file to place where.

A pretrained tag also fixes how the model is built and fed: open_clip's ``get_pretrained_cfg`` gives its
``quick_gelu`` flag and its image preprocessing (mean, std, interpolation, resize mode). The model is built with
both, though freelabel finds the weights itself; hub and folder models take theirs from ``open_clip_config.json``.
"""

from __future__ import annotations

import logging
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.pretrained import download_pretrained_from_url, get_pretrained_cfg, list_pretrained_tags_by_model
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from PIL import Image

from freelabel.clip.text import TextEmbeddingCache, encode_prompts, text_cache_dir, text_tower_digest
from freelabel.config import option
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io.images import check_rgb

MODEL_CONFIG_DIR = Path(__file__).parents[1] / "model_configs"
BUNDLED_WEIGHTS_DIR = Path(__file__).parents[1] / "toy" / "weights"
TOY_MODEL = "freelabel-toy"
# Models whose weights ship inside the package: name -> (pretrained tag, file).
BUNDLED: dict[str, tuple[str, Path]] = {TOY_MODEL: ("freelabel", BUNDLED_WEIGHTS_DIR / "freelabel-toy.safetensors")}
RANDOM_INIT = "random"  # the pretrained value that asks for random initialisation (speed benchmarks, tests)
RANDOM_INIT_SEED = 0  # torch seed of a random initialisation
CHECKPOINT_FIX = "Re-download it, or check that --pretrained names the file you meant."
CACHE_ENV = "FREELABEL_CACHE_DIR"
# Folders of extra open_clip model configs (JSON, as open_clip's own), separated by os.pathsep; registered at import,
# so that worker processes know a custom architecture too.
MODEL_CONFIGS_ENV = "FREELABEL_MODEL_CONFIGS"
OFFLINE_ENV = "FREELABEL_OFFLINE"
HF_CONFIG_NAME = "open_clip_config.json"
# Checkpoint names in an open_clip folder or hub repo, most preferred first.
CHECKPOINT_NAMES = ("open_clip_model.safetensors", "model.safetensors", "open_clip_pytorch_model.bin",
                    "pytorch_model.bin", "open_clip_pytorch_model.pth", "model.pth")

open_clip.add_model_config(MODEL_CONFIG_DIR)
for _folder in filter(None, os.environ.get(MODEL_CONFIGS_ENV, "").split(os.pathsep)):
    open_clip.add_model_config(_folder)

# CLIP's prompt ensemble, shortened to the templates that carry most of its gain.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a rendering of a {}.", "graffiti of a {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a pixelated photo of the {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a photo of one {}.", "a close-up photo of the {}.", "a photo of a large {}.", "a photo of a small {}.",
    "itap of a {}.", "a photo of the large {}.", "a photo of the small {}.", "art of the {}.", "a {}.",
)
TEXT_BATCH = 512  # prompts per text-tower pass when many labels are encoded at once
DISK_SHARD_LABELS = 4096  # labels per on-disk cache shard: a killed run keeps what it encoded, in few files
# Models trained on other captions get their own templates.
MODEL_TEMPLATES: dict[str, tuple[str, ...]] = {
    TOY_MODEL: ("a photo of a {}.", "a picture of a {}.", "a {}.", "an image with a {}."),
}
# Image preprocessing of models that no open_clip tag describes, over open_clip's defaults (which are bicubic and
# 'shortest'). The toy was trained on renders drawn at its input size, and has always been evaluated with
# bilinear squashing; open_clip's model configs cannot hold this (every key there goes to the model's constructor).
MODEL_PREPROCESS: dict[str, dict[str, str]] = {
    TOY_MODEL: {"interpolation": "bilinear", "resize_mode": "squash"},
}
INTERPOLATIONS = ("bicubic", "bilinear")
RESIZE_MODES = ("shortest", "squash", "longest")


class WeightsNotFoundError(FreelabelError, FileNotFoundError):
    """The requested weights are neither on disk nor obtainable (offline, or the download failed)."""


class UnsafeCheckpointError(FreelabelError):
    """A pickled checkpoint holds objects beyond plain tensors, so it is refused."""


class IncompatibleWeightsError(FreelabelError):
    """A checkpoint does not fit the requested architecture (keys, shapes, or a non-floating tensor where the
    model has floating weights)."""


class CorruptCheckpointError(FreelabelError):
    """A checkpoint file is not what its name claims, is truncated or unreadable, or holds NaN or inf weights."""


class UnknownModelError(FreelabelError, KeyError):
    """The model name is not in open_clip's registry, or the pretrained tag is unknown for it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass
class ClipConfig:
    """Which CLIP to load and where. Saved beside every output that a model produced."""

    model: str = option("ViT-B-16", help="open_clip model name, hf-hub:ORG/REPO, local-dir:PATH, or freelabel-toy.")
    pretrained: str | None = option(None, help="Pretrained tag, checkpoint file or folder; None = the model's "
                                    "default; 'random' = no weights.")
    device: str = option("cpu", help="Torch device for the model, e.g. cpu or cuda.")
    cache_dir: str | None = option(None, path="folder", help="Weight cache; None = $FREELABEL_CACHE_DIR, else the "
                                   "hub's and open_clip's own.")
    offline: bool | None = option(None, flag="--offline/--online", help="Never download; None = $FREELABEL_OFFLINE "
                                  "or $HF_HUB_OFFLINE.")
    text_cache: str | None = option(None, help="Label-embedding cache folder, or 'off'; None = "
                                    "$FREELABEL_TEXT_CACHE, else ~/.cache/freelabel/text-embeddings.")

    def __post_init__(self) -> None:
        check_device(self.device)


def check_device(device: str | torch.device) -> torch.device:
    """The torch device named by ``device``; ``ConfigError`` for a malformed name or a CUDA device this machine
    does not have."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use e.g. cpu, cuda or cuda:1") from None
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device {device!r} is not available here (CUDA devices: {torch.cuda.device_count()})")
    return parsed


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
    open_clip's defaults, with ``MODEL_PREPROCESS`` on top for freelabel's own models.
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
        cfg = PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(size=net.visual.image_size),
                                                    {**open_clip.get_model_preprocess_cfg(net),
                                                     **MODEL_PREPROCESS.get(name, {})}))
        size = cfg.size
        return cls(
            model=net.eval(),
            tokenizer=open_clip.get_tokenizer(open_clip_name or name),
            name=name,
            pretrained=pretrained,
            mean=tuple(float(v) for v in cfg.mean),
            std=tuple(float(v) for v in cfg.std),
            image_size=(size, size) if isinstance(size, int) else tuple(size),
            templates=MODEL_TEMPLATES.get(name, DEFAULT_TEMPLATES),
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


def _hub_file(repo_id: str, filenames: Sequence[str], cache_dir: str | None, offline: bool) -> Path:
    """The first of ``filenames`` in hub repo ``repo_id``: from the cache, or downloaded unless offline."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
        if isinstance(cached, str) and os.path.isfile(cached):
            return Path(cached)
    where = f"the Hugging Face cache ({cache_dir or 'HF_HOME, default ~/.cache/huggingface'})"
    fix = (f"Download '{filenames[0]}' from the hub repo '{repo_id}' on a machine with internet access (for example "
           f"`hf download {repo_id} {filenames[0]}`) and copy that cache folder here, point "
           f"--cache-dir / {CACHE_ENV} at it, or pass the file itself with --pretrained PATH.")
    if offline:
        raise _not_found(f"hub repo '{repo_id}'", fix, f"offline mode; looked for {', '.join(filenames)} in {where}")
    errors = []
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir))
        except Exception as error:  # the hub client raises many types; all mean "not obtained"
            errors.append(f"{filename}: {type(error).__name__}")
    raise _not_found(f"hub repo '{repo_id}'", fix, "download failed: " + "; ".join(errors))


def _hub_folder(repo_id: str, cache_dir: str | None, offline: bool) -> tuple[str, Path]:
    config = _hub_file(repo_id, [HF_CONFIG_NAME], cache_dir, offline)
    checkpoint = _hub_file(repo_id, CHECKPOINT_NAMES[:3], cache_dir, offline)
    return f"local-dir:{config.parent}", checkpoint


def _tag_checkpoint(name: str, tag: str, cache_dir: str | None, offline: bool) -> Path:
    """The checkpoint for an open_clip pretrained tag, from the cache or downloaded unless offline."""
    cfg = get_pretrained_cfg(name, tag)
    if cfg.get("hf_hub"):
        repo_id, filename = _split_hub(cfg["hf_hub"])
        names = [filename] if filename else []
        names += [n for n in CHECKPOINT_NAMES[:3] if n not in names]
        return _hub_file(repo_id, names, cache_dir, offline)
    url = cfg.get("url", "")
    if not url:
        raise _not_found(f"'{name}' tag '{tag}'", "open_clip lists no download location for this tag; pass the "
                         "checkpoint with --pretrained PATH.")
    folder = cache_dir or os.path.expanduser("~/.cache/clip")
    target = Path(folder) / os.path.basename(url)
    if target.is_file():
        return target
    fix = (f"Download {url} on a machine with internet access and place it at {target} (or point --cache-dir / "
           f"{CACHE_ENV} at its folder), or pass the file itself with --pretrained PATH.")
    if offline:
        raise _not_found(f"'{name}' tag '{tag}'", fix, f"offline mode; looked for {target}")
    try:
        return Path(download_pretrained_from_url(url, cache_dir=folder))
    except Exception as error:
        raise _not_found(f"'{name}' tag '{tag}'", fix, f"download failed: {type(error).__name__}") from None


def _split_hub(hf_hub: str) -> tuple[str, str]:
    """open_clip writes hub locations as ``org/repo/`` or ``org/repo/filename``."""
    parts = hf_hub.strip("/").split("/")
    return "/".join(parts[:2]), "/".join(parts[2:])


def resolve_source(model: str, pretrained: str | None = None, cache_dir: str | os.PathLike | None = None,
                   offline: bool | None = None) -> ClipSource:
    """Resolve a model name and pretrained value to an open_clip name and a local checkpoint path.

    model: an open_clip registry name (``ViT-B-16``), ``hf-hub:org/repo``, ``local-dir:/path`` or a folder path.
    pretrained: None for the model's default weights (bundled, or open_clip's first tag); a tag; a checkpoint
    file or folder; or ``"random"`` for random initialisation. Raises ``WeightsNotFoundError`` or
    ``UnknownModelError`` with a message that says how to fix it.
    """
    cache = default_cache_dir(cache_dir)
    offline = is_offline(offline)
    if model.startswith("hf-hub:"):
        repo_id = model[len("hf-hub:"):]
        name, checkpoint = _hub_folder(repo_id, cache, offline)
        return ClipSource(name, checkpoint, model)
    if model.startswith("local-dir:") or os.path.isdir(model):
        folder = Path(model[len("local-dir:"):] if model.startswith("local-dir:") else model)
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
    if model in BUNDLED and pretrained in (None, BUNDLED[model][0]):
        tag, path = BUNDLED[model]
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


_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library refuses larger headers


def _first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of an error's message, shortened, for the parenthesis that ends a one-paragraph message."""
    text = (str(error).strip().splitlines() or [""])[0].strip() or type(error).__name__
    if len(text) > limit and ". " in text:
        text = text[:text.index(". ") + 1]  # torch's messages go on with advice of their own
    text = text if len(text) <= limit else text[:limit - 3].rstrip() + "..."
    return text.rstrip(".") if not text.endswith("...") else text  # the message adds its own full stop


def _file_kind(path: Path) -> str:
    """What a checkpoint file holds, from its first bytes: 'empty', 'zip' (``torch.save``), 'pickle' (legacy
    ``torch.save`` or plain pickle), 'safetensors', or 'unknown'. Raises ``CorruptCheckpointError`` when the file
    cannot be read at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as error:
        raise CorruptCheckpointError(
            f"The checkpoint {path} cannot be read ({_first_line(error)}). Check the file's permissions, or "
            f"check that --pretrained names the file you meant.") from None
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:  # pickle PROTO opcode, protocols 2-5
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER:
        return "safetensors"
    return "unknown"


def _safetensors_problem(path: Path) -> str:
    """Why a file that starts like safetensors could not be read, as a predicate ('is truncated (...)' when it is
    shorter than its header says)."""
    import json

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if 8 + header_len > size:
                return (f"is truncated (it has {size} bytes, fewer than its {header_len}-byte header alone needs; "
                        f"the download or copy did not finish)")
            header = json.loads(f.read(header_len))
            ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "is damaged"
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        return (f"is truncated (it has {size} bytes where its header describes {expected}; the download or copy did "
                f"not finish)")
    return "is damaged"


def _read_safetensors(path: Path, kind: str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors, given its ``_file_kind``; ``CorruptCheckpointError`` when it is something
    else, truncated or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if kind in ("zip", "pickle"):
        raise CorruptCheckpointError(
            f"The checkpoint {path} is not a safetensors file: it is a PyTorch pickle (as torch.save writes) with a "
            f".safetensors name. Rename it to .pt, so that freelabel reads it with torch.load(weights_only=True), "
            f"or convert it with safetensors.torch.save_file on a machine you trust.")
    if kind == "unknown":
        raise CorruptCheckpointError(
            f"The checkpoint {path} is not a safetensors file (its first bytes are neither a safetensors header nor "
            f"a PyTorch pickle), or its start is damaged. {CHECKPOINT_FIX}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptCheckpointError(f"The checkpoint {path} {_safetensors_problem(path)}, so it cannot be read as "
                                     f"safetensors ({_first_line(error)}). {CHECKPOINT_FIX}") from None


def _read_pickle(path: Path, kind: str) -> object:
    """A pickled checkpoint, given its ``_file_kind``, read with ``torch.load(weights_only=True)`` only;
    ``UnsafeCheckpointError`` for a pickle that needs more than tensors, ``CorruptCheckpointError`` for one that is
    truncated or no checkpoint."""
    if kind == "safetensors":
        raise CorruptCheckpointError(
            f"The checkpoint {path} is a safetensors file with a {path.suffix or 'missing'} suffix, not a PyTorch "
            f"pickle. Rename it to .safetensors so that freelabel reads it as one.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if kind == "unknown":
            raise CorruptCheckpointError(
                f"The checkpoint {path} is neither a PyTorch checkpoint nor a safetensors file (its first bytes are "
                f"neither), or its start is damaged. {CHECKPOINT_FIX}") from None
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: it is a pickle that holds more than tensors, and freelabel only reads "
            f"pickled checkpoints with torch.load(weights_only=True). Convert it to safetensors on a machine "
            f"you trust. ({_first_line(error)})") from None
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - zip, EOF and storage errors from a cut or damaged file
        raise CorruptCheckpointError(f"The checkpoint {path} is truncated or damaged: PyTorch cannot read it "
                                     f"({_first_line(error)}). {CHECKPOINT_FIX}") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors: safetensors directly, pickles only with ``torch.load(weights_only=True)``.

    Accepts plain state dicts and ``{"state_dict": ...}`` wrappers (``module.`` prefixes are removed).
    Raises ``UnsafeCheckpointError`` for pickles that need arbitrary code to load, ``CorruptCheckpointError``
    for a file that is not what its suffix says, is empty, truncated or otherwise unreadable, and
    ``IncompatibleWeightsError`` for one that holds no state dict of tensors.
    """
    path = Path(path)
    kind = _file_kind(path)  # from the first bytes: what the file is, whatever its suffix says
    if kind == "empty":
        raise CorruptCheckpointError(f"The checkpoint {path} is empty (0 bytes): the download or copy did not "
                                     f"finish. {CHECKPOINT_FIX}")
    state = _read_safetensors(path, kind) if path.suffix == ".safetensors" else _read_pickle(path, kind)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IncompatibleWeightsError(f"{path} does not hold a state dict of tensors. Pass a file that holds the "
                                       f"model's state_dict (or {{'state_dict': ...}}), or check --pretrained.")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _dtype_kind(tensor: torch.Tensor) -> str:
    """The family of a tensor's dtype: weights may change precision within a family when loaded, not family."""
    if tensor.is_floating_point():
        return "floating"
    if tensor.is_complex():
        return "complex"
    return "boolean" if tensor.dtype == torch.bool else "integer"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_dtypes(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path,
                  description: str) -> None:
    """``IncompatibleWeightsError`` when a tensor's dtype family differs from the model's (float16 or bfloat16
    weights for a float32 model are fine; int64 or bool ones are not)."""
    wrong = [k for k in expected if _dtype_kind(state[k]) != _dtype_kind(expected[k])]
    if wrong:
        k = wrong[0]
        raise IncompatibleWeightsError(
            f"The checkpoint {path} does not fit {description}: {len(wrong)} tensor(s) of the wrong dtype (e.g. {k} "
            f"is {_dtype_name(state[k].dtype)} where the model expects a {_dtype_kind(expected[k])} tensor, "
            f"{_dtype_name(expected[k].dtype)}). Float32, float16 and bfloat16 weights all load; re-export or "
            f"convert the checkpoint with the model's own dtypes, or check that --pretrained names the weights you "
            f"meant.")


def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether a floating tensor holds neither NaN nor inf, without a copy in the common case.

    A sum is finite only if every term is (NaN and inf propagate through any order of additions; +inf and -inf
    give NaN), so a finite sum settles it exactly and reads the tensor once. ``torch.isfinite`` instead builds an
    ``abs`` copy and three boolean temporaries, about ten times slower on CPU; it runs only when the sum is not
    finite, which also covers a sum that overflows (float16 weights summing past 65504) without a false alarm.
    """
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """``CorruptCheckpointError`` when a floating tensor holds NaN or inf. Costs one pass over each floating
    tensor (``_all_finite``); values are counted only for the tensors that fail."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not _all_finite(t)]
    if bad:
        counts = {k: (int(torch.isnan(state[k]).sum()), int((~torch.isfinite(state[k])).sum())) for k in bad}
        total = sum(n for _, n in counts.values())
        k = max(bad, key=lambda key: counts[key][1])  # the worst tensor as the example
        nan, n = counts[k]
        example = " and ".join(f"{count} {what}" for count, what in ((nan, "NaN"), (n - nan, "inf")) if count)
        raise CorruptCheckpointError(
            f"The checkpoint {path} holds {total} non-finite values in {len(bad)} tensor(s) (e.g. {example} in "
            f"{k}), so every mask made with it would be wrong. Re-download it; if you trained it, "
            f"take a checkpoint from before training diverged; and check that --pretrained names the file you "
            f"meant.")


def load_weights(model: torch.nn.Module, path: str | os.PathLike, description: str) -> None:
    """Load a checkpoint into ``model`` strictly; a mismatch of keys, shapes or dtype family raises
    ``IncompatibleWeightsError``, NaN or inf weights (or an unreadable file) ``CorruptCheckpointError``."""
    path = Path(path)
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            k = min(wrong_shape)
            details.append(f"{len(wrong_shape)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                           f"{tuple(expected[k].shape)} in the model)")
        raise IncompatibleWeightsError(f"The checkpoint {path} does not fit {description}: " + "; ".join(details)
                                       + ". Check that --model names the architecture the weights were trained for.")
    _check_dtypes(state, expected, path, description)
    _check_finite(state, path)
    model.load_state_dict(state)


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
