"""The output folder of a job: bound to what it holds, journaled as items finish, its records rebuilt from the journal.

One output folder is one job (``generate``, ``predict``, ``classify``, ``video``). Before the first output, the folder
is bound to its inputs and the settings that shape its outputs (``job.json``); a rerun with other inputs or settings
is refused unless ``overwrite``. Each finished item (image, frame) is appended to ``journal.jsonl`` as it finishes
(an entry is never lost to a kill); ``manifest.json`` and ``errors.jsonl`` are rebuilt from it. An item counts as
done when its journal entry says so and all of its outputs exist, so a killed run resumes to the outputs an
uninterrupted run writes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from freelabel.errors import FreelabelError
from freelabel.io.files import append_jsonl, read_json, read_jsonl, write_json, write_jsonl
from freelabel.io.images import list_images
from freelabel.io.labels import write_classes

JOB, JOURNAL, MANIFEST, ERRORS = "job.json", "journal.jsonl", "manifest.json", "errors.jsonl"


def failure(stage: str, reason: str) -> dict[str, str]:
    """The journal entry of an item that failed at ``stage`` (e.g. read, segment, write) for ``reason``."""
    return {"status": "failed", "stage": stage, "reason": reason}


def exit_status(summary: Mapping[str, Any]) -> int:
    """The exit status of a command that ran a folder job: 0 when no item failed, 1 when some did (they are listed
    in ``errors.jsonl``). A usage error (nothing done) is 2, raised before a job runs."""
    return 1 if summary["failed"] else 0


def image_names(images_dir: Path) -> list[str]:
    """The images below ``images_dir`` (paths relative to it); raises when there are none, or when two would
    write the same mask (names that differ only in the extension)."""
    names = [str(p) for p in list_images(images_dir)]
    if not names:
        raise FreelabelError(f"no images found below {images_dir}")
    targets = Counter(str(Path(name).with_suffix("")) for name in names)
    clashes = sorted(name for name in names if targets[str(Path(name).with_suffix(""))] > 1)
    if clashes:
        raise FreelabelError(f"{len(clashes)} images would write the same mask ({', '.join(clashes[:4])}"
                             f"{', ...' if len(clashes) > 4 else ''}): rename them so that names differ in more "
                             "than the extension")
    return names


def check_out_dir(images_dir: Path, out: Path) -> None:
    """Refuse an output folder that is, or is inside, the image folder."""
    if out.resolve() == images_dir.resolve() or images_dir.resolve() in out.resolve().parents:
        raise FreelabelError(f"--out {out} is inside the image folder {images_dir}: masks would overwrite images of "
                             "the same name and be read as images by the next run; choose a folder outside it")


def clean_stray_files(out: Path) -> None:
    """Remove the temporary files of writes a kill interrupted (see ``atomic_path``)."""
    for path in [p for p in out.rglob(".*.tmp*") if p.is_file()]:
        path.unlink()


class JobFolder:
    """An output folder bound to one job: check it (constructing), ``open`` it, ``record`` each item as it finishes,
    ``write_records`` (manifest and errors) from the journal."""

    def __init__(self, out: Path, binding: Mapping[str, Any], overwrite: bool):
        """Check ``out`` against the job it is bound to (``job.json``), before anything is written or loaded.
        binding: JSON-ready; ``classes`` and ``settings`` (and any other key) must match for a rerun to resume.
        Raises ``FreelabelError`` when the folder belongs to another job and ``overwrite`` is off."""
        self.out = out
        self.binding = json.loads(json.dumps(binding))  # as it reads back from job.json (tuples are lists there)
        self.rebind = self._check(overwrite)  # whether the binding must be (re)written and the journal dropped
        self.entries: dict[str, dict[str, Any]] = {}  # the journal: each item's last entry, by name
        self.counts: Counter = Counter()  # the statuses recorded by this run

    def _check(self, overwrite: bool) -> bool:
        if not (self.out / JOB).is_file():
            return True
        previous = read_json(self.out / JOB)
        if previous == self.binding:
            return overwrite
        if overwrite:
            return True
        what = [key.replace("_", " ") for key in ("classes", "image_labels", "settings")
                if previous.get(key) != self.binding.get(key)]
        raise FreelabelError(f"{self.out} holds masks of another job (its {' and '.join(what) or 'binding'} differ; "
                             f"see {self.out / JOB}). Use a new --out folder, or --overwrite to redo every image "
                             "with the new ones.")

    def open(self, classes: list[str] | None) -> None:
        """Make the folder ready to write (after the model loaded: a model that cannot load leaves no trace): remove
        the temporary files of killed writes, drop another job's journal and write the binding when rebinding,
        write ``classes.txt`` (unless ``classes`` is None: a folder without masks), read the journal."""
        self.out.mkdir(parents=True, exist_ok=True)
        clean_stray_files(self.out)
        if self.rebind:
            (self.out / JOURNAL).unlink(missing_ok=True)  # entries of another job, or of items to redo
            write_json(self.out / JOB, self.binding)
        if classes is not None:  # every run: a kill between the two writes cannot leave it stale
            write_classes(self.out / "classes.txt", classes)
        self.entries = {entry["image"]: entry for entry in read_jsonl(self.out / JOURNAL)}

    def done(self, name: str, outputs: Iterable[Path]) -> bool:
        """Whether item ``name`` is finished: its journal entry says so and every one of its ``outputs`` exists."""
        return self.entries.get(name, {}).get("status") == "done" and all(path.is_file() for path in outputs)

    def record(self, name: str, entry: dict[str, Any]) -> None:
        """Append item ``name``'s ``entry`` (``{"status": "done" | "failed", ...}``) to the journal as it finishes."""
        append_jsonl(self.out / JOURNAL, {"image": name, **entry})
        self.entries[name] = {"image": name, **entry}
        self.counts[entry["status"]] += 1

    def status(self) -> dict[str, dict[str, Any]]:
        """Every journaled item's last entry (without its name), by name, in journal order."""
        return {name: {k: v for k, v in entry.items() if k != "image"} for name, entry in self.entries.items()}

    def write_records(self, manifest: Mapping[str, Any], status: Mapping[str, dict[str, Any]],
                      path_of: Callable[[str], str]) -> None:
        """Write ``manifest.json`` (``manifest`` plus every item's ``status`` entry, sorted by name) and
        ``errors.jsonl`` (one line per failed item: ``path_of(name)``, stage, message)."""
        write_json(self.out / MANIFEST, {**manifest, "images": dict(sorted(status.items()))})
        write_jsonl(self.out / ERRORS, ({"path": path_of(name), "stage": entry["stage"], "message": entry["reason"]}
                                        for name, entry in sorted(status.items()) if entry["status"] == "failed"))
