"""Class lists (``classes.txt``), label vocabularies and per-image label files."""

from __future__ import annotations

import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

from freelabel.errors import FreelabelError
from freelabel.io.files import write_text
from freelabel.io.masks import IGNORE_INDEX


def write_classes(path: str | os.PathLike, names: Sequence[str]) -> None:
    """Write ``classes.txt``: one ``index name`` line per class, index 0 first (as in ../shared/datasets)."""
    write_text(path, "".join(f"{i} {name}\n" for i, name in enumerate(names)))


def read_classes(path: str | os.PathLike) -> list[str]:
    """Read ``classes.txt`` (``index name`` lines, ``#`` comments) into a list indexed by class index.

    A line for 255 (the ignore value, e.g. ``255 unlabeled``) is allowed and left out of the list.
    """
    entries: dict[int, str] = {}
    for number, line in enumerate(_read_text(path).splitlines(), 1):
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


MAX_LABEL_LENGTH = 200
# Zero-width (non-)joiners are format characters that belong inside words of some scripts (Persian, Indic)
# and in emoji sequences; they do not break a ``classes.txt`` line, so they are allowed.
_ALLOWED_FORMAT_CHARACTERS = {"\u200c", "\u200d"}


class LabelError(FreelabelError):
    """One label cannot be used as a class name; the message says which label and why."""


def check_label(text: str) -> str:
    """The label ``text`` stripped of surrounding white space, or ``LabelError`` saying what is wrong with it.

    A label must not be empty, must not contain a control, format or line/paragraph separator character (Unicode
    categories Cc, Cf, Zl, Zp: newline, tab, NUL, U+2028, ...; they would break ``classes.txt``, one
    ``index name`` line per class), must be at most ``MAX_LABEL_LENGTH`` characters long and must not be
    ``background`` (any case), which is class 0.
    """
    if not isinstance(text, str):
        raise LabelError(f"label {text!r} is a {type(text).__name__}, not a string")
    label = text.strip()
    if not label:
        raise LabelError(f"label {text!r} is empty")
    for char in label:
        if unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"} and char not in _ALLOWED_FORMAT_CHARACTERS:
            name = unicodedata.name(char, "control character")
            raise LabelError(f"label {text!r} contains {char!r} (U+{ord(char):04X} {name}); a label must be one "
                             f"line of printable text")
    if len(label) > MAX_LABEL_LENGTH:
        raise LabelError(f"label {label[:40]!r}... is {len(label)} characters long; at most {MAX_LABEL_LENGTH} "
                         f"are allowed")
    if label.casefold() == "background":
        raise LabelError(f"label {text!r} is reserved: class 0 is always background (whatever no label covers); "
                         f"leave it out of the labels")
    return label


def _read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's content, without a byte order mark (as Excel and Notepad write one)."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise FreelabelError(f"cannot read {path}: not UTF-8 text ({error}); save it as UTF-8") from None
    except OSError as error:
        raise FreelabelError(f"cannot read {path}: {error.strerror or error}") from None


def _unique_stripped(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(name.strip() for name in names))


def read_label_vocabulary(spec: str) -> list[str]:
    """Labels to choose from: a ``classes.txt`` (``index name`` lines; ``background`` is left out), a text file
    with one label per line, or a comma-separated list (``"cat,dog"``). Returns the labels in order, unique,
    stripped of surrounding white space; blank entries and ``#`` comment lines are skipped. Labels are not
    checked here: use ``check_label`` on each."""
    path = Path(spec)
    if path.is_file():
        text = _read_text(path)
        # Split on line breaks only (not str.splitlines, which also splits on U+2028, form feed, ...), so such a
        # character stays inside its label, where check_label reports it.
        lines = [line.strip() for line in re.split(r"\r\n|\r|\n", text)]
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
    return _unique_stripped(names)


def read_vocabulary(spec: str) -> list[tuple[str, ...]]:
    """A vocabulary to select labels from: each class its name first, then its synonyms.

    A text file holds one class per line, synonyms after commas (``person, people, human``); a ``classes.txt``
    or a comma-separated list (``"cat,dog"``) gives classes without synonyms (see ``read_label_vocabulary``).
    Every name goes through ``check_label``; a bad one raises ``FreelabelError`` naming it. A class whose name
    repeats an earlier class's is dropped, as are repeated synonyms. Returns the classes in order.
    """
    entries = read_label_vocabulary(spec)
    synonyms = Path(spec).is_file()  # an inline list is already split at its commas
    rows = [[name.strip() for name in entry.split(",")] if synonyms else [entry] for entry in entries]
    classes: dict[str, tuple[str, ...]] = {}
    for row in rows:
        try:
            names = tuple(dict.fromkeys(check_label(name) for name in row if name))
        except LabelError as error:
            raise FreelabelError(f"{spec}: {error}") from None
        if names and names[0] not in classes:
            classes[names[0]] = names
    return list(classes.values())


def read_image_labels(spec: str) -> dict[str, list[str]] | list[str]:
    """Labels per image, or one label list for every image.

    spec: a JSON file mapping image paths (relative to the image folder) to label lists; a CSV file with
    ``image,labels`` rows where labels are separated by ``|`` or ``;`` (an optional ``image,labels`` header,
    blank lines and ``#`` comment lines are skipped; quote a labels field that contains a comma); or anything
    ``read_label_vocabulary`` accepts (then the same labels apply to every image). Returns a dict, or a list for
    the shared case; each image's labels are stripped and unique, in order.

    A malformed file (unclosed quote, wrong number of columns, an image listed twice, JSON that is not an
    object of string lists) raises ``FreelabelError`` naming the file and line or image. The labels themselves
    are not checked here: ``check_label`` each one, so that a bad label fails only its image.
    """
    path = Path(spec)
    if path.suffix.lower() == ".json" and path.is_file():
        return _read_json_labels(path)
    if path.suffix.lower() == ".csv" and path.is_file():
        return _read_csv_labels(path)
    return read_label_vocabulary(spec)


def _read_json_labels(path: Path) -> dict[str, list[str]]:
    def unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise FreelabelError(f"{path}: image {key!r} appears twice; put all its labels in one list")
            seen.add(key)
        return dict(pairs)

    try:
        content = json.loads(_read_text(path), object_pairs_hook=unique_keys)
    except json.JSONDecodeError as error:
        raise FreelabelError(f"cannot read JSON {path}: {error}") from None
    if not isinstance(content, dict):
        raise FreelabelError(f"{path} must map each image path to a list of label strings "
                             f"(a JSON object), not a {_json_type(content)}")
    for image, value in content.items():
        if not image.strip():
            raise FreelabelError(f"{path}: an empty image path maps to {value!r}")
        if not isinstance(value, list):
            raise FreelabelError(f"{path}: image {image!r} must map to a list of label strings, not a "
                                 f"{_json_type(value)} ({value!r}); e.g. {{{json.dumps(image)}: [\"cat\"]}}")
        for position, item in enumerate(value):
            if not isinstance(item, str):
                raise FreelabelError(f"{path}: image {image!r} must map to a list of label strings; item "
                                     f"{position} is a {_json_type(item)} ({item!r})")
    if not content:
        raise FreelabelError(f"{path} lists no images")
    return {image: _unique_stripped(value) for image, value in content.items()}


def _json_type(value: object) -> str:
    names = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _read_csv_labels(path: Path) -> dict[str, list[str]]:
    import csv

    at_row_start = True

    def lines(handle):
        # '#' comment lines are blanked before the csv module sees them (a quote or comma in a comment must not
        # count), but only where a row starts, never inside a quoted field; line numbers stay the same.
        nonlocal at_row_start
        for line in handle:
            if at_row_start and line.lstrip().startswith("#"):
                line = "\n"
            at_row_start = False
            yield line

    labels: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    header_possible = True
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(lines(handle), strict=True, skipinitialspace=True)
            while True:
                at_row_start = True
                number = reader.line_num + 1  # the row's first line
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as error:
                    if "unexpected end of data" in str(error):
                        raise FreelabelError(
                            f"{path}:{number}: a quote opened in this row is never closed, so the rest of the file "
                            f"(to line {reader.line_num}) would be read as part of it; close the quote") from None
                    raise FreelabelError(f"{path}:{number}: malformed CSV ({error}); a quoted field must be the "
                                         f"whole field, e.g. a.png,\"cat|dog, sitting\"") from None
                if reader.line_num > number:
                    raise FreelabelError(
                        f"{path}:{number}: a quoted field in this row runs on to line {reader.line_num}: {row!r}; "
                        f"probably a quote is not closed (labels cannot contain line breaks)")
                if all(not cell.strip() for cell in row):
                    continue
                if header_possible:
                    header_possible = False
                    if row[0].strip().lower() == "image" and len(row) == 2:
                        continue
                if len(row) != 2:
                    hint = ("quote labels that contain commas, and separate labels with | or ;" if len(row) > 2
                            else "separate the image path and its labels with a comma")
                    raise FreelabelError(f"{path}:{number}: expected 2 columns (image,labels), found {len(row)}: "
                                         f"{row!r}; {hint}")
                image = row[0].strip()
                if not image:
                    raise FreelabelError(f"{path}:{number}: no image path in the first column: {row!r}")
                if image in first_line:
                    raise FreelabelError(f"{path}:{number}: image {image!r} is listed twice, on lines "
                                         f"{first_line[image]} and {number}; put all its labels on one row")
                first_line[image] = number
                # Empty pieces ("cat||dog", a trailing "|") are separator slips, not labels: skipped.
                names = [name for name in re.split(r"[|;]", row[1]) if name.strip()]
                labels[image] = _unique_stripped(names)
    except UnicodeDecodeError as error:
        raise FreelabelError(f"cannot read {path}: not UTF-8 text ({error}); save it as CSV UTF-8") from None
    except OSError as error:
        raise FreelabelError(f"cannot read {path}: {error.strerror or error}") from None
    if not labels:
        raise FreelabelError(f"{path} lists no images (expected image,labels rows)")
    return labels


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
