"""The Ray engine as a user runs it (integration, a real local Ray cluster): the same bytes as the local engine, a
bad image costs its line, a worker killed mid-run is replaced and its batch retried, a killed driver resumes, and a
separately started cluster is joined with ``--address``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'freelabel[ray]')")

from freelabel.pipelines.classify import classify_folder  # noqa: E402
from freelabel.pipelines.generate import GenerateConfig, generate  # noqa: E402
from freelabel.pipelines.toy import write_toy_scenes  # noqa: E402
from freelabel.clip.config import ClipConfig  # noqa: E402
from freelabel.io.files import read_jsonl  # noqa: E402
from freelabel.run.engines import EngineConfig  # noqa: E402
from freelabel.run.selection import ClassifyConfig  # noqa: E402

pytestmark = pytest.mark.slow
COMMAND = [sys.executable, "-m", "freelabel.pipelines.cli", "generate"]
SCENES = 48


def _outputs(out: Path) -> dict[str, str]:
    """Hash of every mask, score file and classes.txt below ``out``, by relative path."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and (p.suffix in (".png", ".npz") or p.name == "classes.txt")}


def _args(data: Path, out: Path, *extra: str) -> list[str]:
    return [*COMMAND, str(data / "images"), "--labels", str(data / "labels.json"), "--out", str(out),
            "--model", "freelabel-toy", "--save-scores", *extra]


def _map_workers() -> list[int]:
    """The pids of the Ray Data actor processes on this machine (their process title names them)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::MapWorker"):
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_toy_scenes(tmp_path_factory.mktemp("scenes"), seed=33, n=SCENES)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> dict[str, str]:
    """What the local engine writes for ``data``."""
    out = tmp_path_factory.mktemp("local") / "out"
    subprocess.run(_args(data, out), check=True, capture_output=True)
    return _outputs(out)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A one-node Ray cluster started apart from the tests (``ray start --head``, 2 CPUs, on 127.0.0.1), as a user
    starts one; its address. Stopped after the module."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    port = 6390 + os.getpid() % 100
    temp = tmp_path_factory.mktemp("ray")
    subprocess.run([ray_cli, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--num-cpus", "2", "--include-dashboard", "false", "--temp-dir", str(temp),
                    "--disable-usage-stats"],
                   check=True, capture_output=True)
    yield f"127.0.0.1:{port}"
    subprocess.run([ray_cli, "stop", "--force"], capture_output=True)


def test_ray_in_process_writes_what_the_local_engine_writes_masks_and_labels(data, reference, tmp_path):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = GenerateConfig(clip=ClipConfig(model="freelabel-toy"), save_scores=True,
                                engine=EngineConfig(engine="ray", workers=2))
        summary = generate(data / "images", str(data / "labels.json"), tmp_path / "out", config)["summary"]
        assert summary["done"] == SCENES and summary["failed"] == 0
        assert _outputs(tmp_path / "out") == reference
        # a rerun finds everything done: nothing is recomputed, the bytes stay
        again = generate(data / "images", str(data / "labels.json"), tmp_path / "out", config)["summary"]
        assert again["done"] == 0 and again["skipped"] == SCENES
        assert _outputs(tmp_path / "out") == reference
        # a bad image costs its line in errors.jsonl, as locally
        bad = tmp_path / "bad"
        (bad / "images").mkdir(parents=True)
        for name in ("000000.png", "000001.png"):
            (bad / "images" / name).write_bytes((data / "images" / name).read_bytes())
        (bad / "images" / "broken.png").write_bytes(b"not a png")
        (bad / "labels.json").write_text(json.dumps({"000000.png": ["square"], "000001.png": ["circle"],
                                                     "broken.png": ["square"]}))
        summary = generate(bad / "images", str(bad / "labels.json"), bad / "out", config)["summary"]
        errors = read_jsonl(bad / "out" / "errors.jsonl")
        assert summary["done"] == 2 and summary["failed"] == 1
        assert [(Path(e["path"]).name, e["stage"]) for e in errors] == [("broken.png", "read")]
        # label-free selection runs on the same actors and selects what it selects locally
        selected = {}
        for engine in (EngineConfig(), EngineConfig(engine="ray", workers=2)):
            out = tmp_path / f"classify-{engine.engine}"
            config = ClassifyConfig(clip=ClipConfig(model="freelabel-toy"), engine=engine)
            assert classify_folder(data / "images", str(data / "classes.txt"), out, config)["summary"]["done"] == SCENES
            selected[engine.engine] = (out / "labels.json").read_bytes()
        assert selected["ray"] == selected["local"]
    finally:
        ray.shutdown()


def test_a_worker_killed_mid_run_is_replaced_and_nothing_is_lost(data, reference, cluster, tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(_args(data, out, "--engine", "ray", "--workers", "2", "--address", cluster),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    while process.poll() is None and killed is None:
        workers = _map_workers()
        if len(workers) == 2 and len(list(out.glob("*.png"))) >= 4:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=300)
    assert killed is not None, "the run ended before a worker could be killed"
    assert process.returncode == 0, stderr
    assert f"{SCENES} masks written" in stdout
    journal = [entry["image"] for entry in read_jsonl(out / "journal.jsonl")]
    assert sorted(journal) == sorted(set(journal)) and len(journal) == SCENES  # each image journaled once
    assert _outputs(out) == reference


def test_a_killed_driver_resumes_to_the_same_bytes(data, reference, cluster, tmp_path):
    out = tmp_path / "out"
    args = _args(data, out, "--engine", "ray", "--workers", "2", "--address", cluster)
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and len(read_jsonl(out / "journal.jsonl")) < 6:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    journaled = len(read_jsonl(out / "journal.jsonl"))
    assert 0 < journaled < SCENES, "the driver was not killed mid-run"
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{SCENES - journaled} masks written, {journaled} skipped" in done.stdout
    assert _outputs(out) == reference


def test_an_address_nobody_listens_on_is_one_error_line(data, tmp_path):
    done = subprocess.run(_args(data, tmp_path / "out", "--engine", "ray", "--address", "127.0.0.1:1"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "cannot join the Ray cluster at 127.0.0.1:1" in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_a_driver_without_the_workers_gpu_starts_them_and_their_refusal_is_the_error(data, cluster, tmp_path):
    """`--device cuda:63` from a machine without it: the driver builds its own copy of the model on the CPU and
    starts the workers (on a cluster, the GPU nodes); here they lack the device too, so the run stops with their
    reason, on one line."""
    done = subprocess.run(_args(data, tmp_path / "out", "--engine", "ray", "--workers", "1", "--gpus-per-worker", "0",
                                "--device", "cuda:63", "--address", cluster), capture_output=True, text=True,
                          timeout=600)
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert done.returncode != 0 and len(errors) == 1, done.stderr
    assert "the Ray run stopped: device 'cuda:63' is not available here" in errors[0]
