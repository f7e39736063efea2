"""The ``freelabel`` command: a thin click layer over ``pipelines``. Every option defaults to None, so the
library's defaults are the only defaults."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
from pathlib import Path
from typing import Any, Callable

import click

from freelabel.clip.loading import ClipConfig
from freelabel.errors import FreelabelError
from freelabel.run.folder import ERRORS, exit_status


def _given(**options: Any) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


def _exit_if_failed(summary: dict[str, Any]) -> None:
    """End a folder job's command with its exit status (``exit_status``: 1 when some items failed); return when it
    is 0, so that ``main(..., standalone_mode=False)`` returns too."""
    status = exit_status(summary)
    if status:
        raise SystemExit(status)


class UserError(click.ClickException):
    """A user's mistake (a bad option, value or file): one ``Error:`` line and exit code 2, as click's usage
    errors."""

    exit_code = 2


def _friendly_errors(command: Callable) -> Callable:
    """Show freelabel's own errors as one ``Error:`` line, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FreelabelError as error:
            raise UserError(str(error)) from None

    return wrapper


def clip_options(command: Callable) -> Callable:
    """The options that choose a CLIP model; they arrive as one ``clip`` argument (a ClipConfig), or, for a
    command with a ``clip_given`` parameter, as the dict of the options given."""
    wants_given = "clip_given" in inspect.signature(command).parameters

    @click.option("--model", help="open_clip model name, hf-hub:ORG/REPO, local-dir:PATH, or freelabel-toy.")
    @click.option("--pretrained", help="Pretrained tag, checkpoint file or folder; 'random' for no weights.")
    @click.option("--device", help="Torch device, e.g. cpu or cuda.")
    @click.option("--cache-dir", type=click.Path(file_okay=False), help="Weight cache ($FREELABEL_CACHE_DIR).")
    @click.option("--offline/--online", default=None, help="Never download ($FREELABEL_OFFLINE).")
    @click.option("--text-cache", help="Label-embedding cache folder, or 'off' ($FREELABEL_TEXT_CACHE).")
    @functools.wraps(command)
    def wrapper(*args: Any, model: str | None, pretrained: str | None, device: str | None,
                cache_dir: str | None, offline: bool | None, text_cache: str | None, **kwargs: Any) -> Any:
        given = _given(model=model, pretrained=pretrained, device=device, cache_dir=cache_dir, offline=offline,
                       text_cache=text_cache)
        if wants_given:  # the command completes the config itself (e.g. from its input's manifest)
            return command(*args, clip_given=given, **kwargs)
        return command(*args, clip=dataclasses.replace(ClipConfig(), **given), **kwargs)

    return wrapper


@click.group()
@click.version_option(package_name="freelabel")
def main() -> None:
    """freelabel: segmentation labels from image-level labels with CLIP."""


def selection_options(command: Callable) -> Callable:
    """The label-free selection settings (``SelectionConfig``) a user tunes most, over the preset's; they arrive
    as a ``selection_overrides`` dict."""

    @click.option("--top-k", type=int, help="Label-free: at most this many labels per image.")
    @click.option("--min-score", type=float, help="Label-free: a selected label's score reaches this (0-1).")
    @click.option("--max-overlap", type=float,
                  help="Label-free: drop a label seen mostly where a better one is (0-1; 1 = never).")
    @click.option("--verify-rounds", type=int,
                  help="Label-free: times each label is checked against its own pseudo-mask (0 = never).")
    @functools.wraps(command)
    def wrapper(*args: Any, top_k: int | None, min_score: float | None, max_overlap: float | None,
                verify_rounds: int | None, **kwargs: Any) -> Any:
        overrides = _given(top_k=top_k, min_score=min_score, max_overlap=max_overlap, verify_rounds=verify_rounds)
        return command(*args, selection_overrides=overrides, **kwargs)

    return wrapper


VOCABULARY_HELP = ("Vocabulary to select from: a file with one class per line (synonyms after commas), a classes.txt, "
                   "or 'a,b,c'.")


@main.command()
@_friendly_errors
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--vocab", "vocabulary", required=True, help=VOCABULARY_HELP)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for labels.json etc.")
@click.option("--preset", help="Preset JSON, or 'default'; without it, the model's own (its selection settings).")
@selection_options
@click.option("--overwrite", is_flag=True, default=None, help="Redo every image; needed to reuse a folder.")
@click.option("--max-pixels", type=int, help="Refuse larger images unread (decompression bombs).")
@clip_options
def classify(images: str, vocabulary: str, out: str, preset: str | None, selection_overrides: dict[str, Any],
             overwrite: bool | None, max_pixels: int | None, clip: ClipConfig) -> None:
    """Select image-level labels for every image below IMAGES from an open vocabulary: the whole image and its
    regions, each classified alone, then each chosen label checked against its own pseudo-mask. Writes
    OUT/labels.json (the input of `generate --labels`). Exit code 0: every image labelled; 1: some images failed
    (OUT/errors.jsonl); 2: a usage error."""
    from freelabel.pipelines.classify import ClassifyConfig, classify_folder

    config = ClassifyConfig(clip=clip, preset=preset, overrides=selection_overrides,
                            **_given(overwrite=overwrite, max_pixels=max_pixels))
    summary = classify_folder(images, vocabulary, out, config)["summary"]
    click.echo(f"labelled {summary['done']} images, {summary['skipped']} skipped, {summary['failed']} failed in "
               f"{summary['seconds']} s (+ {summary['text_seconds']} s encoding the vocabulary) -> "
               f"{Path(out) / 'labels.json'}" + (f"; failures in {Path(out) / ERRORS}" if summary["failed"] else ""))
    _exit_if_failed(summary)


def _floats(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


def _words(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(w.strip() for w in text.split(",") if w.strip())


def labeler_options(command: Callable) -> Callable:
    """Every ``LabelerConfig`` setting, the CRF's included, as an option that overrides one field of the preset
    (the model's own, or ``--preset FILE``); they arrive as ``preset`` and an ``overrides`` dict."""

    @click.option("--preset", help="Preset JSON (e.g. from `freelabel tune`), or 'default' for the library default "
                  "preset; without it, the model's own preset.")
    @click.option("--method", type=click.Choice(["surgery", "relevance"]), help="How label maps are computed.")
    @click.option("--surgery-blocks", type=int, help="Last blocks given the value-value path.")
    @click.option("--input-size", type=int, help="Short side of the scale-1 view in pixels.")
    @click.option("--scales", help="View scales, e.g. '1,1.5'.")
    @click.option("--flip/--no-flip", default=None, help="Add horizontally flipped views.")
    @click.option("--window", type=int, help="Sliding-window crop side for large views.")
    @click.option("--fusion", type=click.Choice(["softmin", "mean", "max"]), help="How views are combined.")
    @click.option("--softmin-temperature", type=float, help="Temperature of the smoothed minimum.")
    @click.option("--fusion-upsampling", type=int, help="Fusion grid, times finer than the finest patch grid.")
    @click.option("--background-threshold", type=float, help="Scaled map level a label must reach to beat background.")
    @click.option("--background-words", help="Extra negative labels counted as background, e.g. 'sky,ground'.")
    @click.option("--sharpness", type=float, help="Label scores x sharpness go through the softmax.")
    @click.option("--crf/--no-crf", "use_crf", default=None, help="Refine with a dense CRF.")
    @click.option("--crf-backend", type=click.Choice(["pydensecrf", "torch"]), help="CRF implementation.")
    @click.option("--crf-iterations", type=int, help="Mean-field iterations.")
    @click.option("--crf-gaussian-sxy", type=float, help="Spatial std of the smoothness kernel (px).")
    @click.option("--crf-gaussian-compat", type=float, help="Weight of the smoothness kernel (0 = off).")
    @click.option("--crf-bilateral-sxy", type=float, help="Spatial std of the appearance kernel (px).")
    @click.option("--crf-bilateral-srgb", type=float, help="Colour std of the appearance kernel (0-255).")
    @click.option("--crf-bilateral-compat", type=float, help="Weight of the appearance kernel (0 = off).")
    @click.option("--crf-window", type=int, help="torch CRF: neighbourhood side on the coarse grid (odd).")
    @click.option("--crf-downsample", type=int, help="torch CRF: messages passed on a grid this much coarser.")
    @click.option("--ignore-threshold", type=float, help="Pixels less confident than this become 255.")
    @functools.wraps(command)
    def wrapper(*args: Any, preset: str | None, scales: str | None, background_words: str | None,
                **kwargs: Any) -> Any:
        names = ("method", "surgery_blocks", "input_size", "flip", "window", "fusion", "softmin_temperature",
                 "fusion_upsampling", "background_threshold", "sharpness", "use_crf", "crf_backend",
                 "crf_iterations", "crf_gaussian_sxy", "crf_gaussian_compat", "crf_bilateral_sxy",
                 "crf_bilateral_srgb", "crf_bilateral_compat", "crf_window", "crf_downsample", "ignore_threshold")
        overrides = _given(scales=_floats(scales), background_words=_words(background_words),
                           **{name: kwargs.pop(name) for name in names})
        return command(*args, preset=preset, overrides=overrides, **kwargs)

    return wrapper


@main.command()
@_friendly_errors
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", "labels_spec",
              help="labels.json / .csv (image -> labels), or one label list for all images ('a,b' or a file).")
@click.option("--vocab", "vocabulary", help="Label-free: " + VOCABULARY_HELP)
@selection_options
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for masks and manifest.")
@click.option("--save-scores", is_flag=True, default=None, help="Also save float16 probabilities per image.")
@click.option("--overwrite", is_flag=True, default=None,
              help="Redo every image; needed to reuse a folder with other labels or settings.")
@click.option("--max-pixels", type=int, help="Refuse larger images unread (decompression bombs).")
@labeler_options
@clip_options
def generate(images: str, labels_spec: str | None, vocabulary: str | None, selection_overrides: dict[str, Any],
             out: str, save_scores: bool | None, overwrite: bool | None, max_pixels: int | None, preset: str | None,
             overrides: dict[str, Any], clip: ClipConfig) -> None:
    """Pseudo-masks for every image below IMAGES from its image-level labels (--labels), or from labels selected
    for it from a vocabulary (--vocab; they are written to OUT/selection/labels.json), with the model's preset (or
    --preset) and any single setting overridden by its flag. Exit code 0: every image done; 1: some images failed
    (listed in OUT/errors.jsonl); 2: a usage error, nothing done."""
    from freelabel.pipelines.generate import GenerateConfig, generate as run

    config = GenerateConfig(clip=clip, preset=preset, overrides=overrides, vocabulary=vocabulary,
                            selection_overrides=selection_overrides,
                            **_given(save_scores=save_scores, overwrite=overwrite, max_pixels=max_pixels))
    summary = run(images, labels_spec, out, config)["summary"]
    failed = summary["failed"]
    click.echo(f"{summary['done']} masks written, {summary['skipped']} skipped, {failed} failed "
               f"in {summary['seconds']} s (+ {summary['text_seconds']} s encoding labels) -> {out}"
               + (f"; failures in {Path(out) / ERRORS}" if failed else ""))
    _exit_if_failed(summary)


@main.command()
@_friendly_errors
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--masks", required=True, type=click.Path(exists=True, file_okay=False),
              help="Hand-labelled masks (same relative paths, .png; 255 = not labelled).")
@click.option("--classes", required=True, type=click.Path(exists=True, dir_okay=False),
              help="classes.txt of the masks (class 0 background).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Preset JSON to write.")
@click.option("--holdout", type=float, help="Fraction of the images kept for the held-out report.")
@click.option("--workers", type=int, help="Parallel processes.")
@click.option("--rounds", type=int, help="Passes over all stages.")
@labeler_options
@clip_options
def tune(images: str, masks: str, classes: str, out: str, holdout: float | None, workers: int | None,
         rounds: int | None, preset: str | None, overrides: dict[str, Any], clip: ClipConfig) -> None:
    """Fit a preset to a few (20-50) hand-labelled images: a staged grid search on a tuning split, reported on the
    held-out split. Use it with `freelabel generate --preset OUT`."""
    from freelabel.pipelines.tune import TuneConfig, tune as run

    config = TuneConfig(clip=clip, preset=preset, overrides=overrides,
                        **_given(holdout=holdout, workers=workers, rounds=rounds))
    source = run(images, masks, classes, out, config).source
    heldout = source["heldout"]
    click.echo(f"tuned on {source['data']['tuning_images']} images (mIoU {source['tuning']['miou']}); held-out "
               f"{source['data']['heldout_images']} images: mIoU {heldout['start']['miou']} -> "
               f"{heldout['tuned']['miou']} (ignored {heldout['tuned']['ignored_fraction']}) in {source['seconds']} s "
               f"-> {out}")


@main.command()
@_friendly_errors
@click.option("--pred", required=True, type=click.Path(exists=True, file_okay=False), help="Predicted masks.")
@click.option("--gt", required=True, type=click.Path(exists=True, file_okay=False), help="Ground-truth masks.")
@click.option("--classes", required=True, type=click.Path(exists=True, dir_okay=False),
              help="classes.txt of the ground truth.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
@click.option("--allow-missing", is_flag=True, default=None,
              help="Score a missing prediction as all-ignore instead of failing.")
def evaluate(pred: str, gt: str, classes: str, as_json: bool, allow_missing: bool | None) -> None:
    """The one mIoU (predicted 255 counts as wrong; 255 in the ground truth is ignored), the dense-argmax mIoU from
    saved scores, the ignored fraction, per-class IoU and pixel accuracy."""
    from freelabel.pipelines.evaluate import evaluate as run, format_report

    report = run(pred, gt, classes, **_given(allow_missing=allow_missing))
    click.echo(json.dumps(report) if as_json else format_report(report))


@main.command()
def models() -> None:
    """The model cards (bundled weights, prompt templates, preprocessing, presets) and open_clip's pretrained
    models, which any other --model name builds on."""
    from freelabel.pipelines.models import describe_models

    click.echo(describe_models())


@main.command("train")
@_friendly_errors
@click.argument("pseudo_masks", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, metrics).")
@click.option("--images", type=click.Path(exists=True, file_okay=False),
              help="The images, if not where the pseudo-masks' manifest says.")
@click.option("--architecture", help="Segmenter architecture config (freelabel/segmenter/configs).")
@click.option("--epochs", type=int, help="Passes over the training split.")
@click.option("--max-minutes", type=float, help="Stop (resumable) after this much training time.")
@click.option("--batch-size", type=int, help="Images per step, over all processes.")
@click.option("--lr", type=float, help="Peak learning rate of the decoder and heads.")
@click.option("--backbone-lr-scale", type=float, help="CLIP tower's learning rate relative to --lr; 0 = frozen.")
@click.option("--input-size", type=int, help="Short side of images in training and prediction.")
@click.option("--crop-size", type=int, help="Side of the square training crops.")
@click.option("--top-k", type=int, help="Labels selected per image.")
@click.option("--rank-norm/--no-rank-norm", default=None, help="Rank-adaptive temperatures.")
@click.option("--holdout-labels", help="Labels left out of training (pixels ignored), e.g. 'cat,dog'.")
@click.option("--val-fraction", type=float, help="Images held out to validate against their pseudo-masks.")
@click.option("--val-masks", type=click.Path(exists=True, file_okay=False),
              help="Real masks (same names, classes.txt) to validate against too.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), help="bf16 autocast on GPU by default.")
@click.option("--workers", type=int, help="Data-loading processes.")
@click.option("--seed", type=int, help="Split, order, augmentation and initialisation seed.")
@click.option("--weight-decay", type=float, help="AdamW weight decay on matrices.")
@click.option("--warmup-fraction", type=float, help="Share of the steps warming the learning rate up.")
@click.option("--grad-clip", type=float, help="Gradient norm clip; 0 = none.")
@click.option("--scale-range", help="Random rescaling around --input-size, e.g. '0.5,2'.")
@click.option("--multilabel-weight", type=float, help="Weight of the multi-label loss.")
@click.option("--given-labels-fraction", type=float,
              help="Share of images trained with their own labels as the only candidates.")
@click.option("--checkpoint-minutes", type=float, help="Save the training state at least this often.")
@click.option("--max-pixels", type=int, help="Refuse larger images unread.")
@clip_options
def train_command(pseudo_masks: str, out: str, images: str | None, holdout_labels: str | None,
                  scale_range: str | None, clip_given: dict[str, Any], **options: Any) -> None:
    """Train a selected-label segmenter on a `freelabel generate` output folder (PSEUDO_MASKS), on the CLIP that
    made it unless --model says otherwise. A killed run resumes from its last state when run again; under
    `torchrun --nproc-per-node N --no-python freelabel train ...` it trains on N processes."""
    from freelabel.pipelines.train import train_run

    overrides = _given(images_dir=images, holdout_labels=_words(holdout_labels), scale_range=_floats(scale_range),
                       **options)
    config, metrics = train_run(pseudo_masks, out, clip_given, **overrides)
    click.echo(f"trained {metrics.get('epoch', 0)} epochs on {config.clip.model}: "
               + ", ".join(f"{k} {v}" for k, v in metrics.items() if k.startswith("val") or k == "loss")
               + f" -> {out}")


@main.command()
@_friendly_errors
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for masks and manifest.")
@click.option("--labels", "labels_spec",
              help="Labels per image (as generate takes them; any names). Without: the model selects its own.")
@click.option("--top-k", type=int, help="Labels competing per image at most.")
@click.option("--vocab", help="More labels to select from (file or 'a,b'), after the training vocabulary.")
@click.option("--device", help="Torch device; by default the run's if available, else cpu.")
@click.option("--save-scores", is_flag=True, default=None, help="Also save float16 probabilities per image.")
@click.option("--overwrite", is_flag=True, default=None, help="Redo every image; needed to reuse a folder.")
@click.option("--max-pixels", type=int, help="Refuse larger images unread (decompression bombs).")
def predict(run: str, images: str, out: str, labels_spec: str | None, **options: Any) -> None:
    """Masks for every image below IMAGES from the segmenter trained in RUN, in generate's format. Exit code 0:
    every image done; 1: some images failed (listed in OUT/errors.jsonl); 2: a usage error, nothing done."""
    from freelabel.pipelines.predict import PredictConfig, predict as run_predict

    summary = run_predict(run, images, out, labels_spec, PredictConfig(**_given(**options)))["summary"]
    failed = summary["failed"]
    click.echo(f"{summary['done']} masks written, {summary['skipped']} skipped, {failed} failed "
               f"in {summary['seconds']} s -> {out}" + (f"; failures in {Path(out) / ERRORS}" if failed else ""))
    _exit_if_failed(summary)


@main.command()
@_friendly_errors
@click.argument("frames", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for one mask per frame.")
@click.option("--labels", "labels_spec", help="The clip's labels ('a,b' or a file): key frames get the image "
              "pipeline, the others propagated masks.")
@click.option("--key-masks", type=click.Path(exists=True, file_okay=False),
              help="Masks given for some frames (same names, .png, classes.txt): propagated, no CLIP.")
@click.option("--key-interval", type=int, help="--labels: every K-th frame (and the last) is a key frame.")
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False),
              help="--labels: a `freelabel train` run segments the key frames.")
@click.option("--flow", "flow_method", type=click.Choice(["dis", "farneback"]), help="Optical flow method.")
@click.option("--dis-preset", type=click.Choice(["ultrafast", "fast", "medium"]), help="DIS speed/quality preset.")
@click.option("--flow-size", type=int, help="Short side (px) the flow is computed at.")
@click.option("--min-confidence", type=float, help="Propagated pixels less confident than this become 255.")
@click.option("--flagged-min-confidence", type=float,
              help="Pixels failing the flow check on every side are kept where the key frames agree this much.")
@click.option("--refine/--no-refine", default=None,
              help="A dense CRF snaps each propagated mask to its own frame's edges.")
@click.option("--overlay", is_flag=True, default=None, help="Also write overlay.mp4 to watch.")
@click.option("--overwrite", is_flag=True, default=None, help="Redo every frame; needed to reuse a folder.")
@click.option("--max-pixels", type=int, help="Refuse larger frames unread.")
@labeler_options
@clip_options
def video(frames: str, out: str, labels_spec: str | None, key_masks: str | None, key_interval: int | None,
          checkpoint: str | None, flow_method: str | None, dis_preset: str | None, flow_size: int | None,
          min_confidence: float | None, flagged_min_confidence: float | None, refine: bool | None,
          overlay: bool | None,
          overwrite: bool | None, max_pixels: int | None,
          preset: str | None, overrides: dict[str, Any], clip: ClipConfig) -> None:
    """Masks for every frame of FRAMES (a folder of frames or a video file) from key frames: segmented with
    --labels, or given with --key-masks; the frames between get their masks carried by optical flow. Exit code 0:
    every frame done; 1: some frames failed (OUT/errors.jsonl); 2: a usage error."""
    from freelabel.pipelines.video import VideoConfig, propagate_masks, video_labels
    from freelabel.video.flow import FlowConfig
    from freelabel.video.propagate import PropagationConfig

    if (labels_spec is None) == (key_masks is None):
        raise UserError("give exactly one of --labels (segment key frames) and --key-masks (given key frames)")
    flow = dataclasses.replace(FlowConfig(), **_given(method=flow_method, dis_preset=dis_preset,
                                                      working_size=flow_size))
    propagation = dataclasses.replace(PropagationConfig(), flow=flow, **_given(
        min_confidence=min_confidence, flagged_min_confidence=flagged_min_confidence))
    config = dataclasses.replace(VideoConfig(), propagation=propagation, clip=clip, preset=preset,
                                 overrides=overrides, **_given(key_interval=key_interval, checkpoint=checkpoint,
                                                               refine=refine, overlay=overlay, overwrite=overwrite,
                                                               max_pixels=max_pixels))
    manifest = (video_labels(frames, labels_spec, out, config) if labels_spec
                else propagate_masks(frames, key_masks, out, config))
    summary = manifest["summary"]
    click.echo(f"{summary['done']} frame masks written ({summary['key_frames']} key frames), {summary['skipped']} "
               f"skipped, {summary['failed']} failed in {summary['seconds']} s -> {out}"
               + (f"; failures in {Path(out) / ERRORS}" if summary["failed"] else ""))
    _exit_if_failed(summary)


@main.command()
@_friendly_errors
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@click.argument("texts", nargs=-1, required=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for masks, overlay, JSONL.")
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False),
              help="A `freelabel train` run answers instead of the pseudo-mask pipeline.")
@click.option("--max-pixels", type=int, help="Refuse a larger image unread.")
@labeler_options
@clip_options
def query(image: str, texts: tuple[str, ...], out: str, checkpoint: str | None, max_pixels: int | None,
          preset: str | None, overrides: dict[str, Any], clip: ClipConfig) -> None:
    """Masks for free-text queries TEXTS on IMAGE, from one pass over the image: OUT/queryNN.png per text,
    OUT/overlay.png to look at, OUT/queries.jsonl (area, mean score). Exit code 0: every text answered; 1: some
    could not be (see queries.jsonl); 2: a usage error."""
    from freelabel.pipelines.query import QUERIES, QueryConfig, query_image

    config = QueryConfig(clip=clip, preset=preset, overrides=overrides,
                         **_given(checkpoint=checkpoint, max_pixels=max_pixels))
    results = query_image(image, texts, out, config)
    for result in results:
        click.echo(f"{result.text!r}: " + (f"error: {result.error}" if result.error else
                                           f"area {result.area:.3f}, mean score {result.mean_score:.3f}"))
    failed = sum(result.error is not None for result in results)
    click.echo(f"{len(results) - failed} masks -> {out} (overlay.png, {QUERIES})"
               + (f"; {failed} queries failed" if failed else ""))
    if failed:
        raise SystemExit(1)


@main.group()
def toy() -> None:
    """The toy world: synthetic scenes and clips with exact masks, and the toy CLIP."""


def _world_options(command: Callable) -> Callable:
    @click.option("--seed", type=int, required=True, help="Scene stream; the same seed gives the same data.")
    @click.option("--n", type=click.IntRange(min=1), required=True, help="How many to write.")
    @click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
    @click.option("--size", type=int, help="Image side in pixels.")
    @click.option("--min-objects", type=int, help="Fewest labelled objects.")
    @click.option("--max-objects", type=int, help="Most labelled objects.")
    @functools.wraps(command)
    def wrapper(*args: Any, size: int | None, min_objects: int | None, max_objects: int | None,
                **kwargs: Any) -> Any:
        from freelabel.toy.world import ToyWorldConfig

        world = ToyWorldConfig(**_given(image_size=size, min_objects=min_objects, max_objects=max_objects))
        return command(*args, world=world, **kwargs)

    return wrapper


@toy.command()
@_friendly_errors
@_world_options
def scenes(seed: int, n: int, out: str, world: Any) -> None:
    """Write toy scenes (images/, masks/, classes.txt, labels.json, captions.json)."""
    from freelabel.pipelines.toy import write_toy_scenes

    click.echo(f"wrote {n} scenes to {write_toy_scenes(out, seed, n, world)}")


@toy.command()
@_friendly_errors
@_world_options
@click.option("--frames", type=int, help="Frames per clip.")
def clips(seed: int, n: int, out: str, world: Any, frames: int | None) -> None:
    """Write toy clips (images/clipNNNN/, masks/clipNNNN/, classes.txt, labels.json)."""
    from freelabel.pipelines.toy import write_toy_clips

    world = dataclasses.replace(world, **_given(clip_frames=frames))
    click.echo(f"wrote {n} clips to {write_toy_clips(out, seed, n, world)}")


@toy.command("train-clip")
@_friendly_errors
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for weights and records.")
@click.option("--minutes", type=float, help="Wall-clock training budget.")
@click.option("--seed", type=int, help="Training scene stream and torch seed.")
@click.option("--pool-size", type=int, help="Scenes rendered before training.")
@click.option("--supervised-minutes", type=float, help="First part of the budget: the image tower learns the classes.")
def train_clip(out: str, minutes: float | None, seed: int | None, pool_size: int | None,
               supervised_minutes: float | None) -> None:
    """Train the toy CLIP on toy scenes: a supervised start for the image tower, then contrastively (the committed
    weights used the defaults)."""
    from freelabel.toy.train import ToyClipTrainConfig
    from freelabel.pipelines.toy import train_clip as run

    config = ToyClipTrainConfig(**_given(budget_minutes=minutes, seed=seed, pool_size=pool_size,
                                         supervised_minutes=supervised_minutes))
    record = run(out, config)
    click.echo(json.dumps(record["curve"][-1]))


if __name__ == "__main__":
    main()
