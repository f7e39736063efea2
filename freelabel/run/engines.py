"""The engines a labelling command can run its images on, and the settings that choose one: ``LocalEngine`` (this
process) or ``RayEngine`` (Ray actors, on this machine or a cluster)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from freelabel.cards import model_card
from freelabel.clip.config import check_device
from freelabel.config import option
from freelabel.errors import ConfigError
from freelabel.run.engine import Engine, OncePerProcess
from freelabel.run.local import LocalEngine

ENGINES = ("local", "ray")


@dataclass
class EngineConfig:
    """Where a labelling command's images are segmented; never changes what is written, only where and how fast."""

    engine: str = option("local", choices=ENGINES, help="local: one process, this machine; ray: Ray actors, one "
                         "model each, on this machine or a Ray cluster (--address).")
    batch_size: int | None = option(None, help="Images per model call (their views encoded together); None = the "
                                    "model card's for the device (1 on CPU, where batching does not pay).")
    workers: int | None = option(None, help="ray: actors, each holding one model; None = one per GPU of the "
                                 "cluster with --gpus-per-worker, else 1.")
    gpus_per_worker: float | None = option(None, help="ray: GPUs each actor reserves; None = 1 when the model runs "
                                           "on CUDA, else 0.")
    address: str | None = option(None, help="ray: address of a running Ray cluster to join (`ray start --head` "
                                 "prints it; 'auto' finds one on this machine); None = start Ray on this machine "
                                 "for the command.")

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"unknown engine {self.engine!r}; choose one of {', '.join(ENGINES)}")
        for name in ("batch_size", "workers"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ConfigError(f"gpus-per-worker must be at least 0, got {self.gpus_per_worker}")
        if self.engine == "local" and (self.workers, self.gpus_per_worker, self.address) != (None, None, None):
            raise ConfigError("--workers, --gpus-per-worker and --address are settings of --engine ray")


def engine_option() -> EngineConfig:
    """The ``engine`` field of a labelling command's config (``generate``, ``classify``, ``predict``)."""
    return option(default_factory=EngineConfig, help="Where the images are segmented (this process, or Ray actors) "
                  "and in what batches; never changes what is written.")


def create_engine(config: EngineConfig, model: str, device: str) -> Engine:
    """The engine ``config`` describes, for the CLIP ``model`` (its card gives the batch size) on ``device`` (where
    each copy of the model runs). ``ConfigError`` when Ray is asked for and not installed, or the local engine is
    asked for a device this machine does not have."""
    batch_size = config.batch_size or model_card(model).batch_size_on(device)
    if config.engine == "local":
        check_device(device)
        return LocalEngine(batch_size)
    from freelabel.run.ray_engine import RayEngine

    gpus = config.gpus_per_worker if config.gpus_per_worker is not None else float(device.startswith("cuda"))
    return RayEngine(batch_size, config.workers, gpus, config.address)


def driver_device(config: EngineConfig, device: str) -> str:
    """Where the command's own process builds its copy of the model (it checks that the model loads and encodes the
    labels once for every worker, before any image): ``device``, except for a Ray run from a machine without it (a
    cluster's head node without a GPU): the CPU. The workers load on ``device`` on their own nodes; one that cannot
    stops the run with the reason."""
    if config.engine == "ray" and device != "cpu":
        try:
            check_device(device)
        except ConfigError:
            return "cpu"
    return device


def model_factory(build: Callable[[str], Any], config: EngineConfig, device: str) -> OncePerProcess:
    """The once-per-process factory of a labelling command's model: ``build(device)`` (picklable, e.g. a
    ``functools.partial``) in the engine's workers, ``build(driver_device(config, device))`` in this process."""
    driver = driver_device(config, device)
    return OncePerProcess(functools.partial(build, device),
                          here=None if driver == device else functools.partial(build, driver))
