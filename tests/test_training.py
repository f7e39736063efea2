"""The training loop every trainer runs: hooks around the steps, in order, and the time budget."""

import pytest

from freelabel import training
from freelabel.training import HookBase, TimeBudget, TrainerBase


class Counting(TrainerBase):
    """Takes ``steps`` steps, logging them."""

    def __init__(self, steps: int, log: list[str]):
        super().__init__()
        self.steps, self.log, self.step = steps, log, 0

    def run_step(self) -> None:
        self.step += 1
        self.log.append(f"step {self.step}")
        self.stop = self.step == self.steps


class Logging(HookBase):
    def __init__(self, name: str, log: list[str]):
        self.name, self.log = name, log

    def before_train(self) -> None:
        self.log.append(f"{self.name} before_train")

    def before_step(self) -> None:
        self.log.append(f"{self.name} before_step")

    def after_step(self) -> None:
        self.log.append(f"{self.name} after_step")

    def after_train(self) -> None:
        self.log.append(f"{self.name} after_train")


def test_hooks_run_in_registration_order_around_each_step():
    log: list[str] = []
    trainer = Counting(2, log)
    trainer.register_hooks([Logging("a", log), Logging("b", log)])
    trainer.train()
    assert log == ["a before_train", "b before_train",
                   "a before_step", "b before_step", "step 1", "a after_step", "b after_step",
                   "a before_step", "b before_step", "step 2", "a after_step", "b after_step",
                   "a after_train", "b after_train"]
    assert all(hook.trainer is trainer for hook in trainer.hooks)


@pytest.mark.parametrize("minutes, spent, steps", [(None, 0.0, 10), (1.0, 0.0, 6), (1.0, 30.0, 3), (1.0, 90.0, 1)])
def test_the_time_budget_stops_after_the_step_at_which_it_ran_out(monkeypatch, minutes, spent, steps):
    clock = [0.0]
    monkeypatch.setattr(training.time, "monotonic", lambda: clock[0])

    class Slow(Counting):
        def run_step(self) -> None:
            clock[0] += 10.0  # every step takes 10 seconds
            super().run_step()

    trainer = Slow(10, [])
    budget = TimeBudget(minutes, spent_seconds=spent)
    trainer.register_hooks([budget])
    trainer.train()
    assert trainer.step == steps  # at least one step per launch, earlier launches' seconds counted
    assert budget.elapsed == budget.seconds() == spent + 10.0 * steps
