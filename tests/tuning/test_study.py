"""The study inside a real session: enqueued trials first, pruning on the reported evaluations, and a
killed tune resumed with its stale trial failed. Real trainers on tiny shapes data, real Optuna storage."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from copilot.config import Settings
from copilot.events import Finished
from copilot.session.controller import Session
from copilot.tuning.study import ARM_ATTR, ROLE_ATTR, TuneRequest, saved_plan, storage_url, study_name
from tests.session.conftest import TINY_DATA, run_until

pytestmark = pytest.mark.timeout(600)

HOPELESS_SPACE = """
[optimizer]
choices = ["SGD"]
[lr]
low = 0.2
high = 0.4
[momentum]
low = 0.0
high = 0.01
[schedule]
choices = ["constant"]
"""


def settings_for(project: Path, **hparams: object) -> Settings:
    """One epoch: the run ends, so every tune forks from the same checkpoint (the end of epoch 1)."""
    return Settings(
        runs_dir=project / ".copilot" / "runs",
        data=TINY_DATA,
        train={"device": "cpu", "log_every": 1, "hparams": {"batch_size": 16, "epochs": 1, **hparams}},
        trials={"enabled": False, "evaluations": 4},
    )


def started(project: Path, settings: Settings, name: str) -> Session:
    """A session on the flat model that has trained its one epoch and ended (a checkpoint to fork from)."""
    session = Session.start(settings, str(project / "flat.py"), run_name=name)
    run_until(session, lambda seen: any(isinstance(event, Finished) for event in seen))
    return session


def study_of(session: Session) -> optuna.Study:
    return optuna.load_study(study_name=study_name(session.round + 1), storage=storage_url(session.run))


def test_the_current_values_and_the_advisors_guess_come_first_and_hopeless_trials_are_pruned(slow_project: Path) -> None:
    # The run barely moves (SGD at 1e-4); the space holds only rates that throw the weights about.
    (slow_project / "hopeless.toml").write_text(HOPELESS_SPACE)
    session = started(slow_project, settings_for(slow_project), "pruned")
    seen: list[int] = []
    try:
        result = session.tune(
            TuneRequest(trials=4, sampler="tpe", trial_steps=6, space_file=slow_project / "hopeless.toml"),
            on_trial=lambda trial, _plan: seen.append(trial.number),
        )
        study = study_of(session)
    finally:
        session.stop()

    assert seen == [0, 1, 2, 3]
    assert [(trial.number, trial.role) for trial in result.trials] == [(0, "current"), (1, "advisor"), (2, "sampler"), (3, "sampler")]
    assert result.trials[0].hparams == result.plan.start and result.plan.advisor is not None
    assert result.trials[1].hparams.lr == result.plan.advisor.lr != result.plan.current.lr
    frozen = study.trials
    assert [frozen[n].user_attrs[ROLE_ATTR] for n in (0, 1)] == ["current", "advisor"]
    # The enqueued trials ran their budget and reported every evaluation; the sampled ones trailed and were stopped early.
    for number in (0, 1):
        assert frozen[number].state == TrialState.COMPLETE and sorted(frozen[number].intermediate_values) == [0, 1, 2, 3]
    for number in (2, 3):
        assert frozen[number].state == TrialState.PRUNED, frozen[number].intermediate_values
        assert 2 <= len(frozen[number].intermediate_values) < 4
        assert result.trials[number].state == "pruned" and result.trials[number].hparams.lr >= 0.2
    # Only the best trial's end state is kept, for the run to continue from.
    best = result.best
    assert best is not None and best.number in (0, 1)
    kept = {path.parts[-3] for path in (session.run.trials / result.study).rglob("checkpoints/*.pt")}
    assert kept == {"incumbent" if best.number == 0 else "t1"}


def test_a_killed_tune_resumes_its_study_and_fails_the_trial_it_left_running(slow_project: Path) -> None:
    session = started(slow_project, settings_for(slow_project), "resumed")
    try:
        first = session.tune(TuneRequest(trials=1, trial_steps=6, sampler="random"))
        assert [trial.role for trial in first.trials] == ["current"]
        # A tune killed during its next trial leaves it RUNNING in the storage: the advisor's guess, popped from the queue.
        killed = study_of(session).ask()
        assert killed.user_attrs[ROLE_ATTR] == "advisor"
        plan = saved_plan(session.run, first.study)

        resumed = session.tune(TuneRequest(trials=3, trial_steps=50, sampler="tpe"))
        study = study_of(session)
    finally:
        session.stop()

    assert study.trials[killed.number].state == TrialState.FAIL and ARM_ATTR not in study.trials[killed.number].user_attrs
    # The study goes on as it was planned (its fork, budget and sampler), not as the second call asked; the guess runs again.
    assert resumed.plan == plan.model_copy(update={"trials": 3}) and resumed.plan.sampler == "random"
    assert [(trial.number, trial.role) for trial in resumed.trials] == [(0, "current"), (2, "advisor"), (3, "sampler")]
    assert resumed.trials[0] == first.trials[0]  # trial 0 was not trained again
