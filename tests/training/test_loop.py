"""Training steps on tiny real models: what a logged step reports, and what it costs the host."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from copilot.errors import DataError
from copilot.events import Task
from copilot.training.hparams import build_optimizer, build_scheduler, resolve_hparams
from copilot.training.instruments import Instruments
from copilot.training.loop import TrainState, evaluate, finish_epoch, make_loss_fn, train_step
from copilot.training.model_outputs import OutputContract

torch.set_num_threads(1)

HOST_WAITS = {"item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy"}


def build_state(
    model: nn.Module, hparams: Mapping[str, object] | None = None, *, task: Task = "classification", steps_per_epoch: int = 10
) -> TrainState:
    resolved = resolve_hparams(None, dict(hparams or {}))
    optimizer = build_optimizer(model.parameters(), resolved)
    return TrainState(
        model=model,
        loss_fn=make_loss_fn(model, task),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, resolved, steps_per_epoch=steps_per_epoch, start_step=0),
        hparams=resolved,
        instruments=Instruments(model),
        task=task,
        device=torch.device("cpu"),
    )


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.Sigmoid(), nn.Flatten(), nn.Linear(64, 5)
    )


def image_batch(seed: int = 0, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, 4, 4, generator=generator), torch.randint(0, 5, (size,), generator=generator)


class HostWaitCounter(TorchFunctionMode):
    """Counts the calls that copy a tensor to the host (each one waits for the device)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func: Callable, types: object, args: tuple = (), kwargs: dict | None = None):
        if getattr(func, "__name__", "") in HOST_WAITS:
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_update_ratios_are_the_actual_change_under_adam() -> None:
    torch.manual_seed(0)
    state = build_state(small_cnn(), {"optimizer": "Adam", "lr": 0.01})
    inputs, targets = image_batch()
    train_step(state, inputs, targets, log=False, sample_activations=False)  # Adam moments now non-zero
    before = copy.deepcopy(state.model)
    record = train_step(state, inputs, targets, log=True, sample_activations=False).record

    expected = {}
    with torch.no_grad():
        for name in ("0", "2", "5"):
            old, new = before.get_submodule(name), state.model.get_submodule(name)
            change = math.sqrt(sum((n - o).norm() ** 2 for n, o in zip(new.parameters(), old.parameters())))
            size = math.sqrt(sum(o.norm() ** 2 for o in old.parameters()))
            expected[name] = change / size
    assert record.per_module_update_ratio == pytest.approx(expected, rel=1e-4)


def test_gradient_norms_are_measured_before_clipping() -> None:
    torch.manual_seed(0)
    model = small_cnn()
    reference = copy.deepcopy(model)
    state = build_state(model, {"optimizer": "SGD", "lr": 0.1, "grad_clip": 1e-3})
    inputs, targets = image_batch()
    record = train_step(state, inputs, targets, log=True, sample_activations=False).record

    F.cross_entropy(reference(inputs), targets).backward()
    unclipped = math.sqrt(sum(p.grad.norm() ** 2 for p in reference.parameters()))
    assert record.total_grad_norm == pytest.approx(unclipped, rel=1e-5)
    assert unclipped > 1e-2
    with torch.no_grad():
        applied = math.sqrt(sum((p - r).norm() ** 2 for p, r in zip(model.parameters(), reference.parameters())))
    assert applied == pytest.approx(0.1 * 1e-3, rel=1e-3)  # the step used the clipped gradient


def test_an_infinite_weight_is_traced_to_its_module() -> None:
    torch.manual_seed(0)
    state = build_state(small_cnn())
    with torch.no_grad():
        state.model[2].weight[0, 0, 0, 0] = math.inf
    record = train_step(state, *image_batch(), log=True, sample_activations=False).record
    assert record.nonfinite is not None
    assert (record.nonfinite.where, record.nonfinite.module) == ("weight", "2")
    assert math.isnan(record.loss) or math.isinf(record.loss)


class LogOfShifted(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x - 1000.0)


def test_a_nan_producing_layer_is_named_for_a_nonfinite_loss() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), LogOfShifted(), nn.Linear(6, 3))
    state = build_state(model)
    record = train_step(state, torch.randn(4, 6), torch.tensor([0, 1, 2, 0]), log=True, sample_activations=False).record
    assert (record.nonfinite.where, record.nonfinite.module) == ("loss", "2")


def test_a_nonfinite_gradient_is_named_by_the_first_module_that_has_one() -> None:
    torch.manual_seed(0)
    state = build_state(small_cnn())
    state.model[5].weight.register_hook(lambda grad: grad * math.inf)
    record = train_step(state, *image_batch(), log=True, sample_activations=False).record
    assert math.isfinite(record.loss)
    assert (record.nonfinite.where, record.nonfinite.module) == ("gradient", "5")
    assert math.isinf(record.per_module_grad_norm["5"]) and math.isfinite(record.per_module_grad_norm["0"])


def test_a_healthy_step_reports_no_nonfinite_and_every_module() -> None:
    torch.manual_seed(0)
    state = build_state(small_cnn(), {"lr": 0.05})
    result = train_step(state, *image_batch(), log=True, sample_activations=True)
    record = result.record
    assert record.nonfinite is None
    assert list(record.per_module_grad_norm) == ["0", "2", "5"]
    assert record.step == 1 and record.epoch == 1 and record.lr == 0.05
    assert record.samples_per_sec > 0 and record.device_memory_mb is None
    assert set(result.activations.dead_fraction) == {"1"}
    assert set(result.activations.saturated_fraction) == {"3"}


def test_steps_wait_for_the_host_once_when_logged_and_never_otherwise() -> None:
    torch.manual_seed(0)
    state = build_state(small_cnn(), {"optimizer": "SGD", "momentum": 0.9, "grad_clip": 1.0})
    inputs, targets = image_batch()
    train_step(state, inputs, targets, log=False, sample_activations=False)  # reads the initial loss once
    with HostWaitCounter() as quiet:
        result = train_step(state, inputs, targets, log=False, sample_activations=False)
    assert quiet.calls == [] and result.record is None and result.activations is None
    with HostWaitCounter() as logged:
        result = train_step(state, inputs, targets, log=True, sample_activations=True)
    assert logged.calls == ["tolist"]
    assert result.record is not None and result.activations is not None


def test_initial_loss_is_the_first_steps_loss() -> None:
    torch.manual_seed(0)
    state = build_state(small_cnn())
    first = train_step(state, *image_batch(), log=True, sample_activations=False).record
    train_step(state, *image_batch(seed=1), log=False, sample_activations=False)
    assert state.initial_loss == pytest.approx(first.loss)


def test_accuracy_for_classification_is_the_argmax_match_rate() -> None:
    model = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
    state = build_state(model, {"lr": 1e-7})
    inputs = torch.eye(3).repeat(2, 1)  # argmax of each row is its own index
    targets = torch.tensor([0, 1, 2, 0, 0, 0])
    record = train_step(state, inputs, targets, log=True, sample_activations=False).record
    assert record.accuracy == pytest.approx(4 / 6)


class TokenEcho(nn.Module):
    """[B, S] tokens -> [B, S, V] logits that predict each input token."""

    def __init__(self, vocabulary: int = 5) -> None:
        super().__init__()
        self.logits = nn.Embedding(vocabulary, vocabulary)
        with torch.no_grad():
            self.logits.weight.copy_(torch.eye(vocabulary) * 10)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits(tokens)


def test_accuracy_for_sequences_counts_tokens_and_epochs_average_them() -> None:
    state = build_state(TokenEcho(), {"lr": 1e-7}, task="sequence")
    tokens = torch.tensor([[0, 1, 2, 3], [4, 0, 1, 2]])
    targets = tokens.clone()
    targets[0, :3] = 4  # 3 of 8 tokens wrong
    record = train_step(state, tokens, targets, log=True, sample_activations=False).record
    assert record.accuracy == pytest.approx(5 / 8)
    train_step(state, tokens[:1], tokens[:1], log=False, sample_activations=False)  # 4 of 4 right
    loss, accuracy = finish_epoch(state)
    assert accuracy == pytest.approx(9 / 12)
    assert state.epoch == 1 and math.isfinite(loss)


class Regressor(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).squeeze(1)

    def loss_function(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return ((outputs - targets.float()) ** 2).mean()


def test_a_models_own_loss_function_is_used_and_accuracy_is_then_undefined() -> None:
    torch.manual_seed(0)
    state = build_state(Regressor())
    inputs, targets = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    record = train_step(state, inputs, targets, log=True, sample_activations=False).record
    assert record.accuracy is None
    assert finish_epoch(state)[1] is None
    val_loss, val_accuracy = evaluate(state, [(inputs, targets)])
    with torch.no_grad():
        expected = ((state.model(inputs) - targets.float()) ** 2).mean().item()
    assert val_loss == pytest.approx(expected, rel=1e-5) and val_accuracy is None


def test_finish_epoch_weights_the_mean_loss_by_batch_size_and_resets() -> None:
    torch.manual_seed(0)
    state = build_state(small_cnn(), {"lr": 1e-7})
    big, small = image_batch(seed=0, size=6), image_batch(seed=1, size=2)
    losses = []
    for batch in (big, small):
        with torch.no_grad():
            losses.append(F.cross_entropy(state.model(batch[0]), batch[1]).item())
        train_step(state, *batch, log=False, sample_activations=False)
    loss, _ = finish_epoch(state)
    assert loss == pytest.approx((6 * losses[0] + 2 * losses[1]) / 8, rel=1e-4)
    assert finish_epoch(state)[0] != finish_epoch(state)[0]  # an epoch without steps has no mean (NaN)
    assert state.epoch == 3


def test_evaluate_runs_in_eval_mode_and_restores_training_mode() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.9), nn.Linear(3, 2))
    state = build_state(model)
    inputs, targets = torch.randn(8, 3), torch.randint(0, 2, (8,))
    in_halves = evaluate(state, [(inputs[:4], targets[:4]), (inputs[4:], targets[4:])])
    assert in_halves == pytest.approx(evaluate(state, [(inputs, targets)]))  # dropout off: deterministic, batch-size independent
    assert model.training
    with pytest.raises(DataError, match="no batches"):
        evaluate(state, [])


class TinyGPT(nn.Module):
    """forward(idx, targets=None) -> (logits, loss) as nanoGPT writes it, with a loss of its own
    (scaled, so it cannot be mistaken for copilot's cross-entropy) that skips targets of -1."""

    def __init__(self, vocab: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8)
        self.head = nn.Linear(8, vocab)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        logits = self.head(self.embed(idx))
        if targets is None:
            return logits[:, [-1], :], None
        return logits, 3.0 * F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)


def test_a_model_with_its_own_loss_gets_the_targets_and_ignored_positions_are_not_counted() -> None:
    torch.manual_seed(0)
    model = TinyGPT()
    contract = OutputContract(form="(logits, loss)", passes_targets=True)
    state = build_state(model, task="sequence")
    state.contract, state.loss_fn = contract, make_loss_fn(model, "sequence", contract)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, 6, (4, 5), generator=generator)
    targets = torch.randint(0, 6, (4, 5), generator=generator)
    targets[:, :2] = -1  # nanoGPT masks positions with ignore_index=-1

    with torch.no_grad():
        logits, own_loss = model(inputs, targets)
    kept = targets >= 0
    expected_accuracy = ((logits.argmax(-1) == targets) & kept).sum().item() / kept.sum().item()
    record = train_step(state, inputs, targets, log=True, sample_activations=False).record
    assert record.loss == pytest.approx(own_loss.item())  # the returned loss, not cross-entropy again
    assert record.accuracy == pytest.approx(expected_accuracy)

    with torch.no_grad():
        logits, own_loss = model(inputs, targets)
    val_loss, val_accuracy = evaluate(state, [(inputs, targets)])
    assert val_loss == pytest.approx(own_loss.item())
    assert val_accuracy == pytest.approx(((logits.argmax(-1) == targets) & kept).sum().item() / kept.sum().item())


def test_logits_as_batch_vocabulary_sequence_train_with_cross_entropy_and_accuracy() -> None:
    torch.manual_seed(0)

    class VocabFirst(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(6, 6)

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.embed(tokens).transpose(1, 2)

    model = VocabFirst()
    contract = OutputContract(class_dim=1)
    state = build_state(model, task="sequence")
    state.contract, state.loss_fn = contract, make_loss_fn(model, "sequence", contract)
    inputs = torch.randint(0, 6, (4, 5), generator=torch.Generator().manual_seed(0))
    targets = inputs.clone()  # a copy task: accuracy is defined and measurable
    with torch.no_grad():
        logits = model(inputs)
    record = train_step(state, inputs, targets, log=True, sample_activations=False).record
    assert record.loss == pytest.approx(F.cross_entropy(logits, targets).item())
    assert record.accuracy == pytest.approx((logits.argmax(1) == targets).float().mean().item())
