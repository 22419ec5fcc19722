"""The trial processes: each arm a trainer in trial mode, one after another, and their report.

`TrialRunner.compare` trains the unchanged run (the incumbent) and each candidate for
the same budget from the same fork checkpoint, scores their outputs here (see
`scoring.py`), estimates the noise, ranks (see `ranking.py`), extends the undecided
arms once, and returns a `TrialReport`. Each arm is a `TrainerProcess` started from the
session's own `TrainerSpec` (so it runs behind whatever walls the trainer runs behind),
with a `TrialPlan` and its own folder under the run's `trials/`. `cancel()` kills the
arm in flight from any thread; the report then says "cancelled".

Only the winner's end checkpoint is kept (the run continues from it); the other arms'
checkpoints are deleted once ranked, their metrics and outputs stay as the record.
This module must not import torch (scoring does, lazily) nor touch git or the run's
own trainer.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from copilot.advisor.schemas import ArmResult, TrialPoint, TrialReport
from copilot.advisor.trials.budget import TrialBudget
from copilot.advisor.trials.ranking import Noise, Ranking, needs_second_seed, noise_of, rank
from copilot.advisor.trials.scoring import score_outputs, validation_targets
from copilot.config import LaunchSettings, TrialSettings
from copilot.errors import CopilotError
from copilot.events import CheckpointWritten, Finished, ModelRef, SetHParams, SwapModel, Task, TrainerError, TrialOutputs
from copilot.run_folder import RunFolder
from copilot.training.launcher import TrainerProcess, TrainerSpec, TrialPlan

INCUMBENT = "incumbent"
SECOND_SEED = "incumbent-seed2"
# The second copy of the unchanged run draws another data order and random stream from this seed.
SECOND_SEED_OFFSET = 1
POLL_S = 0.25


@dataclass(frozen=True)
class Arm:
    """One candidate to trial: a hyperparameter change, a new model file, or both; neither is the incumbent."""

    name: str
    summary: str
    hparam_changes: dict[str, float | int | str | None] = field(default_factory=dict)
    model_code: str | None = None
    file_name: str | None = None  # the model file's name, for the code's copy in the trial folder
    carry_weights: bool = True  # False: the new model trains from its own initialisation (see SwapModel)


# Told each point of an arm as it is scored; False stops the arm there (a tune's pruner).
KeepGoing = Callable[[TrialPoint], bool]


@dataclass
class _Collected:
    """What one trial process left: its points as scored on arrival, its last checkpoint, its error."""

    points: list[TrialPoint] = field(default_factory=list)
    scoring_problem: str | None = None  # outputs that could not be scored
    checkpoint: str | None = None
    error: TrainerError | None = None
    cancelled: bool = False
    pruned: bool = False
    wall_time_s: float = 0.0


class TrialRunner:
    """Trials of one assessment, forked from `fork` (None: from the model file, as a fresh run)."""

    def __init__(
        self,
        base: TrainerSpec,
        fork: Path | None,
        folder: Path,
        settings: TrialSettings,
        *,
        task: Task,
        val_samples: int,
        round_number: int,
    ) -> None:
        self._base = base
        self._fork = fork
        self._folder = folder
        self._settings = settings
        self._task = task
        self._val_samples = val_samples
        self._round = round_number  # the round an accepted candidate becomes
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self._current: TrainerProcess | None = None
        self._targets: Any = None

    # ------------------------------------------------------------------ the whole comparison

    def compare(self, candidates: Sequence[Arm], budget: TrialBudget) -> TrialReport:
        started = time.monotonic()
        incumbent = self._run_arm(Arm(INCUMBENT, "unchanged"), budget, self._fork)
        results = [self._run_arm(arm, budget, self._fork) for arm in candidates]
        second_seed = None
        if needs_second_seed(incumbent):
            second_seed = self._run_arm(Arm(SECOND_SEED, "unchanged, another seed"), budget, self._fork, reseed=True)
        noise = noise_of(incumbent, second_seed)
        ranking = rank(incumbent, results, noise, self._settings.min_gain)
        extended = False
        if ranking.winner is None and ranking.undecided and not self._cancelled.is_set():
            extended = True
            incumbent = self._extend(incumbent, budget)
            results = [self._extend(r, budget) if r.arm in ranking.undecided else r for r in results]
            noise = noise_of(incumbent, second_seed)
            ranking = rank(incumbent, results, noise, self._settings.min_gain)
        arms = [incumbent, *([second_seed] if second_seed else []), *results]
        if self._cancelled.is_set():
            return self._report(arms, budget, noise, Ranking(None, (), "the trials were cancelled"), extended, started)
        return self._report(arms, budget, noise, ranking, extended, started)

    @property
    def in_flight(self) -> bool:
        """Whether an arm's trial process is running now."""
        with self._lock:
            return self._current is not None and self._current.is_alive

    def cancel(self) -> None:
        """Stop the trials: the arm in flight is killed, none starts after it."""
        self._cancelled.set()
        with self._lock:
            if self._current is not None:
                self._current.kill()

    # ------------------------------------------------------------------ one arm

    def _arm_spec(self, arm: Arm, folder: Path, resume_from: Path | None) -> tuple[ModelRef, tuple[SetHParams | SwapModel, ...]]:
        """The model the arm's trainer starts with and the changes it applies before its first step.

        A new model file is swapped in as an accepted round would swap it; with nothing
        trained to fork from, the trainer simply starts from the new file (the old one may
        not even load), and an empty hyperparameter change marks the round.
        """
        model = self._base.model
        commands: list[SetHParams | SwapModel] = []
        if arm.model_code is not None:
            source = folder / "source" / (arm.file_name or "model.py")
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(arm.model_code, encoding="utf-8")
            if resume_from is None:
                model = model.at(source)
            else:
                commands.append(SwapModel(model=model.at(source), round=self._round, carry_weights=arm.carry_weights))
        if arm.hparam_changes or (arm.model_code is not None and not commands):
            commands.append(SetHParams(changes=dict(arm.hparam_changes), round=self._round))
        return model, tuple(commands)

    def run_arm(self, arm: Arm, budget: TrialBudget, keep_going: KeepGoing) -> ArmResult:
        """One arm from the fork, told to `keep_going` at each scored point (a tune's trial): no
        incumbent beside it, no ranking; its end checkpoint stays for the caller to keep or delete."""
        return self._run_arm(arm, budget, self._fork, keep_going=keep_going)

    def _run_arm(
        self,
        arm: Arm,
        budget: TrialBudget,
        resume_from: Path | None,
        *,
        reseed: bool = False,
        folder_name: str | None = None,
        keep_going: KeepGoing | None = None,
    ) -> ArmResult:
        folder = self._folder / (folder_name or arm.name)
        model, changes = self._arm_spec(arm, folder, resume_from)
        plan = TrialPlan(
            arm=arm.name,
            steps=budget.steps,
            evaluate_at=budget.evaluate_at,
            val_samples=self._val_samples,
            changes=changes,
            reseed=self._base.train.seed + SECOND_SEED_OFFSET if reseed else None,
        )
        # Resumed, the checkpoint holds the run's hyperparameters: the start's overrides must not apply again.
        train = self._base.train if resume_from is None else self._base.train.model_copy(update={"hparams": {}})
        # A trial is one walled process whatever the run's ranks: the batch size is global, so it
        # trains on the same batches; walls cannot hold ranks yet (`copilot/training/ranks.py`).
        train = train.model_copy(update={"launch": LaunchSettings()})
        spec = self._base.model_copy(
            # Every arm behind the walls: a candidate runs code the user did not write, and the
            # unchanged run beside it pays the same costs, so the comparison stays paired.
            update={"run_folder": folder, "model": model, "resume_from": resume_from, "train": train, "trial": plan, "walled": True}
        )
        collected = self._collect(spec, keep_going)
        return self._scored(arm.name, arm.summary, collected, folder)

    def _collect(self, spec: TrainerSpec, keep_going: KeepGoing | None) -> _Collected:
        collected = _Collected()
        if self._cancelled.is_set():
            collected.cancelled = True
            return collected
        started = time.monotonic()
        trainer = TrainerProcess(spec)
        with self._lock:
            self._current = trainer
        trainer.start()
        deadline = started + self._settings.arm_timeout_s
        try:
            finished = False
            while not finished:
                if self._cancelled.is_set() or time.monotonic() > deadline:
                    collected.cancelled = self._cancelled.is_set()
                    if not collected.cancelled:
                        collected.error = TrainerError(
                            kind="killed", message=f"the trial took longer than {self._settings.arm_timeout_s:g} s"
                        )
                    trainer.kill()
                    break
                for event in trainer.poll(timeout=POLL_S):
                    if isinstance(event, TrialOutputs):
                        point = self._score(event, collected)
                        if point is not None and keep_going is not None and not keep_going(point):
                            collected.pruned = finished = True
                            trainer.kill()
                            break
                    elif isinstance(event, CheckpointWritten):
                        collected.checkpoint = event.path
                    elif isinstance(event, TrainerError) and collected.error is None:
                        collected.error = event
                    elif isinstance(event, Finished):
                        finished = True
        finally:
            trainer.stop(5.0, checkpoint=False)
            with self._lock:
                self._current = None
        collected.wall_time_s = time.monotonic() - started
        return collected

    def _score(self, outputs: TrialOutputs, collected: _Collected) -> TrialPoint | None:
        """Score outputs as they arrive (a pruner decides on them while the arm trains); None once scoring failed."""
        if collected.scoring_problem is not None:
            return None
        try:
            score = score_outputs(Path(outputs.path), self._validation_targets(), self._task)
        except CopilotError as exc:
            collected.scoring_problem = exc.message
            return None
        point = TrialPoint(trial_step=outputs.trial_step, val_loss=score.val_loss, val_accuracy=score.val_accuracy)
        collected.points.append(point)
        return point

    def _scored(self, name: str, summary: str, collected: _Collected, folder: Path) -> ArmResult:
        common: dict[str, Any] = {
            "arm": name, "summary": summary, "wall_time_s": round(collected.wall_time_s, 2),
            "folders": [str(folder)], "checkpoint": collected.checkpoint,
        }  # fmt: skip
        if collected.cancelled:
            return ArmResult(status="cancelled", outcome="failed", message="cancelled", **common)
        if collected.error is not None:
            status = "diverged" if collected.error.kind == "nonfinite" else "failed"
            return ArmResult(status=status, outcome="failed", message=collected.error.message, **common)
        points = collected.points
        if collected.scoring_problem is not None:
            return ArmResult(status="failed", outcome="failed", message=collected.scoring_problem, **common)
        if collected.pruned:
            steps = points[-1].trial_step
            return ArmResult(status="pruned", outcome="failed", message=f"pruned at trial step {steps}", points=points, steps=steps, **common)
        if not points:
            return ArmResult(status="failed", outcome="failed", message="the trial wrote no outputs", **common)
        if any(point.val_loss != point.val_loss or point.val_loss == float("inf") for point in points):
            return ArmResult(status="diverged", outcome="failed", message="non-finite validation loss", points=points, **common)
        return ArmResult(status="measured", points=points, steps=max(p.trial_step for p in points), **common)

    def _extend(self, result: ArmResult, budget: TrialBudget) -> ArmResult:
        """Train an arm for another budget from its own end state; its points continue its trial steps."""
        if result.status != "measured" or result.checkpoint is None:
            return result
        more = self._run_arm(Arm(result.arm, result.summary), budget, Path(result.checkpoint), folder_name=f"{result.arm}-extended")
        shifted = [point.model_copy(update={"trial_step": point.trial_step + result.steps}) for point in more.points]
        return more.model_copy(
            update={
                "points": [*result.points, *shifted],
                "steps": result.steps + more.steps,
                "wall_time_s": round(result.wall_time_s + more.wall_time_s, 2),
                "folders": [*result.folders, *more.folders],
            }
        )

    def _validation_targets(self) -> Any:
        if self._targets is None:
            self._targets = validation_targets(self._base.data, self._val_samples)
        return self._targets

    # ------------------------------------------------------------------ the report

    def _report(
        self, arms: list[ArmResult], budget: TrialBudget, noise: Noise | None, ranking: Ranking, extended: bool, started: float
    ) -> TrialReport:
        winner = ranking.winner
        outcomes = []
        for arm in arms:
            outcome = (
                "incumbent" if arm.arm in (INCUMBENT, SECOND_SEED)
                else "winner" if arm.arm == winner
                else "failed" if arm.status != "measured"
                else "no gain"
            )  # fmt: skip
            kept = arm.checkpoint if arm.arm == winner else None
            if not kept:
                for folder in arm.folders:
                    shutil.rmtree(RunFolder(Path(folder)).checkpoints, ignore_errors=True)
            outcomes.append(arm.model_copy(update={"outcome": outcome, "checkpoint": kept}))
        return TrialReport(
            status="trialled",
            reason=ranking.reason,
            budget_steps=budget.steps,
            expected_s=budget.expected_s(len(arms)),
            noise=noise.value if noise is not None else None,
            noise_method=noise.method if noise is not None else "",
            min_gain=self._settings.min_gain,
            extended=extended,
            arms=outcomes,
            winner=winner,
            won_by=ranking.won_by,
            wall_time_s=round(time.monotonic() - started, 2),
            trial_steps=sum(arm.steps for arm in arms),
        )
