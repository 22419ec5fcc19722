"""Shared set-up for the fault tests: a user's git project with the sample CNN committed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.history.repos import git, isolate_git

SAMPLE_MODELS = Path(__file__).resolve().parents[2] / "sample_models"


@pytest.fixture
def user_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository on branch main holding bad_cnn.py, with its own HOME and git identity; the
    working folder, as where a user types `copilot run`."""
    (tmp_path / "home").mkdir()
    isolate_git(tmp_path / "home", monkeypatch)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the spawned trainer's torch threads
    project = tmp_path / "project"
    project.mkdir()
    shutil.copyfile(SAMPLE_MODELS / "bad_cnn.py", project / "bad_cnn.py")
    git(project, "init", "-q", "-b", "main")
    git(project, "add", ".")
    git(project, "commit", "-q", "-m", "model")
    monkeypatch.chdir(project)
    return project
