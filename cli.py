"""The ``freelabel`` command: a thin click layer over ``pipelines``. Every option defaults to None, so the
library's defaults are the only defaults."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any, Callable

import click

from freelabel.clip import ClipConfig
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
    from pipelines.classify import ClassifyConfig, classify_folder

    config = dataclasses.replace(ClassifyConfig(clip=clip), **_given(top_k=top_k, min_probability=min_probability))
    labels = classify_folder(images, read_label_vocabulary(vocabulary), out, config)
    click.echo(f"labelled {len(labels)} images -> {Path(out) / 'labels.json'}")


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
    from pipelines.toy import write_toy_scenes

    click.echo(f"wrote {n} scenes to {write_toy_scenes(out, seed, n, world)}")


@toy.command()
@_world_options
@click.option("--frames", type=int, help="Frames per clip.")
def clips(seed: int, n: int, out: str, world: Any, frames: int | None) -> None:
    """Write toy clips (images/clipNNNN/, masks/clipNNNN/, classes.txt, labels.json)."""
    from pipelines.toy import write_toy_clips

    world = dataclasses.replace(world, **_given(clip_frames=frames))
    click.echo(f"wrote {n} clips to {write_toy_clips(out, seed, n, world)}")


@toy.command("train-clip")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for weights and records.")
@click.option("--minutes", type=float, help="Wall-clock training budget.")
@click.option("--seed", type=int, help="Training scene stream and torch seed.")
@click.option("--pool-size", type=int, help="Scenes rendered before training.")
def train_clip(out: str, minutes: float | None, seed: int | None, pool_size: int | None) -> None:
    """Train the toy CLIP contrastively on toy scenes (the committed weights used the defaults)."""
    from freelabel.toy.train import ToyClipTrainConfig
    from pipelines.toy import train_clip as run

    config = ToyClipTrainConfig(**_given(budget_minutes=minutes, seed=seed, pool_size=pool_size))
    record = run(out, config)
    click.echo(json.dumps(record["curve"][-1]))


if __name__ == "__main__":
    main()
