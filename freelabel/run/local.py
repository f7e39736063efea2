"""The local engine: a worker's batches one after another in this process, inputs read ahead in a thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence

from tqdm import tqdm

from freelabel.io.images import read_ahead
from freelabel.run.engine import BatchWorker, Item, batches


class LocalEngine:
    """Runs a worker's batches in order in this process (see ``Engine``), with a progress bar on a terminal."""

    def __init__(self, batch_size: int = 1):
        """batch_size: items per worker call."""
        self.batch_size = batch_size

    def run(self, worker: BatchWorker[Item], items: Sequence[Item], shared: Sequence[Path] = ()
            ) -> Iterator[list[tuple[Item, dict[str, Any]]]]:
        """Run ``worker`` over ``items`` in order and yield each finished batch (see ``Engine.run``); ``shared`` is
        this machine's own."""
        inputs = read_ahead(worker.read, items)
        with tqdm(total=len(items), unit="image", disable=None) as progress:
            for batch in batches(items, self.batch_size):
                entries = worker(batch, [next(inputs) for _ in batch])
                progress.update(len(batch))
                yield list(zip(batch, entries))
