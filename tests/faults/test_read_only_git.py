"""A read-only `.git` is the user's to fix: one `error:`/`hint:` pair, and nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from copilot.cli import main
from tests.faults.mounts import read_only
from tests.history.repos import git


def test_a_read_only_git_folder_is_one_clear_line_and_leaves_nothing(
    user_project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = user_project
    with read_only(project / ".git"):
        code = main(["run", "bad_cnn.py", "--headless", "--epochs", "1"])
        status = git(project, "status", "--porcelain", "--untracked-files=all")
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 2 and lines[0].startswith("error: cannot write to the git repository"), err
    assert "read-only file system" in lines[0] and lines[1].startswith("hint: "), err
    assert status == "" and not (project / ".copilot").exists(), "nothing left in the user's checkout"
