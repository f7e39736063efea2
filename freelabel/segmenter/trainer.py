"""Training the selected-label segmenter on pseudo-masks (``freelabel train``).

One run folder is one training run. Its ``run.json`` is written before the first step; ``state.safetensors`` is saved at
every epoch end and every ``checkpoint_minutes``, so a killed run resumes from its last state to the weights an
uninterrupted run reaches (on CPU, where kernels are deterministic). Launched by ``torchrun`` (``WORLD_SIZE`` > 1)
the same command trains with DistributedDataParallel: each process takes its share of every global batch, and
process 0 alone validates and writes.

``SegmenterTrainer`` takes the steps (``freelabel.training``'s loop); the progress bar, error journal, time budget,
metrics and validation, checkpoints and the processes' agreement are its hooks (``hooks.py``), the losses are in
``losses.py``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from freelabel.cards import model_card
from freelabel.clip.config import ClipConfig
from freelabel.clip.loading import LoadedClip, load_clip
from freelabel.config import option
from freelabel.errors import ConfigError, FreelabelError, RunStoppedError
from freelabel.io.files import provenance, read_json, read_jsonl, remove_stray_temp_files, write_jsonl
from freelabel.io.images import MAX_PIXELS
from freelabel.io.masks import IGNORE_INDEX
from freelabel.optim import param_groups, warmup_cosine
from freelabel.run.folder import folder_lock
from freelabel.segmenter.checkpoint import MODEL, RUN, STATE, file_digest, load_model_weights, load_state, write_run
from freelabel.segmenter.config import SegmenterConfig
from freelabel.segmenter.data import AugmentedPseudoMasks, read_pseudo_masks, split, vocabulary_lookup, with_masks
from freelabel.segmenter.factory import architecture_config, create_segmenter
from freelabel.segmenter.hooks import (Checkpointer, DistributedAgreement, EpochMetrics, ErrorJournal, ProcessContext,
                                       ProgressBar, SegmentHook, process_context)
from freelabel.segmenter.losses import present_labels, segmenter_loss
from freelabel.segmenter.modeling import SelectedLabelSegmenter
from freelabel.segmenter.predictor import Segmenter
from freelabel.segmenter.validation import validation_sets
from freelabel.training import TimeBudget, TrainerBase

METRICS, ERRORS = "metrics.jsonl", "errors.jsonl"
PRECISIONS = ("auto", "fp32", "bf16")
ROUND_STARTS = ("previous", "scratch")


@dataclass
class TrainConfig:
    """How the segmenter is trained. The field defaults are the library's; a model may ship its own
    (the ``training`` section of its model card, ``freelabel.cards``). Saved in ``run.json``."""

    clip: ClipConfig = option(default_factory=ClipConfig, help="Whose image tower is the backbone, whose text tower "
                              "names the labels.")
    architecture: str = option("rankseg", help="Segmenter architecture: a config in freelabel/segmenter/configs.")
    top_k: int | None = option(None, help="Labels selected per image; None = the architecture's.")
    rank_norm: bool | None = option(None, help="Rank-adaptive temperatures; None = the architecture's.")
    images_dir: str | None = option(None, flag="--images", path="existing-folder", help="The pseudo-masks' images; "
                                    "None = the folder their manifest names.")
    corrected: str | None = option(None, path="existing-folder", help="Masks a person corrected (`freelabel import` "
                                   "output, named like the images): those images train on them, never on their "
                                   "pseudo-masks.")
    epochs: int = option(20, help="Passes over the training split; the learning-rate schedule spans them.")
    max_minutes: float | None = option(None, help="Stop (with a saved state, resumable) after this much training "
                                       "time, all rounds together; None = no limit.")
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
    rounds: int = option(1, help="Self-training rounds: round r+1 trains on round r's masks of the training images "
                         "(in RUN/round-<r+1>); more rounds than a finished run has extend it.")
    round_start: str = option("previous", choices=ROUND_STARTS, help="Where a round after the first starts: the "
                              "previous round's weights, or a fresh initialisation.")
    round_ignore_threshold: float = option(0.5, help="In the masks a round trains on, pixels whose probability "
                                           "under the previous round is below it are ignored (255).")
    max_pixels: int | None = option(MAX_PIXELS, help="Larger images are refused unread; None = no limit.")

    def __post_init__(self) -> None:
        if isinstance(self.clip, dict):
            self.clip = ClipConfig(**self.clip)
        self.scale_range = tuple(self.scale_range)
        self.holdout_labels = tuple(self.holdout_labels)
        positive_ints = ("epochs", "batch_size", "input_size", "crop_size", "top_k", "rounds")
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
        if not 0 <= self.round_ignore_threshold < 1:
            raise ConfigError(f"round_ignore_threshold must be in [0, 1), got {self.round_ignore_threshold!r}")
        if self.round_start not in ROUND_STARTS:
            raise ConfigError(f"round_start must be one of {', '.join(ROUND_STARTS)}, got {self.round_start!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.workers < 0:
            raise ConfigError(f"workers must be at least 0, got {self.workers}")
        self.segmenter_config()  # the architecture name and its overrides

    def segmenter_config(self) -> SegmenterConfig:
        """The architecture with this config's ``top_k`` and ``rank_norm`` on top."""
        overrides = {name: getattr(self, name) for name in ("top_k", "rank_norm") if getattr(self, name) is not None}
        return architecture_config(self.architecture, **overrides)


def train_config(clip: ClipConfig, **overrides: Any) -> TrainConfig:
    """TrainConfig for ``clip``: the library defaults, then the training preset of the model's card
    (``freelabel.cards``), then ``overrides`` (unknown fields raise ``ConfigError``)."""
    values = {**model_card(clip.model).train, **overrides}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown training setting(s) {', '.join(unknown)}")
    return TrainConfig(clip=clip, **values)


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


# may change between a run and its resumption: they do not change what is learned
RUNTIME_SETTINGS = {"max_minutes", "workers", "checkpoint_minutes", "val_masks"}
# the rounds' settings bind each later round through what it trains on (its masks folder) and starts from
ROUND_SETTINGS = {"rounds", "round_start", "round_ignore_threshold"}
RUNTIME_CLIP_SETTINGS = {"device", "cache_dir", "offline"}


def _binding(content: dict[str, Any]) -> dict[str, Any]:
    """The parts of ``run.json`` a resumed run must share with the run it resumes, flattened to one level."""
    flat = {key: content.get(key) for key in ("data", "vocabulary", "architecture", "start")}
    flat["clip"] = {k: v for k, v in content.get("clip", {}).items() if k not in RUNTIME_CLIP_SETTINGS}
    for key, value in content.get("train", {}).items():
        if key == "clip":
            continue
        if key not in RUNTIME_SETTINGS | ROUND_SETTINGS:
            flat[f"train.{key}"] = value
    return flat


def _check_run_dir(run_dir: Path, content: dict[str, Any]) -> None:
    """A run folder holds one run: resuming with other data or settings is refused, and so is a training state
    without the run.json it belongs to (copied from another run)."""
    if not (run_dir / RUN).is_file() and (run_dir / STATE).is_file():
        raise FreelabelError(f"{run_dir} holds a training state ({STATE}) but no {RUN}: it is not this run's (copied "
                             "from another?); choose a new --out folder, or delete it to start over")
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


class SegmenterTrainer(TrainerBase):
    """One process's steps over the epochs' batches (its share of each global batch). ``position`` (epoch, batch in
    it, step, training seconds and the unfinished epoch's running sums) is what a saved state resumes from. Each
    segment of an epoch, from the position to the epoch's end or to a stop or save the processes agreed on, gets
    a data loader of its own, so a resumed run meets the batches an uninterrupted one meets. ``clock``: the
    registered time budget, whose seconds the position keeps."""

    def __init__(self, model: SelectedLabelSegmenter, wrapped: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 dataset: AugmentedPseudoMasks, text: torch.Tensor, clip: LoadedClip, config: TrainConfig,
                 context: ProcessContext, position: dict[str, Any], clock: TimeBudget):
        super().__init__()
        self.model, self.wrapped, self.optimizer, self.dataset = model, wrapped, optimizer, dataset
        self.text, self.num_labels = text, len(text)  # (N, D): one embedding per vocabulary label
        self.config, self.context, self.position, self.clock = config, context, position, clock
        self.mean = torch.tensor(clip.mean, device=context.device).view(1, 3, 1, 1)
        self.std = torch.tensor(clip.std, device=context.device).view(1, 3, 1, 1)
        self.bf16 = config.precision == "bf16" or (config.precision == "auto" and context.device.type == "cuda")
        self.steps_per_epoch = len(dataset) // config.batch_size
        self.total_steps = self.steps_per_epoch * config.epochs
        self.stop = position["epoch"] >= config.epochs
        self.save = False  # a save the processes agreed on after this step
        self.loader: Iterator | None = None  # the current segment's batches
        # what the last step leaves for the hooks
        self.loss, self.lr_factor, self.problems, self.epoch_done = math.nan, 0.0, [], False

    def run_step(self) -> None:
        """One optimiser step on the next batch: lr from the warm-up-cosine schedule over all steps, then the
        segmenter's loss on the images trained as `predict --labels` or `predict` sees them."""
        if self.loader is None:
            self._start_segment()
        pixels, mask, self.problems = next(self.loader)
        position, config, device = self.position, self.config, self.context.device
        self.lr_factor = warmup_cosine(position["step"] / max(1, self.total_steps), config.warmup_fraction)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * self.lr_factor
        pixels = (pixels.to(device).float() / 255 - self.mean) / self.std
        mask = mask.to(device)
        usable = torch.tensor([problem is None for problem in self.problems], device=device)
        self.usable_items += int(usable.sum())
        given, candidates = self._candidates(mask)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.wrapped(pixels, self.text, candidates)
        loss, parts = segmenter_loss(out, mask, given, usable, self.num_labels, config.multilabel_weight)
        if self.context.any(not bool(torch.isfinite(loss.detach()))):  # before the step: the weights stay finite
            raise RunStoppedError(f"training went non-finite at step {position['step']} (the loss is NaN or inf): the "
                                  "run stopped and its last saved state, which is finite, stays; lower --lr, or "
                                  "check the pseudo-masks and images")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           config.grad_clip)
        self.optimizer.step()
        position["step"] += 1
        position["batch"] += 1
        self.loss = loss.item()
        self.sums["images"] += len(mask) * self.context.world
        for key, value in (("loss", self.loss), *parts.items()):
            self.sums[key] += value

    def _candidates(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """mask: (B, H, W) int64. Returns which images are given their labels, (B,) bool (a draw seeded by the
        step and rank, true for ``given_labels_fraction`` of them), and the labels each image ranks, (B, N) bool."""
        draws = np.random.default_rng((self.config.seed, self.position["step"], self.context.rank)).random(len(mask))
        given = torch.from_numpy(draws < self.config.given_labels_fraction).to(self.context.device)
        present = present_labels(mask, self.num_labels).bool()
        # images trained as `predict --labels` sees them compete among their own labels only
        valid = torch.where(given[:, None], present, torch.ones_like(present))
        valid[~valid.any(1)] = True  # an image with no label present ranks the whole vocabulary
        return given, valid

    def _start_segment(self) -> None:
        """A data loader over this process's share of the epoch's batches, from the position on."""
        position, config, context = self.position, self.config, self.context
        self.dataset.epoch = position["epoch"]
        batches = _batches(len(self.dataset), config.batch_size, config.seed, position["epoch"])[position["batch"]:]
        per_process = config.batch_size // context.world
        shard = [batch[context.rank * per_process:(context.rank + 1) * per_process] for batch in batches]
        loader = torch.utils.data.DataLoader(_SafeItems(self.dataset), batch_sampler=shard,
                                             num_workers=config.workers, collate_fn=_collate)
        # the epoch's running sums live in the position: an epoch's line covers all of it across resumes
        self.sums = position.setdefault("sums", {"loss": 0.0, "pixel": 0.0, "multilabel": 0.0, "images": 0,
                                                 "seconds": 0.0})
        self.segment_started = time.monotonic()
        self.usable_items = 0  # this process's items of the segment that could be trained on
        self.wrapped.train()
        if config.backbone_lr_scale == 0:
            self.model.encoder.eval()
        self.loader = iter(loader)

    def after_step(self) -> None:
        """The hooks; then, when the step ends the epoch or the processes agreed to stop or save, the segment."""
        super().after_step()
        if self.stop or self.save or self.position["batch"] >= self.steps_per_epoch:
            self._end_segment()

    def _end_segment(self) -> None:
        """Leave the loader: the position says where a resumed run goes on (the next epoch's start once this one is
        done); then the hooks' ``after_segment`` (metrics, checkpoint, barrier)."""
        position = self.position
        if not self.context.any(self.usable_items > 0):  # before the save: no untrained model stands for a run
            raise RunStoppedError(f"every training item of epoch {position['epoch'] + 1} so far failed (see "
                                  "errors.jsonl in the run folder): nothing to train on; fix the images and masks, "
                                  "then run the command again")
        self.epoch_done = position["batch"] >= self.steps_per_epoch
        position["seconds"] = self.clock.seconds()
        self.sums["seconds"] += time.monotonic() - self.segment_started
        if self.epoch_done:
            position["epoch"], position["batch"] = position["epoch"] + 1, 0
            del position["sums"]
        self.loader = None
        for hook in self.hooks:
            if isinstance(hook, SegmentHook):
                hook.after_segment()
        self.stop = self.stop or position["epoch"] >= self.config.epochs


def train(pseudo_dir: str | Path, run_dir: str | Path, config: TrainConfig, masks_dir: str | Path | None = None,
          start_from: str | Path | None = None) -> dict[str, Any]:
    """Train a segmenter on the pseudo-masks of a ``generate`` folder; write the run folder (see the checkpoint
    module): ``run.json``, ``model.safetensors``, ``state.safetensors``, ``metrics.jsonl`` (one line per epoch: losses,
    images/s, validation mIoU) and ``errors.jsonl`` (images that could not be read). Resumes when ``run_dir``
    holds a state of the same run. Returns the last metrics line.

    masks_dir: a mask folder (``predict``'s format, the pseudo-masks' class index) the training images train on
    instead of their pseudo-masks (a self-training round's, ``freelabel.segmenter.rounds``); corrected images keep
    their corrected masks and validation stays against the pseudo-masks. start_from: a run folder whose weights
    the segmenter starts from instead of a fresh initialisation. Both are bound to the run."""
    pseudo_dir, run_dir = Path(pseudo_dir), Path(run_dir)
    context = process_context(config.clip.device)
    data = read_pseudo_masks(pseudo_dir, config.images_dir, config.corrected)
    vocabulary = _vocabulary(data.classes, config.holdout_labels, pseudo_dir)
    train_indices, val_indices = split(len(data.names), config.val_fraction, config.seed)
    train_data = data if masks_dir is None else with_masks(data, Path(masks_dir), train_indices)
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
                        len(data.names), "train": len(train_indices), "val": len(val_indices),
                        **({"corrected": len(data.corrected)} if data.corrected else {})},
               "vocabulary": vocabulary, "classes": data.classes, "architecture": architecture.to_dict(),
               "clip": dataclasses.asdict(config.clip), "train": dataclasses.asdict(resolved), **provenance()}
    if masks_dir is not None:
        content["data"]["masks"] = str(masks_dir)
    if start_from is not None:
        content["start"] = {"run": str(start_from), "model_sha256": file_digest(Path(start_from) / MODEL)}
    torch.manual_seed(config.seed)
    model = create_segmenter(clip, architecture)
    if start_from is not None:  # a saved state, when there is one, replaces these weights below
        load_model_weights(Path(start_from), model)
    if resolved.crop_size % model.input_multiple:
        raise FreelabelError(f"crop size {resolved.crop_size} must be a multiple of {model.input_multiple} (the "
                             "patch size and the decoder's 1/4)")
    # one writer per run folder (process 0 writes it): a second run on it is refused
    with folder_lock(run_dir) if context.main else contextlib.nullcontext():
        _bind_run_dir(run_dir, _json_ready(content), context)
        optimizer = _optimizer(model, config)
        if context.main:
            remove_stray_temp_files(run_dir)  # of a save a kill interrupted
        position = load_state(run_dir, model, optimizer) or {"epoch": 0, "batch": 0, "step": 0, "seconds": 0.0}
        if context.main and position["step"] == 0:  # a fresh start: an earlier attempt's journals go
            (run_dir / METRICS).unlink(missing_ok=True)
            (run_dir / ERRORS).unlink(missing_ok=True)
        elif context.main:  # a kill between an epoch's metrics line and its state's save: that epoch is redone
            metrics_lines = read_jsonl(run_dir / METRICS)
            # lines with a round key are later rounds' (freelabel.segmenter.rounds), not this run's
            kept = [line for line in metrics_lines if "round" in line or line.get("step", 0) <= position["step"]]
            if len(kept) < len(metrics_lines):
                write_jsonl(run_dir / METRICS, kept)
        wrapped = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[context.device] if
                                                             context.device.type == "cuda" else None)
                   if context.world > 1 else model)

        lookup = vocabulary_lookup(data.classes, vocabulary)
        dataset = AugmentedPseudoMasks(train_data, train_indices, lookup, config.seed, input_size, resolved.crop_size,
                                       config.scale_range, config.max_pixels, clip.interpolation)
        validation = (validation_sets(data, val_indices, lookup, vocabulary, config.val_masks, config.max_pixels)
                      if context.main else {})
        clock = TimeBudget(config.max_minutes, position["seconds"])
        trainer = SegmenterTrainer(model, wrapped, optimizer, dataset, clip.encode_labels(vocabulary), clip, config,
                                   context, position, clock)
        metrics = EpochMetrics(run_dir / METRICS, context, validation,
                               functools.partial(Segmenter, model, clip, vocabulary, input_size), vocabulary, config.lr)
        trainer.register_hooks([ProgressBar(trainer.total_steps, context), ErrorJournal(run_dir / ERRORS, context),
                                clock, metrics, Checkpointer(run_dir, config.checkpoint_minutes, context,
                                                      with_encoder=config.backbone_lr_scale != 0),
                                DistributedAgreement(context)])
        try:
            trainer.train()
        except OSError as error:  # e.g. no space left for the metrics or errors journal
            raise RunStoppedError(f"cannot write to the run folder {run_dir} ({error}); the run stopped, its last "
                                  "saved state stays: free space, then run the command again") from None
        if context.main and not metrics.last:
            return (read_jsonl(run_dir / METRICS) or [{}])[-1]
        return metrics.last


def _vocabulary(classes: list[str], holdout_labels: tuple[str, ...], pseudo_dir: Path) -> list[str]:
    """The labels trained on: the pseudo-masks' classes (background aside) less the held-out ones, which must be
    among them."""
    unknown = [label for label in holdout_labels if label not in classes[1:]]
    if unknown:
        raise FreelabelError(f"held-out label(s) {', '.join(map(repr, unknown))} are not in {pseudo_dir}/classes.txt")
    vocabulary = [name for name in classes[1:] if name not in holdout_labels]
    if not vocabulary:
        raise FreelabelError(f"{pseudo_dir} has no labels to train on")
    return vocabulary


def _bind_run_dir(run_dir: Path, content: dict[str, Any], context: ProcessContext) -> None:
    """Process 0 binds ``run_dir`` to this run (``content`` becomes its run.json) unless it holds another run; when
    it refuses, the other processes stop too, rather than wait for it."""
    refusal = None
    if context.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        try:
            _check_run_dir(run_dir, content)
            write_run(run_dir, content)
        except FreelabelError as error:
            refusal = error
        except OSError as error:  # a full disk
            refusal = RunStoppedError(f"cannot write {run_dir / RUN} ({error}); free space, then run the command "
                                      "again")
    if context.decide(refusal is not None)[0]:
        raise refusal or FreelabelError(f"process 0 refused the run folder {run_dir}")



def _json_ready(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` as it reads back from JSON (tuples become lists), so a resumed run compares equal."""
    return json.loads(json.dumps(content))

