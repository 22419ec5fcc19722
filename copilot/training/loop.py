"""The training step, the end of an epoch and evaluation: the inner loop of the trainer.

Owns `TrainState` (model, loss, optimizer, schedule, instruments and the running epoch
sums) and what one step does: forward, loss, backward, measurement on logged steps,
clipping, optimizer and scheduler step. A step that is not logged only adds its loss and
correct predictions to on-device sums; a logged step measures everything on the device
and copies it to the host in a single transfer. Gradients are measured before clipping,
so clipping never hides an explosion.

Under several ranks (`state.group`), every figure it reports is global: a logged step's
loss and accuracy are summed across ranks in one small collective, gradient norms are
measured after DDP's all-reduce (on rank 0 alone, which is the only one that reports),
and the epoch's and the validation's sums are reduced once each. Samples per second is
the whole group's.

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
from copilot.training.distributed import SINGLE_PROCESS, RankGroup
from copilot.training.hparams import advance_schedule
from copilot.training.instruments import ActivationSample, Instruments, WeightSnapshot, fetch_together
from copilot.training.model_outputs import OutputContract, UnreadableOutputs, read_outputs

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
    contract: OutputContract = field(default_factory=OutputContract)
    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken (global)
    initial_loss: float | None = None
    round: int = 0
    group: RankGroup = SINGLE_PROCESS  # the ranks training together; `model` is DDP-wrapped when there are several
    # Running sums of the epoch in progress, kept on the device so a step never waits for the host.
    _epoch_loss_sum: Tensor | None = field(default=None, init=False, repr=False)
    _epoch_correct: Tensor | None = field(default=None, init=False, repr=False)
    _epoch_samples: int = field(default=0, init=False, repr=False)
    _epoch_predictions: Tensor | None = field(default=None, init=False, repr=False)
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


def make_loss_fn(model: nn.Module, task: Task, contract: OutputContract = OutputContract()) -> LossFunction:
    """The file's `loss_function(outputs, targets)` if the model defines one (it gets the outputs
    as forward returned them, as it always has), else the loss the model returned (nanoGPT's
    `(logits, loss)`), else cross-entropy on the logits (over every position for the sequence task)."""
    own = getattr(model, "loss_function", None)
    if callable(own):
        return own
    class_dim_last = contract.class_dim == -1

    def returned_or_cross_entropy(outputs: object, targets: Tensor) -> Tensor:
        read = read_outputs(outputs)
        if read.loss is not None:
            return read.loss
        if task == "sequence" and class_dim_last:
            return _sequence_cross_entropy(read.logits, targets)
        return F.cross_entropy(read.logits, targets)  # [batch, classes, sequence] is its native layout

    return returned_or_cross_entropy


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
        outputs = state.contract.forward(model, inputs, targets)
    loss = state.loss_fn(outputs, targets)
    loss.backward()
    counted = _add_to_epoch_sums(state, loss, outputs, targets, batch_size=len(inputs))
    if log and state.group.world_size > 1:
        loss, counted = _summed_across_ranks(state.group, loss, counted, len(inputs))
        log = state.group.is_main  # the other ranks took part in the sum; only rank 0 measures and reports
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
        state, inputs, targets, loss, counted, lr, gradient_norms, weights_before, activation_sample
    )


def finish_epoch(state: TrainState) -> tuple[float, float | None]:
    """Mean training loss and accuracy of the epoch just finished (one wait for the device);
    resets the sums and counts the epoch."""
    if state._epoch_samples == 0:
        loss, accuracy = math.nan, None
    else:
        # Samples were counted, so _add_to_epoch_sums created all three sums on the device.
        loss_total, correct_total, predicted_total = state._epoch_loss_sum, state._epoch_correct, state._epoch_predictions
        assert loss_total is not None and correct_total is not None and predicted_total is not None
        samples = torch.tensor(float(state._epoch_samples), dtype=torch.float64, device=loss_total.device)
        summed = state.group.sum_across(torch.stack((loss_total, correct_total.double(), predicted_total.double(), samples)))
        loss_sum, correct, predicted, samples_total = fetch_together(*summed)
        loss = loss_sum[0] / samples_total[0]
        defined = state._epoch_accuracy_defined and predicted[0] > 0
        accuracy = correct[0] / predicted[0] if defined else None
    state._epoch_loss_sum = state._epoch_correct = state._epoch_predictions = None
    state._epoch_samples = 0
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
    counted_sum = torch.zeros(2, dtype=torch.int64, device=state.device)  # correct, predictions
    samples = 0
    accuracy_defined = True
    try:
        with torch.no_grad():
            for inputs, targets in batches:
                outputs = state.contract.forward(model, inputs, targets)
                loss_sum += state.loss_fn(outputs, targets).detach() * len(inputs)
                counted = correct_predictions(outputs, targets, state.task, state.contract)
                if counted is None:
                    accuracy_defined = False
                else:
                    counted_sum += counted
                samples += len(inputs)
    finally:
        model.train(was_training)
        state.restart_throughput_clock()
    if samples == 0:
        raise DataError("the validation set gave no batches", "use a larger validation set or a smaller batch size")
    sample_count = torch.tensor(float(samples), dtype=torch.float64, device=state.device)
    # Every rank's shard, summed: never rank 0's shard alone.
    summed = state.group.sum_across(torch.cat((loss_sum.reshape(1), counted_sum.double(), sample_count.reshape(1))))
    loss_total, correct_total, predictions, samples_total = fetch_together(*summed)
    accuracy = correct_total[0] / predictions[0] if accuracy_defined and predictions[0] else None
    return loss_total[0] / samples_total[0], accuracy


def predict(state: TrainState, batches: Iterable[tuple[Tensor, Tensor]], samples: int) -> Tensor:
    """The model's logits on the first `samples` inputs of `batches`, classes last, on the CPU, in
    eval mode and without gradients: a trial's answer on the fixed validation samples. The targets
    go to forward only for a model that takes them (it returns every position's logits then)."""
    model = state.model
    was_training = model.training
    model.eval()
    kept: list[Tensor] = []
    taken = 0
    try:
        with torch.no_grad():
            for inputs, targets in batches:
                if taken >= samples:
                    break
                wanted = samples - taken
                try:
                    logits = read_outputs(state.contract.forward(model, inputs[:wanted], targets[:wanted])).logits
                except UnreadableOutputs as exc:
                    raise DataError(f"a trial cannot score the model's outputs: {exc}", "return the logits from forward()") from None
                if state.contract.class_dim == 1:
                    logits = logits.movedim(1, -1)
                kept.append(logits.detach().float().cpu())
                taken += len(kept[-1])
    finally:
        model.train(was_training)
        state.restart_throughput_clock()
    return torch.cat(kept)


def correct_predictions(outputs: object, targets: Tensor, task: Task, contract: OutputContract) -> Tensor | None:
    """[correct argmax predictions, predictions made] on the device: per sample for
    classification, per token for the sequence task, with the classes where `contract` says.
    Negative targets are not predicted (nanoGPT's `ignore_index=-1`, PyTorch's -100). None
    when the logits do not have that shape (a model with its own loss may output anything)."""
    try:
        logits = read_outputs(outputs).logits
    except UnreadableOutputs:
        return None
    if targets.dtype.is_floating_point:
        return None
    class_dim = contract.class_dim
    scores_shape = logits.shape[:1] + logits.shape[2:] if class_dim == 1 else logits.shape[:-1]
    if logits.dim() != (2 if task == "classification" else 3) or scores_shape != targets.shape:
        return None
    predicted = targets >= 0
    correct = (logits.detach().argmax(dim=class_dim) == targets) & predicted
    return torch.stack((correct.sum(), predicted.sum()))


def _sequence_cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    return F.cross_entropy(outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1))


def _add_to_epoch_sums(state: TrainState, loss: Tensor, outputs: object, targets: Tensor, batch_size: int) -> Tensor | None:
    if state._epoch_loss_sum is None or state._epoch_correct is None or state._epoch_predictions is None:
        state._epoch_loss_sum = torch.zeros((), dtype=torch.float64, device=loss.device)
        state._epoch_correct = torch.zeros((), dtype=torch.int64, device=loss.device)
        state._epoch_predictions = torch.zeros((), dtype=torch.int64, device=loss.device)
    state._epoch_loss_sum.add_(loss.detach(), alpha=batch_size)
    state._epoch_samples += batch_size
    counted = correct_predictions(outputs, targets, state.task, state.contract)
    if counted is None:
        state._epoch_accuracy_defined = False
    else:
        state._epoch_correct.add_(counted[0])
        state._epoch_predictions.add_(counted[1])
    return counted


def _summed_across_ranks(group: RankGroup, loss: Tensor, counted: Tensor | None, batch_size: int) -> tuple[Tensor, Tensor | None]:
    """A logged step's loss (mean per sample) and [correct, predicted] over every rank's batch, in one all-reduce."""
    correct_and_predicted = counted.double() if counted is not None else torch.zeros(2, dtype=torch.float64, device=loss.device)
    samples = torch.full((1,), float(batch_size), dtype=torch.float64, device=loss.device)
    summed = group.sum_across(torch.cat(((loss.detach().double() * batch_size).reshape(1), correct_and_predicted, samples)))
    return (summed[0] / summed[3]).to(loss.dtype), (summed[1:3].long() if counted is not None else None)


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
    targets: Tensor,
    loss: Tensor,
    counted: Tensor | None,
    lr: float,
    gradient_norms: tuple[Tensor, Tensor],
    weights_before: WeightSnapshot,
    activation_sample: ActivationSample | None,
) -> StepResult:
    instruments = state.instruments
    module_grad_norms, total_grad_norm = gradient_norms
    weight_norms = instruments.weight_norms(weights_before)
    correct_and_predicted = counted if counted is not None else torch.zeros(2, device=loss.device)
    fetched = fetch_together(
        loss, correct_and_predicted, total_grad_norm, module_grad_norms, weight_norms, *_stacked(activation_sample)
    )
    (loss_value,), (correct_count, predicted_count), (total_norm,), module_norms, weight_values = fetched[:5]
    now = time.perf_counter()
    elapsed = now - (state._interval_started or now)
    # Every rank takes as many samples per step as rank 0: the group's throughput.
    samples_per_sec = state._interval_samples * state.group.world_size / elapsed if elapsed > 0 else 0.0
    state._interval_started, state._interval_samples = now, 0

    names = instruments.module_names
    modules = len(names)
    before, change, after = (weight_values[i * modules : (i + 1) * modules] for i in range(3))
    nonfinite = _first_nonfinite(names, loss_value, module_norms, before, after)
    if nonfinite is not None and nonfinite.where == "loss":
        located = instruments.locate_nonfinite_output(inputs, weights_before, targets, state.contract)
        nonfinite = NonFinite(where="loss", module=located)
    record = StepRecord(
        epoch=state.epoch + 1,
        step=state.step,
        loss=loss_value,
        accuracy=correct_count / predicted_count if counted is not None and predicted_count else None,
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
