"""Training the toy CLIP on toy scenes within a wall-clock budget on a CPU.

Two phases share one AdamW optimiser and one cosine schedule. First the image tower alone, mimetically
initialised, learns the 18 classes of single-object scenes through a linear head (dropped afterwards): trained
contrastively from scratch, this small ViT stays at chance on shape for the whole budget, while supervised it
leaves that plateau within a few hundred steps. Then both towers train contrastively (open_clip's ``ClipLoss``)
on captions of the whole pool, as in LiT-style training from a supervised image tower.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.loss import ClipLoss
from tqdm import tqdm

from freelabel.clip.loading import TOY_MODEL, LoadedClip
from freelabel.config import option
from freelabel.errors import ConfigError
from freelabel.io import atomic_path, provenance
from freelabel.optim import param_groups, warmup_cosine
from freelabel.toy.evaluate import class_accuracy, zero_shot_report
from freelabel.toy.world import CLASS_NAMES, ToyWorldConfig, caption, scenes
from freelabel.training import HookBase, TimeBudget, TrainerBase


@dataclass
class ToyClipTrainConfig:
    """How the toy CLIP is trained. Defaults reproduce the committed weights."""

    model: str = option(TOY_MODEL, help="open_clip model name (its config decides the architecture).")
    seed: int = option(0, help="Scene stream used for training, and the torch seed.")
    val_seed: int = option(1, help="Scene stream for the validation curve (never used for training).")
    pool_size: int = option(40_000, help="Scenes rendered before training; each is also seen mirrored.")
    single_object_fraction: float = option(0.5, help="Share of pool scenes with one object (the rest have 1-4).")
    omit_colour_prob: float = option(0.5, help="Chance an object is captioned without its colour ('a striped "
                                     "circle').")
    batch_size: int = option(128, help="Images (and captions) per contrastive step.")
    lr: float = option(1e-3, help="Peak AdamW learning rate.")
    weight_decay: float = option(0.1, help="AdamW weight decay on matrices (not on gains, biases, embeddings).")
    warmup_fraction: float = option(0.03, help="Share of the budget spent warming the learning rate up linearly.")
    budget_minutes: float = option(45.0, flag="--minutes", help="Wall-clock training time; the cosine schedule is "
                                   "laid over it.")
    eval_every_minutes: float = option(1.0, help="How often the validation curve gets a point.")
    val_scenes: int = option(300, help="Single-object validation scenes per curve point.")
    render_workers: int = option(2, help="Processes rendering the pool.")
    threads: int = option(2, help="Torch threads for training.")
    mimetic_init: bool = option(True, help="Initialise attention as trained ViTs look (Trockman & Kolter, 2023).")
    supervised_minutes: float = option(3.0, help="First part of the budget: the image tower alone learns the 18 "
                                       "classes.")

    def __post_init__(self) -> None:
        if not self.budget_minutes > 0 or self.pool_size < 1 or self.batch_size < 1:
            raise ConfigError(f"budget_minutes, pool_size and batch_size must be positive, got {self.budget_minutes}, "
                              f"{self.pool_size} and {self.batch_size}")
        if not 0 <= self.supervised_minutes < self.budget_minutes:
            raise ConfigError(f"supervised_minutes must be in [0, budget_minutes={self.budget_minutes}) to leave time "
                              f"for contrastive training, got {self.supervised_minutes}")
        if self.supervised_minutes and self.pool_size * self.single_object_fraction < 1:
            raise ConfigError("the supervised phase needs single-object scenes: raise single_object_fraction")


def _render_chunk(args: tuple[int, int, int, int | None]) -> tuple[np.ndarray, list[list[str]]]:
    seed, start, count, n_objects = args
    chunk = list(scenes(seed, count, ToyWorldConfig(), n_objects=n_objects, start=start))
    return np.stack([s.image for s in chunk]), [s.labels for s in chunk]


def render_pool(config: ToyClipTrainConfig) -> tuple[np.ndarray, list[list[str]]]:
    """Render the training pool: (N, H, W, 3) uint8 images and their labels. Single-object scenes come from
    indices [0, n1) of the training stream, multi-object ones from [10**7, ...) of it, so none repeat."""
    n_single = int(config.pool_size * config.single_object_fraction)
    jobs, chunk = [], 1000
    for start in range(0, n_single, chunk):
        jobs.append((config.seed, start, min(chunk, n_single - start), 1))
    for start in range(0, config.pool_size - n_single, chunk):
        jobs.append((config.seed, 10**7 + start, min(chunk, config.pool_size - n_single - start), None))
    with multiprocessing.get_context("spawn").Pool(config.render_workers) as pool:
        parts = list(tqdm(pool.imap(_render_chunk, jobs), total=len(jobs), desc="rendering scenes", leave=False))
    return np.concatenate([p[0] for p in parts]), [c for p in parts for c in p[1]]


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip half of the images left-right: shapes, colours and textures keep their names (objects stay upright)."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def mimetic_init(transformer: torch.nn.Module, generator: torch.Generator, qk: tuple[float, float] = (0.7, 0.7),
                 vo: tuple[float, float] = (0.4, 0.4)) -> None:
    """Mimetic initialisation (Trockman & Kolter, 2023) of every ``nn.MultiheadAttention`` in ``transformer``:
    per head, W_q^T W_k ~ a Z + b I (tokens attend to themselves and their like), and, per layer,
    W_v^T W_o^T ~ c Z - d I, with Z Gaussian of variance 1/width. ``qk`` = (a, b), ``vo`` = (c, d).
    Why: a ViT trained from scratch on little data sits on a plateau before it learns to combine patches."""
    for attention in (m for m in transformer.modules() if isinstance(m, torch.nn.MultiheadAttention)):
        width, heads = attention.embed_dim, attention.num_heads
        head_width = width // heads
        eye = torch.eye(width)

        def target(scale: tuple[float, float], sign: float) -> torch.Tensor:
            z = torch.randn(width, width, generator=generator) / math.sqrt(width)
            return scale[0] * z + sign * scale[1] * eye

        with torch.no_grad():
            w_q, w_k, w_v = attention.in_proj_weight.view(3, width, width)
            for head in range(heads):
                u, s, vh = torch.linalg.svd(target(qk, 1.0))
                rows = slice(head * head_width, (head + 1) * head_width)
                # q k^T = x W_q^T W_k x^T: take the head's rank-head_width part of the target
                w_q[rows] = (u[:, :head_width] * s[:head_width].sqrt()).T
                w_k[rows] = s[:head_width].sqrt()[:, None] * vh[:head_width]
            u, s, vh = torch.linalg.svd(target(vo, -1.0))
            # the value path is x W_v^T W_o^T
            w_v.copy_((u * s.sqrt()).T)
            attention.out_proj.weight.copy_((s.sqrt()[:, None] * vh).T)


class ToyClipTrainer(TrainerBase):
    """The toy CLIP's steps on the rendered pool (see the module docstring): supervised through ``head`` while
    the clock is within ``supervised_minutes``, contrastive afterwards; the learning rate follows the warm-up
    cosine laid over the budget. ``clock``: the registered time budget. ``generator`` draws batches and flips."""

    def __init__(self, model: torch.nn.Module, head: torch.nn.Linear, optimizer: torch.optim.Optimizer,
                 images: np.ndarray, labels: list[list[str]], clip: LoadedClip, generator: torch.Generator,
                 clock: TimeBudget, config: ToyClipTrainConfig):
        super().__init__()
        self.model, self.head, self.optimizer, self.labels = model, head, optimizer, labels
        self.generator, self.clock, self.config = generator, clock, config
        self.tokenizer = open_clip.get_tokenizer(config.model)
        self.caption_rng = np.random.default_rng(config.seed)
        self.pool = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(clip.std).view(1, 3, 1, 1)
        self.loss_fn = ClipLoss()
        self.class_index = torch.tensor([CLASS_NAMES.index(names[0]) if len(names) == 1 else -1 for names in labels])
        self.single_object = torch.nonzero(self.class_index >= 0).flatten()
        self.step, self.running_loss = 0, float("nan")
        self.elapsed = 0.0  # training seconds at the last step's start

    def run_step(self) -> None:
        """One step on a batch drawn from the pool (single-object scenes only in the supervised phase)."""
        config, generator = self.config, self.generator
        self.elapsed = elapsed = self.clock.elapsed
        for group in self.optimizer.param_groups:
            group["lr"] = config.lr * warmup_cosine(elapsed / (config.budget_minutes * 60), config.warmup_fraction)
        supervised = elapsed < config.supervised_minutes * 60
        if supervised:
            index = self.single_object[torch.randint(0, len(self.single_object), (config.batch_size,),
                                                     generator=generator)]
        else:
            index = torch.randint(0, len(self.pool), (config.batch_size,), generator=generator)
        batch = (_augment(self.pool[index], generator).float().div_(255) - self.mean) / self.std
        if supervised:
            loss = torch.nn.functional.cross_entropy(self.head(self.model.encode_image(batch)), self.class_index[index])
        else:
            # captions are drawn afresh each time a scene is used: new order, template and partial naming
            tokens = self.tokenizer([caption(self.labels[i], self.caption_rng, config.omit_colour_prob)
                                     for i in index.tolist()])
            image_features, text_features, logit_scale = self.model(batch, tokens)[:3]
            loss = self.loss_fn(image_features, text_features, logit_scale)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, math.log(100))
        self.step += 1
        self.running_loss = (loss.item() if math.isnan(self.running_loss)
                             else 0.95 * self.running_loss + 0.05 * loss.item())


class _Progress(HookBase):
    """The budget's seconds on a progress bar."""

    def __init__(self, budget_seconds: float):
        self.budget_seconds = budget_seconds

    def before_train(self) -> None:
        self.bar = tqdm(total=int(self.budget_seconds), desc="training toy CLIP", unit="s", leave=False)

    def after_step(self) -> None:
        self.bar.update(int(self.trainer.elapsed) - self.bar.n)

    def after_train(self) -> None:
        self.bar.close()


class _ValidationCurve(HookBase):
    """The validation curve: every ``eval_every_minutes`` of training and once at its end, zero-shot accuracy on
    ``val_scenes`` single-object scenes of the ``val_seed`` stream (and the supervised head's shape accuracy while
    there is a supervised phase), with the step, minutes and smoothed loss. ``points``: the curve so far."""

    def __init__(self, clip: LoadedClip, head: torch.nn.Linear, clock: TimeBudget, config: ToyClipTrainConfig):
        self.clip, self.head, self.clock, self.config = clip, head, clock, config
        self.scenes = list(scenes(config.val_seed, config.val_scenes, ToyWorldConfig(), n_objects=1))
        mean, std = torch.tensor(clip.mean).view(1, 3, 1, 1), torch.tensor(clip.std).view(1, 3, 1, 1)
        images = torch.from_numpy(np.stack([s.image for s in self.scenes])).permute(0, 3, 1, 2)
        self.images = (images.float() / 255 - mean) / std
        self.classes = [CLASS_NAMES.index(s.labels[0]) for s in self.scenes]
        self.next_point = config.eval_every_minutes * 60
        self.points: list[dict] = []

    def after_step(self) -> None:
        if self.trainer.elapsed >= self.next_point:
            self._point(self.trainer.elapsed)
            self.next_point += self.config.eval_every_minutes * 60

    def after_train(self) -> None:
        self._point(self.clock.seconds())

    def _point(self, seconds: float) -> None:
        model = self.trainer.model
        self.clip.forget_text()  # the text tower changed since the last point
        report = zero_shot_report(self.clip, self.scenes)
        if self.config.supervised_minutes:
            with torch.no_grad():
                predicted = self.head(model.eval().encode_image(self.images)).argmax(dim=1)
            report["head_shape"] = class_accuracy(predicted.tolist(), self.classes)["shape"]
        self.points.append({"step": self.trainer.step, "minutes": round(seconds / 60, 2),
                            "loss": round(self.trainer.running_loss, 4),
                            **{k: round(v, 4) for k, v in report.items()}})
        tqdm.write(json.dumps(self.points[-1]))
        model.train()


def train_toy_clip(out_dir: str | Path, config: ToyClipTrainConfig | None = None) -> dict:
    """Train the toy CLIP (supervised start, then contrastive; see the module docstring) and write, atomically,
    into ``out_dir``:
    ``<model>.safetensors`` (float16 weights), ``<model>.json`` (this config, the model config and versions)
    and ``<model>-curve.json`` (validation top-1 and per-attribute accuracy over training time).

    Returns the training record (the content of the curve file).
    """
    config = config or ToyClipTrainConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    started = time.monotonic()
    images, labels = render_pool(config)
    render_seconds = time.monotonic() - started
    model = open_clip.create_model(config.model, pretrained=None, load_weights=False)
    generator = torch.Generator().manual_seed(config.seed)
    if config.mimetic_init:
        mimetic_init(model.visual, generator)
    clip = LoadedClip.from_model(model, config.model, "training")
    # the supervised phase reads the image embedding through a linear head, dropped afterwards
    head = torch.nn.Linear(model.visual.output_dim, len(CLASS_NAMES))
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay) + param_groups(head, 0.0),
                                  lr=config.lr, betas=(0.9, 0.98))
    clock = TimeBudget(config.budget_minutes)
    trainer = ToyClipTrainer(model, head, optimizer, images, labels, clip, generator, clock, config)
    curve = _ValidationCurve(clip, head, clock, config)
    trainer.register_hooks([_Progress(config.budget_minutes * 60), curve, clock])
    model.train()
    trainer.train()

    record = {"config": asdict(config), "render_seconds": round(render_seconds, 1),
              "train_seconds": round(clock.seconds(), 1), "steps": trainer.step, "curve": curve.points}
    _save(out_dir, model, config, record)
    return record


def _save(out_dir: Path, model: torch.nn.Module, config: ToyClipTrainConfig, record: dict) -> None:
    """Write the weights (float16), the description and the curve record, each atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / f"{config.model}.safetensors") as tmp:
        save_file(state, str(tmp))
    description = {"train_config": asdict(config), "model_config": open_clip.get_model_config(config.model),
                   **provenance()}
    for name, content in ((f"{config.model}.json", description), (f"{config.model}-curve.json", record)):
        with atomic_path(out_dir / name) as tmp:
            tmp.write_text(json.dumps(content, indent=2) + "\n")
