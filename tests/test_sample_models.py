"""The sample model files: they build, fit their data set, and fail the way their docstrings say.

Training here is a plain loop (SGD/Adam, cross-entropy) on copilot's data sets, so these
tests check the samples and the data, not copilot's training engine.
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn

from copilot.config import DataSettings
from copilot.events import HParams
from copilot.training.data import TEXT_VOCAB_SIZE, DataBundle, batches_per_epoch, iterate_batches, load_data

SAMPLES = Path(__file__).resolve().parents[1] / "sample_models"
CPU = torch.device("cpu")
# (file, class, data set) for every sample that trains.
RUNNABLE = [
    ("bad_cnn", "BadCNN", "shapes"),
    ("deep_sigmoid_mlp", "DeepSigmoidMLP", "shapes"),
    ("resnet_small", "ResNetSmall", "shapes"),
    ("tiny_transformer", "TinyTransformer", "text"),
]


def load_sample(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"sample_{name}", SAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(name: str, class_name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(load_sample(name), class_name)()


def first_batch(bundle: DataBundle, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return next(iterate_batches(bundle.train, size, shuffle=False, generator=None, device=CPU))


def train_epoch(
    model: nn.Module, bundle: DataBundle, optimizer, scheduler, batch_size: int, generator
) -> list[float]:
    """One epoch of plain training; the total gradient norm of each step."""
    model.train()
    norms = []
    batches = iterate_batches(bundle.train, batch_size, shuffle=True, generator=generator, device=CPU)
    for inputs, targets in batches:
        outputs = model(inputs)
        loss = nn.functional.cross_entropy(outputs.flatten(0, -2), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), math.inf)))
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
    return norms


def validation_accuracy(model: nn.Module, bundle: DataBundle) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, targets in iterate_batches(bundle.val, 500, shuffle=False, generator=None, device=CPU):
            correct += int((model(inputs).argmax(-1) == targets).sum())
    return correct / len(bundle.val)


def sgd_for(model: nn.Module, hparams: HParams) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(), lr=hparams.lr, momentum=hparams.momentum, weight_decay=hparams.weight_decay
    )


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize("name", [name for name, _, _ in RUNNABLE] + ["broken_cnn"])
def test_hparams_are_valid_copilot_hyperparameters(name: str) -> None:
    hparams = HParams(**load_sample(name).HPARAMS)

    assert hparams.lr > 0


@pytest.mark.parametrize(("name", "class_name", "dataset"), RUNNABLE)
def test_sample_output_has_the_shape_its_data_set_task_expects(
    name: str, class_name: str, dataset: str
) -> None:
    bundle = load_data(DataSettings(dataset=dataset, train_size=20, val_size=10), CPU)
    model = build(name, class_name)
    inputs, _ = first_batch(bundle, 4)

    assert model(inputs).shape == bundle.spec.expected_output(4)


def test_broken_cnn_fails_its_first_forward_pass_with_the_shape_error() -> None:
    bundle = load_data(DataSettings(train_size=20, val_size=10), CPU)
    model = build("broken_cnn", "BrokenCNN")
    inputs, _ = first_batch(bundle, 4)

    expected = r"mat1 and mat2 shapes cannot be multiplied \(4x5184 and 16384x10\)"
    with pytest.raises(RuntimeError, match=expected):
        model(inputs)


def test_tiny_transformer_vocabulary_matches_the_text_set() -> None:
    module = load_sample("tiny_transformer")

    assert module.VOCAB_SIZE == TEXT_VOCAB_SIZE
    assert module.TinyTransformer().head.out_features == TEXT_VOCAB_SIZE


def test_deep_sigmoid_mlp_gradients_vanish_towards_the_input() -> None:
    bundle = load_data(DataSettings(train_size=64, val_size=10), CPU)
    model = build("deep_sigmoid_mlp", "DeepSigmoidMLP")
    inputs, targets = first_batch(bundle, 64)

    nn.functional.cross_entropy(model(inputs), targets).backward()

    first_layer, head = model.hidden[0], model.head
    assert first_layer.weight.grad.norm() < 1e-6 * head.weight.grad.norm()


def test_tiny_transformer_gradients_explode_at_its_learning_rate() -> None:
    hparams = HParams(**load_sample("tiny_transformer").HPARAMS)
    bundle = load_data(DataSettings(dataset="text", train_size=40 * hparams.batch_size, val_size=10), CPU)
    model = build("tiny_transformer", "TinyTransformer")
    optimizer = torch.optim.Adam(model.parameters(), lr=hparams.lr)

    norms = train_epoch(model, bundle, optimizer, None, hparams.batch_size, torch.Generator().manual_seed(0))

    assert max(norms) > 50 * norms[0]


def test_bad_cnn_stays_near_chance_on_shapes() -> None:
    hparams = HParams(**load_sample("bad_cnn").HPARAMS)
    bundle = load_data(DataSettings(), CPU)
    model = build("bad_cnn", "BadCNN")
    optimizer = sgd_for(model, hparams)
    generator = torch.Generator().manual_seed(0)

    accuracies = []
    for _ in range(2):
        train_epoch(model, bundle, optimizer, None, hparams.batch_size, generator)
        accuracies.append(validation_accuracy(model, bundle))

    assert max(accuracies) < 0.2, accuracies


@pytest.mark.slow
def test_resnet_small_passes_95_percent_on_shapes_within_its_epochs() -> None:
    hparams = HParams(**load_sample("resnet_small").HPARAMS)
    started = time.perf_counter()
    bundle = load_data(DataSettings(), CPU)
    sizes = f"{bundle.spec.train_size}+{bundle.spec.val_size}"
    print(f"\nshapes {sizes}: generated in {time.perf_counter() - started:.1f} s")
    model = build("resnet_small", "ResNetSmall")
    optimizer = sgd_for(model, hparams)
    assert hparams.schedule == "cosine"
    total_steps = hparams.epochs * batches_per_epoch(bundle.train, hparams.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps)
    generator = torch.Generator().manual_seed(0)

    accuracies = []
    for epoch in range(1, hparams.epochs + 1):
        started, cpu_started = time.perf_counter(), time.process_time()
        train_epoch(model, bundle, optimizer, scheduler, hparams.batch_size, generator)
        accuracies.append(validation_accuracy(model, bundle))
        print(
            f"epoch {epoch}: {time.perf_counter() - started:.1f} s wall,"
            f" {time.process_time() - cpu_started:.1f} s CPU, val accuracy {accuracies[-1]:.4f}"
        )

    assert hparams.epochs <= 4
    assert accuracies[-1] >= 0.95, accuracies
