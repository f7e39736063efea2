"""The ``freelabel`` command: a thin click layer over ``pipelines``.

The options that set a config field are built from the field (``freelabel.config.option``: help text, flag, choices
and type are written there, once). Every option defaults to None, so the library's defaults (and a model's preset)
are the only defaults. A command with such options also reads them from ``--config FILE`` (JSON or YAML, keyed by
option or field name); the flags given override the file."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
import yaml

from freelabel.errors import FreelabelError
from freelabel.run.folder import ERRORS, exit_status

if TYPE_CHECKING:  # the commands' modules are imported when a command is built (see Group)
    from freelabel.clip.config import ClipConfig

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
    """Show freelabel's own errors as one ``Error:`` line, without a traceback (exit code 2, or the error's own:
    ``RunStoppedError``'s 1)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except FreelabelError as error:
            usage = UserError(str(error))
            usage.exit_code = getattr(error, "exit_code", UserError.exit_code)  # 1: a run stopped partway
            raise usage from None

    return wrapper


class CommaList(click.ParamType):
    """Comma-separated values ('1,1.5', 'sky,ground'), or a list (from a config file), as a tuple of ``item``."""

    name = "text"

    def __init__(self, item: type):
        self.item = item

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        items = value if isinstance(value, (list, tuple)) else str(value).split(",")
        items = [str(v).strip() for v in items if str(v).strip()]
        if self.item is str:
            return tuple(items)
        try:
            return tuple(self.item(v) for v in items)
        except ValueError:
            self.fail(f"expected comma-separated numbers, got {value!r}", param, ctx)


class FieldOption(click.Option):
    """An option that sets one config field. key: the name it has in the dict the command receives (the field's
    name; ``<prefix>_<name>`` for a nested config's field; ``use_<name>`` for an optional nested config's switch)."""

    def __init__(self, *args: Any, key: str, field_name: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.key = key
        self.field_name = field_name


def _field_option(field: dataclasses.Field, hint: Any, prefix: str) -> FieldOption | None:
    """The option for one config field, from its metadata and type hint; None for a field no option can set (a
    nested config that is always there, a dict)."""
    meta = field.metadata
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    kind = next(arg for arg in args if arg is not type(None))
    optional = type(None) in args
    name = f"{prefix}_{field.name}" if prefix else field.name
    flag = meta.get("flag") or "--" + name.replace("_", "-")
    attrs: dict[str, Any] = {"help": meta.get("help"), "key": name, "field_name": field.name}
    if dataclasses.is_dataclass(kind):
        if not optional:
            return None
        flag, attrs["key"], attrs["default"] = f"{flag}/--no-{flag[2:]}", f"use_{name}", None  # the CRF: on or off
    elif kind is bool:
        attrs["default"] = None  # not False: a flag not given leaves the field as the library (or preset) has it
        if "/" not in flag and field.default is False:  # switched on only
            attrs["is_flag"] = True
        elif "/" not in flag:
            flag = f"{flag}/--no-{flag[2:]}"
    elif typing.get_origin(kind) is tuple:
        attrs["type"] = CommaList(typing.get_args(kind)[0])
    elif meta.get("choices"):
        attrs["type"] = click.Choice(list(meta["choices"]))
    elif meta.get("path"):
        attrs["type"] = click.Path(exists=meta["path"] == "existing-folder", file_okay=False)
    elif kind in (int, float, str):
        attrs["type"] = kind
    else:
        return None
    dest = flag.split("/")[0][2:].replace("-", "_")
    return FieldOption([flag, dest], **attrs)


def config_options(config: type, *names: str, into: str, prefix: str = "") -> Callable[[Callable], Callable]:
    """Decorator: an option for each field ``names`` of the dataclass ``config`` (with none named, every field an
    option can set), described by the field's metadata. The command receives the values given as one dict
    parameter ``into``, keyed by ``FieldOption.key``; decorators with the same ``into`` fill one dict. prefix: for
    a nested config's fields (``prefix="crf"``: ``--crf-iterations`` sets key ``crf_iterations``)."""
    hints = typing.get_type_hints(config)
    fields = {field.name: field for field in dataclasses.fields(config)}

    def decorate(command: Callable) -> Callable:
        options = [_field_option(fields[name], hints[name], prefix) for name in names or fields]
        if names and None in options:
            raise TypeError(f"no option can set {config.__name__}.{names[options.index(None)]}")
        options = [option for option in options if option is not None]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = {option.key: kwargs.pop(option.name) for option in options}
            kwargs[into] = {**kwargs.get(into, {}), **_given(**given)}
            return command(*args, **kwargs)

        for option in reversed(options):  # click lists the options in the order they decorate
            wrapper.__dict__.setdefault("__click_params__", []).append(option)
        return wrapper

    return decorate


def _read_options_file(path: Path) -> dict[str, Any]:
    """The mapping of option names to values in a JSON or YAML (``.yaml`` / ``.yml``) file; ``UserError`` for
    anything else."""
    kind = "YAML" if path.suffix.lower() in (".yaml", ".yml") else "JSON"
    try:
        text = path.read_text()
        values = yaml.safe_load(text) if kind == "YAML" else json.loads(text)
    except (ValueError, yaml.YAMLError) as error:  # JSON and decoding errors are ValueErrors
        raise UserError(f"{path} is not valid {kind}: {' '.join(str(error).split())}") from None
    if values is None:  # an empty YAML file
        return {}
    if not isinstance(values, dict):
        raise UserError(f"{path} must hold a mapping of option names to values, not a {type(values).__name__}")

    return values


def _option_names(command: click.Command) -> dict[str, str]:
    """Name in a config file -> option (parameter name): the option's names (``crf_iterations`` or
    ``crf-iterations``), and the config field it sets where no option has that name and no other option sets a
    field of that name."""
    options = [p for p in command.params if isinstance(p, click.Option) and p.expose_value]
    names = {name.replace("-", "_"): option.name for option in options
             for name in [option.name] + [opt.lstrip("-") for opt in option.opts if opt.startswith("--")]}
    fields: dict[str, list[str]] = {}
    for option in options:
        if isinstance(option, FieldOption):
            for name in {option.key, option.field_name} - set(names):
                fields.setdefault(name, []).append(option.name)
    return {**names, **{name: params[0] for name, params in fields.items() if len(params) == 1}}


def _read_config(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--config FILE``: the file's values become the options' defaults, so the flags given override them."""
    if value is None:
        return
    values = {str(key).replace("-", "_"): item for key, item in _read_options_file(Path(value)).items()}
    names = _option_names(ctx.command)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise UserError(f"{value}: unknown option(s) {', '.join(unknown)} (`{ctx.command_path} --help` lists them)")
    given = [key for key, item in values.items() if item is not None]  # null: not given
    twice = sorted(key for key in given if [names[other] for other in given].count(names[key]) > 1)
    if twice:
        raise UserError(f"{value} sets one option under several names: {', '.join(twice)}")
    ctx.default_map = {**(ctx.default_map or {}), **{names[key]: values[key] for key in given}}


class ConfigCommand(click.Command):
    """A command whose config-field options can also be read from ``--config FILE``."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if any(isinstance(param, FieldOption) for param in self.params):
            self.params.append(click.Option(
                ["--config", "config_file"], type=click.Path(exists=True, dir_okay=False), is_eager=True,
                expose_value=False, callback=_read_config,
                help="JSON or YAML file of this command's options (by option or field name); the flags given "
                     "override it."))


class Group(click.Group):
    """``freelabel`` and its subgroups: their commands take ``--config``, and each is built (its modules imported)
    only when it is run or listed, so that starting one command does not import what the others need (open_clip
    and torchvision cost seconds that ``video --key-masks`` or ``evaluate`` never use)."""

    command_class = ConfigCommand
    group_class = type  # subgroups are Groups too

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.builders: dict[str, Callable[[], click.Command]] = {}

    def lazy_command(self, name: str) -> Callable[[Callable[[], click.Command]], Callable[[], click.Command]]:
        """Decorator: register a function that imports what command ``name`` needs and returns the command."""

        def register(builder: Callable[[], click.Command]) -> Callable[[], click.Command]:
            self.builders[name] = builder
            return builder

        return register

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self.builders})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in self.builders:
            self.add_command(self.builders[name](), name)
        return super().get_command(ctx, name)


def clip_options(command: Callable) -> Callable:
    """The options that choose a CLIP model (``ClipConfig``); they arrive as one ``clip`` argument (a ClipConfig),
    or, for a command with a ``clip_given`` parameter, as the dict of the options given."""
    from freelabel.clip.config import ClipConfig

    wants_given = "clip_given" in inspect.signature(command).parameters

    @functools.wraps(command)
    def wrapper(*args: Any, clip_given: dict[str, Any], **kwargs: Any) -> Any:
        if wants_given:  # the command completes the config itself (e.g. from its input's manifest)
            return command(*args, clip_given=clip_given, **kwargs)
        return command(*args, clip=ClipConfig(**clip_given), **kwargs)

    return config_options(ClipConfig, into="clip_given")(wrapper)


def labeler_options(command: Callable) -> Callable:
    """Every ``LabelerConfig`` setting, PAMR's and the CRF's included (``--pamr/--no-pamr``, ``--pamr-<field>``,
    ``--crf/--no-crf``, ``--crf-<field>``), as an option that overrides one field of the preset; they arrive as an
    ``overrides`` dict (``LabelerConfig.with_overrides``'s keys)."""
    from freelabel.pseudo.config import CrfConfig, LabelerConfig, PamrConfig

    return config_options(LabelerConfig, into="overrides")(
        config_options(PamrConfig, prefix="pamr", into="overrides")(
            config_options(CrfConfig, prefix="crf", into="overrides")(command)))


def engine_options(command: Callable) -> Callable:
    """Where a labelling command runs its images (this process or Ray actors) and in what batches (``EngineConfig``);
    they arrive as an ``engine_given`` dict."""
    from freelabel.run.engines import EngineConfig

    return config_options(EngineConfig, into="engine_given")(command)


def selection_options(command: Callable) -> Callable:
    """The label-free selection settings a user tunes most, over the preset's; a ``selection_overrides`` dict."""
    from freelabel.pseudo.config import SelectionConfig

    return config_options(SelectionConfig, "top_k", "min_score", "max_overlap", "verify_rounds",
                          into="selection_overrides")(command)


@click.group(cls=Group)
@click.version_option(package_name="freelabel")
def main() -> None:
    """freelabel: segmentation labels from image-level labels with CLIP."""


VOCABULARY_HELP = ("Vocabulary to select from: a file with one class per line (synonyms after commas), a classes.txt, "
                   "or 'a,b,c'.")


@main.lazy_command("classify")
def _classify_command() -> click.Command:
    from freelabel.pipelines.classify import classify_folder
    from freelabel.run.engines import EngineConfig
    from freelabel.run.selection import ClassifyConfig

    @click.command("classify", cls=ConfigCommand)
    @_friendly_errors
    @click.argument("images", type=click.Path(exists=True, file_okay=False))
    @click.option("--vocab", "vocabulary", required=True, help=VOCABULARY_HELP)
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for labels.json etc.")
    @config_options(ClassifyConfig, "preset", "overwrite", "max_pixels", into="given")
    @selection_options
    @engine_options
    @clip_options
    def classify(images: str, vocabulary: str, out: str, given: dict[str, Any], selection_overrides: dict[str, Any],
                 engine_given: dict[str, Any], clip: ClipConfig) -> None:
        """Select image-level labels for every image below IMAGES from an open vocabulary: the whole image and its
        regions, each classified alone, then each chosen label checked against its own pseudo-mask. Writes
        OUT/labels.json (the input of `generate --labels`). Exit code 0: every image labelled; 1: some images failed
        (OUT/errors.jsonl); 2: a usage error."""
        config = ClassifyConfig(clip=clip, overrides=selection_overrides, engine=EngineConfig(**engine_given), **given)
        summary = classify_folder(images, vocabulary, out, config)["summary"]
        click.echo(f"labelled {summary['done']} images, {summary['skipped']} skipped, {summary['failed']} failed in "
                   f"{summary['seconds']} s (+ {summary['text_seconds']} s encoding the vocabulary) -> "
                   f"{Path(out) / 'labels.json'}"
                   + (f"; failures in {Path(out) / ERRORS}" if summary["failed"] else ""))
        _exit_if_failed(summary)

    return classify


@main.lazy_command("generate")
def _generate_command() -> click.Command:
    from freelabel.pipelines.generate import GenerateConfig, generate as run
    from freelabel.run.engines import EngineConfig

    @click.command("generate", cls=ConfigCommand)
    @_friendly_errors
    @click.argument("images", type=click.Path(exists=True, file_okay=False))
    @click.option("--labels", "labels_spec",
                  help="labels.json / .csv (image -> labels), or one label list for all images ('a,b' or a file).")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for masks and manifest.")
    @config_options(GenerateConfig, "vocabulary", "preset", "save_scores", "overlay", "overwrite", "max_pixels",
                    into="given")
    @selection_options
    @labeler_options
    @engine_options
    @clip_options
    def generate(images: str, labels_spec: str | None, out: str, given: dict[str, Any],
                 selection_overrides: dict[str, Any], overrides: dict[str, Any], engine_given: dict[str, Any],
                 clip: ClipConfig) -> None:
        """Pseudo-masks for every image below IMAGES from its image-level labels (--labels), or from labels selected
        for it from a vocabulary (--vocab; they are written to OUT/selection/labels.json), with the model's preset (or
        --preset) and any single setting overridden by its flag. Exit code 0: every image done; 1: some images failed
        (listed in OUT/errors.jsonl); 2: a usage error, nothing done."""
        config = GenerateConfig(clip=clip, overrides=overrides, selection_overrides=selection_overrides,
                                engine=EngineConfig(**engine_given), **given)
        summary = run(images, labels_spec, out, config)["summary"]
        failed = summary["failed"]
        click.echo(f"{summary['done']} masks written, {summary['skipped']} skipped, {failed} failed "
                   f"in {summary['seconds']} s (+ {summary['text_seconds']} s encoding labels) -> {out}"
                   + (f"; failures in {Path(out) / ERRORS}" if failed else ""))
        _exit_if_failed(summary)

    return generate


@main.lazy_command("tune")
def _tune_command() -> click.Command:
    from freelabel.pipelines.tune import TuneConfig, tune as run

    @click.command("tune", cls=ConfigCommand)
    @_friendly_errors
    @click.argument("images", type=click.Path(exists=True, file_okay=False))
    @click.option("--masks", required=True, type=click.Path(exists=True, file_okay=False),
                  help="Hand-labelled masks (same relative paths, .png; 255 = not labelled).")
    @click.option("--classes", required=True, type=click.Path(exists=True, dir_okay=False),
                  help="classes.txt of the masks (class 0 background).")
    @click.option("--out", required=True, type=click.Path(dir_okay=False), help="Preset JSON to write.")
    @config_options(TuneConfig, "preset", "holdout", "workers", "rounds", "methods", into="given")
    @labeler_options
    @clip_options
    def tune(images: str, masks: str, classes: str, out: str, given: dict[str, Any], overrides: dict[str, Any],
             clip: ClipConfig) -> None:
        """Fit a preset to a few (20-50) hand-labelled images: a staged grid search on a tuning split, reported on the
        held-out split. Use it with `freelabel generate --preset OUT`."""
        source = run(images, masks, classes, out, TuneConfig(clip=clip, overrides=overrides, **given)).source
        heldout = source["heldout"]
        click.echo(f"tuned on {source['data']['tuning_images']} images (mIoU {source['tuning']['miou']}); held-out "
                   f"{source['data']['heldout_images']} images: mIoU {heldout['start']['miou']} -> "
                   f"{heldout['tuned']['miou']} (ignored {heldout['tuned']['ignored_fraction']}) in "
                   f"{source['seconds']} s -> {out}")

    return tune


@main.lazy_command("evaluate")
def _evaluate_command() -> click.Command:
    from freelabel.pipelines.evaluate import evaluate as run, format_report

    @click.command("evaluate", cls=ConfigCommand)
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
        report = run(pred, gt, classes, **_given(allow_missing=allow_missing))
        click.echo(json.dumps(report) if as_json else format_report(report))

    return evaluate


@main.lazy_command("models")
def _models_command() -> click.Command:
    from freelabel.pipelines.models import describe_models

    @click.command("models", cls=ConfigCommand)
    def models() -> None:
        """The model cards (bundled weights, prompt templates, preprocessing, presets) and open_clip's pretrained
        models, which any other --model name builds on."""
        click.echo(describe_models())

    return models


@main.lazy_command("train")
def _train_command() -> click.Command:
    from freelabel.pipelines.train import train_run
    from freelabel.segmenter.trainer import TrainConfig

    @click.command("train", cls=ConfigCommand)
    @_friendly_errors
    @click.argument("pseudo_masks", type=click.Path(exists=True, file_okay=False))
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder (checkpoints, metrics).")
    @config_options(TrainConfig, into="overrides")  # its clip field: the CLIP options below
    @clip_options
    def train_command(pseudo_masks: str, out: str, overrides: dict[str, Any], clip_given: dict[str, Any]) -> None:
        """Train a selected-label segmenter on a `freelabel generate` output folder (PSEUDO_MASKS), on the CLIP that
        made it unless --model says otherwise. With --rounds N, each round after the first trains on the previous
        round's masks of the training images (OUT/round-<r>). A killed run resumes from its last state when run
        again; under `torchrun --nproc-per-node N --no-python freelabel train ...` it trains on N processes."""
        config, metrics = train_run(pseudo_masks, out, clip_given, **overrides)
        round_number = f"round {metrics['round']}: " if "round" in metrics else ""
        click.echo(f"{round_number}trained {metrics.get('epoch', 0)} epochs on {config.clip.model}: "
                   + ", ".join(f"{k} {v}" for k, v in metrics.items() if k.startswith("val") or k == "loss")
                   + f" -> {out}")

    return train_command


@main.lazy_command("predict")
def _predict_command() -> click.Command:
    from freelabel.pipelines.predict import PredictConfig, predict as run_predict
    from freelabel.run.engines import EngineConfig

    @click.command("predict", cls=ConfigCommand)
    @_friendly_errors
    @click.argument("run", type=click.Path(exists=True, file_okay=False))
    @click.argument("images", type=click.Path(exists=True, file_okay=False))
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for masks and manifest.")
    @click.option("--labels", "labels_spec",
                  help="Labels per image (as generate takes them; any names). Without: the model selects its own.")
    @config_options(PredictConfig, into="given")
    @engine_options
    def predict(run: str, images: str, out: str, labels_spec: str | None, given: dict[str, Any],
                engine_given: dict[str, Any]) -> None:
        """Masks for every image below IMAGES from the segmenter trained in RUN, in generate's format. Exit code 0:
        every image done; 1: some images failed (listed in OUT/errors.jsonl); 2: a usage error, nothing done."""
        config = PredictConfig(engine=EngineConfig(**engine_given), **given)
        summary = run_predict(run, images, out, labels_spec, config)["summary"]
        failed = summary["failed"]
        click.echo(f"{summary['done']} masks written, {summary['skipped']} skipped, {failed} failed "
                   f"in {summary['seconds']} s -> {out}" + (f"; failures in {Path(out) / ERRORS}" if failed else ""))
        _exit_if_failed(summary)

    return predict


@main.lazy_command("video")
def _video_command() -> click.Command:
    from freelabel.pipelines.video import VideoConfig, propagate_masks, video_labels
    from freelabel.video.flow import FlowConfig
    from freelabel.video.propagate import PropagationConfig

    @click.command("video", cls=ConfigCommand)
    @_friendly_errors
    @click.argument("frames", type=click.Path(exists=True))
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for one mask per frame.")
    @click.option("--labels", "labels_spec", help="The clip's labels ('a,b' or a file): key frames get the image "
                  "pipeline, the others propagated masks.")
    @click.option("--key-masks", type=click.Path(exists=True, file_okay=False),
                  help="Masks given for some frames (same names, .png, classes.txt): propagated, no CLIP.")
    @config_options(VideoConfig, "key_interval", "checkpoint", "refine", "overlay", "overwrite", "max_pixels", "preset",
                    into="given")
    @config_options(FlowConfig, into="flow")
    @config_options(PropagationConfig, "min_confidence", "flagged_min_confidence", into="propagation")
    @labeler_options
    @clip_options
    def video(frames: str, out: str, labels_spec: str | None, key_masks: str | None, given: dict[str, Any],
              flow: dict[str, Any], propagation: dict[str, Any], overrides: dict[str, Any], clip: ClipConfig) -> None:
        """Masks for every frame of FRAMES (a folder of frames or a video file) from key frames: segmented with
        --labels, or given with --key-masks; the frames between get their masks carried by optical flow. Exit code 0:
        every frame done; 1: some frames failed (OUT/errors.jsonl); 2: a usage error."""
        if (labels_spec is None) == (key_masks is None):
            raise UserError("give exactly one of --labels (segment key frames) and --key-masks (given key frames)")
        config = VideoConfig(propagation=PropagationConfig(flow=FlowConfig(**flow), **propagation), clip=clip,
                             overrides=overrides, **given)
        manifest = (video_labels(frames, labels_spec, out, config) if labels_spec
                    else propagate_masks(frames, key_masks, out, config))
        summary = manifest["summary"]
        click.echo(f"{summary['done']} frame masks written ({summary['key_frames']} key frames), {summary['skipped']} "
                   f"skipped, {summary['failed']} failed in {summary['seconds']} s -> {out}"
                   + (f"; failures in {Path(out) / ERRORS}" if summary["failed"] else ""))
        _exit_if_failed(summary)

    return video


@main.lazy_command("query")
def _query_command() -> click.Command:
    from freelabel.pipelines.query import QUERIES, QueryConfig, query_image

    @click.command("query", cls=ConfigCommand)
    @_friendly_errors
    @click.argument("image", type=click.Path(exists=True, dir_okay=False))
    @click.argument("texts", nargs=-1, required=True)
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for masks, overlay, JSONL.")
    @config_options(QueryConfig, "checkpoint", "max_pixels", "preset", into="given")
    @labeler_options
    @clip_options
    def query(image: str, texts: tuple[str, ...], out: str, given: dict[str, Any], overrides: dict[str, Any],
              clip: ClipConfig) -> None:
        """Masks for free-text queries TEXTS on IMAGE, from one pass over the image: OUT/queryNN.png per text,
        OUT/overlay.png to look at, OUT/queries.jsonl (area, mean score). Exit code 0: every text answered; 1: some
        could not be (see queries.jsonl); 2: a usage error."""
        results = query_image(image, texts, out, QueryConfig(clip=clip, overrides=overrides, **given))
        for result in results:
            click.echo(f"{result.text!r}: " + (f"error: {result.error}" if result.error else
                                               f"area {result.area:.3f}, mean score {result.mean_score:.3f}"))
        failed = sum(result.error is not None for result in results)
        click.echo(f"{len(results) - failed} masks -> {out} (overlay.png, {QUERIES})"
                   + (f"; {failed} queries failed" if failed else ""))
        if failed:
            raise SystemExit(1)

    return query


@main.lazy_command("review")
def _review_command() -> click.Command:
    from freelabel.pipelines.review import review as run
    from freelabel.review import ReviewConfig

    @click.command("review", cls=ConfigCommand)
    @_friendly_errors
    @click.argument("folder", type=click.Path(exists=True, file_okay=False))
    @click.option("--images", type=click.Path(exists=True),
                  help="The images (folder or video file), if not where the manifest says; needed after import.")
    @click.option("--out", type=click.Path(file_okay=False), help="Folder for the page (default FOLDER/review).")
    @config_options(ReviewConfig, into="given")
    def review(folder: str, images: str | None, out: str | None, given: dict[str, Any]) -> None:
        """A page to look at the masks of FOLDER (generate, predict, video or import output) from file://, no server:
        overlays worst first (most ignored pixels), other orders, filter by label, per-class summary, full view with
        image / mask / overlay. Written into FOLDER/review/index.html."""
        done = run(folder, images, out, ReviewConfig(**given))
        click.echo(f"review of {done['images']} images ({done['bytes'] / 2 ** 20:.1f} MiB) in {done['seconds']} s "
                   f"-> {done['index']}")

    return review


@main.lazy_command("export")
def _export_command() -> click.Command:
    from freelabel.exchange import EXPORT_FORMATS
    from freelabel.pipelines.export import export as run

    @click.command("export", cls=ConfigCommand)
    @_friendly_errors
    @click.argument("folder", type=click.Path(exists=True, file_okay=False))
    @click.option("--format", "format_", required=True, type=click.Choice(EXPORT_FORMATS),
                  help="coco: COCO JSON (RLE); labelstudio: tasks with brush predictions + labelling config; "
                       "cvat: Segmentation Mask 1.1; hf: image folder with metadata.jsonl.")
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write.")
    @click.option("--images", type=click.Path(exists=True), help="The images, if not where the manifest says.")
    @click.option("--worst", type=int, help="Only the N images with the most ignored pixels (the review page's first).")
    @click.option("--instances", is_flag=True, default=None,
                  help="coco: one annotation per connected component, not per class.")
    @click.option("--image-root", help="labelstudio: URL or path the image names are appended to "
                                       "(default: absolute paths).")
    @click.option("--ignore-as", type=click.Choice(["ignore-label", "background"]),
                  help="cvat: 255 pixels as a declared 'ignore' label (default) or as background.")
    def export(folder: str, format_: str, out: str, images: str | None, worst: int | None, instances: bool | None,
               image_root: str | None, ignore_as: str | None) -> None:
        """FOLDER's masks in the formats of the tools people correct labels in and train with."""
        done = run(folder, format_, out, images, **_given(worst=worst, instances=instances, image_root=image_root,
                                                         ignore_as=ignore_as))
        click.echo(f"{done['images']} masks exported as {done['format']} -> {done['out']}")

    return export


@main.lazy_command("import")
def _import_command() -> click.Command:
    from freelabel.exchange import IMPORT_FORMATS
    from freelabel.pipelines.import_masks import import_masks

    @click.command("import", cls=ConfigCommand)
    @_friendly_errors
    @click.argument("source", type=click.Path(exists=True))
    @click.option("--format", "format_", required=True, type=click.Choice(IMPORT_FORMATS),
                  help="coco: a COCO JSON file; labelstudio: Label Studio's JSON export; cvat: an unzipped "
                       "Segmentation Mask 1.1 export.")
    @click.option("--out", required=True, type=click.Path(file_okay=False),
                  help="Folder for the masks and classes.txt.")
    @click.option("--classes", type=click.Path(exists=True, dir_okay=False),
                  help="classes.txt the export came from: its order is kept where names match.")
    def import_(source: str, format_: str, out: str, classes: str | None) -> None:
        """Corrected labels back into freelabel masks (palette PNGs named like the images; unpainted pixels 255), which
        evaluate, tune --masks and train --val-masks read."""
        done = import_masks(source, format_, out, classes)
        click.echo(f"{done['images']} masks, {len(done['classes'])} classes -> {done['out']}")

    return import_


@main.group()
def toy() -> None:
    """The toy world: synthetic scenes and clips with exact masks, and the toy CLIP."""


def _world_options(command: Callable) -> Callable:
    """The options of a toy data stream; the world settings arrive as a ``world`` dict of ToyWorldConfig fields."""
    from freelabel.toy.world import ToyWorldConfig

    command = config_options(ToyWorldConfig, "image_size", "min_objects", "max_objects", into="world")(command)
    command = click.option("--out", type=click.Path(file_okay=False), required=True, help="Output folder.")(command)
    command = click.option("--n", type=click.IntRange(min=1), required=True, help="How many to write.")(command)
    return click.option("--seed", type=int, required=True, help="Scene stream; the same seed gives the same data.")(
        command)


@toy.lazy_command("scenes")
def _scenes_command() -> click.Command:
    from freelabel.pipelines.toy import write_toy_scenes
    from freelabel.toy.world import ToyWorldConfig

    @click.command("scenes", cls=ConfigCommand)
    @_friendly_errors
    @_world_options
    def scenes(seed: int, n: int, out: str, world: dict[str, Any]) -> None:
        """Write toy scenes (images/, masks/, classes.txt, labels.json, captions.json)."""
        click.echo(f"wrote {n} scenes to {write_toy_scenes(out, seed, n, ToyWorldConfig(**world))}")

    return scenes


@toy.lazy_command("clips")
def _clips_command() -> click.Command:
    from freelabel.pipelines.toy import write_toy_clips
    from freelabel.toy.world import ToyWorldConfig

    @click.command("clips", cls=ConfigCommand)
    @_friendly_errors
    @_world_options
    @config_options(ToyWorldConfig, "clip_frames", into="world")
    def clips(seed: int, n: int, out: str, world: dict[str, Any]) -> None:
        """Write toy clips (images/clipNNNN/, masks/clipNNNN/, classes.txt, labels.json)."""
        click.echo(f"wrote {n} clips to {write_toy_clips(out, seed, n, ToyWorldConfig(**world))}")

    return clips


@toy.lazy_command("train-clip")
def _train_clip_command() -> click.Command:
    from freelabel.pipelines.toy import train_clip as run
    from freelabel.toy.train import ToyClipTrainConfig

    @click.command("train-clip", cls=ConfigCommand)
    @_friendly_errors
    @click.option("--out", type=click.Path(file_okay=False), required=True, help="Folder for weights and records.")
    @config_options(ToyClipTrainConfig, "budget_minutes", "seed", "pool_size", "supervised_minutes", into="given")
    def train_clip(out: str, given: dict[str, Any]) -> None:
        """Train the toy CLIP on toy scenes: a supervised start for the image tower, then contrastively (the committed
        weights used the defaults)."""
        record = run(out, ToyClipTrainConfig(**given))
        click.echo(json.dumps(record["curve"][-1]))

    return train_clip


if __name__ == "__main__":
    main()
