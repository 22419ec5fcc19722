"""The training step, the end of an epoch and evaluation: the inner loop of the trainer.

Owns `TrainState` (model, loss, optimizer, schedule, instruments and the running epoch
sums) and what one step does: forward, loss, backward, measurement on logged steps,
clipping, optimizer and scheduler step. A step that is not logged only adds its loss and
correct predictions to on-device sums; a logged step measures everything on the device
and copies it to the host in a single transfer. Gradients are measured before clipping,
so clipping never hides an explosion.

It does no I/O, no printing and no event sending: the worker turns `StepResult`s into
events. It never decides when to log; the caller passes `log` and `sample_activations`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler

from copilot.errors import DataError
from copilot.events import ActivationStats, HParams, NonFinite, StepRecord, Task
from copilot.training.hparams import advance_schedule
from copilot.training.instruments import ActivationSample, Instruments, WeightSnapshot, fetch_together

LossFunction = Callable[[Tensor, Tensor], Tensor]


@dataclass
class TrainState:
    """Everything a training step reads and changes. The worker owns it and checkpoints it."""

    model: nn.Module
    loss_fn: LossFunction
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler | None
    hparams: HParams
    instruments: Instruments
    task: Task
    device: torch.device
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken (global)
    initial_loss: float | None = None
    round: int = 0
    # Running sums of the epoch in progress, kept on the device so a step never waits for the host.
    _epoch_loss_sum: Tensor | None = field(default=None, init=False, repr=False)
    _epoch_correct: Tensor | None = field(default=None, init=False, repr=False)
    _epoch_samples: int = field(default=0, init=False, repr=False)
    _epoch_predictions: int = field(default=0, init=False, repr=False)
    _epoch_accuracy_defined: bool = field(default=True, init=False, repr=False)
    # Throughput is measured between logged steps, at the transfer that waits for the device anyway.
    _interval_started: float | None = field(default=None, init=False, repr=False)
    _interval_samples: int = field(default=0, init=False, repr=False)

    def restart_throughput_clock(self) -> None:
        """Leave time not spent training (a pause, an evaluation) out of samples per second."""
        self._interval_started = None
        self._interval_samples = 0


@dataclass(frozen=True)
class StepResult:
    record: StepRecord | None  # only on logged steps
    activations: ActivationStats | None  # only when activations were sampled


def make_loss_fn(model: nn.Module, task: Task) -> LossFunction:
    """The model's own `loss_function(outputs, targets)` if it defines one, else cross-entropy
    (over every position of a [batch, sequence, vocabulary] output for the sequence task)."""
    own = getattr(model, "loss_function", None)
    if callable(own):
        return own
    return _sequence_cross_entropy if task == "sequence" else F.cross_entropy


def train_step(state: TrainState, inputs: Tensor, targets: Tensor, *, log: bool, sample_activations: bool) -> StepResult:
    """One optimizer step on one batch; measures everything when `log`, activations when
    `sample_activations`, and waits for the device at most once (never when neither is set,
    except once on the run's first step to read the initial loss)."""
    model = state.model
    if not model.training:
        model.train()
    if state._interval_started is None:
        state._interval_started = time.perf_counter()
    state.optimizer.zero_grad(set_to_none=True)
    sampling = state.instruments.sampling_activations() if sample_activations else nullcontext()
    with sampling as activation_sample:
        outputs = model(inputs)
    loss = state.loss_fn(outputs, targets)
    loss.backward()
    correct = _add_to_epoch_sums(state, loss, outputs, targets, batch_size=len(inputs))
    if state.initial_loss is None and state.step == 0:
        state.initial_loss = loss.item()
    lr = float(state.optimizer.param_groups[0]["lr"])

    gradient_norms = state.instruments.gradient_norms() if log else None
    weights_before = state.instruments.snapshot_weights() if log else None
    _clip_gradients(state, gradient_norms[1] if gradient_norms is not None else None)
    state.optimizer.step()
    advance_schedule(state.scheduler)
    state.step += 1
    state._interval_samples += len(inputs)

    if gradient_norms is None or weights_before is None:
        activations = _activation_stats(state, activation_sample, *fetch_together(*_stacked(activation_sample)))
        return StepResult(record=None, activations=activations)
    return _measured_step(
        state, inputs, loss, correct, targets, lr, gradient_norms, weights_before, activation_sample
    )


def finish_epoch(state: TrainState) -> tuple[float, float | None]:
    """Mean training loss and accuracy of the epoch just finished (one wait for the device);
    resets the sums and counts the epoch."""
    if state._epoch_samples == 0:
        loss, accuracy = math.nan, None
    else:
        loss_sum, correct = fetch_together(state._epoch_loss_sum, state._epoch_correct)
        loss = loss_sum[0] / state._epoch_samples
        defined = state._epoch_accuracy_defined and state._epoch_predictions > 0
        accuracy = correct[0] / state._epoch_predictions if defined else None
    state._epoch_loss_sum = state._epoch_correct = None
    state._epoch_samples = state._epoch_predictions = 0
    state._epoch_accuracy_defined = True
    state.epoch += 1
    return loss, accuracy


def evaluate(state: TrainState, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[float, float | None]:
    """Validation loss (mean per sample) and accuracy over `batches`, without gradients and in
    eval mode; the model's previous mode is restored. One wait for the device at the end."""
    model = state.model
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=state.device)
    correct_sum = torch.zeros((), dtype=torch.int64, device=state.device)
    samples = predictions = 0
    accuracy_defined = True
    try:
        with torch.no_grad():
            for inputs, targets in batches:
                outputs = model(inputs)
                loss_sum += state.loss_fn(outputs, targets).detach() * len(inputs)
                correct = correct_predictions(outputs, targets, state.task)
                if correct is None:
                    accuracy_defined = False
                else:
                    correct_sum += correct
                    predictions += targets.numel()
                samples += len(inputs)
    finally:
        model.train(was_training)
        state.restart_throughput_clock()
    if samples == 0:
        raise DataError("the validation set gave no batches", "use a larger validation set or a smaller batch size")
    loss_total, correct_total = fetch_together(loss_sum, correct_sum)
    accuracy = correct_total[0] / predictions if accuracy_defined and predictions else None
    return loss_total[0] / samples, accuracy


def predict(state: TrainState, batches: Iterable[tuple[Tensor, Tensor]], samples: int) -> Tensor:
    """The model's outputs on the first `samples` inputs of `batches`, on the CPU, in eval mode and
    without gradients (a trial's answer on the fixed validation samples; the targets are not used)."""
    model = state.model
    was_training = model.training
    model.eval()
    kept: list[Tensor] = []
    taken = 0
    try:
        with torch.no_grad():
            for inputs, _targets in batches:
                if taken >= samples:
                    break
                outputs = model(inputs[: samples - taken])
                if not isinstance(outputs, Tensor):
                    raise DataError(
                        f"the model returned {type(outputs).__name__}, not a tensor of outputs; a trial cannot score it",
                        "return the logits from forward() (a model with its own loss_function may still return a tensor)",
                    )
                kept.append(outputs.detach().float().cpu())
                taken += len(kept[-1])
    finally:
        model.train(was_training)
        state.restart_throughput_clock()
    return torch.cat(kept)


def correct_predictions(outputs: Tensor, targets: Tensor, task: Task) -> Tensor | None:
    """Count of correct argmax predictions on the device: per sample for classification
    ([B, C] outputs), per token for the sequence task ([B, S, V] outputs). None when the
    outputs do not have that shape (a model with its own loss may output anything)."""
    if not isinstance(outputs, Tensor) or targets.dtype.is_floating_point:
        return None
    prediction_dims = 1 if task == "classification" else 2
    if outputs.dim() != prediction_dims + 1 or outputs.shape[:-1] != targets.shape:
        return None
    return (outputs.detach().argmax(dim=-1) == targets).sum()


def _sequence_cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


def _add_to_epoch_sums(state: TrainState, loss: Tensor, outputs: Tensor, targets: Tensor, batch_size: int) -> Tensor | None:
    if state._epoch_loss_sum is None or state._epoch_correct is None:
        state._epoch_loss_sum = torch.zeros((), dtype=torch.float64, device=loss.device)
        state._epoch_correct = torch.zeros((), dtype=torch.int64, device=loss.device)
    state._epoch_loss_sum.add_(loss.detach(), alpha=batch_size)
    state._epoch_samples += batch_size
    correct = correct_predictions(outputs, targets, state.task)
    if correct is None:
        state._epoch_accuracy_defined = False
    else:
        state._epoch_correct.add_(correct)
        state._epoch_predictions += targets.numel()
    return correct


def _clip_gradients(state: TrainState, total_norm: Tensor | None) -> None:
    """Clip to `hparams.grad_clip`, after measuring; reuses the measured norm on logged steps."""
    max_norm = state.hparams.grad_clip
    if max_norm is None:
        return
    parameters = state.instruments.parameters
    if total_norm is None:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)
    else:
        torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=True)


def _measured_step(
    state: TrainState,
    inputs: Tensor,
    loss: Tensor,
    correct: Tensor | None,
    targets: Tensor,
    lr: float,
    gradient_norms: tuple[Tensor, Tensor],
    weights_before: WeightSnapshot,
    activation_sample: ActivationSample | None,
) -> StepResult:
    instruments = state.instruments
    module_grad_norms, total_grad_norm = gradient_norms
    weight_norms = instruments.weight_norms(weights_before)
    counted = correct if correct is not None else torch.zeros((), device=loss.device)
    fetched = fetch_together(
        loss, counted, total_grad_norm, module_grad_norms, weight_norms, *_stacked(activation_sample)
    )
    (loss_value,), (correct_count,), (total_norm,), module_norms, weight_values = fetched[:5]
    now = time.perf_counter()
    elapsed = now - (state._interval_started or now)
    samples_per_sec = state._interval_samples / elapsed if elapsed > 0 else 0.0
    state._interval_started, state._interval_samples = now, 0

    names = instruments.module_names
    modules = len(names)
    before, change, after = (weight_values[i * modules : (i + 1) * modules] for i in range(3))
    nonfinite = _first_nonfinite(names, loss_value, module_norms, before, after)
    if nonfinite is not None and nonfinite.where == "loss":
        located = instruments.locate_nonfinite_output(inputs, weights_before)
        nonfinite = NonFinite(where="loss", module=located)
    record = StepRecord(
        epoch=state.epoch + 1,
        step=state.step,
        loss=loss_value,
        accuracy=correct_count / targets.numel() if correct is not None else None,
        lr=lr,
        samples_per_sec=samples_per_sec,
        device_memory_mb=_device_memory_mb(state.device),
        total_grad_norm=total_norm,
        per_module_grad_norm=dict(zip(names, module_norms)),
        # A module whose weights were all zero has no defined ratio: it is left out for that step.
        per_module_update_ratio={
            name: moved / size for name, moved, size in zip(names, change, before) if size != 0
        },
        nonfinite=nonfinite,
    )
    return StepResult(record=record, activations=_activation_stats(state, activation_sample, *fetched[5:]))


def _first_nonfinite(
    names: list[str], loss: float, grad_norms: list[float], weights_before: list[float], weights_after: list[float]
) -> NonFinite | None:
    """Where a NaN or infinity showed up, most telling first: the weights the step started from
    (they cause everything after), the loss, the gradients, then the weights the step produced."""

    def first_module(norms: list[float]) -> str | None:
        return next((name for name, norm in zip(names, norms) if not math.isfinite(norm)), None)

    if (module := first_module(weights_before)) is not None:
        return NonFinite(where="weight", module=module)
    if not math.isfinite(loss):
        return NonFinite(where="loss")
    if (module := first_module(grad_norms)) is not None:
        return NonFinite(where="gradient", module=module)
    if (module := first_module(weights_after)) is not None:
        return NonFinite(where="weight", module=module)
    return None


def _stacked(sample: ActivationSample | None) -> list[Tensor]:
    """Activation fractions as two device vectors (dead, saturated) for the shared transfer."""
    if sample is None:
        return []
    return [_vector(sample.dead_fraction.values()), _vector(sample.saturated_fraction.values())]


def _vector(values: Iterable[Tensor]) -> Tensor:
    listed = list(values)
    return torch.stack(listed) if listed else torch.zeros(0)


def _activation_stats(
    state: TrainState, sample: ActivationSample | None, dead: list[float] | None = None, saturated: list[float] | None = None
) -> ActivationStats | None:
    if sample is None or dead is None or saturated is None:
        return None
    return ActivationStats(
        epoch=state.epoch + 1,
        step=state.step,
        dead_fraction=dict(zip(sample.dead_fraction, dead)),
        saturated_fraction=dict(zip(sample.saturated_fraction, saturated)),
    )


def _device_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.memory_allocated(device) / 2**20
