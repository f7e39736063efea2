"""Guards around reading a CLIP checkpoint: every way a weights file can be wrong becomes one clear error that
names the file, the problem and the fix, before any image is processed.

A file's kind is read from its first bytes, whatever its suffix says. safetensors files are read directly;
pickled checkpoints only with ``torch.load(weights_only=True)``: open_clip's ``load_state_dict`` retries a failed
``weights_only`` load without it, which could run code from an untrusted file, so freelabel reads the file here and
hands the tensors to open_clip's conversions (``freelabel.clip.loading.load_weights``). After conversion,
``check_fits`` refuses missing, unexpected or misshapen tensors, a dtype family the model does not have, and NaN
or inf weights.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from freelabel.errors import FreelabelError

CHECKPOINT_FIX = "Re-download it, or check that --pretrained names the file you meant."


class UnsafeCheckpointError(FreelabelError):
    """A pickled checkpoint holds objects beyond plain tensors, so it is refused."""


class IncompatibleWeightsError(FreelabelError):
    """A checkpoint does not fit the requested architecture (keys, shapes, or a non-floating tensor where the
    model has floating weights)."""


class CorruptCheckpointError(FreelabelError):
    """A checkpoint file is not what its name claims, is truncated or unreadable, or holds NaN or inf weights."""


_SAFETENSORS_MAX_HEADER = 100_000_000  # the safetensors library refuses larger headers


def _first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of an error's message, shortened, for the parenthesis that ends a one-paragraph message."""
    text = (str(error).strip().splitlines() or [""])[0].strip() or type(error).__name__
    if len(text) > limit and ". " in text:
        text = text[:text.index(". ") + 1]  # torch's messages go on with advice of their own
    text = text if len(text) <= limit else text[:limit - 3].rstrip() + "..."
    return text.rstrip(".") if not text.endswith("...") else text  # the message adds its own full stop


def _file_kind(path: Path) -> str:
    """What a checkpoint file holds, from its first bytes: 'empty', 'zip' (``torch.save``), 'pickle' (legacy
    ``torch.save`` or plain pickle), 'safetensors', or 'unknown'. Raises ``CorruptCheckpointError`` when the file
    cannot be read at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as error:
        raise CorruptCheckpointError(
            f"The checkpoint {path} cannot be read ({_first_line(error)}). Check the file's permissions, or "
            f"check that --pretrained names the file you meant.") from None
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:  # pickle PROTO opcode, protocols 2-5
        return "pickle"
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER:
        return "safetensors"
    return "unknown"


def _safetensors_problem(path: Path) -> str:
    """Why a file that starts like safetensors could not be read, as a predicate ('is truncated (...)' when it is
    shorter than its header says)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if 8 + header_len > size:
                return (f"is truncated (it has {size} bytes, fewer than its {header_len}-byte header alone needs; "
                        f"the download or copy did not finish)")
            header = json.loads(f.read(header_len))
            ends = [int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return "is damaged"
    expected = 8 + header_len + max(ends, default=0)
    if size < expected:
        return (f"is truncated (it has {size} bytes where its header describes {expected}; the download or copy did "
                f"not finish)")
    return "is damaged"


def _read_safetensors(path: Path, kind: str) -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors, given its ``_file_kind``; ``CorruptCheckpointError`` when it is something
    else, truncated or damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if kind in ("zip", "pickle"):
        raise CorruptCheckpointError(
            f"The checkpoint {path} is not a safetensors file: it is a PyTorch pickle (as torch.save writes) with a "
            f".safetensors name. Rename it to .pt, so that freelabel reads it with torch.load(weights_only=True), "
            f"or convert it with safetensors.torch.save_file on a machine you trust.")
    if kind == "unknown":
        raise CorruptCheckpointError(
            f"The checkpoint {path} is not a safetensors file (its first bytes are neither a safetensors header nor "
            f"a PyTorch pickle), or its start is damaged. {CHECKPOINT_FIX}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise CorruptCheckpointError(f"The checkpoint {path} {_safetensors_problem(path)}, so it cannot be read as "
                                     f"safetensors ({_first_line(error)}). {CHECKPOINT_FIX}") from None


def _read_pickle(path: Path, kind: str) -> object:
    """A pickled checkpoint, given its ``_file_kind``, read with ``torch.load(weights_only=True)`` only;
    ``UnsafeCheckpointError`` for a pickle that needs more than tensors, ``CorruptCheckpointError`` for one that is
    truncated or no checkpoint."""
    if kind == "safetensors":
        raise CorruptCheckpointError(
            f"The checkpoint {path} is a safetensors file with a {path.suffix or 'missing'} suffix, not a PyTorch "
            f"pickle. Rename it to .safetensors so that freelabel reads it as one.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if kind == "unknown":
            raise CorruptCheckpointError(
                f"The checkpoint {path} is neither a PyTorch checkpoint nor a safetensors file (its first bytes are "
                f"neither), or its start is damaged. {CHECKPOINT_FIX}") from None
        raise UnsafeCheckpointError(
            f"Refusing to load {path}: it is a pickle that holds more than tensors, and freelabel only reads "
            f"pickled checkpoints with torch.load(weights_only=True). Convert it to safetensors on a machine "
            f"you trust. ({_first_line(error)})") from None
    except MemoryError:
        raise
    except Exception as error:  # noqa: BLE001 - zip, EOF and storage errors from a cut or damaged file
        raise CorruptCheckpointError(f"The checkpoint {path} is truncated or damaged: PyTorch cannot read it "
                                     f"({_first_line(error)}). {CHECKPOINT_FIX}") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors: safetensors directly, pickles only with ``torch.load(weights_only=True)``.

    Accepts plain state dicts and ``{"state_dict": ...}`` wrappers (``module.`` prefixes are removed).
    Raises ``UnsafeCheckpointError`` for pickles that need arbitrary code to load, ``CorruptCheckpointError``
    for a file that is not what its suffix says, is empty, truncated or otherwise unreadable, and
    ``IncompatibleWeightsError`` for one that holds no state dict of tensors.
    """
    path = Path(path)
    kind = _file_kind(path)  # from the first bytes: what the file is, whatever its suffix says
    if kind == "empty":
        raise CorruptCheckpointError(f"The checkpoint {path} is empty (0 bytes): the download or copy did not "
                                     f"finish. {CHECKPOINT_FIX}")
    state = _read_safetensors(path, kind) if path.suffix == ".safetensors" else _read_pickle(path, kind)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise IncompatibleWeightsError(f"{path} does not hold a state dict of tensors. Pass a file that holds the "
                                       f"model's state_dict (or {{'state_dict': ...}}), or check --pretrained.")
    return {key.removeprefix("module."): value for key, value in state.items()}


def _dtype_kind(tensor: torch.Tensor) -> str:
    """The family of a tensor's dtype: weights may change precision within a family when loaded, not family."""
    if tensor.is_floating_point():
        return "floating"
    if tensor.is_complex():
        return "complex"
    return "boolean" if tensor.dtype == torch.bool else "integer"


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _check_dtypes(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path,
                  description: str) -> None:
    """``IncompatibleWeightsError`` when a tensor's dtype family differs from the model's (float16 or bfloat16
    weights for a float32 model are fine; int64 or bool ones are not); tensors ``state`` lacks are not checked."""
    wrong = [k for k in expected if k in state and _dtype_kind(state[k]) != _dtype_kind(expected[k])]
    if wrong:
        k = wrong[0]
        raise IncompatibleWeightsError(
            f"The checkpoint {path} does not fit {description}: {len(wrong)} tensor(s) of the wrong dtype (e.g. {k} "
            f"is {_dtype_name(state[k].dtype)} where the model expects a {_dtype_kind(expected[k])} tensor, "
            f"{_dtype_name(expected[k].dtype)}). Float32, float16 and bfloat16 weights all load; re-export or "
            f"convert the checkpoint with the model's own dtypes, or check that --pretrained names the weights you "
            f"meant.")


def _all_finite(tensor: torch.Tensor) -> bool:
    """Whether a floating tensor holds neither NaN nor inf, without a copy in the common case.

    A sum is finite only if every term is (NaN and inf propagate through any order of additions; +inf and -inf
    give NaN), so a finite sum settles it exactly and reads the tensor once. ``torch.isfinite`` instead builds an
    ``abs`` copy and three boolean temporaries, about ten times slower on CPU; it runs only when the sum is not
    finite, which also covers a sum that overflows (float16 weights summing past 65504) without a false alarm.
    """
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _check_finite(state: dict[str, torch.Tensor], path: Path) -> None:
    """``CorruptCheckpointError`` when a floating tensor holds NaN or inf. Costs one pass over each floating
    tensor (``_all_finite``); values are counted only for the tensors that fail."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not _all_finite(t)]
    if bad:
        counts = {k: (int(torch.isnan(state[k]).sum()), int((~torch.isfinite(state[k])).sum())) for k in bad}
        total = sum(n for _, n in counts.values())
        k = max(bad, key=lambda key: counts[key][1])  # the worst tensor as the example
        nan, n = counts[k]
        example = " and ".join(f"{count} {what}" for count, what in ((nan, "NaN"), (n - nan, "inf")) if count)
        raise CorruptCheckpointError(
            f"The checkpoint {path} holds {total} non-finite values in {len(bad)} tensor(s) (e.g. {example} in "
            f"{k}), so every mask made with it would be wrong. Re-download it; if you trained it, "
            f"take a checkpoint from before training diverged; and check that --pretrained names the file you "
            f"meant.")



def check_fits(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: str | os.PathLike,
               description: str) -> None:
    """Refuse a state dict that a strict ``load_state_dict`` into a model with state ``expected`` would not take,
    or should not: ``IncompatibleWeightsError`` for missing, unexpected or misshapen tensors and for a dtype family
    the model does not have, ``CorruptCheckpointError`` for NaN or inf weights. ``path`` and ``description`` (the
    model asked for) go into the messages."""
    path = Path(path)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = [k for k in set(expected) & set(state) if expected[k].shape != state[k].shape]
    if missing or unexpected or wrong_shape:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            k = min(wrong_shape)
            details.append(f"{len(wrong_shape)} of another shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                           f"{tuple(expected[k].shape)} in the model)")
        raise IncompatibleWeightsError(f"The checkpoint {path} does not fit {description}: " + "; ".join(details)
                                       + ". Check that --model names the architecture the weights were trained for.")
    check_values(state, expected, path, description)


def check_values(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: str | os.PathLike,
                 description: str) -> None:
    """Refuse tensors a model should not take whatever their names and shapes: ``IncompatibleWeightsError`` for a
    dtype family the model's tensor of that name (in ``expected``) does not have, ``CorruptCheckpointError`` for
    NaN or inf in any floating tensor of ``state``."""
    _check_dtypes(state, expected, Path(path), description)
    _check_finite(state, Path(path))
