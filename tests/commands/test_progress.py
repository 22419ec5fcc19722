"""Headless progress: a table and a bar on a terminal, one line per epoch as it ends on a pipe or in a file."""

from __future__ import annotations

import io
import time

from rich.console import Console
from rich.live import Live

from copilot.console.progress import TrainingProgress
from copilot.events import EpochSummary, RunStarted, StepBatch, StepRecord
from tests.advisor.scripted import TINY_DATA, TINY_HPARAMS, TINY_SUMMARY

EVENTS = (
    RunStarted(run_id="r", device="cpu", data=TINY_DATA, model=TINY_SUMMARY, hparams=TINY_HPARAMS, time=time.time()),
    StepBatch(records=(StepRecord(epoch=1, step=1, loss=1.2, accuracy=0.5, lr=0.1, samples_per_sec=100.0,
                                  total_grad_norm=0.5, per_module_grad_norm={"fc1": 1e-6, "fc2": 0.5}),)),
    EpochSummary(
        epoch=1, step=1, train_loss=1.25, train_accuracy=0.5, val_loss=1.5, val_accuracy=0.4375,
        lr=0.1, samples_per_sec=100.0, duration_s=1.0,
    ),
)


def test_without_a_terminal_each_epoch_is_a_line_the_moment_it_ends() -> None:
    out = io.StringIO()
    view = TrainingProgress(Console(file=out, width=80, force_terminal=False))
    with Live(view.renderable, console=view.console):
        for event in EVENTS:
            view.show(event)
        written_while_running = out.getvalue()
    epoch_line = "epoch 1, loss 1.2500, acc 50.0%, val loss 1.5000, val acc 43.8%, grad norm 0.5000, worst module fc1"
    assert epoch_line in written_while_running
    assert "┃" not in out.getvalue() and "━" not in out.getvalue(), "no table and no bar in a log file"


def test_on_a_terminal_the_epochs_are_a_table_and_an_empty_table_is_not_drawn() -> None:
    out = io.StringIO()
    view = TrainingProgress(Console(file=out, width=80, force_terminal=True))
    with Live(view.renderable, console=view.console, auto_refresh=False) as live:
        view.show(EVENTS[0])
        live.refresh()
        assert "worst module" not in out.getvalue(), "no header above zero rows"
        for event in EVENTS[1:]:
            view.show(event)
    rows = [line for line in out.getvalue().splitlines() if "│" in line]
    assert any("1.2500" in row and "43.8%" in row and "fc1" in row for row in rows)
