"""The training snapshot: what it reads from a real run, how it stays bounded, what it remembers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from copilot.advisor.schemas import (
    Diagnosis,
    FinishProposal,
    HParamChange,
    HParamProposal,
    LedgerEntry,
    Verdict,
)
from copilot.advisor.snapshot import HISTORY_POINTS, MAX_TRACEBACK_CHARS, STEP_WINDOW, build_snapshot
from copilot.errors import AdvisorError
from copilot.events import ForwardContract, HParams, HParamsApplied, ModelRef, ModelSwapped, NonFinite, TrainerError
from copilot.run_folder import RunFolder
from tests.advisor.conftest import (
    SHAPES,
    epoch_summary,
    model_summary,
    run_started,
    step_record,
    steps,
    write_events,
)

PROMPT_TOKEN_BUDGET = 8_000


def test_a_real_run_gives_model_hparams_history_gradients_and_source(sample_runs) -> None:
    run = sample_runs("bad_cnn")
    snapshot = build_snapshot(run, trigger="schedule")

    assert snapshot.class_name == "BadCNN"
    assert snapshot.model_file_name == "bad_cnn.py"
    assert snapshot.source_code == (run.models / "r0_bad_cnn.py").read_text()
    assert snapshot.hparams.optimizer == "SGD" and snapshot.hparams.lr == 0.1
    assert snapshot.data.input_shape == (3, 32, 32)
    assert snapshot.epoch == 3 and snapshot.epochs_since_change == 3
    assert snapshot.model is not None and "Sigmoid" in snapshot.model.activations
    assert snapshot.trend("val_accuracy").count == 3
    # Per-module statistics in forward order, over the recent window of logged steps.
    assert [module.name for module in snapshot.gradients.modules] == ["conv", "fc"]
    assert all(module.update_ratio_median is not None for module in snapshot.gradients.modules)
    assert snapshot.activations is not None and snapshot.activations.saturated_fraction
    prompt = snapshot.to_prompt()
    assert "class BadCNN" in prompt and "fc | Linear | 163850 | 16384->10" in prompt
    assert "class BadCNN" not in snapshot.to_prompt(include_source=False)


def test_a_run_that_crashed_before_starting_still_gives_data_source_and_error(sample_runs) -> None:
    run = sample_runs("broken_cnn")
    snapshot = build_snapshot(run, trigger="error")

    assert snapshot.model is None
    assert snapshot.class_name == "BrokenCNN"
    assert snapshot.model_file_name == "broken_cnn.py"
    assert "kernel_size=15" in snapshot.source_code
    # No RunStarted: the data comes from session.json's settings, the hyperparameters from HPARAMS.
    assert snapshot.data.name == "shapes" and snapshot.data.input_shape == (3, 32, 32)
    assert snapshot.data.train_size == 1024
    assert snapshot.hparams.lr == 0.1 and snapshot.hparams.batch_size == 64
    assert snapshot.error is not None and "5184" in snapshot.error.message
    assert "mat1 and mat2" in snapshot.to_prompt()


def test_an_explicit_data_spec_wins_and_no_data_at_all_is_a_clear_error(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run").create()
    source = "from torch import nn\n\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n"
    with pytest.raises(AdvisorError, match="no data description"):
        build_snapshot(run, source_code=source)

    write_events(run, [TrainerError(kind="data", message="unknown data set 'nosuch'", hint="choose one of: shapes")])
    with pytest.raises(AdvisorError, match="stopped before training started: unknown data set 'nosuch'") as caught:
        build_snapshot(run, source_code=source)
    assert caught.value.hint == "choose one of: shapes", "the trainer's own fix, not advice about the snapshot"

    snapshot = build_snapshot(run, source_code=source, data=SHAPES)
    assert snapshot.data == SHAPES and snapshot.class_name == "Net"
    assert snapshot.model_name is None  # no session.json: the file's own rule picks the model


def test_the_model_reference_comes_from_the_sessions_model(tmp_path: Path) -> None:
    """The sandbox builds proposals through the reference the run was started with, as the trainer
    does: as session.json writes it now, and as runs before ModelRef wrote it (`model_spec`)."""
    run = RunFolder(tmp_path / "run").create()
    source = "from torch import nn\n\nclass Net(nn.Module):\n    def forward(self, x):\n        return x\n"
    for text, name in (("models/net.py:Net", "Net"), ("models/net.py", None)):
        written = ModelRef.parse(text, {"width": 4}).model_dump(mode="json")
        for session in ({"model": written}, {"model_spec": text, "model_args": {"width": 4}}):
            run.session.write_text(json.dumps(session), encoding="utf-8")
            snapshot = build_snapshot(run, source_code=source, data=SHAPES)
            assert (snapshot.model_name, snapshot.model_file_name, snapshot.model_args) == (name, "net.py", {"width": 4})


def _long_run(run: RunFolder, *, modules: int, epochs: int, steps_per_epoch: int = 2) -> None:
    names = [f"layers.{index}" for index in range(modules)]
    summary = model_summary(modules)
    events = [run_started(summary)]
    for epoch in range(1, epochs + 1):
        loss = 2.3 * math.exp(-epoch / 300) + 0.05
        records = [
            step_record((epoch - 1) * steps_per_epoch + k + 1, epoch=epoch - 1, modules=names, loss=loss, grad_norm=0.1 / epoch)
            for k in range(steps_per_epoch)
        ]
        events += [steps(records), epoch_summary(epoch, steps_per_epoch=steps_per_epoch, train_loss=loss, val_loss=loss * 1.1, train_accuracy=1 - loss / 2.4, val_accuracy=1 - loss / 2.3)]
    write_events(run, events)


def test_a_100_module_model_after_1000_epochs_stays_under_8000_prompt_tokens(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "long")
    _long_run(run, modules=100, epochs=1000)
    # A source file as long as a real 100-layer model's.
    layers = "\n".join(f"        self.layer{i} = nn.Linear(64, 64)  # hidden layer {i}" for i in range(100))
    source = f"import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n{layers}\n"

    snapshot = build_snapshot(run, source_code=source)
    prompt = snapshot.to_prompt()

    assert len(prompt) / 4 < PROMPT_TOKEN_BUDGET
    assert snapshot.epoch == 1000
    assert all(len(trend.points) <= HISTORY_POINTS for trend in snapshot.history)
    assert snapshot.trend("train_loss").count == 1000
    assert snapshot.gradients.window_steps == STEP_WINDOW
    assert len(snapshot.gradients.modules) == 100
    assert "layers.99" in prompt


def test_a_model_swap_restarts_the_per_module_window_and_the_epoch_count(tmp_path: Path) -> None:
    old, new = model_summary(2), model_summary(3, class_name="Net", layer_type="Conv2d")
    run = write_events(
        RunFolder(tmp_path / "run"),
        [
            run_started(old),
            steps([step_record(1, modules=["layers.0", "layers.1"], grad_norm=5.0)]),
            epoch_summary(1, train_loss=2.0, steps_per_epoch=1),
            ModelSwapped(model=new, transferred=2, total=6, step=1, round=1),
            steps([step_record(2, epoch=1, modules=["layers.0", "layers.1", "layers.2"], grad_norm=0.5)]),
            epoch_summary(2, train_loss=1.0, steps_per_epoch=1, round=1),
            HParamsApplied(hparams=HParams(lr=0.5), step=2, round=2),
        ],
    )
    snapshot = build_snapshot(run, source_code="")

    assert snapshot.model == new and snapshot.hparams.lr == 0.5
    assert snapshot.gradients is None  # nothing measured since the last change
    assert snapshot.epochs_since_change == 0
    assert snapshot.trend("train_loss").count == 2


def test_the_forward_contract_is_the_current_models(tmp_path: Path) -> None:
    """What proposals must keep: the contract of the model training now, None where the run did not record one."""
    nanogpt = ForwardContract(form="(logits, loss)", passes_targets=True)
    hugging_face = ForwardContract(form="dict", passes_targets=False)
    run = write_events(RunFolder(tmp_path / "run"), [run_started(model_summary(2)).model_copy(update={"forward_contract": nanogpt})])
    assert build_snapshot(run, source_code="").forward_contract == nanogpt
    write_events(run, [ModelSwapped(model=model_summary(2), transferred=2, total=2, step=1, forward_contract=hugging_face)])
    assert build_snapshot(run, source_code="").forward_contract == hugging_face
    older = write_events(RunFolder(tmp_path / "older"), [run_started(model_summary(2))])
    assert build_snapshot(older, source_code="").forward_contract is None


def test_nonfinite_steps_a_torn_last_line_and_a_long_traceback(tmp_path: Path) -> None:
    record = step_record(3, loss=math.nan).model_copy(update={"nonfinite": NonFinite(where="gradient", module="layers.0")})
    traceback = "Traceback (most recent call last):\n" + "".join(f'  File "x.py", line {i}, in f\n' for i in range(500)) + "ValueError: last\n"
    run = write_events(
        RunFolder(tmp_path / "run"),
        [run_started(model_summary(1)), steps([step_record(1), record]), TrainerError(kind="nonfinite", message="NaN", traceback=traceback)],
    )
    with run.metrics.open("a") as metrics:
        metrics.write('{"type": "steps", "records": [{"epo')  # the trainer was killed mid-write

    snapshot = build_snapshot(run, source_code="")

    assert snapshot.nonfinite_count == 1 and snapshot.nonfinite[0].module == "layers.0"
    assert math.isnan(snapshot.trend("step_loss").last)
    assert len(snapshot.error.traceback) <= MAX_TRACEBACK_CHARS + 40
    assert snapshot.error.traceback.rstrip().endswith("ValueError: last")
    assert "nan" in snapshot.to_prompt().lower()


def _diagnosis() -> Diagnosis:
    return Diagnosis(health="warning", route="hyperparameters")


def test_previous_proposals_keep_verdicts_reasons_and_measured_effect(tmp_path: Path) -> None:
    run = write_events(
        RunFolder(tmp_path / "run"),
        [run_started(model_summary(1))]
        + [epoch_summary(e, train_loss=2.0 / e, val_accuracy=0.1 * e, round=int(e > 2)) for e in range(1, 6)],
    )
    before = HParams(lr=0.1)
    rejected = HParamProposal(summary="Adam", rationale="r", change=HParamChange(optimizer="Adam"), before=before, after=before.model_copy(update={"optimizer": "Adam"}))
    accepted = HParamProposal(summary="momentum", rationale="r", change=HParamChange(momentum=0.9), before=before, after=before.model_copy(update={"momentum": 0.9}))
    ledger = [
        LedgerEntry(time=1, run_id="run", round=0, epoch=2, trigger="schedule", diagnosis=_diagnosis(), proposal=rejected, verdict=Verdict(decision="reject", reason="no Adam, please")),
        LedgerEntry(time=2, run_id="run", round=1, epoch=2, trigger="schedule", diagnosis=_diagnosis(), proposal=accepted, verdict=Verdict(decision="accept")),
        LedgerEntry(time=3, run_id="run", round=1, epoch=5, trigger="demand", diagnosis=_diagnosis(), proposal=FinishProposal(summary="done", report="# r")),
    ]

    snapshot = build_snapshot(run, source_code="", previous=ledger, round=1)

    first, second, third = snapshot.previous
    assert (first.decision, first.reason, first.effect) == ("reject", "no Adam, please", None)
    assert first.detail == "optimizer=Adam"
    assert second.decision == "accept" and second.effect is not None
    assert (second.effect.metric, second.effect.before, second.effect.after, second.effect.epochs) == ("val_accuracy", 0.2, 0.5, 3)
    assert third.decision == "pending"
    assert "no Adam, please" in snapshot.to_prompt()


def test_the_same_run_gives_the_same_snapshot(sample_runs) -> None:
    run = sample_runs("bad_cnn")
    assert build_snapshot(run).model_dump_json() == build_snapshot(run).model_dump_json()


def test_an_error_of_a_replaced_model_is_not_in_the_snapshot(tmp_path: Path) -> None:
    crash = TrainerError(kind="forward", message="RuntimeError: boom (at net.py:9)", step=1)
    swapped = ModelSwapped(model=model_summary(1), step=1, transferred=0, total=2)
    events = [run_started(model_summary(1)), steps([step_record(1)]), crash]
    run = write_events(RunFolder(tmp_path / "run"), events)
    assert build_snapshot(run, source_code="").error is not None

    write_events(RunFolder(tmp_path / "swapped"), [*events, swapped, steps([step_record(2)])])
    assert build_snapshot(RunFolder(tmp_path / "swapped"), source_code="").error is None
