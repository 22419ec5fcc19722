"""A trainer in trial mode: the change applied before the first step, a step budget, outputs on
the fixed validation samples, an end checkpoint the run can continue from, and failures that
end the trial instead of falling back or pausing."""

from __future__ import annotations

from pathlib import Path

import torch

from copilot.events import (
    CheckpointNow,
    CheckpointWritten,
    Finished,
    HParamsApplied,
    ModelRef,
    SetHParams,
    StepBatch,
    SwapModel,
    TrainerError,
    TrialOutputs,
)
from copilot.training.checkpoints import load_checkpoint
from copilot.training.launcher import TrainerProcess, TrialPlan
from tests.training.conftest import TINY_VAL_SIZE, of_type, once, run_to_end, tiny_spec


def checkpoint_at(path: Path, step: int) -> Path:
    return path / "checkpoints" / f"step{step:08d}.pt"


def a_run_with_a_fork_point(tmp_path: Path, model: Path, fork_step: int) -> Path:
    """A three-epoch run (3 steps an epoch) that also checkpoints after `fork_step` steps."""
    run = tmp_path / "run"
    # Every step sent on its own, so the reaction sees the fork step's batch and checkpoints right after it.
    spec = tiny_spec(run, model, hparams={"epochs": 3}, max_messages_per_sec=1e9)
    run_to_end(spec, once(lambda e: isinstance(e, StepBatch) and e.records[-1].step == fork_step, CheckpointNow()))
    return run


def test_an_unchanged_trial_reproduces_the_run_and_ends_where_the_run_can_continue(tmp_path: Path, tiny_cnn: Path) -> None:
    run = a_run_with_a_fork_point(tmp_path, tiny_cnn, fork_step=2)
    plan = TrialPlan(arm="incumbent", steps=4, evaluate_at=(2, 4), val_samples=10)
    trial = tmp_path / "trial"
    spec = tiny_spec(trial, tiny_cnn, hparams={"epochs": 3}).model_copy(
        update={"resume_from": checkpoint_at(run, 2), "trial": plan}
    )
    events = run_to_end(spec)

    outputs = of_type(events, TrialOutputs)
    assert [(o.trial_step, o.step) for o in outputs] == [(2, 4), (4, 6)]
    scored = torch.load(outputs[-1].path, weights_only=True)
    assert scored.shape == (10, 10) and scored.dtype == torch.float32
    assert of_type(events, Finished)[-1].reason == "stopped"
    end = load_checkpoint(Path(of_type(events, CheckpointWritten)[-1].path))
    # Same checkpoint, data order and random streams: the trial is the run's own epochs 1-2.
    run_at_six = load_checkpoint(run / "checkpoints" / "epoch0002.pt")
    assert end.step == 6 and end.epoch == 2 and end.batches_done == 0
    for name, tensor in run_at_six.model_state.items():
        assert torch.equal(tensor, end.model_state[name]), name


def test_a_trial_applies_its_change_before_the_first_step_as_the_round_it_would_be(tmp_path: Path, tiny_cnn: Path) -> None:
    run = a_run_with_a_fork_point(tmp_path, tiny_cnn, fork_step=2)
    plan = TrialPlan(
        arm="c1", steps=3, evaluate_at=(1, 2, 3), val_samples=TINY_VAL_SIZE,
        changes=(SetHParams(changes={"lr": 0.01, "momentum": 0.0}, round=1),),
    )  # fmt: skip
    spec = tiny_spec(tmp_path / "trial", tiny_cnn).model_copy(update={"resume_from": checkpoint_at(run, 2), "trial": plan})
    events = run_to_end(spec)

    applied = of_type(events, HParamsApplied)
    assert [(a.step, a.round, a.hparams.lr) for a in applied] == [(2, 1, 0.01)]
    first_trained = min(r.step for batch in of_type(events, StepBatch) for r in batch.records)
    assert first_trained == 3  # the change came before the trial's first step
    assert [o.trial_step for o in of_type(events, TrialOutputs)] == [1, 2, 3]
    end = load_checkpoint(Path(of_type(events, CheckpointWritten)[-1].path))
    assert (end.step, end.round, end.hparams.lr) == (5, 1, 0.01)


def test_a_trial_whose_new_model_fails_fails_instead_of_training_the_old_one(tmp_path: Path, tiny_cnn: Path, write_model) -> None:
    run = a_run_with_a_fork_point(tmp_path, tiny_cnn, fork_step=2)
    broken = write_model("broken.py", "from torch import nn\n\nclass Net(nn.Module):\n    def forward(self, x):\n        return x.flatten(1)[:, :3]\n")
    plan = TrialPlan(arm="c1", steps=3, evaluate_at=(3,), val_samples=4, changes=(SwapModel(model=ModelRef(path=broken), round=1),))
    spec = tiny_spec(tmp_path / "trial", tiny_cnn).model_copy(update={"resume_from": checkpoint_at(run, 2), "trial": plan})
    events = run_to_end(spec)

    assert of_type(events, TrainerError) and of_type(events, Finished)[-1].reason == "error"
    assert not of_type(events, StepBatch) and not of_type(events, TrialOutputs)


def test_a_trial_that_diverges_ends_with_its_error_instead_of_waiting_paused(tmp_path: Path, tiny_cnn: Path) -> None:
    run = a_run_with_a_fork_point(tmp_path, tiny_cnn, fork_step=2)
    # At lr 10 the loss grows about a thousandfold a step: it overflows long before 50 steps.
    plan = TrialPlan(arm="c1", steps=50, evaluate_at=(50,), val_samples=4, changes=(SetHParams(changes={"lr": 10.0}),))
    spec = tiny_spec(tmp_path / "trial", tiny_cnn, hparams={"epochs": 20}).model_copy(
        update={"resume_from": checkpoint_at(run, 2), "trial": plan}
    )
    trainer = TrainerProcess(spec)
    trainer.start()
    events = []
    try:
        while not any(isinstance(event, Finished) for event in events):
            polled = trainer.poll(timeout=1.0)
            events.extend(polled)
            assert polled or trainer.is_alive, "the trial ended without a Finished event"
    finally:
        events.extend(trainer.stop(5.0, checkpoint=False))
    assert any(error.kind == "nonfinite" for error in of_type(events, TrainerError))
    assert of_type(events, Finished)[-1].reason == "stopped"
    assert not of_type(events, TrialOutputs)
