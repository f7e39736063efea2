"""Training data for the segmenter: a ``freelabel generate`` output folder as it is, and its augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from freelabel.errors import FreelabelError
from freelabel.io.files import read_json
from freelabel.io.images import read_image
from freelabel.io.labels import class_lookup, read_classes
from freelabel.io.masks import IGNORE_INDEX, read_mask


@dataclass
class PseudoMaskSet:
    """The finished images of one ``generate`` folder, some perhaps with a person's corrected mask instead.

    names: image paths relative to ``images_dir``, sorted. masks: their mask files. classes: the folder's class
    index (``classes.txt``; 0 background), then any class only the corrected masks name. corrected: item index ->
    (256,) int64 table from its corrected mask's class index to ``classes`` (the items whose mask file is a
    corrected one). labels: each item's labels as the manifest lists them (those ``generate`` segmented).
    """

    images_dir: Path
    names: list[str]
    masks: list[Path]
    classes: list[str]
    corrected: dict[int, np.ndarray] = field(default_factory=dict)
    corrected_class_count: int = 0  # classes in the corrected folder's classes.txt: the values its masks may hold
    labels: list[list[str]] = field(default_factory=list)

    def image_path(self, index: int) -> Path:
        return self.images_dir / self.names[index]

    def mask_lookup(self, index: int, lookup: np.ndarray) -> np.ndarray:
        """``lookup`` ((256,) table from ``classes`` to another index) for item ``index``'s mask file: composed
        with the corrected mask's own class table where the item was corrected."""
        table = self.corrected.get(index)
        return lookup if table is None else lookup[table]


def read_pseudo_masks(folder: str | Path, images_dir: str | Path | None = None,
                      corrected: str | Path | None = None) -> PseudoMaskSet:
    """Index a ``generate`` output folder: the images its manifest marks done and whose mask exists.

    images_dir: where the images are; None = the folder named in the manifest. corrected: a folder of masks a
    person corrected (``freelabel import`` output: palette PNGs named like the images, with ``classes.txt``): an
    image with a corrected mask uses it and never its pseudo-mask, also when its pseudo-mask failed. Raises
    ``FreelabelError`` when the folder is not a finished ``generate`` output, its images cannot be found, or the
    corrected folder has no ``classes.txt`` or no mask named like an image of the folder.
    """
    folder = Path(folder)
    if not (folder / "manifest.json").is_file() or not (folder / "classes.txt").is_file():
        raise FreelabelError(f"{folder} is not a freelabel generate output (no manifest.json and classes.txt); "
                             "run `freelabel generate` first")
    manifest = read_json(folder / "manifest.json")
    entries = manifest.get("images", {}) if isinstance(manifest, dict) else None
    if not isinstance(entries, dict) or not all(isinstance(entry, dict) for entry in entries.values()):
        raise FreelabelError(f"{folder / 'manifest.json'} is not a freelabel generate manifest (an object whose "
                             "'images' maps each image to its entry); run `freelabel generate` again")
    images_dir = Path(images_dir if images_dir is not None else manifest.get("images_dir", ""))
    if not images_dir.is_dir():
        raise FreelabelError(f"the image folder {str(images_dir)!r} named in {folder / 'manifest.json'} does not "
                             "exist here; pass --images DIR")
    names = {name for name, entry in entries.items()
             if entry.get("status") == "done" and (folder / Path(name).with_suffix(".png")).is_file()}
    classes = read_classes(folder / "classes.txt")
    fixed: dict[str, Path] = {}
    if corrected is not None:
        corrected = Path(corrected)
        if not (corrected / "classes.txt").is_file():
            raise FreelabelError(f"the corrected masks in {corrected} have no classes.txt (write them with "
                                 "`freelabel import`)")
        fixed = {name: corrected / Path(name).with_suffix(".png") for name in entries
                 if (corrected / Path(name).with_suffix(".png")).is_file()}
        if not fixed:
            raise FreelabelError(f"{corrected} holds no mask named like an image of {folder}")
        corrected_classes = read_classes(corrected / "classes.txt")
        classes += [name for name in corrected_classes if name not in classes]
        table = class_lookup(corrected_classes, classes, unknown=IGNORE_INDEX)
    names = sorted(names | set(fixed))
    if not names:
        raise FreelabelError(f"{folder} holds no finished masks")
    masks = [fixed.get(name, folder / Path(name).with_suffix(".png")) for name in names]
    labels = [list(entries.get(name, {}).get("labels") or []) for name in names]
    return PseudoMaskSet(images_dir, names, masks, classes, {i: table for i, name in enumerate(names) if name in fixed},
                         len(corrected_classes) if fixed else 0, labels)


def with_masks(data: PseudoMaskSet, masks_dir: Path, indices: Sequence[int]) -> PseudoMaskSet:
    """``data`` with the masks of items ``indices`` read from ``masks_dir`` (same names, ``.png``), except the
    corrected items, which keep a person's masks. ``masks_dir``'s ``classes.txt`` must be ``data``'s class index."""
    if not (masks_dir / "classes.txt").is_file() or read_classes(masks_dir / "classes.txt") != data.classes:
        raise FreelabelError(f"{masks_dir} is not a mask folder in the class index of the pseudo-masks (its "
                             "classes.txt differs or is missing)")
    masks = list(data.masks)
    for index in indices:
        if index not in data.corrected:
            masks[index] = masks_dir / Path(data.names[index]).with_suffix(".png")
    return replace(data, masks=masks)


def vocabulary_lookup(classes: Sequence[str], vocabulary: Sequence[str]) -> np.ndarray:
    """(256,) int64 table from a mask's class index to ``[background, *vocabulary]``'s; classes not in the
    vocabulary (held out) and 255 map to 255 (ignored)."""
    return class_lookup(classes, ["background", *vocabulary], unknown=IGNORE_INDEX)


def split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A seeded train/validation split of ``range(n)``: (train, val) sorted index lists; val has
    ``round(n * val_fraction)`` items, at least 1 when ``val_fraction > 0`` and ``n >= 2``."""
    n_val = 0 if val_fraction == 0 or n < 2 else min(n - 1, max(1, round(n * val_fraction)))
    order = np.random.default_rng(seed).permutation(n)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


def resize_short_side(size: tuple[int, int], short_side: int, multiple: int) -> tuple[int, int]:
    """(H, W) scaled so the short side is ``short_side``, each side rounded to a multiple of ``multiple``
    (at least one multiple)."""
    scale = short_side / min(size)
    return tuple(max(multiple, round(side * scale / multiple) * multiple) for side in size)


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, short_side: int, crop: int,
            scale_range: tuple[float, float], interpolation: str = "bilinear") -> tuple[torch.Tensor, torch.Tensor]:
    """Random scale, crop and horizontal flip.

    image: (H, W, 3) uint8; mask: (H, W) uint8 class indices. The image is resized (with ``interpolation``, the
    CLIP's, as prediction resizes) so its short side is ``short_side`` x a factor drawn from ``scale_range``, the
    mask by nearest neighbour; then a ``crop`` x ``crop`` window is cut at random (padded
    where the image is smaller: image 0, mask 255), then flipped with probability 0.5. Returns (3, crop, crop)
    uint8 and (crop, crop) uint8 tensors.
    """
    scale = rng.uniform(*scale_range) * short_side / min(image.shape[:2])
    size = (max(1, round(image.shape[0] * scale)), max(1, round(image.shape[1] * scale)))
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    pixels = F.interpolate(pixels, size=size, mode=interpolation, antialias=True, align_corners=False)
    pixels = pixels.round_().clamp_(0, 255).to(torch.uint8)[0]
    labels = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=size, mode="nearest")[0, 0]
    labels = labels.to(torch.uint8)
    pad_h, pad_w = max(0, crop - size[0]), max(0, crop - size[1])
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h), value=0)
        labels = F.pad(labels, (0, pad_w, 0, pad_h), value=IGNORE_INDEX)
    top = int(rng.integers(0, pixels.shape[1] - crop + 1))
    left = int(rng.integers(0, pixels.shape[2] - crop + 1))
    pixels, labels = pixels[:, top:top + crop, left:left + crop], labels[top:top + crop, left:left + crop]
    if rng.random() < 0.5:
        pixels, labels = pixels.flip(-1), labels.flip(-1)
    return pixels.contiguous(), labels.contiguous()


class AugmentedPseudoMasks(torch.utils.data.Dataset):
    """Items of a ``PseudoMaskSet`` read and augmented; item ``i`` of epoch ``e`` is drawn from
    ``default_rng((seed, e, i))``, so the data does not depend on worker count or process rank."""

    def __init__(self, data: PseudoMaskSet, indices: Sequence[int], lookup: np.ndarray, seed: int, short_side: int,
                 crop: int, scale_range: tuple[float, float], max_pixels: int | None, interpolation: str):
        self.data, self.indices, self.lookup, self.seed = data, list(indices), lookup, seed
        self.short_side, self.crop, self.scale_range, self.max_pixels = short_side, crop, scale_range, max_pixels
        self.interpolation = interpolation
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, crop, crop) uint8 image and (crop, crop) int64 mask in vocabulary indices (255 ignored)."""
        index = self.indices[position]
        image = read_image(self.data.image_path(index), self.max_pixels)
        mask = read_mask(self.data.masks[index])
        if mask.shape != image.shape[:2]:
            raise FreelabelError(f"{self.data.masks[index]} is {mask.shape[1]}x{mask.shape[0]} but its image is "
                                 f"{image.shape[1]}x{image.shape[0]}")
        named = self.data.corrected_class_count if index in self.data.corrected else len(self.data.classes)
        unknown = sorted(set(np.unique(mask).tolist()) - {*range(named), IGNORE_INDEX})
        if unknown:
            raise FreelabelError(f"{self.data.masks[index]} holds values {unknown[:5]} that its classes.txt does not "
                                 f"name (0-{named - 1}, {IGNORE_INDEX} = ignore)")
        rng = np.random.default_rng((self.seed, self.epoch, index))
        labels = self.data.mask_lookup(index, self.lookup)[mask].astype(np.uint8)
        pixels, labels = augment(image, labels, rng, self.short_side, self.crop, self.scale_range, self.interpolation)
        return pixels, labels.long()
