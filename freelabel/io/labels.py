"""Class lists (``classes.txt``), label vocabularies and per-image label files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from freelabel.errors import FreelabelError
from freelabel.io.files import read_json, write_text
from freelabel.io.masks import IGNORE_INDEX


def write_classes(path: str | os.PathLike, names: Sequence[str]) -> None:
    """Write ``classes.txt``: one ``index name`` line per class, index 0 first (as in ../shared/datasets)."""
    write_text(path, "".join(f"{i} {name}\n" for i, name in enumerate(names)))


def read_classes(path: str | os.PathLike) -> list[str]:
    """Read ``classes.txt`` (``index name`` lines, ``#`` comments) into a list indexed by class index.

    A line for 255 (the ignore value, e.g. ``255 unlabeled``) is allowed and left out of the list.
    """
    entries: dict[int, str] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        index, _, name = line.partition(" ")
        if not index.isdigit() or not name.strip():
            raise FreelabelError(f"{path}:{number}: expected 'index name', got {line!r}")
        if int(index) != IGNORE_INDEX:
            entries[int(index)] = name.strip()
    if sorted(entries) != list(range(len(entries))):
        raise FreelabelError(f"{path}: class indices must run 0..N-1 without gaps")
    return [entries[i] for i in range(len(entries))]


def read_label_vocabulary(spec: str) -> list[str]:
    """Labels to choose from: a ``classes.txt`` (``index name`` lines; ``background`` is left out), a text file
    with one label per line, or a comma-separated list (``"cat,dog"``). Returns the labels in order, unique."""
    path = Path(spec)
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if lines and all(line.split(" ", 1)[0].isdigit() and " " in line for line in lines):
            names = [name for name in read_classes(path) if name != "background"]
        else:
            names = lines
    elif path.suffix in {".txt", ".json", ".csv"} or os.sep in spec:
        raise FreelabelError(f"label file {spec} does not exist")
    else:
        names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise FreelabelError(f"no labels in {spec!r}")
    return list(dict.fromkeys(names))


def read_image_labels(spec: str) -> dict[str, list[str]] | list[str]:
    """Labels per image, or one label list for every image.

    spec: a JSON file mapping image paths (relative to the image folder) to label lists; a CSV file with
    ``image,labels`` rows where labels are separated by ``|`` or ``;``; or anything ``read_label_vocabulary``
    accepts (then the same labels apply to every image). Returns a dict, or a list for the shared case.
    """
    path = Path(spec)
    if path.suffix.lower() == ".json" and path.is_file():
        content = read_json(path)
        if not isinstance(content, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in content.values()):
            raise FreelabelError(f"{path} must map each image path to a list of label strings")
        return {str(k): list(dict.fromkeys(v)) for k, v in content.items()}
    if path.suffix.lower() == ".csv" and path.is_file():
        import csv

        labels: dict[str, list[str]] = {}
        with path.open(newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                if not row or row[0].startswith("#") or (number == 1 and row[0].strip().lower() == "image"):
                    continue
                if len(row) < 2:
                    raise FreelabelError(f"{path}:{number}: expected 'image,labels', got {row!r}")
                names = [n.strip() for n in row[1].replace(";", "|").split("|") if n.strip()]
                labels[row[0].strip()] = list(dict.fromkeys(names))
        return labels
    return read_label_vocabulary(spec)


def class_lookup(names: Sequence[str], classes: Sequence[str], unknown: int) -> np.ndarray:
    """A table from one list's class indices to another's, by name: the one mapping from an image's own label
    order (or a prediction's ``classes.txt``) to a global class index.

    names: the class names of the source indices (``names[i]`` is index ``i``; e.g. ``["background", *labels]``).
    classes: the target class names. Returns (256,) int64: ``table[i]`` is ``classes.index(names[i])``, or
    ``unknown`` for a name not in ``classes`` or an index beyond ``names``; ``table[255]`` stays 255 (ignore).
    """
    if len(names) > IGNORE_INDEX:
        raise FreelabelError(f"{len(names)} classes do not fit 8-bit masks (at most {IGNORE_INDEX})")
    position = {name: index for index, name in reversed(list(enumerate(classes)))}
    table = np.full(IGNORE_INDEX + 1, unknown, dtype=np.int64)
    table[:len(names)] = [position.get(name, unknown) for name in names]
    table[IGNORE_INDEX] = IGNORE_INDEX
    return table
