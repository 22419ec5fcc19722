"""The trainer: what a run emits and writes, commands between steps, swaps, errors; and the
spawned process: live hyperparameter changes, and a killed trainer reported after its events."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from copilot.events import (
    CheckpointNow,
    CheckpointWritten,
    EpochSummary,
    Evaluated,
    EvaluateNow,
    Event,
    Finished,
    ForwardContract,
    HParamsApplied,
    LogLine,
    ModelRef,
    ModelSwapped,
    parse_event,
    Pause,
    Resume,
    RunStarted,
    SetHParams,
    StateChanged,
    StepBatch,
    Stop,
    SwapModel,
    TrainerError,
)
from copilot.config import DataSettings, TrainSettings
from copilot.training.checkpoints import load_checkpoint
from copilot.training.launcher import TrainerProcess, TrainerSpec
from tests.training.conftest import CONVENTIONS, TINY_CNN, TINY_CNN_WIDER_HEAD, collect_until, of_type, once, run_to_end, tiny_spec


def first_step(event: Event) -> bool:
    return isinstance(event, StepBatch)


def paused(event: Event) -> bool:
    return isinstance(event, StateChanged) and event.state == "paused"


def both(*reactions):  # type: ignore[no-untyped-def]
    def react(event: Event, commands) -> None:  # type: ignore[no-untyped-def]
        for reaction in reactions:
            reaction(event, commands)

    return react


# --------------------------------------------------------------------------- a whole run


def test_the_pytorch_examples_mnist_net_learns_grayscale_28_by_28_shapes(tmp_path: Path) -> None:
    """Its first layer is Conv2d(1, 32, 3) and fc1 takes 9216 features: only a 1x28x28 set fits it."""
    spec = TrainerSpec(
        run_folder=tmp_path / "run",
        model=ModelRef(path=CONVENTIONS / "mnist_script.py"),
        data=DataSettings(channels=1, image_size=28, train_size=512, val_size=200),
        train=TrainSettings(device="cpu", hparams={"epochs": 2, "batch_size": 32, "optimizer": "Adam", "lr": 0.001}),
    )
    events = run_to_end(spec)
    assert isinstance(events[-1], Finished) and events[-1].reason == "epochs_done", events[-1]
    assert of_type(events, RunStarted)[0].data.input_shape == (1, 28, 28)
    accuracies = [epoch.val_accuracy for epoch in of_type(events, EpochSummary)]
    assert len(accuracies) == 2 and all(accuracy is not None for accuracy in accuracies)
    assert accuracies[-1] > 0.2  # ten balanced classes: chance is 0.1


def test_a_run_reports_in_order_and_writes_its_folder(tmp_path: Path, tiny_cnn: Path) -> None:
    run = tmp_path / "run"
    events = run_to_end(tiny_spec(run, tiny_cnn, hparams={"epochs": 2}))
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], Finished)
    started = events[0]
    assert started.device == "cpu" and started.model.class_name == "TinyCNN" and started.hparams.lr == 0.05
    assert started.data.train_size == 48 and started.resumed_from_epoch is None
    assert events[-1].reason == "epochs_done" and (events[-1].epoch, events[-1].step) == (2, 6)

    epochs = of_type(events, EpochSummary)
    assert [e.epoch for e in epochs] == [1, 2] and [e.step for e in epochs] == [3, 6]
    assert all(e.expected_initial_loss == math.log(10) for e in epochs)
    assert epochs[0].initial_loss is not None and abs(epochs[0].initial_loss - math.log(10)) < 0.5
    assert all(e.val_loss is not None and e.val_accuracy is not None for e in epochs)
    records = [r for batch in of_type(events, StepBatch) for r in batch.records]
    assert [r.step for r in records] == [1, 2, 3, 4, 5, 6]
    assert set(records[0].per_module_grad_norm) == {"conv", "fc"}

    written = [parse_event(json.loads(line)) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert written == [e for e in events if not isinstance(e, LogLine)]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch0001.pt", "epoch0002.pt"]
    assert (run / "models" / "r0_tiny_cnn.py").read_text() == tiny_cnn.read_text()
    log = (run / "events.log").read_text()
    assert "epoch 2: loss" in log and "finished (epochs_done)" in log


def test_logged_steps_are_coalesced_to_the_message_rate(tmp_path: Path, tiny_cnn: Path) -> None:
    spec = tiny_spec(tmp_path / "run", tiny_cnn, max_messages_per_sec=0.01, hparams={"epochs": 2, "batch_size": 4})
    events = run_to_end(spec)
    batches = of_type(events, StepBatch)
    steps = [r.step for batch in batches for r in batch.records]
    assert steps == list(range(1, 25))  # nothing lost...
    assert len(batches) <= 3  # ...but sent at most once per interval, plus before each epoch summary


def test_an_invalid_setting_is_a_config_error(tmp_path: Path, tiny_cnn: Path) -> None:
    events = run_to_end(tiny_spec(tmp_path / "run", tiny_cnn, hparams={"epochs": 0}))
    error = of_type(events, TrainerError)[0]
    assert (error.kind, error.user_error) == ("config", True)
    assert error.message.startswith("hyperparameter 'epochs' = 0 is not allowed")


def test_the_model_is_checked_before_training(tmp_path: Path, write_model) -> None:
    broken = write_model("broken.py", TINY_CNN.replace("nn.Linear(width, 10)", "nn.Linear(width * 2, 10)"))
    events = run_to_end(tiny_spec(tmp_path / "run", broken))
    error = of_type(events, TrainerError)[0]
    assert error.kind == "forward" and error.user_error
    assert error.message.startswith("forward pass failed on input [2, 3, 32, 32] at broken.py:")
    assert "mat1 and mat2 shapes cannot be multiplied" in error.message
    assert events[-1] == Finished(reason="error", epoch=0, step=0)
    assert '"kind":"forward"' in (tmp_path / "run" / "metrics.jsonl").read_text()


def test_an_error_in_the_users_forward_mid_run_names_the_line(tmp_path: Path, write_model) -> None:
    model = write_model(
        "late.py",
        TINY_CNN.replace("    def forward(self, x):\n", "    def forward(self, x):\n        if self.training:\n            raise ValueError('only at training time')\n"),
    )
    error = of_type(run_to_end(tiny_spec(tmp_path / "run", model)), TrainerError)[0]
    assert (error.kind, error.message) == ("forward", "ValueError: only at training time (at late.py:16)")
    assert "Traceback" in error.traceback and "late.py" in (tmp_path / "run" / "events.log").read_text()


def test_out_of_memory_is_its_own_kind(tmp_path: Path, write_model) -> None:
    model = write_model(
        "oom.py",
        TINY_CNN.replace(
            "    def forward(self, x):\n",
            "    def forward(self, x):\n        if self.training:\n            raise RuntimeError('CUDA out of memory. Tried to allocate 2.00 GiB')\n",
        ),
    )
    error = of_type(run_to_end(tiny_spec(tmp_path / "run", model)), TrainerError)[0]
    assert error.kind == "oom" and "batch size" in error.hint


def test_a_non_finite_loss_pauses_the_run_instead_of_ending_it(tmp_path: Path, write_model) -> None:
    model = write_model("nan.py", TINY_CNN.replace("return self.fc(self.drop(x))", "return self.fc(self.drop(x)) * float('nan')"))
    react = once(lambda e: isinstance(e, TrainerError) and e.kind == "nonfinite", Stop(checkpoint=False))
    events = run_to_end(tiny_spec(tmp_path / "run", model), react=react)
    error = of_type(events, TrainerError)[0]
    assert error.kind == "nonfinite" and error.step == 1 and "the loss" in error.message
    after_error = events[events.index(error) :]
    assert any(paused(e) for e in after_error)
    assert events[-1].reason == "stopped"  # the parent decided, not the trainer
    assert not of_type(events, CheckpointWritten)


# --------------------------------------------------------------------------- commands between steps


def test_pause_evaluate_checkpoint_and_a_refused_change_while_paused(tmp_path: Path, tiny_cnn: Path) -> None:
    react = both(
        once(first_step, Pause()),
        once(paused, EvaluateNow(), CheckpointNow(), SetHParams(changes={"lr": 99.0}), SetHParams(changes={"epochs": 1}), Resume()),
    )
    events = run_to_end(tiny_spec(tmp_path / "run", tiny_cnn, hparams={"epochs": 3}), react=react)
    evaluated = of_type(events, Evaluated)[0]
    assert evaluated.step == 1 and evaluated.val_loss > 0
    assert Path(of_type(events, CheckpointWritten)[0].path).name == "step00000001.pt"
    refusal = [e for e in of_type(events, LogLine) if e.level == "error"][0]
    assert "hyperparameter change refused: hyperparameter 'lr'" in refusal.message
    applied = of_type(events, HParamsApplied)
    assert [a.hparams.epochs for a in applied] == [1] and applied[0].hparams.lr == 0.05
    assert events[-1].reason == "epochs_done" and events[-1].epoch == 1  # the epochs change ended the run early


def test_swap_carries_matching_weights_and_keeps_the_step_counter(tmp_path: Path, tiny_cnn: Path, write_model) -> None:
    head = write_model("tiny_head.py", TINY_CNN_WIDER_HEAD)
    react = both(once(first_step, Pause()), once(paused, SwapModel(model=ModelRef(path=head), round=1), Resume()))
    run = tmp_path / "run"
    events = run_to_end(tiny_spec(run, tiny_cnn, hparams={"epochs": 2}), react=react)
    swapped = of_type(events, ModelSwapped)[0]
    # conv and fc (weight, bias) carry over; norm (5 tensors with its buffers) and hidden (2) are new.
    assert (swapped.transferred, swapped.total, swapped.step, swapped.round) == (4, 11, 1, 1)
    assert swapped.model.class_name == "TinyCNNHead" and swapped.model.has_residual
    assert swapped.forward_contract == ForwardContract(form="tensor", passes_targets=False)
    records = [r for batch in of_type(events, StepBatch) for r in batch.records]
    assert [r.step for r in records] == [1, 2, 3, 4, 5, 6]
    assert set(records[1].per_module_grad_norm) == {"conv", "norm", "hidden", "fc"}
    assert of_type(events, EpochSummary)[0].round == 1
    assert (run / "models" / "r1_tiny_head.py").exists()


@pytest.mark.parametrize("carry_weights", [True, False])
def test_a_swap_without_carrying_weights_trains_the_new_models_own_initialisation(
    tmp_path: Path, tiny_cnn: Path, write_model, carry_weights: bool
) -> None:
    # The same layers, initialised to a constant: carried, the trained weights overwrite it; not carried, it stays.
    constant = write_model(
        "constant_init.py",
        TINY_CNN.replace("        self.fc = nn.Linear(width, 10)\n", "        self.fc = nn.Linear(width, 10)\n        nn.init.constant_(self.fc.weight, 0.5)\n"),
    )
    swap = SwapModel(model=ModelRef(path=constant), round=1, carry_weights=carry_weights)
    react = both(once(first_step, Pause()), once(paused, swap, CheckpointNow(), Resume()))
    events = run_to_end(tiny_spec(tmp_path / "run", tiny_cnn), react=react)
    swapped = of_type(events, ModelSwapped)[0]
    assert (swapped.transferred, swapped.total) == ((4, 4) if carry_weights else (0, 4))
    written = next(e for e in of_type(events, CheckpointWritten) if e.step == 1)
    weight = load_checkpoint(Path(written.path)).model_state["fc.weight"]
    assert torch.equal(weight, torch.full_like(weight, 0.5)) is (not carry_weights)


def test_a_swap_to_a_broken_model_is_refused_and_training_goes_on(tmp_path: Path, tiny_cnn: Path, write_model) -> None:
    broken = write_model("broken.py", "import torch\n\nclass Net(torch.nn.Module:\n    pass\n")
    react = once(first_step, SwapModel(model=ModelRef(path=broken)))
    events = run_to_end(tiny_spec(tmp_path / "run", tiny_cnn), react=react)
    error = of_type(events, TrainerError)[0]
    assert error.kind == "load" and error.message.startswith("model swap refused: syntax error in broken.py:3")
    assert not of_type(events, ModelSwapped)
    assert events[-1].reason == "epochs_done" and events[-1].step == 6


def test_a_swapped_model_failing_its_first_step_goes_back_to_the_old_one(tmp_path: Path, tiny_cnn: Path, write_model) -> None:
    fragile = write_model(
        "fragile.py",
        TINY_CNN.replace("class TinyCNN", "class Fragile").replace(
            "    def forward(self, x):\n", "    def forward(self, x):\n        if self.training:\n            raise RuntimeError('no training for me')\n"
        ),
    )
    react = once(first_step, SwapModel(model=ModelRef(path=fragile), round=1))
    events = run_to_end(tiny_spec(tmp_path / "run", tiny_cnn), react=react)
    there, back = of_type(events, ModelSwapped)
    assert there.model.class_name == "Fragile" and (there.transferred, there.total) == (4, 4)
    assert back.model.class_name == "TinyCNN" and back.round == 0
    error = of_type(events, TrainerError)[0]
    assert error.kind == "forward" and error.message.startswith("the swapped model failed its first step:")
    assert events[-1].reason == "epochs_done" and events[-1].step == 6


# --------------------------------------------------------------------------- the spawned process


def test_launcher_does_not_import_torch() -> None:
    code = "import sys, copilot.training.launcher; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_hparam_change_through_the_process_shows_in_the_next_step(tmp_path: Path, tiny_cnn: Path) -> None:
    trainer = TrainerProcess(tiny_spec(tmp_path / "run", tiny_cnn, hparams={"epochs": 1000}))
    trainer.start()
    try:
        collect_until(trainer, first_step)
        trainer.send(Pause())
        collect_until(trainer, paused)
        trainer.send(SetHParams(changes={"lr": 0.001}, round=2))
        trainer.send(Resume())
        after = collect_until(trainer, first_step)
        applied = of_type(after, HParamsApplied)[0]
        next_record = of_type(after, StepBatch)[0].records[0]
        assert applied.hparams.lr == 0.001 and applied.round == 2
        assert next_record.lr == 0.001 and next_record.step == applied.step + 1
    finally:
        ending = trainer.stop(timeout=60)
    assert of_type(ending, Finished)[0].reason == "stopped"
    assert of_type(ending, CheckpointWritten)
    assert trainer.exitcode == 0 and not of_type(ending, TrainerError)


def test_a_killed_trainer_is_reported_after_everything_it_sent(tmp_path: Path, tiny_cnn: Path) -> None:
    trainer = TrainerProcess(tiny_spec(tmp_path / "run", tiny_cnn, hparams={"epochs": 1000}))
    trainer.start()
    before = collect_until(trainer, first_step)
    assert trainer.pid is not None
    os.kill(trainer.pid, signal.SIGKILL)
    after = collect_until(trainer, lambda e: isinstance(e, TrainerError))
    killed = after[-1]
    assert killed.kind == "killed" and "SIGKILL" in killed.message and not killed.user_error
    assert isinstance(before[0], RunStarted) and of_type(before, StepBatch)
    assert not trainer.is_alive and trainer.exitcode == -signal.SIGKILL
    assert trainer.poll() == []  # reported once


def test_a_nanogpt_style_model_trains_unchanged_on_the_text_set(tmp_path: Path) -> None:
    spec = TrainerSpec(
        run_folder=tmp_path / "run",
        model=ModelRef(path=CONVENTIONS / "nanogpt_style.py", args={"config.n_layer": 1, "config.n_head": 2, "config.n_embd": 16}),
        data=DataSettings(dataset="text", train_size=32, val_size=16),
        train=TrainSettings.model_validate({"device": "cpu", "log_every": 1, "hparams": {"epochs": 1, "batch_size": 16}}),
    )
    events = run_to_end(spec)
    assert of_type(events, TrainerError) == []
    (started,) = of_type(events, RunStarted)
    assert started.output_form == "(logits, loss) tuple, targets passed to forward"
    # What the advisor's proposals must keep, typed for the sandbox.
    assert started.forward_contract == ForwardContract(form="(logits, loss)", passes_targets=True)
    assert started.ignored_hooks == ("configure_optimizers",)
    (summary,) = of_type(events, EpochSummary)
    # Validation passed the targets too: every position was predicted, not only the last one.
    assert summary.val_accuracy is not None and 0 <= summary.val_accuracy <= 1
    assert math.isfinite(summary.val_loss) and math.isfinite(summary.train_loss)
    records = [record for batch in of_type(events, StepBatch) for record in batch.records]
    assert records and all(record.per_module_grad_norm for record in records)
    assert "outputs (logits, loss) tuple, targets passed to forward" in (tmp_path / "run" / "events.log").read_text()


def test_an_epochs_duration_counts_training_not_the_time_it_stood_paused(tmp_path: Path, tiny_cnn: Path) -> None:
    """The report's "of training" and events.log's epoch times add these up: a proposal that waited
    minutes must not count. The pause here is the input (held for `held_s` in the trainer's own thread,
    where the paused event is handled), and the figure is compared with this same run's clock."""
    held_s = 0.5
    clock: dict[str, float] = {}

    def react(event: Event, commands) -> None:  # type: ignore[no-untyped-def]
        if isinstance(event, RunStarted):
            clock["started"] = time.perf_counter()
        elif first_step(event) and "pause_sent" not in clock:
            clock["pause_sent"] = time.perf_counter()
            commands.put(Pause())
        elif paused(event):
            threading.Event().wait(held_s)  # the human deciding: the trainer thread waits, paused
            commands.put(Resume())
        elif isinstance(event, EpochSummary) and "epoch" not in clock:
            clock["epoch"] = time.perf_counter()

    events = run_to_end(tiny_spec(tmp_path / "run", tiny_cnn, hparams={"epochs": 1}), react=react)
    [epoch] = of_type(events, EpochSummary)
    wall_s = clock["epoch"] - clock["started"]
    assert wall_s > held_s
    assert epoch.duration_s <= wall_s - 0.8 * held_s, (epoch.duration_s, wall_s)
