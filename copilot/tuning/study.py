"""The study: one Optuna study per round of a run, in the run's `tune.sqlite`, driven by ask/tell.

One process owns the study and asks for one trial at a time (Optuna's parallel workers on
one SQLite study misbehave with enqueued trials); each trial is an arm of the advisor's
trial runner: a trainer forked from the checkpoint the study recorded, the run's data
order, scored here on the validation samples (the trial never sees a label). The
objective is the validation loss at the end of the budget, which is counted in training
samples, so a trial at another batch size trains as many samples, not as many steps.
Every trial reports its validation loss at each of the plan's evaluations (three at
least) and Optuna's `MedianPruner` stops one that trails the median of the finished
trials at the same evaluation; the trainer is killed there.

The run's current hyperparameters are trial 0 and the advisor's guess trial 1 (enqueued,
trained exactly as they are, recorded at their nearest point of the space), so the
sampler's own trials compete with both on the same budget. A study is resumed
by name: its plan (fork, budget, space, enqueued points) is stored with it, trials a
killed tune left RUNNING are marked FAIL, and enqueued points that never finished are
enqueued again. Only the best trial's end checkpoint is kept: the run continues from it
when its round is accepted. Writes nothing but the study and its trials' folders.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from copilot.advisor.schemas import ArmResult, HParamChange, HParamProposal, TrialPoint, TrialReport
from copilot.advisor.trials.budget import TrialBudget, evaluation_points
from copilot.advisor.trials.ranking import noise_of, rank
from copilot.advisor.trials.runner import INCUMBENT, Arm, TrialRunner
from copilot.config import SamplerName, TrialSettings
from copilot.events import HParams, hparam_differences
from copilot.numbers import significant
from copilot.run_folder import RunFolder
from copilot.tuning.space import Choices, SearchSpace, default_space, load_space

if TYPE_CHECKING:
    import optuna

Role = Literal["current", "advisor", "sampler"]
PLAN_ATTR = "copilot_plan"  # the study's user attribute holding its `TunePlan`
ROLE_ATTR = "copilot_role"  # a trial's: who put it there
ARM_ATTR = "copilot_arm"  # a trial's: its `ArmResult`, once it ran to a verdict
# The median of the two enqueued trials is already a bar: prune from the third trial on,
# never at a trial's first evaluation (everything trails right after a change).
PRUNER_STARTUP_TRIALS = 2
PRUNER_WARMUP_EVALUATIONS = 1


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TunePlan(Frozen):
    """What a study measures, fixed when it starts and stored with it so a resumed tune is the same study."""

    trials: int = Field(ge=1)  # trials that run to a verdict (complete, pruned or failed)
    samples: int = Field(ge=1)  # training samples each trial trains after the fork
    evaluations: int = Field(ge=3)
    sampler: SamplerName
    seed: int
    space: SearchSpace
    fork: str | None  # the checkpoint every trial forks from (None: the model file's fresh weights)
    fork_step: int
    current: HParams  # the run's hyperparameters at the fork: trial 0
    advisor: HParams | None = None  # the advisor's guess: trial 1
    # The epoch budget every trial trains under: the run's, or more when the run's ends before a
    # trial would (a run that ended is tuned too; its trainer stops at its budget).
    epochs: int

    @property
    def start(self) -> HParams:
        """The run's hyperparameters under the trials' epoch budget: what every trial's values are told against."""
        return self.current.model_copy(update={"epochs": self.epochs})

    def steps_for(self, batch_size: int) -> int:
        """Optimizer steps that train `samples` samples at `batch_size`; never fewer than the evaluations."""
        return max(self.evaluations, math.ceil(self.samples / batch_size))


class TunedTrial(Frozen):
    """One trial of the study as the table shows it."""

    number: int
    role: Role
    state: Literal["complete", "pruned", "failed"]
    hparams: HParams  # what it trained with
    val_loss: float | None
    val_accuracy: float | None
    wall_time_s: float
    message: str = ""


class TuneResult(Frozen):
    """The study's outcome: every trial, and the best one as a proposal against the current values."""

    study: str
    storage: Path
    plan: TunePlan
    trials: list[TunedTrial]
    proposal: HParamProposal | None  # None: no trial beat the current values' loss, or none finished
    reason: str  # one line: what the ranking decided
    wall_time_s: float

    @property
    def best(self) -> TunedTrial | None:
        complete = [trial for trial in self.trials if trial.state == "complete" and trial.val_loss is not None]
        return min(complete, key=lambda trial: trial.val_loss) if complete else None  # type: ignore[arg-type, return-value]

    def of_role(self, role: Role) -> TunedTrial | None:
        return next((trial for trial in self.trials if trial.role == role), None)


class TuneRequest(Frozen):
    """What the user asked for (`copilot tune` flags over the `[tune]` settings); a new study turns it into its `TunePlan`."""

    trials: int = Field(ge=1)
    sampler: SamplerName
    trial_steps: int | None = Field(None, ge=1)  # at the run's batch size; the budget is the samples they train
    budget_epochs: float | None = Field(None, gt=0)  # passes over the training set
    space_file: Path | None = None


def new_plan(
    request: TuneRequest, *, current: HParams, advisor: HParams | None, fork: Path | None, fork_step: int,
    train_size: int, seed: int, settings: TrialSettings,
) -> TunePlan:  # fmt: skip
    """The plan of a new study: the budget in samples, the space (the default one, or as the file narrows or widens it)."""
    if request.budget_epochs is not None:
        samples = max(1, round(request.budget_epochs * train_size))
    else:
        samples = (request.trial_steps or settings.min_steps) * current.batch_size
    # Samples the run has seen at the fork, counted at its batch size now (a guess when it changed), plus one trial.
    epochs = max(current.epochs, math.ceil((fork_step * current.batch_size + samples) / train_size) + 1)
    base = default_space(current, train_size)
    space = load_space(request.space_file, base) if request.space_file is not None else base
    return TunePlan(
        trials=request.trials, samples=samples, evaluations=settings.evaluations, sampler=request.sampler, seed=seed,
        space=space,
        fork=str(fork) if fork is not None else None, fork_step=fork_step, current=current, advisor=advisor, epochs=epochs,
    )  # fmt: skip


def storage_url(run: RunFolder) -> str:
    """What Optuna (and `optuna-dashboard`) open: the run's tune.sqlite."""
    return f"sqlite:///{run.tune_db}"


def study_name(round_number: int) -> str:
    """The study of the round a tune's result would become: one study per round, resumed by name."""
    return f"tune-r{round_number}"


def saved_plan(run: RunFolder, name: str) -> TunePlan | None:
    """The plan of the study `name` in the run's tune.sqlite, when one was started."""
    import optuna

    if not run.tune_db.exists():
        return None
    try:
        study = optuna.load_study(study_name=name, storage=storage_url(run))
    except KeyError:
        return None
    stored = study.user_attrs.get(PLAN_ATTR)
    return TunePlan.model_validate(stored) if stored is not None else None


def sampler_for(plan: TunePlan) -> optuna.samplers.BaseSampler:
    """The plan's sampler, seeded: the same study resumes with the same random stream."""
    import optuna

    if plan.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=plan.seed)
    if plan.sampler == "cmaes":
        # CMA-ES samples the continuous dimensions; the choices go to its independent sampler, as documented.
        return optuna.samplers.CmaEsSampler(seed=plan.seed, warn_independent_sampling=False)
    return optuna.samplers.RandomSampler(seed=plan.seed)


def open_study(run: RunFolder, name: str, plan: TunePlan) -> optuna.Study:
    """The study `name` (created with `plan` when new), stale trials failed, enqueued points there."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=name,
        storage=storage_url(run),
        direction="minimize",
        sampler=sampler_for(plan),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=PRUNER_WARMUP_EVALUATIONS),
        load_if_exists=True,
    )
    if PLAN_ATTR not in study.user_attrs:
        study.set_user_attr(PLAN_ATTR, plan.model_dump(mode="json"))
    fail_stale_trials(study)
    _enqueue_missing(study, plan)
    return study


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Mark FAIL the trials a killed tune left RUNNING (only one process drives a study: none is live)."""
    from optuna.trial import TrialState

    stale = [trial.number for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for number in stale:
        study.tell(number, state=TrialState.FAIL)
    return stale


def _enqueue_missing(study: optuna.Study, plan: TunePlan) -> None:
    """Enqueue the current values and the advisor's guess unless a trial of theirs ran or waits."""
    from optuna.trial import TrialState

    covered = {
        trial.user_attrs.get(ROLE_ATTR)
        for trial in study.get_trials(deepcopy=False)
        if trial.state == TrialState.WAITING or ARM_ATTR in trial.user_attrs
    }
    for role, point in (("current", plan.current), ("advisor", plan.advisor)):
        if point is not None and role not in covered:
            study.enqueue_trial(plan.space.nearest(point), user_attrs={ROLE_ATTR: role})


def finished_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Trials that ran to a verdict (a stale or cancelled one did not)."""
    return [trial for trial in study.get_trials(deepcopy=False) if ARM_ATTR in trial.user_attrs]


class Tuner:
    """Drives one study to `plan.trials` finished trials, one trial at a time, from this thread."""

    def __init__(self, run: RunFolder, name: str, plan: TunePlan, runner: TrialRunner, settings: TrialSettings) -> None:
        self._run = run
        self._name = name
        self._plan = plan
        self._runner = runner
        self._settings = settings
        self._stopped = False

    def stop(self) -> None:
        """From any thread: the trial in flight is killed and none starts after it."""
        self._stopped = True
        self._runner.cancel()

    def run(self, on_trial: Callable[[TunedTrial, TunePlan], None] | None = None) -> TuneResult:
        started = time.monotonic()
        study = open_study(self._run, self._name, self._plan)
        while len(finished_trials(study)) < self._plan.trials and not self._stopped:
            tuned = self._one_trial(study)
            if tuned is None:
                break
            self._keep_only_the_best_checkpoint(study)
            if on_trial is not None:
                on_trial(tuned, self._plan)
        return self.result(study, time.monotonic() - started)

    def _one_trial(self, study: optuna.Study) -> TunedTrial | None:
        from optuna.trial import TrialState

        trial = study.ask()
        role: Role = trial.user_attrs.get(ROLE_ATTR, "sampler")
        hparams = _trained(role, suggest(trial, self._plan.space), self._plan)
        current = self._plan.current.model_dump()
        changes = {key: value for key, value in hparams.model_dump().items() if current[key] != value}
        name = INCUMBENT if role == "current" else f"t{trial.number}"
        steps = self._plan.steps_for(hparams.batch_size)
        budget = TrialBudget(steps=steps, evaluate_at=evaluation_points(steps, self._plan.evaluations), step_time_s=None)
        evaluations = iter(range(len(budget.evaluate_at)))

        def keep_going(point: TrialPoint) -> bool:
            # The evaluation's index, not its step: at another batch size the same share of samples is another step.
            trial.report(point.val_loss, next(evaluations))
            return not trial.should_prune()

        arm = self._runner.run_arm(Arm(name, describe(hparams, self._plan.start), hparam_changes=changes), budget, keep_going)
        if arm.status == "cancelled":
            study.tell(trial, state=TrialState.FAIL)
            return None
        trial.set_user_attr(ARM_ATTR, arm.model_dump(mode="json"))
        if arm.status == "measured" and arm.final is not None:
            study.tell(trial, arm.final.val_loss)
        else:
            study.tell(trial, state=TrialState.PRUNED if arm.status == "pruned" else TrialState.FAIL)
        return _tuned(study.trials[trial.number], self._plan)

    def _keep_only_the_best_checkpoint(self, study: optuna.Study) -> None:
        best = _best_number(study)
        for trial in finished_trials(study):
            if trial.number != best:
                for folder in ArmResult.model_validate(trial.user_attrs[ARM_ATTR]).folders:
                    shutil.rmtree(RunFolder(Path(folder)).checkpoints, ignore_errors=True)

    def result(self, study: optuna.Study, wall_time_s: float) -> TuneResult:
        trials = [_tuned(trial, self._plan) for trial in finished_trials(study)]
        common = {"study": self._name, "storage": self._run.tune_db, "plan": self._plan, "trials": trials, "wall_time_s": round(wall_time_s, 2)}
        arms = {trial.number: ArmResult.model_validate(trial.user_attrs[ARM_ATTR]) for trial in finished_trials(study)}
        incumbent = next((arms[t.number] for t in trials if t.role == "current"), None)
        best = _best_number(study)
        if best is None or incumbent is None:
            return TuneResult(proposal=None, reason="the current values' trial or every other trial failed", **common)
        winner = arms[best]
        if winner.arm == INCUMBENT:
            return TuneResult(proposal=None, reason="no trial lowered the validation loss of the current values", **common)
        noise = noise_of(incumbent)
        ranking = rank(incumbent, [winner], noise, self._settings.min_gain)
        outcome = "winner" if ranking.winner == winner.arm else "no gain"
        report = TrialReport(
            status="trialled", reason=ranking.reason, budget_steps=winner.steps, noise=noise.value if noise else None,
            noise_method=noise.method if noise else "", min_gain=self._settings.min_gain,
            arms=[incumbent.model_copy(update={"outcome": "incumbent", "checkpoint": None}), winner.model_copy(update={"outcome": outcome})],
            winner=ranking.winner, wall_time_s=round(wall_time_s, 2), trial_steps=sum(arm.steps for arm in arms.values()),
        )  # fmt: skip
        tuned = next(trial for trial in trials if trial.number == best)
        differences = {key: value for key, value in tuned.hparams.model_dump().items() if getattr(self._plan.current, key) != value}
        if not differences:  # a space narrowed to the current values
            return TuneResult(proposal=None, reason=f"the best trial, t{best}, has the current values", **common)
        change = HParamChange(**differences)
        proposal = HParamProposal(
            summary=f"tuned ({self._plan.sampler}, trial {best}): {describe(tuned.hparams, self._plan.start)}",
            rationale=(
                f"Best of {len(trials)} trials of an Optuna study ({self._plan.sampler}), each trained {self._plan.samples} samples "
                f"from the same checkpoint in the same data order; the current values were trial 0"
                + (", the advisor's guess trial 1." if self._plan.advisor is not None else ".")
            ),
            change=change,
            before=self._plan.current,
            after=tuned.hparams,
            trials=report,
        )
        return TuneResult(proposal=proposal, reason=ranking.reason, **common)


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, float | int | str | None]:
    """The trial's point: each dimension asked of the trial (an enqueued trial answers with its fixed values)."""
    values: dict[str, float | int | str | None] = {}
    for name, dimension in space.dimensions.items():
        if isinstance(dimension, Choices):
            values[name] = trial.suggest_categorical(name, list(dimension.choices))  # type: ignore[arg-type]
        else:
            values[name] = trial.suggest_float(name, dimension.low, dimension.high, log=dimension.log)
    return values


def describe(hparams: HParams, current: HParams) -> str:
    """`lr 0.5 -> 0.02, optimizer SGD -> Adam`, or `unchanged`."""
    return hparam_differences(current, hparams, significant) or "unchanged"


def _trained(role: Role, values: dict[str, float | int | str | None], plan: TunePlan) -> HParams:
    """What a trial trains with: the enqueued points exactly as they are (the study records them at their
    nearest point of the space, which may only approach them), a sampled one the sampler's values."""
    if role == "current":
        return plan.start
    if role == "advisor" and plan.advisor is not None:
        return plan.advisor.model_copy(update={"epochs": max(plan.advisor.epochs, plan.epochs)})
    return HParams.model_validate({**plan.start.model_dump(), **values})


def _best_number(study: optuna.Study) -> int | None:
    from optuna.trial import TrialState

    complete = [trial for trial in finished_trials(study) if trial.state == TrialState.COMPLETE and trial.value is not None]
    return min(complete, key=lambda trial: trial.value).number if complete else None  # type: ignore[arg-type, return-value]


def _tuned(trial: optuna.trial.FrozenTrial, plan: TunePlan) -> TunedTrial:
    from optuna.trial import TrialState

    arm = ArmResult.model_validate(trial.user_attrs[ARM_ATTR])
    role: Role = trial.user_attrs.get(ROLE_ATTR, "sampler")
    hparams = _trained(role, dict(trial.params), plan)
    state = "complete" if trial.state == TrialState.COMPLETE else "pruned" if trial.state == TrialState.PRUNED else "failed"
    final = arm.final
    return TunedTrial(
        number=trial.number, role=role, state=state, hparams=hparams,
        val_loss=final.val_loss if final else None, val_accuracy=final.val_accuracy if final else None,
        wall_time_s=arm.wall_time_s, message=arm.message,
    )  # fmt: skip

