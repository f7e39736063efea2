"""Label texts to embeddings: the text tower run on only as much context as the prompts need, and an on-disk
cache so that a large vocabulary is embedded once per model and template set, not once per run.

CLIP's text towers are causal and pool at the end-of-text token: a token never sees the padding after it, so
cutting the context to the batch's longest prompt gives the same embeddings for a fraction of the work. Towers
that are not causal, or that pool elsewhere, keep the full context.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import torch
from open_clip.model import CLIP
from open_clip.transformer import text_global_pool
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from freelabel.io.files import atomic_path

LOG = logging.getLogger(__name__)
TEXT_CACHE_ENV = "FREELABEL_TEXT_CACHE"
CACHE_FORMAT = 1  # bump when what a cached embedding means changes


def truncatable(model: torch.nn.Module) -> bool:
    """Whether ``model``'s text tower may run on a shortened context: an open_clip ``CLIP`` with a causal mask
    that pools at the end token (``argmax`` or ``eos``)."""
    return (isinstance(model, CLIP) and getattr(model, "attn_mask", None) is not None
            and model.text_pool_type in ("argmax", "eos"))


def _context_needed(model: CLIP, tokens: torch.Tensor) -> int:
    """Positions up to and including the last pooled (end) token of any prompt in the batch."""
    eos = getattr(model, "text_eos_id", None)
    ends = tokens.argmax(dim=-1) if model.text_pool_type == "argmax" else (tokens == eos).int().argmax(dim=-1)
    return int(ends.max()) + 1


@torch.no_grad()
def encode_prompts(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Text embeddings of tokenised prompts: tokens (N, context_length) int64 from the model's tokenizer, on the
    model's device. Returns (N, D) float32, not normalised; equal (to float tolerance) to
    ``model.encode_text(tokens)``, on a context cut to the longest prompt where ``truncatable(model)``."""
    if not truncatable(model):
        return model.encode_text(tokens).float()
    length = _context_needed(model, tokens)
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask[:length, :length]))
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    projection = model.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
    return x.float()


def text_tower_digest(model: torch.nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every parameter and buffer outside the image tower:
    what a text embedding depends on besides the tokenizer and the prompt."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        if name.startswith("visual."):
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def text_cache_dir(folder: str | os.PathLike | None = None) -> Path | None:
    """Where label embeddings are cached: ``folder``, else ``$FREELABEL_TEXT_CACHE``, else
    ``~/.cache/freelabel/text-embeddings``; ``"off"`` (either way) means no disk cache (None)."""
    value = str(folder or os.environ.get(TEXT_CACHE_ENV) or Path.home() / ".cache" / "freelabel" / "text-embeddings")
    return None if value.strip().lower() == "off" else Path(value)


class TextEmbeddingCache:
    """Label embeddings on disk for one text tower, tokenizer and template set (the key).

    Each batch of newly encoded labels becomes one safetensors shard in ``folder/<key>/``: an (N, D) float32
    ``embeddings`` tensor, with the full key and the N labels in its metadata. A shard that cannot be read, or
    whose key, labels, shape or values do not fit, is deleted and its labels are encoded again: never trusted.
    """

    def __init__(self, folder: str | os.PathLike, key: dict[str, object]):
        """key: JSON-ready description of everything an embedding depends on (model, text tower digest, tokenizer,
        templates)."""
        self.key = json.dumps({"format": CACHE_FORMAT, **key}, sort_keys=True)
        self.folder = Path(folder) / hashlib.sha256(self.key.encode()).hexdigest()[:24]
        self._loaded: dict[str, torch.Tensor] | None = None

    def _load(self) -> dict[str, torch.Tensor]:
        """Every valid shard's embeddings by label (CPU float32); invalid shards are deleted."""
        found: dict[str, torch.Tensor] = {}
        for shard in sorted(self.folder.glob("*.safetensors")):
            try:
                embeddings, labels = self._read(shard)
            except (SafetensorError, OSError, ValueError, KeyError) as error:
                LOG.warning("text-embedding cache: %s is unusable (%s); its labels are encoded again", shard, error)
                shard.unlink(missing_ok=True)
                continue
            found.update(zip(labels, embeddings))
        return found

    def _read(self, shard: Path) -> tuple[torch.Tensor, list[str]]:
        with safe_open(shard, framework="pt") as handle:  # one open: metadata and tensor
            metadata = handle.metadata() or {}
            if metadata.get("key") != self.key:
                raise ValueError("written for another model or template set")
            labels = json.loads(metadata["labels"])
            embeddings = handle.get_tensor("embeddings")
        if (not isinstance(labels, list) or not all(isinstance(label, str) for label in labels)
                or embeddings.dtype != torch.float32 or embeddings.ndim != 2 or len(embeddings) != len(labels)
                or not torch.isfinite(embeddings).all()):
            raise ValueError("labels and embeddings do not match")
        return embeddings, labels

    def get(self, labels: Sequence[str]) -> dict[str, torch.Tensor]:
        """The cached (D,) float32 CPU embeddings of those of ``labels`` that are on disk."""
        if self._loaded is None:
            self._loaded = self._load()
        return {label: self._loaded[label] for label in labels if label in self._loaded}

    def put(self, labels: Sequence[str], embeddings: torch.Tensor) -> None:
        """Store (N, D) embeddings of N labels as one new shard (atomically; a failed write only warns)."""
        embeddings = embeddings.detach().float().cpu().contiguous()
        name = hashlib.sha256(json.dumps(list(labels)).encode()).hexdigest()[:24]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.folder / f"{name}.safetensors") as tmp:
                save_file({"embeddings": embeddings}, str(tmp),
                          metadata={"key": self.key, "labels": json.dumps(list(labels))})
        except OSError as error:
            LOG.warning("text-embedding cache: could not write to %s (%s)", self.folder, error)
            return
        if self._loaded is not None:
            self._loaded.update(zip(labels, embeddings))
