"""The Ray engine: a folder job's items as a Ray dataset, done by a pool of Ray actors holding one model each, on this
machine or across a Ray cluster; the command's process (the driver) streams the results back and journals them.

Ray Data runs the actors (``map_batches`` with an ``ActorPoolStrategy``). A worker process that dies has its actor
restarted and its batch retried (Ray Data's defaults for actor pools), so no item is lost; a worker writes its items'
outputs atomically, so a retried batch rewrites the same bytes, and the driver journals each item once, when its
entry arrives. Every folder rule of the local engine therefore holds: binding, resume, per-item errors, exit codes.

Across machines, every node needs freelabel installed and must see the image and output folders at the same paths
(shared storage): a worker on a node that does not refuses to start, and the run stops with that message.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pickle
import re
import socket
import threading
from pathlib import Path
from queue import Full, Queue
from typing import Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from freelabel.errors import ConfigError, FreelabelError, RunStoppedError
from freelabel.io.images import read_ahead
from freelabel.run.engine import BatchWorker, Item

RAY_MISSING = "--engine ray needs Ray Data: pip install 'freelabel[ray]'"
# a line of a worker's traceback that raises one of freelabel's errors; its message
FREELABEL_ERROR_LINE = re.compile(r"\b(?:FreelabelError|ConfigError|RunStoppedError): (.+)$", re.MULTILINE)


class RayEngine:
    """Runs a worker's batches on Ray actors (see ``Engine``)."""

    def __init__(self, batch_size: int = 1, workers: int | None = None, gpus_per_worker: float = 0.0,
                 address: str | None = None):
        """batch_size: items per worker call. workers: actors, each holding one model (None: one per
        ``gpus_per_worker`` GPUs of the cluster when that is above 0, else 1). gpus_per_worker: GPUs each actor
        reserves. address: a running cluster's address; None: the cluster this process is connected to, else one
        started on this machine for the run (and stopped with the process). ``ConfigError`` when Ray is not
        installed, or nothing answers at ``address``: before any work."""
        if importlib.util.find_spec("ray") is None:  # refused before any work, not when the first image is due
            raise ConfigError(RAY_MISSING)
        _check_reachable(address)
        self.batch_size, self.workers, self.gpus_per_worker, self.address = (batch_size, workers, gpus_per_worker,
                                                                              address)

    def run(self, worker: BatchWorker[Item], items: Sequence[Item], shared: Sequence[Path] = ()
            ) -> Iterator[list[tuple[Item, dict[str, Any]]]]:
        """Run ``worker`` over ``items`` on the actor pool and yield the batches as they finish (see
        ``Engine.run``). Raises ``RunStoppedError`` when the run cannot go on (a worker cannot start, the cluster
        went away); what was yielded before stays journaled."""
        if not items:
            return
        ray = connect(self.address)
        resources = ray.cluster_resources()
        workers = self.workers or max(1, int(resources.get("GPU", 0) // self.gpus_per_worker)
                                      if self.gpus_per_worker else 1)
        if self.gpus_per_worker and resources.get("GPU", 0) < workers * self.gpus_per_worker:
            raise ConfigError(f"{workers} workers x {self.gpus_per_worker} GPUs need {workers * self.gpus_per_worker} "
                              f"GPUs; the Ray cluster has {resources.get('GPU', 0):g}")
        # each actor reserves its share of the cluster's CPUs (whole ones when there are enough, so that Ray sets
        # its thread count), never more than the cluster has: an actor waiting for a CPU would stall the run
        cpus = resources.get("CPU", 1) / workers
        cpus = float(int(cpus)) if cpus >= 1 else cpus
        rows = [{"index": index, "item": pickle.dumps(item)} for index, item in enumerate(items)]
        dataset = ray.data.from_items(rows).map_batches(
            _Actor, fn_constructor_args=(worker, [str(Path(path).resolve()) for path in shared], max(1, int(cpus))),
            batch_size=self.batch_size, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus,
            num_gpus=self.gpus_per_worker or None, batch_format="numpy")
        seen: set[int] = set()
        try:
            with tqdm(total=len(items), unit="image", disable=None) as progress:
                for batches in _coalesced(dataset.iter_batches(batch_size=None, batch_format="numpy")):
                    finished = [(int(index), json.loads(entry)) for batch in batches
                                for index, entry in zip(batch["index"], batch["entry"]) if int(index) not in seen]
                    seen.update(index for index, _ in finished)
                    progress.update(len(finished))
                    yield [(items[index], entry) for index, entry in finished]
        except (ray.exceptions.RayError, ray.exceptions.RaySystemError) as error:
            raise RunStoppedError(f"the Ray run stopped: {_reason(error)}; finished images stay journaled, run the "
                                  "command again to resume") from None


def _coalesced(produced: Iterator[Any], limit: int = 1024) -> Iterator[list[Any]]:
    """What ``produced`` yields, read in a background thread: each yield is everything it produced since the last
    (at least one, at most ``limit``), so that a consumer slower than the workers (the journal, one flush to disk per
    yield) takes many batches at once rather than falling behind. An error of ``produced`` is raised here; closing
    this generator stops the thread at its next batch."""
    queue: Queue = Queue(maxsize=limit)
    stop, end = threading.Event(), object()

    def produce() -> None:
        try:
            for value in produced:
                while not stop.is_set():
                    try:
                        queue.put(value, timeout=0.1)
                        break
                    except Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            queue.put(error)
        else:
            queue.put(end)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            values = [queue.get()]
            while len(values) < limit and not queue.empty():
                values.append(queue.get())
            ended = next((value for value in values if value is end or isinstance(value, BaseException)), None)
            values = [value for value in values if value is not end and not isinstance(value, BaseException)]
            if values:
                yield values
            if isinstance(ended, BaseException):
                raise ended
            if ended is end:
                return
    finally:
        stop.set()


class _Actor:
    """One Ray actor of the pool: checks that it sees the shared folders, then runs the worker on the batches Ray
    Data hands it (``{"index", "item"}`` rows in, ``{"index", "entry"}`` out)."""

    def __init__(self, worker: BatchWorker, shared: Sequence[str], threads: int):
        missing = [path for path in shared if not os.path.exists(path)]
        if missing:
            raise FreelabelError(f"{missing[0]} is not visible on node {socket.gethostname()}: a Ray run over several "
                                 "machines needs the image and output folders on storage every node mounts at the same "
                                 "path")
        import torch

        torch.set_num_threads(threads)
        self.worker = worker

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        items = [pickle.loads(item) for item in batch["item"]]
        entries = self.worker(items, list(read_ahead(self.worker.read, items)))
        return {"index": batch["index"], "entry": np.array([json.dumps(entry) for entry in entries], dtype=object)}


def connect(address: str | None = None) -> Any:
    """The ``ray`` module, connected: to the cluster at ``address``; with None, to the one this process is already
    connected to, else (``ray.init``'s rule) the one ``RAY_ADDRESS`` names, else a new one on this machine.
    ``ConfigError`` when Ray is not installed or the cluster cannot be reached."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(RAY_MISSING) from None
    if not ray.is_initialized():
        # a command's output is its own lines and errors: Ray's notices stay in its session logs
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        except (ConnectionError, ValueError, RuntimeError) as error:
            raise ConfigError(f"cannot join the Ray cluster at {address}: {_reason(error)}") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the driver's own bar counts images
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    return ray


def _check_reachable(address: str | None) -> None:
    """``ConfigError`` when ``address`` is a ``host:port`` nothing answers on (Ray itself would retry for minutes)."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # None, 'auto' or a client address: ray.init's own rules
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ConfigError(f"cannot join the Ray cluster at {address}: nothing answers there ({error.strerror or error}"
                          "); start one with `ray start --head` and pass the address it prints") from None


def _reason(error: BaseException) -> str:
    """The message of the error at the root of a Ray error, on one line. Ray wraps a worker's error in its own and
    keeps the worker's traceback only in the outer ones' text: the last line there that raises one of freelabel's
    errors is the reason, else the last line of the innermost error."""
    chain = [error]
    while getattr(chain[-1], "cause", None) is not None and chain[-1].cause is not chain[-1]:
        chain.append(chain[-1].cause)
    for wrapped in chain:
        raised = FREELABEL_ERROR_LINE.findall(str(wrapped))
        if raised:
            return raised[-1].strip()
    lines = [line.strip() for line in str(chain[-1]).splitlines() if line.strip()]
    return lines[-1] if lines else type(chain[-1]).__name__
