"""``freelabel query``: masks for free-text queries on one image, with an overlay a person can look at."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from freelabel.cards import resolve_preset
from freelabel.clip.config import ClipConfig
from freelabel.config import option
from freelabel.errors import FreelabelError, RunStoppedError
from freelabel.io import ImageReadError, provenance, read_image, write_image, write_json
from freelabel.io.files import write_jsonl
from freelabel.io.images import MAX_PIXELS
from freelabel.io.masks import blend_mask, write_mask
from freelabel.run.model import load_image_segmenter
from freelabel.run.query import QueryResult, query

QUERIES = "queries.jsonl"
OVERLAY_TEXTS = 254  # the overlay's colours: palette indices 1-254 (0 is the image, 255 the ignore white)


@dataclass
class QueryConfig:
    """Which model answers the queries; saved as ``query.json`` beside the masks."""

    clip: ClipConfig = option(default_factory=ClipConfig, help="The CLIP of the pseudo-mask pipeline.")
    preset: str | None = option(None, help="Preset JSON (e.g. from `freelabel tune`), or 'default' for the library "
                                "default preset; None = the model's own.")
    overrides: dict[str, Any] = option(default_factory=dict, help="Labeler fields set on top of the preset.")
    checkpoint: str | None = option(None, path="existing-folder", help="A `freelabel train` run answers instead of "
                                    "the pseudo-mask pipeline.")
    max_pixels: int | None = option(MAX_PIXELS, help="A larger image is refused unread.")


def query_image(image_path: str | Path, texts: Sequence[str], out: str | Path, config: QueryConfig | None = None
                ) -> list[QueryResult]:
    """Answer ``texts`` on the image at ``image_path`` and write to ``out``: ``query<NN>.png`` per text (palette
    PNG: 0 not, 1 the text, 255 not confident), ``overlay.png`` (the first ``OVERLAY_TEXTS`` answered texts'
    masks blended into the image in palette colours, later texts over earlier, each named at its centre; a text
    beyond them says so in its line), ``queries.jsonl`` (per text: query, mask file, area, mean score; or its
    error) and ``query.json`` (config, model, versions). Settings and the image
    are checked before the model loads. Returns the results in order."""
    config = config or QueryConfig()
    image_path, out = Path(image_path), Path(out)
    if not texts:
        raise FreelabelError("give at least one text to query")
    labeler_config = None if config.checkpoint else resolve_preset(config.clip.model, config.preset,
                                                                   config.overrides)[1]
    try:
        image = read_image(image_path, config.max_pixels)
    except ImageReadError as error:
        raise FreelabelError(str(error)) from None
    results = query(load_image_segmenter(config.checkpoint, config.clip, labeler_config), image, texts)
    combined = np.zeros(image.shape[:2], np.uint8)
    records = []
    try:  # a full disk: one line, not a traceback
        for index, result in enumerate(results):
            if result.error is not None:
                records.append({"query": result.text, "error": result.error})
                continue
            name = f"query{index:02d}.png"
            write_mask(out / name, result.mask)
            records.append({"query": result.text, "mask": name, "area": result.area,
                            "mean_score": result.mean_score})
            if index < OVERLAY_TEXTS:
                combined[result.mask == 1] = index + 1
            else:
                records[-1]["overlay"] = f"not drawn: the overlay colours the first {OVERLAY_TEXTS} texts"
        write_image(out / "overlay.png", _name_regions(blend_mask(image, combined), combined, results))
        write_jsonl(out / QUERIES, records)
        write_json(out / "query.json", {"config": asdict(config), "image": str(image_path), "texts": list(texts),
                                        "labeler": labeler_config.to_dict() if labeler_config else None,
                                        **provenance()})
    except OSError as error:
        raise RunStoppedError(f"cannot write the answers to {out} ({error}); free space, then run the command "
                              "again") from None
    return results


def _name_regions(overlay: np.ndarray, combined: np.ndarray, results: Sequence[QueryResult]) -> np.ndarray:
    """Write each answered text at the centre of its visible region, white on a black outline."""
    overlay = overlay.copy()
    scale = max(0.35, min(overlay.shape[:2]) / 600)
    for index, result in enumerate(results):
        ys, xs = np.nonzero(combined == index + 1)
        if not len(ys):
            continue
        (width, height), _ = cv2.getTextSize(result.text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = int(np.clip(xs.mean() - width / 2, 0, max(0, overlay.shape[1] - width)))
        y = int(np.clip(ys.mean() + height / 2, height, overlay.shape[0] - 1))
        for colour, thickness in (((0, 0, 0), 3), ((255, 255, 255), 1)):
            cv2.putText(overlay, result.text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    return overlay
