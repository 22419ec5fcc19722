"""Run folders with realistic metrics.jsonl files for the advisor tests (reusable by other tests).

Two ways to get one:
- `train_sample_run(...)` runs the real trainer (`copilot.training.worker.run_trainer`, in
  this thread with `queue.Queue`s) on a model file for a few epochs of a small shapes set,
  so the run folder holds exactly what `copilot train` writes: session.json, metrics.jsonl,
  the model copy. The `sample_runs` fixture trains each sample model once per test session.
- `write_events(run, events)` writes hand-built event records, for runs too long or too
  specific to train here (1,000 epochs of a 100-module model, an explosion at a chosen
  step); `step_record`, `epoch_summary` and `model_summary` build them with realistic
  defaults.
"""

from __future__ import annotations

import math
import queue
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import pytest
import torch

from copilot.config import DataSettings, TrainSettings
from copilot.events import (
    DataSpec,
    EpochSummary,
    event_to_json,
    HParams,
    Message,
    ModelRef,
    ModelSummary,
    ModuleInfo,
    RunStarted,
    StepBatch,
    StepRecord,
)
from copilot.run_folder import RunFolder
from copilot.training.launcher import TrainerSpec
from copilot.training.worker import run_trainer

SAMPLE_MODELS = Path(__file__).resolve().parents[2] / "sample_models"
SAMPLE_TRAIN_SIZE = 1024
SAMPLE_VAL_SIZE = 256
SAMPLE_EPOCHS = 3
SAMPLE_DATASETS = {"tiny_transformer": "text"}  # every other sample model trains on shapes

SHAPES = DataSpec(
    name="shapes",
    task="classification",
    input_shape=(3, 32, 32),
    num_classes=10,
    train_size=SAMPLE_TRAIN_SIZE,
    val_size=SAMPLE_VAL_SIZE,
)


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    """Two shared cores: one thread per test process is faster than fighting over both."""
    torch.set_num_threads(1)


def train_sample_run(
    folder: Path,
    model_file: Path,
    *,
    epochs: int = SAMPLE_EPOCHS,
    dataset: str = "shapes",
    train_size: int = SAMPLE_TRAIN_SIZE,
    val_size: int = SAMPLE_VAL_SIZE,
    hparams: Mapping[str, float | int | str | None] | None = None,
    model_args: Mapping[str, float | int | str | bool | None] | None = None,
) -> RunFolder:
    """Train `model_file` with the real trainer into `folder` (session.json first, as `copilot train` does)."""
    run = RunFolder(folder).create()
    spec = TrainerSpec(
        run_folder=run.path,
        model=ModelRef(path=model_file, args=dict(model_args or {})),
        data=DataSettings(dataset=dataset, train_size=train_size, val_size=val_size),
        train=TrainSettings(device="cpu", log_every=2, activation_every=4, hparams={"epochs": epochs, **(hparams or {})}),
    )
    run.session.write_text(spec.model_dump_json(indent=2) + "\n", encoding="utf-8")
    run_trainer(spec, queue.Queue(), queue.Queue())
    return run


@pytest.fixture(scope="session")
def sample_runs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], RunFolder]:
    """`sample_runs("bad_cnn")`: that sample model trained once per session by the real trainer."""
    trained: dict[str, RunFolder] = {}

    def get(name: str) -> RunFolder:
        if name not in trained:
            trained[name] = train_sample_run(
                tmp_path_factory.mktemp(name), SAMPLE_MODELS / f"{name}.py", dataset=SAMPLE_DATASETS.get(name, "shapes")
            )
        return trained[name]

    return get


def write_events(run: RunFolder, events: Iterable[Message]) -> RunFolder:
    """Append events to the run's metrics.jsonl, one JSON line each, as the trainer does."""
    run.create()
    with run.metrics.open("a", encoding="utf-8") as metrics:
        for event in events:
            metrics.write(event_to_json(event) + "\n")
    return run


def model_summary(
    layer_count: int,
    *,
    class_name: str = "Net",
    source_path: str = "net.py",
    layer_type: str = "Linear",
    width: int = 64,
    activations: tuple[str, ...] = ("ReLU",),
    has_normalization: bool = False,
) -> ModelSummary:
    """A summary of `layer_count` weight layers named layers.0 ... in forward order."""
    modules = [ModuleInfo(name="", type=class_name, params=0, is_leaf=False)]
    modules += [
        ModuleInfo(name=f"layers.{index}", type=layer_type, params=width * width + width, detail=f"{width}->{width}")
        for index in range(layer_count)
    ]
    total = sum(info.params for info in modules)
    return ModelSummary(
        class_name=class_name,
        source_path=source_path,
        total_params=total,
        trainable_params=total,
        modules=tuple(modules),
        activations=activations,
        has_normalization=has_normalization,
    )


def run_started(summary: ModelSummary, *, data: DataSpec = SHAPES, hparams: HParams | None = None) -> RunStarted:
    return RunStarted(run_id="run", device="cpu", data=data, model=summary, hparams=hparams or HParams(), time=0.0)


def step_record(
    step: int,
    *,
    epoch: int = 0,
    modules: Iterable[str] = ("layers.0",),
    loss: float = 2.0,
    grad_norm: float = 0.1,
    update_ratio: float = 1e-3,
    total_grad_norm: float | None = None,
    lr: float = 0.01,
) -> StepRecord:
    names = list(modules)
    return StepRecord(
        epoch=epoch,
        step=step,
        loss=loss,
        accuracy=None,
        lr=lr,
        samples_per_sec=1000.0,
        total_grad_norm=total_grad_norm if total_grad_norm is not None else grad_norm * math.sqrt(len(names)),
        per_module_grad_norm={name: grad_norm for name in names},
        per_module_update_ratio={name: update_ratio for name in names},
    )


def epoch_summary(
    epoch: int,
    *,
    steps_per_epoch: int = 10,
    train_loss: float,
    val_loss: float | None = None,
    train_accuracy: float | None = None,
    val_accuracy: float | None = None,
    lr: float = 0.01,
    round: int = 0,
) -> EpochSummary:
    return EpochSummary(
        epoch=epoch,
        step=epoch * steps_per_epoch,
        train_loss=train_loss,
        train_accuracy=train_accuracy,
        val_loss=val_loss if val_loss is not None else train_loss,
        val_accuracy=val_accuracy,
        initial_loss=math.log(10),
        expected_initial_loss=math.log(10),
        lr=lr,
        samples_per_sec=1000.0,
        duration_s=1.0,
        round=round,
    )


def steps(records: Iterable[StepRecord]) -> StepBatch:
    return StepBatch(records=tuple(records))
