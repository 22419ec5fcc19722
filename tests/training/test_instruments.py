"""Instruments against straightforward reference computations on small real models."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from copilot.training.instruments import Instruments, dead_unit_fraction, fetch_together
from copilot.training.model_outputs import OutputContract

torch.set_num_threads(1)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(x)))


class RegisteredOutOfOrder(nn.Module):
    """`head` is registered first but runs last; `unused` never runs; the root owns `scale`."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4 * 4 * 4, 5)
        self.block1 = Block()
        self.unused = nn.Linear(2, 2)
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.block1(x) * self.scale, 1))


def _backward_once(model: nn.Module) -> None:
    torch.manual_seed(1)
    loss = F.cross_entropy(model(torch.randn(6, 3, 4, 4)), torch.randint(0, 5, (6,)))
    loss.backward()


def test_modules_are_listed_in_forward_order_after_the_first_pass() -> None:
    torch.manual_seed(0)
    model = RegisteredOutOfOrder()
    instruments = Instruments(model)
    assert instruments.module_names == ["", "head", "block1.conv", "block1.norm", "unused"]
    _backward_once(model)
    assert instruments.module_names == ["", "block1.conv", "block1.norm", "head", "unused"]
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert not model.block1.conv._forward_pre_hooks


def test_per_module_gradient_norms_equal_a_reference_computation() -> None:
    torch.manual_seed(0)
    model = RegisteredOutOfOrder()
    instruments = Instruments(model)
    _backward_once(model)
    module_norms, total = instruments.gradient_norms()

    def reference(module: nn.Module) -> float:
        squares = [p.grad.norm().item() ** 2 for p in module.parameters(recurse=False) if p.grad is not None]
        return math.sqrt(sum(squares))

    expected = {name: reference(model.get_submodule(name)) for name in instruments.module_names}
    assert expected["unused"] == 0.0 and expected["block1.conv"] > 0
    assert dict(zip(instruments.module_names, module_norms.tolist())) == pytest.approx(expected, rel=1e-5)
    every_gradient = [p.grad.norm().item() ** 2 for p in model.parameters() if p.grad is not None]
    assert total.item() == pytest.approx(math.sqrt(sum(every_gradient)), rel=1e-5)


def test_shared_and_frozen_parameters_are_counted_once_and_not_at_all() -> None:
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.Tanh(), shared, nn.Linear(3, 2))
    model[3].bias.requires_grad_(False)
    instruments = Instruments(model)
    assert instruments.module_names == ["0", "3"]
    assert len(instruments.parameters) == 3


def test_weight_norms_measure_the_actual_change_of_the_step() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    instruments = Instruments(model)
    before = instruments.snapshot_weights()
    copies = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        model[1].weight.add_(1.0)
    norms = instruments.weight_norms(before)
    before_norm, change, after_norm = norms.tolist()
    first_layer = math.sqrt(copies[0].norm() ** 2 + copies[1].norm() ** 2)
    assert before_norm[0] == pytest.approx(first_layer, rel=1e-6)
    assert change == pytest.approx([0.0, math.sqrt(6)], rel=1e-6)
    assert after_norm[1] == pytest.approx(math.hypot(model[1].weight.norm().item(), model[1].bias.norm().item()))


def test_dead_relu_fraction_counts_channels_dead_for_every_sample() -> None:
    model = nn.Sequential(nn.Identity(), nn.ReLU())
    instruments = Instruments(model)
    inputs = torch.ones(4, 4, 2, 2)
    inputs[:, 0] = -1.0  # channel 0 dead for every sample
    inputs[:, 1] = -1.0
    inputs[0, 1, 0, 0] = 0.5  # channel 1 alive in one sample at one position: not dead
    inputs[:, 2] = 0.0  # exactly zero counts as dead
    with instruments.sampling_activations() as sample:
        model(inputs)
    assert sample.dead_fraction["1"].item() == pytest.approx(0.5)
    assert not model[1]._forward_hooks and not model[1]._forward_pre_hooks


@pytest.mark.parametrize(
    ("shape", "unit_dim", "expected"),
    [((5, 8), 1, 3 / 8), ((2, 5, 8), 2, 3 / 8), ((5, 8, 3, 3), 1, 3 / 8)],
)
def test_dead_units_are_features_or_channels(shape: tuple[int, ...], unit_dim: int, expected: float) -> None:
    outputs = torch.rand(shape) + 0.1
    outputs.narrow(unit_dim, 0, 3).zero_()
    assert dead_unit_fraction(outputs).item() == pytest.approx(expected)


class FunctionalActivations(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(torch.sigmoid(F.relu(x)) * 0 + x) + self.fc(x).relu()


def test_functional_activations_are_named_after_the_module_they_run_in() -> None:
    model = nn.Sequential(FunctionalActivations())
    instruments = Instruments(model)
    inputs = torch.tensor([[-1.0, -2.0, 10.0, 0.1], [-1.0, -3.0, 0.2, 0.3]])
    with torch.no_grad():
        model[0].fc.weight.copy_(torch.eye(4))
        model[0].fc.bias.zero_()
    with instruments.sampling_activations() as sample:
        model(inputs)
    dead = {name: value.item() for name, value in sample.dead_fraction.items()}
    saturated = {name: value.item() for name, value in sample.saturated_fraction.items()}
    assert dead == pytest.approx({"0.relu": 0.5, "0.relu#2": 0.5})
    # sigmoid(relu(x)) is past 0.99 only for x = 10; |tanh(x)| is past 0.99 for x = 10 and x = -3.
    assert saturated == pytest.approx({"0.sigmoid": 1 / 8, "0.tanh": 2 / 8})


def test_saturated_fractions_of_sigmoid_tanh_and_hardtanh_modules() -> None:
    model = nn.Sequential(nn.Sigmoid(), nn.Identity())
    tanh, hardtanh = nn.Tanh(), nn.Hardtanh(-2.0, 2.0)
    instruments = Instruments(nn.Sequential(model, tanh, hardtanh))
    with instruments.sampling_activations() as sample:
        model(torch.tensor([[-8.0, 8.0, 0.0, 1.0]]))
        tanh(torch.tensor([[3.0, -3.0, 0.5, 0.0]]))
        hardtanh(torch.tensor([[2.5, -2.0, 1.0, 0.0]]))
    saturated = {name: value.item() for name, value in sample.saturated_fraction.items()}
    assert saturated == pytest.approx({"0.0": 0.5, "1": 0.5, "2": 0.5})
    assert sample.dead_fraction == {}


def test_locating_a_nonfinite_output_restores_the_current_weights() -> None:
    class Blowup(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.log(x - 100.0)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3), Blowup(), nn.Linear(3, 2))
    instruments = Instruments(model)
    started_from = instruments.snapshot_weights()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    current = [p.detach().clone() for p in model.parameters()]
    assert instruments.locate_nonfinite_output(torch.randn(2, 3), started_from) == "1"
    assert all(torch.equal(p, c) for p, c in zip(model.parameters(), current))
    assert instruments.locate_nonfinite_output(torch.full((2, 3), math.nan), started_from) == "0"
    assert not model[1]._forward_hooks


def test_fetch_together_keeps_each_tensor_apart() -> None:
    loss, norms, empty = torch.tensor(1.5), torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.zeros(0)
    assert fetch_together(loss, empty, norms, torch.tensor(7)) == [[1.5], [], [1.0, 2.0, 3.0, 4.0], [7.0]]


def test_close_removes_the_order_hooks_before_any_forward() -> None:
    model = RegisteredOutOfOrder()
    Instruments(model).close()
    assert not model._forward_pre_hooks and not model._forward_hooks
    assert not model.head._forward_pre_hooks


def test_a_nonfinite_output_is_located_in_a_model_that_takes_its_targets() -> None:
    class OwnLoss(nn.Module):
        """forward(idx, targets) with no default: called without the targets it would only raise."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(5, 4)
            self.head = nn.Linear(4, 5)

        def forward(self, idx: torch.Tensor, targets: torch.Tensor):
            logits = self.head(self.embed(idx))
            return logits, F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    model = OwnLoss()
    with torch.no_grad():
        model.head.weight[0, 0] = math.nan
    instruments = Instruments(model)
    tokens = torch.randint(0, 5, (2, 3))
    contract = OutputContract(form="(logits, loss)", passes_targets=True)
    assert instruments.locate_nonfinite_output(tokens, instruments.snapshot_weights(), tokens, contract) == "head"
