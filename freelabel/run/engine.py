"""What runs a folder job's items: the interface an engine implements and the worker it runs (the engines, and
the settings that choose one: ``engines``).

A folder job (``masks``, ``selection``) hands an engine its items (image jobs, image names) and a ``BatchWorker``
that turns a batch of items into journal entries, reading and writing the item's files itself. The engine runs
the worker where it decides (``LocalEngine``: in this process; ``RayEngine``: on Ray actors, one model each) and
streams the entries back; the folder job, in the process that called it, is the one writer of the journal,
manifest and errors file, so every folder rule holds whichever engine runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar


Item = TypeVar("Item")


class BatchWorker(Protocol[Item]):
    """Does a folder job's items, in whatever process holds it; must pickle (an engine may send it to another
    process), so it builds its model on first use there."""

    def read(self, item: Item) -> Any:
        """The item's input (its decoded image, or the error reading it): I/O only, so an engine may run it ahead
        in a thread while the model works on the batch before."""

    def __call__(self, items: Sequence[Item], inputs: Sequence[Any]) -> list[dict[str, Any]]:
        """Do ``items`` (with their ``read`` inputs), writing each one's outputs atomically, and return each one's
        journal entry in order: ``{"status": "done", ...}`` or ``failure(stage, reason)``; a problem with one item
        fails that item only."""


class Engine(Protocol):
    """Runs a worker over items and reports them as they finish."""

    def run(self, worker: BatchWorker[Item], items: Sequence[Item], shared: Sequence[Path] = ()
            ) -> Iterator[list[tuple[Item, dict[str, Any]]]]:
        """Run ``worker`` over ``items`` in batches and yield each finished batch as (item, journal entry) pairs,
        in any order, each item exactly once. shared: folders every process running the worker must see (the
        input and output folders): an engine spanning machines refuses to run where one is missing."""


class OncePerProcess:
    """A factory that builds its object once per process: ``OncePerProcess(build)()`` calls ``build()`` the first
    time, then returns that object. It pickles as ``build`` alone, so an engine can send it to worker processes,
    where each builds its own (a model loaded once in the driver is not shipped)."""

    def __init__(self, build: Callable[[], Any], here: Callable[[], Any] | None = None):
        """here: builds the object of the process that makes this factory instead of ``build`` (a Ray driver's copy
        of the model on the CPU, when the workers' GPU is not on its machine); copies in other processes use
        ``build``."""
        self.build, self.here = build, here
        self._built: Any = None

    def __call__(self) -> Any:
        if self._built is None:
            self._built = (self.here or self.build)()
        return self._built

    def __getstate__(self) -> dict[str, Any]:
        return {"build": self.build, "here": None, "_built": None}


def batches(items: Sequence[Item], size: int) -> Iterator[Sequence[Item]]:
    """``items`` in consecutive slices of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield items[start:start + size]

