"""Run folders: a trained segmenter as safetensors plus JSON (never a pickled model), and the training state.

``RUN_DIR/run.json``      the full training config, architecture, vocabulary and versions (written first)
``RUN_DIR/model.safetensors``  the segmenter's weights (the CLIP tower's too when it was fine-tuned)
``RUN_DIR/state.safetensors``  weights, optimiser moments and (in its metadata) the position, to resume training
``RUN_DIR/round-R/``      self-training round R > 1 (``freelabel.segmenter.rounds``): a run folder of its own, plus
                          ``masks/``, round R-1's masks it trained on; round 1 is ``RUN_DIR`` itself
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from freelabel.clip.checkpoint import check_values
from freelabel.errors import FreelabelError
from freelabel.io.files import atomic_path, read_json, write_json

RUN, MODEL, STATE = "run.json", "model.safetensors", "state.safetensors"
POSITION_KEYS = ("epoch", "batch", "step", "seconds")  # what a saved position must hold to resume from
ROUND_FOLDER = "round-{}"  # self-training round r > 1 of a run, inside its folder
ENCODER_PREFIX = "encoder."


def model_tensors(model: torch.nn.Module, with_encoder: bool) -> dict[str, torch.Tensor]:
    """The state to save: every tensor of ``model``'s state dict, the CLIP tower's only if ``with_encoder`` (a
    frozen tower is rebuilt from the CLIP weights instead)."""
    return {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()
            if with_encoder or not name.startswith(ENCODER_PREFIX)}


def _save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def _load(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise FreelabelError(f"cannot read {path}: {error}") from None


def save_model(run_dir: Path, model: torch.nn.Module, with_encoder: bool) -> None:
    """Write ``model.safetensors`` atomically."""
    _save(run_dir / MODEL, model_tensors(model, with_encoder))


def load_model_weights(run_dir: Path, model: torch.nn.Module) -> None:
    """Load ``model.safetensors`` into ``model`` after ``check_model_tensors``. Raises ``FreelabelError`` naming
    what does not fit."""
    tensors = _load(run_dir / MODEL)
    check_model_tensors(tensors, model, run_dir / MODEL, run_dir)
    model.load_state_dict(tensors, strict=False)


def check_model_tensors(tensors: dict[str, torch.Tensor], model: torch.nn.Module, path: Path, run_dir: Path) -> None:
    """Refuse weights ``path`` holds for ``model`` (the architecture of ``run_dir/run.json``) with the guards of
    CLIP weights: every head tensor must be there with its shape (tower tensors are optional: a fine-tuned tower),
    none unexpected, the model's dtype family, no NaN or inf (``freelabel.clip.checkpoint.check_values``)."""
    expected = model.state_dict()
    missing = [name for name in expected if not name.startswith(ENCODER_PREFIX) and name not in tensors]
    unexpected = [name for name in tensors if name not in expected]
    wrong = [name for name, tensor in tensors.items() if name in expected and tensor.shape != expected[name].shape]
    if missing or unexpected or wrong:
        raise FreelabelError(f"{path} does not fit the architecture in {run_dir / RUN}: "
                             f"missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {wrong[:3]}")
    check_values(tensors, expected, path, f"the architecture in {run_dir / RUN}")


def save_state(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, with_encoder: bool,
               position: dict[str, Any]) -> None:
    """Write the training state as one file, atomically: weights and AdamW moments as tensors, ``position``
    (epoch, batch, step, ...) and each parameter's step count as JSON in its metadata, so a kill can never pair
    one save's weights with another's position."""
    tensors = {f"model.{name}": tensor for name, tensor in model_tensors(model, with_encoder).items()}
    steps = {}
    for index, moments in optimizer.state_dict()["state"].items():
        for key, value in moments.items():
            if key == "step":
                steps[str(index)] = float(value)
            else:
                tensors[f"optimizer.{index}.{key}"] = value.detach().contiguous().cpu()
    _save(run_dir / STATE, tensors, {"position": json.dumps(position), "optimizer_steps": json.dumps(steps)})


def read_position(run_dir: Path) -> dict[str, Any] | None:
    """The position (epoch, batch, step, training seconds) of ``run_dir``'s training state, without loading its
    tensors; None when there is no readable state."""
    try:
        with safe_open(str(run_dir / STATE), framework="pt") as handle:
            return json.loads((handle.metadata() or {})["position"])
    except (SafetensorError, OSError, KeyError, ValueError):
        return None


def training_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a segmenter trained for all its epochs (a model whose state was deleted counts:
    the state only serves to resume)."""
    if not (run_dir / MODEL).is_file() or not (run_dir / RUN).is_file():
        return False
    if not (run_dir / STATE).is_file():
        return True
    position = read_position(run_dir)
    return position is not None and position["epoch"] >= read_json(run_dir / RUN)["train"]["epochs"]


def round_folder(run_dir: str | Path, round_number: int) -> Path:
    """The run folder of self-training round ``round_number`` (from 1) of ``run_dir``: round 1 is ``run_dir``."""
    run_dir = Path(run_dir)
    return run_dir if round_number == 1 else run_dir / ROUND_FOLDER.format(round_number)


def final_round(run_dir: str | Path, round_number: int | None = None) -> Path:
    """The folder of the segmenter ``run_dir`` stands for: its last round whose training finished (``run_dir``
    itself when none after the first did), or round ``round_number`` when given (refused when it has no model)."""
    run_dir = Path(run_dir)
    if round_number is not None:
        folder = round_folder(run_dir, round_number)
        if round_number < 1 or not (folder / MODEL).is_file():
            raise FreelabelError(f"{run_dir} has no round {round_number} (no {folder / MODEL})")
        return folder
    last = 1
    while training_finished(round_folder(run_dir, last + 1)):
        last += 1
    return round_folder(run_dir, last)


def load_state(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Restore ``save_state``'s weights and moments into ``model`` and ``optimizer``; returns the saved position,
    or None when the folder holds no state. A state without its position, with weights or moments of another
    architecture, of another dtype family or holding NaN/inf is refused (``FreelabelError``) before any is loaded."""
    if not (run_dir / STATE).is_file():
        return None
    path = run_dir / STATE
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        position, steps = json.loads(metadata["position"]), json.loads(metadata["optimizer_steps"])
        missing = [key for key in POSITION_KEYS if not isinstance(position.get(key), (int, float))]
        if missing:
            raise KeyError(f"its position lacks {', '.join(missing)}")
    except (SafetensorError, OSError, KeyError, ValueError, AttributeError) as error:
        raise FreelabelError(f"{path} is not a freelabel training state ({error}); delete it to start the run "
                             "over") from None
    tensors = _load(path)
    weights = {name[len("model."):]: t for name, t in tensors.items() if name.startswith("model.")}
    check_model_tensors(weights, model, path, run_dir)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    moments = {name: t for name, t in tensors.items() if name.startswith("optimizer.")}
    misfit = [name for name, t in moments.items()
              if not name.split(".")[1].isdigit() or int(name.split(".")[1]) >= len(params)
              or t.shape != params[int(name.split(".")[1])].shape]
    if misfit:
        raise FreelabelError(f"{path} holds optimiser moments that do not fit the parameters of the architecture in "
                             f"{run_dir / RUN} (e.g. {misfit[0]}); delete it to start the run over")
    check_values(moments, {}, path, "the optimiser")
    model.load_state_dict(weights, strict=False)
    device = next(model.parameters()).device
    state: dict[int, dict[str, torch.Tensor]] = {int(index): {"step": torch.tensor(step)}
                                                 for index, step in steps.items()}
    for name, tensor in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor.to(device)
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    return position


def file_digest(path: Path) -> str:
    """The SHA-256 of a file's bytes (hex): what binds an output folder to the weights that made it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_run(run_dir: Path, content: dict[str, Any]) -> None:
    """Write ``run.json``: everything needed to rebuild the segmenter and to know how it was trained."""
    write_json(run_dir / RUN, content)


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """Read a run folder's ``run.json``; raises ``FreelabelError`` when the folder holds no trained segmenter."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN).is_file() or not (run_dir / MODEL).is_file():
        raise FreelabelError(f"{run_dir} is not a freelabel training run (no {RUN} and {MODEL}); train one with "
                             "`freelabel train`")
    return dict(read_json(run_dir / RUN))
