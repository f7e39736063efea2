"""The toy world: synthetic scenes and clips with exact masks, deterministic from a seed.

Every object class is a word triple (texture, colour, shape), named like a user would name it:
``"red circle"`` (plain texture is left unsaid) or ``"striped blue square"``. Colour and texture are
local appearance; shape is only visible over several patches, so a model must learn both.

Scene ``i`` of stream ``seed`` is drawn from ``numpy.random.default_rng((seed, i))``: the same pair always
gives the same scene, and streams with different seeds never share scenes. The project keeps seed 0 for
training the toy CLIP, seed 1 for its validation curve and seeds >= 1000 for held-out measurements.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from freelabel.config import option
from freelabel.errors import ConfigError

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 40, 35),
    "green": (40, 185, 60),
    "blue": (40, 75, 220),
}
# Objects in these colours appear as distractors: they are not in the vocabulary, so their pixels are background.
DISTRACTOR_COLOURS: tuple[tuple[int, int, int], ...] = ((150, 60, 170), (235, 235, 235), (120, 80, 40))
SHAPES: tuple[str, ...] = ("circle", "square", "triangle")
TEXTURES: tuple[str, ...] = ("plain", "striped")
CAPTION_TEMPLATES: tuple[str, ...] = ("a photo of {}.", "a picture of {}.", "{}.", "an image with {}.")


@dataclass(frozen=True)
class ToyClass:
    """One object class of the toy world: a texture, a colour and a shape."""

    texture: str
    colour: str
    shape: str

    @property
    def name(self) -> str:
        """The class's label, e.g. ``"red circle"`` or ``"striped blue square"``."""
        words = (self.colour, self.shape) if self.texture == "plain" else (self.texture, self.colour, self.shape)
        return " ".join(words)


CLASSES: tuple[ToyClass, ...] = tuple(
    ToyClass(texture, colour, shape) for texture, colour, shape in itertools.product(TEXTURES, COLOURS, SHAPES)
)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
BACKGROUND = "background"


def class_by_name(name: str) -> ToyClass:
    """Look up a toy class by its label; raises ``KeyError`` naming the known labels."""
    for toy_class in CLASSES:
        if toy_class.name == name:
            return toy_class
    raise KeyError(f"unknown toy label {name!r}; known labels: {', '.join(CLASS_NAMES)}")


@dataclass
class ToyWorldConfig:
    """How toy scenes and clips are drawn. The defaults are the world the project measures itself in."""

    image_size: int = option(64, flag="--size", help="Side of the square image in pixels.")
    min_objects: int = option(1, help="Fewest labelled objects per scene.")
    max_objects: int = option(4, help="Most labelled objects per scene.")
    object_scale: tuple[float, float] = option((0.28, 0.55), help="Object diameter as a fraction of the image side.")
    min_visible: float = option(0.45, help="An occluded object keeps at least this fraction of its own pixels.")
    max_rotation_deg: float = option(15.0, help="Objects are drawn upright, turned by up to this many degrees either "
                                     "way.")
    distractor_prob: float = option(0.3, help="Chance of one out-of-vocabulary object (its pixels stay background).")
    pixel_noise: float = option(4.0, help="Std of Gaussian noise added to every pixel (0-255 scale).")
    clip_frames: int = option(24, flag="--frames", help="Frames per clip.")
    clip_scale_change: float = option(0.3, help="An object's size changes by up to this fraction over a clip.")
    clip_travel: float = option(0.45, help="An object's centre travels up to this fraction of the image side over a "
                                "clip.")

    def __post_init__(self) -> None:
        if self.image_size < 16:
            raise ConfigError(f"image_size must be at least 16 pixels, got {self.image_size}")
        if not 1 <= self.min_objects <= self.max_objects <= len(CLASSES):
            raise ConfigError(f"need 1 <= min_objects <= max_objects <= {len(CLASSES)}, got "
                              f"{self.min_objects}, {self.max_objects}")
        if self.clip_frames < 2:
            raise ConfigError(f"clip_frames must be at least 2, got {self.clip_frames}")
        if not 0 < self.object_scale[0] <= self.object_scale[1] < 1:
            raise ConfigError(f"object_scale must satisfy 0 < low <= high < 1, got {self.object_scale}")


@dataclass
class ToyScene:
    """One rendered scene.

    image: (H, W, 3) uint8 RGB. mask: (H, W) uint8, 0 = background, i = ``CLASS_NAMES[i - 1]``; 255 never used.
    labels: names of the classes visible in ``mask``, in drawing order. caption: one sentence naming them.
    """

    image: np.ndarray
    mask: np.ndarray
    labels: list[str]
    caption: str


@dataclass
class ToyClip:
    """One rendered clip: frames (T, H, W, 3) uint8, masks (T, H, W) uint8 (as in ``ToyScene``), and per frame
    the labels visible in it; ``labels`` lists every class that appears in the clip."""

    frames: np.ndarray
    masks: np.ndarray
    frame_labels: list[list[str]]
    labels: list[str]


@dataclass
class _Object:
    toy_class: ToyClass | None  # None for a distractor
    shape: str
    texture: str
    colour: np.ndarray  # (3,) float RGB
    centre: np.ndarray  # (2,) y, x in pixels
    radius: float  # pixels
    angle: float  # radians
    stripe_period: float  # pixels
    stripe_angle: float  # radians


def scene_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for scene ``index`` of stream ``seed``."""
    return np.random.default_rng((seed, index))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    coords = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(coords, coords, indexing="ij")


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    grey = rng.uniform(60, 200)
    return np.clip(grey + rng.uniform(-28, 28, size=3), 0, 255)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured, low-saturation background, (size, size, 3) float32 in [0, 255]."""
    yy, xx = _grid(size)
    a = _muted_colour(rng)
    b = np.clip(a + rng.uniform(-35, 35, size=3), 0, 255)  # textures differ in tone, not in strong edges
    kind = rng.integers(4)
    theta = rng.uniform(0, np.pi)
    along = (np.cos(theta) * xx + np.sin(theta) * yy) / size
    if kind == 0:  # linear gradient
        weight = np.clip(along - along.min(), 0, None) / max(float(np.ptp(along)), 1e-6)
    elif kind == 1:  # smooth blotches: coarse noise upsampled
        cells = int(rng.integers(3, 7))
        coarse = rng.uniform(0, 1, size=(cells, cells)).astype(np.float32)
        idx = (np.arange(size) * cells // size)
        weight = coarse[idx][:, idx]
    elif kind == 2:  # checkerboard
        cell = rng.uniform(size / 12, size / 4)
        weight = ((np.floor(yy / cell) + np.floor(xx / cell)) % 2).astype(np.float32)
    else:  # broad low-contrast stripes
        period = rng.uniform(size / 8, size / 3)
        weight = (np.sin(2 * np.pi * along * size / period) > 0).astype(np.float32)
    return (a * (1 - weight[..., None]) + b * weight[..., None]).astype(np.float32)


def _object_colour(rng: np.random.Generator, base: Sequence[int]) -> np.ndarray:
    return np.clip(np.asarray(base, dtype=np.float32) + rng.uniform(-22, 22, size=3), 0, 255)


def _new_object(rng: np.random.Generator, toy_class: ToyClass | None, config: ToyWorldConfig) -> _Object:
    size = config.image_size
    radius = rng.uniform(*config.object_scale) * size / 2
    margin = radius * 0.6  # objects may touch the border but keep most of themselves inside
    base = COLOURS[toy_class.colour] if toy_class else DISTRACTOR_COLOURS[rng.integers(len(DISTRACTOR_COLOURS))]
    return _Object(
        toy_class=toy_class,
        shape=toy_class.shape if toy_class else SHAPES[rng.integers(len(SHAPES))],
        texture=toy_class.texture if toy_class else "plain",
        colour=_object_colour(rng, base),
        centre=rng.uniform(margin, size - margin, size=2),
        radius=radius,
        angle=np.deg2rad(rng.uniform(-config.max_rotation_deg, config.max_rotation_deg)),
        stripe_period=rng.uniform(0.06, 0.1) * size,
        stripe_angle=rng.uniform(0, np.pi),
    )


def _shape_mask(obj: _Object, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Pixels whose centre lies inside the object: (H, W) bool."""
    dy, dx = yy - obj.centre[0], xx - obj.centre[1]
    u = np.cos(obj.angle) * dx + np.sin(obj.angle) * dy
    v = -np.sin(obj.angle) * dx + np.cos(obj.angle) * dy
    r = obj.radius
    shape = obj.shape
    if shape == "circle":
        return u * u + v * v <= r * r
    if shape == "square":  # side chosen so the area matches a circle's of the same radius
        half = r * np.sqrt(np.pi) / 2
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "triangle":  # equilateral, circumradius scaled to match the circle's area
        rc = r * np.sqrt(4 * np.pi / (3 * np.sqrt(3)))
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            phi = 2 * np.pi * k / 3 + np.pi / 2
            inside &= (np.cos(phi) * u + np.sin(phi) * v) <= rc / 2
        return inside
    raise ValueError(f"unknown shape {shape!r}")


def _paint(canvas: np.ndarray, obj: _Object, inside: np.ndarray, yy: np.ndarray,
           xx: np.ndarray) -> None:
    colour = obj.colour
    if obj.texture == "striped":
        along = np.cos(obj.stripe_angle) * xx + np.sin(obj.stripe_angle) * yy
        dark = (np.floor(along / (obj.stripe_period / 2)) % 2).astype(np.float32)[..., None]
        pixels = colour * (1 - 0.55 * dark)
    else:  # plain, with mild shading so it is not a flat fill
        shade = 1 + 0.08 * ((yy - obj.centre[0]) / max(obj.radius, 1.0))
        pixels = colour * shade[..., None]
    canvas[inside] = pixels[inside]


def _draw(objects: list[_Object], background: np.ndarray, rng: np.random.Generator, config: ToyWorldConfig,
          yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Paint objects back to front; returns image (H, W, 3) uint8, mask (H, W) uint8, and each object's full
    (unoccluded) footprint."""
    canvas = background.copy()
    mask = np.zeros(background.shape[:2], dtype=np.uint8)
    footprints = []
    for obj in objects:
        inside = _shape_mask(obj, yy, xx)
        footprints.append(inside)
        _paint(canvas, obj, inside, yy, xx)
        mask[inside] = CLASSES.index(obj.toy_class) + 1 if obj.toy_class else 0
    canvas += rng.normal(0, config.pixel_noise, size=canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8), mask, footprints


def _visible_labels(mask: np.ndarray, objects: list[_Object]) -> list[str]:
    present = set(np.unique(mask).tolist())
    labels = []
    for obj in objects:
        if obj.toy_class and CLASSES.index(obj.toy_class) + 1 in present and obj.toy_class.name not in labels:
            labels.append(obj.toy_class.name)
    return labels


def caption(labels: Sequence[str], rng: np.random.Generator, omit_colour_prob: float = 0.0) -> str:
    """One sentence naming ``labels`` in a random order with a random template, e.g.
    ``"a photo of a red circle and a striped blue square."``.

    omit_colour_prob: chance that an object is named without its colour (``"a striped square"``), as partial
    descriptions do; training uses it so that shape words must be told apart from most other captions.
    """
    order = [labels[i] for i in rng.permutation(len(labels))]
    phrases = []
    for label in order:
        toy_class = class_by_name(label)
        if rng.uniform() < omit_colour_prob:
            words = (toy_class.shape,) if toy_class.texture == "plain" else (toy_class.texture, toy_class.shape)
            label = " ".join(words)
        phrases.append(f"a {label}")
    listing = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return CAPTION_TEMPLATES[rng.integers(len(CAPTION_TEMPLATES))].format(listing)


def _sample_classes(rng: np.random.Generator, n: int) -> list[ToyClass]:
    return [CLASSES[i] for i in rng.choice(len(CLASSES), size=n, replace=False)]


def render_scene(rng: np.random.Generator, config: ToyWorldConfig | None = None,
                 n_objects: int | None = None) -> ToyScene:
    """Draw one scene from ``rng``.

    n_objects: labelled objects in the scene; by default uniform in [min_objects, max_objects]. Each object keeps
    at least ``min_visible`` of its pixels after occlusion (placements are redrawn until it does).
    """
    config = config or ToyWorldConfig()
    if n_objects is None:
        n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    yy, xx = _grid(config.image_size)
    background = _background(rng, config.image_size)
    objects = [_new_object(rng, None, config)] if rng.uniform() < config.distractor_prob else []
    for toy_class in _sample_classes(rng, n_objects):
        objects.append(_new_object(rng, toy_class, config))
    for _ in range(50):
        image, mask, footprints = _draw(objects, background, rng, config, yy, xx)
        occluded = [i for i, (obj, foot) in enumerate(zip(objects, footprints))
                    if obj.toy_class and (mask[foot] == CLASSES.index(obj.toy_class) + 1).mean() < config.min_visible]
        if not occluded:
            break
        for i in occluded:  # move the hidden objects and try again
            objects[i] = _new_object(rng, objects[i].toy_class, config)
    labels = _visible_labels(mask, objects)
    return ToyScene(image=image, mask=mask, labels=labels, caption=caption(labels, rng))


def scenes(seed: int, n: int, config: ToyWorldConfig | None = None, n_objects: int | None = None,
           start: int = 0) -> Iterator[ToyScene]:
    """Scenes ``start .. start + n - 1`` of stream ``seed`` (see the module docstring)."""
    for index in range(start, start + n):
        yield render_scene(scene_rng(seed, index), config, n_objects)


def render_clip(rng: np.random.Generator, config: ToyWorldConfig | None = None,
                n_objects: int | None = None) -> ToyClip:
    """Draw one clip: the objects of a scene moving along smooth paths over a fixed background.

    Each object's centre follows a straight line plus a gentle sinusoidal sway, its size changes linearly by up to
    ``clip_scale_change`` and it turns slowly; drawing order is fixed, so crossing paths give occlusions.
    """
    config = config or ToyWorldConfig()
    if n_objects is None:
        n_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    size, frames_n = config.image_size, config.clip_frames
    yy, xx = _grid(size)
    background = _background(rng, size)
    starts = [_new_object(rng, toy_class, config) for toy_class in _sample_classes(rng, n_objects)]
    if rng.uniform() < config.distractor_prob:
        starts.insert(0, _new_object(rng, None, config))
    paths = []
    for obj in starts:
        travel = rng.uniform(-1, 1, size=2) * config.clip_travel * size
        sway = rng.uniform(-0.04, 0.04, size=2) * size
        phase = rng.uniform(0, 2 * np.pi)
        growth = rng.uniform(-config.clip_scale_change, config.clip_scale_change)
        spin = rng.uniform(-0.5, 0.5)
        paths.append((travel, sway, phase, growth, spin))
    frames, masks, frame_labels = [], [], []
    for t in range(frames_n):
        s = t / max(frames_n - 1, 1)
        objects = []
        for obj, (travel, sway, phase, growth, spin) in zip(starts, paths):
            centre = obj.centre + travel * (s - 0.5) + sway * np.sin(2 * np.pi * s + phase)
            objects.append(dataclasses.replace(
                obj, centre=np.clip(centre, 0, size), radius=obj.radius * (1 + growth * s), angle=obj.angle + spin * s))
        image, mask, _ = _draw(objects, background, rng, config, yy, xx)
        frames.append(image)
        masks.append(mask)
        frame_labels.append(_visible_labels(mask, objects))
    labels = [c.name for c in (o.toy_class for o in starts) if c and any(c.name in fl for fl in frame_labels)]
    return ToyClip(frames=np.stack(frames), masks=np.stack(masks), frame_labels=frame_labels, labels=labels)


def clips(seed: int, n: int, config: ToyWorldConfig | None = None, start: int = 0) -> Iterator[ToyClip]:
    """Clips ``start .. start + n - 1`` of stream ``seed``."""
    for index in range(start, start + n):
        yield render_clip(scene_rng(seed, index), config)
