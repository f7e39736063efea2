"""Label Studio tasks with brush predictions, and Label Studio exports back into label folders.

Each class present in a mask (background included, so a mask comes back exactly) is one ``brushlabels`` result in
Label Studio's brush RLE: the run-length coded RGBA bitmap its frontend paints, header ``num`` (32 bits), word size
- 1 (5 bits), four run-length field widths - 1 (4 bits each), then per run a repeat flag, a 2-bit width index, the
run length - 1 and the 8-bit value. Pixels no brush covers are 255 (ignore).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import quote, unquote, urlparse
from xml.sax.saxutils import quoteattr

import numpy as np

from freelabel.errors import FreelabelError
from freelabel.exchange.folder import LabelFolder, merge_classes, write_label_folder
from freelabel.io.files import read_json, write_json, write_text
from freelabel.io.masks import IGNORE_INDEX, palette, read_mask

RUN_WIDTHS = (3, 4, 8, 16)  # bits of a run's length - 1, by width index (Label Studio's defaults)
MAX_RUN = 2 ** RUN_WIDTHS[-1]  # the longest run one field holds
BRUSH = "label"  # the BrushLabels control's name in the labelling config
IMAGE = "image"  # the Image object's name and the task's data key


def encode_brush(region: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of an (H, W) bool region: its RGBA bitmap (all four channels 255 inside, 0 outside)
    as a list of byte values, as in a result's ``value.rle``."""
    values = np.where(region.ravel(), 255, 0)
    starts = np.r_[0, np.flatnonzero(values[1:] != values[:-1]) + 1]
    lengths = np.diff(np.r_[starts, values.size]) * 4  # four channels per pixel
    pieces = -(-lengths // MAX_RUN)  # runs longer than one field holds are split
    chunk = np.full(pieces.sum(), MAX_RUN)
    chunk[np.cumsum(pieces) - 1] = lengths - (pieces - 1) * MAX_RUN
    width_index = np.searchsorted(2 ** np.array(RUN_WIDTHS), chunk)
    run_fields = np.stack([np.ones_like(chunk), width_index, chunk - 1, np.repeat(values[starts], pieces)], 1)
    run_widths = np.stack([np.ones_like(chunk), np.full_like(chunk, 2), np.array(RUN_WIDTHS)[width_index],
                           np.full_like(chunk, 8)], 1)
    header = [(values.size * 4, 32), (8 - 1, 5)] + [(width - 1, 4) for width in RUN_WIDTHS]
    fields = np.r_[[v for v, _ in header], run_fields.ravel()].astype(np.int64)
    widths = np.r_[[w for _, w in header], run_widths.ravel()].astype(np.int64)
    field = np.repeat(np.arange(fields.size), widths)
    offset = np.arange(field.size) - np.repeat(np.cumsum(widths) - widths, widths)
    bits = (fields[field] >> (widths[field] - 1 - offset)) & 1
    return np.packbits(bits.astype(np.uint8)).tolist()


def decode_brush(rle: Sequence[int], height: int, width: int) -> np.ndarray:
    """An (H, W) bool region from Label Studio's brush RLE (any word size and run widths): pixels whose painted
    alpha is at least 128."""
    bits = np.unpackbits(np.asarray(rle, dtype=np.uint8)).astype(np.int64)
    position = 0

    def read(n: int) -> int:
        nonlocal position
        value = int(bits[position:position + n] @ (1 << np.arange(n - 1, -1, -1)))
        position += n
        return value

    count, word = read(32), read(5) + 1
    run_widths = [read(4) + 1 for _ in range(4)]
    out = np.zeros(count, dtype=np.uint8)
    i = 0
    while i < count:
        repeat = read(1)
        end = i + 1 + read(run_widths[read(2)])
        if repeat:
            out[i:end] = read(word)
        else:
            out[i:end] = [read(word) for _ in range(end - i)]
        i = end
    if count != height * width * 4:
        raise FreelabelError(f"a brush of {count} values is not a {width}x{height} RGBA bitmap")
    return out.reshape(height, width, 4)[..., 3] >= 128


def labelling_config(classes: Sequence[str]) -> str:
    """The labelling config (XML) of a Label Studio project for these classes, in the palette's colours."""
    colours = palette()
    labels = "".join(f'\n    <Label value={quoteattr(name)} background="#{bytes(colours[i]).hex()}"/>'
                     for i, name in enumerate(classes))
    return (f'<View>\n  <Image name="{IMAGE}" value="${IMAGE}" zoom="true"/>\n'
            f'  <BrushLabels name="{BRUSH}" toName="{IMAGE}">{labels}\n  </BrushLabels>\n</View>\n')


def export_labelstudio(folder: LabelFolder, out: str | os.PathLike, image_root: str | None = None) -> list[dict]:
    """Write ``out/tasks.json`` (one task per image, its mask as brush predictions) and ``out/config.xml`` (the
    labelling config to paste into the project).

    image_root: what the images' names are appended to in ``data.image`` (a URL such as
    ``http://host/images`` or Label Studio's ``/data/local-files/?d=images``); None = each image's absolute path.
    The task's ``data.name`` keeps the image's name for ``import``. Returns the tasks."""
    tasks = []
    for item in folder.items:
        mask = read_mask(item.mask)
        height, width = mask.shape
        if image_root is not None:
            url = image_root.rstrip("/") + "/" + quote(item.name)
        else:
            url = str(Path(item.image).resolve()) if item.image is not None else item.name
        results = [{"id": f"r{index}", "from_name": BRUSH, "to_name": IMAGE, "type": "brushlabels",
                    "original_width": width, "original_height": height, "image_rotation": 0,
                    "value": {"format": "rle", "rle": encode_brush(mask == index),
                              "brushlabels": [folder.classes[index]]}}
                   for index in np.unique(mask) if index != IGNORE_INDEX]
        tasks.append({"data": {IMAGE: url, "name": item.name},
                      "predictions": [{"model_version": "freelabel", "result": results}]})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "tasks.json", tasks)
    write_text(out / "config.xml", labelling_config(folder.classes))
    return tasks


def _task_results(task: dict[str, Any]) -> list[dict[str, Any]]:
    """A task's brush results: its latest annotation that was not cancelled, else its first prediction."""
    annotations = [a for a in task.get("annotations", []) if not a.get("was_cancelled")]
    chosen = annotations[-1] if annotations else (task.get("predictions") or [{}])[0]
    return [r for r in chosen.get("result", []) if r.get("type", "").lower() == "brushlabels"]


def _task_name(task: dict[str, Any]) -> str:
    """The image's name: ``data.name`` as exported, else the last part of the image's path or URL."""
    data = task.get("data", {})
    if "name" in data:
        return data["name"]
    url = urlparse(str(data.get(IMAGE, "")))
    return Path(unquote(url.query.split("d=")[-1] if "d=" in url.query else url.path)).name


def import_labelstudio(path: str | os.PathLike, out: str | os.PathLike,
                       original: Sequence[str] | None = None) -> Path:
    """Read a Label Studio JSON export (or a tasks file with predictions) into a label folder ``out``: per task
    its latest annotation (else its prediction), brushes painted in order (a later one wins), unpainted pixels
    255. original: the class list the export came from (kept order), or None. Returns ``out``."""
    tasks = read_json(path)
    if not isinstance(tasks, list):
        raise FreelabelError(f"{path} is not a Label Studio export (a JSON list of tasks)")
    names: list[str] = []
    for task in tasks:
        for result in _task_results(task):
            names += [n for n in result["value"]["brushlabels"] if n not in names]
    classes, index_of = merge_classes(names, original)
    masks = {}
    for task in tasks:
        results = _task_results(task)
        if not results:
            continue
        height, width = results[0]["original_height"], results[0]["original_width"]
        mask = np.full((height, width), IGNORE_INDEX, np.uint8)
        for result in results:
            mask[decode_brush(result["value"]["rle"], height, width)] = index_of[result["value"]["brushlabels"][0]]
        masks[_task_name(task)] = mask
    return write_label_folder(out, classes, masks)
