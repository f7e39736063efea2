"""Training the selected-label segmenter on pseudo-masks (``freelabel train``).

One run folder is one training run. Its ``run.json`` is written before the first step; ``state.safetensors`` is saved at
every epoch end and every ``checkpoint_minutes``, so a killed run resumes from its last state to the weights an
uninterrupted run reaches (on CPU, where kernels are deterministic). Launched by ``torchrun`` (``WORLD_SIZE`` > 1)
the same command trains with DistributedDataParallel: each process takes its share of every global batch, and
process 0 alone validates and writes.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from freelabel.clip.loading import ClipConfig, load_clip
from freelabel.config import option
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io.files import append_jsonl, provenance, read_json, read_jsonl
from freelabel.io.images import MAX_PIXELS, read_image
from freelabel.io.labels import class_lookup, read_classes
from freelabel.io.masks import IGNORE_INDEX, read_mask
from freelabel.metrics import ConfusionMatrix
from freelabel.optim import param_groups, warmup_cosine
from freelabel.segmenter.checkpoint import RUN, load_state, save_model, save_state, write_run
from freelabel.segmenter.config import SegmenterConfig
from freelabel.segmenter.data import (AugmentedPseudoMasks, PseudoMaskSet, read_pseudo_masks, split,
                                      vocabulary_lookup)
from freelabel.segmenter.factory import architecture_config, create_segmenter
from freelabel.segmenter.modeling import SegmenterOutput, SelectedLabelSegmenter
from freelabel.segmenter.predictor import Segmenter

PRESET_DIR = Path(__file__).parent / "presets"
METRICS, ERRORS = "metrics.jsonl", "errors.jsonl"
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """How the segmenter is trained. The field defaults are the library's; a model may ship its own
    (``freelabel/segmenter/presets/<model>.json``, see ``train_preset``). Saved in ``run.json``."""

    clip: ClipConfig = option(default_factory=ClipConfig, help="Whose image tower is the backbone, whose text tower "
                              "names the labels.")
    architecture: str = option("rankseg", help="Segmenter architecture: a config in freelabel/segmenter/configs.")
    top_k: int | None = option(None, help="Labels selected per image; None = the architecture's.")
    rank_norm: bool | None = option(None, help="Rank-adaptive temperatures; None = the architecture's.")
    images_dir: str | None = option(None, flag="--images", path="existing-folder", help="The pseudo-masks' images; "
                                    "None = the folder their manifest names.")
    epochs: int = option(20, help="Passes over the training split; the learning-rate schedule spans them.")
    max_minutes: float | None = option(None, help="Stop (with a saved state, resumable) after this much training "
                                       "time; None = no limit.")
    batch_size: int = option(16, help="Images per optimiser step, over all processes.")
    lr: float = option(3e-4, help="Peak AdamW learning rate of the decoder and heads.")
    backbone_lr_scale: float = option(0.1, help="The CLIP tower's learning rate relative to lr; 0 = frozen.")
    weight_decay: float = option(0.05, help="AdamW weight decay on matrices.")
    warmup_fraction: float = option(0.05, help="Share of the steps spent warming the learning rate up linearly.")
    grad_clip: float = option(1.0, help="Gradient norm clip; 0 = none.")
    input_size: int | None = option(None, help="Short side of images in training and prediction; None = the CLIP's "
                                    "size.")
    crop_size: int | None = option(None, help="Side of the square training crops; None = input_size.")
    scale_range: tuple[float, float] = option((0.5, 2.0), help="Random rescaling of the short side around "
                                              "input_size, e.g. '0.5,2'.")
    multilabel_weight: float = option(5.0, help="Weight of the multi-label (asymmetric) loss against the pixel loss.")
    given_labels_fraction: float = option(0.5, help="Share of images trained as `predict --labels` sees them "
                                          "(candidates: the labels of their mask); the rest rank the whole "
                                          "vocabulary (`predict` without labels).")
    holdout_labels: tuple[str, ...] = option((), help="Labels left out of training (removed from the vocabulary, "
                                             "pixels ignored), e.g. 'cat,dog'.")
    val_fraction: float = option(0.1, help="Images held out of training to validate against their pseudo-masks.")
    val_masks: str | None = option(None, path="existing-folder", help="A folder of real masks (same names, "
                                   "classes.txt) to validate against as well.")
    precision: str = option("auto", choices=PRECISIONS, help="fp32, bf16 (autocast) or auto (bf16 on GPU, fp32 on "
                            "CPU).")
    workers: int = option(2, help="Data-loading processes per training process.")
    checkpoint_minutes: float = option(10.0, help="Save the training state at least this often (and at every epoch "
                                       "end).")
    seed: int = option(0, help="Data split, order, augmentation and head initialisation seed.")
    max_pixels: int | None = option(MAX_PIXELS, help="Larger images are refused unread; None = no limit.")

    def __post_init__(self) -> None:
        if isinstance(self.clip, dict):
            self.clip = ClipConfig(**self.clip)
        self.scale_range = tuple(self.scale_range)
        self.holdout_labels = tuple(self.holdout_labels)
        positive_ints = ("epochs", "batch_size", "input_size", "crop_size", "top_k")
        for name in positive_ints:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("lr", "max_minutes", "checkpoint_minutes"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("backbone_lr_scale", "weight_decay", "grad_clip", "multilabel_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{name} must be a number >= 0, got {getattr(self, name)!r}")
        for name in ("warmup_fraction", "val_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)!r}")
        if not 0 <= self.given_labels_fraction <= 1:
            raise ConfigError(f"given_labels_fraction must be in [0, 1], got {self.given_labels_fraction!r}")
        if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
            raise ConfigError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.workers < 0:
            raise ConfigError(f"workers must be at least 0, got {self.workers}")
        self.segmenter_config()  # the architecture name and its overrides

    def segmenter_config(self) -> SegmenterConfig:
        """The architecture with this config's ``top_k`` and ``rank_norm`` on top."""
        overrides = {name: getattr(self, name) for name in ("top_k", "rank_norm") if getattr(self, name) is not None}
        return architecture_config(self.architecture, **overrides)


def train_preset(model: str) -> dict[str, Any]:
    """The training settings a model ships: ``freelabel/segmenter/presets/<model>.json`` holds ``{"train": {TrainConfig
    fields}, "source": {how they were chosen}}``; returns the ``train`` part, or {} (the library defaults)."""
    path = PRESET_DIR / f"{model}.json"
    if not path.is_file():
        return {}
    content = read_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("train"), dict):
        raise ConfigError(f"{path} is not a training preset (expected {{\"train\": {{...}}, \"source\": {{...}}}})")
    return dict(content["train"])


def train_config(clip: ClipConfig, **overrides: Any) -> TrainConfig:
    """TrainConfig for ``clip``: the library defaults, then the model's preset, then ``overrides`` (unknown
    fields raise ``ConfigError``)."""
    values = {**train_preset(clip.model), **overrides}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}")
    return TrainConfig(clip=clip, **values)


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, gamma_neg: float = 2.0,
                    gamma_pos: float = 0.0, clip: float = 0.05) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., 2021; RankSeg's multi-label loss): negatives' probabilities are shifted
    down by ``clip`` and focused by ``gamma_neg``, so the many absent labels do not drown the few present ones.

    logits, targets, weights: (B, N) float, targets in {0, 1}, weights 0 for entries that do not count. Returns
    the weighted mean over entries (0 when none counts).
    """
    probability = torch.sigmoid(logits.float())
    shifted = (probability - clip).clamp(min=0)
    positive = targets * torch.log(probability.clamp(min=1e-8)) * (1 - probability).pow(gamma_pos)
    negative = (1 - targets) * torch.log((1 - shifted).clamp(min=1e-8)) * shifted.pow(gamma_neg)
    return -((positive + negative) * weights).sum() / weights.sum().clamp(min=1)


def ranked_targets(mask: torch.Tensor, selected: torch.Tensor, selected_valid: torch.Tensor, num_labels: int
                   ) -> torch.Tensor:
    """Pixel targets in rank space: mask (B, H, W) int64 in 0..num_labels (0 background) or 255; selected,
    selected_valid (B, k). Returns (B, H, W) int64: 0 background, 1 + j for the label ranked j, 255 for ignored
    pixels and pixels whose label is not selected (RankSeg leaves those out of the pixel loss)."""
    b, k = selected.shape
    table = torch.full((b, num_labels + 2), IGNORE_INDEX, dtype=torch.long, device=mask.device)
    table[:, 0] = 0
    ranks = torch.arange(1, k + 1, device=mask.device).expand(b, -1)
    table.scatter_(1, 1 + selected, torch.where(selected_valid, ranks, IGNORE_INDEX))
    index = torch.where(mask == IGNORE_INDEX, num_labels + 1, mask).flatten(1)
    return table.gather(1, index).view_as(mask)


def present_labels(mask: torch.Tensor, num_labels: int) -> torch.Tensor:
    """(B, num_labels) float: 1 where a label (1..num_labels in the (B, H, W) mask) covers any pixel."""
    index = torch.where(mask == IGNORE_INDEX, 0, mask).flatten(1)
    present = torch.zeros(mask.shape[0], num_labels + 1, device=mask.device).scatter_(1, index, 1.0)
    return present[:, 1:]


def segmenter_loss(out: SegmenterOutput, mask: torch.Tensor, given: torch.Tensor, usable: torch.Tensor,
                   num_labels: int, multilabel_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Pixel cross-entropy over background and the selected labels (upsampled logits, 255 ignored) plus the
    weighted asymmetric multi-label loss on images that ranked the whole vocabulary. mask: (B, H, W) int64;
    given, usable: (B,) bool. Returns the loss and its parts as floats."""
    targets = ranked_targets(mask, out.selected, out.selected_valid, num_labels)
    targets[~usable] = IGNORE_INDEX
    logits = F.interpolate(out.pixel_logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    if (targets != IGNORE_INDEX).any():
        pixel = F.cross_entropy(logits, targets, ignore_index=IGNORE_INDEX)
    else:  # keeps every parameter in the graph (DistributedDataParallel needs that)
        pixel = logits.sum() * 0
    weights = ((~given) & usable).float()[:, None].expand_as(out.label_logits)
    multilabel = asymmetric_loss(out.label_logits, present_labels(mask, num_labels), weights)
    return pixel + multilabel_weight * multilabel, {"pixel": pixel.item(), "multilabel": multilabel.item()}


@dataclass
class _Context:
    """What one process of a run needs."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def decide(self, *flags: bool) -> list[bool]:
        """Process 0's values of ``flags``, in every process."""
        if self.world == 1:
            return list(flags)
        values = torch.tensor([float(f) for f in flags], device=self.device)
        dist.broadcast(values, 0)
        return [bool(v) for v in values.tolist()]

    def gather(self, items: list) -> list:
        """Every process's ``items``, concatenated (process 0's first)."""
        if self.world == 1:
            return items
        everyone: list[list] = [[] for _ in range(self.world)]
        dist.all_gather_object(everyone, items)
        return [item for part in everyone for item in part]


def _context(config: TrainConfig) -> _Context:
    """Join the process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return _Context(device=torch.device(config.clip.device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = config.clip.device.startswith("cuda")
    if not dist.is_initialized():  # generous timeout: the others wait while process 0 validates and saves
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    return _Context(rank, world, device)


Problem = dict[str, str] | None  # {"path": ..., "message": ...} for an item that could not be read


def _collate(items: list[tuple[torch.Tensor, torch.Tensor, Problem]]
             ) -> tuple[torch.Tensor, torch.Tensor, list[Problem]]:
    return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]), [i[2] for i in items]


class _SafeItems(torch.utils.data.Dataset):
    """Items that cannot be read become an all-ignored blank with the problem, so one bad file costs one line in
    errors.jsonl, not the run (every process still takes the same steps)."""

    def __init__(self, data: AugmentedPseudoMasks):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor, Problem]:
        try:
            pixels, labels = self.data[position]
            return pixels, labels, None
        except FreelabelError as error:
            crop = self.data.crop
            blank = torch.full((crop, crop), IGNORE_INDEX, dtype=torch.long)
            path = str(self.data.data.image_path(self.data.indices[position]))
            return torch.zeros(3, crop, crop, dtype=torch.uint8), blank, {"path": path, "message": str(error)}


def _batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's global batches: a seeded permutation cut into full batches (the remainder is dropped, so every
    process sees batches of one size)."""
    order = np.random.default_rng((seed, epoch)).permutation(n).tolist()
    return [order[i:i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


class _ValidationSet:
    """Validation images and their masks in the vocabulary's index (255 ignored)."""

    def __init__(self, images: list[Path], masks: list[Path], lookup: np.ndarray, max_pixels: int | None):
        self.images, self.masks, self.lookup, self.max_pixels = images, masks, lookup, max_pixels

    def score(self, segmenter: Segmenter, vocabulary: list[str]) -> dict[str, float]:
        """mIoU of the segmenter's own selection and of the masks' own labels given (ignored = wrong)."""
        own, given = ConfusionMatrix(len(vocabulary) + 1), ConfusionMatrix(len(vocabulary) + 1)
        names = ["background", *vocabulary]
        for image_path, mask_path in zip(self.images, self.masks):
            try:
                image, truth = read_image(image_path, self.max_pixels), self.lookup[read_mask(mask_path)]
            except FreelabelError:
                continue  # reported by the training loader when it meets the file
            if truth.shape != image.shape[:2]:
                continue
            present = [vocabulary[i - 1] for i in np.unique(truth) if 0 < i < IGNORE_INDEX]
            try:
                segmenter.set_image(image)
                results = [segmenter.segment(labels) if labels != [] else None for labels in (None, present)]
            except (FreelabelError, RuntimeError, MemoryError):
                continue  # one image's problem (e.g. out of memory) does not end the training run
            for matrix, result in zip((own, given), results):
                if result is None:  # no label to give: all background
                    matrix.update(np.zeros_like(truth), truth)
                    continue
                to_vocabulary = class_lookup(["background", *result.labels], names, unknown=len(names))
                matrix.update(to_vocabulary[result.mask], truth)
        return {"miou": round(own.miou(), 4), "miou_given_labels": round(given.miou(), 4)}


def _validation_sets(config: TrainConfig, data: PseudoMaskSet, val_indices: list[int], lookup: np.ndarray,
                     vocabulary: list[str]) -> dict[str, _ValidationSet]:
    sets = {}
    if val_indices:
        sets["val"] = _ValidationSet([data.image_path(i) for i in val_indices], [data.masks[i] for i in val_indices],
                                     lookup, config.max_pixels)
    if config.val_masks:
        folder = Path(config.val_masks)
        classes = read_classes(folder / "classes.txt") if (folder / "classes.txt").is_file() else data.classes
        pairs = [(data.image_path(i), folder / Path(name).with_suffix(".png")) for i, name in enumerate(data.names)]
        pairs = [(image, mask) for image, mask in pairs if mask.is_file()]
        if not pairs:
            raise FreelabelError(f"--val-masks {folder} holds no mask named like the training images")
        sets["val_masks"] = _ValidationSet([p[0] for p in pairs], [p[1] for p in pairs],
                                           vocabulary_lookup(classes, vocabulary), config.max_pixels)
    return sets


# may change between a run and its resumption: they do not change what is learned
RUNTIME_SETTINGS = {"max_minutes", "workers", "checkpoint_minutes", "val_masks"}
RUNTIME_CLIP_SETTINGS = {"device", "cache_dir", "offline"}


def _binding(content: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``run.json`` a resumed run must share with the run it resumes, flattened to one level."""
    flat = {key: content.get(key) for key in ("data", "vocabulary", "architecture")}
    flat["clip"] = {k: v for k, v in content.get("clip", {}).items() if k not in RUNTIME_CLIP_SETTINGS}
    for key, value in content.get("train", {}).items():
        if key == "clip":
            continue
        if key not in RUNTIME_SETTINGS:
            flat[f"train.{key}"] = value
    return flat


def _check_run_dir(run_dir: Path, content: dict[str, Any]) -> None:
    """A run folder holds one run: resuming with other data or settings is refused."""
    if (run_dir / RUN).is_file():
        previous, current = _binding(read_json(run_dir / RUN)), _binding(content)
        changed = sorted(key for key in set(previous) | set(current) if previous.get(key) != current.get(key))
        if changed:
            raise FreelabelError(f"{run_dir} holds another training run ({', '.join(changed)} differ; see "
                                 f"{run_dir / RUN}); choose a new --out folder")


def _optimizer(model: SelectedLabelSegmenter, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the heads at ``lr`` and the CLIP tower at ``lr * backbone_lr_scale`` (frozen at 0); each group
    keeps its peak rate as ``base_lr`` for the schedule."""
    frozen = config.backbone_lr_scale == 0
    model.encoder.requires_grad_(not frozen)
    heads = torch.nn.ModuleList([module for name, module in model.named_children() if name != "encoder"])
    groups = param_groups(heads, config.weight_decay, lr=config.lr)
    if not frozen:
        groups += param_groups(model.encoder, config.weight_decay, lr=config.lr * config.backbone_lr_scale)
    for group in groups:
        group["base_lr"] = group["lr"]
    return torch.optim.AdamW(groups, betas=(0.9, 0.999))


def train(pseudo_dir: str | Path, run_dir: str | Path, config: TrainConfig) -> dict[str, Any]:
    """Train a segmenter on the pseudo-masks of a ``generate`` folder; write the run folder (see the checkpoint
    module): ``run.json``, ``model.safetensors``, ``state.safetensors``, ``metrics.jsonl`` (one line per epoch: losses,
    images/s, validation mIoU) and ``errors.jsonl`` (images that could not be read). Resumes when ``run_dir``
    holds a state of the same run. Returns the last metrics line."""
    pseudo_dir, run_dir = Path(pseudo_dir), Path(run_dir)
    context = _context(config)
    data = read_pseudo_masks(pseudo_dir, config.images_dir)
    unknown = [label for label in config.holdout_labels if label not in data.classes[1:]]
    if unknown:
        raise FreelabelError(f"held-out label(s) {', '.join(map(repr, unknown))} are not in {pseudo_dir}/classes.txt")
    vocabulary = [name for name in data.classes[1:] if name not in config.holdout_labels]
    if not vocabulary:
        raise FreelabelError(f"{pseudo_dir} has no labels to train on")
    train_indices, val_indices = split(len(data.names), config.val_fraction, config.seed)
    if len(train_indices) < config.batch_size:
        raise FreelabelError(f"{len(train_indices)} training images are fewer than one batch ({config.batch_size}); "
                             "lower --batch-size")
    if config.batch_size % context.world:
        raise FreelabelError(f"batch size {config.batch_size} does not split over {context.world} processes")
    architecture = config.segmenter_config()
    clip = load_clip(dataclasses.replace(config.clip, device=str(context.device)))
    input_size = config.input_size or min(clip.image_size)
    resolved = dataclasses.replace(config, input_size=input_size, crop_size=config.crop_size or input_size)
    content = {"data": {"pseudo_masks": str(pseudo_dir), "images": str(data.images_dir), "images_count":
                        len(data.names), "train": len(train_indices), "val": len(val_indices)},
               "vocabulary": vocabulary, "classes": data.classes, "architecture": architecture.to_dict(),
               "clip": dataclasses.asdict(config.clip), "train": dataclasses.asdict(resolved), **provenance()}
    content = _json_ready(content)
    torch.manual_seed(config.seed)
    model = create_segmenter(clip, architecture)
    if resolved.crop_size % model.input_multiple:
        raise FreelabelError(f"crop size {resolved.crop_size} must be a multiple of {model.input_multiple} (the "
                             "patch size and the decoder's 1/4)")
    refusal = None
    if context.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            _check_run_dir(run_dir, content)
            write_run(run_dir, content)
        except FreelabelError as error:
            refusal = error
    if context.decide(refusal is not None)[0]:  # the other processes stop too, rather than wait for process 0
        raise refusal or FreelabelError(f"process 0 refused the run folder {run_dir}")
    frozen = config.backbone_lr_scale == 0
    optimizer = _optimizer(model, config)
    position = load_state(run_dir, model, optimizer) or {"epoch": 0, "batch": 0, "step": 0, "seconds": 0.0}
    if context.main and position["step"] == 0:
        (run_dir / METRICS).unlink(missing_ok=True)
        (run_dir / ERRORS).unlink(missing_ok=True)
    wrapped = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[context.device] if
                                                         context.device.type == "cuda" else None)
               if context.world > 1 else model)

    lookup = vocabulary_lookup(data.classes, vocabulary)
    dataset = AugmentedPseudoMasks(data, train_indices, lookup, config.seed, input_size, resolved.crop_size,
                                   config.scale_range, config.max_pixels, clip.interpolation)
    validation = _validation_sets(config, data, val_indices, lookup, vocabulary) if context.main else {}
    text = clip.encode_labels(vocabulary)
    mean = torch.tensor(clip.mean, device=context.device).view(1, 3, 1, 1)
    std = torch.tensor(clip.std, device=context.device).view(1, 3, 1, 1)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and context.device.type == "cuda")
    steps_per_epoch = len(train_indices) // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    per_process = config.batch_size // context.world
    reported = {entry["path"] for entry in read_jsonl(run_dir / ERRORS)} if context.main else set()
    metrics: dict[str, Any] = {}
    started, last_save = time.monotonic() - position["seconds"], time.monotonic()
    stop = False
    progress = tqdm(total=total_steps, initial=position["step"], desc="training", unit="step",
                    disable=None if context.main else True)
    while position["epoch"] < config.epochs and not stop:
        epoch = position["epoch"]
        dataset.epoch = epoch
        batches = _batches(len(train_indices), config.batch_size, config.seed, epoch)[position["batch"]:]
        shard = [batch[context.rank * per_process:(context.rank + 1) * per_process] for batch in batches]
        loader = torch.utils.data.DataLoader(_SafeItems(dataset), batch_sampler=shard, num_workers=config.workers,
                                             collate_fn=_collate)
        # the epoch's running sums live in the position: an epoch's line covers all of it across resumes
        sums = position.setdefault("sums", {"loss": 0.0, "pixel": 0.0, "multilabel": 0.0, "images": 0,
                                            "seconds": 0.0})
        segment_started = time.monotonic()
        wrapped.train()
        if frozen:
            model.encoder.eval()
        for pixels, mask, problems in loader:
            factor = warmup_cosine(position["step"] / max(1, total_steps), config.warmup_fraction)
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * factor
            pixels = (pixels.to(context.device).float() / 255 - mean) / std
            mask = mask.to(context.device)
            usable = torch.tensor([problem is None for problem in problems], device=context.device)
            draws = np.random.default_rng((config.seed, position["step"], context.rank)).random(len(mask))
            given = torch.from_numpy(draws < config.given_labels_fraction).to(context.device)
            present = present_labels(mask, len(vocabulary)).bool()
            # images trained as `predict --labels` sees them compete among their own labels only
            valid = torch.where(given[:, None], present, torch.ones_like(present))
            valid[~valid.any(1)] = True  # an image with no label present ranks the whole vocabulary
            with torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=bf16):
                out = wrapped(pixels, text, valid)
            loss, parts = segmenter_loss(out, mask, given, usable, len(vocabulary), config.multilabel_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]],
                                               config.grad_clip)
            optimizer.step()
            position["step"] += 1
            position["batch"] += 1
            sums["images"] += len(mask) * context.world
            for key, value in (("loss", loss.item()), *parts.items()):
                sums[key] += value
            seconds = sums["seconds"] + time.monotonic() - segment_started
            progress.set_postfix(loss=f"{loss.item():.3f}", img_s=f"{sums['images'] / max(seconds, 1e-9):.1f}")
            progress.update(1)
            problems = context.gather(problems)
            for problem in problems if context.main else ():
                if problem is not None and problem["path"] not in reported:
                    reported.add(problem["path"])
                    append_jsonl(run_dir / ERRORS, {"path": problem["path"], "stage": "read",
                                                    "message": problem["message"]})
            # process 0's clock decides for all: every process must leave the loop at the same step
            stop, save = context.decide(
                config.max_minutes is not None and time.monotonic() - started >= config.max_minutes * 60,
                time.monotonic() - last_save >= config.checkpoint_minutes * 60)
            if stop or save:
                break
        epoch_done = position["batch"] >= steps_per_epoch
        position["seconds"] = time.monotonic() - started
        sums["seconds"] += time.monotonic() - segment_started
        if epoch_done:
            position["epoch"], position["batch"] = epoch + 1, 0
            del position["sums"]
        if context.main:
            if epoch_done:
                metrics = {"epoch": epoch + 1, "step": position["step"],
                           **{k: round(sums[k] / steps_per_epoch, 4) for k in ("loss", "pixel", "multilabel")},
                           "lr": round(config.lr * factor, 8),
                           "images_per_second": round(sums["images"] / sums["seconds"], 2),
                           "minutes": round(position["seconds"] / 60, 2)}
                if context.device.type == "cuda":
                    metrics["gpu_peak_gb"] = round(torch.cuda.max_memory_allocated(context.device) / 2 ** 30, 2)
                segmenter = Segmenter(model, clip, vocabulary, input_size)
                for name, validation_set in validation.items():
                    metrics.update({f"{name}_{k}": v for k, v in validation_set.score(segmenter, vocabulary).items()})
                append_jsonl(run_dir / METRICS, metrics)
                tqdm.write(" ".join(f"{k}={v}" for k, v in metrics.items()))
            save_model(run_dir, model, with_encoder=not frozen)
            save_state(run_dir, model, optimizer, not frozen, position)
        last_save = time.monotonic()
        if context.world > 1:
            dist.barrier()
    progress.close()
    if context.main and not metrics:
        metrics = (read_jsonl(run_dir / METRICS) or [{}])[-1]
    return metrics


def _json_ready(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` as it reads back from JSON (tuples become lists), so a resumed run compares equal."""
    return json.loads(json.dumps(content))

