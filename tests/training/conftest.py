"""Shared set-up for the training tests: tiny model files written to tmp_path, tiny runs.

Model files are written as a user would write them, so loading, checking and swapping
go through the real import path. Runs use a few dozen samples of the shapes set on the
CPU with one thread, so a whole run takes about a second.
"""

from __future__ import annotations

import queue
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from copilot.config import DataSettings, TrainSettings
from copilot.events import Command, Event, ModelRef, StepBatch
from copilot.training.launcher import TrainerProcess, TrainerSpec
from copilot.training.worker import run_trainer

# A small CNN for the shapes set: conv -> relu -> global mean -> dropout -> linear.
TINY_CNN = """
import torch
from torch import nn

HPARAMS = {"optimizer": "SGD", "lr": 0.05, "momentum": 0.9, "batch_size": 16, "epochs": 2}


class TinyCNN(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(width, 10)

    def forward(self, x):
        x = torch.relu(self.conv(x)).mean((2, 3))
        return self.fc(self.drop(x))
"""

# Same layer names as TINY_CNN where the shapes allow, plus a new layer: a swap carries conv and fc.
TINY_CNN_WIDER_HEAD = """
import torch
from torch import nn


class TinyCNNHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.hidden = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.norm(self.conv(x))).mean((2, 3))
        return self.fc(x + torch.relu(self.hidden(x)))
"""

# Model files written the way public code bases write theirs (nanoGPT, minGPT, Hugging Face, pytorch/examples).
CONVENTIONS = Path(__file__).resolve().parent / "conventions"

TINY_TRAIN_SIZE = 48
TINY_VAL_SIZE = 16


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """Two shared cores: one thread per test process is faster than fighting over both."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _children_use_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # Spawned trainers read this when torch starts.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture
def write_model(tmp_path: Path) -> Callable[[str, str], Path]:
    """`write_model("net.py", source)` writes a dedented model file under tmp_path and returns its path."""

    def write(name: str, source: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
        return path

    return write


@pytest.fixture
def tiny_cnn(write_model: Callable[[str, str], Path]) -> Path:
    return write_model("tiny_cnn.py", TINY_CNN)


def tiny_spec(run_folder: Path, model: Path | str, **train: object) -> TrainerSpec:
    """A CPU run of `model` (`file.py[:Name]`) on a few dozen shapes samples, every step measured."""
    return TrainerSpec(
        run_folder=run_folder,
        model=ModelRef.parse(str(model)),
        data=DataSettings(train_size=TINY_TRAIN_SIZE, val_size=TINY_VAL_SIZE),
        train=TrainSettings.model_validate({"device": "cpu", "log_every": 1, **train}),
    )


class _ReactingQueue(queue.Queue):
    """An events queue that hands each event to a test the moment the trainer sends it.

    The reaction runs in the trainer's own thread, between its steps, so a command it
    queues is read before the next step: commands land at exact steps, with no races.
    """

    def __init__(self, react: Callable[[Event, queue.Queue], None], commands: queue.Queue) -> None:
        super().__init__()
        self._react = react
        self._commands = commands

    def put(self, item: Event, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._react(item, self._commands)


def run_to_end(spec: TrainerSpec, react: Callable[[Event, queue.Queue], None] | None = None) -> list[Event]:
    """Run a trainer in this thread to its end and return its events; `react(event, commands)`
    may answer events with commands."""
    commands: queue.Queue = queue.Queue()
    events: queue.Queue = _ReactingQueue(react, commands) if react else queue.Queue()
    run_trainer(spec, commands, events)
    return [events.get_nowait() for _ in range(events.qsize())]


def once(condition: Callable[[Event], bool], *commands: Command) -> Callable[[Event, queue.Queue], None]:
    """A reaction that queues `commands` the first time an event meets `condition`."""
    done = False

    def react(event: Event, queued: queue.Queue) -> None:
        nonlocal done
        if not done and condition(event):
            done = True
            for command in commands:
                queued.put(command)

    return react


def step_losses(events: list[Event]) -> dict[int, float]:
    return {record.step: record.loss for event in events if isinstance(event, StepBatch) for record in event.records}


def collect_until(trainer: TrainerProcess, wanted, timeout: float = 120.0) -> list[Event]:  # type: ignore[no-untyped-def]
    """Poll the trainer until an event is `wanted`; return everything read. The timeout only
    bounds a hung test: the wait ends on the event."""
    seen: list[Event] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.extend(trainer.poll(timeout=0.2))
        if any(wanted(event) for event in seen):
            return seen
    raise AssertionError(f"not seen within {timeout} s: {[e.type for e in seen]}")


def of_type(events: list[Event], kind: type) -> list:
    return [event for event in events if isinstance(event, kind)]
