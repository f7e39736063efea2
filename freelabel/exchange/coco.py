"""COCO JSON with RLE segmentations (what detectron2, mmdet, FiftyOne and CVAT read), to and from label folders.

Every class of ``classes.txt`` is a category (id = class index + 1, since COCO tools treat id 0 as no label),
background included, so that a mask comes back exactly: pixels no annotation covers are 255 (ignore).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from pycocotools import mask as coco_mask
from skimage.measure import label as connected_components

from freelabel.errors import FreelabelError
from freelabel.exchange.folder import LabelFolder, merge_classes, write_label_folder
from freelabel.io.files import read_json, write_json
from freelabel.io.masks import IGNORE_INDEX, read_mask


def mask_annotations(mask: np.ndarray, instances: bool = False) -> list[tuple[int, dict[str, Any]]]:
    """The regions of a class-index mask ((H, W) uint8, 255 = ignore) as (class index, compressed COCO RLE) pairs:
    one per class present, or one per 8-connected component of each class with ``instances``."""
    regions = []
    for index in np.unique(mask):
        if index == IGNORE_INDEX:
            continue
        binary = mask == index
        if instances:
            components = connected_components(binary, connectivity=2)
            parts = [components == k for k in range(1, components.max() + 1)]
        else:
            parts = [binary]
        regions += [(int(index), coco_mask.encode(np.asfortranarray(part.astype(np.uint8)))) for part in parts]
    return regions


def export_coco(folder: LabelFolder, out: str | os.PathLike, instances: bool = False) -> dict[str, Any]:
    """Write ``folder``'s masks as one COCO JSON file ``out``: ``file_name`` is the image's name in the folder,
    ``area`` and ``bbox`` come from pycocotools. Returns the COCO dictionary."""
    images, annotations = [], []
    for image_id, item in enumerate(folder.items, 1):
        mask = read_mask(item.mask)
        images.append({"id": image_id, "file_name": item.name, "height": mask.shape[0], "width": mask.shape[1]})
        for index, rle in mask_annotations(mask, instances):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": index + 1,
                                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
                                "area": int(coco_mask.area(rle)), "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                                "iscrowd": 0})
    coco = {"info": {"description": f"freelabel masks of {folder.root}"}, "images": images,
            "annotations": annotations,
            "categories": [{"id": i + 1, "name": name, "supercategory": ""} for i, name in enumerate(folder.classes)]}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    write_json(out, coco)
    return coco


def annotation_mask(segmentation: Any, height: int, width: int) -> np.ndarray:
    """An annotation's ``segmentation`` (compressed or uncompressed RLE, or polygons) as an (H, W) bool mask."""
    if isinstance(segmentation, list):  # polygons
        rle = coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = {"size": segmentation["size"], "counts": segmentation["counts"].encode("ascii")}
    return coco_mask.decode(rle).astype(bool)


def import_coco(path: str | os.PathLike, out: str | os.PathLike, original: Sequence[str] | None = None) -> Path:
    """Read a COCO JSON file into a label folder ``out``: per image, each annotation painted in file order (a later
    one wins where they overlap), unannotated pixels 255. original: the class list the export came from (kept
    order), or None. Returns ``out``."""
    coco = read_json(path)
    if not isinstance(coco, dict) or not {"images", "annotations", "categories"} <= set(coco):
        raise FreelabelError(f"{path} is not a COCO file (it needs images, annotations and categories)")
    names = {category["id"]: category["name"] for category in coco["categories"]}
    classes, index_of = merge_classes(list(names.values()), original)
    masks, images = {}, {}
    for image in coco["images"]:
        images[image["id"]] = image
        masks[image["file_name"]] = np.full((image["height"], image["width"]), IGNORE_INDEX, np.uint8)
    for annotation in coco["annotations"]:
        image = images[annotation["image_id"]]
        region = annotation_mask(annotation["segmentation"], image["height"], image["width"])
        masks[image["file_name"]][region] = index_of[names[annotation["category_id"]]]
    return write_label_folder(out, classes, masks)
