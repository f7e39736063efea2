"""``freelabel models``: the model cards, and the open_clip models with pretrained weights that every other
``--model`` name builds on (with the library's defaults)."""

from __future__ import annotations

import open_clip

from freelabel.cards import list_models, model_card


def describe_models() -> str:
    """A text listing: each card (its tags, templates, preprocessing and presets), then open_clip's pretrained
    weights, one line per architecture with its tags (``open_clip.list_pretrained()``)."""
    lines = ["Model cards (freelabel.model_card; a model without one gets the library's defaults):"]
    for name in list_models():
        card = model_card(name)
        tags = [f"{tag} (bundled)" if card.bundled and tag == card.bundled[0] else tag for tag in card.tags()]
        preset = card.preset.source.get("command") or card.preset.source.get("name", "")
        lines += [f"  {name}: {card.description}" if card.description else f"  {name}",
                  f"    pretrained: {', '.join(tags) or 'none'}",
                  f"    templates: {len(card.templates)}; preprocessing: "
                  + (", ".join(f"{key}={value}" for key, value in card.preprocess.items()) or "the tag's"),
                  f"    labeler preset: {preset}; training preset: "
                  + (", ".join(f"{key}={value}" for key, value in card.train.items()) or "the library's")]
    by_architecture: dict[str, list[str]] = {}
    for architecture, tag in open_clip.list_pretrained():
        by_architecture.setdefault(architecture, []).append(tag)
    lines.append("open_clip pretrained weights (--model NAME --pretrained TAG; the first tag is the default):")
    lines += [f"  {architecture}: {', '.join(tags)}" for architecture, tags in by_architecture.items()]
    return "\n".join(lines)
