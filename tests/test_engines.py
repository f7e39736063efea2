"""The engine layer without a cluster: the local engine's batches, the worker's per-image failures inside a batch,
the engine settings' checks, what an engine ships to other processes, and a Ray worker's shared-storage check."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from freelabel.errors import ConfigError, FreelabelError
from freelabel.io.images import ImageReadError
from freelabel.run.engine import OncePerProcess, batches
from freelabel.run.engines import EngineConfig, create_engine, driver_device, model_factory
from freelabel.run.job import ImageJob, MaskWorker
from freelabel.run.local import LocalEngine
from freelabel.run.masks import FolderOptions, MaskFolder, label_inputs
from freelabel.segmentation import Segmentation


class _Halves:
    """A model that labels the left half of an image with its first label; ``segment_batch`` records batch sizes
    and fails a whole batch that holds a 1-pixel-wide image (as a real model's batch would fail on one bad image)."""

    def __init__(self):
        self.batch_sizes: list[int] = []
        self.image = None

    def prepare_labels(self, labels):
        pass

    def set_image(self, image):
        if image.shape[1] == 1:
            raise ValueError("image too narrow")
        self.image = image

    def segment(self, labels):
        height, width = self.image.shape[:2]
        mask = np.zeros((height, width), np.uint8)
        mask[:, : width // 2] = 1
        probabilities = np.stack([mask == 0, mask == 1]).astype(np.float32)
        return Segmentation(list(labels[:1]), probabilities[1:], probabilities, mask)

    def segment_batch(self, images, labels):
        self.batch_sizes.append(len(images))
        results = []
        for image, image_labels in zip(images, labels):
            self.set_image(image)
            results.append(self.segment(image_labels))
        return results


def _jobs(tmp_path: Path, n: int) -> list[ImageJob]:
    return [ImageJob(f"{i}.png", tmp_path / f"{i}.png", ("cat",), tmp_path / "out" / f"{i}.png", None)
            for i in range(n)]


def test_batches_cover_the_items_in_order():
    assert [list(b) for b in batches(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_the_local_engine_runs_every_item_once_in_batches(tmp_path, batch_size):
    model = _Halves()
    worker = MaskWorker(lambda: model, ["background", "cat"], ["cat"])
    worker.read = lambda job: np.zeros((4, 6, 3), np.uint8)
    jobs = _jobs(tmp_path, 7)
    finished = [pair for batch in LocalEngine(batch_size).run(worker, jobs) for pair in batch]
    assert [job for job, _ in finished] == jobs
    assert all(entry["status"] == "done" for _, entry in finished)
    assert all(job.mask_path.is_file() for job in jobs)
    assert model.batch_sizes == ([] if batch_size == 1 else [len(b) for b in batches(jobs, batch_size) if len(b) > 1])


def test_one_bad_image_in_a_batch_fails_alone(tmp_path):
    worker = MaskWorker(_Halves, ["background", "cat"], ["cat"])
    jobs = _jobs(tmp_path, 4)
    images = [np.zeros((4, 6, 3), np.uint8), np.zeros((4, 1, 3), np.uint8), ImageReadError("cannot read 2.png"),
              np.zeros((5, 6, 3), np.uint8)]
    entries = worker(jobs, images)
    assert [e["status"] for e in entries] == ["done", "failed", "failed", "done"]
    assert entries[1]["stage"] == "segment" and "too narrow" in entries[1]["reason"]
    assert entries[2] == {"status": "failed", "stage": "read", "reason": "cannot read 2.png"}
    assert not jobs[1].mask_path.exists() and jobs[3].mask_path.is_file()


def test_a_worker_pickles_without_its_model():
    built = []
    factory = OncePerProcess(lambda: built.append(1) or _Halves())
    assert factory() is factory()  # built once in this process
    worker = MaskWorker(factory, ["background", "cat"], ["cat"])
    worker([], [])
    copy = pickle.loads(pickle.dumps(MaskWorker(OncePerProcess(_Halves), ["background"], [])))
    assert copy._model is None and copy.make_model._built is None
    assert len(built) == 1


def test_engine_settings_are_checked_before_any_work():
    with pytest.raises(ConfigError, match="batch-size must be at least 1"):
        EngineConfig(batch_size=0)
    with pytest.raises(ConfigError, match="unknown engine"):
        EngineConfig(engine="spark")
    with pytest.raises(ConfigError, match="settings of --engine ray"):
        EngineConfig(workers=2)
    assert create_engine(EngineConfig(), "freelabel-toy", "cpu").batch_size == 1  # the card's CPU default
    assert create_engine(EngineConfig(batch_size=4), "ViT-B-16", "cpu").batch_size == 4


def test_a_ray_worker_refuses_a_node_without_the_shared_folders(tmp_path):
    pytest.importorskip("ray")
    from freelabel.run.ray_engine import _Actor

    worker = MaskWorker(_Halves, ["background"], [])
    _Actor(worker, [str(tmp_path)], 1)  # the folder is there: it starts
    with pytest.raises(FreelabelError, match="not visible on node .*storage every node mounts"):
        _Actor(worker, [str(tmp_path / "elsewhere")], 1)


class _KillsAWriter(LocalEngine):
    """A local engine whose first batch leaves what a worker killed in the middle of a write leaves: a temp file
    beside the outputs (the engine then redoes the batch elsewhere, as Ray does)."""

    def run(self, worker, items, shared):
        for number, finished in enumerate(super().run(worker, items, shared)):
            if number == 0:
                (shared[1] / f".{finished[0][0].name}.x1y2z3.tmp.png").write_bytes(b"half a png")
            yield finished


def test_a_writer_killed_mid_run_leaves_no_temp_file(tmp_path):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 8, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    out = tmp_path / "out"
    folder = MaskFolder(images, label_inputs(images, ["cat"], "labels"), out, {"model": "halves"}, FolderOptions())
    assert folder.run(_Halves, {}, _KillsAWriter())["summary"]["done"] == 3
    assert sorted(path.name for path in out.rglob("*.png")) == ["0.png", "1.png", "2.png"]


@pytest.mark.parametrize("crf_backend", ["torch", "pydensecrf"])
def test_generate_in_batches_writes_what_it_writes_image_by_image(tmp_path, crf_backend):
    from freelabel.clip.config import ClipConfig
    from freelabel.pipelines.generate import GenerateConfig, generate
    from freelabel.pipelines.toy import write_toy_scenes

    data = write_toy_scenes(tmp_path / "scenes", seed=5, n=7)
    outputs = {}
    for batch_size in (1, 3):
        config = GenerateConfig(clip=ClipConfig(model="test-tiny-vit", pretrained="random"), save_scores=True,
                                overrides={"crf_backend": crf_backend}, engine=EngineConfig(batch_size=batch_size))
        out = tmp_path / f"batch{batch_size}"
        assert generate(data / "images", str(data / "labels.json"), out, config)["summary"]["done"] == 7
        outputs[batch_size] = {p.name: p.read_bytes() for p in sorted(out.glob("*.png"))}
    assert len(outputs[1]) == 7 and outputs[3] == outputs[1]


def _built_on(device: str) -> str:
    return device


def test_a_ray_driver_without_the_workers_device_builds_its_own_copy_on_the_cpu():
    """`--engine ray --device cuda` from a machine without that GPU (a cluster's head node): the driver's copy of
    the model (it checks that the model loads and encodes the labels once) is built on the CPU, the copies sent to
    the workers on the GPU; the local engine refuses the device before any work."""
    missing = "cuda:63"
    on_ray = EngineConfig(engine="ray")
    assert driver_device(on_ray, missing) == "cpu" and driver_device(on_ray, "cpu") == "cpu"
    assert driver_device(EngineConfig(), missing) == missing
    with pytest.raises(ConfigError, match="not available here"):
        create_engine(EngineConfig(), "freelabel-toy", missing)
    factory = model_factory(_built_on, on_ray, missing)
    assert factory() == "cpu"
    assert pickle.loads(pickle.dumps(factory))() == missing  # what a worker builds
    assert model_factory(_built_on, EngineConfig(), "cpu")() == "cpu"
