"""``freelabel video``: masks for every frame of a clip from a few key frames, carried between them by optical flow.

Key frames are either given as masks (``--key-masks DIR``: the frames with a mask there; no CLIP at all) or every
``key_interval``-th frame (and the last), segmented with the image pipeline (``--labels``: the ``Labeler`` with the
model's preset, or a trained segmenter with ``--checkpoint``). Frames are streamed: only the frames of one gap
between key frames are in memory. The output folder is a job folder (``freelabel.run.folder``: ``job.json`` binding,
journal, manifest, errors, resume to the same bytes), one mask per frame.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from freelabel.cards import resolve_preset
from freelabel.clip.config import ClipConfig
from freelabel.config import option
from freelabel.errors import ConfigError, FreelabelError
from freelabel.io.files import provenance
from freelabel.io.images import MAX_PIXELS, ImageReadError
from freelabel.io.labels import (LabelError, check_label, class_lookup, read_classes, read_label_vocabulary)
from freelabel.io.masks import IGNORE_INDEX, blend_mask, read_mask, write_mask
from freelabel.pseudo.config import CrfConfig, LabelerConfig
from freelabel.run.folder import JobFolder, failure
from freelabel.run.model import load_image_segmenter
from freelabel.video.frames import Frame, frame_names, is_video, read_frames
from freelabel.video.propagate import PropagationConfig, Propagator, one_hot


SIZE_VOTES = 5  # the first readable frames whose most common size is the clip's


@dataclass
class VideoConfig:
    """Everything that decides a clip's masks; saved in the manifest beside them."""

    key_interval: int = option(5, help="--labels: every K-th frame (and the last) is a key frame, segmented by the "
                               "image pipeline.")
    propagation: PropagationConfig = option(default_factory=PropagationConfig, help="Flow and how masks travel.")
    clip: ClipConfig = option(default_factory=ClipConfig, help="--labels: the CLIP of the pseudo-mask pipeline.")
    preset: str | None = option(None, help="--labels: preset JSON, or 'default'; None = the model's own.")
    overrides: dict[str, Any] = option(default_factory=dict, help="--labels: labeler fields set on top of the "
                                       "preset; the CRF fields (crf_*) also set the refining CRF with --key-masks or "
                                       "--checkpoint.")
    checkpoint: str | None = option(None, path="existing-folder", help="--labels: a `freelabel train` run segments "
                                    "the key frames instead.")
    # labels mode uses the labeler's CRF (the preset's), key-masks and checkpoint modes the library default with
    # the crf_* overrides; sets propagation.crf. By default on where the Labeler makes the key frames (on toy clips
    # it is worth 2 to 3 points there, and the CLIP's key frames cost far more than the CRF), off for given masks:
    # on real 480p clips on a CPU it costs far more than the flow and gains little (docs/results.md, "Video")
    refine: bool | None = option(None, flag="--refine/--no-refine", help="A dense CRF on each propagated frame "
                                 "(its blended probabilities, its own pixels) snaps the carried masks to that "
                                 "frame's edges; the frames between two key frames are refined together on --device "
                                 "(one batch with --crf-backend torch). None = on with --labels (the Labeler's "
                                 "preset CRF), off with --key-masks or --checkpoint.")
    overlay: bool = option(False, help="Also write overlay.mp4: the frames with their masks blended in, to watch.")
    overwrite: bool = option(False, help="Redo every frame, and rebind the folder to new inputs or settings; needed "
                             "to reuse a folder.")
    max_pixels: int | None = option(MAX_PIXELS, help="Larger frames are refused unread.")

    def __post_init__(self) -> None:
        if isinstance(self.propagation, dict):
            self.propagation = PropagationConfig(**self.propagation)
        if self.key_interval < 1:
            raise ConfigError(f"key_interval must be at least 1, got {self.key_interval}")


@dataclass
class _Key:
    """A key frame: its probabilities over the run's classes ((C, H, W) float32) and the mask written for it."""

    probabilities: np.ndarray
    mask: np.ndarray


def _gaps(frames: Iterator[Frame], is_key: Callable[[Frame, bool], bool], failed: Callable[[Frame, str], None]
          ) -> Iterator[list[Frame]]:
    """Cut the readable frames into gaps: each from one key frame (or the clip's start) to the next (or the clip's
    end), both ends included, so consecutive gaps share their key frame. Unreadable frames and frames of another
    size than the clip's are reported through ``failed`` and left out. ``is_key(frame, is_last)``."""
    gap: list[Frame] = []
    pending: Frame | None = None

    def of_size(batch: list[Frame], size: tuple[int, ...]) -> Iterator[Frame]:
        for frame in batch:
            if frame.pixels.shape == size:
                yield frame
            else:
                failed(frame, f"{frame.name} is {frame.pixels.shape[1]}x{frame.pixels.shape[0]}, the clip's frames "
                              f"{size[1]}x{size[0]}")

    def readable() -> Iterator[Frame]:
        # the clip's frame size is the most common among its first SIZE_VOTES readable frames (the earliest on a
        # tie): one odd first frame fails alone, not the clip
        size, first = None, []
        for frame in frames:
            if isinstance(frame.pixels, ImageReadError):
                failed(frame, str(frame.pixels))
            elif size is not None:
                yield from of_size([frame], size)
            else:
                first.append(frame)
                if len(first) == SIZE_VOTES:
                    size = Counter(f.pixels.shape for f in first).most_common(1)[0][0]
                    yield from of_size(first, size)
        if size is None and first:  # a clip shorter than SIZE_VOTES frames
            yield from of_size(first, Counter(f.pixels.shape for f in first).most_common(1)[0][0])

    for frame in readable():
        if pending is not None:
            gap.append(pending)
            if is_key(pending, False) and len(gap) > 1:
                yield gap
                gap = [pending]
        pending = frame
    if pending is not None:
        gap.append(pending)
        yield gap


def _default_crf(config: VideoConfig) -> CrfConfig | None:
    """The refining CRF where no labeler brings its own (--key-masks, --checkpoint): the library default with the
    crf_* overrides (None after ``use_crf=False``)."""
    return LabelerConfig().with_overrides(**config.overrides).crf


def _refining(config: VideoConfig, crf: CrfConfig | None, default: bool) -> VideoConfig:
    """``config`` with the propagation's CRF set: ``crf`` if ``config.refine`` (None: ``default``), else None."""
    refine = default if config.refine is None else config.refine
    return replace(config, propagation=replace(config.propagation, crf=crf if refine else None))


def _write_frame(out: Path, frame: Frame, mask: np.ndarray, key: bool) -> dict[str, Any]:
    try:
        write_mask(out / Path(frame.name).with_suffix(".png"), mask)
    except OSError as error:  # e.g. a full disk: this frame, not the run
        return failure("write", f"{type(error).__name__}: {error}")
    return {"status": "done", "key": key, "ignored_fraction": round(float((mask == IGNORE_INDEX).mean()), 4)}


def _propagate(frames_path: Path, out: Path, classes: list[str], folder: JobFolder, manifest: dict[str, Any],
               config: VideoConfig, is_key: Callable[[Frame, bool], bool], key_of: Callable[[Frame], _Key]) -> dict:
    """The loop shared by both modes, on a checked ``folder``: stream the frames gap by gap, skip gaps whose frames
    are all done, propagate the others, journal every frame, rebuild the manifest and errors."""
    with folder.open(classes):
        propagator = Propagator(config.propagation, config.clip.device)
        started = time.monotonic()
        keys: dict[str, _Key | None] = {}  # this gap's key frames (None: failed), the last one kept for the next gap
        skipped: set[str] = set()

        def failed(frame: Frame, reason: str) -> None:
            folder.record(frame.name, failure("read", reason))

        def done(frame: Frame) -> bool:
            return folder.done(frame.name, [out / Path(frame.name).with_suffix(".png")])

        for gap in _gaps(read_frames(frames_path, config.max_pixels), is_key, failed):
            if all(done(frame) for frame in gap):
                skipped.update(frame.name for frame in gap)
                keys = {}
                continue
            for frame in [f for f in (gap[0], gap[-1])[:len(gap)] if is_key(f, f is gap[-1])]:
                if frame.name in keys:
                    continue
                try:
                    keys[frame.name] = key_of(frame)
                except (FreelabelError, ValueError, RuntimeError, MemoryError) as error:  # this key frame, not the run
                    keys[frame.name] = None
                    folder.record(frame.name, failure("key frame", f"{type(error).__name__}: {error}"))
                    continue
                if not done(frame):
                    folder.record(frame.name, _write_frame(out, frame, keys[frame.name].mask, True))
            first = keys.get(gap[0].name) if is_key(gap[0], gap[0] is gap[-1]) else None
            last = keys.get(gap[-1].name) if len(gap) > 1 and is_key(gap[-1], True) else None
            if first is None and last is None:  # no usable key frame on either side
                for frame in gap:
                    if frame.name not in keys:
                        failed(frame, "no key frame to propagate from")
            else:
                results = propagator.between([frame.pixels for frame in gap], first.probabilities if first else None,
                                             last.probabilities if last else None)
                start, end = (1 if first else 0), (len(gap) - 1 if last else len(gap))
                for frame, (_, mask) in zip(gap[start:end], results):
                    if frame.name in keys:  # a key frame that failed stays failed (its mask was unusable)
                        continue
                    folder.record(frame.name, _write_frame(out, frame, mask, False))
            keys = {gap[-1].name: keys[gap[-1].name]} if gap[-1].name in keys else {}
        counts = folder.counts
        manifest = {**manifest, "classes": classes, **provenance(),
                    "summary": {"done": counts["done"], "skipped": len(skipped), "failed": counts["failed"],
                                "key_frames": sum(1 for e in folder.entries.values() if e.get("key")),
                                "seconds": round(time.monotonic() - started, 1)}}
        video = is_video(frames_path)
        folder.write_records(manifest, folder.status(),
                             lambda name: f"{frames_path}#{name}" if video else str(frames_path / name))
        if config.overlay:
            with folder.stops_on_write_errors():
                write_overlay(frames_path, out, config.max_pixels)
    return manifest


def propagate_masks(frames_path: str | Path, key_masks: str | Path, out: str | Path,
                    config: VideoConfig | None = None) -> dict:
    """Masks for every frame of ``frames_path`` (a folder of frames or a video file) from the masks given for some
    of them in ``key_masks`` (same name with ``.png``, palette PNGs indexing ``key_masks/classes.txt``), without
    any CLIP. Output masks use that class index. Returns the manifest."""
    config = config or VideoConfig()
    config = _refining(config, _default_crf(config), default=False)
    frames_path, key_masks, out = Path(frames_path), Path(key_masks), Path(out)
    if not (key_masks / "classes.txt").is_file():
        raise FreelabelError(f"{key_masks} needs a classes.txt (index name lines) for its masks")
    classes = read_classes(key_masks / "classes.txt")
    available = {str(p.relative_to(key_masks).with_suffix("")) for p in key_masks.rglob("*.png")}
    names = frame_names(frames_path)
    if names is not None and not any(str(Path(n).with_suffix("")) in available for n in names):
        raise FreelabelError(f"no mask in {key_masks} is named like a frame of {frames_path} (e.g. "
                             f"{Path(names[0]).with_suffix('.png')})")

    def is_key(frame: Frame, is_last: bool) -> bool:
        return str(Path(frame.name).with_suffix("")) in available

    def key_of(frame: Frame) -> _Key:
        mask = read_mask(key_masks / Path(frame.name).with_suffix(".png"))
        if mask.shape != frame.pixels.shape[:2]:
            raise FreelabelError(f"key mask of {frame.name} is {mask.shape[1]}x{mask.shape[0]}, its frame "
                                 f"{frame.pixels.shape[1]}x{frame.pixels.shape[0]}")
        unknown = sorted(set(np.unique(mask).tolist()) - {*range(len(classes)), IGNORE_INDEX})
        if unknown:
            raise FreelabelError(f"key mask of {frame.name} holds values {unknown[:5]} that "
                                 f"{key_masks / 'classes.txt'} does not name (0-{len(classes) - 1}, "
                                 f"{IGNORE_INDEX} = ignore)")
        return _Key(one_hot(mask, len(classes)), mask)

    settings = {"mode": "key_masks", "key_masks": str(key_masks.resolve()),
                "propagation": asdict(config.propagation), "max_pixels": config.max_pixels}
    folder = JobFolder(out, {"classes": classes, "settings": settings, "key_frames": sorted(available)},
                       config.overwrite, {"frames": frames_path, "key mask folder": key_masks})
    manifest = {"config": asdict(config), "frames": str(frames_path), "key_masks": str(key_masks)}
    return _propagate(frames_path, out, classes, folder, manifest, config, is_key, key_of)


def video_labels(frames_path: str | Path, labels_spec: str, out: str | Path, config: VideoConfig | None = None
                 ) -> dict:
    """Masks for every frame of ``frames_path`` from one label list for the clip: every ``key_interval``-th frame
    and the last are segmented by the image pipeline (the ``Labeler`` with the model's preset, or the segmenter
    of ``config.checkpoint``), the others get the key frames' probabilities carried by flow. Returns the manifest."""
    # a checkpoint's module needs torch, which the key-mask mode never imports
    from freelabel.segmenter.checkpoint import MODEL, file_digest, final_round, read_run

    config = config or VideoConfig()
    frames_path, out = Path(frames_path), Path(out)
    frame_names(frames_path)  # a folder of frames or a video, checked before any model loads
    try:
        labels = list(dict.fromkeys(check_label(label) for label in read_label_vocabulary(labels_spec)))
    except LabelError as error:
        raise FreelabelError(f"{labels_spec}: {error}") from None
    classes = ["background", *labels]
    if config.checkpoint:
        read_run(config.checkpoint)  # a folder without a trained segmenter is refused before anything is written
        settings: dict[str, Any] = {"checkpoint": str(Path(config.checkpoint).resolve()),
                                    "model_sha256": file_digest(final_round(config.checkpoint) / MODEL)}
        labeler_config: LabelerConfig | None = None
        crf = _default_crf(config)
    else:
        _, labeler_config = resolve_preset(config.clip.model, config.preset, config.overrides)
        settings = {"model": config.clip.model, "pretrained": config.clip.pretrained,
                    "labeler": labeler_config.to_dict()}
        crf = labeler_config.crf
    config = _refining(config, crf, default=not config.checkpoint)
    settings.update(mode="labels", key_interval=config.key_interval, propagation=asdict(config.propagation),
                    max_pixels=config.max_pixels)
    folder = JobFolder(out, {"classes": classes, "settings": settings}, config.overwrite,  # before the model loads
                       {"frames": frames_path})
    model = load_image_segmenter(config.checkpoint, config.clip, labeler_config)
    model.prepare_labels(labels)

    def is_key(frame: Frame, is_last: bool) -> bool:
        return frame.index % config.key_interval == 0 or is_last

    def key_of(frame: Frame) -> _Key:
        model.set_image(frame.pixels)
        result = model.segment(labels)
        to_classes = class_lookup(["background", *result.labels], classes, unknown=IGNORE_INDEX)
        probabilities = np.zeros((len(classes), *frame.pixels.shape[:2]), dtype=np.float32)
        probabilities[to_classes[:len(result.labels) + 1]] = result.probabilities
        return _Key(probabilities, to_classes[result.mask].astype(np.uint8))

    manifest = {"config": asdict(config), "frames": str(frames_path), "labels": labels}
    return _propagate(frames_path, out, classes, folder, manifest, config, is_key, key_of)


def write_overlay(frames_path: Path, out: Path, max_pixels: int | None) -> Path:
    """``out/overlay.mp4``: every readable frame with its mask blended in (palette colours, half opacity), at the
    source's frame rate for a video (25 fps for a folder). Returns its path."""
    fps = 25.0
    if is_video(frames_path):
        capture = cv2.VideoCapture(str(frames_path))
        fps = capture.get(cv2.CAP_PROP_FPS) or fps
        capture.release()
    writer = None
    try:
        for frame in read_frames(frames_path, max_pixels):
            mask_path = out / Path(frame.name).with_suffix(".png")
            if isinstance(frame.pixels, ImageReadError) or not mask_path.is_file():
                continue
            mask = read_mask(mask_path)
            blended = blend_mask(frame.pixels, mask)
            if writer is None:
                height, width = blended.shape[:2]
                writer = cv2.VideoWriter(str(out / ".overlay.tmp.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (width, height))
            writer.write(cv2.cvtColor(blended, cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()
    (out / ".overlay.tmp.mp4").replace(out / "overlay.mp4")
    return out / "overlay.mp4"
