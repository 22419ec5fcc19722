"""When the advisor should look at the run: its rhythm, and the events that cannot wait.

`AssessmentTriggers` is fed every trainer event (by the session, from one thread) and
answers `due()` with the reason to assess now: "error" (the trainer stopped on an
error, or a swapped model failed, unless no model change can fix it: a setting, the
data, the machine's set-up; nor on a kill from outside with no sign of running out of
memory, or a full disk: a fault of the machine the session recovers from), "nonfinite" (NaN or infinity; the trainer paused
itself), "plateau" (the loss has not improved for `plateau_window` epochs) or
"schedule" (`assess_every` epochs since the last look), most urgent first; None
otherwise. Assessing on demand is the caller's choice and needs no trigger.

Scheduled and plateau looks stop once the epoch budget is spent: a proposal made
then could not train. The caller says `assessed()` when an assessment starts, so one
cause asks once. This module calls nothing and knows nothing of the advisor or git.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from copilot.events import NOT_MODEL_ERRORS, EpochSummary, Event, HParamsApplied, ModelSwapped, RunStarted, TrainerError

Trigger = Literal["error", "nonfinite", "plateau", "schedule"]
# Errors no change to the model or its hyperparameters can fix: the session or the user recovers.
MACHINE_FAULTS = ("killed", "disk")

# The loss must beat its best by this fraction to count as progress (the offline rules'
# PLATEAU_IMPROVEMENT, copilot/advisor/offline/rules.py, for the same window).
PLATEAU_IMPROVEMENT = 0.01


@dataclass
class AssessmentTriggers:
    assess_every: int
    plateau_window: int
    epochs_since_assessment: int = 0
    epochs_without_improvement: int = 0
    best_loss: float = math.inf
    urgent: Trigger | None = None
    epoch: int = 0
    budget: int | None = None  # the run's epoch budget, from the hyperparameters the trainer reports
    _seen_errors: set[tuple[str, str, int | None]] = field(default_factory=set)

    def observe(self, event: Event) -> None:
        if isinstance(event, TrainerError):
            self._error(event)
        elif isinstance(event, EpochSummary):
            self._epoch(event)
        elif isinstance(event, RunStarted):
            self.budget = event.hparams.epochs
        elif isinstance(event, HParamsApplied):
            self.budget = event.hparams.epochs
            self._new_round()
        elif isinstance(event, ModelSwapped):
            self._new_round()

    def _error(self, event: TrainerError) -> None:
        if event.kind in NOT_MODEL_ERRORS or event.kind in MACHINE_FAULTS:
            return  # the error's own hint, or the session's recovery, is the fix; no proposal can be one
        # A restarted trainer that fails the same way reports the same error: one look is enough.
        identity = (event.kind, event.message, event.step)
        if identity in self._seen_errors:
            return
        self._seen_errors.add(identity)
        if event.kind == "nonfinite":
            self.urgent = self.urgent or "nonfinite"
        else:
            self.urgent = "error"

    def _epoch(self, event: EpochSummary) -> None:
        self.epoch = event.epoch
        self.epochs_since_assessment += 1
        loss = event.val_loss if event.val_loss is not None and math.isfinite(event.val_loss) else event.train_loss
        if math.isfinite(loss) and loss < self.best_loss * (1 - PLATEAU_IMPROVEMENT):
            self.best_loss = loss
            self.epochs_without_improvement = 0
        else:
            self.epochs_without_improvement += 1

    def _new_round(self) -> None:
        """A new model or new hyperparameters: the old best loss and an error not yet looked at say nothing about them."""
        self.best_loss = math.inf
        self.epochs_without_improvement = 0
        self.urgent = None

    def due(self) -> Trigger | None:
        if self.urgent is not None:
            return self.urgent
        if self.budget is not None and self.epoch >= self.budget:
            return None
        if self.epochs_without_improvement >= self.plateau_window:
            return "plateau"
        if self.epochs_since_assessment >= self.assess_every:
            return "schedule"
        return None

    def assessed(self) -> None:
        """An assessment started: every cause that asked for it has been heard."""
        self.urgent = None
        self.epochs_since_assessment = 0
        self.epochs_without_improvement = 0
