"""Checkpoints load with a bare torch.load and continue a run exactly: on the CPU the losses after
resuming equal the uninterrupted run's, from an epoch's end and from the middle of an epoch."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy
import pytest
import torch

from copilot.errors import CopilotError
from copilot.events import CheckpointWritten, Finished, RunStarted, Stop, StepBatch, parse_event
from copilot.training.checkpoints import capture_rng_states, load_checkpoint, restore_rng_states
from tests.training.conftest import of_type, once, run_to_end, step_losses, tiny_spec


def step_lrs(events: list) -> dict[int, float]:
    return {record.step: record.lr for event in of_type(events, StepBatch) for record in event.records}


def test_rng_states_round_trip_every_stream() -> None:
    torch.manual_seed(3)
    random.seed(3)
    numpy.random.seed(3)
    saved = capture_rng_states()
    first = (torch.rand(3), random.random(), numpy.random.rand())
    restore_rng_states(saved)
    again = (torch.rand(3), random.random(), numpy.random.rand())
    assert torch.equal(first[0], again[0]) and first[1:] == again[1:]


def test_unreadable_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    damaged = tmp_path / "epoch0001.pt"
    damaged.write_bytes(b"not a checkpoint")
    with pytest.raises(CopilotError) as caught:
        load_checkpoint(damaged)
    assert caught.value.message.startswith(f"cannot read checkpoint {damaged}: the file is damaged")
    assert "weights_only" not in caught.value.message, "never advise loading an unknown file with weights_only=False"
    assert caught.value.hint.startswith("delete it")
    with pytest.raises(CopilotError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_resume_from_an_epoch_end_reproduces_the_losses_exactly(tmp_path: Path, tiny_cnn: Path) -> None:
    run = tmp_path / "run"
    # A cosine schedule too: the lr of each step after resuming must be the uninterrupted run's.
    uninterrupted = run_to_end(tiny_spec(run, tiny_cnn, hparams={"epochs": 2, "schedule": "cosine"}))
    losses = step_losses(uninterrupted)
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]  # 48 samples / batch 16 = 3 steps an epoch

    checkpoint_path = run / "checkpoints" / "epoch0001.pt"
    payload = torch.load(checkpoint_path)  # plain torch.load: weights only, no pickled classes
    assert payload["epoch"] == 1 and payload["step"] == 3 and payload["batches_done"] == 0
    assert payload["hparams"]["schedule"] == "cosine" and payload["model"]["name"] is None
    assert Path(payload["model"]["path"]) == run / "models" / "r0_tiny_cnn.py"
    assert set(payload["rng_states"]) >= {"torch", "python", "numpy"}

    resumed = run_to_end(tiny_spec(run, tiny_cnn, hparams={}).model_copy(update={"resume_from": checkpoint_path}))
    assert of_type(resumed, RunStarted)[0].resumed_from_epoch == 1
    assert of_type(resumed, Finished)[0].reason == "epochs_done"
    resumed_losses = step_losses(resumed)
    assert sorted(resumed_losses) == [4, 5, 6]
    assert all(resumed_losses[step] == losses[step] for step in resumed_losses)
    assert step_lrs(resumed) == {step: lr for step, lr in step_lrs(uninterrupted).items() if step > 3}

    # metrics.jsonl is appended to, never rewritten: both starts are in it.
    lines = [parse_event(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [event.resumed_from_epoch for event in of_type(lines, RunStarted)] == [None, 1]


def test_resume_from_the_middle_of_an_epoch_reproduces_the_losses_exactly(tmp_path: Path, tiny_cnn: Path) -> None:
    losses = step_losses(run_to_end(tiny_spec(tmp_path / "whole", tiny_cnn, hparams={"epochs": 2})))

    stopped_run = tmp_path / "stopped"
    first_step = once(lambda event: isinstance(event, StepBatch), Stop())
    events = run_to_end(tiny_spec(stopped_run, tiny_cnn, hparams={"epochs": 2}), react=first_step)
    finished = of_type(events, Finished)[0]
    assert (finished.reason, finished.epoch, finished.step) == ("stopped", 0, 1)
    checkpoint = Path(of_type(events, CheckpointWritten)[-1].path)
    assert checkpoint.name == "step00000001.pt" and load_checkpoint(checkpoint).batches_done == 1

    resumed = run_to_end(tiny_spec(stopped_run, tiny_cnn).model_copy(update={"resume_from": checkpoint}))
    resumed_losses = step_losses(resumed)
    assert sorted(resumed_losses) == [2, 3, 4, 5, 6]
    assert all(resumed_losses[step] == losses[step] for step in resumed_losses)


def test_hparams_given_when_resuming_override_the_checkpoint(tmp_path: Path, tiny_cnn: Path) -> None:
    run = tmp_path / "run"
    run_to_end(tiny_spec(run, tiny_cnn, hparams={"epochs": 1}))
    spec = tiny_spec(run, tiny_cnn, hparams={"epochs": 2, "momentum": 0.5})
    resumed = run_to_end(spec.model_copy(update={"resume_from": run / "checkpoints" / "epoch0001.pt"}))
    started = of_type(resumed, RunStarted)[0]
    assert (started.hparams.epochs, started.hparams.momentum, started.hparams.lr) == (2, 0.5, 0.05)
    assert of_type(resumed, Finished)[0].epoch == 2
