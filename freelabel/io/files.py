"""Atomic writes, JSON, and the provenance stored beside every output."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from freelabel.errors import FreelabelError
from freelabel.version import __version__


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success it replaces ``target`` in one rename, so readers
    never see a half-written file and a killed run leaves no partial output (only a stray temp file at worst)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + target.suffix, dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes owner-only files; give the file the usual mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stray_temp_files(folder: str | os.PathLike) -> None:
    """Remove the temporary files below ``folder`` of writes a kill interrupted (see ``atomic_path``)."""
    for path in [p for p in Path(folder).rglob(".*.tmp*") if p.is_file()]:
        path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, content: object) -> None:
    """Write JSON atomically, indented, with a trailing newline."""
    write_text(path, json.dumps(content, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> Mapping:
    """Read a JSON file; a malformed one raises ``FreelabelError`` naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise FreelabelError(f"cannot read JSON {path}: {error}") from None


def provenance() -> dict[str, object]:
    """Versions of what produced an output, stored beside it."""
    # torch's and open_clip's from their installed metadata: importing them costs seconds that a command without a
    # model never needs
    return {"versions": {"freelabel": __version__, "torch": importlib.metadata.version("torch"),
                         "open_clip": importlib.metadata.version("open_clip_torch"),
                         "numpy": np.__version__, "python": platform.python_version()}}


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays to a compressed ``.npz`` atomically and byte-for-byte reproducibly: unlike
    ``np.savez_compressed``, every member carries a fixed timestamp, so the same arrays give the same file."""
    import zipfile

    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(member, "w") as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


def append_jsonl(path: str | os.PathLike, *records: Mapping) -> None:
    """Append JSON objects, one per line, and flush them to disk (one fsync for all): a journal that a kill cannot
    lose an entry of once this returns, only cut its last line short (``read_jsonl`` skips such a line)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("".join(json.dumps(record) + "\n" for record in records))
        handle.flush()
        os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The objects of a JSON-lines file, in order; a line cut short by a kill (no newline, not JSON) is skipped."""
    if not Path(path).is_file():
        return []
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_jsonl(path: str | os.PathLike, records: Iterable[Mapping]) -> None:
    """Write JSON objects one per line, atomically (e.g. ``errors.jsonl``: one failed item per line)."""
    write_text(path, "".join(json.dumps(record) + "\n" for record in records))
