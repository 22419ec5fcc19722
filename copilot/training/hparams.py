"""Hyperparameters: validation, the optimizer and schedule they build, and live changes.

Owns turning loose settings (a model file's `HPARAMS`, `[train.hparams]` in
copilot.toml, the environment, flags, the advisor's `SetHParams`) into a checked
`HParams`, and `HParams` into a torch optimizer and learning-rate schedule. Changes
apply between steps without a restart: lr, momentum and weight decay are edited in
place so the optimizer keeps its state (momentum buffers, Adam moments); only a new
optimizer type builds a fresh optimizer. Schedules are closed-form in the step
number, so one can be rebuilt at any step (after a change, or on resume) without
saved scheduler state.

It must not run training steps, read data or talk to the parent process.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
from pydantic import ValidationError
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

from copilot.errors import ConfigError
from copilot.events import HPARAM_KEYS, HParams, OptimizerName, ScheduleName, hparam_bounds

if TYPE_CHECKING:
    from copilot.training.loop import TrainState

OPTIMIZER_NAMES: tuple[str, ...] = typing.get_args(OptimizerName)
SCHEDULE_NAMES: tuple[str, ...] = typing.get_args(ScheduleName)
# The step schedule multiplies the lr by STEP_DECAY at each of these fractions of the budget.
STEP_MILESTONES = (0.5, 0.75)
STEP_DECAY = 0.1
# OneCycleLR's own defaults, written out because rebuilding mid-run must set them by hand.
ONE_CYCLE_DIV_FACTOR = 25.0
ONE_CYCLE_FINAL_DIV_FACTOR = 1e4

_WHERE_SET = "set it in HPARAMS of the model file, [train.hparams] in copilot.toml or the flags"


def resolve_hparams(file_defaults: Mapping[str, object] | None, overrides: Mapping[str, object]) -> HParams:
    """`HParams` from the model file's `HPARAMS`, then `overrides` on top (config, env, flags).

    An unknown key or a value out of range raises `ConfigError` naming the key and
    what it accepts. Optimizer and schedule names match regardless of case.
    """
    merged = {**(file_defaults or {}), **overrides}
    return _validated(merged)


def build_optimizer(parameters: Iterable[nn.Parameter], hparams: HParams) -> torch.optim.Optimizer:
    """The optimizer `hparams.optimizer` names. `momentum` drives SGD (not Nesterov) and RMSprop;
    Adam and AdamW keep their default betas."""
    params = list(parameters)
    if hparams.optimizer == "SGD":
        return torch.optim.SGD(params, lr=hparams.lr, momentum=hparams.momentum, weight_decay=hparams.weight_decay)
    if hparams.optimizer == "Adam":
        return torch.optim.Adam(params, lr=hparams.lr, weight_decay=hparams.weight_decay)
    if hparams.optimizer == "AdamW":
        return torch.optim.AdamW(params, lr=hparams.lr, weight_decay=hparams.weight_decay)
    return torch.optim.RMSprop(params, lr=hparams.lr, momentum=hparams.momentum, weight_decay=hparams.weight_decay)


def build_scheduler(
    optimizer: torch.optim.Optimizer, hparams: HParams, *, steps_per_epoch: int, start_step: int
) -> LRScheduler | None:
    """The lr schedule over a budget of `hparams.epochs * steps_per_epoch` steps, positioned so
    the next optimizer step (number `start_step`, counting from 0) gets the lr the schedule
    gives that step. Returns None for the constant schedule.

    step: lr x0.1 at 50% and again at 75% of the budget. cosine: from lr down to 0 at the end
    of the budget. one-cycle: torch's OneCycleLR with max_lr=lr, momentum left alone (the
    momentum hyperparameter stays what the user set). Past the budget every schedule holds
    its final lr.
    """
    budget = max(hparams.epochs * steps_per_epoch, 1)
    if hparams.schedule == "constant":
        for group in optimizer.param_groups:
            group["lr"] = hparams.lr
        return None
    if hparams.schedule == "one-cycle":
        return _one_cycle(optimizer, hparams.lr, budget, start_step)
    for group in optimizer.param_groups:
        # torch requires initial_lr in each group to start a scheduler anywhere but step 0.
        group["initial_lr"] = hparams.lr
    factor = _step_factor if hparams.schedule == "step" else _cosine_factor
    return LambdaLR(optimizer, lambda step: factor(min(step, budget) / budget), last_epoch=start_step - 1)


def advance_schedule(scheduler: LRScheduler | None) -> None:
    """One scheduler step after an optimizer step; a finished one-cycle holds its last lr
    instead of raising, so a run that outlasts its budget keeps training."""
    if scheduler is None:
        return
    # OneCycleLR's last step is total_steps - 1; stepping on would climb again, then raise.
    if isinstance(scheduler, OneCycleLR) and scheduler.last_epoch >= scheduler.total_steps - 1:
        return
    scheduler.step()


def apply_hparam_changes(state: TrainState, changes: Mapping[str, object], *, steps_per_epoch: int) -> HParams:
    """Apply `changes` to a running `state` between steps and return the new hyperparameters.

    lr, momentum and weight decay edit the optimizer's param groups, keeping its state; a new
    optimizer type builds a fresh optimizer over the same parameters. The schedule is rebuilt
    from the current step (its budget may have changed with epochs or batch size). Batch size,
    grad clip and epochs are recorded in `state.hparams` for the caller and the loop to use.
    A bad change raises `ConfigError` and leaves `state` untouched.
    """
    new = _validated({**state.hparams.model_dump(), **changes})
    if new.optimizer != state.hparams.optimizer:
        parameters = [p for group in state.optimizer.param_groups for p in group["params"]]
        state.optimizer = build_optimizer(parameters, new)
    else:
        for group in state.optimizer.param_groups:
            group["lr"] = new.lr
            group["weight_decay"] = new.weight_decay
            if "momentum" in group:
                group["momentum"] = new.momentum
    state.scheduler = build_scheduler(state.optimizer, new, steps_per_epoch=steps_per_epoch, start_step=state.step)
    state.hparams = new
    return new


def _validated(values: Mapping[str, object]) -> HParams:
    unknown = [key for key in values if key not in HPARAM_KEYS]
    if unknown:
        raise ConfigError(
            f"unknown hyperparameter '{unknown[0]}'",
            f"use one of: {', '.join(HPARAM_KEYS)}",
        )
    normalised = dict(values)
    for key, names in (("optimizer", OPTIMIZER_NAMES), ("schedule", SCHEDULE_NAMES)):
        if isinstance(normalised.get(key), str):
            normalised[key] = _canonical_name(normalised[key], names)
    try:
        return HParams.model_validate(normalised)
    except ValidationError as exc:
        key = str(exc.errors()[0]["loc"][0])
        raise ConfigError(
            f"hyperparameter '{key}' = {values.get(key)!r} is not allowed: it must be {_allowed_values(key)}",
            _WHERE_SET,
        ) from None


def _canonical_name(value: str, names: tuple[str, ...]) -> str:
    folded = value.strip().lower().replace("_", "-")
    for name in names:
        if folded in (name.lower(), name.lower().replace("-", "")):
            return name
    return value


def _allowed_values(key: str) -> str:
    """What a hyperparameter accepts, read from the `HParams` field's own constraints."""
    if key == "optimizer":
        return "one of " + ", ".join(OPTIMIZER_NAMES)
    if key == "schedule":
        return "one of " + ", ".join(SCHEDULE_NAMES)
    field = HParams.model_fields[key]
    bounds = hparam_bounds(key)
    kind = "an integer" if field.annotation is int else "a finite number"
    parts = []
    if "ge" in bounds:
        parts.append(f">= {bounds['ge']:g}")
    if "gt" in bounds:
        parts.append(f"> {bounds['gt']:g}")
    if "le" in bounds:
        parts.append(f"<= {bounds['le']:g}")
    described = f"{kind} {' and '.join(parts)}".strip()
    return f"{described}, or None" if field.default is None else described


def _step_factor(progress: float) -> float:
    return STEP_DECAY ** sum(progress >= milestone for milestone in STEP_MILESTONES)


def _cosine_factor(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _one_cycle(optimizer: torch.optim.Optimizer, max_lr: float, budget: int, start_step: int) -> OneCycleLR:
    total_steps = max(budget, start_step + 1, 2)
    for group in optimizer.param_groups:
        # OneCycleLR fills these only when started at step 0; a rebuild mid-run must supply them.
        group["initial_lr"] = max_lr / ONE_CYCLE_DIV_FACTOR
        group["max_lr"] = max_lr
        group["min_lr"] = group["initial_lr"] / ONE_CYCLE_FINAL_DIV_FACTOR
    return OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=total_steps,
        div_factor=ONE_CYCLE_DIV_FACTOR,
        final_div_factor=ONE_CYCLE_FINAL_DIV_FACTOR,
        cycle_momentum=False,
        last_epoch=start_step - 1,
    )
