"""`copilot train` end to end through `cli.main`: exit 0 with a table, resume, and exit 2 / 1 with
an error and a hint instead of a traceback."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from copilot.cli import main
from copilot.events import EpochSummary, RunStarted, parse_event
from copilot.training.launcher import TrainerSpec
from tests.training.conftest import CONVENTIONS, TINY_CNN

TINY_CONFIG = """
[data]
train_size = 48
val_size = 16

[train]
log_every = 1
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder with a tiny copilot.toml and a model file, as a user would have."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned trainer's torch threads
    (tmp_path / "copilot.toml").write_text(TINY_CONFIG, encoding="utf-8")
    (tmp_path / "tiny_cnn.py").write_text(textwrap.dedent(TINY_CNN), encoding="utf-8")
    return tmp_path


def metrics(run: Path) -> list:
    return [parse_event(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_train_then_resume(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "tiny_cnn.py", "--device", "cpu", "--epochs", "1", "--run-name", "first"]) == 0
    out = capsys.readouterr().out
    assert "TinyCNN" in out and "48 training samples" in out and "epoch 1, loss " in out and "worst module" in out
    run = project / ".copilot" / "runs" / "first"
    session = TrainerSpec.model_validate_json((run / "session.json").read_text())
    assert session.train.hparams == {"epochs": 1} and session.data.train_size == 48

    assert main(["train", "--resume", "first", "--epochs", "2"]) == 0
    events = metrics(run)
    assert [e.resumed_from_epoch for e in events if isinstance(e, RunStarted)] == [None, 1]
    assert [e.epoch for e in events if isinstance(e, EpochSummary)] == [1, 2]


def test_resume_by_prefix_looks_in_the_runs_dir_the_settings_name(project: Path) -> None:
    (project / "copilot.toml").write_text('runs_dir = "elsewhere"\n' + TINY_CONFIG, encoding="utf-8")
    assert main(["train", "tiny_cnn.py", "--device", "cpu", "--epochs", "1", "--run-name", "first-run"]) == 0
    assert main(["train", "--resume", "first", "--epochs", "2"]) == 0
    events = metrics(project / "elsewhere" / "first-run")
    assert [e.epoch for e in events if isinstance(e, EpochSummary)] == [1, 2]


def test_a_runs_dir_that_cannot_be_created_is_a_user_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "not-a-folder").write_text("", encoding="utf-8")
    (project / "copilot.toml").write_text('runs_dir = "not-a-folder"\n' + TINY_CONFIG, encoding="utf-8")
    assert main(["train", "tiny_cnn.py", "--device", "cpu", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "error: cannot create the run folder" in err and "Not a directory" in err
    assert "hint: check that the folder can be written" in err and "internal error" not in err


def test_resuming_a_run_with_a_damaged_checkpoint_or_session_is_a_user_error(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "tiny_cnn.py", "--device", "cpu", "--epochs", "1", "--run-name", "first"]) == 0
    run = project / ".copilot" / "runs" / "first"
    for checkpoint in (run / "checkpoints").iterdir():
        checkpoint.write_bytes(b"not a checkpoint")
    assert main(["train", "--resume", "first"]) == 2
    err = capsys.readouterr().err
    assert "error: cannot read checkpoint" in err and "hint: delete it" in err

    (run / "session.json").write_text("{{{", encoding="utf-8")
    assert main(["train", "--resume", "first"]) == 2
    err = capsys.readouterr().err
    assert "session.json is damaged" in err and "internal error" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "nothere.py"], "error: model file not found: nothere.py"),
        (["train", "."], "error: . is a folder, not a model file"),
        (["train", "copilot.toml"], "error: copilot.toml is not a Python file"),
        (["train", "tiny_cnn.py", "--model-arg", "width"], "error: --model-arg 'width' is not KEY=VALUE"),
        (["train", "tiny_cnn.py", "--resume", "first"], "error: give either MODEL or --resume RUN, not both"),
        (["train", "--resume", "never"], "error: no run 'never'"),
        (["train"], "error: no model given"),
    ],
)
def test_user_errors_found_before_training_exit_2(project: Path, capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "hint:" in err and "Traceback" not in err
    assert not (project / ".copilot").exists()  # no run folder for a run that never started


def test_a_model_the_trainer_cannot_load_exits_2(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "bad.py").write_text("import torch\n\nclass Net(torch.nn.Module:\n    pass\n", encoding="utf-8")
    assert main(["train", "bad.py", "--device", "cpu", "--run-name", "bad"]) == 2
    out, err = capsys.readouterr()
    assert "error: syntax error in bad.py:3" in err and "hint: fix that line" in err
    assert "Traceback" not in err
    assert "syntax error" not in out and "epoch" not in out, "the error once, on stderr; no empty epoch table"


def test_a_trainer_that_dies_exits_1(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    suicidal = TINY_CNN.replace(
        "    def forward(self, x):\n",
        "    def forward(self, x):\n        if self.training:\n            import os, signal\n            os.kill(os.getpid(), signal.SIGKILL)\n",
    )
    (project / "dies.py").write_text(textwrap.dedent(suicidal), encoding="utf-8")
    assert main(["train", "dies.py", "--device", "cpu", "--run-name", "dies"]) == 1
    err = capsys.readouterr().err
    assert "error: the trainer process was killed by SIGKILL" in err and "hint:" in err


def test_a_nanogpt_style_file_trains_with_config_arguments_and_the_header_says_how(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (project / "model.py").write_text((CONVENTIONS / "nanogpt_style.py").read_text(), encoding="utf-8")
    sizes = ["--model-arg", "config.n_layer=1", "--model-arg", "config.n_head=2", "--model-arg", "config.n_embd=16"]
    argv = ["train", "model.py", "--dataset", "text", "--device", "cpu", "--epochs", "1", "--batch-size", "16", *sizes]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())  # as one line, whatever the console's width
    assert "outputs: (logits, loss) tuple, targets passed to forward" in out
    assert "configure_optimizers() is ignored: the optimizer comes from HPARAMS and the flags" in out
    assert "epoch 1, loss " in out


def test_two_ranks_from_the_command_line_and_a_resume_on_one(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "tiny_cnn.py", "--device", "cpu", "--epochs", "1", "--nproc-per-node", "2", "--run-name", "two"]) == 0
    run = project / ".copilot" / "runs" / "two"
    assert TrainerSpec.model_validate_json((run / "session.json").read_text()).train.launch.nproc_per_node == 2
    assert main(["train", "--resume", "two", "--epochs", "2", "--nproc-per-node", "1"]) == 0  # checkpoints load on any number
    events = metrics(run)
    assert [(e.world_size, e.resumed_from_epoch) for e in events if isinstance(e, RunStarted)] == [(2, None), (1, 1)]
    assert [e.epoch for e in events if isinstance(e, EpochSummary)] == [1, 2]


def test_a_rank_count_below_one_is_a_setting_error(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "tiny_cnn.py", "--nproc-per-node", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: setting 'train.launch.nproc_per_node" in err and "hint:" in err and "Traceback" not in err
