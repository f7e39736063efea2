"""Self-training rounds (``freelabel train --rounds N``): round r+1 trains on round r's masks of the training images.

Round 1 is ``train`` into the run folder itself, as a one-round run. Round r+1 lives in ``RUN/round-<r+1>/``:

- ``masks/``: the round-r segmenter's masks of the training split's images, each with its own labels from the
  pseudo-masks' manifest (what ``predict --labels`` writes, by the same folder job: resumable), pixels whose
  probability is below ``round_ignore_threshold`` ignored (255), in the pseudo-masks' class index;
- a run folder of its own (``run.json``, ``model.safetensors``, ``state.safetensors``, ``metrics.jsonl``) trained on
  those masks (``train``'s ``masks_dir``), from round r's weights or from scratch (``round_start``); corrected
  images keep their corrected masks, and validation stays against the pseudo-masks, so the rounds' figures compare.

``RUN/metrics.jsonl`` gathers every round's lines: round 1's as a one-round run writes them (no ``round`` key), each
later round's with its ``round``, copied in whenever that round's training returns. Every phase resumes, so a run
killed in any round resumes to the bytes of an unbroken one, and a finished run given more rounds goes on from its
last round. ``predict RUN`` uses the last finished round (``checkpoint.final_round``).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

from freelabel.errors import FreelabelError
from freelabel.io.files import read_jsonl, write_jsonl
from freelabel.run.masks import FolderOptions, MaskFolder, label_inputs
from freelabel.segmenter.checkpoint import (MODEL, file_digest, read_position, read_run, round_folder,
                                            training_finished)
from freelabel.segmenter.data import read_pseudo_masks, split
from freelabel.segmenter.hooks import process_context
from freelabel.segmenter.predictor import Segmenter, run_device
from freelabel.segmenter.trainer import METRICS, TrainConfig, train

MASKS = "masks"  # in a round's folder: the masks it trains on


def train_rounds(pseudo_dir: str | Path, run_dir: str | Path, config: TrainConfig) -> dict[str, Any]:
    """Train ``config.rounds`` self-training rounds on the pseudo-masks of ``pseudo_dir`` into ``run_dir``; resumes
    a run of the same settings, and extends one that finished fewer rounds. ``config.max_minutes`` bounds the
    training time of all rounds together (earlier launches included, as for one round; the masks between rounds
    are not counted): no round begins once it is spent. Returns the last metrics line (with its ``round`` after the
    first round)."""
    pseudo_dir, run_dir = Path(pseudo_dir), Path(run_dir)
    context = process_context(config.clip.device)
    budget = None if config.max_minutes is None else config.max_minutes * 60
    spent = 0.0  # the finished rounds' training seconds
    metrics: dict[str, Any] = {}
    for number in range(1, config.rounds + 1):
        if budget is not None and spent >= budget:
            break
        folder = round_folder(run_dir, number)
        round_config = dataclasses.replace(config, max_minutes=None if budget is None else (budget - spent) / 60)
        if number == 1:
            metrics = train(pseudo_dir, folder, round_config)
        else:
            previous = round_folder(run_dir, number - 1)
            if read_position(folder) is None:  # a round's masks are all written before its first step
                failure = None
                if context.main:
                    try:
                        round_masks(pseudo_dir, previous, folder / MASKS, config, str(context.device))
                    except FreelabelError as error:
                        failure = error
                if context.decide(failure is not None)[0]:  # the other processes stop rather than wait
                    raise failure or FreelabelError(f"process 0 could not write {folder / MASKS}")
            start = previous if config.round_start == "previous" else None
            metrics = train(pseudo_dir, folder, round_config, folder / MASKS, start)
            if context.main:
                metrics = _gather_metrics(run_dir, number)
        if not training_finished(folder):  # stopped by the time budget
            break
        spent += (read_position(folder) or {}).get("seconds", 0.0)
    return metrics


def round_masks(pseudo_dir: Path, previous: Path, out: Path, config: TrainConfig, device: str) -> dict:
    """Write ``out``: the masks the segmenter of run folder ``previous`` makes of the training split's images (not
    corrected ones), each given its labels from ``pseudo_dir``'s manifest, pixels below
    ``config.round_ignore_threshold`` ignored, in the pseudo-masks' class index. Resumes; returns the manifest."""
    data = read_pseudo_masks(pseudo_dir, config.images_dir, config.corrected)
    train_indices, _ = split(len(data.names), config.val_fraction, config.seed)
    labels = {data.names[i]: data.labels[i] for i in train_indices if i not in data.corrected}
    inputs = label_inputs(data.images_dir, labels, str(pseudo_dir / "manifest.json"))
    unknown = [label for label in inputs.classes if label not in data.classes]
    if unknown:
        raise FreelabelError(f"{pseudo_dir / 'manifest.json'} lists labels its classes.txt lacks (e.g. {unknown[0]!r})")
    inputs = dataclasses.replace(inputs, classes=data.classes)
    digest = file_digest(previous / MODEL)
    settings = {"model_sha256": digest, "ignore_threshold": config.round_ignore_threshold,
                "max_pixels": config.max_pixels}
    folder = MaskFolder(data.images_dir, inputs, out, settings, FolderOptions(max_pixels=config.max_pixels))
    manifest = {"run": str(previous), "model_sha256": digest, "clip": read_run(previous)["clip"],
                "images_dir": str(data.images_dir), "labels": str(pseudo_dir / "manifest.json"),
                "ignore_threshold": config.round_ignore_threshold}
    device = run_device(read_run(previous), device)
    return folder.run(functools.partial(Segmenter.from_run, previous, device,
                                        ignore_threshold=config.round_ignore_threshold, round_number=1), manifest)


def _gather_metrics(run_dir: Path, number: int) -> dict[str, Any]:
    """Copy round ``number``'s metrics lines into ``run_dir``'s with their ``round``, in place of an earlier copy,
    rounds in order; returns its last line ({} before one)."""
    lines = [{"round": number, **line} for line in read_jsonl(round_folder(run_dir, number) / METRICS)]
    kept = [line for line in read_jsonl(run_dir / METRICS) if line.get("round") != number]
    write_jsonl(run_dir / METRICS, sorted(kept + lines, key=lambda line: line.get("round", 1)))
    return lines[-1] if lines else {}
