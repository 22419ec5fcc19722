"""Shared set-up for the session tests: a real git project, tiny data, real trainers.

Every test gets its own HOME and git identity (as the history tests do), a project
repository in tmp_path holding the sample models as a user would commit them, and
settings that train a few dozen shapes samples on the CPU with one thread, so a
session's trainer starts in seconds and an epoch takes a fraction of one.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from copilot.config import Settings
from copilot.events import Event
from copilot.session.controller import Session
from tests.history.repos import git, isolate_git

SAMPLE_MODELS = Path(__file__).resolve().parents[2] / "sample_models"
# Logits a thousand times too large and SGD at lr 10: the weights blow up within a few steps.
EXPLODING_MODEL = """
import torch
from torch import nn

HPARAMS = {"optimizer": "SGD", "lr": 10.0, "batch_size": 16, "epochs": 30}


class Exploding(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return 1000.0 * self.fc(torch.relu(self.conv(x)).mean((2, 3)))
"""
TINY_DATA = {"train_size": 64, "val_size": 32}
WAIT_S = 120.0  # a trainer start, a sandbox check and a few tiny epochs on a busy 2-core machine


@pytest.fixture(autouse=True)
def git_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate_git(tmp_path_factory.mktemp("home"), monkeypatch)


@pytest.fixture(autouse=True)
def _trainers_use_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's repository on branch main with the sample models and an exploding model committed."""
    folder = tmp_path / "project"
    folder.mkdir()
    for name in ("bad_cnn.py", "broken_cnn.py"):
        shutil.copyfile(SAMPLE_MODELS / name, folder / name)
    (folder / "exploding.py").write_text(EXPLODING_MODEL.lstrip(), encoding="utf-8")
    git(folder, "init", "-q", "-b", "main")
    git(folder, "add", ".")
    git(folder, "commit", "-q", "-m", "models")
    return folder


# Trials small enough for tiny runs: a handful of steps, the advisor's proposal alone beside the unchanged run.
TINY_TRIALS = {"min_steps": 6, "max_steps": 6, "evaluations": 3, "max_candidates": 1}


def tiny_settings(project: Path, *, trials: dict[str, object] | None = None, **advisor: object) -> Settings:
    """Settings for a session in `project`: tiny data, CPU, every step measured; no trials unless `trials`
    (most tests here are about what a decision does, which trials would only slow down)."""
    return Settings(
        runs_dir=project / ".copilot" / "runs",
        data=TINY_DATA,
        train={"device": "cpu", "log_every": 1, "activation_every": 2, "hparams": {"batch_size": 16, "epochs": 6}},
        advisor={"assess_every": 2, **advisor},
        trials=trials if trials is not None else {"enabled": False},
    )


def run_until(session: Session, done: Callable[[list[Event]], bool], timeout: float = WAIT_S) -> list[Event]:
    """Poll the session until `done(events so far)`; every event read, in order."""
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.extend(session.poll_events(0.2))
        if done(seen):
            return seen
    raise AssertionError(f"timed out after {timeout:.0f} s; last events: {[type(e).__name__ for e in seen[-8:]]}")


class CountingAdvisor:
    """The offline advisor, counting every role call: a reopened session must make none."""

    def __init__(self) -> None:
        from copilot.advisor.offline.advisor import OfflineAdvisor

        self._offline = OfflineAdvisor()
        self.name = self._offline.name
        self.calls: list[str] = []

    def __getattr__(self, role: str) -> Callable[..., object]:
        method = getattr(self._offline, role)

        def counted(*args: object) -> object:
            self.calls.append(role)
            return method(*args)

        return counted


def until_due(session: Session, timeout: float = WAIT_S) -> str:
    """Poll until the session wants an assessment, then pause the trainer (so nothing races the
    verdict: a tiny epoch takes a fraction of a second) and return the trigger."""
    found: list[str] = []

    def due(_events: list[Event]) -> bool:
        trigger = session.due_assessment()
        if trigger:
            found.append(trigger)
        return bool(found)

    run_until(session, due, timeout)
    if session.trainer_state == "running":
        session.pause()
        run_until(session, lambda _events: session.trainer_state == "paused")
    return found[0]
