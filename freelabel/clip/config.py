"""Which CLIP to load and on what device: the settings every model-using command shares.

Apart from ``freelabel.clip.loading`` (which imports open_clip) so that a config, and a command's options built
from it, cost no open_clip import; torch is imported only to check a device other than the CPU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from freelabel.config import option
from freelabel.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass
class ClipConfig:
    """Which CLIP to load and where. Saved beside every output that a model produced."""

    model: str = option("ViT-B-16", help="open_clip model name, hf-hub:ORG/REPO, local-dir:PATH, or freelabel-toy.")
    pretrained: str | None = option(None, help="Pretrained tag, checkpoint file or folder; None = the model's "
                                    "default; 'random' = no weights.")
    device: str = option("cpu", help="Torch device for the model, e.g. cpu or cuda (with --engine ray: the workers' "
                         "device, which the command's own machine need not have).")
    cache_dir: str | None = option(None, path="folder", help="Weight cache; None = $FREELABEL_CACHE_DIR, else the "
                                   "hub's and open_clip's own.")
    offline: bool | None = option(None, flag="--offline/--online", help="Never download; None = $FREELABEL_OFFLINE "
                                  "or $HF_HUB_OFFLINE.")
    text_cache: str | None = option(None, help="Label-embedding cache folder, or 'off'; None = "
                                    "$FREELABEL_TEXT_CACHE, else ~/.cache/freelabel/text-embeddings.")

    def __post_init__(self) -> None:
        # the name only: whether this machine has the device is checked where the model runs (a Ray run's workers
        # may have GPUs its driver lacks); "cpu" is skipped so that a command without a model never imports torch
        if self.device != "cpu":
            check_device(self.device, here=False)


def check_device(device: str | torch.device, here: bool = True) -> torch.device:
    """The torch device named by ``device``; ``ConfigError`` for a malformed name or (``here``) a CUDA device this
    machine does not have."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}; use e.g. cpu, cuda or cuda:1") from None
    if here and parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise ConfigError(f"device {device!r} is not available here (CUDA devices: {torch.cuda.device_count()})")
    return parsed
