"""The output folder of a job: bound to what it holds, journaled as items finish, its records rebuilt from the journal.

One output folder is one job (``generate``, ``predict``, ``classify``, ``video``). Before the first output, the folder
is bound to its inputs and the settings that shape its outputs (``job.json``); a rerun with other inputs or settings
is refused unless ``overwrite``. Each finished item (image, frame) is appended to ``journal.jsonl`` as it finishes
(an entry is never lost to a kill); ``manifest.json`` and ``errors.jsonl`` are rebuilt from it. An item counts as
done when its journal entry says so and all of its outputs exist, so a killed run resumes to the outputs an
uninterrupted run writes.

One folder has one writer: ``open`` takes an exclusive lock on the folder (``.freelabel.lock``, ``fcntl.flock``) and
checks the binding again under it before writing it, so a second run on the same folder is refused (never mixes its
outputs with the first's); the lock goes with the process (a kill releases it). A folder that vanishes while a run
writes to it stops the run, rather than letting it record outputs that are not there.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from freelabel.errors import FreelabelError, RunStoppedError
from freelabel.io.files import append_jsonl, read_json, read_jsonl, remove_stray_temp_files, write_json, write_jsonl
from freelabel.io.images import list_images
from freelabel.io.labels import write_classes

JOB, JOURNAL, MANIFEST, ERRORS = "job.json", "journal.jsonl", "manifest.json", "errors.jsonl"
LOCK = ".freelabel.lock"  # hidden: never listed as an image or frame


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


def check_out_dir(source: Path, out: Path, what: str = "image folder") -> None:
    """Refuse an output folder that is the input ``source`` (a folder, or a file such as a video; ``what`` names it
    in the message), is inside it, or holds it: outputs would overwrite inputs of the same name, be read as inputs
    by the next run, or mix with them (``--overwrite`` and the removal of stray temp files act on the whole folder)."""
    source_path, target = source.resolve(), out.resolve()
    if target == source_path or source_path in target.parents:
        raise FreelabelError(f"--out {out} is inside the {what} {source}: outputs would overwrite inputs of the same "
                             "name and be read as inputs by the next run; choose a folder outside it")
    if source_path.is_dir() and target in source_path.parents:
        raise FreelabelError(f"--out {out} holds the {what} {source}: outputs would mix with the inputs; choose a "
                             "folder outside it")


class JobFolder:
    """An output folder bound to one job: check it (constructing), ``open`` it, ``record`` each item as it finishes,
    ``write_records`` (manifest and errors) from the journal."""

    def __init__(self, out: Path, binding: Mapping[str, Any], overwrite: bool,
                 sources: Mapping[str, Path] | None = None):
        """Check ``out`` against the job it is bound to (``job.json``) and against its inputs ``sources`` (see
        ``check_out_dir``; what each is -> its path), before anything is written or loaded. binding: JSON-ready;
        every key (``classes``, ``settings``, ...) must match for a rerun to resume. Raises ``FreelabelError`` when
        the folder belongs to another job and ``overwrite`` is off, or is one of its inputs."""
        for what, source in (sources or {}).items():
            check_out_dir(Path(source), out, what)
        self.out = out
        self.overwrite = overwrite
        self.binding = json.loads(json.dumps(binding))  # as it reads back from job.json (tuples are lists there)
        self.rebind = self._check()  # whether the binding must be (re)written and the journal dropped
        self.entries: dict[str, dict[str, Any]] = {}  # the journal: each item's last entry, by name
        self.counts: Counter = Counter()  # the final statuses of the items this run recorded (each counted once)
        self._recorded: dict[str, str] = {}  # item -> the status this run last recorded for it
        self._lock: int | None = None  # the lock file's descriptor while the folder is open
        self._identity: tuple[int, int] | None = None  # the folder's (device, inode) when opened

    def _check(self) -> bool:
        if not (self.out / JOB).is_file():
            return True
        previous = read_json(self.out / JOB)
        if previous == self.binding:
            return self.overwrite
        if self.overwrite:
            return True
        what = [key.replace("_", " ") for key in dict.fromkeys([*self.binding, *previous])
                if previous.get(key) != self.binding.get(key)]
        raise FreelabelError(f"{self.out} holds masks of another job (its {' and '.join(what) or 'binding'} differ; "
                             f"see {self.out / JOB}). Use a new --out folder, or --overwrite to redo every image "
                             "with the new ones.")

    def open(self, classes: list[str] | None) -> "JobFolder":
        """Make the folder ready to write (after the model loaded: a model that cannot load leaves no trace): lock it
        (a folder another run holds is refused), check its binding again under the lock (another run may have bound
        it since the first check), remove the temporary files of killed writes, drop another job's journal and
        write the binding when rebinding, write ``classes.txt`` (unless ``classes`` is None: a folder without
        masks), read the journal. Returns the folder, a context manager that ``close``s it."""
        with self.stops_on_write_errors():
            self.out.mkdir(parents=True, exist_ok=True)
            self._lock = _lock_folder(self.out)
        try:
            self.rebind = self._check()
            self._identity = _identity(self.out)
            with self.stops_on_write_errors():
                remove_stray_temp_files(self.out)
                if self.rebind:
                    (self.out / JOURNAL).unlink(missing_ok=True)  # entries of another job, or of items to redo
                    write_json(self.out / JOB, self.binding)
                if classes is not None:  # every run: a kill between the two writes cannot leave it stale
                    write_classes(self.out / "classes.txt", classes)
            self.entries = {entry["image"]: entry for entry in read_jsonl(self.out / JOURNAL)}
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Release the folder's lock (removing the lock file): another run may write to it now."""
        if self._lock is not None:
            if self._identity is not None and _identity(self.out) == self._identity:
                (self.out / LOCK).unlink(missing_ok=True)  # under the lock: a waiting run re-checks (see _lock_folder)
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> "JobFolder":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def check_present(self) -> None:
        """Raise ``FreelabelError`` when the open folder vanished (deleted or replaced) since ``open``: the run
        stops rather than record outputs that are not there."""
        if _identity(self.out) != self._identity or not (self.out / JOB).is_file():
            raise RunStoppedError(f"the output folder {self.out} was deleted or replaced while this run wrote to it; "
                                 "the run stopped (run the command again to start over)")

    def done(self, name: str, outputs: Iterable[Path]) -> bool:
        """Whether item ``name`` is finished: its journal entry says so and every one of its ``outputs`` exists."""
        return self.entries.get(name, {}).get("status") == "done" and all(path.is_file() for path in outputs)

    def record(self, name: str, entry: dict[str, Any]) -> None:
        """Append item ``name``'s ``entry`` (``{"status": "done" | "failed", ...}``) to the journal as it finishes;
        raises ``FreelabelError`` when the folder vanished (see ``check_present``)."""
        self.record_all([(name, entry)])

    def record_all(self, finished: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """``record`` each (name, entry) of ``finished`` (e.g. a batch), with one write and one flush to disk."""
        self.check_present()
        with self.stops_on_write_errors():
            append_jsonl(self.out / JOURNAL, *({"image": name, **entry} for name, entry in finished))
        for name, entry in finished:
            self.entries[name] = {"image": name, **entry}
            if name in self._recorded:  # recorded again (e.g. a frame failed, then written): count its last status
                self.counts[self._recorded[name]] -= 1
            self._recorded[name] = entry["status"]
            self.counts[entry["status"]] += 1

    def finish(self) -> None:
        """Remove the temporary files of writes whose writer died mid-run, once every item is through: an engine
        replaces a killed worker and goes on, so its half-written file is left beside the finished outputs."""
        with self.stops_on_write_errors():
            remove_stray_temp_files(self.out)

    def status(self) -> dict[str, dict[str, Any]]:
        """Every journaled item's last entry (without its name), by name, in journal order."""
        return {name: {k: v for k, v in entry.items() if k != "image"} for name, entry in self.entries.items()}

    def write_records(self, manifest: Mapping[str, Any], status: Mapping[str, dict[str, Any]],
                      path_of: Callable[[str], str]) -> None:
        """Write ``manifest.json`` (``manifest`` plus every item's ``status`` entry, sorted by name) and
        ``errors.jsonl`` (one line per failed item: ``path_of(name)``, stage, message); raises ``FreelabelError``
        when the folder vanished (see ``check_present``)."""
        self.check_present()
        with self.stops_on_write_errors():
            write_json(self.out / MANIFEST, {**manifest, "images": dict(sorted(status.items()))})
            write_jsonl(self.out / ERRORS, ({"path": path_of(name), "stage": entry["stage"],
                                             "message": entry["reason"]}
                                            for name, entry in sorted(status.items()) if entry["status"] == "failed"))

    @contextlib.contextmanager
    def stops_on_write_errors(self) -> Iterator[None]:
        """Turn an ``OSError`` writing the folder's own records, or another file of the whole job (a full disk, no
        permission), into one ``RunStoppedError`` line: the run stops, what it journaled before stays and resumes."""
        try:
            yield
        except OSError as error:
            raise RunStoppedError(f"cannot write the job files of {self.out} ({error}); the run stopped, finished "
                                  "items stay: free space (or fix the permissions), then run the command again"
                                  ) from None


def _identity(path: Path) -> tuple[int, int] | None:
    """A folder's (device, inode), None when it is gone: whether it is still the folder a run opened."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _lock_folder(out: Path) -> int:
    """Take the exclusive lock of folder ``out`` (its lock file, created when missing) without waiting; return the
    lock file's descriptor. Raises ``FreelabelError`` when another run holds it."""
    while True:
        handle = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise FreelabelError(f"another freelabel run is writing to {out} (it holds {out / LOCK}); wait for it "
                                 "to finish, or use another --out folder") from None
        try:  # the holder before us may have removed the file after we opened it: lock the one on disk
            if os.fstat(handle).st_ino == os.stat(out / LOCK).st_ino:
                return handle
        except FileNotFoundError:
            pass
        os.close(handle)


@contextlib.contextmanager
def folder_lock(out: Path) -> Iterator[None]:
    """Hold the exclusive lock of folder ``out`` (created when missing) for the block, as ``JobFolder.open`` does
    for a job folder (e.g. a training run folder); raises ``FreelabelError`` when another run holds it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle = _lock_folder(out)
    except OSError as error:
        raise RunStoppedError(f"cannot lock {out} ({error})") from None
    try:
        yield
    finally:
        (out / LOCK).unlink(missing_ok=True)  # under the lock: a waiting run re-checks (see _lock_folder)
        os.close(handle)
