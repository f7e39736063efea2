"""The training loop every freelabel trainer runs (the segmenter's and the toy CLIP's), after detectron2's engine.

A trainer subclasses ``TrainerBase`` and writes ``run_step`` (one optimiser step); what happens around the steps
(saving, validating, journals, stopping at a time budget) is a ``HookBase`` registered with it. Hooks run in the
order they were registered, so a hook may act on what an earlier one decided in the same call.

This module imports nothing from freelabel, so every trainer can build on it without an import cycle.
"""

from __future__ import annotations

import time
from collections.abc import Iterable


class HookBase:
    """Something done around a trainer's steps. Every method does nothing unless a subclass overrides it;
    ``trainer`` is the trainer the hook was registered with."""

    trainer: TrainerBase

    def before_train(self) -> None:
        """Called once, before the first step."""

    def before_step(self) -> None:
        """Called before every step."""

    def after_step(self) -> None:
        """Called after every step."""

    def after_train(self) -> None:
        """Called once, after the last step."""


class TrainerBase:
    """Takes steps until ``stop`` is set (by a step or a hook), calling its hooks before and after training and
    around every step. Subclasses write ``run_step``; they may extend the ``before_*`` / ``after_*`` methods."""

    def __init__(self) -> None:
        self.hooks: list[HookBase] = []
        self.stop = False  # no further step is taken once set

    def register_hooks(self, hooks: Iterable[HookBase]) -> None:
        """Add ``hooks`` after those already registered; each is told its trainer."""
        for hook in hooks:
            hook.trainer = self
            self.hooks.append(hook)

    def train(self) -> None:
        """Run the steps between the hooks' ``before_train`` and ``after_train``."""
        self.before_train()
        while not self.stop:
            self.before_step()
            self.run_step()
            self.after_step()
        self.after_train()

    def run_step(self) -> None:
        """One optimiser step (a subclass's)."""
        raise NotImplementedError

    def before_train(self) -> None:
        self._call_hooks("before_train")

    def before_step(self) -> None:
        self._call_hooks("before_step")

    def after_step(self) -> None:
        self._call_hooks("after_step")

    def after_train(self) -> None:
        self._call_hooks("after_train")

    def _call_hooks(self, event: str) -> None:
        for hook in self.hooks:
            getattr(hook, event)()

class TimeBudget(HookBase):
    """The training clock: stops the trainer after the step at which ``minutes`` of training time have passed
    (None: no limit; every launch takes at least one step). ``spent_seconds``: the time an earlier launch of the
    same run trained, counted in."""

    def __init__(self, minutes: float | None, spent_seconds: float = 0.0):
        self.minutes, self.spent_seconds = minutes, spent_seconds
        self.started = time.monotonic() - spent_seconds
        self.elapsed = spent_seconds  # training seconds when last checked: at the start, then after each step

    def seconds(self) -> float:
        """Training seconds so far, read now."""
        return time.monotonic() - self.started

    def before_train(self) -> None:
        self.started = time.monotonic() - self.spent_seconds
        self.elapsed = self.seconds()

    def after_step(self) -> None:
        self.elapsed = self.seconds()
        if self.minutes is not None and self.elapsed >= self.minutes * 60:
            self.trainer.stop = True
