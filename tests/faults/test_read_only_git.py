"""A read-only `.git` is the user's to fix: one `error:`/`hint:` pair, and nothing left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from copilot.cli import main
from tests.faults.mounts import read_only
from tests.history.repos import git, isolate_git

SAMPLE_MODELS = Path(__file__).resolve().parents[2] / "sample_models"


def test_a_read_only_git_folder_is_one_clear_line_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "home").mkdir()
    isolate_git(tmp_path / "home", monkeypatch)
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(SAMPLE_MODELS / "bad_cnn.py", project / "bad_cnn.py")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "model")
    monkeypatch.chdir(project)
    with read_only(project / ".git"):
        code = main(["run", "bad_cnn.py", "--headless", "--epochs", "1"])
        status = git(project, "status", "--porcelain", "--untracked-files=all")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 2 and lines[0].startswith("error: cannot write to the git repository"), err
    assert "read-only file system" in lines[0] and lines[1].startswith("hint: "), err
    assert status == "" and not (project / ".copilot").exists(), "nothing left in the user's checkout"
