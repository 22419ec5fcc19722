"""How many steps each arm of a trial trains, where it is scored, and how long that should take.

Pinned by the evidence issue: one tenth of the run's remaining steps, at least 100 and at
most 1,000 (the `[trials]` settings), never more than what remains, at the run's batch
size. No torch, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from copilot.config import TrialSettings


@dataclass(frozen=True)
class TrialBudget:
    steps: int  # optimizer steps each arm trains after the fork
    evaluate_at: tuple[int, ...]  # trial steps at which every arm is scored, the last one `steps`
    step_time_s: float | None  # the run's measured time per step, when it has one

    def expected_s(self, arms: int) -> float | None:
        """Training time of `arms` arms one after another (start-up and scoring come on top)."""
        return None if self.step_time_s is None else arms * self.steps * self.step_time_s

    def describe(self, arms: int) -> str:
        """`3 arms x 200 steps, about 12 s`: shown before the trials start."""
        expected = self.expected_s(arms)
        timing = f", about {expected:.0f} s of training" if expected is not None else ""
        return f"{arms} arms x {self.steps} steps{timing}"


def remaining_steps(*, epochs: int, steps_per_epoch: int, step: int) -> int:
    return max(0, epochs * steps_per_epoch - step)


def steps_per_epoch(train_size: int, batch_size: int) -> int:
    return max(1, math.ceil(train_size / batch_size))


def trial_budget(remaining: int, settings: TrialSettings, step_time_s: float | None = None) -> TrialBudget | None:
    """The budget for a run with `remaining` steps to go; None when no step is left to trial."""
    if remaining <= 0:
        return None
    wanted = round(remaining * settings.budget_fraction)
    steps = min(remaining, max(settings.min_steps, min(settings.max_steps, wanted)))
    return TrialBudget(steps=steps, evaluate_at=evaluation_points(steps, settings.evaluations), step_time_s=step_time_s)


def evaluation_points(steps: int, evaluations: int) -> tuple[int, ...]:
    """`evaluations` trial steps spread evenly up to `steps` (fewer when `steps` is smaller), the last one `steps`."""
    return tuple(sorted({max(1, round(steps * k / evaluations)) for k in range(1, evaluations + 1)}))
