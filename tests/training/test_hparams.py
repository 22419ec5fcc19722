"""Hyperparameters: validation messages, lr curves, and changes applied to a running state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from copilot.errors import ConfigError
from copilot.events import HParams
from copilot.training.hparams import (
    advance_schedule,
    apply_hparam_changes,
    build_optimizer,
    build_scheduler,
    resolve_hparams,
)
from copilot.training.loop import train_step
from tests.training.test_loop import build_state, image_batch, small_cnn

torch.set_num_threads(1)


def test_overrides_win_over_the_model_files_defaults() -> None:
    resolved = resolve_hparams({"optimizer": "adamw", "lr": 0.1, "epochs": 3}, {"lr": "0.002", "schedule": "ONE_CYCLE"})
    assert resolved == HParams(optimizer="AdamW", lr=0.002, epochs=3, schedule="one-cycle")
    assert resolve_hparams(None, {}) == HParams()


def test_an_unknown_key_is_named_with_the_keys_allowed() -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_hparams({"learning_rate": 0.1}, {})
    assert "'learning_rate'" in raised.value.message
    assert "lr" in raised.value.hint and "grad_clip" in raised.value.hint


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("lr", 50, ">= 1e-07 and <= 10"),
        ("momentum", -0.5, ">= 0 and <= 0.999"),
        ("batch_size", 0, "an integer >= 1 and <= 65536"),
        ("grad_clip", 0, "> 0, or None"),
        ("optimizer", "LBFGS", "one of SGD, Adam, AdamW, RMSprop"),
        ("schedule", "linear", "one of constant, step, cosine, one-cycle"),
        ("lr", math.nan, "a finite number"),
    ],
)
def test_a_bad_value_names_the_key_and_its_range(key: str, value: object, allowed: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_hparams({}, {key: value})
    assert f"'{key}'" in raised.value.message and allowed in raised.value.message
    assert "HPARAMS" in raised.value.hint


def lr_curve(hparams: HParams, steps_per_epoch: int, start_step: int = 0, steps: int | None = None) -> list[float]:
    """The lr each optimizer step from `start_step` on would use."""
    optimizer = build_optimizer([nn.Parameter(torch.zeros(1))], hparams)
    scheduler = build_scheduler(optimizer, hparams, steps_per_epoch=steps_per_epoch, start_step=start_step)
    curve = []
    for _ in range(steps if steps is not None else hparams.epochs * steps_per_epoch - start_step):
        curve.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        advance_schedule(scheduler)
    return curve


def test_the_step_schedule_divides_by_ten_at_half_and_three_quarters() -> None:
    curve = lr_curve(HParams(lr=1.0, epochs=4, schedule="step"), steps_per_epoch=5)
    assert curve == pytest.approx([1.0] * 10 + [0.1] * 5 + [0.01] * 5)


def test_the_cosine_schedule_falls_to_zero_over_the_budget() -> None:
    curve = lr_curve(HParams(lr=0.4, epochs=2, schedule="cosine"), steps_per_epoch=4, steps=10)
    expected = [0.2 * (1 + math.cos(math.pi * step / 8)) for step in range(8)] + [0.0, 0.0]
    assert curve == pytest.approx(expected, abs=1e-12)


def test_one_cycle_peaks_at_lr_and_holds_its_last_value_past_the_budget() -> None:
    curve = lr_curve(HParams(lr=0.5, epochs=2, schedule="one-cycle"), steps_per_epoch=10, steps=25)
    assert max(curve) == pytest.approx(0.5)
    assert curve[0] == pytest.approx(0.5 / 25)
    assert curve.index(max(curve)) in (5, 6)  # OneCycleLR's default warm-up: 30% of the budget
    assert curve[-1] == curve[-5] < 1e-4


def test_constant_schedule_has_no_scheduler() -> None:
    optimizer = build_optimizer([nn.Parameter(torch.zeros(1))], HParams(lr=0.3))
    assert build_scheduler(optimizer, HParams(lr=0.3), steps_per_epoch=3, start_step=7) is None
    assert optimizer.param_groups[0]["lr"] == 0.3


@pytest.mark.parametrize("schedule", ["step", "cosine", "one-cycle"])
def test_a_schedule_rebuilt_mid_run_continues_the_same_curve(schedule: str) -> None:
    hparams = HParams(lr=0.2, epochs=3, schedule=schedule)
    whole = lr_curve(hparams, steps_per_epoch=6)
    assert lr_curve(hparams, steps_per_epoch=6, start_step=11) == pytest.approx(whole[11:])


@pytest.mark.parametrize(
    ("name", "kind"),
    [("SGD", torch.optim.SGD), ("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW), ("RMSprop", torch.optim.RMSprop)],
)
def test_each_optimizer_is_built_with_the_hyperparameters(name: str, kind: type) -> None:
    optimizer = build_optimizer([nn.Parameter(torch.zeros(2))], HParams(optimizer=name, lr=0.3, momentum=0.5, weight_decay=0.01))
    group = optimizer.param_groups[0]
    assert type(optimizer) is kind and group["lr"] == 0.3 and group["weight_decay"] == 0.01
    assert group.get("momentum", 0.5) == 0.5 and not group.get("nesterov", False)


def test_lr_and_momentum_changes_keep_the_momentum_buffers() -> None:
    torch.manual_seed(0)
    state = build_state(small_cnn(), {"optimizer": "SGD", "lr": 0.1, "momentum": 0.9})
    batch = image_batch()
    train_step(state, *batch, log=False, sample_activations=False)
    optimizer = state.optimizer
    weight = state.model[0].weight
    buffer = optimizer.state[weight]["momentum_buffer"].clone()

    applied = apply_hparam_changes(state, {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.0}, steps_per_epoch=10)
    assert state.optimizer is optimizer and applied.lr == 0.01 and state.hparams == applied
    before = weight.detach().clone()
    train_step(state, *batch, log=False, sample_activations=False)
    # SGD: buffer <- 0.5 * old buffer + grad; the change is lr x buffer, so the old buffer took part.
    expected_buffer = 0.5 * buffer + weight.grad
    assert torch.allclose(optimizer.state[weight]["momentum_buffer"], expected_buffer, atol=1e-6)
    assert torch.allclose(before - weight.detach(), 0.01 * expected_buffer, atol=1e-6)


def test_a_new_optimizer_type_rebuilds_it_and_training_goes_on() -> None:
    torch.manual_seed(0)
    state = build_state(small_cnn(), {"optimizer": "SGD", "lr": 0.05, "momentum": 0.9})
    batch = image_batch()
    train_step(state, *batch, log=False, sample_activations=False)
    apply_hparam_changes(state, {"optimizer": "adam", "lr": 0.001}, steps_per_epoch=10)
    assert isinstance(state.optimizer, torch.optim.Adam) and not state.optimizer.state
    assert state.optimizer.param_groups[0]["params"] == list(state.model.parameters())
    record = train_step(state, *batch, log=True, sample_activations=False).record
    assert record.lr == 0.001 and record.nonfinite is None
    assert len(state.optimizer.state) == len(list(state.model.parameters()))


def test_a_schedule_change_mid_run_starts_from_the_current_step() -> None:
    torch.manual_seed(0)
    state = build_state(small_cnn(), {"lr": 0.1, "epochs": 2}, steps_per_epoch=5)
    batch = image_batch()
    for _ in range(5):
        train_step(state, *batch, log=False, sample_activations=False)
    apply_hparam_changes(state, {"schedule": "step", "grad_clip": 0.5, "batch_size": 4}, steps_per_epoch=5)
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)  # step 5 of 10 is past the first milestone
    assert (state.hparams.grad_clip, state.hparams.batch_size) == (0.5, 4)
    apply_hparam_changes(state, {"epochs": 4}, steps_per_epoch=5)  # now step 5 of 20: back to the full lr
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_a_bad_change_raises_and_leaves_the_state_alone() -> None:
    state = build_state(small_cnn(), {"optimizer": "SGD", "lr": 0.1})
    optimizer, hparams = state.optimizer, state.hparams
    with pytest.raises(ConfigError, match="'momentum'"):
        apply_hparam_changes(state, {"optimizer": "Adam", "momentum": 2.0}, steps_per_epoch=10)
    assert state.optimizer is optimizer and state.hparams is hparams
