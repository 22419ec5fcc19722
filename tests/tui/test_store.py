"""The app's metrics store and the chart downsampling, without a screen."""

from __future__ import annotations

import threading
import time

import numpy as np

from copilot.events import (
    ActivationStats,
    DataSpec,
    EpochSummary,
    HParams,
    HParamsApplied,
    LogLine,
    ModelSummary,
    ModuleInfo,
    ModelSwapped,
    Finished,
    RunStarted,
    StateChanged,
    StepBatch,
    StepRecord,
    TrainerError,
)
from copilot.tui.store import MAX_SERIES, MetricsStore, ModuleRow, RingSeries, minmax_downsample, module_anomaly

SPEC = DataSpec(name="shapes", task="classification", input_shape=(3, 32, 32), num_classes=10, train_size=8, val_size=8)
MODEL = ModelSummary(class_name="BadCNN", source_path="bad_cnn.py", total_params=10, trainable_params=10, modules=())


def _record(step: int, norms: dict[str, float], ratios: dict[str, float] | None = None) -> StepRecord:
    return StepRecord(
        epoch=1,
        step=step,
        loss=2.3 - step * 1e-3,
        accuracy=0.1,
        lr=0.1,
        samples_per_sec=1000.0,
        total_grad_norm=sum(norms.values()),
        per_module_grad_norm=norms,
        per_module_update_ratio=ratios or {},
    )


def _epoch(epoch: int, step: int) -> EpochSummary:
    return EpochSummary(
        epoch=epoch, step=step, train_loss=2.2, train_accuracy=0.11, val_loss=2.3, val_accuracy=0.1,
        lr=0.1, samples_per_sec=900.0, duration_s=1.0,
    )


def test_ring_series_keeps_the_newest_points_in_order() -> None:
    series = RingSeries(capacity=4)
    for step in range(10):
        series.append(step, step * 2.0)
    steps, values = series.arrays()
    assert steps.tolist() == [6, 7, 8, 9]
    assert values.tolist() == [12, 14, 16, 18]
    assert series.last() == 18


def test_downsampling_bounds_points_and_keeps_spikes() -> None:
    rng = np.random.default_rng(0)
    steps = np.arange(100_000, dtype=float)
    values = rng.random(100_000)
    values[51_234] = 50.0
    values[99_999] = -3.0
    out_steps, out_values = minmax_downsample(steps, values, buckets=150)
    assert len(out_steps) <= 2 * 150 + 2
    assert out_values.max() == 50.0 and out_values.min() == -3.0
    assert np.all(np.diff(out_steps) > 0)


def test_downsampling_drops_non_finite_values_and_leaves_short_series_alone() -> None:
    steps = np.arange(5, dtype=float)
    values = np.array([1.0, np.nan, 3.0, np.inf, 5.0])
    out_steps, out_values = minmax_downsample(steps, values, buckets=100)
    assert out_steps.tolist() == [0, 2, 4]
    assert out_values.tolist() == [1.0, 3.0, 5.0]


def test_store_ingests_events_into_a_consistent_view() -> None:
    store = MetricsStore(capacity=1000)
    store.ingest(RunStarted(run_id="r1", device="cpu", data=SPEC, model=MODEL, hparams=HParams(), time=0.0))
    store.ingest(StepBatch(records=tuple(_record(s, {"conv": 1e-9, "fc": 0.5}, {"fc": 2e-3}) for s in range(0, 50, 10))))
    store.ingest(ActivationStats(epoch=1, step=40, saturated_fraction={"act": 0.9}))
    store.ingest(
        EpochSummary(
            epoch=1, step=40, train_loss=2.2, train_accuracy=0.11, val_loss=2.3, val_accuracy=0.1,
            lr=0.1, samples_per_sec=900.0, duration_s=1.0,
        )
    )
    view = store.view()
    assert view.run_id == "r1" and view.model_name == "BadCNN" and view.step == 40 and view.epoch == 1
    assert view.steps["loss"][0].tolist() == [0, 10, 20, 30, 40]
    rows = {row.name: row for row in view.modules}
    assert rows["conv"].grad_history == (1e-9,) * 5
    assert module_anomaly(rows["conv"]) == "vanishing"
    assert module_anomaly(rows["act"]) == "saturated"
    assert module_anomaly(rows["fc"]) is None
    assert view.epochs[0].val_accuracy == 0.1


def test_the_store_shows_the_trainer_state_the_session_derives() -> None:
    """A stopped run reads "stopped", a killed trainer "crashed", in the app as in the session."""
    started = RunStarted(run_id="r1", device="cpu", data=SPEC, model=MODEL, hparams=HParams(), time=0.0)
    cases = [
        ([started], "running"),
        ([started, StateChanged(state="evaluating")], "evaluating"),
        ([started, StateChanged(state="evaluating"), StateChanged(state="running")], "running"),
        ([started, StateChanged(state="paused")], "paused"),
        ([started, Finished(reason="stopped", epoch=1, step=40)], "stopped"),
        ([started, Finished(reason="epochs_done", epoch=2, step=80)], "finished"),
        ([started, Finished(reason="error", epoch=1, step=3)], "crashed"),
        ([started, TrainerError(kind="killed", message="the trainer was killed")], "crashed"),
    ]
    for events, shown in cases:
        store = MetricsStore(capacity=100)
        for event in events:
            store.ingest(event)
        assert store.state == shown and store.view().state == shown, events[1:]


def test_version_moves_only_on_change_and_a_swap_keeps_only_the_modules_still_there() -> None:
    store = MetricsStore()
    before = store.version
    store.ingest_many([])
    assert store.version == before
    store.ingest(StepBatch(records=(_record(1, {"old": 1.0, "kept": 2.0}),)))
    assert store.version == before + 1
    swapped = MODEL.model_copy(update={"modules": (ModuleInfo(name="kept", type="Linear", params=4),)})
    store.ingest(ModelSwapped(model=swapped, transferred=2, total=4, step=1, round=1))
    view = store.view()
    assert [row.name for row in view.modules] == ["kept"]
    assert view.round_steps[-1] == (1, 1)


def test_a_resumed_trainer_rewinds_the_series_to_its_checkpoint() -> None:
    store = MetricsStore()
    store.ingest(RunStarted(run_id="r1", device="cpu", data=SPEC, model=MODEL, hparams=HParams(), time=0.0))
    for epoch, last_step in ((1, 40), (2, 90)):
        first = last_step - 40
        store.ingest(StepBatch(records=tuple(_record(s, {"conv": 0.1}) for s in range(first, last_step + 1, 10))))
        store.ingest(_epoch(epoch, last_step))
    store.ingest(HParamsApplied(hparams=HParams(lr=0.01), step=90, round=1))
    store.ingest(RunStarted(run_id="r1", device="cpu", data=SPEC, model=MODEL, hparams=HParams(), time=1.0, resumed_from_epoch=1))
    store.ingest(StepBatch(records=(_record(50, {"conv": 0.2}),)))
    view = store.view()
    assert view.steps["loss"][0].tolist() == [0, 10, 20, 30, 40, 50]
    assert [point.epoch for point in view.epochs] == [1]
    assert view.round_steps == ((0, 0),)
    assert view.modules[0].grad_history[-2:] == (0.1, 0.2)


def test_log_lines_count_up_and_keep_their_full_text() -> None:
    store = MetricsStore(log_lines=3, clock=lambda: 42.0)
    store.ingest(LogLine(message="epoch 1\ndetails", time=1.0))
    store.ingest(TrainerError(kind="shape", message="bad shape", hint="fix it", traceback="Traceback ...", step=3, epoch=1))
    store.note("advisor", "info", "thinking")
    store.note("git", "info", "committed")
    view = store.view()
    assert view.log_total == 4 and len(view.log_tail) == 3
    error = view.log_tail[0]
    assert error.message == "shape error (epoch 1, step 3): bad shape" and error.time == 42.0
    assert "hint: fix it" in error.detail and "Traceback" in error.detail
    assert [entry.source for entry in view.log_tail] == ["trainer", "advisor", "git"]


def test_worst_grad_norm_modules_are_the_furthest_from_the_median() -> None:
    store = MetricsStore()
    norms = {f"m{i}": 0.1 for i in range(12)}
    norms.update({"tiny": 1e-9, "huge": 1e4})
    store.ingest(StepBatch(records=(_record(1, norms),)))
    kept = list(store.view().grad_norm_steps)
    assert len(kept) == MAX_SERIES and kept[:2] == ["tiny", "huge"]


def test_update_ratio_view_keeps_only_the_modules_furthest_from_the_guide() -> None:
    store = MetricsStore()
    ratios = {f"m{i}": 10.0 ** -(i % 7) for i in range(20)}
    store.ingest(StepBatch(records=(_record(1, {"m0": 1.0}, ratios),)))
    kept = store.view().update_ratio_steps
    assert len(kept) == MAX_SERIES
    assert "m6" in kept and "m0" in kept  # 1e-6 and 1e0 are the furthest from 1e-3


def test_ingest_and_view_from_two_threads() -> None:
    store = MetricsStore(capacity=5000)
    stop = threading.Event()

    def write() -> None:
        step = 0
        while not stop.is_set():
            store.ingest(StepBatch(records=(_record(step, {"a": 1.0, "b": 2.0}),)))
            step += 1

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        steps, values = store.view().steps["loss"]
        assert len(steps) == len(values)
        assert np.all(np.diff(steps) > 0)
    stop.set()
    writer.join()


def test_anomaly_thresholds_match_the_advisor() -> None:
    def row(**values) -> ModuleRow:
        base = dict(name="m", grad_norm=1e-2, update_ratio=1e-3, dead_fraction=None, saturated_fraction=None, grad_history=())
        base.update(values)
        return ModuleRow(**base)

    assert module_anomaly(row(grad_norm=float("nan"))) == "non-finite"
    assert module_anomaly(row(grad_norm=2e3)) == "exploding"
    assert module_anomaly(row(dead_fraction=0.6)) == "dead"
    assert module_anomaly(row(update_ratio=0.5)) == "update ratio"
    assert module_anomaly(row()) is None
