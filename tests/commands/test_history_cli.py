"""`copilot log | diff | show | rollback | undo | redo` through the real CLI entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from copilot import cli
from copilot.history import ExperimentHistory, RoundInfo
from tests.history.repos import isolate_git, make_repo, model_code

RUN = "20261120-234500-net-3f2a"


@pytest.fixture(autouse=True)
def only_history_commands(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our own git config, a wide terminal, and only these subcommands registered."""
    isolate_git(tmp_path_factory.mktemp("home"), monkeypatch)
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("copilot.commands.history",))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A run with three rounds: arch (edited), hparams, arch; results on the first two."""
    repo = make_repo(tmp_path / "project")
    history = ExperimentHistory.start(repo / "models" / "net.py", RUN, hparams={"lr": 0.1})
    for step in (1, 2, 3):
        info = history.commit_round(
            kind="hparams" if step == 2 else "arch",
            summary=f"change {step}",
            findings=[f"finding {step}"],
            rationale=f"because {step}",
            model_code=None if step == 2 else model_code(step),
            hparams={"lr": 0.01} if step == 2 else None,
            advisor="offline",
            before={"val_accuracy": 0.1 * step, "val_loss": 2.0},
            verdict="edited" if step == 1 else "accepted",
        )
        if step < 3:
            history.record_result(info.round, {"val_accuracy": 0.1 * step + 0.05, "checkpoint": f"/ckpt/r{step}.pt"})
    return repo


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_log_lists_every_round(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "log", "--repo", str(repo))
    assert (code, err) == (0, "")
    assert f"run {RUN}" in out
    lines = out.splitlines()
    for label, kind, summary in (("r0", "baseline", "start from net.py"), ("r1", "arch", "change 1"), ("r3", "arch", "change 3")):
        [row] = [line for line in lines if line.split()[:2] == [label, kind]]
        assert summary in row
    [r1] = [line for line in lines if line.split()[:1] == ["r1"]]
    assert "0.100→0.150" in r1 and "offline (edited)" in r1
    for info in ExperimentHistory.open(repo).rounds():
        [row] = [line for line in lines if line.split()[:1] == [info.label]]
        assert info.short_sha in row


def test_log_json_parses_back_into_rounds(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "log", "--json", "--repo", str(repo), "--run", RUN[:12])
    rounds = [RoundInfo.model_validate(json.loads(line)) for line in out.splitlines()]
    assert code == 0 and [info.round for info in rounds] == [0, 1, 2, 3]
    assert rounds[2].results is not None and rounds[2].results.checkpoint == "/ckpt/r2.pt"


def test_diff_shows_metrics_and_code(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "diff", "r1", "2", "--repo", str(repo))
    assert code == 0
    [acc] = [line for line in out.splitlines() if "val_accuracy" in line]
    assert [cell.strip() for cell in acc.split("│")[1:5]] == ["val_accuracy", "0.150", "0.250", "+0.100"]
    assert "-lr = 0.1" in out and "+lr = 0.01" in out and "net.py" not in out

    code, out, _ = run(capsys, "diff", "r1", "r3", "--repo", str(repo))
    assert code == 0
    assert "-        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 17)" in out
    assert "+        self.body = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 19)" in out


def test_show_prints_the_round_and_its_trailers(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "show", "r2", "--repo", str(repo))
    assert code == 0
    assert "hparams(r2): change 2" in out and "Copilot-Verdict: accepted" in out
    assert "/ckpt/r2.pt" in out and "+lr = 0.01" in out


def test_rollback_undo_redo(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "rollback", "r1", "--repo", str(repo))
    assert code == 0 and "rollback(r4): back to r1: change 1" in out
    assert "resume training from r1's checkpoint: /ckpt/r1.pt" in out

    code, out, _ = run(capsys, "undo", "--repo", str(repo))
    assert code == 0 and "took r4" in out and "back at r3" in out and f"refs/copilot/{RUN}/attic/" in out

    code, out, _ = run(capsys, "redo", "--repo", str(repo))
    assert code == 0 and "put back r4" in out

    code, _, err = run(capsys, "redo", "--repo", str(repo))
    assert code == 2 and "error: nothing to redo" in err and "hint:" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("show", "x"), "'x' is not a round"),
        (("show", "r99"), "has no round r99"),
        (("diff", "r1", "r42"), "has no round r42"),
        (("log", "--run", "nope"), "no run 'nope'"),
    ],
)
def test_user_errors_exit_2_with_a_hint(
    repo: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, *argv, "--repo", str(repo))
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err.replace("\n", " ") and "\nhint: " in err
    assert "Traceback" not in err


def test_outside_a_repository_and_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "log", "--repo", str(tmp_path))
    assert code == 2 and "not inside a git repository" in err and "--repo" in err
    bare_project = make_repo(tmp_path / "plain")
    code, _, err = run(capsys, "undo", "--repo", str(bare_project))
    assert code == 2 and "no copilot runs" in err and "start one with `copilot run MODEL.py`" in err


@pytest.mark.parametrize("argv", [("log", "--json"), ("log",), ("diff", "r1", "r3"), ("show", "r1")])
def test_closed_pipe_is_not_an_error(repo: Path, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "w") as closed_pipe:
        monkeypatch.setattr(sys, "stdout", closed_pipe)
        assert cli.main([*argv, "--repo", str(repo)]) == 0  # rich's own answer to a closed pipe is exit 1


def test_registering_loads_no_git() -> None:
    probe = (
        "import argparse, sys\n"
        "from copilot.commands import history\n"
        "history.register(argparse.ArgumentParser().add_subparsers())\n"
        "print('git' in sys.modules, 'copilot.history' in sys.modules)\n"
        "import copilot.cli\n"
        "print('copilot.commands.history' in copilot.cli.COMMAND_MODULES)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "False", "True"]
