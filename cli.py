"""The ``freelabel`` command: a thin click layer over ``pipelines``. Every option defaults to None, so the
library's defaults are the only defaults."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Callable

import click

from freelabel.clip.loading import ClipConfig
from freelabel.errors import FreelabelError
from freelabel.io import read_label_vocabulary


def _given(**options: Any) -> dict[str, Any]:
    return {key: value for key, value in options.items() if value is not None}


def _friendly_errors(command: Callable) -> Callable:
    """Show freelabel's own errors as one message, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FreelabelError as error:
            raise click.ClickException(str(error)) from None

    return wrapper


def clip_options(command: Callable) -> Callable:
    """The options that choose a CLIP model; they arrive as one ``clip`` argument (a ClipConfig)."""

    @click.option("--model", help="open_clip model name, hf-hub:ORG/REPO, local-dir:PATH, or freelabel-toy.")
    @click.option("--pretrained", help="Pretrained tag, checkpoint file or folder; 'random' for no weights.")
    @click.option("--device", help="Torch device, e.g. cpu or cuda.")
    @click.option("--cache-dir", type=click.Path(file_okay=False), help="Weight cache ($FREELABEL_CACHE_DIR).")
    @click.option("--offline/--online", default=None, help="Never download ($FREELABEL_OFFLINE).")
    @functools.wraps(command)
    def wrapper(*args: Any, model: str | None, pretrained: str | None, device: str | None,
                cache_dir: str | None, offline: bool | None, **kwargs: Any) -> Any:
        clip = dataclasses.replace(ClipConfig(), **_given(model=model, pretrained=pretrained, device=device,
                                                          cache_dir=cache_dir, offline=offline))
        return command(*args, clip=clip, **kwargs)

    return wrapper


@click.group()
@click.version_option(package_name="freelabel")
def main() -> None:
    """freelabel: segmentation labels from image-level labels with CLIP."""


@main.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", "vocabulary", required=True,
              help="Candidate labels: a classes.txt, a file with one label per line, or 'a,b,c'.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for labels.json etc.")
@click.option("--top-k", type=int, help="Labels kept per image.")
@click.option("--min-probability", type=float, help="A kept label needs at least this probability.")
@clip_options
@_friendly_errors
def classify(images: str, vocabulary: str, out: str, top_k: int | None, min_probability: float | None,
             clip: ClipConfig) -> None:
    """Predict image-level labels for every image below IMAGES over an open vocabulary."""
    from freelabel.pipelines.classify import ClassifyConfig, classify_folder

    config = dataclasses.replace(ClassifyConfig(clip=clip), **_given(top_k=top_k, min_probability=min_probability))
    labels = classify_folder(images, read_label_vocabulary(vocabulary), out, config)
    click.echo(f"labelled {len(labels)} images -> {Path(out) / 'labels.json'}")


def _floats(text: str | None) -> tuple[float, ...] | None:
    return None if text is None else tuple(float(v) for v in text.split(",") if v.strip())


def _words(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(w.strip() for w in text.split(",") if w.strip())


@main.command()
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.option("--labels", "labels_spec", required=True,
              help="labels.json / .csv (image -> labels), or one label list for all images ('a,b' or a file).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for masks and manifest.")
@click.option("--method", type=click.Choice(["surgery", "relevance"]), help="How label maps are computed.")
@click.option("--surgery-blocks", type=int, help="Last blocks given the value-value path.")
@click.option("--input-size", type=int, help="Short side of the scale-1 view in pixels.")
@click.option("--scales", help="View scales, e.g. '1,1.5'.")
@click.option("--flip/--no-flip", default=None, help="Add horizontally flipped views.")
@click.option("--window", type=int, help="Sliding-window crop side for large views.")
@click.option("--fusion", type=click.Choice(["softmin", "mean", "max"]), help="How views are combined.")
@click.option("--softmin-temperature", type=float, help="Temperature of the smoothed minimum.")
@click.option("--background-threshold", type=float, help="Scaled map level a label must reach to beat background.")
@click.option("--background-words", help="Extra negative labels counted as background, e.g. 'sky,ground'.")
@click.option("--crf/--no-crf", "use_crf", default=None, help="Refine with a dense CRF (default on).")
@click.option("--crf-backend", type=click.Choice(["pydensecrf", "torch"]), help="CRF implementation.")
@click.option("--ignore-threshold", type=float, help="Pixels less confident than this become 255.")
@click.option("--save-scores", is_flag=True, default=None, help="Also save float16 probabilities per image.")
@click.option("--overwrite", is_flag=True, default=None, help="Recompute images that already have a mask.")
@clip_options
@_friendly_errors
def generate(images: str, labels_spec: str, out: str, method: str | None, surgery_blocks: int | None,
             input_size: int | None, scales: str | None, flip: bool | None, window: int | None, fusion: str | None,
             softmin_temperature: float | None, background_threshold: float | None, background_words: str | None,
             use_crf: bool | None, crf_backend: str | None, ignore_threshold: float | None,
             save_scores: bool | None, overwrite: bool | None, clip: ClipConfig) -> None:
    """Pseudo-masks for every image below IMAGES from its image-level labels."""
    from freelabel.pseudo.labeler import LabelerConfig
    from freelabel.pipelines.generate import GenerateConfig, generate as run

    labeler = LabelerConfig(**_given(
        method=method, surgery_blocks=surgery_blocks, input_size=input_size, scales=_floats(scales), flip=flip,
        window=window, fusion=fusion, softmin_temperature=softmin_temperature,
        background_threshold=background_threshold, background_words=_words(background_words),
        ignore_threshold=ignore_threshold))
    if use_crf is False:
        labeler.crf = None
    elif crf_backend is not None:
        labeler.crf = dataclasses.replace(labeler.crf, backend=crf_backend)
    config = GenerateConfig(clip=clip, labeler=labeler, **_given(save_scores=save_scores, overwrite=overwrite))
    summary = run(images, labels_spec, out, config)["summary"]
    click.echo(f"{summary['done']} masks written, {summary['skipped']} skipped, {summary['failed']} failed "
               f"in {summary['seconds']} s (+ {summary['text_seconds']} s encoding labels) -> {out}")


@main.command()
@click.option("--pred", required=True, type=click.Path(exists=True, file_okay=False), help="Predicted masks.")
@click.option("--gt", required=True, type=click.Path(exists=True, file_okay=False), help="Ground-truth masks.")
@click.option("--classes", required=True, type=click.Path(exists=True, dir_okay=False),
              help="classes.txt of the ground truth.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of a table.")
@_friendly_errors
def evaluate(pred: str, gt: str, classes: str, as_json: bool) -> None:
    """mIoU, per-class IoU and pixel accuracy of predicted masks (255 in the ground truth is ignored)."""
    from freelabel.pipelines.evaluate import evaluate as run, format_report

    report = run(pred, gt, classes)
    click.echo(json.dumps(report) if as_json else format_report(report))


@main.group()
def toy() -> None:
    """The toy world: synthetic scenes and clips with exact masks, and the toy CLIP."""


def _world_options(command: Callable) -> Callable:
    @click.option("--seed", type=int, required=True, help="Scene stream; the same seed gives the same data.")
    @click.option("--n", type=int, required=True, help="How many to write.")
    @click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder.")
    @click.option("--size", type=int, help="Image side in pixels.")
    @click.option("--min-objects", type=int, help="Fewest labelled objects.")
    @click.option("--max-objects", type=int, help="Most labelled objects.")
    @functools.wraps(command)
    def wrapper(*args: Any, size: int | None, min_objects: int | None, max_objects: int | None,
                **kwargs: Any) -> Any:
        from freelabel.toy.world import ToyWorldConfig

        try:
            world = ToyWorldConfig(**_given(image_size=size, min_objects=min_objects, max_objects=max_objects))
        except ValueError as error:
            raise click.BadParameter(str(error)) from None
        return command(*args, world=world, **kwargs)

    return wrapper


@toy.command()
@_world_options
def scenes(seed: int, n: int, out: str, world: Any) -> None:
    """Write toy scenes (images/, masks/, classes.txt, labels.json, captions.json)."""
    from freelabel.pipelines.toy import write_toy_scenes

    click.echo(f"wrote {n} scenes to {write_toy_scenes(out, seed, n, world)}")


@toy.command()
@_world_options
@click.option("--frames", type=int, help="Frames per clip.")
def clips(seed: int, n: int, out: str, world: Any, frames: int | None) -> None:
    """Write toy clips (images/clipNNNN/, masks/clipNNNN/, classes.txt, labels.json)."""
    from freelabel.pipelines.toy import write_toy_clips

    world = dataclasses.replace(world, **_given(clip_frames=frames))
    click.echo(f"wrote {n} clips to {write_toy_clips(out, seed, n, world)}")


@toy.command("train-clip")
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
