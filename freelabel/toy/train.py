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


def train_toy_clip(out_dir: str | Path, config: ToyClipTrainConfig | None = None) -> dict:
    """Train the toy CLIP (supervised start, then contrastive; see the module docstring) and write, atomically,
    into ``out_dir``:
    ``<model>.safetensors`` (float16 weights), ``<model>.json`` (this config, the model config and versions)
    and ``<model>-curve.json`` (validation top-1 and per-attribute accuracy over training time).

    Returns the training record (the content of the curve file).
    """
    from safetensors.torch import save_file

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
    tokenizer = open_clip.get_tokenizer(config.model)
    caption_rng = np.random.default_rng(config.seed)
    pool = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    clip = LoadedClip.from_model(model, config.model, "training")
    mean = torch.tensor(clip.mean).view(1, 3, 1, 1)
    std = torch.tensor(clip.std).view(1, 3, 1, 1)
    val = list(scenes(config.val_seed, config.val_scenes, ToyWorldConfig(), n_objects=1))
    val_images = (torch.from_numpy(np.stack([s.image for s in val])).permute(0, 3, 1, 2).float() / 255 - mean) / std
    val_classes = [CLASS_NAMES.index(s.labels[0]) for s in val]
    loss_fn = ClipLoss()
    # the supervised phase reads the image embedding through a linear head, dropped afterwards
    head = torch.nn.Linear(model.visual.output_dim, len(CLASS_NAMES))
    class_index = torch.tensor([CLASS_NAMES.index(names[0]) if len(names) == 1 else -1 for names in labels])
    single_object = torch.nonzero(class_index >= 0).flatten()
    optimizer = torch.optim.AdamW(param_groups(model, config.weight_decay) + param_groups(head, 0.0),
                                  lr=config.lr, betas=(0.9, 0.98))
    budget = config.budget_minutes * 60
    curve: list[dict] = []

    def evaluate(step: int, seconds: float, loss: float) -> None:
        clip.forget_text()  # the text tower changed since the last point
        report = zero_shot_report(clip, val)
        if config.supervised_minutes:
            with torch.no_grad():
                predicted = head(model.eval().encode_image(val_images)).argmax(dim=1)
            report["head_shape"] = class_accuracy(predicted.tolist(), val_classes)["shape"]
        curve.append({"step": step, "minutes": round(seconds / 60, 2), "loss": round(loss, 4),
                      **{k: round(v, 4) for k, v in report.items()}})
        tqdm.write(json.dumps(curve[-1]))
        model.train()

    train_start = time.monotonic()
    next_eval, step, running_loss = config.eval_every_minutes * 60, 0, float("nan")
    progress_bar = tqdm(total=int(budget), desc="training toy CLIP", unit="s", leave=False)
    model.train()
    while (elapsed := time.monotonic() - train_start) < budget:
        for group in optimizer.param_groups:
            group["lr"] = config.lr * warmup_cosine(elapsed / budget, config.warmup_fraction)
        supervised = elapsed < config.supervised_minutes * 60
        if supervised:
            index = single_object[torch.randint(0, len(single_object), (config.batch_size,), generator=generator)]
        else:
            index = torch.randint(0, len(pool), (config.batch_size,), generator=generator)
        batch = (_augment(pool[index], generator).float().div_(255) - mean) / std
        if supervised:
            loss = torch.nn.functional.cross_entropy(head(model.encode_image(batch)), class_index[index])
        else:
            # captions are drawn afresh each time a scene is used: new order, template and partial naming
            tokens = tokenizer([caption(labels[i], caption_rng, config.omit_colour_prob) for i in index.tolist()])
            image_features, text_features, logit_scale = model(batch, tokens)[:3]
            loss = loss_fn(image_features, text_features, logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        running_loss = loss.item() if math.isnan(running_loss) else 0.95 * running_loss + 0.05 * loss.item()
        progress_bar.update(int(elapsed) - progress_bar.n)
        if elapsed >= next_eval:
            evaluate(step, elapsed, running_loss)
            next_eval += config.eval_every_minutes * 60
    progress_bar.close()
    evaluate(step, time.monotonic() - train_start, running_loss)

    record = {"config": asdict(config), "render_seconds": round(render_seconds, 1),
              "train_seconds": round(time.monotonic() - train_start, 1), "steps": step, "curve": curve}
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out_dir / f"{config.model}.safetensors") as tmp:
        save_file(state, str(tmp))
    description = {"train_config": asdict(config), "model_config": open_clip.get_model_config(config.model),
                   **provenance()}
    for name, content in ((f"{config.model}.json", description), (f"{config.model}-curve.json", record)):
        with atomic_path(out_dir / name) as tmp:
            tmp.write_text(json.dumps(content, indent=2) + "\n")
    return record
