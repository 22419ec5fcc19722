"""`copilot tune`: user errors in one line, and a headless tune that commits a `tune` round to the
experiment branch with the study in its git note. Real runs through `copilot.cli.main`, real git."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from copilot.cli import main
from copilot.history import ExperimentHistory
from tests.history.repos import git
from tests.tuning.conftest import git_home, project, slow_project  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(600)

# Adam at rates that learn the shapes within the budget; the rest fixed, so four trials find one.
LEARNING_SPACE = """
[optimizer]
choices = ["Adam"]
[lr]
low = 0.004
high = 0.02
[batch_size]
choices = [16]
[schedule]
choices = ["constant"]
[grad_clip]
choices = ["none"]
"""


@pytest.fixture
def slow_run(slow_project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: F811
    """A run of the slow model (SGD at 1e-4) that trained its two epochs and ended. A few hundred
    samples: on the session tests' 64 the small CNN overfits before its validation loss moves."""
    monkeypatch.chdir(slow_project)
    monkeypatch.setenv("COPILOT_DATA__TRAIN_SIZE", "256")
    monkeypatch.setenv("COPILOT_DATA__VAL_SIZE", "64")
    monkeypatch.setenv("COPILOT_TRAIN__DEVICE", "cpu")
    monkeypatch.setenv("COPILOT_TRIALS__ENABLED", "false")
    assert main(["run", "slow.py", "--headless", "--max-rounds", "0", "--epochs", "2", "--run-name", "slow"]) == 0
    return slow_project


def test_tune_refuses_bad_flags_and_bad_space_files_in_one_line(slow_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["tune", "slow", "--auto-accept", "validated"]) == 2
    assert "needs --headless" in capsys.readouterr().err
    assert main(["tune", "slow", "--headless", "--space", "missing.toml"]) == 2
    assert "space file not found: missing.toml" in capsys.readouterr().err
    (slow_run / "bad.toml").write_text("[lr]\nlow = 1\nhigh = 0.1\n")
    assert main(["tune", "slow", "--headless", "--space", "bad.toml"]) == 2
    err = capsys.readouterr().err
    assert "low 1 is not below high 0.1" in err and "hint:" in err and "Traceback" not in err
    assert main(["tune", "slow", "--trials", "0", "--headless"]) == 2
    assert "--trials 0 is not positive" in capsys.readouterr().err


def test_headless_auto_accept_validated_commits_a_tune_round_with_the_study_in_its_note(
    slow_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (slow_run / "space.toml").write_text(LEARNING_SPACE)
    capsys.readouterr()
    code = main(["tune", "slow", "--headless", "--auto-accept", "validated", "--trials", "4", "--budget-epochs", "4", "--space", "space.toml"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "t0 current values" in out and "t1 advisor's guess" in out and "best so far" in out  # the table and the chart
    assert "auto-accept (validated): accept" in out and "r1 committed as" in out, out

    history = ExperimentHistory.open(slow_run, "slow")
    rounds = history.rounds()
    assert [info.kind for info in rounds] == ["baseline", "tune"]
    note = json.loads(git(slow_run, "notes", "--ref", "copilot", "show", history.branch))
    tune = note["tune"]
    assert tune["study"] == "tune-r1" and tune["trials"] == 4 and tune["best_trial"] != 0
    assert tune["best_val_loss"] < tune["current_val_loss"] and "lr 0.0001 -> " in tune["changes"]
    assert len(tune["table"]) == 4 and tune["table"][1].startswith("t1 advisor's guess")
    assert note["trial"]["val_loss"] == tune["best_val_loss"]
    # The round's hyperparameters file holds the best trial's values; optuna-dashboard's storage is the run's tune.sqlite.
    message = git(slow_run, "log", "-1", "--format=%B", history.branch)
    assert "Copilot-Kind: tune" in message and "Copilot-Advisor: optuna:tpe" in message
    assert (slow_run / ".copilot" / "runs" / "slow" / "tune.sqlite").is_file()
