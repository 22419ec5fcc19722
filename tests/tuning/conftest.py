"""Shared set-up for the tune tests: the session tests' real git project and tiny data, and two
sound models whose learning rate is far too low, so a study has something to find."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.history.repos import git
from tests.session.conftest import git_home, project  # noqa: F401  (fixtures)

# A sound small CNN (conv-BN-ReLU, pooling; the benchmarks' healthy one) under SGD at lr 1e-4: it barely moves.
SLOW_MODEL = '''
import torch
from torch import nn

HPARAMS = {"optimizer": "SGD", "lr": 0.0001, "batch_size": 16, "epochs": 40}


class SlowNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))
'''

# A smaller CNN without batch norm under the same rate: its validation loss barely moves in a few steps
# however the weights wander, so a rate that throws them about trails it at every evaluation.
FLAT_MODEL = '''
import torch
from torch import nn

HPARAMS = {"optimizer": "SGD", "lr": 0.0001, "batch_size": 16, "epochs": 40}


class FlatNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(8 * 16, 10)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))
'''


@pytest.fixture
def slow_project(project: Path) -> Path:  # noqa: F811  (the session tests' fixture, extended)
    (project / "slow.py").write_text(SLOW_MODEL.lstrip(), encoding="utf-8")
    (project / "flat.py").write_text(FLAT_MODEL.lstrip(), encoding="utf-8")
    git(project, "add", "slow.py", "flat.py")
    git(project, "commit", "-q", "-m", "add slow.py and flat.py")
    return project
