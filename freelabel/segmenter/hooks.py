"""The segmenter trainer's hooks (``freelabel.training``) and the process context they agree through.

After every step, in the order ``train`` registers them: the progress bar, the error journal, the time budget, the
checkpoint timer, then the agreement of all processes on stopping and saving. Where the trainer leaves its data
loader (an epoch's end, or an agreed stop or save), ``after_segment``: the epoch's metrics and validation, the
checkpoint, and the processes' barrier.
"""

from __future__ import annotations

import datetime
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from tqdm import tqdm

from freelabel.errors import RunStoppedError
from freelabel.io.files import append_jsonl, read_jsonl
from freelabel.segmenter.checkpoint import save_model, save_state
from freelabel.segmenter.predictor import Segmenter
from freelabel.segmenter.validation import ValidationSet
from freelabel.training import HookBase


@dataclass
class ProcessContext:
    """One process of a run: its rank among ``world`` processes (torchrun's) and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Process 0: the one that validates and writes."""
        return self.rank == 0

    def decide(self, *flags: bool) -> list[bool]:
        """Process 0's values of ``flags``, in every process."""
        if self.world == 1:
            return list(flags)
        values = torch.tensor([float(f) for f in flags], device=self.device)
        dist.broadcast(values, 0)
        return [bool(v) for v in values.tolist()]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true in any process (every process must call it)."""
        if self.world == 1:
            return flag
        value = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def gather(self, items: list) -> list:
        """Every process's ``items``, concatenated (process 0's first)."""
        if self.world == 1:
            return items
        everyone: list[list] = [[] for _ in range(self.world)]
        dist.all_gather_object(everyone, items)
        return [item for part in everyone for item in part]


def process_context(device: str) -> ProcessContext:
    """This process's context: alone, on ``device``; launched by torchrun (``WORLD_SIZE`` > 1), it joins the
    process group and takes the GPU of its ``LOCAL_RANK`` when ``device`` is a cuda one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return ProcessContext(device=torch.device(device))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if not dist.is_initialized():  # generous timeout: the others wait while process 0 validates and saves
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2))
    on = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(on)
    return ProcessContext(rank, world, on)


class SegmentHook(HookBase):
    """A hook of the segmenter trainer, which also calls ``after_segment``."""

    trainer: Any  # the SegmenterTrainer (its module imports this one, so it is not named here)

    def after_segment(self) -> None:
        """Called where the trainer leaves its data loader: at an epoch's end, or at a stop or save agreed on,
        once the trainer's position says where a resumed run goes on."""


class ProgressBar(SegmentHook):
    """The steps on a progress bar (process 0's), with the loss and the images per second of the epoch."""

    def __init__(self, total_steps: int, context: ProcessContext):
        self.total_steps, self.context = total_steps, context

    def before_train(self) -> None:
        self.bar = tqdm(total=self.total_steps, initial=self.trainer.position["step"], desc="training", unit="step",
                        disable=None if self.context.main else True)

    def after_step(self) -> None:
        sums = self.trainer.sums
        seconds = sums["seconds"] + time.monotonic() - self.trainer.segment_started
        self.bar.set_postfix(loss=f"{self.trainer.loss:.3f}", img_s=f"{sums['images'] / max(seconds, 1e-9):.1f}")
        self.bar.update(1)

    def after_train(self) -> None:
        self.bar.close()


class ErrorJournal(SegmentHook):
    """Process 0 appends each training image that could not be read, in any process, to the journal: once per run,
    resumed launches included."""

    def __init__(self, path: Path, context: ProcessContext):
        self.path, self.context = path, context

    def before_train(self) -> None:
        self.reported = {entry["path"] for entry in read_jsonl(self.path)} if self.context.main else set()

    def after_step(self) -> None:
        problems = self.context.gather(self.trainer.problems)
        for problem in problems if self.context.main else ():
            if problem is not None and problem["path"] not in self.reported:
                self.reported.add(problem["path"])
                append_jsonl(self.path, {"path": problem["path"], "stage": "read", "message": problem["message"]})


class EpochMetrics(SegmentHook):
    """At each epoch's end process 0 appends the epoch's line to ``path`` and prints it: mean losses, learning
    rate, images per second, training minutes, peak GPU memory, then each validation set's mIoU. ``last``: the
    line this launch wrote last ({} before one)."""

    def __init__(self, path: Path, context: ProcessContext, validation: dict[str, ValidationSet],
                 segmenter: Callable[[], Segmenter], vocabulary: list[str], lr: float):
        self.path, self.context, self.validation = path, context, validation
        self.segmenter, self.vocabulary, self.lr = segmenter, vocabulary, lr
        self.last: dict[str, Any] = {}

    def after_segment(self) -> None:
        trainer = self.trainer
        if not (self.context.main and trainer.epoch_done):
            return
        sums, position = trainer.sums, trainer.position
        metrics = {"epoch": position["epoch"], "step": position["step"],
                   **{k: round(sums[k] / trainer.steps_per_epoch, 4) for k in ("loss", "pixel", "multilabel")},
                   "lr": round(self.lr * trainer.lr_factor, 8),
                   "images_per_second": round(sums["images"] / sums["seconds"], 2),
                   "minutes": round(position["seconds"] / 60, 2)}
        if self.context.device.type == "cuda":
            metrics["gpu_peak_gb"] = round(torch.cuda.max_memory_allocated(self.context.device) / 2 ** 30, 2)
        segmenter = self.segmenter()
        for name, validation_set in self.validation.items():
            metrics.update({f"{name}_{k}": v for k, v in validation_set.score(segmenter, self.vocabulary).items()})
        append_jsonl(self.path, metrics)
        tqdm.write(" ".join(f"{k}={v}" for k, v in metrics.items()))
        self.last = metrics


class Checkpointer(SegmentHook):
    """Asks for a save every ``minutes`` (the agreement decides); at every segment's end process 0 writes the model
    and the training state (the CLIP tower's weights only ``with_encoder``)."""

    def __init__(self, run_dir: Path, minutes: float, context: ProcessContext, with_encoder: bool):
        self.run_dir, self.minutes, self.context, self.with_encoder = run_dir, minutes, context, with_encoder

    def before_train(self) -> None:
        self.last_save = time.monotonic()

    def after_step(self) -> None:
        self.trainer.save = time.monotonic() - self.last_save >= self.minutes * 60

    def after_segment(self) -> None:
        trainer = self.trainer
        failure = None
        if self.context.main:
            try:
                save_model(self.run_dir, trainer.model, with_encoder=self.with_encoder)
                save_state(self.run_dir, trainer.model, trainer.optimizer, self.with_encoder, trainer.position)
            except (OSError, SafetensorError) as error:  # a full disk, a vanished folder
                failure = error
        if self.context.any(failure is not None):  # every process stops, none waits for process 0
            raise RunStoppedError(f"cannot save the run's state in {self.run_dir} ({failure or 'in process 0'}); "
                                  "the run stopped, its last saved state stays: free space, then run the command "
                                  "again")
        self.last_save = time.monotonic()


class DistributedAgreement(SegmentHook):
    """Process 0's stop and save are every process's, since all must leave the loader at the same step (its clock
    decides for all); after a segment, every process waits for process 0's validation and save."""

    def __init__(self, context: ProcessContext):
        self.context = context

    def after_step(self) -> None:
        self.trainer.stop, self.trainer.save = self.context.decide(self.trainer.stop, self.trainer.save)

    def after_segment(self) -> None:
        if self.context.world > 1:
            dist.barrier()
