"""When the advisor looks: the schedule, plateaus, errors and NaN, the budget's end."""

from __future__ import annotations

import time

from copilot.events import (
    DataSpec,
    EpochSummary,
    HParams,
    HParamsApplied,
    ModelSummary,
    ModelSwapped,
    RunStarted,
    TrainerError,
)
from copilot.session.triggers import AssessmentTriggers

DATA = DataSpec(name="shapes", task="classification", input_shape=(3, 32, 32), num_classes=10, train_size=64, val_size=32)
MODEL = ModelSummary(class_name="Net", source_path="net.py", total_params=10, trainable_params=10, modules=())


def started(epochs: int) -> RunStarted:
    return RunStarted(run_id="r", device="cpu", data=DATA, model=MODEL, hparams=HParams(epochs=epochs), time=time.time())


def epoch(number: int, val_loss: float) -> EpochSummary:
    return EpochSummary(
        epoch=number, step=10 * number, train_loss=val_loss, train_accuracy=0.5, val_loss=val_loss,
        val_accuracy=0.5, lr=0.1, samples_per_sec=100.0, duration_s=1.0,
    )  # fmt: skip


def triggers(epochs: int = 20, assess_every: int = 2, plateau_window: int = 3) -> AssessmentTriggers:
    watched = AssessmentTriggers(assess_every=assess_every, plateau_window=plateau_window)
    watched.observe(started(epochs))
    return watched


def test_every_k_epochs_counted_from_the_last_assessment() -> None:
    watched = triggers(assess_every=2)
    watched.observe(epoch(1, 2.0))
    assert watched.due() is None
    watched.observe(epoch(2, 1.0))
    assert watched.due() == "schedule"
    watched.assessed()
    watched.observe(epoch(3, 0.5))
    assert watched.due() is None
    watched.observe(epoch(4, 0.25))
    assert watched.due() == "schedule"


def test_plateau_over_the_window_without_improvement() -> None:
    watched = triggers(assess_every=100, plateau_window=3)
    for number, loss in enumerate([2.0, 1.0, 0.999, 0.998], start=1):  # < 1% better: no progress
        watched.observe(epoch(number, loss))
    assert watched.due() is None
    watched.observe(epoch(5, 0.997))
    assert watched.due() == "plateau"
    watched.assessed()
    assert watched.due() is None


def test_a_new_round_forgets_the_old_best_loss() -> None:
    watched = triggers(assess_every=100, plateau_window=2)
    watched.observe(epoch(1, 0.1))
    watched.observe(HParamsApplied(hparams=HParams(epochs=20, lr=0.01), step=10, round=1))
    watched.observe(epoch(2, 0.5))  # worse than the old model's best, but the first of the new round
    watched.observe(epoch(3, 0.4))
    watched.observe(epoch(4, 0.3))
    assert watched.due() is None


def test_errors_come_first_and_ask_once() -> None:
    watched = triggers(assess_every=1)
    watched.observe(epoch(1, 1.0))
    crash = TrainerError(kind="shape", message="mat1 and mat2 shapes cannot be multiplied", step=0)
    watched.observe(crash)
    assert watched.due() == "error"
    watched.assessed()
    watched.observe(crash)  # a restarted trainer failing the same way
    assert watched.due() is None


def test_nonfinite_values_ask_at_once() -> None:
    watched = triggers()
    watched.observe(TrainerError(kind="nonfinite", message="NaN in the loss at step 7; training is paused", step=7))
    assert watched.due() == "nonfinite"


def test_no_scheduled_look_once_the_budget_is_spent() -> None:
    watched = triggers(epochs=2, assess_every=2, plateau_window=2)
    watched.observe(epoch(1, 1.0))
    watched.observe(epoch(2, 1.0))
    assert watched.due() is None
    watched.observe(TrainerError(kind="oom", message="the trainer process was killed by SIGKILL: the system ran out of memory"))
    assert watched.due() == "error"


def test_a_kill_from_outside_or_a_full_disk_is_no_reason_to_assess() -> None:
    watched = triggers()
    watched.observe(TrainerError(kind="killed", message="the trainer process was killed by SIGTERM (exit code -15)"))
    watched.observe(TrainerError(kind="disk", message="no space left on /runs/r (0 MB free)"))
    assert watched.due() is None


def test_errors_no_model_change_can_fix_ask_nothing() -> None:
    watched = triggers()
    for kind in ("config", "data", "environment"):
        watched.observe(TrainerError(kind=kind, message=f"a {kind} problem", hint="fix it so"))
    assert watched.due() is None


def test_an_error_of_a_model_since_replaced_asks_nothing() -> None:
    watched = triggers()
    watched.observe(TrainerError(kind="forward", message="boom in the old model", step=3))
    watched.observe(ModelSwapped(model=MODEL, step=3, transferred=0, total=2))
    assert watched.due() is None
