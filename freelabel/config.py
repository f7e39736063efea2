"""Config fields that carry their own description: ``option`` is ``dataclasses.field`` with the field's help text
(what it means, read by people and by the ``freelabel`` command, which builds its options from it) and, where the
command-line flag is not the field's name, the flag."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

PATH_KINDS = ("folder", "existing-folder")


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None,
           choices: Sequence[str] | None = None, path: str | None = None,
           default_factory: Callable[[], Any] | Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text in ``metadata``.

    help: what the field means, one or two sentences. flag: the command-line flag where it is not
    ``--<field-name>`` (``"--flow"``; ``"--offline/--online"`` for an on/off pair). choices: the values the field
    takes, for a field that takes one of a few names. path: ``"folder"`` or ``"existing-folder"`` for a field that
    names a folder (the command checks it). default / default_factory: as ``dataclasses.field``'s.
    """
    if not help.strip():
        raise ValueError("a config field needs a help text")
    if path is not None and path not in PATH_KINDS:
        raise ValueError(f"path must be one of {', '.join(PATH_KINDS)}, got {path!r}")
    metadata = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None, "path": path}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)
